"""Connections, transactions and the write lock: the only module that emits BEGIN or PRAGMA or takes the file lock.

Reads run in a short deferred transaction without the lock (WAL lets them overlap a writer).
Writes take an in-process lock, then the file lock beside the database, then ``BEGIN IMMEDIATE``;
they commit or roll back and release in reverse order. Writes do not nest.

A SQLite file is reached through raw ``sqlite3`` connections only (one per thread, PRAGMAs set in
``_configure``; SQLAlchemy's execution machinery costs ten times the statement itself), and a process
opens each file once, whatever the spelling of its path: every ``Database`` of the same file (same
device and inode) shares one ``_SQLiteFile`` with its connections, its lock file and its schema check.
No descriptor of a database file is ever opened and closed outside SQLite while the process has a
connection to it: closing any descriptor of a file drops every POSIX lock the process holds on it,
and another process's SQLite then believes it is the last user and deletes the write-ahead log (#21).
Server databases run the same SQL text through SQLAlchemy. The file lock is filelock's descriptor lock
on a lock file kept open per process, the same OS lock a ``filelock.FileLock`` on that path takes.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

# SQLAlchemy is imported only where it is used (schema DDL, server databases): a status read on
# a SQLite file runs on sqlite3 alone, which keeps `jobtrack status` quicker than importing sqlmodel.
import filelock

from jobtrack import timeutil
from jobtrack.config import DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_S, is_url
from jobtrack.errors import (
    DatabaseReplaced,
    InvalidArgument,
    JobtrackError,
    NestedWrite,
    NotAJobtrackDatabase,
    StoreBusy,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Mapping[str, Any]
FileIdentity = tuple[int, int]

_ADVISORY_KEY = 0x6A6F6274  # "jobt": the advisory lock id jobtrack's schema work takes on PostgreSQL
_CLOCK_TTL_S = 60.0  # how long a measured server clock offset is trusted
_READ_CHECK_S = 0.25  # how often a reader checks that the path still names the file it has open (#21)

# Primary SQLite result codes (an extended code keeps its primary one in the low byte).
_SQLITE_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_SQLITE_READONLY = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH}
_SQLITE_FOREIGN = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}
_SQLITE_TRANSIENT = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}

# PostgreSQL SQLSTATEs: connection lost or server shutting down (retry on a new connection), a
# transaction that lost a race (retry it), no resources (disk full: retry later), no permission.
_PG_LOST = ("08", "57P01", "57P02", "57P03")
_PG_RETRY = {"40001", "40P01", "55P03"}
_PG_READONLY = {"25006", "42501"}


def file_identity(path: str) -> FileIdentity | None:
    """``(st_dev, st_ino)`` of the file ``path`` names (symlinks followed), or None if there is none.

    A stat opens no descriptor, so it is safe to call on a file this process has open (#21).
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    return (st.st_dev, st.st_ino)


def permission_problem(path: str) -> str | None:
    """Which of the database's directory, file, ``-wal`` or ``-shm`` this user cannot write, or None.

    A ``-wal``/``-shm`` left behind by another user (root, say) is a permissions problem to name, not a
    foreign file (#21, defect 7).
    """
    parent = os.path.dirname(os.path.abspath(path))
    for candidate, need in ((parent, os.W_OK | os.X_OK), (path, os.R_OK | os.W_OK),
                            (path + "-wal", os.R_OK | os.W_OK), (path + "-shm", os.R_OK | os.W_OK)):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not os.access(candidate, need):
            what = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            return (f"the {what} {candidate} is not writable by this user (owner uid {st.st_uid}, "
                    f"mode {stat.S_IMODE(st.st_mode):o})")
    return None


class Tx:
    """One open transaction; SQL text with ``:name`` parameters, the same for every backend."""

    __slots__ = ("_conn", "_raw", "_text", "memo")

    def __init__(self, conn: Any, *, raw: bool, text: Callable[[str], Any] | None = None) -> None:
        self._conn = conn
        self._raw = raw
        self._text = text
        self.memo: dict[Any, Any] = {}  # reads remembered for the rest of this transaction

    def execute(self, sql: str, params: Params | None = None) -> Any:
        if self._raw:
            return self._conn.execute(sql, params or {})
        assert self._text is not None
        return self._conn.execute(self._text(sql), dict(params or {}))

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
            assert self._text is not None
            self._conn.execute(self._text(sql), [dict(r) for r in rows])

    def ddl(self, sql: str) -> None:
        if self._raw:
            self._conn.execute(sql)
        else:
            self._conn.exec_driver_sql(sql)


class _Connection(sqlite3.Connection):
    """A plain sqlite3 connection that a ``weakref.WeakSet`` can hold (the base class has no weakref slot)."""


def _configure(conn: sqlite3.Connection, *, wal: bool) -> None:
    """Every PRAGMA a jobtrack connection runs; ``wal`` only once the file is known to be jobtrack's.

    ``journal_mode`` is the one setting stored in the file itself: a file that may be someone else's
    is looked at without it, so refusing a foreign file changes nothing in it.
    """
    conn.execute(f"PRAGMA busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit reported to the user survives power loss (SPEC §5: nothing is lost).
    conn.execute("PRAGMA synchronous=FULL")
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")


class _SQLiteFile:
    """One database file as this process has it open: its connections, its write lock, its schema check.

    Shared by every ``Database`` of the file (``sub/../x.db``, a symlink and its target alike), so the
    process opens the file once, through SQLite only (#21).
    """

    def __init__(self, path: str, identity: FileIdentity) -> None:
        self.path = path  # the real path (symlinks resolved) that connections open
        self.identity = identity
        self.pid = os.getpid()  # 0 once closed: every Database then attaches afresh
        self.lock_path = path + ".lock"
        self.local = threading.local()  # .conn: this thread's connection; .in_write: inside write()
        self.conns: weakref.WeakSet[_Connection] = weakref.WeakSet()  # every thread's, for close()
        self.write_lock = threading.Lock()
        self.lock_fd: int | None = None
        self.owned = False  # schema.prepare found the file jobtrack's (or empty): WAL may be switched on
        self.ready = False  # ... and its schema current: nothing left to check in this process

    def lock_file(self, shown: str) -> int:
        if self.lock_fd is None:
            try:
                self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreReadOnly(shown, f"cannot open the lock file {self.lock_path}: {exc.strerror}") from None
        return self.lock_fd

    def close(self) -> None:
        self.pid = 0
        for conn in list(self.conns):
            conn.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # the lock file is not a database file: closing it drops no SQLite lock
            self.lock_fd = None


_files: dict[FileIdentity, _SQLiteFile] = {}
_files_lock = threading.Lock()
_files_pid = os.getpid()
_server_databases: weakref.WeakSet[Database] = weakref.WeakSet()


def _registry() -> dict[FileIdentity, _SQLiteFile]:
    """The open files of this process; a forked child starts with none (its parent's are not its own)."""
    global _files, _files_lock, _files_pid
    if _files_pid != os.getpid():
        # The parent's connections must not be used here, and its lock descriptors share the parent's
        # open file description (flock would let both "hold" the lock). Closing our copies of the lock
        # files is safe; the connections are left to the garbage collector: a child holds no POSIX
        # lock of its parent's, so closing them cannot release one.
        for f in _files.values():
            if f.lock_fd is not None:
                os.close(f.lock_fd)
                f.lock_fd = None
            f.pid = 0
        _files, _files_lock, _files_pid = {}, threading.Lock(), os.getpid()
    return _files


def close_all() -> None:
    """Close every connection and lock file this process holds on any database; they reopen on next use.

    For test teardown and process shutdown: call it while no jobtrack call is in flight in any thread.
    """
    files = _registry()
    with _files_lock:
        for f in files.values():
            f.close()
        files.clear()
    for db in list(_server_databases):
        db.dispose()


class Database:
    """One database: its connections (rebuilt after fork), its write lock and its transaction helpers."""

    def __init__(self, db: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        if "\x00" in db:
            raise InvalidArgument(f"The database path {db!r} contains a NUL byte; pass a real file path or URL.")
        self.target = db
        self.is_sqlite = not is_url(db)
        self.path = db if self.is_sqlite else None
        self.lock_path = os.path.realpath(db) + ".lock" if self.is_sqlite else None
        self.lock_timeout = lock_timeout
        self._file: _SQLiteFile | None = None
        self._pid = -1
        self._engine: Engine | None = None
        self._thread_lock = threading.Lock()  # server databases: this process's writers, one at a time
        self._local = threading.local()  # server databases: .in_write
        self._texts: dict[str, Any] = {}
        self._ready = False  # server databases: schema checked by this process
        self._clock: tuple[float, timedelta] | None = None  # (measured at, server minus local)
        self._check_after = 0.0  # monotonic time after which a read checks the file's identity again
        if not self.is_sqlite:
            _server_databases.add(self)

    # -- connections -------------------------------------------------------------------------

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            # A forked child must not use its parent's pooled connections nor a lock a parent thread held.
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._engine = None
            self._pid = os.getpid()
            self._thread_lock = threading.Lock()
            self._local = threading.local()

    def _sqlite_file(self) -> _SQLiteFile:
        f = self._file
        if f is None or f.pid != os.getpid():
            f = self._attach()
        return f

    def _attach(self) -> _SQLiteFile:
        """Find (or register) this process's entry for the file at ``path``, creating an empty private file."""
        assert self.path is not None
        files = _registry()
        with _files_lock:
            identity = file_identity(self.path)
            if identity is None:
                # Private to the user before SQLite creates it (its -wal/-shm copy these bits). O_EXCL: this
                # opens no descriptor of a file someone already has, so closing it drops no lock (#21).
                try:
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise StoreReadOnly(self.target, permission_problem(self.path) or exc.strerror or str(exc)) from None
                identity = file_identity(self.path)
                if identity is None:
                    raise StoreReadOnly(self.target, "the file vanished as it was created")
            f = files.get(identity)
            if f is not None and not f.conns:
                # Nothing of ours holds that inode open, so it may have been freed and its number reused
                # by another file since: start afresh (a file with an open connection cannot be reused).
                f.close()
                f = None
            if f is None:
                f = files[identity] = _SQLiteFile(os.path.realpath(self.path), identity)
            self._file = f
            return f

    def _raw(self) -> sqlite3.Connection:
        """This thread's own sqlite3 connection to the file, in autocommit mode with jobtrack's PRAGMAs."""
        f = self._file
        if f is None or f.pid != os.getpid():
            f = self._attach()
        conn: sqlite3.Connection | None = getattr(f.local, "conn", None)
        if conn is None:
            conn = self._connect(f)
        return conn

    def _connect(self, f: _SQLiteFile) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(f.path, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False, cached_statements=256, factory=_Connection)
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc
        try:
            if file_identity(f.path) != f.identity:  # the path now names another file than the one registered
                raise DatabaseReplaced(self.target, self._replaced_detail(f) or "")
            _configure(conn, wal=f.owned)
        except sqlite3.Error as exc:
            conn.close()  # through SQLite: it keeps the descriptor while another connection holds locks
            raise self._sqlite_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        assert isinstance(conn, _Connection)
        f.local.conn = conn
        f.conns.add(conn)
        return conn

    def _drop_connection(self, f: _SQLiteFile) -> None:
        conn = getattr(f.local, "conn", None)
        if conn is not None:
            f.local.conn = None
            f.conns.discard(conn)
            try:
                conn.close()
            except sqlite3.Error:
                log.debug("closing a broken connection to %s failed", self.target, exc_info=True)
        if not f.conns:
            f.ready = False  # the file is no longer held open: check it again at the next open

    def _server_engine(self) -> Engine:
        self._check_pid()
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            try:
                # pool_pre_ping: a pooled connection the server dropped meanwhile is replaced at checkout.
                self._engine = create_engine(self.target, pool_pre_ping=True)
            except (ArgumentError, NoSuchModuleError) as exc:
                raise InvalidArgument(f"Cannot use the database URL {self._shown()}: {exc}. Pass a file path or a "
                                      "URL like postgresql+psycopg://user@host/db.") from None
        return self._engine

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of a server database (SQLite files have none: one execution path)."""
        if self.is_sqlite:
            raise InvalidArgument("SQLite files are reached through sqlite3 only; use read() and write().")
        return self._server_engine()

    def dispose(self) -> None:
        """Close this thread's connection (SQLite) or the engine's pool (servers); both reopen on next use."""
        if self.is_sqlite:
            f = self._file
            if f is not None and f.pid == os.getpid():
                self._drop_connection(f)
            return
        if self._pid == os.getpid() and self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- schema check state (schema.prepare) ----------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether this process has already checked (and created or upgraded) this database's schema.

        Shared by every ``Database`` of the same SQLite file, so a second spelling needs no second probe.
        """
        return self._sqlite_file().ready if self.is_sqlite else self._ready

    def mark_ready(self) -> None:
        """Record that the schema is current (see ``ready``)."""
        if self.is_sqlite:
            f = self._sqlite_file()
            f.owned = f.ready = True
        else:
            self._ready = True

    def adopt(self) -> None:
        """The file was found to be jobtrack's (or empty): switch it to WAL, and every later connection too."""
        if not self.is_sqlite:
            return
        f = self._sqlite_file()
        f.owned = True
        conn = self._raw()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc

    def probe(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a read transaction on a database that may not be jobtrack's, changing nothing.

        On SQLite it runs on this thread's connection through SQLite itself, never a plain ``open()``
        (#21), and before ``adopt()`` no connection switches the file to WAL. If ``fn`` raises, a
        connection opened for the probe is closed again (SQLite keeps the process's locks meanwhile).
        """
        if not self.is_sqlite:
            with self.read() as tx:
                return fn(tx)
        f = self._sqlite_file()
        fresh = getattr(f.local, "conn", None) is None
        try:
            with self.read() as tx:
                return fn(tx)
        except BaseException:
            if fresh and not f.owned:
                self._drop_connection(f)
            raise

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[Tx]:
        """A short read transaction (one consistent snapshot), without the write lock.

        ``snapshot=False`` skips BEGIN/COMMIT for a single statement, which SQLite runs atomically anyway.

        Raises:
            StoreError: a typed subclass for each kind of failure (see ``_sqlite_error``).
        """
        with self._translate():
            if self.is_sqlite:
                if time.monotonic() > self._check_after:
                    self._recheck_identity()
                conn = self._raw()
                if not snapshot:
                    yield Tx(conn, raw=True)
                    return
                conn.execute("BEGIN")
                try:
                    yield Tx(conn, raw=True)
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")  # a read has nothing to lose; end the snapshot promptly
            else:
                with self._server_engine().connect() as sa, sa.begin():
                    yield Tx(sa, raw=False, text=self._text)

    def read_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        """One row of a single-statement read (the status hot path: no transaction object, no lock).

        Raises:
            StoreError: as ``read()``.
        """
        if self.is_sqlite:
            if time.monotonic() > self._check_after:
                self._recheck_identity()
            try:
                row: tuple[Any, ...] | None = self._raw().execute(sql, params).fetchone()
                return row
            except sqlite3.Error as exc:
                raise self._sqlite_error(exc) from exc
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
            NestedWrite: this thread is already inside a write of this database.
            StoreBusy: the lock was not free within ``lock_timeout``.
            StoreUnavailable: disk full, I/O error or a lost server connection; nothing was written.
            DatabaseReplaced: the file at ``path`` is no longer the file this process has open.
        """
        if self.is_sqlite:
            f: _SQLiteFile | None = self._sqlite_file()
            assert f is not None
            state = f.local
        else:
            f = None
            self._check_pid()
            state = self._local
        if getattr(state, "in_write", False):
            raise NestedWrite(self._shown())
        with self._locked(f), self._translate():
            state.in_write = True
            try:
                if f is not None:
                    conn = self._raw()
                    if not durable:
                        conn.execute("PRAGMA synchronous=NORMAL")
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            yield Tx(conn, raw=True)
                            self._check_identity(f)  # ~2 µs: one stat per write (#21)
                            conn.execute("COMMIT")
                        except BaseException:
                            self._rollback(f, conn)
                            raise
                    finally:
                        if not durable and getattr(f.local, "conn", None) is conn:
                            conn.execute("PRAGMA synchronous=FULL")
                else:
                    with self._server_engine().connect() as sa:
                        trans = sa.begin()
                        try:
                            if not durable and sa.dialect.name == "postgresql":  # the same rule, server-side
                                sa.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                            yield Tx(sa, raw=False, text=self._text)
                        except BaseException:
                            try:
                                trans.rollback()
                            except Exception:  # noqa: BLE001 - a dead connection; the first error matters
                                log.debug("rollback on %s failed", self._shown(), exc_info=True)
                            raise
                        try:
                            trans.commit()
                        except Exception as exc:
                            error = self._error(exc)
                            if error is None:
                                raise
                            if isinstance(error, StoreUnavailable):  # the server may have committed first
                                error = StoreUnavailable(self._shown(), error.detail, maybe_applied=True)
                            raise error from exc
            finally:
                state.in_write = False

    def _rollback(self, f: _SQLiteFile, conn: sqlite3.Connection) -> None:
        """Roll back if SQLite has not already; a connection that cannot is closed and reopened on next use."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("rollback on %s failed; reconnecting", self.target, exc_info=True)
            self._drop_connection(f)

    def _check_identity(self, f: _SQLiteFile) -> None:
        if file_identity(self.path or "") != f.identity:
            raise DatabaseReplaced(self.target, self._replaced_detail(f) or "")

    def _recheck_identity(self) -> None:
        """Readers look at most every ``_READ_CHECK_S`` whether the path still names the open file, so a
        status poll cannot report a job's progress from a file that was deleted or replaced meanwhile."""
        self._check_identity(self._sqlite_file())
        self._check_after = time.monotonic() + _READ_CHECK_S

    def _replaced_detail(self, f: _SQLiteFile) -> str | None:
        now = file_identity(self.path or "")
        if now == f.identity:
            return None
        if now is None:
            return "no file is at that path now"
        return "another file is at that path now"

    def transact(self, fn: Callable[[Tx], T], *, durable: bool = True, attempts: int | None = None,
                 timeout: float | None = None) -> T:
        """Run ``fn(tx)`` in a write transaction, retried with backoff while the store is busy or unavailable.

        Each attempt is a fresh transaction (a failed one was rolled back), so ``fn`` may run more than
        once; when a server connection drops during COMMIT the attempt may have been applied, so ``fn``
        should be a conditional write (fenced by a claim token or a status) that is safe to repeat.

        Args:
            attempts: at most this many attempts (default: until the deadline).
            timeout: seconds until the last retry may start (default: ``lock_timeout``).

        Raises:
            StoreBusy, StoreUnavailable: still failing at the deadline (or after ``attempts``).
            NestedWrite, DatabaseReplaced: at once, never retried.
        """
        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        delay, attempt = 0.01, 0
        while True:
            attempt += 1
            try:
                with self.write(durable=durable) as tx:
                    return fn(tx)
            except (StoreBusy, StoreUnavailable) as exc:
                pause = delay * (0.5 + random.random())
                if (attempts is not None and attempt >= attempts) or time.monotonic() + pause > deadline:
                    raise
                log.info("jobtrack: %s; retrying in %.2f s (attempt %d)", exc, pause, attempt + 1)
                time.sleep(pause)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def admin(self) -> Iterator[Tx]:
        """A write transaction for schema creation and upgrades, under the same lock.

        On PostgreSQL a transaction-scoped advisory lock stands in for the file lock, so workers that
        start together do not create or upgrade the schema twice.
        """
        with self.write() as tx:
            if not self.is_sqlite and self.dialect_name == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(:key)", {"key": _ADVISORY_KEY})
            yield tx

    @contextmanager
    def writers_paused(self) -> Iterator[None]:
        """Keep this process's writers out meanwhile: fork under it, so that no child inherits a
        SQLite lock that a thread of its parent held at the moment of fork (the child would wait on
        it for ever: SQLite keeps per-process lock state that fork copies)."""
        if self.is_sqlite:
            lock = self._sqlite_file().write_lock
        else:
            self._check_pid()
            lock = self._thread_lock
        with lock:
            yield

    @contextmanager
    def _locked(self, f: _SQLiteFile | None) -> Iterator[None]:
        thread_lock = f.write_lock if f is not None else self._thread_lock
        deadline = time.monotonic() + self.lock_timeout
        if not thread_lock.acquire(timeout=max(self.lock_timeout, 0)):
            raise StoreBusy(self._shown(), self.lock_timeout, holder=f"another thread of pid {os.getpid()}")
        try:
            fd = f.lock_file(self.target) if f is not None else None  # server databases lock rows, not files
            if fd is not None:
                self._acquire_file_lock(fd, deadline)
            try:
                yield
            finally:
                if fd is not None:
                    filelock.unlock_descriptor(fd)
        finally:
            thread_lock.release()

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

    # -- the database's clock --------------------------------------------------------------------

    def clock(self) -> datetime:
        """Aware UTC "now" as the database sees it: leases compare against this, not a reader's own clock.

        SQLite files live on this host, so its clock is the database's. A server's offset from this
        host's clock is measured (at most once a minute) and applied, so a reader whose clock runs
        ahead does not declare a live runner lost (#21, defect 7).

        Raises:
            StoreError: the server could not be asked (as ``read()``).
        """
        now = timeutil.utcnow()
        if self.is_sqlite:
            return now
        measured = self._clock
        if measured is None or time.monotonic() - measured[0] > _CLOCK_TTL_S:
            measured = self._clock = (time.monotonic(), self._measure_offset())
        return now + measured[1]

    def _measure_offset(self) -> timedelta:
        with self.read(snapshot=False) as tx:
            before = timeutil.utcnow()
            server = tx.scalar("SELECT CURRENT_TIMESTAMP" if self.dialect_name != "postgresql"
                               else "SELECT clock_timestamp()")
            after = timeutil.utcnow()
        if not isinstance(server, datetime) or server.tzinfo is None:
            return timedelta(0)  # a server that does not say its zone: trust this host's clock
        return server - (before + (after - before) / 2)

    # -- errors ----------------------------------------------------------------------------------

    def _shown(self) -> str:
        """The target as messages show it: a server URL without its password."""
        if self.is_sqlite:
            return self.target
        try:
            from sqlalchemy.engine import make_url

            return make_url(self.target).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL has no password to hide
            return self.target

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn driver errors into jobtrack's typed store errors; no raw driver error reaches users."""
        try:
            yield
        except JobtrackError:
            raise
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc

    def _error(self, exc: BaseException) -> StoreError | None:
        if isinstance(exc, sqlite3.Error):
            return self._sqlite_error(exc)
        if isinstance(exc, JobtrackError):
            return exc if isinstance(exc, StoreError) else None
        if self.is_sqlite:
            return None
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            return self._server_error(exc)
        return None

    def _sqlite_error(self, exc: sqlite3.Error) -> StoreError:
        """Classify by ``sqlite_errorcode`` (Python 3.11+), never by message text."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        name = getattr(exc, "sqlite_errorname", None)
        text = f"{exc} ({name})" if name else str(exc)
        if primary in _SQLITE_BUSY:
            return StoreBusy(self.target, DEFAULT_BUSY_TIMEOUT_MS / 1000, holder="SQLite's lock on the file")
        if primary in _SQLITE_READONLY:
            return StoreReadOnly(self.target, permission_problem(self.target) or text)
        if primary in _SQLITE_FOREIGN:
            return NotAJobtrackDatabase(self.target, text)
        if primary in _SQLITE_TRANSIENT:
            f = self._file
            replaced = self._replaced_detail(f) if f is not None else None
            if replaced:
                return DatabaseReplaced(self.target, replaced)
            return StoreUnavailable(self.target, text)
        return StoreError(f"Database error on {self.target}: {text}")

    def _server_error(self, exc: Any) -> StoreError:
        """Classify a SQLAlchemy ``DBAPIError`` by its SQLSTATE and by whether the connection was lost."""
        from sqlalchemy.exc import OperationalError

        orig = getattr(exc, "orig", None) or exc
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
        text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        shown = self._shown()
        if getattr(exc, "connection_invalidated", False) or sqlstate.startswith(_PG_LOST):
            return StoreUnavailable(shown, f"the connection to the server was lost ({text})")
        if sqlstate in _PG_RETRY:
            return StoreBusy(shown, self.lock_timeout, holder=f"a concurrent transaction: {text}")
        if sqlstate.startswith("53"):  # insufficient resources: disk full, out of memory, too many connections
            return StoreUnavailable(shown, text)
        if sqlstate in _PG_READONLY:
            return StoreReadOnly(shown, text)
        if not sqlstate and isinstance(exc, OperationalError):  # no server answered: refused, timed out
            return StoreUnavailable(shown, text)
        return StoreError(f"Database error on {shown}: {text}")

    # -- dialect-specific SQL ----------------------------------------------------------------

    def _text(self, sql: str) -> Any:
        stmt = self._texts.get(sql)
        if stmt is None:
            from sqlalchemy import text

            stmt = self._texts[sql] = text(sql)
        return stmt

    @property
    def dialect_name(self) -> str:
        """``sqlite``, ``postgresql``, ...: the SQL dialect of this database."""
        return "sqlite" if self.is_sqlite else str(self._server_engine().dialect.name)

    def ddl_dialect(self) -> Dialect:
        """The SQLAlchemy dialect that schema DDL is compiled for (SQLite's without any engine)."""
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite.dialect()
        return self._server_engine().dialect

    def table_names(self, tx: Tx) -> set[str]:
        """Names of the tables the transaction sees (a server: in its current schema)."""
        if self.is_sqlite:
            return {str(r[0]) for r in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn: Connection = tx._conn
        return set(conn.dialect.get_table_names(conn))

    def column_names(self, tx: Tx, table: str) -> list[str]:
        """Names of a table's (or view's) columns, in order."""
        if self.is_sqlite:
            return [str(r[1]) for r in tx.all(f'PRAGMA table_info("{_ident(table)}")')]
        conn: Connection = tx._conn
        return [str(c["name"]) for c in conn.dialect.get_columns(conn, table)]

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
