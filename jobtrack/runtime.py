"""Everything jobtrack keeps per process, in one place: registries, the heartbeat thread, the signal flag.

A forked child starts with empty registries (one at-fork hook below): it shares none of its parent's
connections, executors, heartbeats or child processes. ``close_all()`` releases what a process holds,
for test suites that want a clean slate between tests (the pytest plugin calls it).

This module imports nothing else from jobtrack, so every layer may use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

RECORD_RETRY_MAX_S = 1.0
"""Longest pause between attempts of a pending write (the store was busy, full or unreachable)."""

EXIT_DRAIN_S = 10.0
"""Seconds a process spends at exit on writes still pending (a job's end, a signal's cancels)."""

TRAINING_DATASETS_KEPT = 256
"""How many recent in-memory training datasets ``predict()`` can fall back on (by model run)."""


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


@dataclass
class SignalState:
    """What the signal handler knows: which signal arrived, and who to wake.

    The handler only writes these fields and sets events; it never takes a lock or touches a
    database (issue #12): recording jobs as CANCELED happens on other threads.
    """

    received: int | None = None  # the first SIGINT/SIGTERM
    count: int = 0  # signals received so far; jobs compare it with the value they started under
    pending: int | None = None  # a signal whose delivery to the main thread waits for a safe point
    die_by: int | None = None  # the signal whose default action (death) is carried out at exit
    wake: threading.Event = field(default_factory=threading.Event)  # the recorder thread's
    redeliver: threading.Event = field(default_factory=threading.Event)  # the redeliverer thread's
    installed_pid: int = -1
    previous: dict[int, Any] = field(default_factory=dict)
    stores: dict[str, Any] = field(default_factory=dict)  # databases whose jobs a signal cancels
    threads: list[threading.Thread] | None = None

    @property
    def name(self) -> str | None:
        """``"SIGINT"``/``"SIGTERM"`` once a signal arrived, else None."""
        return None if self.received is None else signal.Signals(self.received).name


class _Runtime:
    """The registries of one process; replaced wholesale in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.stores: dict[Hashable, Any] = {}
        self.executors: dict[Hashable, ThreadPoolExecutor] = {}
        self.heartbeats = Heartbeats()
        self.recorder = Recorder()
        self.children: dict[int, Callable[[], Any]] = {}
        self.training_datasets: OrderedDict[str, Any] = OrderedDict()
        self.clock_offset = timedelta(0)
        self.identity: Any = None
        self.ids = random.Random()
        self.signals = SignalState()


_rt = _Runtime()


def current() -> _Runtime:
    """This process's registries (fresh in a forked child)."""
    return _rt


def _after_fork_in_child() -> None:
    # The one at-fork hook: a child shares none of its parent's threads, connections or children.
    # Reseeding the id generator keeps parent and child ids apart; the clock offset (a test fault)
    # and the signal handlers (installed process-wide by the kernel) carry over.
    global _rt
    old = _rt
    _rt = _Runtime()
    _rt.clock_offset = old.clock_offset
    if old.signals.installed_pid == old.pid:  # the kernel keeps our handlers in the child: remember that
        _rt.signals.previous = dict(old.signals.previous)
        _rt.signals.installed_pid = _rt.pid


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _drain_at_exit() -> None:
    recorder = _rt.recorder
    if recorder.pending() and not recorder.drain(EXIT_DRAIN_S):
        log.error("jobtrack: %d pending write(s) could not be made before exit (the store stayed busy, full "
                  "or unreachable); their jobs will read FAILED (runner lost)", recorder.pending())


# -- stores -------------------------------------------------------------------------------------


def store(key: Hashable, factory: Callable[[], Any]) -> Any:
    """The process's shared object under ``key`` (a Store), created by ``factory()`` on first use."""
    rt = _rt
    found = rt.stores.get(key)
    if found is None:
        with rt.lock:
            found = rt.stores.get(key)
            if found is None:
                found = rt.stores[key] = factory()
    return found


def forget_store(key: Hashable) -> Any:
    """Drop one shared store from the registry and return it (or None)."""
    with _rt.lock:
        return _rt.stores.pop(key, None)


def stores() -> list[Any]:
    """Every store this process has opened."""
    with _rt.lock:
        return list(_rt.stores.values())


# -- thread-runner executors -------------------------------------------------------------------


def executor(key: Hashable, max_workers: int) -> ThreadPoolExecutor:
    """The executor of ``key`` (a database and a parallelism), created on first use.

    Its threads are joined at interpreter exit, so queued jobs finish before a script ends.
    """
    rt = _rt
    with rt.lock:
        found = rt.executors.get(key)
        if found is None:
            found = rt.executors[key] = ThreadPoolExecutor(max_workers=max_workers,
                                                           thread_name_prefix="jobtrack-runner")
        return found


# -- process-runner children -------------------------------------------------------------------


def watch_child(pid: int, probe: Callable[[], Any]) -> None:
    """Register a runner child; ``probe()`` says how it ended (None while it runs)."""
    _rt.children[pid] = probe


def forget_child(pid: int) -> None:
    """Stop watching a runner child."""
    _rt.children.pop(pid, None)


def child_probe(pid: int) -> Callable[[], Any] | None:
    """The probe of a runner child of this process, or None if ``pid`` is not one."""
    return _rt.children.get(pid)


# -- in-memory training datasets ------------------------------------------------------------------


def remember_dataset(model_run_id: str, dataset: Any) -> None:
    """Keep an in-memory training dataset for ``predict()`` in this process (the newest few)."""
    rt = _rt
    with rt.lock:
        rt.training_datasets[model_run_id] = dataset
        while len(rt.training_datasets) > TRAINING_DATASETS_KEPT:
            rt.training_datasets.popitem(last=False)


def training_dataset(model_run_id: str) -> Any:
    """The in-memory training dataset of a model run trained by this process, or None."""
    with _rt.lock:
        return _rt.training_datasets.get(model_run_id)


# -- the clock and ids ------------------------------------------------------------------------------


def clock_offset() -> timedelta:
    """How far a test has shifted jobtrack's clock (``timedelta(0)`` normally)."""
    return _rt.clock_offset


def set_clock_offset(offset: timedelta) -> None:
    """Shift jobtrack's clock (fault injection for tests); ``timedelta(0)`` undoes it."""
    _rt.clock_offset = offset


def random_bits(bits: int) -> int:
    """Random bits from a private generator, reseeded in forked children.

    Ids must be unique, not unguessable (secrets costs a system call each), and training code that
    seeds the global ``random`` must neither change our ids nor see its own sequence move.
    """
    return _rt.ids.getrandbits(bits)


def signal_state() -> SignalState:
    """The signal flag of this process."""
    return _rt.signals


# -- cleanup ---------------------------------------------------------------------------------------


def close_all() -> None:
    """Release what this process holds: close every store's connections and forget them, stop idle
    executors, drop in-memory datasets and undo a shifted clock.

    Jobs still running on executor threads run to their end. Safe to call at any time; stores and
    executors are recreated on next use.
    """
    rt = _rt
    with rt.lock:
        opened = list(rt.stores.values())
        rt.stores.clear()
        executors = list(rt.executors.values())
        rt.executors.clear()
        rt.training_datasets.clear()
        rt.clock_offset = timedelta(0)
    for ex in executors:
        ex.shutdown(wait=False)
    for st in opened:
        try:
            st.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            log.debug("closing %r failed: %s", st, exc)
