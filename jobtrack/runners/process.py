"""The process runner: each job in a forked child, so a crash or hard cancel cannot take the user's process down."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from typing import TYPE_CHECKING, Any

from jobtrack import liveness, runtime
from jobtrack.runners.base import finish, run_job
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.spec import JobSpec
    from jobtrack.store import Store

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0
"""Seconds a child gets to notice a cancel request before it is terminated."""

POLL_S = 0.05
"""Seconds between checks of the child's exit and of cancel requests."""


def runner_exit_error(how: str) -> dict[str, str]:
    """The ``error`` of a job whose runner process ended without recording the end itself."""
    return {"type": "RunnerExited", "message": f"The job's runner process {how}.", "traceback": ""}


def run_in_child(store: Store, spec: JobSpec) -> JobStatus | None:
    """Run one job in a child process and record the outcome if the child could not (crash, kill)."""
    # fork: the user's functions and in-memory tables need not be picklable (spawn where fork is missing)
    if "fork" in multiprocessing.get_all_start_methods():
        ctx: Any = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_main, args=(store.target, spec), name=f"jobtrack-{spec.job_id}")
    with store.db.writers_paused():
        child.start()

    def probe() -> liveness.ChildExit | None:
        code = child.exitcode
        if code is None:
            return None
        how = liveness.describe_exit(code)
        return liveness.ChildExit(how, runner_exit_error(how))

    runtime.watch_child(child.pid, probe)
    signals_at_start = runtime.signal_state().count
    cancel_seen_at: float | None = None
    try:
        while True:
            child.join(POLL_S)
            if child.exitcode is not None:
                break
            if runtime.signal_state().count != signals_at_start:
                child.terminate()  # this process was stopped by a signal: so is the job it runs
                continue
            rec = store.get_job(spec.job_id, check_liveness=False)
            if rec.cancel_requested and rec.status is JobStatus.RUNNING:
                cancel_seen_at = cancel_seen_at or time.monotonic()
                if time.monotonic() - cancel_seen_at > CANCEL_GRACE_S:
                    child.terminate()
        return _record_exit(store, spec.job_id, child.exitcode, canceled=cancel_seen_at is not None)
    finally:
        runtime.forget_child(child.pid)


def _child_main(target: str, spec: JobSpec) -> None:
    # The child dies of SIGTERM (its parent terminates it on cancel) and ignores the terminal's
    # Ctrl-C, which reaches the whole process group: its parent records the job CANCELED either way.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from jobtrack.store import Store

    run_job(Store.open(target), spec)


def _record_exit(store: Store, job_id: str, exitcode: int, *, canceled: bool) -> JobStatus | None:
    rec = store.get_job(job_id, check_liveness=False)
    if rec.is_terminal:
        return rec.status
    how = liveness.describe_exit(exitcode)
    if rec.status is JobStatus.QUEUED:
        store.fail_unclaimed(job_id, f"runner process {how} before starting the job")
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
    return store.get_job(job_id, check_liveness=False).status
