"""Failure and cancellation: code that raises, crashes its process or is canceled; jobs whose submitter died."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

import jobfuncs
from jobtrack import Dataset, JobManager, JobMonitor, Trainer, demo
from proc import run_python, wait_until


def _ds() -> Dataset:
    return Dataset("d", "regression", "t", tables={"train": [{"x": 1.0}]})


def _event_rows(db: str, job_id: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT from_status, to_status, reason FROM job_events WHERE job_id = ? ORDER BY id",
                            (job_id,)).fetchall()
    finally:
        conn.close()


def _epochs(job: JobMonitor) -> list[dict[str, Any]]:
    return list(job.get_status()["result"].get("epochs", []))


# -- code that raises ----------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["eager", "thread", "process"])
def test_code_that_raises_fails_with_its_error_and_keeps_the_epochs(db_path: str, runner: str) -> None:
    job = Trainer(jobfuncs.train_raise, db=db_path, runner=runner, config={"epochs_before": 3}).fit(_ds())
    status = job.wait(timeout=30)
    assert status["status"] == "FAILED" and status["finished_at"] is not None
    error = status["result"]["error"]
    assert set(error) == {"type", "message", "traceback"}
    assert error["type"] == "ValueError" and error["message"] == "broken after 3 epochs"
    assert "Traceback" in error["traceback"] and "jobfuncs.py" in error["traceback"]
    assert "raise ValueError" in error["traceback"]
    assert [e["epoch"] for e in status["result"]["epochs"]] == [1, 2, 3]
    assert status["result"]["epochs"][2]["train"] == {"loss": pytest.approx(1 / 3)}
    assert "summary" not in status["result"]
    assert _event_rows(db_path, job.job_id)[-1] == ("RUNNING", "FAILED", "error: ValueError")


def _sys_exit(ctx: Any) -> dict[str, Any]:
    ctx.log_epoch(0, train={"loss": 1.0})
    sys.exit(ctx.config["code"])


@pytest.mark.parametrize("runner", ["eager", "thread", "process"])
@pytest.mark.parametrize(("code", "expected"), [(0, "COMPLETED"), (None, "COMPLETED"), (3, "FAILED")])
def test_sys_exit_in_the_code_ends_the_job_as_it_ends_a_tracked_block(db_path: str, runner: str, code: int | None,
                                                                       expected: str) -> None:
    """``sys.exit(0)`` (a script's ``main()`` called from the train function) read FAILED, "SystemExit: 0", where a
    ``jobtrack.track()`` block that does the same ends COMPLETED."""
    trainer = Trainer(_sys_exit, db=db_path, runner=runner, config={"code": code})
    if runner == "eager":  # the code runs in this thread: sys.exit still exits, once the job is recorded
        with pytest.raises(SystemExit) as info:
            trainer.fit(_ds())
        assert info.value.code == code
        status = JobManager(db_path).show_jobs()[0]
    else:
        status = trainer.fit(_ds()).wait(timeout=30)
    assert status["status"] == expected, status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0]


# -- the process runner survives crashes ---------------------------------------------------------


def _raise_huge(ctx: Any) -> None:
    ctx.log_epoch(0, validation={"rmse": 1.0})
    raise ValueError("head-of-message " + "x" * 6_000_000 + " tail-of-message")


@pytest.mark.parametrize("runner", ["eager", "process"])
def test_an_exception_with_a_huge_message_is_logged_and_stored_cut_to_a_readable_size(db_path: str,
                                                                                       runner: str) -> None:
    job = Trainer(_raise_huge, db=db_path, runner=runner).fit(_ds())
    status = job.wait(timeout=60)
    assert status["status"] == "FAILED"
    error = status["result"]["error"]
    assert error["type"] == "ValueError"
    for text in (error["message"], error["traceback"]):
        assert len(text) < 200_000  # not 6 MB, twice
        assert "head-of-message" in text and text.rstrip().endswith("tail-of-message") and "characters cut" in text
    assert "_raise_huge" in error["traceback"]
    assert len(status["result"]["epochs"]) == 1
    log = Path(job.log_path).read_text()
    assert "job failed: ValueError: head-of-message" in log and "log cut here" not in log  # the log still says why


def test_process_runner_keeps_running_jobs_after_a_crash(db_path: str, dataset: Dataset) -> None:
    crash = Trainer(jobfuncs.train_exit, db=db_path, runner="process").fit(_ds())
    assert crash.wait(timeout=30)["status"] == "FAILED"
    ok = Trainer(demo.train, db=db_path, runner="process", config={"epochs": 2}).fit(dataset)
    assert ok.wait(timeout=30)["status"] == "COMPLETED"


# -- cancel --------------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["thread", "process"])
def test_cancel_mid_training_ends_canceled_and_keeps_the_epochs(db_path: str, dataset: Dataset, runner: str) -> None:
    job = Trainer(demo.train, db=db_path, runner=runner, config={"epochs": 400, "epoch_pause_s": 0.05}).fit(dataset)
    wait_until(lambda: len(_epochs(job)) >= 2, timeout=20, message="two epochs reported")
    assert job.cancel() == "RUNNING"  # asked to stop; it stops at its next report
    final = job.wait(timeout=20)
    assert final["status"] == "CANCELED" and final["finished_at"] is not None
    epochs = final["result"]["epochs"]
    assert 2 <= len(epochs) < 400
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert final["result"]["best_epoch"] in [e["epoch"] for e in epochs]
    assert "summary" not in final["result"]  # the code never returned
    assert [(e.from_status, e.to_status) for e in job.events()] == [
        (None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "CANCELED")]
    assert job.events()[-1].reason is not None and "cancel" in job.events()[-1].reason


def test_cancel_of_a_queued_job_is_immediate_and_its_code_never_runs(db_path: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    trainer = Trainer(jobfuncs.train_slow, db=db_path, max_workers=1,
                      config={"marker_dir": str(markers), "pause_s": 0.01})
    first, second = trainer.fit(_ds()), trainer.fit(_ds())
    wait_until(lambda: first.get_status()["status"] == "RUNNING", timeout=20, message="first job running")
    assert second.get_status()["status"] == "QUEUED"
    assert second.cancel() == "CANCELED"
    status = second.get_status()
    assert status["status"] == "CANCELED" and status["finished_at"] is not None  # at once, not at its turn
    assert [(e.from_status, e.to_status) for e in second.events()] == [(None, "QUEUED"), ("QUEUED", "CANCELED")]
    first.cancel()
    assert first.wait(timeout=20)["status"] == "CANCELED"
    third = trainer.fit(_ds())  # submitted after: the runner has passed the canceled job
    wait_until(lambda: third.get_status()["status"] == "RUNNING", timeout=20, message="third job running")
    third.cancel()
    third.wait(timeout=20)
    assert sorted(p.name for p in markers.iterdir()) == sorted([first.job_id, third.job_id])
    assert second.get_status()["status"] == "CANCELED" and _epochs(second) == []


def test_a_broad_except_exception_cannot_swallow_a_cancel(db_path: str, tmp_path: Path) -> None:
    job = Trainer(jobfuncs.train_swallow, db=db_path, config={"marker_dir": str(tmp_path)}).fit(_ds())
    wait_until(lambda: len(_epochs(job)) >= 3, timeout=20, message="three epochs reported")
    assert job.cancel() == "RUNNING"
    final = job.wait(timeout=20)
    assert final["status"] == "CANCELED" and len(final["result"]["epochs"]) >= 3
    assert "summary" not in final["result"]  # train_swallow never returned
    assert job.events()[-1].reason == "canceled by user"
    assert job.cancel() == "CANCELED"  # terminal: unchanged
    # The code itself stopped at the cancel: its except clause caught nothing on the way out.
    marker = tmp_path / job.job_id
    wait_until(marker.exists, timeout=20, message="train_swallow never left its loop")
    assert marker.read_text(encoding="utf-8") == "swallowed=0"


# -- result visible while running ----------------------------------------------------------------


def test_result_epochs_grow_while_the_job_is_running(db_path: str, dataset: Dataset) -> None:
    job = Trainer(demo.train, db=db_path, config={"epochs": 1000, "epoch_pause_s": 0.02}).fit(dataset)
    seen: list[int] = []

    def grew() -> bool:
        status = job.get_status()
        assert status["status"] == "RUNNING" or (status["status"] == "QUEUED" and not seen)
        if status["status"] == "RUNNING":
            n = len(status["result"].get("epochs", []))
            if not seen or n > seen[-1]:
                seen.append(n)
        return len(seen) >= 3 and seen[-1] >= 2

    wait_until(grew, timeout=20, message="epochs growing while RUNNING")
    running = job.get_status()
    assert running["status"] == "RUNNING" and running["finished_at"] is None
    assert running["result"]["eval_metric"] == "roc_auc" and running["result"]["best_epoch"] is not None
    job.cancel()
    final = job.wait(timeout=20)
    assert final["status"] == "CANCELED"
    # Every epoch seen while running is still there, unchanged, at the end.
    assert final["result"]["epochs"][:len(running["result"]["epochs"])] == running["result"]["epochs"]


# -- code that cannot run anywhere ---------------------------------------------------------------

SUBMIT_AND_EXIT = """
import os, sys
import jobfuncs
from jobtrack import Dataset, JobManager, Trainer
from proc import wait_until
ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1.0}]})
trainer = Trainer(jobfuncs.train_slow, db=sys.argv[1], config={"pause_s": 0.05, "marker_dir": sys.argv[2]})
first = trainer.fit(ds)
wait_until(lambda: first.get_status()["status"] == "RUNNING", timeout=20)
# RUNNING is recorded when the job is claimed, a moment before its code starts: wait for the code's marker
wait_until(lambda: os.path.exists(os.path.join(sys.argv[2], first.job_id)), timeout=20)
queued = trainer.fit(ds)  # waits behind the first job in this process's thread runner
assert queued.get_status()["status"] == "QUEUED"
print(first.job_id, queued.job_id, flush=True)
os._exit(0)  # the process and its runner thread die; the queued job can never run
"""


def test_a_queued_thread_job_whose_submitter_died_reads_failed(db_path: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    first, queued = run_python(SUBMIT_AND_EXIT, db_path, str(markers)).stdout.split()
    manager = JobManager(db_path)
    status = manager.fetch_job(queued).get_status()
    assert status["status"] == "FAILED" and status["finished_at"] is not None
    assert _event_rows(db_path, queued)[-1] == ("QUEUED", "FAILED", "submitter lost")
    assert manager.fetch_job(queued).events()[-1].reason == "submitter lost"
    running = manager.fetch_job(first).get_status()
    assert running["status"] == "FAILED" and _event_rows(db_path, first)[-1][:2] == ("RUNNING", "FAILED")
    assert "lost" in (_event_rows(db_path, first)[-1][2] or "")
    assert sorted(p.name for p in markers.iterdir()) == [first]  # the queued job's code never ran
    again = manager.fetch_job(queued).get_status()
    assert again == status  # the verdict is final
