"""The mechanisms behind #14's figures, tested without timing: the epochs cache of a monitor, the default
page of ``show_jobs()`` and a worker that waits without taking the write lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import jobfuncs
from jobtrack import Dataset, JobManager, Trainer
from jobtrack.runners.worker import run_worker
from jobtrack.store import Store

DS = Dataset("perf", "binary_classification", "m", tables={"train": [{"x": 1}]})


def _file_dataset(tmp_path: Path) -> Dataset:
    """A dataset a worker process can read (tables as files)."""
    (tmp_path / "train.csv").write_text("x\n1\n", encoding="utf-8")
    return Dataset("perf", "binary_classification", "m", tables={"train": str(tmp_path / "train.csv")})


def _fresh(db: str, job_id: str) -> dict[str, Any]:
    """The status as a new monitor reads it: nothing cached."""
    return dict(JobManager(db).fetch_job(job_id).get_status())


def test_the_epochs_cache_gives_what_a_fresh_read_gives_after_every_epoch_and_a_replaced_one(db_path: str) -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def train(ctx: Any) -> None:
        cached = JobManager(db_path).fetch_job(ctx.job_id)  # one monitor, read again and again
        for epoch in [0, 1, 2, 3, 2, 4, 0, 5]:  # 2 and 0 are reported again: they replace the stored ones
            ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1) + len(seen)},
                          validation={"roc_auc": 0.5 + epoch / 10})
            seen.append((dict(cached.get_status()), _fresh(db_path, ctx.job_id)))
            seen[-1][0]["result"].setdefault("epochs", []).append({"changed": "by the caller"})  # not cached
        seen.append((dict(cached.get_status()), _fresh(db_path, ctx.job_id)))

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    assert job.get_status()["status"] == "COMPLETED"
    assert len(seen) == 9
    for cached, fresh in seen[:-1]:
        cached["result"]["epochs"].pop()  # what the test appended above
        assert cached == fresh
    assert seen[-1][0] == seen[-1][1]
    last = seen[-1][1]["result"]["epochs"]
    assert [e["epoch"] for e in last] == [0, 1, 2, 3, 4, 5]  # each epoch once, in first-report order
    assert last[2]["train"]["loss"] == 1.0 / 3 + 4 and last[0]["train"]["loss"] == 1.0 + 6  # the replacements


def test_a_cached_monitor_reads_the_final_document_once_the_job_ended(db_path: str) -> None:
    monitors: list[Any] = []

    def train(ctx: Any) -> dict[str, Any]:
        monitors.append(JobManager(db_path).fetch_job(ctx.job_id))
        for epoch in range(3):
            ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)})
            assert monitors[0].get_status()["status"] == "RUNNING"
        return {"done": True}

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    final = monitors[0].get_status()
    assert final == _fresh(db_path, job.job_id) and final["status"] == "COMPLETED"
    assert final["result"]["summary"] == {"done": True} and len(final["result"]["epochs"]) == 3


def test_show_jobs_without_arguments_returns_a_bounded_page(db_path: str, tmp_path: Path) -> None:
    trainer = Trainer(jobfuncs.train_noop, db=db_path, runner="worker")  # only queued: cheap to make many
    ds = _file_dataset(tmp_path)
    ids = [trainer.fit(ds).job_id for _ in range(103)]
    page = JobManager(db_path).show_jobs()
    assert len(page) == 100 and page.has_more and page.next_offset == 100
    assert [s["job_id"] for s in page] == ids[::-1][:100]  # newest first
    rest = JobManager(db_path).show_jobs(offset=page.next_offset)
    assert [s["job_id"] for s in rest] == ids[::-1][100:] and not rest.has_more and rest.next_offset is None
    assert len(JobManager(db_path).show_jobs(limit=None)) == 103


def test_an_idle_worker_takes_the_write_lock_zero_times_and_still_picks_up_a_job(db_path: str,
                                                                                   tmp_path: Path) -> None:
    store = Store.open(db_path)
    stop = threading.Event()
    reports: list[Any] = []
    before = store.db.write_locks
    worker = threading.Thread(target=lambda: reports.append(run_worker(store, stop=stop, say=lambda _: None)))
    worker.start()
    try:
        time.sleep(2.0)  # the window measured: two seconds of an idle worker (it polls every 0.2 s before #14)
        assert store.db.write_locks == before, "an idle worker took the write lock"
        job = Trainer(jobfuncs.train_noop, db=db_path, runner="worker").fit(_file_dataset(tmp_path))
        assert job.wait(timeout=30)["status"] == "COMPLETED"
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive() and reports[0].ran == 1


def test_waiting_for_a_job_this_process_runs_wakes_when_it_ends_not_at_a_poll(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # wait() on a thread-runner job waits on the job's own thread (runtime.local_jobs): the waiting thread
    # never sleeps on a timer, so a long poll_interval adds nothing to the time the job takes to be seen.
    go = threading.Event()
    sleeps: list[float] = []
    real_sleep = time.sleep
    waiter = threading.get_ident()

    def recording_sleep(seconds: float) -> None:
        if threading.get_ident() == waiter:
            sleeps.append(seconds)
        real_sleep(seconds)

    def train(ctx: Any) -> None:
        assert go.wait(timeout=60)
        ctx.log_epoch(0, train={"loss": 1.0})

    reads: list[str] = []
    real_get_job = Store.get_job

    def counted_get_job(self: Store, job_id: str) -> Any:
        if threading.get_ident() == waiter:
            reads.append(job_id)
        return real_get_job(self, job_id)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    monkeypatch.setattr(Store, "get_job", counted_get_job)
    job = Trainer(train, db=db_path, max_workers=1).fit(DS)  # the default thread runner
    threading.Timer(0.3, go.set).start()
    status = job.wait(timeout=60, poll_interval=3600)
    assert status["status"] == "COMPLETED" and go.is_set()
    assert sleeps == []
    # and it read the store once, after the end: no reads at a ramp while the job's own thread writes
    assert reads == [job.job_id]
