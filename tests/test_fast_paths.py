"""The shortcuts the hot paths take must not change what users see or what survives a crash."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, Trainer
from jobtrack.monitor import status_dict
from jobtrack.store import Store
from jobtrack.trainer import new_id
from proc import wait_until

DS = Dataset("fast", "binary_classification", "paths", tables={"train": [{"x": 1}], "test": [{"x": 2}]})


def _train(ctx: Any) -> dict[str, Any]:
    for e in range(3):
        ctx.log_epoch(e, train={"loss": 1.0 / (e + 1)}, validation={"roc_auc": 0.5 + e / 10})
    return {"note": "done"}


def _fail(ctx: Any) -> None:
    ctx.log_epoch(0, train={"loss": 1.0})
    raise ValueError("bad batch")


def _predict(ctx: Any) -> None:
    ctx.export("predictions", [{"id": 1, "score": 0.5}])


def test_finished_status_is_the_same_as_the_full_read(db_path: str, tmp_path: Path) -> None:
    trainer = Trainer(_train, _predict, db=db_path, runner="eager")
    trained = trainer.fit(DS)
    jobs = [trained, trainer.predict("scored", model_run_id=trained.model_run_id),
            Trainer(_fail, db=db_path, runner="eager").fit(DS)]
    (tmp_path / "train.csv").write_text("x\n1\n")
    on_file = Dataset("fast", "binary_classification", "paths", tables={"train": str(tmp_path / "train.csv")})
    queued = Trainer(_train, db=db_path, runner="worker").fit(on_file)  # no worker runs: it stays QUEUED
    queued.cancel()
    store = Store.open(db_path)
    for job in [*jobs, queued]:
        fast = job.get_status()
        assert fast["status"] in ("COMPLETED", "FAILED", "CANCELED")
        assert fast == status_dict(store, store.get_job(job.job_id))
    assert jobs[1].get_status()["source_views"] == {"predictions": "predictions_scored"}
    assert jobs[2].get_status()["result"]["error"]["type"] == "ValueError"


def test_a_claim_skips_only_its_own_flush(store: Store) -> None:
    # One connection per thread: the reads after each write see the setting that write left behind.
    def synchronous() -> int:
        row = store.db.read_one("PRAGMA synchronous", {})
        assert row is not None
        return int(row[0])

    with store.db.write(durable=False) as tx:
        assert tx.scalar("PRAGMA synchronous") == 1  # NORMAL: no fsync at this commit
    assert synchronous() == 2  # FULL again for every other commit
    with pytest.raises(RuntimeError), store.db.write(durable=False):
        raise RuntimeError("boom")
    assert synchronous() == 2
    with store.db.write() as tx:
        assert tx.scalar("PRAGMA synchronous") == 2


def test_a_claim_on_postgresql_skips_only_its_own_flush(pg_url: str) -> None:
    store = Store.open(pg_url)
    with store.db.write(durable=False) as tx:
        assert tx.scalar("SHOW synchronous_commit") == "off"
    with store.db.write() as tx:
        assert tx.scalar("SHOW synchronous_commit") == "on"


def test_a_short_lease_is_renewed_even_while_the_heartbeat_thread_sleeps_long(tmp_path: Path) -> None:
    release = threading.Event()

    def blocked(ctx: Any) -> None:
        release.wait(20)

    long_job = Trainer(blocked, db=str(tmp_path / "long.db")).fit(DS)  # default lease: beats every 10 s
    short_store = Store.open(str(tmp_path / "short.db"))
    short_store.lease_s = 0.6  # beats every 0.2 s: the sleeping thread must be woken for it
    try:
        wait_until(lambda: long_job.get_status()["status"] == "RUNNING", timeout=10)
        short_job = Trainer(blocked, db=str(tmp_path / "short.db")).fit(DS)
        wait_until(lambda: short_store.get_job(short_job.job_id).status == "RUNNING", timeout=10)
        claimed = short_store.get_job(short_job.job_id).heartbeat_iso
        wait_until(lambda: short_store.get_job(short_job.job_id).heartbeat_iso != claimed, timeout=3)
    finally:
        release.set()
    assert long_job.wait(timeout=10)["status"] == "COMPLETED"
    assert short_job.wait(timeout=10)["status"] == "COMPLETED"


def test_ids_leave_the_users_random_sequence_alone() -> None:
    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    ids = {new_id("job") for _ in range(1000)}
    assert [random.random() for _ in range(3)] == expected
    assert len(ids) == 1000
