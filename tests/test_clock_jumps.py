"""A wall clock stepped back while a job runs (NTP, a suspended VM): what users read stays sensible."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, Trainer, runtime
from jobtrack.errors import InvalidArgument, InvalidQuery
from proc import local_time_zone


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


def test_a_time_zone_name_jobtrack_cannot_know_is_refused_not_read_as_local_time(tmp_path: Path) -> None:
    db = str(tmp_path / "tz.db")
    ds = Dataset("tz", "binary_classification", "m1", tables={"train": [{"x": 1}]})
    Trainer(lambda ctx: None, db=db, runner="eager", provenance=False).fit(ds)
    manager = JobManager(db)
    # PST is not this machine's zone here, wherever the test runs; no dateutil warning reaches the user either
    with local_time_zone("Asia/Kolkata"), warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidQuery, match="as a time"):
            manager.list_jobs(where="created > '2026-12-01 05:40 PST'")
        with pytest.raises(InvalidArgument, match="write the offset instead"):
            manager.list_jobs(since="2026-12-01 05:40 PST")
        assert len(manager.list_jobs(since="2000-01-01 00:00 UTC")) == 1  # names it knows still work
        assert len(manager.list_jobs(since="2000-01-01 00:00 IST")) == 1  # this machine's own zone
        assert len(manager.list_jobs(where="created > '2000-01-01T00:00:00-05:00'")) == 1
