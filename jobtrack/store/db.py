"""Connections, transactions and the write lock: the only module that emits BEGIN or PRAGMA or takes a FileLock.

Reads run in a short deferred transaction without the lock (WAL lets them overlap a writer).
Writes take an in-process lock, then the ``filelock.FileLock`` beside the database, then
``BEGIN IMMEDIATE``; they commit or roll back and release in reverse order. Writes do not nest.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import filelock
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from jobtrack.config import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_LOCK_POLL_S,
    DEFAULT_LOCK_TIMEOUT_S,
    is_url,
)
from jobtrack.errors import JobtrackError, StoreBusy, StoreError, StoreReadOnly

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"


class Database:
    """One database: its engine (rebuilt after fork), its write lock and its transaction helpers."""

    def __init__(self, db: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.target = db
        self.is_sqlite = not is_url(db)
        self.path = db if self.is_sqlite else None
        self.lock_path = db + ".lock" if self.is_sqlite else None
        self.lock_timeout = lock_timeout
        self._pid = -1
        self._engine: Engine | None = None
        self._filelock: filelock.FileLock | None = None
        self._thread_lock = threading.Lock()
        self._local = threading.local()

    # -- engine ----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine for this process; a forked child builds its own (connections never cross fork)."""
        if self._pid != os.getpid() or self._engine is None:
            self._reset_after_fork()
        assert self._engine is not None
        return self._engine

    def _reset_after_fork(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)  # the parent still owns those connections
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._local = threading.local()
        self._engine = self._make_engine()
        if self.lock_path is not None:
            self._filelock = filelock.FileLock(
                self.lock_path,
                timeout=self.lock_timeout,
                mode=0o600,
                thread_local=False,  # the in-process thread lock already serialises threads
                poll_interval=DEFAULT_LOCK_POLL_S,
            )

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.target, pool_pre_ping=True)
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": DEFAULT_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # The driver's own transaction handling is off; the "begin" hook below issues BEGIN.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            # FULL: a commit reported to the user survives power loss (SPEC §5: nothing is lost).
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("jobtrack_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    def dispose(self) -> None:
        """Close every pooled connection of this process."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A short read transaction (one consistent snapshot), without the write lock."""
        with _translate(self.target), self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """An exclusive write transaction: thread lock, file lock, BEGIN IMMEDIATE; commit or roll back.

        Raises:
            StoreBusy: the file lock was not free within ``lock_timeout``.
            InvalidArgument: called while this thread already holds a write (writes do not nest).
        """
        engine = self.engine
        if getattr(self._local, "in_write", False):
            raise RuntimeError("jobtrack store writes do not nest; pass the connection down instead")
        if not self._thread_lock.acquire(timeout=self.lock_timeout):
            raise StoreBusy(self.target, self.lock_timeout, holder=f"another thread of pid {os.getpid()}")
        self._local.in_write = True
        try:
            with self._file_lock(), _translate(self.target):
                with engine.connect() as conn:
                    conn = conn.execution_options(jobtrack_write=True)
                    with conn.begin():
                        yield conn
        finally:
            self._local.in_write = False
            self._thread_lock.release()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        lock = self._filelock
        if lock is None:  # server databases lock rows, not files
            yield
            return
        try:
            lock.acquire(timeout=self.lock_timeout)
        except filelock.Timeout:
            raise StoreBusy(self.target, self.lock_timeout, holder=self._lock_holder()) from None
        except PermissionError as exc:
            raise StoreReadOnly(self.target, f"cannot open the lock file {self.lock_path}: {exc}") from None
        try:
            yield
        finally:
            lock.release()

    def _lock_holder(self) -> str:
        """Best-effort description of the process holding the lock file (Linux /proc/locks)."""
        try:
            inode = os.stat(self.lock_path or "").st_ino
            with open("/proc/locks", encoding="ascii") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) > 5 and parts[5].endswith(f":{inode}"):
                        return f"pid {parts[4]}"
        except OSError:
            pass
        return ""


@contextmanager
def _translate(target: str) -> Iterator[None]:
    """Turn driver errors into jobtrack's typed store errors; no raw sqlite3 error reaches users."""
    try:
        yield
    except JobtrackError:
        raise
    except DBAPIError as exc:
        raise _store_error(target, exc.orig) from exc
    except sqlite3.Error as exc:
        raise _store_error(target, exc) from exc


def _store_error(target: str, orig: BaseException | None) -> StoreError:
    text = str(orig)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return StoreReadOnly(target, text)
    if "not a database" in lowered or "malformed" in lowered:
        from jobtrack.errors import NotAJobtrackDatabase

        return NotAJobtrackDatabase(target, text)
    if "disk is full" in lowered or "disk i/o" in lowered:
        return StoreError(f"Cannot write {target}: {text}. Free disk space or move the database.")
    if "locked" in lowered or "busy" in lowered:
        return StoreBusy(target, DEFAULT_BUSY_TIMEOUT_MS / 1000)
    return StoreError(f"Database error on {target}: {text}")


NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smbfs", "smb3", "afs", "ncpfs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.glusterfs",
})
"""Filesystem types whose locks SQLite and flock cannot rely on."""


def filesystem_type(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` (longest matching mount point), or None if unknown."""
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for mount_point, fstype in mounts:
        mount_point = mount_point.replace("\\040", " ")
        prefix = mount_point.rstrip("/") + "/"
        if (real == mount_point or real.startswith(prefix)) and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fstype)
    return best[1] if best else None


def check_local_filesystem(path: str, mounts_file: str = "/proc/mounts") -> None:
    """Refuse a database on a network filesystem unless JOBTRACK_ALLOW_NETWORK_FS=1.

    Raises:
        NetworkFilesystem: the directory of ``path`` is on NFS, SMB, sshfs and the like.
    """
    if os.environ.get("JOBTRACK_ALLOW_NETWORK_FS") == "1":
        return
    fstype = filesystem_type(os.path.dirname(path) or ".", mounts_file)
    if fstype is not None and (fstype in NETWORK_FS_TYPES or fstype.split(".")[0] in NETWORK_FS_TYPES):
        from jobtrack.errors import NetworkFilesystem

        raise NetworkFilesystem(path, fstype)


def sniff_sqlite_file(path: str) -> str:
    """Classify a path before any connection touches it: 'missing', 'empty', 'sqlite' or 'foreign'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        return "foreign"
    if not head:
        return "empty"
    return "sqlite" if head == SQLITE_MAGIC else "foreign"


def read_only_probe(path: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one query through a read-only connection that cannot change the file (no WAL switch)."""
    # Without a -wal file nobody has the database open in WAL mode, so an immutable read sees all of
    # it and creates no -wal/-shm files beside a file that may turn out not to be ours.
    immutable = "&immutable=1" if not os.path.exists(path + "-wal") else ""
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro{immutable}", uri=True, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
