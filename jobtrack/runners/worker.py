"""``jobtrack worker``: a process that claims queued ``runner="worker"`` jobs and runs their importable code."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil
from jobtrack.dataset import Dataset
from jobtrack.errors import InvalidArgument
from jobtrack.runners.base import JobPayload, error_info, import_function, run_job
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.store import JobRecord, Store

log = logging.getLogger(__name__)

WORKER_KINDS = ("worker",)
"""The runner kinds a worker claims."""


def payload_from_record(rec: JobRecord) -> JobPayload:
    """Rebuild a job's payload from its stored spec (importable functions, file-backed tables).

    Raises:
        InvalidArgument: a function that does not import, or a table that is not a readable file.
    """
    spec = rec.spec
    predict_ds = spec.get("predict_dataset")
    return JobPayload(
        job_id=rec.id,
        job_type=rec.job_type,
        dataset=Dataset.from_spec(predict_ds or spec["dataset"]),
        config=spec.get("config") or {},
        model_run_id=rec.model_run_id,
        train_fn=import_function(spec["train_fn"]) if spec.get("train_fn") else None,
        predict_fn=import_function(spec["predict_fn"]) if spec.get("predict_fn") else None,
        output_alias=spec.get("output_alias"),
        output_config=spec.get("output_config") or {},
        extract_embeddings=bool(spec.get("extract_embeddings")),
        model_dir=spec.get("model_dir"),
    )


def run_worker(store: Store, *, burst: bool = False, poll_s: float = 0.2, max_jobs: int | None = None,
               stop: threading.Event | None = None) -> int:
    """Run queued worker jobs until stopped (SIGTERM/SIGINT or ``stop``), or until the queue is empty if ``burst``.

    Returns the number of jobs this worker ran. A job whose code cannot be imported ends FAILED.
    """
    stop = stop or threading.Event()
    restore = _install_stop_handlers(stop)
    done = 0
    try:
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            claimed = store.claim_next(WORKER_KINDS)
            if claimed is None:
                if burst:
                    break
                stop.wait(poll_s)
                continue
            job_id, token = claimed
            rec = store.get_job(job_id, check_liveness=False)
            try:
                payload = payload_from_record(rec)
            except (InvalidArgument, KeyError) as exc:
                store.finish(job_id, token, JobStatus.FAILED, reason=f"cannot run: {exc}",
                             error_json=jsonutil.dumps(error_info(exc), "error"))
            else:
                run_job(store, payload, token=token)
            done += 1
    finally:
        restore()
    return done


def _install_stop_handlers(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _handler(signum: int, _frame: FrameType | None) -> None:
        log.info("worker: signal %s, stopping after the current job", signum)
        stop.set()

    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(sig, h) for sig, h in old.items()]
