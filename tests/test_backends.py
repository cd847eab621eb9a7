"""The core, Trainer and reliability behaviour on both stores: a SQLite file and a PostgreSQL server.

Every test here takes ``any_db`` and runs twice. Without a server the PostgreSQL half skips with a
message saying how to enable it; under CI=true it fails instead.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dateutil.parser import isoparse
from sqlalchemy import create_engine, text

from jobtrack import (
    Dataset,
    InvalidTransition,
    JobManager,
    RunnerFenced,
    Trainer,
    demo,
    testing,
)
from jobtrack.states import TERMINAL, TRANSITIONS, JobStatus, is_allowed
from jobtrack.store import Store
from jobtrack.store.core import check_transition
from proc import child_env, run_python
from rows import MOVES, REASON_OF, assert_refused, job_in, raw

STATUSES = list(JobStatus)
KEYS = {"job_id", "status", "started_at", "finished_at", "updated_at", "experiment_name", "job_type",
        "model_run_id", "result", "export_paths", "source_views"}
RESULT_KEYS = {"epochs", "eval_metric", "best_epoch", "best_metric", "summary", "error"}


def _job(store: Store, job_id: str, status: JobStatus) -> None:
    """Create a train job (with its model run ``mr_<job_id>``) and walk it along allowed moves to ``status``."""
    job_in(store, job_id, status, experiment="e_regression_t")


def _snapshot(store: Store, job_id: str) -> tuple[object, ...]:
    """Every column of the job's row and its whole history, as the store reads them and as stored."""
    return store.get_job(job_id, check_liveness=False), tuple(store.events(job_id)), raw(store.target, job_id)


def _utc(text: object) -> datetime:
    assert isinstance(text, str)
    value = isoparse(text)
    assert value.utcoffset() == timedelta(0), text
    return value


def test_all_25_pairs(any_db: str) -> None:
    # Each (from, to) pair through every public operation that moves a job to ``to`` (rows.MOVES): an
    # operation that applies from ``from`` appends one event and sets the finish time; every other is
    # refused in its own way (InvalidTransition, RunnerFenced, False, or the unchanged status) and changes
    # nothing, byte for byte. No operation moves a job to QUEUED: the store's check refuses it.
    store = Store.open(any_db)
    applied: set[tuple[JobStatus, JobStatus]] = set()
    n = 0
    for src, dst in itertools.product(STATUSES, STATUSES):
        moves = [m for m in MOVES if m.target is dst]
        if dst is JobStatus.QUEUED:
            assert moves == []  # a job is created QUEUED and never returns there
            with pytest.raises(InvalidTransition) as info:
                check_transition(f"job_to_queued_{src.value}", src, dst)
            assert (info.value.current, info.value.requested) == (src, dst)
            continue
        assert moves
        for move in moves:
            if move.name == "request_cancel" and src is JobStatus.RUNNING:
                continue  # asks the runner to stop: test_cancel_semantics
            n += 1
            job_id = f"job_pair{n:02d}"
            _job(store, job_id, src)
            rec = store.get_job(job_id, check_liveness=False)
            before = _snapshot(store, job_id)
            if src not in move.sources:
                assert_refused(move, store, rec, "test")
                assert _snapshot(store, job_id) == before, (move, src)
                continue
            assert dst in TRANSITIONS[src], (move, src)
            move.run(store, rec, "test")
            events = store.events(job_id)
            assert tuple(events[:-1]) == before[1]  # the history is only appended to
            last = events[-1]
            reason = REASON_OF.get(move.name, "test")
            assert (last.job_id, last.from_status, last.to_status, last.reason) == (job_id, src, dst, reason)
            assert last.at.utcoffset() == timedelta(0)
            after = store.get_job(job_id)
            assert after.status is dst and after.reason == reason
            assert after.updated_at == last.at
            assert after.finished_at == (last.at if dst.is_terminal else None)
            applied.add((src, dst))
    assert applied == {(a, b) for a in STATUSES for b in TRANSITIONS[a]}  # all six moves, by some operation
    assert sum(is_allowed(a, b) for a, b in itertools.product(STATUSES, STATUSES)) == 6


def test_status_dict_in_every_state(any_db: str) -> None:
    store = Store.open(any_db)
    manager = JobManager(any_db)
    for status in STATUSES:
        job_id = f"job_state_{status.value.lower()}"
        _job(store, job_id, status)
        monitor = manager.fetch_job(job_id)
        assert (monitor.job_id, monitor.job_type, monitor.experiment_name, monitor.model_run_id) == (
            job_id, "train", "e_regression_t", f"mr_{job_id}")
        assert monitor.status is status
        got = monitor.get_status()
        assert set(got) == KEYS and json.loads(json.dumps(got)) == got
        assert (got["job_id"], got["status"], got["job_type"], got["experiment_name"], got["model_run_id"]) == (
            job_id, status.value, "train", "e_regression_t", f"mr_{job_id}")
        assert got["export_paths"] == {} and got["source_views"] == {}
        assert isinstance(got["result"], dict) and set(got["result"]) <= RESULT_KEYS
        started, updated = _utc(got["started_at"]), _utc(got["updated_at"])
        assert started <= updated
        if status.is_terminal:
            assert started <= _utc(got["finished_at"]) <= updated
        else:
            assert got["finished_at"] is None


def test_cancel_semantics(any_db: str) -> None:
    store = Store.open(any_db)
    manager = JobManager(any_db)
    ids = {status: f"job_c_{status.value.lower()}" for status in STATUSES}
    for status, job_id in ids.items():
        _job(store, job_id, status)
    # QUEUED: canceled at once.
    queued = manager.fetch_job(ids[JobStatus.QUEUED])
    assert queued.cancel() is JobStatus.CANCELED
    got = queued.get_status()
    assert got["status"] == "CANCELED" and _utc(got["finished_at"])
    last = store.events(queued.job_id)[-1]
    assert (last.from_status, last.to_status) == ("QUEUED", "CANCELED")
    # RUNNING: a stop is requested; status and history stay until the runner next reports.
    running = ids[JobStatus.RUNNING]
    assert not store.get_job(running).cancel_requested
    events_before = store.events(running)
    assert manager.cancel_job(running) is JobStatus.RUNNING
    assert store.get_job(running).cancel_requested and store.events(running) == events_before
    assert manager.fetch_job(running).get_status()["finished_at"] is None
    assert manager.fetch_job(running).cancel() is JobStatus.RUNNING  # asking again: the same answer
    # Terminal: nothing changes, through either spelling.
    for status in sorted(TERMINAL):
        before = _snapshot(store, ids[status])
        assert manager.fetch_job(ids[status]).cancel() is status
        assert manager.cancel_job(ids[status]) is status
        assert _snapshot(store, ids[status]) == before


RACER = """
import sys
from jobtrack import InvalidTransition
from jobtrack.store import Store
db, move, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store.open(db)
wins = 0
for i in range(n):
    job_id = f"job_race{i:03d}"
    if move == "claim":
        try:
            store.claim(job_id)
            wins += 1
        except InvalidTransition as err:
            assert err.current == "FAILED", err
    elif store.fail_unclaimed(job_id, "racer"):
        wins += 1
print(wins)
"""


def test_two_processes_race_and_exactly_one_wins_every_round(any_db: str) -> None:
    store = Store.open(any_db)
    rounds = 30
    for i in range(rounds):
        _job(store, f"job_race{i:03d}", JobStatus.QUEUED)
    children = [subprocess.Popen([sys.executable, "-c", RACER, any_db, move, str(rounds)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=child_env())
                for move in ("claim", "fail_unclaimed")]
    outs = [c.communicate(timeout=120) for c in children]
    assert all(c.returncode == 0 for c in children), [o[1] for o in outs]
    assert sum(int(o[0]) for o in outs) == rounds
    for i in range(rounds):
        events = store.events(f"job_race{i:03d}")
        assert len(events) == 2 and events[1].to_status in ("RUNNING", "FAILED")
        assert store.get_job(f"job_race{i:03d}", check_liveness=False).status is events[1].to_status


def _view_rows(db: str, view: str) -> list[tuple[object, ...]]:
    url = db if "://" in db else f"sqlite:///{db}"
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{view}"'))]
    engine.dispose()
    return rows


@pytest.mark.parametrize("runner", ["eager", "thread"])
def test_fit_predict_and_views(any_db: str, dataset: Dataset, runner: str) -> None:
    trainer = Trainer(demo.train, demo.predict, db=any_db, runner=runner, config={"epochs": 4})
    train = trainer.fit(dataset)
    final = train.wait(timeout=60)
    assert final["status"] == "COMPLETED" and len(final["result"]["epochs"]) == 4
    pred = trainer.predict(f"be_{runner}", model_run_id=train.model_run_id, extract_embeddings=True).wait(timeout=60)
    assert pred["status"] == "COMPLETED" and pred["model_run_id"] == train.model_run_id
    rows = _view_rows(any_db, pred["source_views"]["predictions"])
    with open(pred["export_paths"]["predictions"], encoding="utf-8") as fh:
        file_rows = fh.read().splitlines()[1:]
    assert len(rows) == len(file_rows) == 30
    assert [int(r[0]) for r in rows] == [int(line.split(",")[0]) for line in file_rows]
    assert len(_view_rows(any_db, pred["source_views"]["embeddings"])) == 30


def test_worker_process_runs_queued_jobs(any_db: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, db=any_db, runner="worker", config={"epochs": 3})
    jobs = [trainer.fit(dataset) for _ in range(3)]
    out = subprocess.run([sys.executable, "-m", "jobtrack", "worker", "--burst", "--db", any_db],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert out.returncode == 0, out.stderr
    assert "ran 3 job(s)" in out.stdout
    assert [j.get_status()["status"] for j in jobs] == ["COMPLETED"] * 3


def test_failure_and_cancel_keep_the_epochs(any_db: str) -> None:
    ds = Dataset("be", "binary_classification", "t", tables={"train": demo.make_rows(40, seed=1)})
    failed = Trainer(demo.train, db=any_db, runner="eager", config={"epochs": 5, "fail_at_epoch": 3}).fit(ds)
    status = failed.get_status()
    assert status["status"] == "FAILED" and len(status["result"]["epochs"]) == 2
    assert status["result"]["error"]["type"] == "RuntimeError" and "Traceback" in status["result"]["error"]["traceback"]
    slow = Trainer(demo.train, db=any_db, config={"epochs": 2000, "epoch_pause_s": 0.01}).fit(ds)
    testing.wait_for_epochs(slow, 2)
    slow.cancel()
    final = slow.wait(timeout=30)
    assert final["status"] == "CANCELED" and len(final["result"]["epochs"]) >= 2


def test_fenced_runner_and_lease_expiry(any_db: str) -> None:
    store = Store.open(any_db)
    _job(store, "job_fence", JobStatus.QUEUED)
    token = store.claim("job_fence")
    store.set_runner_identity("job_fence", f"{testing.UNREACHABLE_HOST}|1|x")
    assert store.get_job("job_fence").status == "RUNNING"  # within its lease
    with testing.shift_clock(timedelta(seconds=store.lease_s + 1)):
        assert store.get_job("job_fence").status == "FAILED"
    before = _snapshot(store, "job_fence")
    with pytest.raises(RunnerFenced):
        store.add_epoch("job_fence", token, 1, "{}", "{}")
    with pytest.raises(RunnerFenced):
        store.finish("job_fence", token, JobStatus.COMPLETED, reason="late")
    assert _snapshot(store, "job_fence") == before


def test_processes_submitting_running_canceling_and_polling(any_db: str, tmp_path: Path) -> None:
    Store.open(any_db)
    code = ("import json, sys, stress_child\n"
            "print(json.dumps(stress_child.main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))")
    children = [subprocess.Popen([sys.executable, "-c", code, any_db, "3", str(seed), str(tmp_path)],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=child_env()) for seed in range(4)]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [e for r in reports for e in r["errors"]] == []
    from jobtrack.runners.worker import run_worker

    run_worker(Store.open(any_db), burst=True)
    submitted = sorted(j for r in reports for j in r["submitted"])
    jobs = JobManager(any_db).list_jobs(limit=None)
    assert sorted(j.job_id for j in jobs) == submitted
    for job in jobs:
        events = job.events()
        assert events[0].to_status == "QUEUED" and JobStatus(events[-1].to_status).is_terminal
        assert all(is_allowed(a.to_status, b.to_status) and b.from_status == a.to_status
                   for a, b in itertools.pairwise(events))


def test_child_sees_the_same_job(any_db: str) -> None:
    store = Store.open(any_db)
    _job(store, "job_shared", JobStatus.RUNNING)
    out = run_python("import sys\nfrom jobtrack import JobManager\n"
                     "print(JobManager(sys.argv[1]).fetch_job('job_shared').get_status()['status'])", any_db)
    assert out.stdout.strip() == "RUNNING"


def test_a_running_jobs_duration_is_its_time_so_far_in_queries_and_tables(any_db: str) -> None:
    store = Store.open(any_db)
    with testing.shift_clock(timedelta(minutes=-5)):  # claimed five minutes ago, and not ended
        store.create_job({"id": "job_long", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
        store.claim("job_long", lease_s=3600)
    manager = JobManager(any_db)
    assert [j.job_id for j in manager.list_jobs(where="status = 'RUNNING' and duration > 4m")] == ["job_long"]
    assert manager.list_jobs(where="duration is null or duration > 6m") == []
    assert [(r["id"], round(r["duration"] / 60)) for r in manager.table()] == [("job_long", 5)]
