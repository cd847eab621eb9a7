"""A worker's claim (#14): ``ChangeWatcher.claim`` gives each job to one worker only and skips canceled
jobs; a listening connection the server dropped is replaced; on SQLite a claim attempt with nothing
queued takes no write lock. Also: ``benchmarks/run.py --help`` works."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jobfuncs
from jobtrack import Dataset, Trainer
from jobtrack.store import Store
from jobtrack.store.watch import ChangeWatcher

KINDS = ("worker",)
STAMPS = {"updated_at", "heartbeat_at", "lease_expires_at"}  # written by both claims, at their own times


def _queue(db: str, tmp_path: Path, n: int) -> list[str]:
    (tmp_path / "train.csv").write_text("x\n1\n", encoding="utf-8")
    ds = Dataset("pickup", "binary_classification", "m", tables={"train": str(tmp_path / "train.csv")})
    trainer = Trainer(jobfuncs.train_noop, db=db, runner="worker")
    return [trainer.fit(ds).job_id for _ in range(n)]


def _row(store: Store, job_id: str) -> dict[str, Any]:
    with store.db.read() as tx:
        names = store.db.column_names(tx, "jobs")
        values = tx.one("SELECT * FROM jobs WHERE id = :id", {"id": job_id})
    assert values is not None
    return dict(zip(names, values, strict=True))


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in after.items() if before[k] != v}


def _events(store: Store, job_id: str) -> list[tuple[str | None, str, str | None]]:
    return [(e.from_status, e.to_status, e.reason) for e in store.events(job_id)]


def test_two_watchers_claiming_at_once_take_each_job_once(pg_url: str, tmp_path: Path) -> None:
    jobs = _queue(pg_url, tmp_path, 24)
    store = Store.open(pg_url)
    claimed: list[list[tuple[str, int]]] = [[], []]
    start = threading.Barrier(2)

    def claim_all(mine: list[tuple[str, int]]) -> None:
        watcher = ChangeWatcher(store, KINDS)  # each with its own listening connection
        try:
            start.wait(timeout=30)
            while (got := watcher.claim()) is not None:
                mine.append(got)
        finally:
            watcher.close()

    threads = [threading.Thread(target=claim_all, args=(mine,)) for mine in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    everything = claimed[0] + claimed[1]
    assert sorted(j for j, _ in everything) == sorted(jobs)  # every job, none twice
    assert {token for _, token in everything} == {1}
    assert all(store.get_job(j).status == "RUNNING" for j in jobs)


def test_a_claim_skips_a_job_canceled_while_queued(pg_url: str, tmp_path: Path) -> None:
    canceled, queued = _queue(pg_url, tmp_path, 2)
    store = Store.open(pg_url)
    store.request_cancel(canceled)
    watcher = ChangeWatcher(store, KINDS)
    try:
        assert watcher.claim() == (queued, 1)
        assert watcher.claim() is None
    finally:
        watcher.close()
    assert store.get_job(canceled).status == "CANCELED"


def test_a_listening_connection_the_server_dropped_is_replaced(pg_url: str, tmp_path: Path) -> None:
    store = Store.open(pg_url)
    watcher = ChangeWatcher(store, KINDS)
    try:
        watcher.pause(0.01)  # now listening
        with store.db.write() as tx:  # the server drops it, as a restart or an idle timeout would
            dropped = tx.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()")
        assert dropped >= 1
        watcher.pause(0.05)  # does not raise: the connection is let go
        job_id = _queue(pg_url, tmp_path, 1)[0]
        assert watcher.claim() == (job_id, 1)
        watcher.pause(0.01)  # listening again, on a new connection
        assert watcher.claim() is None
    finally:
        watcher.close()


def test_a_claim_with_nothing_queued_takes_no_write_lock_on_sqlite(db_path: str, tmp_path: Path) -> None:
    store = Store.open(db_path)
    watcher = ChangeWatcher(store, KINDS)
    store.db.read_one("SELECT 1", {})  # the file exists; its schema was created (under the lock) at open
    before = store.db.write_locks
    assert watcher.claim() is None
    assert store.db.write_locks == before
    job_id = _queue(db_path, tmp_path, 1)[0]
    assert watcher.claim() == (job_id, 1)


def test_the_benchmark_runner_prints_its_help() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout
