"""SIGTERM/SIGINT while in-process runners hold jobs: the jobs end CANCELED (reason ``signal …``), then the signal acts.

The handler only records the signal and wakes two helper threads; it never takes a lock or touches
a database (issue #12: a handler that writes can block on a lock its own thread holds). Then:

- the *recorder* thread cancels every job this process runs or holds queued, in every watched
  database, retrying while the store is busy;
- the signal's usual effect (KeyboardInterrupt for SIGINT, exit for SIGTERM, or the handler that was
  there before) reaches the main thread at once if it is in the user's code, or, if it is inside a
  jobtrack call, as soon as that call returns: the *redeliverer* thread re-sends the signal to the
  main thread until it lands outside jobtrack, so no lock or transaction is ever cut in half.

Jobs running on runner threads see the signal at their next report and end CANCELED; a process whose
signal's default action is to die still dies of it (re-raised at exit, after the jobs are recorded).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from jobtrack import liveness, runtime
from jobtrack.errors import StoreError

if TYPE_CHECKING:
    from jobtrack.store import Store

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that cancel a process's jobs."""

REDELIVER_EVERY_S = 0.005
"""How often a signal held back (the main thread was inside jobtrack) is re-sent to the main thread."""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_PATHS = sysconfig.get_paths()
_INFRASTRUCTURE = tuple(
    {_PATHS["stdlib"] + os.sep, _PATHS["platstdlib"] + os.sep}
    | {os.path.join(_PATHS[lib], name) + os.sep for lib in ("purelib", "platlib")
       for name in ("sqlalchemy", "sqlmodel", "filelock", "dateutil", "psycopg", "psycopg_pool", "orjson")}
)
"""Code that jobtrack calls and a signal must not cut short either (a lock or transaction may be open)."""

_INTERRUPTIBLE: set[CodeType] = set()


def interruptible(fn: Any) -> Any:
    """Mark a jobtrack function where a signal may be raised at once (it holds no lock: ``wait()``'s sleep)."""
    _INTERRUPTIBLE.add(fn.__code__)
    return fn


def watch(store: Store) -> None:
    """Cancel this process's in-process jobs of ``store`` on SIGTERM/SIGINT (handlers need the main thread)."""
    state = runtime.signal_state()
    state.stores[store.target] = store
    if state.installed_pid != os.getpid() and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if previous in (signal.SIG_IGN, None):
                continue  # ignored on purpose (nohup, a parent's choice): leave it so
            state.previous[sig] = previous
            signal.signal(sig, _on_signal)
        state.installed_pid = os.getpid()
        atexit.register(_at_exit)
    _start_threads()


def _start_threads() -> None:
    state = runtime.signal_state()
    with runtime.current().lock:
        if state.threads is None:
            state.threads = [
                threading.Thread(target=_record_loop, name="jobtrack-signal-recorder", daemon=True),
                threading.Thread(target=_redeliver_loop, name="jobtrack-signal-redeliver", daemon=True),
            ]
            for t in state.threads:
                t.start()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    state = runtime.signal_state()
    if state.threads is None:
        _act(signum, frame)  # a forked child that never ran a job here: nothing to record
        return
    if state.pending is None:  # a new signal, not one of ours sent again
        state.count += 1
        if state.received is None:
            state.received = signum
        state.wake.set()
    if _inside_jobtrack(frame):
        state.pending = signum  # the redeliverer sends it again once the main thread is out
        state.redeliver.set()
        return
    state.pending = None
    _act(signum, frame)


def _act(signum: int, frame: FrameType | None) -> None:
    """What the signal would have done without jobtrack."""
    previous = runtime.signal_state().previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default handler raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        # Unwind the main thread now (its finally blocks run, runner threads are joined), and die of
        # the signal at exit, after the process's jobs are recorded (see _at_exit).
        runtime.signal_state().die_by = signum
        raise SystemExit(128 + signum)


def _inside_jobtrack(frame: FrameType | None) -> bool:
    """Whether the innermost code that is not a library (stdlib, SQLAlchemy, filelock, ...) is jobtrack's own."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_PACKAGE_DIR):
            return frame.f_code not in _INTERRUPTIBLE
        if not filename.startswith(_INFRASTRUCTURE):
            return False  # the user's code (or a library it called): safe to raise here
        frame = frame.f_back
    return False


def _redeliver_loop() -> None:
    state = runtime.signal_state()
    main = threading.main_thread()
    while True:
        state.redeliver.wait()
        state.redeliver.clear()
        while (signum := state.pending) is not None and main.is_alive():
            try:
                signal.pthread_kill(main.ident or 0, signum)
            except OSError:
                return
            time.sleep(REDELIVER_EVERY_S)


def _record_loop() -> None:
    state = runtime.signal_state()
    while True:
        state.wake.wait()
        state.wake.clear()
        _cancel_jobs(deadline=None)


def _cancel_jobs(deadline: float | None) -> bool:
    """Cancel this process's jobs in every watched database, retrying while a store is busy; True when done."""
    name = runtime.signal_state().name or "signal"
    me = liveness.current().encode()
    todo = list(runtime.signal_state().stores.values())
    delay = 0.01
    while todo:
        for store in list(todo):
            try:
                n = store.cancel_process_jobs(me, reason=f"signal {name}")
            except StoreError as exc:
                log.debug("%s: cannot record jobs as canceled yet: %s", name, exc)
                continue
            if n:
                log.info("%s: %d job(s) of %s recorded CANCELED", name, n, store.target)
            todo.remove(store)
        if todo:
            if deadline is not None and time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, runtime.RECORD_RETRY_MAX_S)
    return True


def _at_exit() -> None:
    state = runtime.signal_state()
    if state.received is None or state.installed_pid != os.getpid():
        return
    # Runner threads were joined before this runs: cancel what is left (an eager job cut short, a job
    # submitted after the signal), then die of the signal if that was its default action.
    if not _cancel_jobs(deadline=time.monotonic() + runtime.EXIT_DRAIN_S):
        log.error("jobtrack: could not record this process's jobs as canceled before exit; they will read "
                  "FAILED (runner lost)")
    runtime.current().recorder.drain(runtime.EXIT_DRAIN_S)  # ends of jobs still being recorded go first
    die_by = state.die_by
    if die_by is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(die_by, signal.SIG_DFL)
        os.kill(os.getpid(), die_by)
