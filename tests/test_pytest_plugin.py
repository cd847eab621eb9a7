"""The pytest plugin, run by pytester in fresh pytest processes as a user's suite loads it; its fault injectors."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import jobfuncs
from jobtrack import (
    DatabaseNotFound,
    InvalidArgument,
    JobManager,
    JobMonitor,
    StoreBusy,
    Trainer,
    WaitTimeout,
    demo,
    runtime,
    testing,
    timeutil,
)
from jobtrack.dataset import Dataset
from jobtrack.store import Store
from proc import wait_until

pytest_plugins = ["pytester"]

# Shared by the user test files below: a one-row dataset and a training function.
USER_PRELUDE = """
import os, threading, time
from datetime import datetime, timedelta, timezone
import pytest
from jobtrack import Dataset, StoreBusy, timeutil
from jobtrack.testing import assert_completed, assert_status, wait_for_status

def ds():
    return Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})

def train(ctx):
    for epoch in range(3):
        ctx.log_epoch(epoch, validation={"rmse": 3 - epoch})
    return {"ok": True}
"""


def run_user_tests(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Write ``source`` as a user's test file and run pytest on it in a fresh process, as a user would.

    A subprocess, not ``runpytest()`` in this process: the plugin must arrive through the installed
    package's ``pytest11`` entry point (no ``-p``), and the jobs' threads and module state stay out of this run.
    """
    pytester.makepyfile(test_user_code=USER_PRELUDE + source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *args, timeout=120)


def test_jobtrack_db_is_a_fresh_file_per_test_set_as_jobtrack_db(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, """
SEEN = []
BEFORE = os.environ.get("JOBTRACK_DB")

def test_first(jobtrack_db, tmp_path):
    assert os.environ["JOBTRACK_DB"] == jobtrack_db
    assert os.path.dirname(jobtrack_db) == str(tmp_path) and not os.path.exists(jobtrack_db)
    SEEN.append(jobtrack_db)

def test_second(jobtrack_db):
    assert os.environ["JOBTRACK_DB"] == jobtrack_db and jobtrack_db not in SEEN
    SEEN.append(jobtrack_db)

def test_environment_restored_afterwards():
    assert len(SEEN) == 2 and os.environ.get("JOBTRACK_DB") == BEFORE
""", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_jobtrack_trainer_runs_jobs_eagerly_and_failures_show_the_traceback(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, """
def broken(ctx):
    raise KeyError("no such column: price")

def test_eager_job_is_terminal_when_fit_returns(jobtrack_trainer, jobtrack_db):
    trainer = jobtrack_trainer(train)
    assert trainer.db == jobtrack_db
    job = trainer.fit(ds())
    assert job.get_status()["status"] == "COMPLETED"  # no waiting: it ran inside fit()
    assert assert_completed(job)["result"]["best_epoch"] == 2

def test_other_runners_and_options_pass_through(jobtrack_trainer):
    job = jobtrack_trainer(train, runner="thread", config={"epochs": 1}).fit(ds())
    assert assert_completed(job)["result"]["best_epoch"] == 2

def test_failure_message_carries_the_traceback(jobtrack_trainer):
    job = jobtrack_trainer(broken).fit(ds())
    with pytest.raises(AssertionError) as info:
        assert_completed(job)
    assert "KeyError" in str(info.value) and "no such column: price" in str(info.value)
    assert "Traceback" in str(info.value)

def test_deliberately_failing(jobtrack_trainer):
    assert_completed(jobtrack_trainer(broken).fit(ds()))
""")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*KeyError: 'no such column: price'*", "*1 failed, 3 passed*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_jobtrack_manager_reads_the_tests_database(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, """
def test_empty_at_first(jobtrack_manager):
    assert jobtrack_manager.list_jobs() == []

def test_sees_the_trainers_jobs(jobtrack_manager, jobtrack_trainer):
    job = jobtrack_trainer(train).fit(ds())
    assert [m.job_id for m in jobtrack_manager.list_jobs()] == [job.job_id]
    assert jobtrack_manager.fetch_job(job.job_id).get_status()["status"] == "COMPLETED"
""")
    result.assert_outcomes(passed=2)


def test_jobtrack_faults_inject_and_undo_every_fault(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, """
release = threading.Event()

def blocked(ctx):
    ctx.log_epoch(1, validation={"rmse": 1.0})
    release.wait(30)
    return {"ok": True}

def fenced_off(caplog):
    # the real runner's next write is refused, and it stops
    release.set()
    deadline = time.monotonic() + 20
    while not any("no longer owns job" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the runner was not fenced off"
        time.sleep(0.01)
    release.clear()

def test_hold_lock_then_release(jobtrack_trainer, jobtrack_faults):
    trainer = jobtrack_trainer(train)
    jobtrack_faults.hold_lock(lock_timeout=0.1)
    with pytest.raises(StoreBusy):
        trainer.fit(ds())
    jobtrack_faults.release_lock()
    assert_completed(trainer.fit(ds()))

def test_hold_lock_is_released_when_the_test_ends(jobtrack_trainer, jobtrack_faults):
    jobtrack_faults.hold_lock(lock_timeout=0.1)

def test_after_a_held_lock(jobtrack_trainer):
    assert_completed(jobtrack_trainer(train).fit(ds()))

def test_kill_runner(jobtrack_trainer, jobtrack_faults, caplog):
    job = jobtrack_trainer(blocked, runner="thread").fit(ds())
    wait_for_status(job, "RUNNING")
    jobtrack_faults.kill_runner(job)
    assert_status(job, "FAILED")
    assert job.events()[-1].reason == "runner lost"
    with caplog.at_level("WARNING", logger="jobtrack"):
        fenced_off(caplog)
    assert_status(job, "FAILED")

def test_detach_runner_and_shift_clock(jobtrack_trainer, jobtrack_faults, caplog):
    job = jobtrack_trainer(blocked, runner="thread").fit(ds())
    wait_for_status(job, "RUNNING")
    jobtrack_faults.detach_runner(job)
    assert job.get_status()["status"] == "RUNNING"  # another host: only its lease can tell
    jobtrack_faults.shift_clock(timedelta(minutes=10))
    assert_status(job, "FAILED")
    assert job.events()[-1].reason == "runner lost (lease expired)"
    jobtrack_faults.shift_clock(60.0)  # seconds work too, and add up
    assert timeutil.utcnow() - datetime.now(timezone.utc) >= timedelta(minutes=10, seconds=59)
    with caplog.at_level("WARNING", logger="jobtrack"):
        fenced_off(caplog)

def test_clock_is_back_after_the_test():
    assert abs(timeutil.utcnow() - datetime.now(timezone.utc)) < timedelta(minutes=1)
""", "-p", "no:randomly")
    result.assert_outcomes(passed=6)


def test_fixtures_are_listed_with_their_docs_and_cost_nothing_until_used(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, """
import sys

def test_plugin_loaded_but_no_database_stack():
    assert "jobtrack.pytest_plugin" in sys.modules
    assert "sqlalchemy" not in sys.modules and "sqlmodel" not in sys.modules
""", "--fixtures")
    result.stdout.fnmatch_lines_random([
        "jobtrack_db*", "*fresh database file*JOBTRACK_DB*",
        "jobtrack_manager*", "*JobManager on the test's database*",
        "jobtrack_trainer*", "*factory*",
        "jobtrack_faults*", "*kill_runner*hold_lock*shift_clock*",
    ])
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", timeout=120)
    run.assert_outcomes(passed=1)


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


def test_the_teardowns_close_all_leaves_a_running_process_job_to_finish(db_path: str, tmp_path: Path) -> None:
    """A test that ends with a process-runner job still running: the fixture's ``runtime.close_all()`` must not close
    the file under the job's child (SQLite then deleted its write-ahead log, and the job failed "malformed")."""
    release = tmp_path / "release"
    job = Trainer(jobfuncs.train_until_released, db=db_path, runner="process",
                  config={"release": str(release)}).fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]}))
    try:
        seen = len(testing.wait_for_epochs(job, 2))
        runtime.close_all()  # what the jobtrack_db fixture does when a test ends
        testing.wait_for_epochs(job, seen + 20)  # the child keeps writing to the file
    finally:
        release.touch()
    final = testing.assert_completed(job)
    assert len(final["result"]["epochs"]) == final["result"]["summary"]["epochs"]  # every epoch it reported


def test_kill_and_detach_runner_refuse_a_job_that_is_not_running(db_path: str) -> None:
    """Without ``wait_for_status(job, "RUNNING")`` first, the fault did nothing and the test failed later."""
    ds = Dataset("d", "binary_classification", "t", tables=demo.write_csv_tables(Path(db_path).parent / "data"))
    done = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 1}).fit(ds)
    queued = Trainer(demo.train, db=db_path, runner="worker").fit(ds)
    for job, status in ((done, "COMPLETED"), (queued, "QUEUED")):
        for fault in (testing.kill_runner, testing.detach_runner):
            with pytest.raises(InvalidArgument, match=f"needs a RUNNING job, but job {job.job_id} is {status}"):
                fault(job)
            assert job.get_status()["status"] == status


def test_assert_completed_wait_for_epochs_and_wait_say_what_went_wrong(db_path: str) -> None:
    """A job still running at assert_completed's timeout is a test failure (AssertionError), not WaitTimeout; a count
    that is not an int is InvalidArgument, not a TypeError from inside the helper."""
    queued = Trainer(demo.train, db=db_path, runner="worker").fit(
        Dataset("d", "binary_classification", "t", tables=demo.write_csv_tables(Path(db_path).parent / "data")))
    with pytest.raises(AssertionError, match=f"expected COMPLETED within 0.05 s, but job {queued.job_id} is QUEUED"):
        testing.assert_completed(queued, timeout=0.05)
    with pytest.raises(InvalidArgument, match=r"wait_for_epochs\(count=...\) must be an int >= 0, not str '3'"):
        testing.wait_for_epochs(queued, "3")  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="waited for 1 epochs, got 0"):
        testing.wait_for_epochs(queued, np.int64(1), timeout=0.05)  # a numpy count is a count
    with pytest.raises(WaitTimeout, match="No worker is running a job of this database now") as caught:
        queued.wait(timeout=0.05)  # wait() says why the job may never start, as `jobtrack wait` does
    assert f"start one with `jobtrack worker --db {db_path}`" in str(caught.value)
    for bad in (0, -1, float("nan")):
        with pytest.raises(InvalidArgument, match="poll_interval must be a number of seconds > 0"):
            queued.stream_logs(poll_interval=bad)


def test_testing_helpers_check_their_arguments(tmp_path: Path, db_path: str) -> None:
    """``hold_write_lock("typo.db")`` made a new empty database there; ``shift_clock(5)`` and
    ``wait_for_epochs(job, 1, timeout="x")`` gave a bare TypeError; ``wait_for_epochs(job, -1)`` was accepted."""
    typo = tmp_path / "typo.db"
    with pytest.raises(DatabaseNotFound), testing.hold_write_lock(str(typo)):
        pass
    assert not typo.exists()
    with pytest.raises(InvalidArgument, match=r"timedelta"), testing.shift_clock(5):  # type: ignore[arg-type]
        pass
    job = Trainer(jobfuncs.train_noop, db=db_path, runner="eager").fit(Dataset("d", "regression", "t",
                                                                              tables={"train": [{"x": 1}]}))
    with pytest.raises(InvalidArgument, match=r"timeout must be a number"):
        testing.wait_for_epochs(job, 1, timeout="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"count=\.\.\.\) must be an int >= 0"):
        testing.wait_for_epochs(job, -1)
    assert testing.wait_for_epochs(job, 0, timeout=None) == testing.epochs(job)


def test_the_faults_fixture_holds_the_lock_of_a_database_no_job_made_yet(jobtrack_faults, jobtrack_db) -> None:
    jobtrack_faults.hold_lock(lock_timeout=0.1)
    with pytest.raises(StoreBusy):
        Trainer(jobfuncs.train_noop, db=jobtrack_db, runner="eager").fit(Dataset("d", "regression", "t",
                                                                                tables={"train": [{"x": 1}]}))
