"""``jobtrack worker``: a process that claims queued ``runner="worker"`` jobs and runs their importable code."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from jobtrack.errors import InvalidArgument
from jobtrack.runners.base import error_json, finish, run_job
from jobtrack.spec import JobSpec
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.store import Store

log = logging.getLogger(__name__)

WORKER_KINDS = ("worker",)
"""The runner kinds a worker claims."""


def run_worker(store: Store, *, burst: bool = False, poll_s: float = 0.2, max_jobs: int | None = None,
               stop: threading.Event | None = None) -> int:
    """Run queued worker jobs until stopped (SIGTERM/SIGINT or ``stop``), or until the queue is empty if ``burst``.

    Returns the number of jobs this worker ran. A job whose code cannot be imported ends FAILED.
    """
    stop = stop or threading.Event()
    signaled: list[int] = []  # the handler only appends here (a handler never takes a lock, #12)
    restore = _install_stop_handlers(signaled)
    done = 0
    try:
        while not stop.is_set() and not signaled and (max_jobs is None or done < max_jobs):
            claimed = store.claim_next(WORKER_KINDS)
            if claimed is None:
                if burst:
                    break
                stop.wait(poll_s)  # a signal interrupts the wait: the handler runs, the loop sees the flag
                continue
            job_id, token = claimed
            rec = store.get_job(job_id, check_liveness=False)
            try:
                spec = JobSpec.from_record(rec)
            except InvalidArgument as exc:
                finish(store, job_id, token, JobStatus.FAILED, reason=f"cannot run: {exc}", error_json=error_json(exc))
            else:
                run_job(store, spec, token=token)
            done += 1
    finally:
        restore()
    return done


def _install_stop_handlers(signaled: list[int]) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _handler(signum: int, _frame: FrameType | None) -> None:
        signaled.append(signum)

    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore
