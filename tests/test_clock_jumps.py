"""A wall clock stepped back while a job runs (NTP, a suspended VM): what users read stays sensible."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from jobtrack import Dataset, JobManager, Trainer, runtime


def test_a_clock_stepped_back_mid_run_gives_no_negative_duration(tmp_path: Path) -> None:
    db = str(tmp_path / "clock.db")

    def train(ctx: Any) -> None:
        ctx.log_epoch(0, validation={"roc_auc": 0.5})
        runtime.set_clock_offset(timedelta(hours=-2))  # NTP steps the clock back before the job ends
        ctx.log_epoch(1, validation={"roc_auc": 0.6})

    ds = Dataset("clock", "binary_classification", "m1", tables={"train": [{"x": 1}]})
    try:
        job = Trainer(train, db=db, runner="eager", provenance=False).fit(ds)
        status = job.wait()
    finally:
        runtime.set_clock_offset(timedelta(0))
    assert status["status"] == "COMPLETED" and status["finished_at"] < status["started_at"]
    manager = JobManager(db)
    assert manager.list_jobs(where="duration < 0") == []
    assert [j.job_id for j in manager.list_jobs(where="duration >= 0 and duration < 1")] == [job.job_id]
    assert [j.job_id for j in manager.list_jobs(sort="duration")] == [job.job_id]
    assert manager.table()[0]["duration"] == 0.0
