"""The per-epoch write path of #14, tested without timing: the job log's kept descriptor and the
best-metric bookkeeping that decodes nothing and survives a failed epoch transaction."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, RunContext, StoreError, Trainer, testing
from jobtrack.store import Store
from jobtrack.store.tx import Tx

DS = Dataset("write", "binary_classification", "path", tables={"train": [{"x": 1}]})


def _open_descriptors_to(path: Path) -> list[str]:
    """This process's descriptors open on ``path`` (read from /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return found


def test_a_job_log_is_opened_once_for_all_its_lines_and_let_go_when_the_job_ends(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)  # a first try before the job's directory exists does not count
        if str(path).endswith("log.txt"):
            opened.append(str(path))
        return fd

    monkeypatch.setattr("jobtrack.joblog.os.open", counting_open)
    held: list[list[str]] = []

    def train(ctx: RunContext) -> None:
        for e in range(20):
            ctx.log_epoch(e, train={"loss": 1 / (e + 1)}, validation={"roc_auc": 0.5 + e / 100})
        held.append(_open_descriptors_to(ctx.log_path))

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    testing.assert_completed(job)
    log_path = Path(Store.open(db_path).job_dir(job.job_id), "log.txt")
    assert len(opened) == 1 and held == [held[0]] and len(held[0]) == 1  # one descriptor, kept for 20 lines
    assert _open_descriptors_to(log_path) == []  # let go when the job ended
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in lines] == [f"epoch {e}" for e in range(20)]


def test_a_log_moved_away_between_two_lines_gets_the_next_line_at_its_path(db_path: str) -> None:
    def train(ctx: RunContext) -> None:
        ctx.log("before the move")
        os.replace(ctx.log_path, ctx.log_path.with_name("moved.txt"))
        ctx.log("after the move")

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    testing.assert_completed(job)
    job_dir = Store.open(db_path).job_dir(job.job_id)
    assert "before the move" in (job_dir / "moved.txt").read_text(encoding="utf-8")
    now = (job_dir / "log.txt").read_text(encoding="utf-8")
    assert "after the move" in now and "before the move" not in now


def test_the_best_metric_is_right_after_an_epoch_transaction_failed(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The failed epoch (0.9) never committed: the next epoch (0.7) is the best, as a fresh recount says.
    real_run_many = Tx.run_many
    failing: list[bool] = []
    caught: list[BaseException] = []

    def run_many(self: Tx, sql: str, rows: Any) -> None:
        if failing and "job_metrics" in sql:  # the epoch's last statement: everything before it rolls back
            failing.clear()
            raise sqlite3.OperationalError("disk I/O error")
        real_run_many(self, sql, rows)

    monkeypatch.setattr(Tx, "run_many", run_many)

    def train(ctx: RunContext) -> None:
        ctx.log_epoch(0, train={"loss": 1.0}, validation={"roc_auc": 0.5})
        failing.append(True)
        try:
            ctx.log_epoch(1, train={"loss": 0.5}, validation={"roc_auc": 0.9})
        except StoreError as exc:
            caught.append(exc)
        ctx.log_epoch(1, train={"loss": 0.6}, validation={"roc_auc": 0.7})
        ctx.log_epoch(2, train={"loss": 0.7}, validation={"roc_auc": 0.6})

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    status = testing.assert_completed(job)
    assert len(caught) == 1
    assert [e["validation"]["roc_auc"] for e in status["result"]["epochs"]] == [0.5, 0.7, 0.6]
    assert status["result"]["best_metric"] == 0.7
    manager = JobManager(db_path)
    for query in ("best_metric = 0.7", "best.roc_auc = 0.7 and best.loss = 0.6",  # the committed best epoch
                  "last.roc_auc = 0.6 and last.loss = 0.7"):
        assert [j.job_id for j in manager.list_jobs(where=query)] == [job.job_id], query
