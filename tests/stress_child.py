"""One process of the stress test: submits, runs, cancels and polls jobs in a shared database until a deadline.

``main(db, seconds, seed)`` returns the counts; the test prints them as one JSON line.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import traceback
from typing import Any

from jobtrack import Dataset, JobManager, JobtrackError, Trainer
from jobtrack.runners.base import run_job
from jobtrack.spec import JobSpec
from jobtrack.store import Store


def quick_train(ctx: Any) -> dict[str, Any]:
    """A tiny job: a few epochs of made-up metrics."""
    for epoch in range(int(ctx.config.get("epochs", 3))):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)}, validation={"rmse": 2.0 / (epoch + 1)})
    return {"ok": True}


def slow_train(ctx: Any) -> dict[str, Any]:
    """Reports an epoch every 50 ms for ``config["epochs"]`` epochs (long enough to be killed mid-job)."""
    for epoch in range(int(ctx.config.get("epochs", 100))):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)})
        time.sleep(0.05)
    return {"ok": True}


def main(db: str, seconds: float, seed: int, table_dir: str | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    table = os.path.join(table_dir or tempfile.gettempdir(), f"jobtrack-stress-{os.getpid()}-{seed}.csv")
    with open(table, "w", encoding="utf-8") as fh:
        fh.write("x\n1\n")
    ds = Dataset("stress", "regression", f"p{seed}", tables={"train": table})
    eager = Trainer(quick_train, db=db, runner="eager", config={"epochs": 3})
    queued = Trainer(quick_train, db=db, runner="worker", config={"epochs": 3})
    manager = JobManager(db)
    store = Store.open(db)
    counts = {"submitted": [], "ran": 0, "canceled": 0, "polled": 0, "errors": [], "locked": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        action = rng.random()
        try:
            if action < 0.3:
                counts["submitted"].append(eager.fit(ds).job_id)
            elif action < 0.55:
                counts["submitted"].append(queued.fit(ds).job_id)
            elif action < 0.75:
                claimed = store.claim_next(["worker"])
                if claimed:
                    run_job(store, JobSpec.from_record(store.get_job(claimed[0], check_liveness=False)),
                            token=claimed[1])
                    counts["ran"] += 1
            elif action < 0.85:
                jobs = manager.list_jobs(limit=20)
                if jobs:
                    rng.choice(jobs).cancel()
                    counts["canceled"] += 1
            else:
                for job in manager.list_jobs(status=["QUEUED", "RUNNING"], limit=10):
                    job.get_status()
                counts["polled"] += 1
        except JobtrackError as exc:
            counts["errors"].append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on any
            text = "".join(traceback.format_exception(exc))
            counts["errors"].append(text)
            if "locked" in text.lower():
                counts["locked"] += 1
    return counts

