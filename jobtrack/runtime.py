"""Everything jobtrack keeps per process, in one place: registries, the heartbeat thread, the signal flag.

A forked child starts with empty registries (one at-fork hook below): it shares none of its parent's
connections, executors, heartbeats or child processes. ``close_all()`` releases what a process holds,
for test suites that want a clean slate between tests (the pytest plugin calls it).

This module imports nothing from jobtrack but ``jobtrack.background`` (generic threads, no imports of ours),
so every layer may use it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from jobtrack.background import (
    RECORD_RETRY_MAX_S as RECORD_RETRY_MAX_S,  # re-exported for runners
    ForkGate,
    Heartbeats,
    Recorder,
)

log = logging.getLogger(__name__)

EXIT_DRAIN_S = 10.0
"""Seconds a process spends at exit on writes still pending (a job's end, a signal's cancels)."""

RUNNER_THREAD_PREFIX = "jobtrack-runner"
"""The names of the threads that run in-process jobs start with this."""

TRAINING_DATASETS_KEPT = 256
"""How many recent in-memory training datasets ``predict()`` can fall back on (by model run)."""


@dataclass
class SignalState:
    """What the signal handler knows: which signal arrived, and who to wake.

    The handler only writes these fields and writes a byte to a pipe; it never takes a lock (not
    even an Event's) or touches a database (issue #12): recording jobs as CANCELED happens on other
    threads. See ``jobtrack.runners.signals``.
    """

    received: int | None = None  # the first SIGINT/SIGTERM
    count: int = 0  # bumped when a signal arrives and when it acts; jobs compare it with their start value
    arrived: int = 0  # ``count`` just after the latest signal arrived: jobs submitted later are not its to cancel
    pending: int | None = None  # a signal whose delivery to the main thread waits for a safe point
    armed: Any = None  # the frame whose return delivers ``pending`` (a profile hook watches for it)
    die_by: int | None = None  # the signal whose default action (death) is carried out at exit
    resends: int = 0  # copies of ``pending`` the redeliverer sent to the main thread ...
    resends_seen: int = 0  # ... and how many of them the handler saw (a copy is not a new signal)
    exiting: bool = False  # the exit handler runs
    acted_at: float | None = None  # time.monotonic() when a signal last acted in the main thread
    resend_at: float | None = None  # when the recorder thread sends a SIGTERM again that has not ended the process
    wake_fd: int = -1  # write end of the recorder thread's pipe
    redeliver_fd: int = -1  # write end of the redeliverer thread's pipe
    fds: list[int] = field(default_factory=list)  # both pipes' ends, closed in a forked child
    installed_pid: int = -1
    previous: dict[int, Any] = field(default_factory=dict)
    stores: dict[str, Any] = field(default_factory=dict)  # databases whose jobs a signal cancels
    threads: list[threading.Thread] | None = None

    @property
    def name(self) -> str | None:
        """``"SIGINT"``/``"SIGTERM"`` once a signal arrived, else None."""
        return None if self.received is None else signal.Signals(self.received).name


@dataclass
class CaptureState:
    """Output capture (#13, ``jobtrack.capture``): whose writes go to which job's log, and what was replaced."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    routes: dict[int, Any] = field(default_factory=dict)  # thread ident -> the output of the job it runs
    users: int = 0  # jobs captured by thread; the stream proxies and record factory are in place while > 0
    replaced: dict[str, Any] = field(default_factory=dict)  # what installing replaced, restored at the last job
    saved_fds: dict[int, int] = field(default_factory=dict)  # fd -> a copy of the original, while fds are captured


class _Runtime:
    """The registries of one process; replaced wholesale in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.stores: dict[Hashable, Any] = {}
        self.executors: dict[Hashable, ThreadPoolExecutor] = {}  # the most recently used last
        self.executor_load: dict[Hashable, int] = {}  # executor key -> its jobs queued or running
        self.heartbeats = Heartbeats()
        self.recorder = Recorder()
        self.children: dict[int, Callable[[], Any]] = {}
        self.training_datasets: OrderedDict[str, Any] = OrderedDict()
        self.clock_offset = timedelta(0)
        self.identity: Any = None
        self.ids = random.Random()
        self.signals = SignalState()
        self.fork_gate = ForkGate()
        self.capture = CaptureState()
        self.provenance_lock = threading.Lock()  # one thread at a time checks or replaces a checkout's snapshot
        # job id -> the Future of a job this process runs on a thread: ``JobMonitor.wait`` wakes when it is
        # done instead of at its next poll (#14); an entry goes with its Future once the executor let it go
        self.local_jobs: weakref.WeakValueDictionary[str, Future[Any]] = weakref.WeakValueDictionary()
        # job id -> the signal count when this process submitted it (an in-process job): a signal's cancel spares
        # the jobs submitted after it arrived (a caught Ctrl-C, the script going on); the latest only are kept
        self.submitted: OrderedDict[str, int] = OrderedDict()
        self.submitted_lock = threading.Lock()  # its own: the signal recorder takes it inside a write transaction


def note_submitted(job_id: str) -> None:
    """Remember the signal count at which this process submitted ``job_id`` (see ``_Runtime.submitted``)."""
    with _rt.submitted_lock:
        submitted = _rt.submitted
        submitted[job_id] = _rt.signals.count
        if len(submitted) > SUBMITTED_KEPT:
            submitted.popitem(last=False)


def submitted_count(job_id: str) -> int | None:
    """The signal count when this process submitted ``job_id``, or None if it did not (or long ago)."""
    with _rt.submitted_lock:
        return _rt.submitted.get(job_id)


def submitted_after(count: int) -> set[str]:
    """The jobs this process submitted once the signal count was past ``count``."""
    with _rt.submitted_lock:
        return {job_id for job_id, seen in _rt.submitted.items() if seen > count}


SUBMITTED_KEPT = 10_000
"""How many recent submissions ``note_submitted`` remembers (older jobs have long been running or done)."""


_rt = _Runtime()


def current() -> _Runtime:
    """This process's registries (fresh in a forked child)."""
    return _rt


def _after_fork_in_child() -> None:
    # The one at-fork hook: a child shares none of its parent's threads, connections or children.
    # Reseeding the id generator keeps parent and child ids apart; the clock offset (a test fault) carries over.
    # The signal handlers go back to what they were before jobtrack's: a child runs none of its parent's jobs,
    # and one blocked in a lock the fork left held (a multiprocessing worker) must still die of its SIGTERM,
    # which a Python-level handler never gets to run (#13). A child that submits jobs installs them anew.
    global _rt
    old = _rt
    _rt = _Runtime()
    _rt.clock_offset = old.clock_offset
    _rt.capture.replaced = dict(old.capture.replaced)  # the stream proxies and log record factory stay in place
    if old.signals.installed_pid == old.pid:
        for sig, previous in old.signals.previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, previous)
    _unblock_fork_signals()  # one that came meanwhile (Pool.terminate() at once) acts now, as before jobtrack
    # Forked from an executor thread (the thread runner's): at exit concurrent.futures would join this very thread
    # ("cannot join current thread"), and a multiprocessing child (a DDP rank) would end with code 1 whatever it did.
    futures_thread = sys.modules.get("concurrent.futures.thread")
    getattr(futures_thread, "_threads_queues", {}).pop(threading.current_thread(), None)
    for fd in old.signals.fds:  # the parent's signal threads are not here: their pipes are of no use
        with contextlib.suppress(OSError):
            os.close(fd)


_forking = threading.local()  # the signal mask of a thread that is forking, to restore after the fork


def _block_fork_signals() -> None:
    """Hold our signals back in the forking thread: the child inherits the block, resets the handlers, then takes
    a signal sent to it meanwhile with the disposition it had before jobtrack (else the reset drops it)."""
    if _rt.signals.installed_pid == _rt.pid and _rt.signals.previous:
        _forking.mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(_rt.signals.previous))


def _unblock_fork_signals() -> None:
    mask = getattr(_forking, "mask", None)
    if mask is not None:
        _forking.mask = None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


os.register_at_fork(before=_block_fork_signals, after_in_parent=_unblock_fork_signals,
                    after_in_child=_after_fork_in_child)


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


EXECUTORS_KEPT_IDLE = 4
"""How many executors with no job queued or running keep their thread (a notebook's few databases); the thread of
an older idle one ends, with its connection (a loop over 200 databases would else keep 200 threads open)."""


def executor(key: Hashable, max_workers: int) -> ThreadPoolExecutor:
    """The executor of ``key`` (a database and a parallelism), created on first use.

    Its threads are joined at interpreter exit, so queued jobs finish before a script ends.
    """
    rt = _rt
    with rt.lock:
        found = rt.executors.get(key)
        if found is None:
            found = rt.executors[key] = ThreadPoolExecutor(max_workers=max_workers,
                                                           thread_name_prefix=RUNNER_THREAD_PREFIX)
        return found


def run_on_executor(key: Hashable, max_workers: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """``fn(*args)`` queued on the executor of ``key``; once the executor has nothing left to run, it stays among
    the ``EXECUTORS_KEPT_IDLE`` most recently used idle ones or is shut down (its thread ends)."""
    rt = _rt
    with rt.lock:
        ex = executor(key, max_workers)
        future = ex.submit(fn, *args)
        rt.executor_load[key] = rt.executor_load.get(key, 0) + 1
        rt.executors[key] = rt.executors.pop(key)  # the most recently used last
    future.add_done_callback(lambda _: _executor_done(key, ex))
    return future


def _executor_done(key: Hashable, ex: ThreadPoolExecutor) -> None:
    rt = _rt
    surplus = []
    with rt.lock:
        if rt.executors.get(key) is not ex:
            return  # shut down meanwhile (close_all) or this is a forked child
        rt.executor_load[key] -= 1
        idle = [k for k in rt.executors if not rt.executor_load.get(k)]
        for k in idle[:max(len(idle) - EXECUTORS_KEPT_IDLE, 0)]:
            rt.executor_load.pop(k, None)
            surplus.append(rt.executors.pop(k))
    for old in surplus:
        old.shutdown(wait=False)  # from a runner thread too: it ends once its current call returns


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


def pause(seconds: float) -> None:
    """Sleep between two attempts to take a lock, holding nothing meanwhile.

    A SIGINT/SIGTERM acts here at once (``jobtrack.runners.signals`` marks this function), so Ctrl-C
    never waits for a lock that another process or thread holds (#12). Call it only where an
    exception leaks nothing: the caller holds no lock it has not put under ``try``/``finally``.
    """
    time.sleep(seconds)


def until(attempt: Callable[[], bool], deadline: float, *, first: float = 50e-6, most: float = 0.002) -> bool:
    """Call ``attempt`` until it returns True (then True) or ``deadline`` (``time.monotonic()``) passes (False).

    Between tries it ``pause``s with jittered exponential backoff, ``first`` doubling up to ``most``: by
    default 50 µs to 2 ms, as a lock held for one commit is free again within milliseconds (a server that
    restarts takes seconds: 20 ms to 1 s there). A signal acts in the pauses.
    """
    delay = first
    while not attempt():
        if time.monotonic() >= deadline:
            return False
        pause(delay * (0.5 + random.random()))
        delay = min(delay * 2, most)
    return True


T = TypeVar("T")


def retried(call: Callable[[], T], again: Callable[[Exception], bool], deadline: float, *, first: float = 50e-6,
            most: float = 0.002) -> T:
    """``call()``, made again while it raises an error that ``again(error)`` accepts, with ``until``'s backoff
    (``first``, ``most``) until ``deadline``; then the last such error is raised."""
    outcome: list[Any] = [False, None]

    def attempt() -> bool:
        try:
            outcome[:] = [True, call()]
        except Exception as exc:
            if not again(exc):
                raise
            outcome[:] = [False, exc]
        return bool(outcome[0])

    if not until(attempt, deadline, first=first, most=most):
        raise outcome[1]
    return outcome[1]  # type: ignore[no-any-return]


# -- cleanup ---------------------------------------------------------------------------------------


_closers: list[Callable[[], None]] = []


def on_close_all(fn: Callable[[], None]) -> None:
    """Have ``close_all()`` also call ``fn`` (the database layer closes its open files this way)."""
    if fn not in _closers:
        _closers.append(fn)


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
        rt.executor_load.clear()
        rt.training_datasets.clear()
        rt.clock_offset = timedelta(0)
    for ex in executors:
        ex.shutdown(wait=False)
    for st in opened:
        try:
            st.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            log.debug("closing %r failed: %s", st, exc)
    for closer in _closers:
        try:
            closer()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            log.debug("closing with %r failed: %s", closer, exc)
