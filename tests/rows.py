"""Job rows made directly through the store, for tests about states and reads rather than runners."""

from __future__ import annotations

from jobtrack.store import Store

PATH_TO = {
    "QUEUED": [],
    "RUNNING": ["RUNNING"],
    "COMPLETED": ["RUNNING", "COMPLETED"],
    "FAILED": ["RUNNING", "FAILED"],
    "CANCELED": ["CANCELED"],
}
"""Allowed moves from QUEUED to each status."""


def create(store: Store, job_id: str, *, job_type: str = "train", experiment: str = "a_b_c",
           eval_metric: str | None = "rmse") -> None:
    """A QUEUED job for a worker (nothing runs it), with its model run ``mr_<job_id>`` unless it is inference."""
    run_id = f"mr_{job_id}"
    store.create_job(
        {"id": job_id, "job_type": job_type, "experiment_name": experiment, "model_run_id": run_id,
         "eval_metric": eval_metric, "metric_mode": "min", "runner_kind": "worker"},
        model_run=None if job_type == "inference" else
        {"id": run_id, "job_id": job_id, "experiment_name": experiment, "task_type": "regression"},
    )


def job_in(store: Store, job_id: str, status: str) -> None:
    """Create ``job_id`` and move it along allowed transitions into ``status``."""
    create(store, job_id)
    for step in PATH_TO[status]:
        if step == "RUNNING":
            store.claim(job_id)
        else:
            store.transition(job_id, step, reason=f"setup {step}")
    assert store.get_job(job_id).status == status
