"""Server databases (PostgreSQL) through SQLAlchemy: one engine per process, transactions, the server's clock.

``Database`` owns the locking, nesting and error translation for every backend and hands server
transactions to ``Server``; SQLite files never come here (one execution path for them, #12).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobtrack import runtime, timeutil
from jobtrack.errors import InvalidArgument, StoreUnavailable
from jobtrack.store.failures import server_failure, shown
from jobtrack.store.tx import Tx

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

CLOCK_TTL_S = 60.0
"""How long a measured offset between the server's clock and this host's is trusted."""

OUTAGE_FIRST_S, OUTAGE_MOST_S = 0.02, 1.0
"""The backoff while a server cannot be reached: the first pause, and the longest (``runtime.until``)."""


class Server:
    """The per-process side of one server database: its engine (rebuilt after fork) and clock offset."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._pid = -1
        self._engine: Engine | None = None
        self.write_lock = threading.Lock()  # this process's writers, one at a time
        self.local = threading.local()  # .in_write: inside a write on this thread
        self._texts: dict[str, Any] = {}
        self._clock: tuple[float, timedelta] | None = None  # (measured at, server minus local)
        self.reached = False  # connected once: from then on a refused connect is an outage to wait out

    def check_pid(self) -> None:
        if self._pid != os.getpid():
            # A forked child must not use its parent's pooled connections nor a lock a parent thread held.
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._engine = None
            self._pid = os.getpid()
            self.write_lock = threading.Lock()
            self.local = threading.local()

    @property
    def engine(self) -> Engine:
        self.check_pid()
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            try:
                # pool_pre_ping: a pooled connection the server dropped meanwhile is replaced at checkout.
                self._engine = create_engine(self.target, pool_pre_ping=True)
            except (ArgumentError, NoSuchModuleError) as exc:
                raise InvalidArgument(f"Cannot use the database URL {shown(self.target)}: {exc}. Pass a file "
                                      "path or a URL like postgresql+psycopg://user@host/db.") from None
        return self._engine

    def dispose(self) -> None:
        if self._pid == os.getpid() and self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def text(self, sql: str) -> Any:
        """The SQLAlchemy ``text()`` of ``sql``, compiled once per database and process."""
        stmt = self._texts.get(sql)
        if stmt is None:
            from sqlalchemy import text

            stmt = self._texts[sql] = text(sql)
        return stmt

    def connect(self, deadline: float) -> Connection:
        """A connection from the pool. Once this process has reached the server, a server it cannot reach (a
        restart or a failover takes seconds) is asked again with backoff until ``deadline`` (``time.monotonic()``),
        so jobs and waits ride the outage out; a server never reached (a wrong URL) is an error at once."""
        from sqlalchemy.exc import DBAPIError

        def outage(exc: Exception) -> bool:
            error = server_failure(self.target, exc, lock_timeout=0) if isinstance(exc, DBAPIError) else None
            if not (self.reached and isinstance(error, StoreUnavailable)):
                return False
            log.info("jobtrack: %s; connecting again", error.detail)
            return True

        connection = runtime.retried(self.engine.connect, outage, deadline, first=OUTAGE_FIRST_S, most=OUTAGE_MOST_S)
        self.reached = True
        return connection

    @contextmanager
    def read(self, deadline: float) -> Iterator[Tx]:
        with self.connect(deadline) as sa, sa.begin():
            yield Tx(sa, raw=False, text=self.text)

    @contextmanager
    def write(self, *, durable: bool, lock_timeout: float) -> Iterator[Tx]:
        """One transaction; a connection lost during COMMIT is a ``StoreUnavailable`` that may have applied."""
        with self.connect(time.monotonic() + lock_timeout) as sa:
            trans = sa.begin()
            try:
                if not durable and sa.dialect.name == "postgresql":  # the claim rule of Database.write
                    sa.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield Tx(sa, raw=False, text=self.text)
            except BaseException:
                try:
                    trans.rollback()
                except Exception:  # a dead connection: the first error is the one to report
                    log.debug("rollback on %s failed", shown(self.target), exc_info=True)
                raise
            try:
                trans.commit()
            except Exception as exc:
                from sqlalchemy.exc import DBAPIError

                if not isinstance(exc, DBAPIError):
                    raise
                error = server_failure(self.target, exc, lock_timeout=lock_timeout)
                if isinstance(error, StoreUnavailable):  # the server may have committed before it went
                    error = StoreUnavailable(error.path, error.detail, maybe_applied=True)
                raise error from exc

    def clock(self) -> datetime:
        """Aware UTC "now" as the server sees it: this host's clock plus the server's offset from it.

        The offset is measured at most once a minute, so a reader whose clock runs ahead does not
        declare a live runner lost by comparing leases with its own clock (#21, defect 7).
        """
        measured = self._clock
        if measured is None or time.monotonic() - measured[0] > CLOCK_TTL_S:
            measured = self._clock = (time.monotonic(), self._measure_offset())
        return timeutil.utcnow() + measured[1]

    def _measure_offset(self) -> timedelta:
        with self.engine.connect() as sa:
            now_sql = "SELECT clock_timestamp()" if sa.dialect.name == "postgresql" else "SELECT CURRENT_TIMESTAMP"
            before = timeutil.utcnow()
            server = sa.exec_driver_sql(now_sql).scalar()
            after = timeutil.utcnow()
            sa.rollback()
        if not isinstance(server, datetime) or server.tzinfo is None:
            return timedelta(0)  # a server that does not say its zone: trust this host's clock
        return server - (before + (after - before) / 2)

    @staticmethod
    def table_names(tx: Tx) -> set[str]:
        conn: Connection = tx.connection
        return set(conn.dialect.get_table_names(conn))

    @staticmethod
    def column_names(tx: Tx, table: str) -> list[str]:
        conn: Connection = tx.connection
        return [str(c["name"]) for c in conn.dialect.get_columns(conn, table)]
