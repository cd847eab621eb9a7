"""Connections, transactions and the write lock: the only module that emits BEGIN or PRAGMA or takes the file lock.

Reads run in a short deferred transaction without the lock (WAL lets them overlap a writer).
Writes take an in-process lock, then the file lock beside the database, then ``BEGIN IMMEDIATE``;
they commit or roll back and release in reverse order. Writes do not nest.

SQLite's hot path runs on one raw ``sqlite3`` connection per thread (SQLAlchemy's execution
machinery costs ten times the statement itself); other databases run the same SQL text through
SQLAlchemy. The file lock is filelock's descriptor lock on a lock file kept open per process, the
same OS lock a ``filelock.FileLock`` on that path takes, without reopening the file every time.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

# SQLAlchemy is imported only where it is used (schema work, server databases): a status read on
# a SQLite file runs on sqlite3 alone, which keeps `jobtrack status` quicker than importing sqlmodel.

import filelock

from jobtrack.config import DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_S, is_url
from jobtrack.errors import JobtrackError, NotAJobtrackDatabase, StoreBusy, StoreError, StoreReadOnly

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    # FULL: a commit reported to the user survives power loss (SPEC §5: nothing is lost).
    "PRAGMA synchronous=FULL",
)

Params = Mapping[str, Any]

_ADVISORY_KEY = 0x6A6F6274  # "jobt": the advisory lock id jobtrack's schema work takes on PostgreSQL


class Tx:
    """One open transaction; SQL text with ``:name`` parameters, the same for every backend."""

    def __init__(self, conn: Any, *, raw: bool) -> None:
        self._conn = conn
        self._raw = raw
        self.memo: dict[Any, Any] = {}  # reads remembered for the rest of this transaction

    def execute(self, sql: str, params: Params | None = None) -> Any:
        if self._raw:
            return self._conn.execute(sql, params or {})
        return self._conn.execute(_text(sql), dict(params or {}))

    def all(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Params | None = None) -> tuple[Any, ...] | None:
        row = self.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def run(self, sql: str, params: Params | None = None) -> int:
        """Execute a write and return how many rows it changed."""
        return int(self.execute(sql, params).rowcount)

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        if self._raw:
            self._conn.executemany(sql, rows)
        else:
            self._conn.execute(_text(sql), [dict(r) for r in rows])

    def ddl(self, sql: str) -> None:
        if self._raw:
            self._conn.execute(sql)
        else:
            self._conn.exec_driver_sql(sql)


_texts: dict[str, Any] = {}


def _text(sql: str) -> Any:
    stmt = _texts.get(sql)
    if stmt is None:
        from sqlalchemy import text

        stmt = _texts[sql] = text(sql)
    return stmt


class Database:
    """One database: its connections (rebuilt after fork), its write lock and its transaction helpers."""

    def __init__(self, db: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.target = db
        self.is_sqlite = not is_url(db)
        self.path = db if self.is_sqlite else None
        self.lock_path = db + ".lock" if self.is_sqlite else None
        self.lock_timeout = lock_timeout
        self._pid = -1
        self._engine: Engine | None = None
        self._lock_fd: int | None = None
        self._thread_lock = threading.Lock()
        self._local = threading.local()

    # -- connections -------------------------------------------------------------------------

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._reset_after_fork()

    def _reset_after_fork(self) -> None:
        # A forked child must not use its parent's connections, nor share the parent's open lock file:
        # flock belongs to the open file, so a shared descriptor would let both "hold" the lock.
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._engine = None
        self._lock_fd = None
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._local = threading.local()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of this process (schema work, and every statement on server databases)."""
        self._check_pid()
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        from sqlalchemy import create_engine, event

        if not self.is_sqlite:
            return create_engine(self.target, pool_pre_ping=True)
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": DEFAULT_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # no implicit BEGIN; the "begin" hook below issues it
            for pragma in _PRAGMAS:
                dbapi_conn.execute(pragma)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the engine is used for writes (schema) only

        return engine

    def _raw(self) -> sqlite3.Connection:
        """This thread's own sqlite3 connection, in autocommit mode with jobtrack's PRAGMAs."""
        self._check_pid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path or "", timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False, cached_statements=256)
            for pragma in _PRAGMAS:
                conn.execute(pragma)
            self._local.conn = conn
        return conn

    def dispose(self) -> None:
        """Close this thread's connection and the engine's pool; both reopen on next use."""
        if self._pid != os.getpid():
            return
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[Tx]:
        """A short read transaction (one consistent snapshot), without the write lock.

        ``snapshot=False`` skips BEGIN/COMMIT for a single statement, which SQLite runs atomically anyway.
        """
        with _translate(self.target):
            if self.is_sqlite:
                conn = self._raw()
                if not snapshot:
                    yield Tx(conn, raw=True)
                    return
                conn.execute("BEGIN")
                try:
                    yield Tx(conn, raw=True)
                finally:
                    conn.execute("COMMIT")  # a read has nothing to lose; end the snapshot promptly
            else:
                with self.engine.connect() as sa, sa.begin():
                    yield Tx(sa, raw=False)

    def read_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        """One row of a single-statement read (the status hot path: no transaction object, no lock)."""
        if self.is_sqlite:
            try:
                row: tuple[Any, ...] | None = self._raw().execute(sql, params).fetchone()
                return row
            except sqlite3.Error as exc:
                raise _store_error(self.target, exc) from exc
        with self.read(snapshot=False) as tx:
            return tx.one(sql, params)

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Tx]:
        """An exclusive write transaction: thread lock, file lock, BEGIN IMMEDIATE; commit or roll back.

        ``durable=False`` is for a transaction whose effect no caller is told about (a claim): it
        commits without its own flush of the write-ahead log (SQLite: no fsync; PostgreSQL:
        ``synchronous_commit`` off). It survives a crash of the process, and the next durable commit,
        which flushes the same append-only log, makes it survive power loss as well, before anything
        that depends on it is reported.

        Raises:
            StoreBusy: the lock was not free within ``lock_timeout``.
        """
        self._check_pid()
        if getattr(self._local, "in_write", False):
            raise RuntimeError("jobtrack store writes do not nest; pass the transaction down instead")
        with self._locked(), _translate(self.target):
            self._local.in_write = True
            try:
                if self.is_sqlite:
                    conn = self._raw()
                    if not durable:
                        conn.execute("PRAGMA synchronous=NORMAL")
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            yield Tx(conn, raw=True)
                        except BaseException:
                            conn.execute("ROLLBACK")
                            raise
                        conn.execute("COMMIT")
                    finally:
                        if not durable:
                            conn.execute("PRAGMA synchronous=FULL")
                else:
                    with self.engine.connect() as sa, sa.begin():
                        if not durable and sa.dialect.name == "postgresql":  # the same rule, server-side
                            sa.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                        yield Tx(sa, raw=False)
            finally:
                self._local.in_write = False

    @contextmanager
    def admin(self) -> Iterator[Connection]:
        """A write transaction on a SQLAlchemy connection (schema creation and upgrades), under the same lock.

        On PostgreSQL a transaction-scoped advisory lock stands in for the file lock, so workers that
        start together do not create or upgrade the schema twice.
        """
        with self._locked(), _translate(self.target), self.engine.connect() as sa, sa.begin():
            if sa.dialect.name == "postgresql":
                sa.execute(_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
            yield sa

    @contextmanager
    def writers_paused(self) -> Iterator[None]:
        """Keep this process's writers out meanwhile: fork under it, so that no child inherits a
        SQLite lock that a thread of its parent held at the moment of fork (the child would wait on
        it for ever: SQLite keeps per-process lock state that fork copies)."""
        self._check_pid()
        with self._thread_lock:
            yield

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._check_pid()  # before taking the thread lock: a reset after fork replaces it
        deadline = time.monotonic() + self.lock_timeout
        if not self._thread_lock.acquire(timeout=max(self.lock_timeout, 0)):
            raise StoreBusy(self.target, self.lock_timeout, holder=f"another thread of pid {os.getpid()}")
        try:
            fd = self._lock_file()
            if fd is not None:
                self._acquire_file_lock(fd, deadline)
            try:
                yield
            finally:
                if fd is not None:
                    filelock.unlock_descriptor(fd)
        finally:
            self._thread_lock.release()

    def _lock_file(self) -> int | None:
        if self.lock_path is None:
            return None  # server databases lock rows, not files
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreReadOnly(self.target, f"cannot open the lock file {self.lock_path}: {exc.strerror}") from None
        return self._lock_fd

    def _acquire_file_lock(self, fd: int, deadline: float) -> None:
        """Take the lock with jittered exponential backoff (50 µs up to 2 ms) until ``deadline``."""
        delay = 50e-6
        while not filelock.lock_descriptor(fd, blocking=False):
            if time.monotonic() >= deadline:
                raise StoreBusy(self.target, self.lock_timeout, holder=self._lock_holder())
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.002)

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

    # -- dialect-specific SQL ----------------------------------------------------------------

    def export_view_sql(self, view_name: str, columns: Sequence[str], job_id: str, kind: str) -> str:
        """DDL of a read-only view turning stored JSON arrays back into named columns."""
        if self.is_sqlite:
            cells = [f"json_extract(data_json, '$[{i}]')" for i in range(len(columns))]
        else:
            cells = [f"(data_json::jsonb)->>{i}" for i in range(len(columns))]
        select_list = ", ".join(f'{cell} AS "{_ident(col)}"' for cell, col in zip(cells, columns)) or "NULL AS empty"
        return (f'CREATE VIEW "{_ident(view_name)}" AS SELECT {select_list} FROM export_rows '
                f"WHERE job_id = '{_literal(job_id)}' AND kind = '{_literal(kind)}' ORDER BY seq")

    @property
    def for_update(self) -> str:
        """Row lock for a read that a write in the same transaction depends on (servers; SQLite holds the database)."""
        return "" if self.is_sqlite else " FOR UPDATE"

    @property
    def skip_locked(self) -> str:
        """Row-locking suffix for claiming queued jobs (servers); SQLite's write lock already serialises."""
        return "" if self.is_sqlite else " FOR UPDATE SKIP LOCKED"


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _literal(value: str) -> str:
    return value.replace("'", "''")


@contextmanager
def _translate(target: str) -> Iterator[None]:
    """Turn driver errors into jobtrack's typed store errors; no raw sqlite3 error reaches users."""
    try:
        yield
    except JobtrackError:
        raise
    except sqlite3.Error as exc:
        raise _store_error(target, exc) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy") and hasattr(exc, "orig"):  # a DBAPIError
            raise _store_error(target, exc.orig) from exc
        raise


def _store_error(target: str, orig: BaseException | None) -> StoreError:
    text_ = str(orig)
    lowered = text_.lower()
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return StoreReadOnly(target, text_)
    if "not a database" in lowered or "malformed" in lowered:
        return NotAJobtrackDatabase(target, text_)
    if "disk is full" in lowered or "disk i/o" in lowered:
        return StoreError(f"Cannot write {target}: {text_}. Free disk space or move the database; nothing was written.")
    if "locked" in lowered or "busy" in lowered:
        return StoreBusy(target, DEFAULT_BUSY_TIMEOUT_MS / 1000)
    return StoreError(f"Database error on {target}: {text_}")


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
