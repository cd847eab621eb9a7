"""Shared helpers for the benchmarks: interleaved timing, medians and percentiles, workload data."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from typing import Any

import filelock

EPOCHS = 50


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleaved(fns: dict[str, Callable[[], Any]], *, calls: int, batch: int = 50) -> dict[str, list[float]]:
    """Time each function ``calls`` times, alternating batches so machine noise hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm caches and statement caches
        for _ in range(min(batch, 20)):
            fn()
    done = 0
    while done < calls:
        for name, fn in fns.items():
            out = samples[name]
            for _ in range(batch):
                started = time.perf_counter()
                fn()
                out.append(time.perf_counter() - started)
        done += batch
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {"median_us": statistics.median(samples) * 1e6, "p99_us": percentile(samples, 0.99) * 1e6}


def epoch_metrics(epoch: int) -> tuple[dict[str, float], dict[str, float]]:
    """The metrics one epoch reports: about 160 bytes of JSON, so 50 epochs make an ~8 KB result."""
    train = {"loss": 1.0 / (epoch + 1), "accuracy": 0.5 + epoch / 200, "lr": 0.001}
    validation = {"loss": 1.1 / (epoch + 1), "roc_auc": 0.6 + epoch / 250, "accuracy": 0.5 + epoch / 210}
    return train, validation


def fifty_epoch_result() -> dict[str, Any]:
    epochs = []
    for e in range(EPOCHS):
        train, validation = epoch_metrics(e)
        epochs.append({"epoch": e, "train": train, "validation": validation})
    return {"epochs": epochs, "eval_metric": "roc_auc", "best_epoch": EPOCHS - 1,
            "best_metric": epochs[-1]["validation"]["roc_auc"]}


def raw_connect(path: str) -> sqlite3.Connection:
    """A raw sqlite3 connection with the same durability settings jobtrack uses (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class RawLifecycle:
    """The floor of this design: raw sqlite3 plus a ``filelock.FileLock`` per write transaction.

    Three locked transactions per job, as jobtrack does: insert QUEUED (+ event), claim RUNNING
    (+ event), complete with the JSON-encoded result (+ event).
    """

    def __init__(self, path: str, *, file_lock: bool = True, flush_claim: bool = True) -> None:
        self.conn = raw_connect(path)
        self.conn.executescript(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT, created_at TEXT, updated_at TEXT, "
            "finished_at TEXT, result_json TEXT);"
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, job_id TEXT, src TEXT, dst TEXT, at TEXT);"
        )
        self.lock = filelock.FileLock(path + ".lock") if file_lock else None
        self.flush_claim = flush_claim  # False: jobtrack's rule, the claim commits without its own fsync
        self.n = 0

    def _tx(self, statements: list[tuple[str, tuple[Any, ...]]], *, flush: bool = True) -> None:
        if self.lock is not None:
            self.lock.acquire()
        try:
            if not flush:
                self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self.conn.execute(sql, params)
            self.conn.execute("COMMIT")
            if not flush:
                self.conn.execute("PRAGMA synchronous=FULL")
        finally:
            if self.lock is not None:
                self.lock.release()

    def lifecycle(self, result: dict[str, Any]) -> None:
        self.n += 1
        job_id = f"raw_{os.getpid()}_{self.n}"
        now = "2026-11-25T00:00:00.000000+00:00"
        self._tx([("INSERT INTO jobs VALUES (?, 'QUEUED', ?, ?, NULL, NULL)", (job_id, now, now)),
                  ("INSERT INTO events (job_id, src, dst, at) VALUES (?, NULL, 'QUEUED', ?)", (job_id, now))])
        self._tx([("UPDATE jobs SET status = 'RUNNING', updated_at = ? WHERE id = ? AND status = 'QUEUED'",
                   (now, job_id)),
                  ("INSERT INTO events (job_id, src, dst, at) VALUES (?, 'QUEUED', 'RUNNING', ?)", (job_id, now))],
                 flush=self.flush_claim)
        self._tx([("UPDATE jobs SET status = 'COMPLETED', updated_at = ?, finished_at = ?, result_json = ? "
                   "WHERE id = ? AND status = 'RUNNING'", (now, now, json.dumps(result), job_id)),
                  ("INSERT INTO events (job_id, src, dst, at) VALUES (?, 'RUNNING', 'COMPLETED', ?)", (job_id, now))])


_FIFTY_EPOCH_RESULT = fifty_epoch_result()


def noop_job(ctx: Any) -> dict[str, Any]:
    """A job that does nothing and returns a 50-epoch result (importable for worker processes).

    The result is built once, as the peers' no-op tasks return a prebuilt one: the workload
    measures the tracker, not the building of a dict.
    """
    return _FIFTY_EPOCH_RESULT


def tiny_job(ctx: Any) -> dict[str, Any]:
    """A job that does nothing and returns a small summary."""
    return {"ok": True}


def slow_job(ctx: Any) -> None:
    """A job that reports an epoch every 20 ms until it is stopped."""
    epoch = 0
    while True:
        epoch += 1
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
        time.sleep(0.02)
