"""A database file opened for reading only: reads never create or change a file (SPEC §6, #13).

A read-only ``Database`` (``Store.open(db, read_only=True)``, or a read of a file this user cannot
write) reaches the file through SQLite's ``mode=ro``, never creates it, never takes the write lock
and never creates the schema. A database in WAL mode needs its ``-shm`` file to be read: when the
folder cannot be written and no writer has the database open (no ``-wal`` with content), SQLite
cannot create one, so the file is opened ``immutable=1``, which needs none and is exact while
nothing writes it (nothing can: a writer would have to create the ``-wal`` in that folder). See
https://sqlite.org/wal.html#readonly. A mode=ro connection in a writable folder would leave
``-wal``/``-shm`` files behind that the file's owner may not be able to write, so ``immutable=1``
is used there too unless a writer is active.
"""

from __future__ import annotations

import os
import weakref
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

    def uri(self) -> str:
        """The SQLite URI of the file: ``mode=ro``, plus ``immutable=1`` unless a writer has it open now."""
        # A -wal or -shm means a writer has the file open (SQLite deletes both when the last one closes):
        # read through them; otherwise no file is needed, and none is created.
        active = any(os.path.exists(self.path + suffix) for suffix in ("-wal", "-shm"))
        return f"file:{quote(self.path)}?mode=ro" + ("" if active else "&immutable=1")


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


def close_read_only() -> None:
    """Close every read-only connection of this process (``db.close_all``); they reopen on next use."""
    for f in list(_read_only_files):
        f.close()
