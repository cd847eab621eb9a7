"""The JobManager/JobMonitor read API of SPEC §2 and §3 for jobs in every status: results, show_jobs,
list_jobs filters, fetch, wait, event histories, and UTC timestamps in another local time zone.

The status dict's shape in every state and cancel semantics are in test_backends.py (SQLite and PostgreSQL).
"""

from __future__ import annotations

import itertools
import json
import os
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from dateutil.parser import isoparse

from jobtrack.errors import InvalidArgument, JobNotFound, JobtrackError, WaitTimeout
from jobtrack.manager import JobManager
from jobtrack.monitor import JobMonitor
from jobtrack.states import JobStatus, JobType
from jobtrack.store import EventRecord, Store
from proc import run_python
from rows import create

KEYS = {"job_id", "status", "started_at", "finished_at", "updated_at", "experiment_name", "job_type",
        "model_run_id", "result", "export_paths", "source_views"}
STATUSES = [s.value for s in JobStatus]


@pytest.fixture
def jobs(store: Store) -> dict[str, str]:
    """One job in each of the five statuses, created in this order; status -> job id."""
    ids = {s: f"job_{i}_{s.lower()}" for i, s in enumerate(STATUSES)}
    for job_id in ids.values():
        create(store, job_id)
    store.claim(ids["RUNNING"])
    token = store.claim(ids["COMPLETED"])
    store.add_epoch(ids["COMPLETED"], token, 0, '{"loss": 1.0}', '{"rmse": 2.0}')
    store.add_epoch(ids["COMPLETED"], token, 1, '{"loss": 0.5}', '{"rmse": 1.5}')
    store.finish(ids["COMPLETED"], token, JobStatus.COMPLETED, reason="ok", summary_json='{"a": 1}')
    token = store.claim(ids["FAILED"])
    error = json.dumps({"type": "ValueError", "message": "boom", "traceback": "Traceback ...\nValueError: boom"})
    store.finish(ids["FAILED"], token, JobStatus.FAILED, reason="error", error_json=error)
    store.request_cancel(ids["CANCELED"])
    return ids


def assert_utc(text: Any) -> datetime:
    assert isinstance(text, str)
    value = isoparse(text)
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    return value


def test_result_of_completed_and_failed_jobs(db_path: str, jobs: dict[str, str]) -> None:
    manager = JobManager(db_path)
    done = manager.fetch_job(jobs["COMPLETED"]).get_status()["result"]
    assert done["epochs"] == [
        {"epoch": 0, "train": {"loss": 1.0}, "validation": {"rmse": 2.0}},
        {"epoch": 1, "train": {"loss": 0.5}, "validation": {"rmse": 1.5}},
    ]
    assert (done["eval_metric"], done["best_epoch"], done["best_metric"]) == ("rmse", 1, 1.5)
    assert done["summary"] == {"a": 1}
    assert "error" not in done

    failed = manager.fetch_job(jobs["FAILED"]).get_status()["result"]
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"] == "boom"
    assert "traceback" in failed["error"]


def test_result_is_empty_before_anything_is_known(store: Store, db_path: str) -> None:
    create(store, "job_blank", eval_metric=None)
    assert JobManager(db_path).fetch_job("job_blank").get_status()["result"] == {}


def test_show_jobs_returns_status_dicts_newest_first(db_path: str, jobs: dict[str, str]) -> None:
    shown = JobManager(db_path).show_jobs()
    assert [d["job_id"] for d in shown] == list(reversed(jobs.values()))
    assert all(set(d) == KEYS for d in shown)
    json.dumps(shown)


# -- list_jobs ---------------------------------------------------------------------------------------


def ids(monitors: list[JobMonitor]) -> list[str]:
    return [m.job_id for m in monitors]


def test_list_jobs_newest_first_and_limit(db_path: str, jobs: dict[str, str]) -> None:
    manager = JobManager(db_path)
    newest_first = list(reversed(jobs.values()))
    assert ids(manager.list_jobs()) == newest_first
    assert ids(manager.list_jobs(limit=2)) == newest_first[:2]
    assert ids(manager.list_jobs(limit=None)) == newest_first


@pytest.mark.parametrize("spelling", [str.upper, str.lower, str.capitalize])
def test_list_jobs_status_filter_any_case(db_path: str, jobs: dict[str, str], spelling: Any) -> None:
    manager = JobManager(db_path)
    for status, job_id in jobs.items():
        assert ids(manager.list_jobs(status=spelling(status))) == [job_id]
    both = manager.list_jobs(status=[spelling("QUEUED"), JobStatus.FAILED])
    assert ids(both) == [jobs["FAILED"], jobs["QUEUED"]]


def test_list_jobs_type_and_experiment_filters(store: Store, db_path: str) -> None:
    create(store, "job_t1", job_type="train", experiment="ds_regression_x")
    create(store, "job_t2", job_type="inference", experiment="ds_regression_x")
    create(store, "job_t3", job_type="train_inference", experiment="other_regression_y")
    manager = JobManager(db_path)
    assert ids(manager.list_jobs(job_type="train")) == ["job_t1"]
    assert ids(manager.list_jobs(job_type="INFERENCE")) == ["job_t2"]
    assert ids(manager.list_jobs(job_type=JobType.TRAIN_INFERENCE)) == ["job_t3"]
    assert ids(manager.list_jobs(experiment_name="ds_regression_x")) == ["job_t2", "job_t1"]
    assert ids(manager.list_jobs(experiment_name="ds_regression_x", job_type="train")) == ["job_t1"]
    assert manager.list_jobs(experiment_name="nothing_like_it") == []
    assert ids(manager.list_jobs(experiment_name="ds/regression/x")) == ["job_t2", "job_t1"]  # as predict() reads it
    for bad in ("", 5, ["ds_regression_x"]):
        with pytest.raises(InvalidArgument, match="experiment_name must be a non-empty string"):
            manager.list_jobs(experiment_name=bad)  # type: ignore[arg-type]


def test_list_jobs_time_bounds(db_path: str, jobs: dict[str, str]) -> None:
    manager = JobManager(db_path)
    everything = list(reversed(jobs.values()))
    # ages
    assert ids(manager.list_jobs(since="1h")) == everything
    assert manager.list_jobs(until="1h") == []
    # ISO dates and times
    assert ids(manager.list_jobs(since="2000-01-01")) == everything
    assert manager.list_jobs(until="2000-01-01") == []
    assert ids(manager.list_jobs(until="2100-01-01T00:00:00+00:00")) == everything
    assert manager.list_jobs(since="2100-01-01T00:00:00Z") == []
    # aware datetimes, in UTC and in another zone
    now = datetime.now(UTC)
    assert ids(manager.list_jobs(since=now - timedelta(minutes=5), until=now + timedelta(minutes=5))) == everything
    assert manager.list_jobs(since=now + timedelta(minutes=5)) == []
    eastern = timezone(timedelta(hours=-5))
    assert ids(manager.list_jobs(since=(now - timedelta(minutes=5)).astimezone(eastern))) == everything
    assert manager.list_jobs(until=(now - timedelta(minutes=5)).astimezone(eastern)) == []


def test_list_jobs_since_between_jobs(store: Store, db_path: str) -> None:
    create(store, "job_early")
    cut = store.get_job("job_early").created_at + timedelta(microseconds=1)
    create(store, "job_late")
    assert store.get_job("job_late").created_at >= cut
    manager = JobManager(db_path)
    assert ids(manager.list_jobs(since=cut)) == ["job_late"]
    assert ids(manager.list_jobs(until=cut)) == ["job_early"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "DONE"},
        {"status": ["QUEUED", "paused"]},
        {"job_type": "training"},
        {"since": "not a time at all"},
        {"until": "13/45/2020 99:99"},
        {"since": ""},
        {"since": datetime(2020, 1, 1)},  # naive
        {"limit": 0},
        {"limit": -3},
    ],
)
def test_list_jobs_bad_arguments(db_path: str, jobs: dict[str, str], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as info:
        JobManager(db_path).list_jobs(**kwargs)
    assert isinstance(info.value, JobtrackError) and isinstance(info.value, ValueError)
    assert str(info.value)


# -- fetch, wait, cancel, events ----------------------------------------------------------------------


def test_fetch_unknown_job(db_path: str, jobs: dict[str, str]) -> None:
    with pytest.raises(JobNotFound) as info:
        JobManager(db_path).fetch_job("job_nope")
    err = info.value
    assert isinstance(err, LookupError) and isinstance(err, JobtrackError)
    assert err.job_id == "job_nope"
    assert "job_nope" in str(err)
    with pytest.raises(LookupError):
        JobManager(db_path).cancel_job("job_nope")


def test_wait_times_out_on_a_queued_job(db_path: str, jobs: dict[str, str]) -> None:
    monitor = JobManager(db_path).fetch_job(jobs["QUEUED"])
    with pytest.raises(WaitTimeout) as info:
        monitor.wait(timeout=0.05)
    err = info.value
    assert isinstance(err, TimeoutError) and isinstance(err, JobtrackError)
    assert (err.job_id, err.status) == (jobs["QUEUED"], "QUEUED")
    assert monitor.get_status()["status"] == "QUEUED"


def test_wait_rejects_negative_timeout(db_path: str, jobs: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        JobManager(db_path).fetch_job(jobs["QUEUED"]).wait(timeout=-1)


@pytest.mark.parametrize("status", ["COMPLETED", "FAILED", "CANCELED"])
def test_wait_on_terminal_job_returns_final_dict(db_path: str, jobs: dict[str, str], status: str) -> None:
    monitor = JobManager(db_path).fetch_job(jobs[status])
    final = monitor.wait()
    assert final == monitor.get_status()
    assert final["status"] == status
    assert monitor.wait(timeout=0) == final


def test_events_history(db_path: str, jobs: dict[str, str]) -> None:
    manager = JobManager(db_path)
    expected = {
        "QUEUED": [(None, "QUEUED")],
        "RUNNING": [(None, "QUEUED"), ("QUEUED", "RUNNING")],
        "COMPLETED": [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "COMPLETED")],
        "FAILED": [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "FAILED")],
        "CANCELED": [(None, "QUEUED"), ("QUEUED", "CANCELED")],
    }
    for status, job_id in jobs.items():
        events = manager.fetch_job(job_id).events()
        assert all(isinstance(e, EventRecord) and e.job_id == job_id for e in events)
        assert [(e.from_status, e.to_status) for e in events] == expected[status]
        assert all(e.at.utcoffset() == timedelta(0) for e in events)
        assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    reasons = [e.reason for e in manager.fetch_job(jobs["COMPLETED"]).events()]
    assert reasons == ["submitted", "claimed", "ok"]


CHILD_STATUS_IN_NEW_YORK = r"""
import json, sys, time
from jobtrack.manager import JobManager
from jobtrack.states import JobStatus
from jobtrack.store import Store
assert time.localtime().tm_gmtoff in (-5 * 3600, -4 * 3600), time.localtime()  # TZ took effect: UTC-5 or UTC-4
db = sys.argv[1]
s = Store.open(db)
s.create_job({"id": "job_ny", "job_type": "train", "experiment_name": "a_b_c", "model_run_id": "mr_ny",
              "eval_metric": "rmse", "metric_mode": "min", "runner_kind": "worker"})
t = s.claim("job_ny")
s.finish("job_ny", t, JobStatus.COMPLETED, reason="ok")
m = JobManager(db)
print(json.dumps({"child": m.fetch_job("job_ny").get_status(),
                  "parent_made": m.fetch_job(sys.argv[2]).get_status(),
                  "since": [j.job_id for j in m.list_jobs(since="1h")]}))
"""


def test_timestamps_stay_utc_in_another_local_time_zone(db_path: str, jobs: dict[str, str]) -> None:
    if not any(os.path.isfile(os.path.join(path, "America", "New_York")) for path in zoneinfo.TZPATH):
        pytest.skip("the system time zone database has no America/New_York for TZ= to select")
    out = run_python(CHILD_STATUS_IN_NEW_YORK, db_path, jobs["COMPLETED"], timeout=30, TZ="America/New_York")
    data = json.loads(out.stdout)
    for key in ("child", "parent_made"):
        d = data[key]
        assert set(d) == KEYS and d["status"] == "COMPLETED"
        for field in ("started_at", "updated_at", "finished_at"):
            assert d[field].endswith("+00:00"), (key, field, d[field])
            assert_utc(d[field])
    assert data["parent_made"] == JobManager(db_path).fetch_job(jobs["COMPLETED"]).get_status()
    assert set(data["since"]) == {*jobs.values(), "job_ny"}
