"""One database file, several real processes: create in one, fetch/list/wait/cancel from others (SPEC §4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobtrack.manager import JobManager
from jobtrack.states import JobStatus
from jobtrack.store import Store
from proc import run_python, spawn, wait_until

# Creates a job through Store.open() with no argument: the database comes from $JOBTRACK_DB.
CREATE_CHILD = r"""
import os, sys
from jobtrack.store import Store
job_id = sys.argv[1]
s = Store.open()
assert s.target == os.environ["JOBTRACK_DB"], (s.target, os.environ["JOBTRACK_DB"])
s.create_job({"id": job_id, "job_type": "train", "experiment_name": "xp_regression_t", "model_run_id": "mr_" + job_id,
              "eval_metric": "rmse", "metric_mode": "min", "runner_kind": "worker"},
             model_run={"id": "mr_" + job_id, "job_id": job_id, "experiment_name": "xp_regression_t",
                        "task_type": "regression"})
print(job_id)
"""

# Waits for a job from another process and prints its final status as JSON. The status it saw
# first goes to the ready file, written whole under a temporary name and renamed into place.
WAIT_CHILD = r"""
import json, os, sys
from pathlib import Path
from jobtrack.manager import JobManager
db, job_id, ready = sys.argv[1], sys.argv[2], sys.argv[3]
monitor = JobManager(db).fetch_job(job_id)
first = monitor.get_status()["status"]
Path(ready + ".tmp").write_text(first)
os.replace(ready + ".tmp", ready)
final = monitor.wait(timeout=20)
print(json.dumps({"first": first, "final": final["status"], "dict": final}))
"""

# Cancels a job through JobManager() with no argument ($JOBTRACK_DB) and prints what it saw.
CANCEL_CHILD = r"""
import json, sys
from jobtrack.manager import JobManager
m = JobManager()
job_id = sys.argv[1]
seen = [j.job_id for j in m.list_jobs(status="running")]
print(json.dumps({"seen": seen, "after": m.cancel_job(job_id).value}))
"""


def create_in_child(db_path: str, job_id: str) -> str:
    out = run_python(CREATE_CHILD, job_id, timeout=30, JOBTRACK_DB=db_path)
    return out.stdout.strip()


def test_created_in_one_process_fetched_listed_waited_and_canceled_from_others(db_path: str, tmp_path: Path) -> None:
    job_id = create_in_child(db_path, "job_from_child")
    assert job_id == "job_from_child"
    manager = JobManager(db_path)
    monitor = manager.fetch_job(job_id)
    d = monitor.get_status()
    assert d["status"] == "QUEUED"  # a worker job: its submitter exiting does not fail it
    assert (d["experiment_name"], d["model_run_id"], d["job_type"]) == ("xp_regression_t", "mr_job_from_child", "train")
    assert [m.job_id for m in manager.list_jobs()] == [job_id]
    assert [m.job_id for m in manager.list_jobs(status="queued", experiment_name="xp_regression_t", since="1h")] == [
        job_id]
    ready = tmp_path / "ready_q"
    with spawn(WAIT_CHILD, db_path, job_id, str(ready)) as waiter:
        wait_until(ready.exists, timeout=20, message="waiting child never started waiting")
        assert ready.read_text() == "QUEUED"
        assert monitor.cancel() is JobStatus.CANCELED
        out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    data = json.loads(out)
    assert (data["first"], data["final"]) == ("QUEUED", "CANCELED")
    assert data["dict"] == monitor.get_status()
    assert [(e.from_status, e.to_status) for e in monitor.events()] == [(None, "QUEUED"), ("QUEUED", "CANCELED")]
    assert "database is locked" not in err


def test_running_job_canceled_from_a_child_is_seen_by_the_runner_and_the_waiter(db_path: str, tmp_path: Path) -> None:
    job_id = create_in_child(db_path, "job_wait_r")
    store = Store.open(db_path)
    token = store.claim(job_id)  # this test process is the runner: it stays alive, so the job stays RUNNING
    ready = tmp_path / "ready_r"
    with spawn(WAIT_CHILD, db_path, job_id, str(ready)) as waiter:
        wait_until(ready.exists, timeout=20, message="waiting child never started waiting")
        assert ready.read_text() == "RUNNING"

        canceler = run_python(CANCEL_CHILD, job_id, timeout=30, JOBTRACK_DB=db_path)
        seen = json.loads(canceler.stdout)
        assert seen == {"seen": [job_id], "after": "RUNNING"}  # RUNNING: a stop was requested

        # The runner learns of the request at its next report, and ends the job CANCELED.
        assert store.add_epoch(job_id, token, 0, '{"loss": 1}', '{"rmse": 2}') is True
        assert waiter.poll() is None
        assert store.finish(job_id, token, JobStatus.COMPLETED, reason="done") is JobStatus.CANCELED
        out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    data = json.loads(out)
    assert (data["first"], data["final"]) == ("RUNNING", "CANCELED")
    assert data["dict"]["result"]["epochs"] == [{"epoch": 0, "train": {"loss": 1}, "validation": {"rmse": 2}}]
    steps = [(e.from_status, e.to_status) for e in store.events(job_id)]
    assert steps == [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "CANCELED")]


def test_job_claimed_by_a_child_that_exited_reads_failed_runner_lost(db_path: str) -> None:
    # SPEC §5: a RUNNING job whose runner process is gone is FAILED at the next read, with no sweeper.
    job_id = create_in_child(db_path, "job_orphan")
    run_python("import sys\nfrom jobtrack.store import Store\nStore.open(sys.argv[1]).claim(sys.argv[2])",
               db_path, job_id, timeout=30)
    d = JobManager(db_path).fetch_job(job_id).get_status()
    assert d["status"] == "FAILED"
    assert d["finished_at"] is not None
    last = Store.open(db_path).events(job_id)[-1]
    assert (last.from_status, last.to_status) == ("RUNNING", "FAILED")
    assert last.reason is not None and "runner lost" in last.reason


def test_database_written_by_a_child_is_found_by_a_relative_path(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    create_in_child(db_path, "job_path_a")
    monkeypatch.chdir(os.path.dirname(db_path))
    manager = JobManager(os.path.basename(db_path))
    assert manager.db == db_path
    assert [m.job_id for m in manager.list_jobs()] == ["job_path_a"]
