"""Bundles (#19): export of 10,000 finished jobs without files (target <= 5 s) and their import (<= 10 s).

Each job has schema 4's rows too: three config parameters, two tags, two metrics, a best metric and a
provenance document (as ``jobtrack.provenance`` writes it), so the new tables are part of the work.

Floors, measured in alternating rounds in the same run, on disk and on tmpfs:
- export floor: plain sqlite3 reads every row of the same jobs from the same tables, encodes each
  row with the same JSON library (jobtrack.jsonutil) and writes them into a zip file with sha256;
- import floor: plain sqlite3 inserts the same rows (and the note of each job carried in) into a fresh
  jobtrack database, 500 jobs per transaction under the same file lock, with the same durability
  settings as jobtrack's connection.

Run: ``python benchmarks/bench_bundles.py [--jobs 10000] [--rounds 3]``; prints the table rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobtrack import jsonutil, runtime
from jobtrack.bundle import export_bundle, import_bundle
from jobtrack.store import Store

TABLES = ("jobs", "job_events", "job_epochs", "job_params", "job_tags", "job_metrics")


def fill(db: str, n: int) -> None:
    """A jobtrack database with ``n`` COMPLETED jobs, three events, three epochs, three config parameters, two
    tags and two metrics each, and a provenance document (bulk-loaded)."""
    Store.open(db)
    runtime.close_all()
    conn = sqlite3.connect(db)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    result = jsonutil.dumps({"eval_metric": "roc_auc", "best_metric": 0.9, "summary": {"ok": True}}, "r")
    provenance = jsonutil.dumps({"git": {"commit": "a" * 40, "branch": "main", "dirty": False, "diff_file": None,
                                         "diff_bytes": 0, "diff_truncated": False},
                                 "python": "3.11.9", "platform": "Linux-6.1-x86_64", "host": "laptop",
                                 "packages": {"numpy": "2.1.0", "torch": "2.5.0", "jobtrack": "0.1.0"},
                                 "datasets": {"train": "0" * 64, "validation": "1" * 64}}, "provenance")
    jobs, events, epochs, params, tags, metrics = [], [], [], [], [], []
    for i in range(n):
        at = (base + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        job_id = f"job_{i:012d}"
        jobs.append((job_id, "train", "COMPLETED", f"exp{i % 50}_binary_classification_t", at, at, at, "completed",
                     "roc_auc", "max", '{"config": {"lr": 0.1}}', "worker", "h|1|1", "h|1|1", 1, 0, 3, result,
                     0.9, provenance, 1))
        params += [(job_id, "lr", "number", 0.1, None), (job_id, "opt", "string", None, "adam"),
                   (job_id, "model.depth", "number", float(i % 8), None)]
        tags += [(job_id, "baseline"), (job_id, f"batch{i % 10}")]
        metrics += [(job_id, "roc_auc", 0.9, 0.88), (job_id, "loss", 0.3, 0.31)]
        for src, dst in ((None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "COMPLETED")):
            events.append((job_id, src, dst, at, dst.lower()))
        for e in range(3):
            epochs.append((job_id, e, e, '{"loss": 0.5}', '{"roc_auc": 0.9}', at))
    conn.executemany("INSERT INTO jobs (id, job_type, status, experiment_name, created_at, updated_at, finished_at, "
                     "reason, eval_metric, metric_mode, spec_json, runner_kind, submitter, runner, claim_token, "
                     "cancel_requested, epoch_seq, result_json, best_metric, provenance_json, attempt, "
                     "export_paths_json, source_views_json) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'{}','{}')", jobs)
    conn.executemany("INSERT INTO job_events (job_id, from_status, to_status, at, reason) VALUES (?,?,?,?,?)", events)
    conn.executemany("INSERT INTO job_epochs (job_id, seq, epoch, train_json, validation_json, at) "
                     "VALUES (?,?,?,?,?,?)", epochs)
    conn.executemany("INSERT INTO job_params (job_id, key, kind, num_value, text_value) VALUES (?,?,?,?,?)", params)
    conn.executemany("INSERT INTO job_tags (job_id, tag) VALUES (?,?)", tags)
    conn.executemany("INSERT INTO job_metrics (job_id, name, best_value, last_value) VALUES (?,?,?,?)", metrics)
    conn.commit()
    conn.close()


def export_floor(db: str, out: str) -> None:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for table in TABLES:
            rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
            data = "".join(jsonutil.dumps(r, table) + "\n" for r in rows).encode()
            hashlib.sha256(data).hexdigest()
            zf.writestr(f"rows/{table}.jsonl", data)
    conn.close()


def import_floor(source: str, db: str) -> None:
    import filelock

    Store.open(db)
    runtime.close_all()
    src = sqlite3.connect(source)
    rows = {t: src.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES}
    cols = {t: [d[1] for d in src.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    src.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    lock = filelock.FileLock(db + ".lock")
    ids = [r[0] for r in rows["jobs"]]
    for start in range(0, len(ids), 500):
        part = set(ids[start : start + 500])
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            for t in TABLES:
                key = 0 if t == "jobs" else (1 if t == "job_events" else 0)
                conn.executemany(f"INSERT INTO {t} VALUES ({', '.join('?' * len(cols[t]))})",
                                 [r for r in rows[t] if r[key] in part])
            conn.execute("CREATE TABLE IF NOT EXISTS jobtrack_carried (job_id VARCHAR(200) NOT NULL PRIMARY KEY, "
                         "carried_at VARCHAR(32) NOT NULL)")  # as jobtrack notes each job it carried in
            now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
            conn.executemany("INSERT INTO jobtrack_carried (job_id, carried_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             [(i, now) for i in sorted(part)])
            conn.execute("COMMIT")
    conn.close()


def measure(root: Path, n: int, rounds: int) -> dict[str, list[float]]:
    source = str(root / "source.db")
    fill(source, n)
    times: dict[str, list[float]] = {k: [] for k in ("export", "export floor", "import", "import floor")}
    for r in range(rounds):
        runtime.close_all()
        started = time.perf_counter()
        export_bundle(Store.open(source), root / f"b{r}.jtb", files=False)
        times["export"].append(time.perf_counter() - started)
        started = time.perf_counter()
        export_floor(source, str(root / f"f{r}.zip"))
        times["export floor"].append(time.perf_counter() - started)
        target = str(root / f"t{r}" / "target.db")
        os.makedirs(os.path.dirname(target))
        started = time.perf_counter()
        report = import_bundle(Store.open(target), root / f"b{r}.jtb")
        times["import"].append(time.perf_counter() - started)
        assert len(report.imported) == n
        floor = str(root / f"g{r}" / "floor.db")
        os.makedirs(os.path.dirname(floor))
        started = time.perf_counter()
        import_floor(source, floor)
        times["import floor"].append(time.perf_counter() - started)
        runtime.close_all()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, one round (benchmarks/run.py --quick)")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds = 1000, 1
    places = [("disk", None)]
    if os.path.isdir("/dev/shm"):
        places.append(("tmpfs", "/dev/shm"))
    for where, base in places:
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            t = {k: statistics.median(v) for k, v in measure(Path(tmp), args.jobs, args.rounds).items()}
        n = f"{args.jobs:,}"
        print(f"| bundles ({where}) | export of {n} jobs without files (median of {args.rounds}) "
              f"| {t['export']:.2f} s | <= 5 s | {'met' if t['export'] <= 5 else 'missed'} |")
        print(f"| bundles ({where}) | floor: sqlite3 read + same JSON + zip | {t['export floor']:.2f} s "
              f"= {t['export'] / t['export floor']:.2f}x |  |  |")
        print(f"| bundles ({where}) | import of those {n} jobs (verify, check, 500 jobs per transaction) "
              f"| {t['import']:.2f} s | <= 10 s | {'met' if t['import'] <= 10 else 'missed'} |")
        print(f"| bundles ({where}) | floor: sqlite3 inserts, 500 jobs per locked transaction | "
              f"{t['import floor']:.2f} s = {t['import'] / t['import floor']:.2f}x |  |  |")


if __name__ == "__main__":
    main()
