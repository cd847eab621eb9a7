"""A database file opened for reading only: reads never create or change a file (SPEC §6, #13).

A read-only ``Database`` (``Store.open(db, read_only=True)``, or a read of a file this user cannot
write) reaches the file through SQLite's ``mode=ro``, never creates it, never takes the write lock
and never creates the schema. A database in WAL mode needs its ``-shm`` file to be read: when the
folder cannot be written and no writer has the database open (no ``-wal`` with content), SQLite
cannot create one, so the file is opened ``immutable=1``, which needs none and is exact while
nothing writes it (nothing can: a writer would have to create the ``-wal`` in that folder). See
https://sqlite.org/wal.html#readonly. A mode=ro connection in a writable folder would leave
``-wal``/``-shm`` files behind that the file's owner may not be able to write, so ``immutable=1``
is used there too unless a writer is active. An immutable connection shows the file as it was when it
was opened, and reads it without a lock: each read first looks whether a writer has opened the file
since, or the file changed, and then reads through a new connection (``ReadOnlyFile.changed``).
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from urllib.parse import quote

from jobtrack.errors import DatabaseNotFound, StoreReadOnly
from jobtrack.store.location import file_identity
from jobtrack.store.openfiles import OpenFile


class ReadOnlyFile(OpenFile):
    """One database file opened read-only by one ``Database``: its connections (one per thread), no lock file.

    Kept apart from the process's writable entries (``openfiles``): its connections are SQLite's
    own, so closing them drops no lock another connection of this process holds.
    """

    writable = False

    def lock_file(self, shown: str) -> int:
        raise StoreReadOnly(shown, "it was opened read-only (a read, or a file or folder this user cannot write)")

    def connect(self, target: str, configure: Callable[[sqlite3.Connection, bool], None]) -> sqlite3.Connection:
        """This thread's connection: ``mode=ro``, and ``immutable=1`` unless a writer has the file open now."""
        # A -wal or -shm means a writer has the file open (SQLite deletes both when the last one closes):
        # read through them; otherwise no file is needed, and none is created. The stamp is taken first, so
        # a change while the connection opens shows at the next read.
        self.local.immutable = not _writer_active(self.path)
        self.local.stamp = _stamp(self.path) if self.local.immutable else None
        return super().connect(target, configure)

    def uri(self) -> str:
        return f"file:{quote(self.path)}?mode=ro" + ("&immutable=1" if getattr(self.local, "immutable", False) else "")

    def changed(self) -> bool:
        """Whether this thread's immutable connection may show the file as it no longer is: a writer has it
        open now, or its size, modification time or inode changed since (or it was modified so recently,
        within ``_SETTLE_NS``, that a second change in the same clock tick would not show)."""
        if not getattr(self.local, "immutable", False):
            return False
        stamp = self.local.stamp
        return stamp is None or _writer_active(self.path) or _stamp(self.path) != stamp


def attach_read_only(path: str, target: str) -> ReadOnlyFile:
    """An entry for reading the existing file at ``path``; nothing is created.

    Raises:
        DatabaseNotFound: there is no file at ``path``.
    """
    identity = file_identity(path)
    if identity is None:
        raise DatabaseNotFound(target)
    f = ReadOnlyFile(os.path.realpath(path), identity)
    _read_only_files.add(f)
    return f


_read_only_files: weakref.WeakSet[ReadOnlyFile] = weakref.WeakSet()
_SETTLE_NS = 50_000_000  # a modification time younger than this may hide a later change in the same clock tick


def _writer_active(path: str) -> bool:
    return any(os.path.exists(path + suffix) for suffix in ("-wal", "-shm"))


def _stamp(path: str) -> tuple[int, int, int] | None:
    """The file's (inode, size, mtime), or None if it is gone or too recently modified to be trusted (a
    connection opened with no stamp is replaced at its next read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return None if time.time_ns() - st.st_mtime_ns < _SETTLE_NS else (st.st_ino, st.st_size, st.st_mtime_ns)


def open_here(identity: tuple[int, int]) -> bool:
    """Whether this process has the file with this identity open as a database (to write or to read)."""
    from jobtrack.store.openfiles import is_registered

    return is_registered(identity) or any(f.identity == identity for f in list(_read_only_files))


def close_read_only() -> None:
    """Close every read-only connection of this process (``db.close_all``); they reopen on next use."""
    for f in list(_read_only_files):
        f.close()
