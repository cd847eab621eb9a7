"""The query language (#15): the first page of a filtered, sorted listing over 100,000 jobs.

Query: ``config.lr < 0.01 and (tag = 'baseline' or config.depth in (4, 8))``, sorted ``-best_metric``.
Targets: the first page (``jobtrack list``'s 50 jobs) in <= 100 ms, and within 3x a hand-written SQL
query over the same tables returning the same rows (the ids are checked to be the same).

Measured, in alternating rounds in the same run, on disk and on tmpfs:
- ``list_jobs``: ``JobManager.list_jobs(where=..., sort="-best_metric", limit=50)``: parse, compile, one read,
  50 JobMonitors (one row more is read, to tell whether more match);
- ``jobtrack list``: the command in-process (``cli.main``), output to a buffer: the same plus the page's
  claim times (its DURATION column), and the printed table; for scale, the same command matching no job;
- floors: plain ``sqlite3`` on the same file runs hand-written SQL returning the same 50 job rows (every
  column of ``jobs``), written two ways (correlated ``EXISTS``, and ``id IN (SELECT ...)``); the faster
  one is the floor.

Run: ``python benchmarks/bench_query.py [--jobs 100000] [--rounds 15] [--explain] [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report
from jobtrack import JobManager, cli, jsonutil, runtime
from jobtrack.store import Store
from jobtrack.store.records import JOB_COLUMNS

QUERY = "config.lr < 0.01 and (tag = 'baseline' or config.depth in (4, 8))"
SORT = "-best_metric"
PAGE = 50

_COLUMNS = ", ".join(f"j.{c}" for c in JOB_COLUMNS)
FLOORS = {
    "EXISTS": f"""SELECT {_COLUMNS} FROM jobs j
        WHERE EXISTS (SELECT 1 FROM job_params p WHERE p.job_id = j.id AND p.key = 'lr' AND p.kind = 'number'
                      AND p.num_value < 0.01)
          AND (EXISTS (SELECT 1 FROM job_tags t WHERE t.job_id = j.id AND t.tag = 'baseline')
               OR EXISTS (SELECT 1 FROM job_params p WHERE p.job_id = j.id AND p.key = 'depth' AND p.kind = 'number'
                          AND p.num_value IN (4, 8)))
        ORDER BY j.best_metric DESC, j.created_at DESC, j.id DESC LIMIT {PAGE}""",
    "IN": f"""SELECT {_COLUMNS} FROM jobs j
        WHERE j.id IN (SELECT job_id FROM job_params WHERE key = 'lr' AND kind = 'number' AND num_value < 0.01)
          AND (j.id IN (SELECT job_id FROM job_tags WHERE tag = 'baseline')
               OR j.id IN (SELECT job_id FROM job_params WHERE key = 'depth' AND kind = 'number'
                           AND num_value IN (4, 8)))
        ORDER BY j.best_metric DESC, j.created_at DESC, j.id DESC LIMIT {PAGE}""",
}
"""The same query written by hand, two ways (a missing best metric sorts last in both: SQLite puts NULL first
ascending, so last descending)."""


def fill(db: str, n: int, seed: int = 15) -> None:
    """``n`` finished jobs with realistic rows: six config values, zero to three tags, four metrics, three events
    and a small result each (bulk-loaded with executemany into a database jobtrack created)."""
    Store.open(db)
    runtime.close_all()
    rng = random.Random(seed)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    jobs, events, params, tags, metrics = [], [], [], [], []
    for i in range(n):
        created = base + dt.timedelta(seconds=i * 7)
        at = created.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        end = (created + dt.timedelta(seconds=rng.uniform(5, 900))).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        job_id = f"job_{i:012d}"
        failed = rng.random() < 0.05
        auc = None if failed else round(rng.uniform(0.5, 0.99), 4)
        lr = 10 ** rng.uniform(-4, -1)
        depth = rng.choice((2, 4, 6, 8, 12, 16))
        config = {"lr": lr, "depth": depth, "opt": rng.choice(("adam", "sgd", "adamw")),
                  "batch_size": rng.choice((32, 64, 128)), "dropout": round(rng.uniform(0, 0.5), 2),
                  "model.width": rng.choice((64, 128, 256))}
        result = jsonutil.dumps({"eval_metric": "roc_auc", "best_metric": auc, "summary": {"ok": not failed}}, "r")
        status = "FAILED" if failed else "COMPLETED"
        jobs.append((job_id, "train", status, f"exp{i % 40}_binary_classification_t", at, end, end, status.lower(),
                     "roc_auc", "max", jsonutil.dumps({"config": config}, "spec"), "thread", "h|1|1", "h|1|1", 1, 0,
                     10, result, auc, 1))
        for key, value in config.items():
            if isinstance(value, str):
                params.append((job_id, key, "string", None, value))
            else:
                params.append((job_id, key, "number", float(value), None))
        roll = rng.random()
        for tag in ("baseline" if roll < 0.12 else None, rng.choice(("v1", "v2", "v3")) if roll < 0.6 else None,
                    f"sweep{i // 500}" if roll > 0.7 else None):
            if tag:
                tags.append((job_id, tag))
        if auc is not None:
            metrics += [(job_id, "roc_auc", auc, auc - 0.01), (job_id, "loss", 1 - auc, 1.01 - auc),
                        (job_id, "train.loss", 0.9 - auc / 2, 0.91 - auc / 2), (job_id, "accuracy", auc - 0.05, auc)]
        for src, dst, when in ((None, "QUEUED", at), ("QUEUED", "RUNNING", at), ("RUNNING", status, end)):
            events.append((job_id, src, dst, when, dst.lower()))
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO jobs (id, job_type, status, experiment_name, created_at, updated_at, finished_at, "
                     "reason, eval_metric, metric_mode, spec_json, runner_kind, submitter, runner, claim_token, "
                     "cancel_requested, epoch_seq, result_json, best_metric, attempt, export_paths_json, "
                     "source_views_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'{}','{}')", jobs)
    conn.executemany("INSERT INTO job_events (job_id, from_status, to_status, at, reason) VALUES (?,?,?,?,?)", events)
    conn.executemany("INSERT INTO job_params (job_id, key, kind, num_value, text_value) VALUES (?,?,?,?,?)", params)
    conn.executemany("INSERT INTO job_tags (job_id, tag) VALUES (?,?)", tags)
    conn.executemany("INSERT INTO job_metrics (job_id, name, best_value, last_value) VALUES (?,?,?,?)", metrics)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def explain(db: str) -> None:
    """Print SQLite's plan of jobtrack's compiled query and of the floors."""
    store = Store.open(db)
    sql, params = store._search_sql("SELECT jobs.id FROM jobs", QUERY, sort=SORT, page=(PAGE, 0))
    conn = sqlite3.connect(db)
    for name, text, args in (("jobtrack", sql, params), *((f"floor {k}", v, {}) for k, v in FLOORS.items())):
        print(f"-- {name}\n{text}")
        for row in conn.execute("EXPLAIN QUERY PLAN " + text, args):
            print("   ", row[3])
    conn.close()


def measure(db: str, rounds: int) -> dict[str, list[float]]:
    manager = JobManager(db)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = io.StringIO()

    def ours() -> list[str]:
        return [j.job_id for j in manager.list_jobs(where=QUERY, sort=SORT, limit=PAGE)]

    def command() -> None:
        out.seek(0)
        out.truncate()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(["list", "--db", db, "--where", QUERY, "--sort", SORT]) == 0

    def empty_command() -> None:  # what every `jobtrack list` pays: the argument parser, opening, one query
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(["list", "--db", db, "--where", "id = 'none'"]) == 0

    floors: dict[str, Callable[[], list[Any]]] = {
        f"floor {k}": (lambda sql=sql: [r[0] for r in conn.execute(sql).fetchall()]) for k, sql in FLOORS.items()}
    expected = ours()
    assert len(expected) == PAGE
    for name, fn in floors.items():
        assert fn() == expected, f"{name} returned other rows"
    command()
    assert out.getvalue().splitlines()[1].split()[0] == expected[0]
    fns: dict[str, Callable[[], Any]] = {"list_jobs": ours, "jobtrack list": command, "empty list": empty_command,
                                         **floors}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--explain", action="store_true", help="print the query plans too")
    parser.add_argument("--quick", action="store_true", help="10,000 jobs, 5 rounds (benchmarks/run.py --quick)")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds = 10_000, 5
    places = [("disk", None)]
    if os.path.isdir("/dev/shm"):
        places.append(("tmpfs", "/dev/shm"))
    for where, base in places:
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            db = os.path.join(tmp, "jobs.db")
            started = time.perf_counter()
            fill(db, args.jobs)
            print(f"  ({where}: {args.jobs:,} jobs written in {time.perf_counter() - started:.1f} s)")
            if args.explain:
                explain(db)
            t = {k: statistics.median(v) * 1000 for k, v in measure(db, args.rounds).items()}
            runtime.close_all()
        floor_name = min((k for k in t if k.startswith("floor")), key=t.__getitem__)
        floor = t[floor_name]
        floor_words = (f"plain sqlite3, hand-written SQL returning the same {PAGE} job rows "
                       f"({floor_name.split()[1]} form; the other: "
                       f"{max(v for k, v in t.items() if k.startswith('floor')):.2f} ms)")
        w = f"query ({where})"
        n = f"{args.jobs:,}"
        report(w, f"list_jobs(where, sort) first {PAGE} of {n} jobs (median of {args.rounds})",
               f"{t['list_jobs']:.2f} ms", "<= 100 ms", t["list_jobs"] <= 100)
        report(w, f"`jobtrack list --where --sort` in-process, first {PAGE}", f"{t['jobtrack list']:.2f} ms",
               "<= 100 ms", t["jobtrack list"] <= 100)
        report(w, "  of which a `jobtrack list` that matches no job (parser, open, one query)",
               f"{t['empty list']:.2f} ms")
        report(w, "floor: hand-written SQL, same rows", f"{floor:.2f} ms", floor=floor_words)
        report(w, "list_jobs vs floor", f"{t['list_jobs'] / floor:.2f}x", "<= 3x", t["list_jobs"] / floor <= 3,
               floor_words)
        report(w, "jobtrack list vs floor", f"{t['jobtrack list'] / floor:.2f}x", "", None, floor_words)


if __name__ == "__main__":
    main()
