"""The process runner: each job in a forked child, so a crash or hard cancel cannot take the user's process down."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from typing import TYPE_CHECKING, Any

from jobtrack import liveness
from jobtrack.runners.base import JobPayload, run_job
from jobtrack.store.store import runner_exit_error
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.store import Store

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0
"""Seconds a child gets to notice a cancel request before it is terminated."""

POLL_S = 0.05
"""Seconds between checks of the child's exit and of cancel requests."""


def run_in_child(store: Store, payload: JobPayload) -> JobStatus | None:
    """Run one job in a child process and record the outcome if the child could not (crash, kill)."""
    # fork: the user's functions and in-memory tables need not be picklable (spawn where fork is missing)
    if "fork" in multiprocessing.get_all_start_methods():
        ctx: Any = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_main, args=(store.target, payload), name=f"jobtrack-{payload.job_id}")
    with store.db.writers_paused():
        child.start()
    liveness.watch_child(child.pid, lambda: child.exitcode)
    cancel_seen_at: float | None = None
    try:
        while True:
            child.join(POLL_S)
            if child.exitcode is not None:
                break
            rec = store.get_job(payload.job_id, check_liveness=False)
            if rec.cancel_requested and rec.status == "RUNNING":
                cancel_seen_at = cancel_seen_at or time.monotonic()
                if time.monotonic() - cancel_seen_at > CANCEL_GRACE_S:
                    child.terminate()
        return _record_exit(store, payload.job_id, child.exitcode, canceled=cancel_seen_at is not None)
    finally:
        liveness.forget_child(child.pid)


def _child_main(target: str, payload: JobPayload) -> None:
    from jobtrack.store import Store

    run_job(Store.open(target), payload)


def _record_exit(store: Store, job_id: str, exitcode: int, *, canceled: bool) -> JobStatus | None:
    rec = store.get_job(job_id, check_liveness=False)
    if JobStatus(rec.status).is_terminal:
        return JobStatus(rec.status)
    how = liveness.describe_exit(exitcode)
    if rec.status == "QUEUED":
        store.fail_unclaimed(job_id, f"runner process {how} before starting the job")
        return JobStatus.FAILED
    status = JobStatus.CANCELED if canceled and exitcode == -signal.SIGTERM else JobStatus.FAILED
    reason = "canceled by user (process terminated)" if status is JobStatus.CANCELED else f"runner process {how}"
    error = runner_exit_error(how) if status is JobStatus.FAILED else None
    try:
        store.finish(job_id, rec.claim_token, status, reason=reason, error_json=error)
    except Exception as exc:  # noqa: BLE001 - someone else recorded the end first
        log.debug("job %s: exit not recorded: %s", job_id, exc)
    return JobStatus(store.get_job(job_id, check_liveness=False).status)


__all__ = ["run_in_child"]
