"""SIGTERM/SIGINT while in-process runners hold jobs: the jobs end CANCELED (reason ``signal …``), then the signal acts.

The handler only records the signal and wakes a helper thread (a byte down a pipe); it never takes a
lock, not even a ``threading.Event``'s, and never touches a database (issue #12: a handler that
takes a lock can wait on one that its own thread holds). Then:

- the *recorder* thread cancels every job this process runs or holds queued, in every watched
  database, retrying while the store is busy;
- the signal's usual effect (KeyboardInterrupt for SIGINT, exit for SIGTERM, or the handler that was
  there before) reaches the main thread at once if it is in the user's code, and otherwise the moment
  the jobtrack call it is in returns to the user's code (or calls the user's training code): a
  profile hook on that one frame raises it there, so no lock or transaction is ever cut in half.
  When the hook cannot be used (the user runs a profiler, the call is a generator), the
  *redeliverer* thread re-sends the signal to the main thread until it lands outside jobtrack.

Jobs running on runner threads see the signal at their next report and end CANCELED; a process whose
signal's default action is to die still dies of it (re-raised at exit, after the jobs are recorded),
also when the signal arrived too late for the main thread to see it (the script was ending).

The main thread runs the handler only if the kernel gives the signal to it or it runs Python code:
the kernel may hand a process's signal to any thread, and a main thread blocked without a timeout
never hears of it. So jobtrack's own waits in the main thread are timed, including the wait for the
runner threads at exit (``_join_runner_threads``, in place of Python's untimed join), and the helper
threads here block both signals.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import multiprocessing
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

SECOND_SIGNAL_S, RESEND_S = 5.0, 1.0
"""A SIGTERM that acts this soon after another signal acted is sent again every RESEND_S until the process exits."""

EXIT_HINT_S = 2.0
"""How long the process waits at exit, after a signal, for its jobs' code to return before saying how to stop it."""

REDELIVER_EVERY_S = 0.005
"""How often a signal held back (the main thread was inside jobtrack) is re-sent, when no hook can be set."""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_PATHS = sysconfig.get_paths()
_INFRASTRUCTURE = tuple(
    {_PATHS["stdlib"] + os.sep, _PATHS["platstdlib"] + os.sep}
    | {os.path.join(_PATHS[lib], name) + os.sep for lib in ("purelib", "platlib")
       for name in ("sqlalchemy", "sqlmodel", "filelock", "dateutil", "psycopg", "psycopg_pool", "orjson")}
)
"""Code that jobtrack calls and that calls jobtrack back: a signal must not cut it short either."""

_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR

_INTERRUPTIBLE: set[CodeType] = set()


def interruptible(fn: Any) -> Any:
    """Mark a jobtrack function that holds nothing itself (``wait()``'s polling, the call of the user's
    training code): a signal may act at once while it runs its own code or code outside jobtrack."""
    _INTERRUPTIBLE.add(fn.__code__)
    return fn


def _mark_interruptible() -> None:
    from jobtrack.monitor import JobMonitor
    from jobtrack.runners import usercode

    interruptible(JobMonitor.wait)  # sleeps between reads; a read it calls is jobtrack's and waits its turn
    interruptible(JobMonitor.stream_logs)
    interruptible(usercode.call_user_code)  # the eager runner's call of the user's code: the user's code runs
    interruptible(runtime.pause)  # the wait between two attempts to take a lock
    interruptible(_join_runner_threads)  # a second signal at exit stops waiting for the jobs, as in Python


def watch(store: Store) -> None:
    """Cancel this process's in-process jobs of ``store`` on SIGTERM/SIGINT (handlers need the main thread)."""
    state = runtime.signal_state()
    state.stores[store.target] = store
    if threading.current_thread() is threading.main_thread():
        first = state.installed_pid != os.getpid()  # later, only Python's default put back (a notebook kernel's
        for sig in SIGNALS:  # Ctrl-C handler for each cell) is replaced: a handler of the code's own is left alone
            previous = signal.getsignal(sig)
            if previous not in (signal.SIG_IGN, None, _on_signal) and (first or previous is signal.default_int_handler):
                state.previous[sig] = previous  # SIG_IGN: ignored on purpose (nohup, a parent's choice): left so
                signal.signal(sig, _on_signal)
        if first:
            state.installed_pid = os.getpid()
            atexit.register(_at_exit)
            register = getattr(threading, "_register_atexit", None)  # runs before concurrent.futures joins threads
            if register is not None:
                with contextlib.suppress(RuntimeError):  # the interpreter is shutting down already
                    register(_join_runner_threads)
    _start_threads()


def _start_threads() -> None:
    state = runtime.signal_state()
    if state.threads is not None:
        return
    with runtime.current().lock:
        if state.threads is None:
            wake_r, state.wake_fd = _pipe()
            redeliver_r, state.redeliver_fd = _pipe()
            state.fds = [wake_r, state.wake_fd, redeliver_r, state.redeliver_fd]
            threads = [
                threading.Thread(target=_service_thread, args=(_record_loop, wake_r), name="jobtrack-signal-recorder",
                                 daemon=True),
                threading.Thread(target=_service_thread, args=(_redeliver_loop, redeliver_r),
                                 name="jobtrack-signal-redeliver", daemon=True),
            ]
            for t in threads:
                t.start()
            state.threads = threads


def _service_thread(loop: Any, fd: int) -> None:
    # The kernel gives a process's signal to any thread that does not block it, and only a signal that
    # lands on the main thread interrupts a wait there: these threads leave it to the others.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    loop(fd)


def _pipe() -> tuple[int, int]:
    """A pipe whose write end never blocks (the handler writes to it) and whose read end does."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    return r, w


def _poke(fd: int) -> None:
    """Wake the thread reading the other end of ``fd`` (safe in a signal handler: no lock, no allocation)."""
    if fd < 0:
        return
    try:  # noqa: SIM105 - plain try: the handler's path stays free of context managers
        os.write(fd, b"\0")
    except OSError:  # full (a wake-up is already pending) or closed
        pass


# -- the handler ----------------------------------------------------------------------------------


def _on_signal(signum: int, frame: FrameType | None) -> None:
    state = runtime.signal_state()
    if state.resends != state.resends_seen:  # (maybe) a copy the redeliverer sent, not a new signal
        state.resends_seen = state.resends
        if state.pending is None:
            return  # it acted already: a late copy
        signum = state.pending
    else:  # a new signal
        state.count += 1
        state.arrived = state.count
        first = state.received is None
        if first:
            state.received = signum
        _poke(state.wake_fd)
        if state.exiting:  # the exit handler runs: it records the jobs, then dies of the first such signal
            if state.die_by is None and _dies_of(signum):
                state.die_by = signum
            return
        if first and state.pending is None and state.die_by is None and _dies_of(signum) and _script_ended(frame):
            # The script has ended and Python waits for the runner threads, whose jobs stop at their
            # next report: die of the signal at exit. A second signal stops the wait, as in plain Python;
            # so does this one if an earlier signal ended the script (Ctrl-C in wait(): KeyboardInterrupt).
            state.pending = signum
            return
        if state.pending is not None:
            state.pending = signum  # the latest signal acts (SIGTERM after SIGINT: exit)
            if state.armed is not None:
                return  # the hook on the way out is set already
    safe, boundary = _where(frame)
    if safe:
        _disarm()
        state.pending = None
        _act(signum, frame)
        return
    state.pending = signum
    if boundary is not None and _arm(boundary):
        return
    _poke(state.redeliver_fd)  # no hook possible: the redeliverer sends it again until it lands outside


def _script_ended(frame: FrameType | None) -> bool:
    """Whether the main thread has left the script and Python joins the other threads before exiting."""
    if not threading.main_thread().is_alive():
        return True
    while frame is not None and frame.f_back is not None:
        frame = frame.f_back
    return frame is not None and frame.f_code is _THREADING_SHUTDOWN


_THREADING_SHUTDOWN = getattr(getattr(threading, "_shutdown", None), "__code__", None)


def _dies_of(signum: int) -> bool:
    previous = runtime.signal_state().previous.get(signum, signal.SIG_DFL)
    return previous is signal.default_int_handler or previous == signal.SIG_DFL


def _act(signum: int, frame: FrameType | None) -> None:
    """What the signal would have done without jobtrack."""
    state = runtime.signal_state()
    now = time.monotonic()
    again, state.acted_at = state.acted_at is not None and now - state.acted_at < SECOND_SIGNAL_S, now
    # The signal acts now: jobs started since it arrived (an eager job, one submitted meanwhile) stop too.
    state.count += 1
    _poke(state.wake_fd)
    if _dies_of(signum) and _script_ended(frame):
        state.die_by = signum  # a second signal at exit: Python ignores the exception there, not the death
    previous = state.previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default handler raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        # Unwind the main thread now (its finally blocks run, runner threads are joined), and die of
        # the signal at exit, after the process's jobs are recorded (see _at_exit).
        state.die_by = signum
        if again:  # The exception of the signal before may still be unwinding, and one raised into that can be
            # lost (threading.Condition.wait restoring its lock turns it into "release unlocked lock", which a
            # Pool worker catches and goes on): if the process lives on, the recorder thread sends it again.
            state.resend_at = now + RESEND_S
            _poke(state.wake_fd)  # the recorder may have read the poke above before resend_at was set
        raise SystemExit(128 + signum)


def _is_jobtrack(code: CodeType) -> bool:
    return code.co_filename.startswith(_PACKAGE_DIR)


def _where(frame: FrameType | None) -> tuple[bool, FrameType | None]:
    """Whether the main thread, stopped at ``frame``, may raise there; if not, the jobtrack frame whose
    return (to the user's code) is the first safe place.

    Safe: no jobtrack frame is running, or the innermost one is interruptible (it runs the user's code
    or holds nothing). Otherwise the innermost jobtrack frame and the jobtrack and library frames
    around it, out to the user's code, form the call that must not be cut: its outermost frame is returned.
    """
    f = frame
    while f is not None and not _is_jobtrack(f.f_code):  # the user's code, or a library jobtrack called
        f = f.f_back
    if f is None or f.f_code in _INTERRUPTIBLE:
        return True, None
    boundary = f
    f = f.f_back
    while f is not None:
        code = f.f_code
        if _is_jobtrack(code):
            if code in _INTERRUPTIBLE:
                break
            boundary = f
        elif not code.co_filename.startswith(_INFRASTRUCTURE):
            break  # the user's code
        f = f.f_back
    return False, boundary


def _arm(boundary: FrameType) -> bool:
    """Act when ``boundary`` returns (or when jobtrack calls the user's code first); False if not possible."""
    if boundary.f_code.co_flags & _GENERATOR_FLAGS:
        return False  # its "return" is every yield
    if sys.getprofile() is not None:
        return False  # the user's profiler: leave it alone
    state = runtime.signal_state()
    state.armed = boundary
    sys.setprofile(_on_profile_event)  # this thread (the main thread) only
    return True


def _disarm() -> None:
    state = runtime.signal_state()
    if state.armed is not None:
        state.armed = None
        if sys.getprofile() is _on_profile_event:
            sys.setprofile(None)


def _on_profile_event(frame: FrameType, event: str, arg: Any) -> None:
    """The main thread's profile hook while a signal waits for the jobtrack call in progress to end."""
    state = runtime.signal_state()
    if event == "return":
        if frame is not state.armed:
            return
        where = frame.f_back  # the exception surfaces in the caller, as if the call raised it
    elif event == "call":
        if frame.f_code not in _INTERRUPTIBLE:
            back = frame.f_back
            if back is None or back.f_code not in _INTERRUPTIBLE or _is_jobtrack(frame.f_code):
                return
        # An interruptible function starts (the wait for a lock), or one calls the user's code: raised
        # at its first line, the exception is what its caller is ready for
        where = frame
    else:
        return
    signum = state.pending
    _disarm()
    state.pending = None
    if signum is not None:
        _act(signum, where)  # an exception raised here leaves through the frame: it is the call's outcome


# -- the helper threads ---------------------------------------------------------------------------


def _redeliver_loop(fd: int) -> None:
    state = runtime.signal_state()
    main = threading.main_thread()
    while True:
        try:
            os.read(fd, 512)
        except OSError:
            return
        while (signum := state.pending) is not None and state.armed is None and main.is_alive():
            state.resends += 1
            try:
                signal.pthread_kill(main.ident or 0, signum)
            except OSError:
                return
            time.sleep(REDELIVER_EVERY_S)


def _record_loop(fd: int) -> None:
    while True:
        try:
            os.read(fd, 512)
        except OSError:
            return
        _cancel_jobs(deadline=None)
        _resend_until_exit()


def _resend_until_exit() -> None:
    """After a SIGTERM hard on another signal (``_act``): send it again every RESEND_S until the process exits."""
    state = runtime.signal_state()
    while state.resend_at is not None and not state.exiting:
        wait = state.resend_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            continue
        state.resend_at = time.monotonic() + RESEND_S
        os.kill(os.getpid(), state.die_by or signal.SIGTERM)


def _cancel_jobs(deadline: float | None, *, spare_later: bool = True) -> bool:
    """Cancel this process's jobs in every watched database, retrying while a store is busy; True when done.

    ``spare_later``: not the jobs submitted after the latest signal arrived (the script caught it and went on);
    at exit every job goes.
    """
    state = runtime.signal_state()
    name = state.name or "signal"
    me = liveness.current().encode()
    arrived = state.arrived
    later = (lambda: runtime.submitted_after(arrived)) if spare_later else None
    todo = list(state.stores.values())
    delay = 0.01
    while todo:
        for store in list(todo):
            try:
                n = store.cancel_process_jobs(me, reason=f"signal {name}", spare=later)
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


def _join_runner_threads() -> None:
    """At exit, before Python joins the runner threads (and in its place): join them in short slices.

    Python's own join waits without a timeout, and a signal that the kernel hands to another thread
    than the main one cannot interrupt it: the main thread would never run the handler, the jobs would
    never hear of the signal, and the process would never end. A wait in slices runs the handler
    within one slice, wherever the signal landed.
    """
    if runtime.signal_state().installed_pid != os.getpid():
        return
    for executor in list(runtime.current().executors.values()):
        executor.shutdown(wait=False)  # what Python's exit does too: queued jobs still run, then the threads end
    try:
        hint_at = time.monotonic() + EXIT_HINT_S
        for t in threading.enumerate():
            if t.name.startswith(runtime.RUNNER_THREAD_PREFIX):
                while t.is_alive():
                    t.join(0.05)
                    state = runtime.signal_state()
                    if state.received is not None and time.monotonic() > hint_at:
                        hint_at = float("inf")
                        again = "Press Ctrl-C" if state.received == signal.SIGINT else f"Send {state.name}"
                        log.warning("jobtrack: %s canceled this process's jobs; waiting for their code to return (it "
                                    "stops at its next ctx.log_epoch or cancel check). %s again to exit now.",
                                    state.name, again)
    finally:  # also when a second signal stops the wait (Pool.terminate() after a Ctrl-C)
        if multiprocessing.parent_process() is not None and runtime.signal_state().received is not None:
            _at_exit()  # a multiprocessing child (a Pool worker) ends with os._exit, which runs no atexit handler


def _at_exit() -> None:
    state = runtime.signal_state()
    if state.installed_pid != os.getpid() or state.exiting:
        return
    state.exiting = True
    _disarm()
    pending, state.pending = state.pending, None
    if pending is not None and state.die_by is None and _dies_of(pending):
        state.die_by = pending  # it arrived as the script ended, before the main thread could see it
    if state.received is None:
        return
    # Runner threads were joined before this runs: cancel what is left (an eager job cut short, a job
    # submitted after the signal), then die of the signal if that was its default action.
    if not _cancel_jobs(deadline=time.monotonic() + runtime.EXIT_DRAIN_S, spare_later=False):
        log.error("jobtrack: could not record this process's jobs as canceled before exit; they will read "
                  "FAILED (runner lost)")
    runtime.current().recorder.drain(runtime.EXIT_DRAIN_S)  # ends of jobs still being recorded go first
    die_by = state.die_by
    if die_by is None and state.pending is not None and _dies_of(state.pending):
        die_by = state.pending  # one more arrived meanwhile
    if die_by is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(die_by, signal.SIG_DFL)
        os.kill(os.getpid(), die_by)


_mark_interruptible()
