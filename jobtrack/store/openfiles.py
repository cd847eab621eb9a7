"""The SQLite files this process has open: one entry per real file (device and inode), whatever its spelling.

Every ``Database`` of the same file (``x.db``, ``sub/../x.db``, a symlink and its target) shares one
``OpenFile``: its sqlite3 connections (one per thread), its in-process write lock, its lock file and
its schema check. So the process opens the file once, through SQLite only. Closing any descriptor of
a SQLite file drops every POSIX lock the process holds on it, and another process's SQLite then
believes it is the last user and deletes the write-ahead log under this one (#21): nothing here
opens a database file except to create a missing one (``O_EXCL``: nobody can have it open yet).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from urllib.parse import quote

from jobtrack.config import DEFAULT_BUSY_TIMEOUT_MS
from jobtrack.errors import DatabaseReplaced, StoreReadOnly, StoreUnavailable
from jobtrack.store.location import FileIdentity, file_identity, out_of_descriptors, permission_problem

log = logging.getLogger(__name__)


class Connection(sqlite3.Connection):
    """A plain sqlite3 connection that a ``weakref.WeakSet`` can hold (the base class has no weakref slot)."""


class OpenFile:
    """One database file as this process has it open: its connections, its write lock, its schema check."""

    def __init__(self, path: str, identity: FileIdentity) -> None:
        self.path = path  # the real path (symlinks resolved) that connections open
        self.identity = identity
        self.pid = os.getpid()  # 0 once closed: every Database then attaches afresh
        self.lock_path = path + ".lock"
        self.local = threading.local()  # .conn: this thread's connection; .in_write: inside a write
        self.conns: weakref.WeakSet[Connection] = weakref.WeakSet()  # every live thread's connection
        self.write_lock = threading.Lock()
        self.lock_fd: int | None = None
        self.owned = False  # found jobtrack's (or empty) by schema.prepare: WAL may be switched on
        self.ready = False  # ... and its schema current: nothing left to check in this process

    def lock_file(self, shown: str) -> int:
        """The lock file beside the database, opened once and kept open for the process's lifetime."""
        if self.lock_fd is None:
            try:
                self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreReadOnly(shown, f"cannot open the lock file {self.lock_path}: {exc.strerror}") from None
        return self.lock_fd

    writable = True
    """Whether connections may write (``readonly.ReadOnlyFile`` says no)."""

    def uri(self) -> str:
        """The SQLite URI connections open."""
        return f"file:{quote(self.path)}"

    def connect(self, target: str, configure: Callable[[sqlite3.Connection, bool], None]) -> sqlite3.Connection:
        """Open this thread's connection (through SQLite only), check it is this file, and configure it.

        Raises:
            sqlite3.Error: for the caller to translate.
            DatabaseReplaced: the path names another file now than the one registered.
        """
        conn = sqlite3.connect(self.uri(), uri=True, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, cached_statements=256, factory=Connection)
        try:
            if file_identity(self.path) != self.identity:
                raise DatabaseReplaced(target, self.replaced(self.path) or "")
            configure(conn, self.owned and self.writable)  # a read-only entry never switches the file to WAL
        except BaseException:
            conn.close()  # through SQLite: it keeps the descriptor while another connection holds locks
            raise
        assert isinstance(conn, Connection)
        self.local.conn = conn
        self.conns.add(conn)
        return conn

    def changed(self) -> bool:
        """Whether this thread's connection may no longer show the file as it is now (``ReadOnlyFile``)."""
        return False

    def drop_connection(self, *, reopen: bool = False) -> None:
        """Close this thread's connection; the next use opens a new one (``reopen``: on this entry, kept open)."""
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            self.local.conn = None
            self.conns.discard(conn)
            try:
                conn.close()
            except sqlite3.Error:
                log.debug("closing a broken connection to %s failed", self.path, exc_info=True)
        if not self.conns and not reopen:  # the process no longer holds the file open: forget it (and its lock file)
            with _files_lock:
                if _files.get(self.identity) is self:
                    del _files[self.identity]
            self.close()

    def replaced(self, path: str) -> str | None:
        """Why ``path`` no longer names this file, or None if it still does."""
        now = file_identity(path)
        if now == self.identity:
            return None
        return "no file is at that path now" if now is None else "another file is at that path now"

    def close(self) -> None:
        """Close every connection and the lock file; Databases of this file attach afresh on next use."""
        self.pid = 0
        self.ready = False
        for conn in list(self.conns):
            conn.close()  # through SQLite, which keeps a descriptor open while another holds locks
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # the lock file is not a database file: closing it drops no SQLite lock
            self.lock_fd = None


_files: dict[FileIdentity, OpenFile] = {}
_files_lock = threading.Lock()
_files_pid = os.getpid()


def _registry() -> dict[FileIdentity, OpenFile]:
    """The open files of this process; a forked child starts with none (its parent's are not its own)."""
    global _files, _files_lock, _files_pid
    if _files_pid != os.getpid():
        # The parent's connections must not be used here, and its lock descriptors share the parent's
        # open file description (flock would let both "hold" the lock). Closing our copies of the lock
        # files is safe; the connections are left to the garbage collector: a child holds none of its
        # parent's POSIX locks, so closing them cannot release one.
        for f in _files.values():
            if f.lock_fd is not None:
                os.close(f.lock_fd)
                f.lock_fd = None
            f.pid = 0
        _files, _files_lock, _files_pid = {}, threading.Lock(), os.getpid()
    return _files


def is_registered(identity: FileIdentity) -> bool:
    """Whether this process has the file with this identity open to write (an entry of ``attach``)."""
    return identity in _registry()


def attach(path: str, target: str) -> OpenFile:
    """This process's entry for the file at ``path``, registered on first use; a missing file is created
    empty and private to the user (SQLite's -wal/-shm copy its mode).

    Raises:
        StoreReadOnly: the file cannot be created.
    """
    files = _registry()
    with _files_lock:
        identity = file_identity(path)
        if identity is None:
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                if full := out_of_descriptors(exc):
                    raise StoreUnavailable(target, full) from None
                raise StoreReadOnly(target, permission_problem(path) or exc.strerror or str(exc)) from None
            identity = file_identity(path)
            if identity is None:
                raise StoreReadOnly(target, "the file vanished as it was created")
        f = files.get(identity)
        if f is not None and not f.conns:
            # Nothing of ours holds that inode open, so it may have been freed and its number reused
            # by another file since: start afresh (a file with an open connection cannot be reused).
            f.close()
            f = None
        if f is None:
            f = files[identity] = OpenFile(os.path.realpath(path), identity)
        return f


def close_files() -> None:
    """Close every connection and lock file of every open file of this process, and forget them.

    Not while a child forked from this process lives (a process runner's): it shares this process's records of
    SQLite's locks, not the locks, so once our connections are closed SQLite takes itself for the file's last user
    and deletes the write-ahead log the child writes to (its job then failed with "disk image is malformed")."""
    import multiprocessing  # not on `jobtrack status`'s path (#14)

    if multiprocessing.active_children():
        return
    files = _registry()
    with _files_lock:
        for f in files.values():
            f.close()
        files.clear()


def lock_holder(lock_path: str) -> str:
    """Best-effort description of the process holding a lock file (Linux /proc/locks)."""
    try:
        inode = os.stat(lock_path).st_ino
        with open("/proc/locks", encoding="ascii") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 5 and parts[5].endswith(f":{inode}"):
                    return f"pid {parts[4]}"
    except OSError:
        pass
    return ""
