"""Databases written by an older jobtrack, opened by this one: old jobs are found, sorted and compared as new ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from jobtrack import Dataset, JobManager, Trainer
from jobtrack.runtime import close_all
from rows import drop_schema_4


def _train(ctx: Any) -> dict[str, int]:
    for epoch, auc in enumerate(ctx.config["aucs"]):
        ctx.log_epoch(epoch, train={"loss": 1.0 - auc}, validation={"roc_auc": auc})
    return {"params": 7}


def _as_schema_3(path: Path) -> None:
    """What schema 3 left of the jobs just written: none of schema 4's tables, columns or indexes."""
    conn = sqlite3.connect(path)
    try:
        drop_schema_4(conn.execute)
        conn.commit()
    finally:
        conn.close()


def test_jobs_of_a_schema_3_database_are_found_by_config_and_metrics_after_the_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    ds = Dataset("churn", "binary_classification", "m1", tables={"train": [{"x": 1}]})
    ids = {}
    for lr, aucs in ((0.1, [0.5, 0.8, 0.7]), (0.01, [0.6, 0.65])):
        job = Trainer(_train, config={"lr": lr, "model": {"depth": 4}, "aucs": aucs}, db=str(db), runner="eager",
                      provenance=False).fit(ds)
        assert job.wait()["status"] == "COMPLETED"
        ids[lr] = job.job_id
    close_all()
    _as_schema_3(db)
    close_all()  # forget this process's check of the file, as a new process would

    manager = JobManager(str(db))
    assert [j.job_id for j in manager.list_jobs(where="config.lr = 0.1")] == [ids[0.1]]
    assert [j.job_id for j in manager.list_jobs(where="config.model.depth = 4 and best.roc_auc > 0.7")] == [ids[0.1]]
    assert [j.job_id for j in manager.list_jobs(where="last.roc_auc = 0.65")] == [ids[0.01]]
    assert [j.job_id for j in manager.list_jobs(sort="-best_metric")] == [ids[0.1], ids[0.01]]
    rows = {r["id"]: r for r in manager.table()}
    assert rows[ids[0.1]]["config.lr"] == 0.1 and rows[ids[0.1]]["best_metric"] == 0.8
    assert rows[ids[0.1]]["best.roc_auc"] == 0.8
    assert rows[ids[0.01]]["best.train.loss"] == 1.0 - 0.65
