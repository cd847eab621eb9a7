"""Connections, transactions and the write lock: the only module that emits BEGIN or PRAGMA or takes the file lock.

Reads run in a short deferred transaction without the lock (WAL lets them overlap a writer).
Writes take an in-process lock, then the file lock beside the database, then ``BEGIN IMMEDIATE``;
they commit or roll back and release in reverse order. Writes do not nest.

A SQLite file is reached through raw ``sqlite3`` connections only, one per thread, with every PRAGMA
set in ``_configure`` (SQLAlchemy's execution machinery costs ten times the statement itself); a
process opens each real file once, whatever the spelling of its path (``openfiles``, #21). Server
databases run the same SQL text through SQLAlchemy. The file lock is filelock's descriptor lock on a
lock file kept open per process, the same OS lock a ``filelock.FileLock`` on that path takes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

# SQLAlchemy is imported only where it is used (schema DDL, server databases) and filelock at the first
# write (#14): a status read on a SQLite file runs on sqlite3 alone, which keeps `jobtrack status` quick.
from jobtrack import runtime, timeutil
from jobtrack.config import DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_S, is_url
from jobtrack.errors import (
    DatabaseReplaced,
    InvalidArgument,
    JobtrackError,
    NestedWrite,
    StoreBusy,
    StoreError,
    StoreReadOnly,
)
from jobtrack.store.dbstate import SchemaState
from jobtrack.store.dialect import DialectSQL
from jobtrack.store.failures import server_failure, shown, sqlite_failure
from jobtrack.store.location import FileIdentity, check_local_filesystem, file_identity, permission_problem
from jobtrack.store.openfiles import OpenFile, attach, close_files, lock_holder
from jobtrack.store.readonly import attach_read_only, close_read_only
from jobtrack.store.retry import Retrying
from jobtrack.store.server import Server
from jobtrack.store.tx import Params, Tx

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["Database", "FileIdentity", "Params", "Tx", "check_local_filesystem", "close_all", "file_identity",
           "permission_problem"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ADVISORY_KEY = 0x6A6F6274  # "jobt": the advisory lock id jobtrack's schema work takes on PostgreSQL
_READ_CHECK_S = 0.25  # how often a reader checks that the path still names the file it has open (#21)


def _configure(conn: sqlite3.Connection, wal: bool) -> None:
    """Every PRAGMA a jobtrack connection runs; ``wal`` only once the file is known to be jobtrack's: ``journal_mode``
    is the one setting stored in the file itself, so refusing a foreign file changes nothing in it."""
    conn.execute(f"PRAGMA busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit reported to the user survives power loss (SPEC §5: nothing is lost).
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA journal_size_limit=4194304")  # a -wal grown by one large transaction shrinks back (4 MiB)
    if wal:
        _switch_to_wal(conn)


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, retried until ``busy_timeout`` (a no-op on a file already in WAL). On a new
    file the switch upgrades a read lock, where SQLite returns BUSY at once without its busy handler."""
    def busy(exc: Exception) -> bool:  # the failed switch holds no lock: trying again leaks nothing
        return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY

    runtime.retried(lambda: conn.execute("PRAGMA journal_mode=WAL"), busy,
                    time.monotonic() + DEFAULT_BUSY_TIMEOUT_MS / 1000)


_server_databases: weakref.WeakSet[Database] = weakref.WeakSet()
_filelock: Any = None  # the filelock module, once a write needed it


def _locks() -> Any:
    global _filelock
    if _filelock is None:
        import filelock as _filelock
    return _filelock


def close_all() -> None:
    """Close every connection and lock file this process holds on any database; they reopen on next use.

    Safe while other threads run jobs: it waits until no thread is inside SQLite (the fork gate)."""
    with runtime.current().fork_gate.fork():
        close_files()
        close_read_only()
        for db in list(_server_databases):
            db.dispose()


runtime.on_close_all(close_all)  # runtime.close_all() (the pytest plugin's teardown) closes the files too


class Database(Retrying, DialectSQL, SchemaState):
    """One database: its connections (rebuilt after fork), its write lock and its transaction helpers."""

    def __init__(self, db: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S, read_only: bool = False) -> None:
        if "\x00" in db:
            raise InvalidArgument(f"The database path {db!r} contains a NUL byte; pass a real file path or URL.")
        self.target = db
        self.is_sqlite = not is_url(db)
        self.path = db if self.is_sqlite else None
        self.lock_path = os.path.realpath(db) + ".lock" if self.is_sqlite else None
        self._file: OpenFile | None = None  # SQLite: this process's entry for the file (openfiles)
        self._server = None if self.is_sqlite else Server(db)
        self.lock_timeout = lock_timeout
        self.read_only = read_only  # reads only, through SQLite's mode=ro (store/readonly.py): write() refuses
        self._ready = False  # server databases: schema checked by this process
        self._check_after = 0.0  # monotonic time after which a read checks the file's identity again
        self.write_locks = 0  # how often this process took this file's write lock (tests, benchmarks: #14)
        if self._server is not None:
            _server_databases.add(self)

    # -- connections -------------------------------------------------------------------------

    def _sqlite_file(self) -> OpenFile:
        f = self._file
        if f is None or f.pid != os.getpid():
            assert self.path is not None
            f = self._file = (attach_read_only if self.read_only else attach)(self.path, self.target)
        return f

    def _raw(self) -> sqlite3.Connection:
        """This thread's own sqlite3 connection to the file, in autocommit mode with jobtrack's PRAGMAs."""
        f = self._file
        if f is None or f.pid != os.getpid():
            f = self._sqlite_file()
        conn: sqlite3.Connection | None = getattr(f.local, "conn", None)
        if conn is not None and not f.writable and f.changed():  # an immutable read: see readonly.ReadOnlyFile
            f.drop_connection(reopen=True)  # the new one checks that the path still names this file
            conn = None
        if conn is None:
            try:
                conn = f.connect(self.target, _configure)
            except sqlite3.Error as exc:
                raise self._sqlite_error(exc) from exc
        return conn

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of a server database (SQLite files have none: one execution path)."""
        if self._server is None:
            raise InvalidArgument("SQLite files are reached through sqlite3 only; use read() and write().")
        return self._server.engine

    def dispose(self) -> None:
        """Close this thread's connection (SQLite) or the engine's pool (servers); both reopen on next use."""
        if self._server is not None:
            self._server.dispose()
            return
        f = self._file
        if f is not None and f.pid == os.getpid():
            f.drop_connection()

    def adopt(self) -> None:
        """The file was found to be jobtrack's (or empty): switch it to WAL, and every later connection too."""
        if not self.is_sqlite:
            return
        self._sqlite_file().owned = True
        try:
            _switch_to_wal(self._raw())
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[Tx]:
        """A short read transaction, without the write lock (see ``_read``), inside the fork gate."""
        gate = runtime.current().fork_gate
        gate.enter()
        try:
            with self._read(snapshot=snapshot) as tx:
                yield tx
        finally:
            gate.leave()

    @contextmanager
    def _read(self, *, snapshot: bool = True) -> Iterator[Tx]:
        """A short read transaction (one consistent snapshot); ``snapshot=False`` skips BEGIN/COMMIT for a
        single statement, which SQLite runs atomically anyway. Failures are typed ``StoreError``s."""
        with self._translate():
            if self._server is not None:
                with self._server.read(time.monotonic() + self.lock_timeout) as tx:
                    yield tx
                return
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

    def read_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        """One row of a single-statement read (the status hot path: no transaction, no lock; errors as read())."""
        return self._single(sql, params, False)  # type: ignore[no-any-return]

    def read_all(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        """Every row of a single-statement read, like ``read_one`` (no BEGIN/COMMIT around one SELECT, #14)."""
        return self._single(sql, params, True)  # type: ignore[no-any-return]

    def data_version(self) -> int | None:
        """SQLite's count of commits by other connections (None on servers): an idle worker watches it (#14)."""
        return self._single("PRAGMA data_version", {}, False)[0] if self.is_sqlite else None

    def _single(self, sql: str, params: Params, every: bool) -> Any:
        if self.is_sqlite:
            if time.monotonic() > self._check_after:
                self._recheck_identity()
            gate = runtime.current().fork_gate  # see read()
            gate.enter()
            try:
                cursor = self._raw().execute(sql, params)
                return cursor.fetchall() if every else cursor.fetchone()
            except sqlite3.Error as exc:
                raise self._sqlite_error(exc) from exc
            finally:
                gate.leave()
        def once() -> Any:
            with self.read(snapshot=False) as tx:
                return tx.all(sql, params) if every else tx.one(sql, params)
        return self.reread(once) if self._server is not None and self._server.reached else once()

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Tx]:
        """An exclusive write transaction: fork gate, thread lock, file lock, BEGIN IMMEDIATE; commit or roll back.

        On SQLite one generator with one try/finally chain, not four nested context managers (#14).
        ``durable=False`` is for a transaction whose effect no caller is told about (a claim): it commits
        without its own flush of the write-ahead log (SQLite: no fsync; PostgreSQL: ``synchronous_commit``
        off); the next durable commit, which flushes the same log, makes it survive power loss too.

        Raises:
            NestedWrite: this thread is already inside a write of this database.
            StoreBusy: the lock was not free within ``lock_timeout``.
            StoreUnavailable: disk full, I/O error or a lost server connection; nothing was written.
            DatabaseReplaced: the file at ``path`` is no longer the file this process has open.
        """
        if self.read_only:
            raise StoreReadOnly(shown(self.target), permission_problem(self.target) or "it was opened for reading only")
        gate = runtime.current().fork_gate  # see runtime.ForkGate
        gate.enter()
        try:
            if self._server is not None:
                with self._server_write(durable) as tx:
                    yield tx
                return
            conn = self._raw()  # connected before locking: a file with a live connection keeps its entry
            f = self._sqlite_file()
            state = f.local
            if getattr(state, "in_write", False):
                raise NestedWrite(shown(self.target))
            deadline = time.monotonic() + self.lock_timeout
            if not f.write_lock.acquire(blocking=False):  # free almost always: no timeout arithmetic then
                self._take(f.write_lock, deadline)
            try:
                fd = f.lock_file(self.target)
                self._acquire_file_lock(fd, deadline)
                self.write_locks += 1
                state.in_write = True
                try:
                    if not durable:
                        conn.execute("PRAGMA synchronous=NORMAL")
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        yield Tx(conn, raw=True)
                        self._check_identity(f)  # ~2 µs: one stat per write (#21)
                        conn.execute("COMMIT")
                    except BaseException:
                        self._rollback(f, conn)
                        raise
                    finally:
                        if not durable and getattr(f.local, "conn", None) is conn:
                            conn.execute("PRAGMA synchronous=FULL")
                except sqlite3.Error as exc:
                    raise self._sqlite_error(exc) from exc
                finally:
                    state.in_write = False
                    _locks().unlock_descriptor(fd)
            finally:
                f.write_lock.release()
        finally:
            gate.leave()

    def write_call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in a durable write transaction, with every guarantee of ``write()``; returns its
        result. On a SQLite file it is one plain call, no generator, Tx or helper layers: the per-epoch path (#14),
        where those cost as much as the statements. ``fn`` gets a ``sqlite3.Connection`` there, a Tx elsewhere."""
        f = self._file
        conn = None if f is None or f.pid != os.getpid() or self.read_only else getattr(f.local, "conn", None)
        if f is None or conn is None or getattr(f.local, "in_write", False):  # connect, refuse a nested write
            with self.write() as tx:
                return fn(tx.connection if self.is_sqlite else tx, *args)
        gate = runtime.current().fork_gate
        gate.enter()
        try:
            if f.pid != os.getpid():  # closed just before the gate let us in (runtime.close_all)
                return self.write_call(fn, *args)
            deadline = None  # lock_timeout from the first wait: both locks are free almost always
            if not f.write_lock.acquire(blocking=False):
                self._take(f.write_lock, deadline := time.monotonic() + self.lock_timeout)
            try:
                fd = f.lock_file(self.target)
                self._acquire_file_lock(fd, deadline)
                self.write_locks += 1
                f.local.in_write = True
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        out = fn(conn, *args)
                        self._check_identity(f)
                        conn.execute("COMMIT")
                    except BaseException:
                        self._rollback(f, conn)
                        raise
                    return out
                except sqlite3.Error as exc:
                    raise self._sqlite_error(exc) from exc
                finally:
                    f.local.in_write = False
                    _locks().unlock_descriptor(fd)
            finally:
                f.write_lock.release()
        finally:
            gate.leave()

    @contextmanager
    def _server_write(self, durable: bool) -> Iterator[Tx]:
        """``write()`` on a server database: the thread lock, then the server's own transaction (row locks)."""
        server = self._server
        assert server is not None
        server.check_pid()
        if getattr(server.local, "in_write", False):
            raise NestedWrite(shown(self.target))
        self._take(server.write_lock, time.monotonic() + self.lock_timeout)
        try:
            with self._translate():
                server.local.in_write = True
                try:
                    with server.write(durable=durable, lock_timeout=self.lock_timeout) as tx:
                        yield tx
                finally:
                    server.local.in_write = False
        finally:
            server.write_lock.release()

    def _rollback(self, f: OpenFile, conn: sqlite3.Connection) -> None:
        """Roll back if SQLite has not already; a connection that cannot is closed and reopened on next use."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("rollback on %s failed; reconnecting", self.target, exc_info=True)
            f.drop_connection()

    def _check_identity(self, f: OpenFile) -> None:
        if file_identity(self.path or "") != f.identity:
            raise DatabaseReplaced(self.target, f.replaced(self.path or "") or "")

    def _recheck_identity(self) -> None:
        """Readers look at most every ``_READ_CHECK_S`` whether the path still names the open file, so a
        status poll cannot report a job's progress from a file that was deleted or replaced meanwhile."""
        self._check_identity(self._sqlite_file())
        self._check_after = time.monotonic() + _READ_CHECK_S

    @contextmanager
    def admin(self) -> Iterator[Tx]:
        """A write transaction for schema creation and upgrades, under the same lock. On PostgreSQL a transaction-scoped
        advisory lock stands in for the file lock, so workers that start together do not do that work twice."""
        with self.write() as tx:
            if self.dialect_name == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(:key)", {"key": _ADVISORY_KEY})
            yield tx

    def _take(self, thread_lock: threading.Lock, deadline: float) -> None:
        """Take this process's lock of the database (one writing thread at a time) until ``deadline``."""
        while not thread_lock.acquire(timeout=min(0.05, max(deadline - time.monotonic(), 0))):
            if time.monotonic() >= deadline:
                raise StoreBusy(shown(self.target), self.lock_timeout, holder=f"another thread of pid {os.getpid()}")
            runtime.pause(0)  # a signal acts here, holding nothing (#12)

    def _acquire_file_lock(self, fd: int, deadline: float | None) -> None:
        """Take the lock (free almost always: one try), else back off until ``deadline`` (None: ``lock_timeout``
        from now); a signal acts meanwhile."""
        lock = _locks().lock_descriptor
        if lock(fd, blocking=False):
            return
        deadline = time.monotonic() + self.lock_timeout if deadline is None else deadline
        if not runtime.until(lambda: bool(lock(fd, blocking=False)), deadline):
            raise StoreBusy(self.target, self.lock_timeout, holder=lock_holder(self.lock_path or ""))

    def clock(self) -> datetime:
        """Aware UTC "now" as the database sees it (leases compare against it): this host's clock for a SQLite
        file, ``Server.clock`` for a server. Raises StoreError if the server could not be asked (as ``read()``)."""
        if self._server is None:
            return timeutil.utcnow()
        gate = runtime.current().fork_gate  # it may connect: no fork meanwhile (libpq's locks, as read()'s)
        gate.enter()
        try:
            with self._translate():
                return self._server.clock()
        finally:
            gate.leave()

    # -- errors ----------------------------------------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn driver errors into jobtrack's typed store errors; no raw driver error reaches users."""
        try:
            yield
        except JobtrackError:
            raise
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc
        except Exception as exc:
            if self._server is None:
                raise
            from sqlalchemy.exc import DBAPIError

            if not isinstance(exc, DBAPIError):
                raise
            raise server_failure(self.target, exc, lock_timeout=self.lock_timeout) from exc

    def _sqlite_error(self, exc: sqlite3.Error) -> StoreError:
        f = self._file
        return sqlite_failure(self.target, exc, lambda: None if f is None else f.replaced(self.path or ""))
