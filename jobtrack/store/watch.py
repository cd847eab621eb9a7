"""Waking an idle worker when there may be work, without taking the write lock (#14).

An idle ``jobtrack worker`` used to try a claim (a write transaction under the file lock) every
0.2 s. Now it watches the database cheaply and takes the lock only to claim a job that a lock-free
read has seen QUEUED:

- SQLite: the ``data_version`` pragma on the worker's own connection changes whenever another
  connection commits (about 2 µs to ask). It is polled every millisecond right after a change,
  backing off to ``MAX_STEP_S`` while nothing happens, so a submitted job is seen within a few ms.
- PostgreSQL: a connection of the watcher's own LISTENs on ``jobtrack_jobs``, which ``create_job``
  notifies at commit; if it cannot listen, the lock-free read itself is repeated with the same
  backoff (claims there take row locks with ``SKIP LOCKED``, not a file lock). A listening
  connection that is lost is let go: the worker looks through the pool and listens anew.

Whatever the watch says, the lock-free read is also repeated every ``recheck_s`` (the worker's
``poll_s``), which costs no lock either. Claims go through ``Store.claim_next``: the one path where
a job's status changes (``FencedCore._apply_transition``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from jobtrack.store.base import in_list
from jobtrack.store.jobs import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from jobtrack.store.store import Store

log = logging.getLogger(__name__)

MIN_STEP_S = 0.001
"""The first pause after a change: the next commit (a job submitted right after another) is seen at once."""

MAX_STEP_S = 0.005
"""The longest pause while nothing changes: bounds the pickup delay of an idle worker."""


class ChangeWatcher:
    """An idle worker's view of a database: has it changed, is there a QUEUED job, and claiming it (``claim``)."""

    def __init__(self, store: Store, runner_kinds: Iterable[str], *, recheck_s: float = 0.2) -> None:
        self.store = store
        self.recheck_s = recheck_s
        self.kinds = list(runner_kinds)
        params: dict[str, Any] = {}
        kinds = in_list("k", self.kinds, params)
        self._probe = (f"SELECT 1 FROM jobs WHERE status = 'QUEUED' AND runner_kind IN {kinds} LIMIT 1", params)
        self._version: int | None = None
        self._notified = True  # PostgreSQL: a notification arrived since the last look (the first look: yes)
        self._listening: Any = None  # PostgreSQL: (pooled connection, psycopg connection), or False if it failed
        self._due = 0.0  # monotonic time of the next look regardless of changes
        self._step = MIN_STEP_S
        self.lock_free_reads = 0  # how often it looked for work without the lock (benchmarks)

    def changed(self) -> bool:
        """Whether the database changed since the last call (on a server: a job was announced, or no LISTEN)."""
        version = self.store.db.data_version()
        if version is None:
            notified, self._notified = self._notified, False
            return notified or not self._listener()
        seen, self._version = self._version, version
        return seen != version

    def due(self) -> bool:
        """Whether the worker should look for work now: the database changed, or ``recheck_s`` passed."""
        now = time.monotonic()
        if self.changed() or now >= self._due:
            self._due = now + self.recheck_s
            return True
        return False

    def has_queued(self) -> bool:
        """A read without the lock: is a job of these runner kinds QUEUED? (Only then is a claim worth its lock.)"""
        self.lock_free_reads += 1
        sql, params = self._probe
        found = self.store.db.read_one(sql, params) is not None
        if found:  # after this claim, look again at once: there may be more
            self._due = 0.0
        return found

    def claim(self, *, lease_s: float | None = None) -> tuple[str, int] | None:
        """Claim the oldest QUEUED job of these kinds for this process: (job id, fencing token), or None.

        A lock-free read first (``has_queued``), then ``Store.claim_next``: an idle worker takes the write
        lock only when a job is there to claim.
        """
        if not self.has_queued():
            return None
        return self.store.claim_next(self.kinds, lease_s=lease_s)

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early (within ``MAX_STEP_S``) once the database changed."""
        deadline = time.monotonic() + seconds
        server = not self.store.db.is_sqlite
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if server and self._listener():  # blocks until a job is queued (or ``seconds`` pass)
                try:
                    if any(True for _ in self._listening[1].notifies(timeout=left, stop_after=1)):
                        self._notified = True
                except Exception:  # a lost connection: look now (through the pool), listen anew next time
                    log.debug("waiting for notifications from %s failed", self.store.target, exc_info=True)
                    self.close()
                    self._notified = True
                return
            time.sleep(min(self._step, left))  # the worker's signal handlers only set a flag
            if server:
                if self.has_queued():
                    self._due = 0.0  # look (and claim) at once
                    self._step = MIN_STEP_S
                    return
            elif self._version is not None and self.store.db.data_version() != self._version:
                self._step = MIN_STEP_S
                return
            self._step = min(self._step * 2, MAX_STEP_S)

    def _listener(self) -> bool:
        """PostgreSQL: listen on ``NOTIFY_CHANNEL`` with a connection of its own; False if that is not possible."""
        if self._listening is None:
            try:
                pooled = self.store.db.engine.raw_connection()
                conn: Any = pooled.driver_connection
                if not callable(getattr(conn, "notifies", None)):  # psycopg 3 has it
                    raise TypeError(f"{type(conn).__name__} cannot wait for notifications")
                conn.rollback()
                conn.autocommit = True
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._listening = (pooled, conn)
            except Exception:  # no notifications: fall back to lock-free reads
                log.debug("cannot LISTEN on %s; polling instead", self.store.target, exc_info=True)
                self._listening = False
        return bool(self._listening)

    def close(self) -> None:
        """Close the listening connection (PostgreSQL); the watcher opens another if used again."""
        if self._listening:
            with contextlib.suppress(Exception):
                self._listening[0].invalidate()  # closed and dropped from the pool (it was put in autocommit)
        self._listening = None
