"""jobtrack's benchmarks: every figure with its floor, its ratio and met / MISSED, on disk and on tmpfs.

Run:  python benchmarks/run.py [--quick] [--only NAME ...] [--results benchmarks/RESULTS.md]

This script runs its own workloads (scale, concurrency, detection, peers, postgres), then every
``benchmarks/bench_*.py`` it finds, each in its own process: ``--quick`` is passed to those that
take it (``--quick`` skips the others, saying so). A script that reports through ``common.report``
has its rows collected for RESULTS.md; ``--results`` rewrites only the part of RESULTS.md between
the ``run.py`` markers, so sections that other scripts' authors append below it stay.

Floors (``common.py``) do the same work as the measured side (SPEC §7): the same schema, rows,
transactions, fsyncs, lock and JSON library, in alternating rounds of the same run. Timings are
medians; ratios compare figures of this same run, because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from common import (  # noqa: E402
    EPOCHS,
    ROWS,
    ROWS_ENV,
    epoch_metrics,
    fifty_epoch_result,
    interleaved,
    jobtrack_schema,
    locations,
    noop_job,
    pg_engine,
    ratio_row,
    raw_connect,
    report,
    summary,
)
from jobtrack import Dataset, JobManager, Trainer  # noqa: E402
from jobtrack.store.records import SELECT_JOB  # noqa: E402

QUICK = False


def _dataset() -> Dataset:
    return Dataset("bench", "binary_classification", "jobs", tables={"train": [{"x": 1}]})


def _fifty_epoch_train(ctx: Any) -> None:
    for e in range(EPOCHS):
        train, validation = epoch_metrics(e)
        ctx.log_epoch(e, train=train, validation=validation)


def _throughput(fn: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - started)


# -- scale --------------------------------------------------------------------------------------------------

def _fill(db: str, n: int, runner: str) -> str:
    """Create a jobtrack database and bulk-load ``n`` jobs with their events; returns a completed job's id."""
    from jobtrack import liveness
    from jobtrack.store import Store

    Store.open(db).close()
    me = liveness.current().encode()
    result = json.dumps({"eval_metric": "roc_auc", "summary": {"ok": True}})
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")  # bulk loading only; the measured reads do not depend on it
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    batch_jobs, batch_events = [], []
    cols = ("id, job_type, status, experiment_name, model_run_id, output_alias, created_at, updated_at, finished_at, "
            "reason, eval_metric, metric_mode, spec_json, runner_kind, submitter, runner, claim_token, heartbeat_at, "
            "lease_expires_at, cancel_requested, result_json, export_paths_json, source_views_json, epoch_seq")
    for i in range(n):
        at = (base + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        status = "RUNNING" if i % 200 == 7 else "QUEUED" if i % 200 == 11 else "COMPLETED"
        job_id = f"job_{i:012d}"
        done = status == "COMPLETED"
        batch_jobs.append((job_id, "train", status, f"exp{i % 50}_binary_classification_t", f"mr_{i:012d}", None,
                           at, at, at if done else None, "completed" if done else None, "roc_auc", "max", "{}",
                           "worker", me, runner if status == "RUNNING" else None, 1, None, None, 0,
                           result if done else None, "{}", "{}", 0))
        batch_events.append((job_id, None, "QUEUED", at, "submitted"))
        if status != "QUEUED":
            batch_events.append((job_id, "QUEUED", "RUNNING", at, "claimed"))
        if done:
            batch_events.append((job_id, "RUNNING", "COMPLETED", at, "completed"))
        if len(batch_jobs) >= 50_000 or i == n - 1:
            conn.executemany(f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * (cols.count(',') + 1))})", batch_jobs)
            insert_event = "INSERT INTO job_events (job_id, from_status, to_status, at, reason) VALUES (?, ?, ?, ?, ?)"
            conn.executemany(insert_event, batch_events)
            conn.commit()
            batch_jobs, batch_events = [], []
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return f"job_{(n // 2) // 200 * 200:012d}"



_LIVE_RUNNER = """
import sys
from jobtrack import liveness
print(liveness.current().encode(), flush=True)
sys.stdin.readline()
"""


def _probe(runner: str) -> bool:
    """One liveness check as jobtrack makes it: read /proc/PID/stat and compare the start tick."""
    _, pid, start = runner.split("|", 2)
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return False
    return data[data.rfind(b")") + 2:].split()[19].decode() == start.partition(":")[2]


def bench_scale(where: str, tmp: Path) -> None:
    big_n = 20_000 if QUICK else 1_000_000
    w = f"scale ({where})"
    print(f"scale: {big_n:,} jobs against 1,000 jobs, database on {where}", flush=True)
    runner = subprocess.Popen([sys.executable, "-c", _LIVE_RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # a live runner process of the RUNNING jobs: its probe is real
    assert runner.stdout is not None and runner.stdin is not None
    live = runner.stdout.readline().strip()
    try:
        small_db, big_db = str(tmp / "small.db"), str(tmp / "big.db")
        small_id = _fill(small_db, 1000, live)
        started = time.perf_counter()
        big_id = _fill(big_db, big_n, live)
        load_s = time.perf_counter() - started
        small_m, big_m = JobManager(small_db), JobManager(big_db)
        small, big = small_m.fetch_job(small_id), big_m.fetch_job(big_id)
        raw = raw_connect(big_db)
        list_sql = SELECT_JOB + " WHERE status = 'RUNNING' ORDER BY created_at DESC, id DESC LIMIT 100"

        def floor_list() -> None:
            rows = raw.execute(list_sql).fetchall()
            for r in {r[15] for r in rows}:  # one liveness check per distinct runner
                assert _probe(r)

        samples = interleaved({"small": small.get_status, "big": big.get_status,
                               "list": lambda: big_m.list_jobs(status="RUNNING", limit=100),
                               "floor_list": floor_list,
                               "show_small": small_m.show_jobs, "show_big": big_m.show_jobs},
                              calls=200 if QUICK else 1000, batch=25)
        med = {k: summary(v)["median_us"] for k, v in samples.items()}
        report(w, f"bulk load of {big_n:,} jobs (setup, not a target)", f"{load_s:.1f} s")
        ratio_row(w, f"get_status() with {big_n:,} jobs vs with 1,000", med["big"], med["small"],
                  "the same call on a database of 1,000 jobs", target=1.5)
        ratio_row(w, f"show_jobs() (its first page) with {big_n:,} jobs vs with 1,000", med["show_big"],
                  med["show_small"], "the same call on a database of 1,000 jobs", target=1.5)
        ratio_row(w, "list_jobs(status='RUNNING', limit=100)", med["list"], med["floor_list"],
                  "raw sqlite3 select of the same 100 rows (every column, same order) plus one /proc/PID/stat "
                  "check per distinct runner (here one live process)", target=2.0)
        per_job = os.path.getsize(big_db) / big_n
        report(w, "file size per job (row, ~3 events, indexes)", f"{per_job:.0f} B")
    finally:
        runner.stdin.close()
        runner.wait(timeout=30)


# -- concurrency and dead-runner detection ----------------------------------------------------------------

_CONCURRENT_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
from common import noop_job
from jobtrack import Dataset, Trainer
db, n, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
trainer = Trainer(noop_job, db=db, runner="eager")
ds = Dataset("bench", "binary_classification", "jobs", tables={"train": [{"x": 1}]})
errors = []
time.sleep(max(0.0, start_at - time.time()))
started = time.time()
for _ in range(n):
    try:
        if trainer.fit(ds).get_status()["status"] != "COMPLETED":
            errors.append("not completed")
    except Exception as exc:
        errors.append(repr(exc))
print(json.dumps({"start": started, "end": time.time(), "errors": errors}))
"""

_POLLER = """
import json, sys, time
from jobtrack import JobManager
db, until = sys.argv[1], float(sys.argv[2])
manager, polls, errors = JobManager(db), 0, []
while time.time() < until:
    try:
        for job in manager.list_jobs(limit=20):
            job.get_status()
        polls += 1
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.005)
print(json.dumps({"polls": polls, "errors": errors}))
"""


def bench_concurrency(tmp: Path) -> None:
    procs, per = 8, 100 if QUICK else 500
    print(f"5. concurrency: {procs} processes x {per} lifecycles + one polling reader", flush=True)
    single_db, multi_db = str(tmp / "single.db"), str(tmp / "multi.db")
    for db in (single_db, multi_db):
        jobtrack_schema(db)
    start_at = time.time() + 2.0
    one = subprocess.run([sys.executable, "-c", _CONCURRENT_CHILD, single_db, str(per), str(start_at), str(HERE)],
                         capture_output=True, text=True, check=True)
    single = json.loads(one.stdout)
    single_rate = per / (single["end"] - single["start"])
    start_at = time.time() + 3.0
    children = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_CHILD, multi_db, str(per), str(start_at),
                                  str(HERE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(procs)]
    poller = subprocess.Popen([sys.executable, "-c", _POLLER, multi_db, str(start_at + 600)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [json.loads(c.communicate()[0]) for c in children]
    poller.send_signal(signal.SIGTERM)
    poller.wait()
    errors = [e for o in outs for e in o["errors"]]
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    rate = procs * per / elapsed
    locked = sum("locked" in e.lower() for e in errors)
    report("concurrency", "one process alone", f"{single_rate:.0f} jobs/s")
    report("concurrency", f"{procs} processes together (+ polling reader)", f"{rate:.0f} jobs/s")
    report("concurrency", "errors ('database is locked' among them)", f"{len(errors)} ({locked})", "0", not errors)
    report("concurrency", f"{procs} processes vs one alone", f"{rate / single_rate:.2f}x", ">= 0.5x",
           rate / single_rate >= 0.5)


# -- 6. dead-runner detection -----------------------------------------------------------------------

_SLOW_RUNNER = """
import sys
sys.path.insert(0, sys.argv[2])
from common import slow_job
from jobtrack import Dataset, Trainer
job = Trainer(slow_job, db=sys.argv[1]).fit(Dataset("bench", "regression", "slow", tables={"train": [{"x": 1}]}))
print(job.job_id, flush=True)
job.wait()
"""


def bench_detection(tmp: Path) -> None:
    rounds = 5 if QUICK else 11
    print(f"6. dead-runner detection: SIGKILL to a FAILED read, same host, {rounds} rounds", flush=True)
    db = str(tmp / "detect.db")
    jobtrack_schema(db)
    manager = JobManager(db)
    latencies = []
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", _SLOW_RUNNER, db, str(HERE)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        job = manager.fetch_job(child.stdout.readline().strip())
        while not job.get_status()["result"].get("epochs"):
            time.sleep(0.005)
        killed = time.perf_counter()
        os.kill(child.pid, signal.SIGKILL)
        while job.get_status()["status"] != "FAILED":
            pass
        latencies.append(time.perf_counter() - killed)
        child.wait()
    med = sorted(latencies)[len(latencies) // 2] * 1000
    report("detection", "SIGKILL -> FAILED read, median / max",
           f"{med:.1f} / {max(latencies) * 1000:.1f} ms", "< 100 ms", med < 100)


# -- 7. memory --------------------------------------------------------------------------------------
# -- 8. peers ---------------------------------------------------------------------------------------


def bench_peers(tmp: Path) -> None:
    print("8. peers: lifecycle throughput and status-read latency, measured in alternating rounds", flush=True)
    (tmp / "peers").mkdir()
    ds = _dataset()
    trainer = Trainer(noop_job, db=str(tmp / "peers" / "lifecycle.db"), runner="eager")
    status_job = Trainer(_fifty_epoch_train, db=str(tmp / "peers" / "status.db"), runner="eager").fit(ds)
    for name, make, count, reads in (("huey", _huey_peer, 1500, 2000), ("mlflow", _mlflow_peer, 40, 300)):
        try:
            cycle, read = make(tmp)
        except ImportError:
            report("peers", name, "not installed (pip install -e '.[bench]')")
            continue
        count = max(10, count // 3) if QUICK else count
        rates: dict[str, list[float]] = {"jt": [], "peer": []}
        for _ in range(5):
            rates["jt"].append(_throughput(lambda: trainer.fit(ds), count // 5))
            rates["peer"].append(_throughput(cycle, count // 5))
        jt_rate, rate = (sorted(v)[2] for v in (rates["jt"], rates["peer"]))
        samples = interleaved({"jt": status_job.get_status, "peer": read}, calls=reads, batch=25)
        jt_read, read_us = (summary(samples[k])["median_us"] for k in ("jt", "peer"))
        report("peers", f"jobtrack / {name} lifecycle", f"{jt_rate:.0f} / {rate:.0f} jobs/s")
        report("peers", f"jobtrack / {name} status read", f"{jt_read:.0f} / {read_us:.0f} us")
        report("peers", f"jobtrack vs {name}: lifecycle throughput", f"{jt_rate / rate:.2f}x", "> 1x", jt_rate > rate)
        report("peers", f"jobtrack vs {name}: status read (their time / ours)", f"{read_us / jt_read:.2f}x", "> 1x",
               read_us > jt_read)
        if name == "huey":
            jt_frames = _wal_frames(str(tmp / "peers" / "lifecycle.db"), lambda: trainer.fit(ds))
            huey_frames = _wal_frames(str(tmp / "huey.db"), cycle)
            report("peers", "WAL pages written per lifecycle: jobtrack / huey", f"{jt_frames:.0f} / {huey_frames:.0f}")


def _wal_frames(db: str, fn: Callable[[], Any], n: int = 20) -> float:
    """Pages a lifecycle appends to the WAL (what each commit's fsync has to flush), averaged over n."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = os.path.getsize(db + "-wal")
    for _ in range(n):
        fn()
    return (os.path.getsize(db + "-wal") - before) / (4096 + 24) / n


def _huey_peer(tmp: Path) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Enqueue, dequeue and execute a task returning the 50-epoch result; read it back by id."""
    from huey import SqliteHuey

    huey = SqliteHuey(filename=str(tmp / "huey.db"), fsync=True)  # synchronous=FULL, as jobtrack
    result = fifty_epoch_result()

    @huey.task()
    def noop() -> dict[str, Any]:
        return result

    def lifecycle() -> Any:
        handle = noop()  # enqueue
        huey.execute(huey.dequeue())  # a consumer's work: run it and store the result
        return handle

    handle = lifecycle()
    return lifecycle, lambda: huey.result(handle.id, preserve=True)


def _mlflow_peer(tmp: Path) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Create a run, log 50 epochs of the same metrics in one batch, end it; read the run's status."""
    import logging

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.create_experiment("bench")

    def lifecycle() -> str:
        run_id = client.create_run(experiment).info.run_id
        now = int(time.time() * 1000)
        metrics = []
        for e in range(EPOCHS):
            train, validation = epoch_metrics(e)
            metrics += [Metric(f"train_{k}", v, now, e) for k, v in train.items()]
            metrics += [Metric(f"val_{k}", v, now, e) for k, v in validation.items()]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
        return run_id

    run_id = lifecycle()
    return lifecycle, lambda: client.get_run(run_id).info.status


# -- 10. PostgreSQL workers -------------------------------------------------------------------------

_PG_WORKER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from jobtrack.runners.worker import run_worker
from jobtrack.store import Store
store = Store.open(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(run_worker(store, burst=True).ran)
"""


def bench_postgres(tmp: Path) -> None:
    jobs_per_run = 200 if QUICK else 1000
    print(f"10. PostgreSQL: lifecycle throughput with 1, 2 and 4 `jobtrack worker` processes ({jobs_per_run} jobs)",
          flush=True)
    server = pg_engine("postgres")
    if server is None:
        return
    url, engine = server
    table = tmp / "pg_train.csv"
    table.write_text("x\n1\n")
    ds = Dataset("bench", "regression", "pg", tables={"train": str(table)})
    for workers in (1, 2, 4):
        schema = f"jt_bench_{os.getpid()}_{workers}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        db = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
        try:
            trainer = Trainer(noop_job, db=db, runner="worker")
            for _ in range(jobs_per_run):
                trainer.fit(ds)
            start_at = time.time() + 2.5
            procs = [subprocess.Popen([sys.executable, "-c", _PG_WORKER, db, str(start_at), str(HERE)],
                                      stdout=subprocess.PIPE, text=True) for _ in range(workers)]
            ran = sum(int(p.communicate()[0].strip().splitlines()[-1]) for p in procs)
            finished = [j.get_status()["finished_at"] for j in JobManager(db).list_jobs(limit=None)]
            elapsed = max(dt.datetime.fromisoformat(f).timestamp() for f in finished if f) - start_at
            report("postgres", f"{workers} worker(s): jobs run / throughput", f"{ran} / {ran / elapsed:.0f} jobs/s")
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


# -- driver -----------------------------------------------------------------------------------------


# -- driver -------------------------------------------------------------------------------------------------


def _each_place(fn: Callable[[str, Path], None]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        with locations() as places:
            for where, place in places:
                fn(where, place)
    return run


WORKLOADS: dict[str, Callable[[Path], None]] = {
    "scale": _each_place(bench_scale),
    "concurrency": bench_concurrency,
    "detection": bench_detection,
    "peers": bench_peers,
    "postgres": bench_postgres,
}
"""run.py's own workloads; every benchmarks/bench_*.py runs after them (``--only`` names either)."""

SCRIPTS = sorted(p.stem for p in HERE.glob("bench_*.py"))

NOTES = {
    "status": (
        "A finished job's status is one narrow row read plus decoding its JSON result; the floor does the same "
        "read and decode with the same library, so the ratio is jobtrack's own overhead (the dict, the fork gate, "
        "the file-identity check every 0.25 s, the named parameter): 3-4 us per call, 1.05-1.06x for the orjson "
        "pair in the runs of the day this table was made (an earlier day's runs read 1.08-1.13x on a slower, "
        "busier machine: the target's edge)."
    ),
    "running": (
        "A monitor's RUNNING status reads the job row once and only the epochs reported since its last read (its "
        "EpochCache, which also keeps the best epoch until the epochs change), copies the cached epochs so callers "
        "may change theirs, and probes the runner's /proc/PID/stat once (os.read, no buffered file); the "
        "same-reads floor re-reads and decodes all 50 epochs, so jobtrack is below 1x there by design. Against "
        "the single-document floor (one finished row, the same 50 epochs as one JSON text, no probe) what remains "
        "is the probe, the 50 epoch copies and the row's record. Without the cache (a new monitor per call: the "
        "'nothing cached' rows) it decodes all 50 epochs, as the floor does, and chooses the best epoch."
    ),
    "lifecycle": (
        "Both sides pay the same transactions and fsyncs: create+claim without fsync (eager) or a durable create "
        "then a claim without fsync (thread), 50 durable epoch transactions, a durable finish; both take the "
        "current time per transaction and append the same line per epoch to the job's log, and the thread side "
        "reads the ended job's status as wait() returns it (the eager side calls no wait(): an eager fit() returns "
        "the ended job, and the eager floor reads nothing after it). The target rows run Trainer(provenance=False): "
        "the floor records no provenance; the default Trainer is shown beside them against the same floors. Each "
        "ratio is the median over 33 alternating rounds of 3 jobs of that round's floor time over jobtrack's (the "
        "jobs/s shown are the medians of each side, so their quotient can differ a little): ratios of two medians "
        "moved by 0.2 or more between runs of the same code on this machine, these by about 0.05 (three "
        "lifecycle-only runs the same hour: eager 0.85-0.88x and thread 0.79-0.81x on disk, eager 0.76-0.80x and "
        "thread 0.71-0.78x on tmpfs). What bounds jobtrack, measured in place on tmpfs (50-epoch blocks of each "
        "variant alternated 40 times in one job): an epoch took 104 us against the floor's 77 us. Taking out one "
        "part at a time: the log line (formatting and the stat of the log's folder that notices a replaced log) "
        "11.5 us, metric validation (numpy and NaN handling) 5 us, the stat of the database's path before each "
        "commit (a deleted or replaced file is never reported written, #21) 5 us, the best-metric and early-"
        "stopping bookkeeping about 9 us more than the floor's same job_metrics statements. Per job, a job with "
        "no epochs: eager 0.50 ms against the floor's 0.21 ms, thread 0.74 ms against 0.22 ms (the Trainer's "
        "submit, the run context, output capture, the result composed at the end; the thread runner also hands "
        "each job to its thread and back, about 55 us each way)."
    ),
    "epochs": (
        "Per epoch both sides take the time, renew the lease on the job row (UPDATE ... RETURNING), insert the "
        "epoch row (replacing an earlier one only for a number not above the highest so far, #18), run the same "
        "job_metrics/best_metric statements (#15) and append the epoch's line to the job's log on a kept "
        "descriptor. A SQLite epoch is one transaction in one call (Database.write_call: no generator, Tx or "
        "helper layers, its statements numbered once). The disk ratio moves most between runs (1.10x to 1.32x for "
        "the same code on the same day: fsync latency). What jobtrack still adds is Python and two stats: metric "
        "validation, the write path's checks (fork gate, thread lock, nested-write check, the file-identity stat "
        "before each commit, #21), the stat of the log's directory that notices a replaced log, and the "
        "in-process best-metric and early-stopping state. Its timestamps come from a nanosecond clock formatted "
        "without a datetime, and its statements are bound as tuples, as the floor's are."
    ),
    "scale": (
        "list_jobs goes through the query engine (search_jobs, #15: the SQL is composed per call, the query "
        "language is imported only for a where or sort) and runs the same SELECT as the floor, as one statement "
        "without a transaction around it. What it adds per row: a JobRecord (records.job_record: a named tuple, "
        "the job type and status looked up in dicts instead of Enum calls), a liveness check that is a dict "
        "lookup once the call has made its one /proc probe per distinct runner (Store._settle and its probes "
        "dict, shared by the re-read a verdict causes), and a JobMonitor: about 2 us per row here, against the "
        "floor's 4 us per row of fetching. show_jobs() is one page (100) whatever the size of the database: "
        "each job's status dict, its result JSON decoded."
    ),
    "worker": (
        "An idle worker watches SQLite's data_version (about 2 us to ask) with a pause growing from 1 to 5 ms, or "
        "on PostgreSQL LISTENs for the notification create_job sends at commit, and takes the write lock (or, on "
        "PostgreSQL, row locks) only after a read without the lock saw a QUEUED job; the claim is Store.claim_next, "
        "the one path where a status changes. Pickup is measured from fit() returning to the submitter reading "
        "RUNNING (polled every 0.5 ms); on PostgreSQL it is bounded by the round trips of the read, the claim "
        "transaction and the submitter's read."
    ),
    "cli": (
        "The whole process of `jobtrack status ID`: interpreter start, jobtrack's imports and the read. The raw "
        "script starts the same interpreter, imports sqlite3 and json, reads the same row and prints the same "
        "JSON; `python -c pass` is the interpreter alone. A finished job's status is read straight from the file "
        "(jobtrack.store.peek: read-only, no Store, the dict built by jobtrack.statusdoc as get_status() builds "
        "it), so what jobtrack adds is its argument parser, the database path's checks (network filesystem, "
        "schema version) and a handful of small modules. A RUNNING job's status takes the full path (the Store, "
        "the liveness check): the informational row."
    ),
    "memory": "Read in the process that ran the jobs (/proc/self/status), not in the parent.",
}
"""What bounds a workload, written under the table (keys: the workload's first word)."""

BEGIN, END = "<!-- run.py: begin -->", "<!-- run.py: end -->"


def _run_script(name: str, rows_file: Path) -> None:
    path = HERE / f"{name}.py"
    takes_quick = '"--quick"' in path.read_text(encoding="utf-8")
    if QUICK and not takes_quick:
        print(f"{name}: takes no --quick; skipped (run `python benchmarks/{name}.py` alone)", flush=True)
        return
    print(f"{name}:", flush=True)
    env = {**os.environ, ROWS_ENV: str(rows_file)}
    proc = subprocess.run([sys.executable, str(path), *(["--quick"] if QUICK else [])], env=env, check=False)
    if proc.returncode:
        report(name, "script", f"exited with code {proc.returncode}", "0", False)


def write_results(path: Path, command: str, elapsed_s: float, rows: list[dict[str, Any]]) -> None:
    """Rewrite RESULTS.md between the run.py markers (the top of the file if there are none); keep the rest."""
    lines = [
        BEGIN,
        "# Benchmark results",
        "",
        f"- Command: `{command}`",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; run took {elapsed_s:.0f} s",
        f"- Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.platform()}; shared with other work while it ran",
        "- Every ratio is against a floor measured in the same run, in alternating rounds; the floor column says "
        "what it does (common.py holds the floors). Disk and tmpfs (/dev/shm) are separate rows.",
        "",
        "| workload | figure | value | target | status | floor (same work, in words) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['workload']} | {r['figure']} | {r['value']} | {r['target']} | {r['status']} | "
              f"{r.get('floor', '')} |" for r in rows]
    missed = [f"{r['workload']}: {r['figure']}" for r in rows if r["status"] == "MISSED"]
    lines += ["", f"Targets missed: {'; '.join(missed) if missed else 'none'}.", ""]
    seen = {r["workload"].split()[0] for r in rows}
    lines += [f"- **{name}**: {note}" for name, note in NOTES.items() if name in seen]
    lines += ["", END]
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
    else:  # the first run with markers: the old table goes, the sections appended below it stay
        head, cut = "", old.find("\n## ")
        tail = "" if cut < 0 else old[cut:]
    tail = "\n\n" + tail.lstrip("\n") if tail.strip() else "\n"
    path.write_text(head + "\n".join(lines) + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute in all")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS) + SCRIPTS, help="run just these")
    parser.add_argument("--results", type=Path, help="write the figures into this Markdown file")
    args = parser.parse_args(argv)
    QUICK = args.quick
    started = time.perf_counter()
    print(f"jobtrack benchmarks on {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}{' (quick)' if QUICK else ''}", flush=True)
    chosen = args.only or [*WORKLOADS, *SCRIPTS]
    if QUICK and not args.only:  # the quick run: the fast workloads only
        chosen = [n for n in chosen if n not in ("concurrency", "peers", "postgres")]
    with tempfile.TemporaryDirectory(prefix="jobtrack-bench-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        for name in chosen:
            part_started = time.perf_counter()
            if name in WORKLOADS:
                WORKLOADS[name](Path(tmp))
            else:
                _run_script(name, rows_file)
            print(f"  ({name}: {time.perf_counter() - part_started:.1f} s)", flush=True)
        script_rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    rows = ROWS + script_rows
    elapsed = time.perf_counter() - started
    missed = [r for r in rows if r["status"] == "MISSED"]
    print(f"done in {elapsed:.0f} s; {len(rows)} figures; targets missed: {len(missed)}", flush=True)
    for r in missed:
        print(f"  MISSED  [{r['workload']}] {r['figure']}: {r['value']} (target {r['target']})")
    if args.results:
        write_results(args.results, "python benchmarks/run.py " + " ".join(argv or sys.argv[1:]), elapsed, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
