"""The pytest plugin, loaded from the installed package by a pytest run in a subprocess, and its fault injectors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from jobtrack import JobManager, JobMonitor, StoreBusy, Trainer, demo, testing, timeutil
from jobtrack.dataset import Dataset
from jobtrack.store import Store
from proc import wait_until

USER_TESTS = '''
from datetime import timedelta
import os
import pytest
from jobtrack import StoreBusy
from jobtrack.testing import assert_completed, assert_status

def train(ctx):
    for epoch in range(3):
        ctx.log_epoch(epoch, validation={"rmse": 3 - epoch})
    return {"ok": True}

def broken(ctx):
    raise KeyError("no such column: price")

def test_eager_job_completes(jobtrack_trainer, jobtrack_db):
    from jobtrack import Dataset
    job = jobtrack_trainer(train).fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]}))
    status = assert_completed(job)
    assert status["result"]["best_epoch"] == 2
    assert os.environ["JOBTRACK_DB"] == jobtrack_db

def test_failure_message_carries_the_traceback(jobtrack_trainer):
    from jobtrack import Dataset
    job = jobtrack_trainer(broken).fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]}))
    with pytest.raises(AssertionError) as info:
        assert_completed(job)
    assert "KeyError" in str(info.value) and "no such column: price" in str(info.value)
    assert "Traceback" in str(info.value)

def test_held_lock(jobtrack_trainer, jobtrack_faults):
    from jobtrack import Dataset
    trainer = jobtrack_trainer(train)
    jobtrack_faults.hold_lock(lock_timeout=0.1)
    with pytest.raises(StoreBusy):
        trainer.fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]}))

def test_manager(jobtrack_manager):
    assert jobtrack_manager.list_jobs() == []

def test_deliberately_failing(jobtrack_trainer):
    from jobtrack import Dataset
    job = jobtrack_trainer(broken).fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]}))
    assert_completed(job)
'''


def test_plugin_loads_from_the_installed_package_in_a_pytest_subprocess(tmp_path: Path) -> None:
    (tmp_path / "test_user_code.py").write_text(textwrap.dedent(USER_TESTS))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-W", "error",
         str(tmp_path / "test_user_code.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "1 failed, 4 passed" in out, out
    assert "KeyError: 'no such column: price'" in out  # the failing test shows the job's traceback
    assert proc.returncode == 1


def test_plugin_is_registered_as_an_entry_point() -> None:
    from importlib.metadata import entry_points

    assert [ep.value for ep in entry_points(group="pytest11") if ep.name == "jobtrack"] == ["jobtrack.pytest_plugin"]


def test_importing_the_plugin_does_not_load_the_database_stack() -> None:
    code = "import sys, jobtrack.pytest_plugin; print('sqlalchemy' in sys.modules, 'sqlmodel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


def _slow_job(db: str) -> JobMonitor:
    trainer = Trainer(demo.train, db=db, runner="thread", config={"epochs": 100_000, "epoch_pause_s": 0.01})
    return trainer.fit(Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(20, seed=1)}))


def test_kill_runner_makes_the_job_read_failed_and_fences_the_real_runner(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = _slow_job(db_path)
    testing.wait_for_epochs(job, 1)
    testing.kill_runner(job)
    status = testing.assert_status(job, "FAILED")
    count = len(status["result"]["epochs"])
    # the real runner keeps reporting until its next write is refused; then it stops
    with caplog.at_level("WARNING", logger="jobtrack"):
        wait_until(lambda: any("no longer owns job" in r.getMessage() for r in caplog.records), timeout=20)
    assert len(job.get_status()["result"]["epochs"]) == count


def test_hold_write_lock_gives_storebusy_after_its_bound_and_leaves_nothing_behind(db_path: str) -> None:
    store = Store.open(db_path)
    old_timeout = store.db.lock_timeout
    with testing.hold_write_lock(db_path, lock_timeout=0.15):
        started = time.monotonic()
        with pytest.raises(StoreBusy):
            store.create_job({"id": "job_x", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
        assert 0.1 <= time.monotonic() - started < 3
    assert store.db.lock_timeout == old_timeout
    store.create_job({"id": "job_x", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    assert [j.job_id for j in JobManager(db_path).list_jobs()] == ["job_x"]


def test_shift_clock_expires_a_detached_runners_lease_and_is_undone(db_path: str) -> None:
    job = _slow_job(db_path)
    testing.wait_for_status(job, "RUNNING")
    testing.detach_runner(job)
    assert job.get_status()["status"] == "RUNNING"
    before = timeutil.utcnow()
    with testing.shift_clock(timedelta(minutes=10)):
        assert timeutil.utcnow() - before >= timedelta(minutes=10)
        assert job.get_status()["status"] == "FAILED"
    assert abs(timeutil.utcnow() - before) < timedelta(minutes=1)
    assert job.events()[-1].reason == "runner lost (lease expired)"
