"""The process runner: each job in a forked child, so a crash or hard cancel cannot take the user's process down."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from jobtrack import liveness, runtime
from jobtrack.config import lease_seconds
from jobtrack.errors import InvalidArgument, RunnerFenced, StoreError
from jobtrack.runners.base import error_json, finish, retrying, run_job
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.spec import JobSpec
    from jobtrack.store import Store

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0
"""Seconds a child gets to notice a cancel request before it is terminated."""

POLL_S = 0.05
"""Seconds between checks of the child's exit and of cancel requests."""

START_TIMEOUT_S = 5.0
"""Seconds a child gets to open the database (a healthy one takes milliseconds). A child forked while
another thread of this process was inside SQLite waits for ever on SQLite's allocator lock, which no
thread of the child will release (#21): it is killed and the job started in a new child."""

START_ATTEMPTS = 3
"""Children started for one job before it is recorded FAILED (runner process killed before starting)."""


def runner_exit_error(how: str) -> dict[str, str]:
    """The ``error`` of a job whose runner process ended without recording the end itself."""
    was = "was " if how.startswith("killed") else ""  # "was killed by signal SIGKILL", "exited with code 3"
    return {"type": "RunnerExited", "message": f"The job's runner process {was}{how}.", "traceback": ""}


def check_can_start() -> None:
    """Refuse ``runner="process"`` where no child can be started, before a job is written.

    Raises:
        InvalidArgument: this process is a daemonic ``multiprocessing`` process (a ``multiprocessing.Pool``
            worker), which may not have children.
    """
    if multiprocessing.current_process().daemon:
        raise InvalidArgument(
            "runner='process' cannot start a child process here: this process is a multiprocessing.Pool worker "
            "(a daemonic process), which may not have children. Use runner='thread' or 'eager' inside Pool workers, "
            "or run them with concurrent.futures.ProcessPoolExecutor, whose workers may start children.")


def run_in_child(store: Store, spec: JobSpec) -> JobStatus | None:
    """Run one job in a child process and record the outcome if the child could not (crash, kill)."""
    try:  # no fork for a job canceled while queued (a signal cancels hundreds at once: exit stays quick)
        if store.get_job(spec.job_id, check_liveness=False).status is not JobStatus.QUEUED:
            return None
    except StoreError as exc:
        log.debug("job %s: cannot read it now (the child will try to claim it): %s", spec.job_id, exc)
    # fork: the user's functions and in-memory tables need not be picklable (spawn where fork is missing)
    if "fork" in multiprocessing.get_all_start_methods():
        ctx: Any = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("spawn")
    takeover: tuple[int, str] | None = None
    while True:  # a child that dies with the job RUNNING is run again while attempts are left (#18)
        watched: list[int] = []
        try:
            try:
                exitcode, canceled = _run_child(ctx, store, spec, takeover, watched)
            except (AssertionError, OSError) as exc:  # no child started (a daemonic process, fork refused)
                if takeover is not None or not store.fail_unclaimed(
                        spec.job_id, "runner process could not be started", error_json(exc)):
                    raise
                return JobStatus.FAILED
            takeover = _retry_after(store, spec.job_id, exitcode, canceled=canceled)
            if takeover is None:
                return _record_exit(store, spec.job_id, exitcode, canceled=canceled)
        finally:  # watched until its end is recorded: a reader meanwhile learns from the probe how it ended
            for pid in watched:
                runtime.forget_child(pid)


def _retry_after(store: Store, job_id: str, exitcode: int, *, canceled: bool) -> tuple[int, str] | None:
    """(token, why) for a new child to take the job over, if its child died leaving it RUNNING with attempts left."""
    if canceled or runtime.signal_state().name:
        return None  # canceled, or this process is stopping: never retried
    rec = retrying(lambda: store.get_job(job_id, check_liveness=False), f"job {job_id}: read its end")
    if rec.status is not JobStatus.RUNNING or rec.cancel_requested or max(rec.attempt, 1) >= rec.max_attempts:
        return None
    return rec.claim_token, f"runner process {liveness.describe_exit(exitcode)}"


def _run_child(ctx: Any, store: Store, spec: JobSpec, takeover: tuple[int, str] | None,
               watched: list[int]) -> tuple[int, bool]:
    """Start the job's child (``takeover``: the next attempt of a RUNNING job) and watch it until it exits;
    returns (exit code, whether a cancel was seen). Its pid goes into ``watched`` for the caller to forget."""
    child = _start(ctx, store, spec, takeover)

    def probe() -> liveness.ChildExit | None:
        code = child.exitcode
        if code is None:
            return None
        how = liveness.describe_exit(code)
        return liveness.ChildExit(how, runner_exit_error(how))

    runtime.watch_child(child.pid, probe)
    watched.append(child.pid)
    signals_at_start = runtime.signal_state().count
    cancel_seen_at: float | None = None
    signaled_at: float | None = None
    while True:
        child.join(POLL_S)
        if child.exitcode is not None:
            break
        if runtime.signal_state().count != signals_at_start:
            signaled_at = signaled_at or time.monotonic()
        try:
            rec = store.get_job(spec.job_id, check_liveness=False)
        except StoreError as exc:  # busy or unreachable for a moment: keep watching the child (#21)
            log.debug("job %s: cannot read it now: %s", spec.job_id, exc)
            rec = None
        if signaled_at is not None:
            # This process was stopped by a signal: so is the job it runs, once the job reads CANCELED
            # (the signal's recorder thread writes that); a reader elsewhere that found the child gone
            # first would record it FAILED (runner lost).
            if (rec is not None and rec.is_terminal) or time.monotonic() - signaled_at > CANCEL_GRACE_S:
                child.terminate()
            continue
        if rec is None:
            continue
        if rec.cancel_requested and rec.status is JobStatus.RUNNING:
            cancel_seen_at = cancel_seen_at or time.monotonic()
            if time.monotonic() - cancel_seen_at > CANCEL_GRACE_S:
                child.terminate()
    return child.exitcode, cancel_seen_at is not None


def _start(ctx: Any, store: Store, spec: JobSpec, takeover: tuple[int, str] | None = None) -> Any:
    """Start the job's child and wait until it has read the database; one that cannot within
    ``START_TIMEOUT_S`` is killed and another started, ``START_ATTEMPTS`` times at most (the last one
    is returned killed, so the job is recorded FAILED instead of waiting for ever)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        ready, ready_in_child = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child_main, args=(store.target, spec, ready_in_child, takeover, os.getpid()),
                            name=f"jobtrack-{spec.job_id}")
        with runtime.current().fork_gate.fork():  # no thread of ours is inside SQLite while we fork
            child.start()
        ready_in_child.close()
        try:
            if ready.poll(START_TIMEOUT_S):  # the child read the database, or ended (end of file)
                return child
        finally:
            ready.close()
        log.warning("job %s: its runner process did not open the database within %s s (it was forked while "
                    "another thread held a lock it needs, such as SQLite's); %s", spec.job_id, START_TIMEOUT_S,
                    "starting it again" if attempt < START_ATTEMPTS else "giving up")
        child.kill()
        child.join()
    return child


def _die_with(parent: int) -> None:
    """End this child (SIGKILL) within ``POLL_S`` of its parent's end: nobody would record the job's end, and a
    forked child inherits SQLite's records of its parent's locks, not the locks, so once the parent is gone another
    process may delete the write-ahead log this child still writes to. The job then reads FAILED (runner lost)."""
    def watch() -> None:
        while os.getppid() == parent:  # a dead parent's children are re-parented: never to its pid
            time.sleep(POLL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="jobtrack-parent-watch", daemon=True).start()


def _child_main(target: str, spec: JobSpec, ready: Any, takeover: tuple[int, str] | None = None,
                parent: int | None = None) -> None:
    # The child dies of SIGTERM (its parent terminates it on cancel) and ignores the terminal's
    # Ctrl-C, which reaches the whole process group: its parent records the job CANCELED either way.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with(parent)
    try:
        _run_in_child(target, spec, ready, takeover)
    finally:  # multiprocessing ends a child with os._exit (no atexit): an end its recorder still retries must land
        # first, or the parent records FAILED for a job that ran to its end; bounded by the job's lease, after which
        # a reader elsewhere would declare it lost anyway (the parent then records how the child ended)
        if not runtime.current().recorder.drain(lease_seconds()):
            log.error("job %s: its end could not be recorded before this runner process exits", spec.job_id)


def _run_in_child(target: str, spec: JobSpec, ready: Any, takeover: tuple[int, str] | None) -> None:
    from jobtrack.store import Store

    store = retrying(lambda: Store.open(target), f"job {spec.job_id}: open the store")
    retrying(lambda: store.get_job(spec.job_id, check_liveness=False), f"job {spec.job_id}: read it")
    ready.send_bytes(b"1")  # SQLite works in this process: the parent stops timing the start
    ready.close()
    if takeover is None:
        run_job(store, spec, capture_fds=True)  # one job in this process: its whole fds 1 and 2 go to its log (#13)
        return
    try:  # the next attempt (#18): a new token, fencing off whatever the dead child left behind
        nxt = retrying(lambda: store.next_attempt(spec.job_id, *takeover), f"job {spec.job_id}: next attempt")
    except RunnerFenced:
        return  # the job ended or moved on meanwhile
    if nxt is not None:
        run_job(store, spec, token=nxt[0], capture_fds=True, attempt=nxt[1])


def _record_exit(store: Store, job_id: str, exitcode: int, *, canceled: bool) -> JobStatus | None:
    # Reads and the unclaimed write are retried while the store is busy or unreachable (#21); finish() is
    # retried by the recorder.
    rec = retrying(lambda: store.get_job(job_id, check_liveness=False), f"job {job_id}: read its end")
    if rec.is_terminal:
        return rec.status
    how = liveness.describe_exit(exitcode)
    if rec.status is JobStatus.QUEUED:
        retrying(lambda: store.fail_unclaimed(job_id, f"runner process {how} before starting the job"),
                 f"job {job_id}: record its runner's exit")
        return JobStatus.FAILED
    by_signal = runtime.signal_state().name
    if by_signal and exitcode == -signal.SIGTERM:
        finish(store, job_id, rec.claim_token, JobStatus.CANCELED, reason=f"signal {by_signal}")
    elif canceled and exitcode == -signal.SIGTERM:
        finish(store, job_id, rec.claim_token, JobStatus.CANCELED, reason="canceled by user (process terminated)")
    else:
        from jobtrack import jsonutil

        finish(store, job_id, rec.claim_token, JobStatus.FAILED, reason=f"runner process {how}",
               error_json=jsonutil.dumps(runner_exit_error(how), "error"))
    return retrying(lambda: store.get_job(job_id, check_liveness=False), f"job {job_id}: read its end").status
