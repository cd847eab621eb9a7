"""Threads and gates that run beside a process's jobs: heartbeats, a retrying recorder, the fork gate.

Generic helpers with no jobtrack imports; ``jobtrack.runtime`` holds the one instance of each per process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

log = logging.getLogger(__name__)

RECORD_RETRY_MAX_S = 1.0
"""Longest pause between attempts of a pending write (the store was busy, full or unreachable)."""


class Heartbeats:
    """One daemon thread per process calling each registered job's ``beat`` every ``period_s``.

    Runners register the jobs they run; a live runner so never loses its claim to lease expiry,
    and a dead one (whose thread is gone with it) loses it within one lease.
    """

    def __init__(self) -> None:
        self._jobs: dict[Hashable, tuple[Callable[[], Any], float, float]] = {}  # key -> (beat, period, last)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_beat = 0.0  # monotonic time the thread wakes up next

    def add(self, key: Hashable, beat: Callable[[], Any], period_s: float) -> None:
        """Call ``beat()`` every ``period_s`` seconds until ``remove(key)``."""
        now = time.monotonic()
        with self._lock:
            self._jobs[key] = (beat, period_s, now)
            if self._thread is None or not self._thread.is_alive():
                self._next_beat = now
                self._thread = threading.Thread(target=self._run, name="jobtrack-heartbeat", daemon=True)
                self._thread.start()
                return
            early = now + period_s < self._next_beat
        if early:  # a shorter period than the others needs an earlier beat; otherwise let the thread sleep
            self._wake.set()

    def remove(self, key: Hashable) -> None:
        """Stop beating for ``key`` (no error if it is not registered)."""
        with self._lock:
            self._jobs.pop(key, None)

    def __len__(self) -> int:
        return len(self._jobs)

    def _run(self) -> None:
        while True:
            with self._lock:
                jobs = list(self._jobs.items())
            for key, (beat, period, last) in jobs:
                if time.monotonic() - last >= period:
                    try:
                        beat()
                    except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the thread
                        log.debug("heartbeat of %s failed: %s", key, exc)
                    with self._lock:
                        if key in self._jobs:
                            self._jobs[key] = (beat, period, time.monotonic())
            with self._lock:  # jobs added meanwhile count too: add() only wakes us for beats due earlier
                now = time.monotonic()
                wait = min([10.0] + [max(0.01, last + period - now) for _, period, last in self._jobs.values()])
                self._next_beat = now + wait
                self._wake.clear()
            self._wake.wait(wait)


class Recorder:
    """A daemon thread that retries writes a store could not take (busy, full, unreachable) until they land.

    A write is a callable returning True once done and False for "not yet, try again"; one that
    raises is dropped (logged). At interpreter exit pending writes get a last ``EXIT_DRAIN_S`` seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Callable[[], bool]] = []
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def add(self, write: Callable[[], bool]) -> None:
        """Call ``write()`` in the background, again and again with backoff, until it returns True."""
        with self._lock:
            self._pending.append(write)
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jobtrack-recorder", daemon=True)
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        """How many writes still wait."""
        with self._lock:
            return len(self._pending)

    def drain(self, timeout: float) -> bool:
        """Wait until every pending write landed; False if some still wait after ``timeout`` seconds."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        delay = 0.01
        while True:
            with self._lock:
                todo = list(self._pending)
            for write in todo:
                try:
                    done = write()
                except Exception as exc:  # noqa: BLE001 - a write that fails for good is dropped, loudly
                    log.error("jobtrack: giving up on a pending write: %s", exc)
                    done = True
                if done:
                    with self._lock:
                        self._pending.remove(write)
            with self._lock:
                if not self._pending:
                    self._idle.set()
                    delay = 0.01
            self._wake.wait(None if self._idle.is_set() else delay)
            self._wake.clear()
            delay = min(delay * 2, RECORD_RETRY_MAX_S)


class _Inside:
    """How deep one thread is in database calls (0: not inside)."""

    __slots__ = ("depth", "thread")

    def __init__(self) -> None:
        self.depth = 0
        self.thread = threading.current_thread()


class ForkGate:
    """Lets a thread fork only while no other thread of this process is inside SQLite.

    SQLite's own mutexes (its allocator's, say) are held while a thread runs a SQLite call; a child
    forked at that moment inherits the held mutex and hangs on its first SQLite call. Each database
    call marks its thread busy (``enter()``/``leave()``: a per-thread counter, no lock, a fraction of
    a microsecond); ``fork()`` raises a flag that holds new calls back, waits until no thread is
    busy, and lowers it once the child exists. A thread marks itself busy *before* it looks at the
    flag and the forker raises the flag *before* it looks at the threads, so one of them always sees
    the other (the interpreter runs one bytecode at a time).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._forking = False
        self._local = threading.local()
        self._threads: list[_Inside] = []

    def _mine(self) -> _Inside:
        mine: _Inside | None = getattr(self._local, "inside", None)
        if mine is None:
            mine = self._local.inside = _Inside()
            with self._cond:
                self._threads = [t for t in self._threads if t.thread.is_alive()] + [mine]
        return mine

    def enter(self) -> None:
        """A thread starts a database call."""
        mine = self._mine()
        if mine.depth:
            mine.depth += 1
            return
        while True:
            mine.depth = 1
            if not self._forking:
                return
            mine.depth = 0
            with self._cond:
                while self._forking:
                    self._cond.wait()

    def leave(self) -> None:
        """The call started by the matching ``enter()`` is over."""
        self._local.inside.depth -= 1

    @contextlib.contextmanager
    def fork(self) -> Iterator[None]:
        """Hold every other thread out of SQLite meanwhile; fork inside this block."""
        mine = self._mine()
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._forking = True
            others = [t for t in self._threads if t is not mine]
        try:
            while any(t.depth for t in others):
                time.sleep(0.0002)
            yield
        finally:
            with self._cond:
                self._forking = False
                self._cond.notify_all()
