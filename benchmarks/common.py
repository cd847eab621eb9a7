"""Shared helpers for the benchmarks: timing, reporting, where files live, and the floors.

A floor does the same work as the measured side (SPEC §7): the same schema (a database created by
jobtrack, written with raw ``sqlite3``), the same JSON library, the same transactions and fsyncs,
the same lock (``flock`` on a descriptor kept open, as jobtrack does; ``filelock.FileLock`` as a
second, labelled floor) and the same rows. Measured side and floor run in alternating rounds.

Every script reports through ``report()``: it prints the row, and when ``run.py`` drives it
(``JOBTRACK_BENCH_ROWS`` names a file) appends the row there as one JSON line for RESULTS.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

EPOCHS = 50
ROWS_ENV = "JOBTRACK_BENCH_ROWS"
TMPFS = "/dev/shm"
LEASE = timedelta(seconds=60)


def stamps() -> tuple[str, str]:
    """A transaction's timestamp and lease expiry, as ISO text: what jobtrack computes per transaction."""
    now = datetime.now(UTC)
    return now.isoformat(timespec="microseconds"), (now + LEASE).isoformat(timespec="microseconds")


def _g(value: Any) -> str:
    return "null" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


# -- timing -----------------------------------------------------------------------------------------


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


def round_times(fns: dict[str, Callable[[int], Any]], *, n: int, count: int = 5) -> dict[str, list[float]]:
    """Seconds per call of each ``fn(k)`` (which does k calls) in each of ``count`` alternating rounds."""
    per: dict[str, list[float]] = {name: [] for name in fns}
    k = max(1, n // count)
    for _ in range(count):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn(k)
            per[name].append((time.perf_counter() - started) / k)
    return per


def rounds(fns: dict[str, Callable[[int], Any]], *, n: int, count: int = 5) -> dict[str, float]:
    """Median seconds per call of each ``fn(k)`` (which does k calls), over ``count`` alternating rounds."""
    return {name: statistics.median(v) for name, v in round_times(fns, n=n, count=count).items()}


def paired_ratio(ours: list[float], floor: list[float]) -> float:
    """The median over rounds of ``floor / ours`` (times of the same round): a rate ratio that a slow stretch
    of a shared machine, which hits both sides of a round alike, moves less than a ratio of two medians."""
    return statistics.median(f / o for o, f in zip(ours, floor, strict=True))


def summary(samples: list[float]) -> dict[str, float]:
    return {"median_us": statistics.median(samples) * 1e6, "p99_us": percentile(samples, 0.99) * 1e6}


# -- reporting --------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = []


def report(workload: str, figure: str, value: str, target: str = "", met: bool | None = None,
           floor: str = "") -> None:
    """Print one figure (with its floor in words, its target and met / MISSED) and record it for RESULTS.md."""
    status = "" if met is None else ("met" if met else "MISSED")
    row = {"workload": workload, "figure": figure, "value": value, "target": target, "status": status,
           "floor": floor}
    ROWS.append(row)
    extra = f"   target {target}: {status}" if target else ""
    print(f"  [{workload}] {figure:<62} {value:>24}{extra}", flush=True)
    path = os.environ.get(ROWS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def ratio_row(workload: str, figure: str, ours: float, floor_value: float, floor: str, *, target: float | None,
              higher_is_better: bool = False, unit: str = "us", ratio: float | None = None) -> None:
    """Report ``ours / floor`` (times) or ``floor / ours`` (rates), against ``target``, naming the floor.

    ``ratio``: the ratio itself when it is not that of the two values (a median of per-round ratios)."""
    ratio = ours / floor_value if ratio is None else ratio
    if higher_is_better:
        digits = 1 if min(ours, floor_value) < 100 else 0
        text = f"{ours:.{digits}f} vs {floor_value:.{digits}f} {unit} = {ratio:.2f}x"
        report(workload, figure, text, "" if target is None else f">= {target}x",
               None if target is None else ratio >= target, floor)
    else:
        text = f"{ours:.1f} vs {floor_value:.1f} {unit} = {ratio:.2f}x"
        report(workload, figure, text, "" if target is None else f"<= {target}x",
               None if target is None else ratio <= target, floor)


@contextlib.contextmanager
def locations(names: list[str] | None = None) -> Iterator[list[tuple[str, Path]]]:
    """Temporary directories on disk and on tmpfs (``/dev/shm``, where fsync is nearly free), removed after."""
    made: list[tuple[str, Path]] = []
    wanted = names or ["disk", "tmpfs"]
    try:
        for name in wanted:
            if name == "tmpfs" and not os.path.isdir(TMPFS):
                print(f"  (no {TMPFS}: tmpfs figures skipped)")
                continue
            base = TMPFS if name == "tmpfs" else None
            made.append((name, Path(tempfile.mkdtemp(prefix="jobtrack-bench-", dir=base))))
        yield made
    finally:
        for _, path in made:
            shutil.rmtree(path, ignore_errors=True)


# -- JSON pairs -------------------------------------------------------------------------------------


def json_libraries() -> dict[str, tuple[Callable[[Any], str], Callable[[str], Any]]]:
    """(dumps, loads) of the standard library and, when installed, orjson, as jobtrack uses each."""
    libs: dict[str, tuple[Callable[[Any], str], Callable[[str], Any]]] = {
        "stdlib": (lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False), json.loads),
    }
    try:
        import orjson
    except ImportError:
        return libs
    libs["orjson"] = (lambda v: orjson.dumps(v).decode(), orjson.loads)
    return libs


@contextlib.contextmanager
def jobtrack_json(lib: str) -> Iterator[None]:
    """Make jobtrack use the given JSON library ("stdlib" or "orjson") inside the block."""
    if lib == "stdlib":
        from jobtrack import jsonutil

        with jsonutil.standard_library_only():
            yield
    else:
        yield


# -- workload data ----------------------------------------------------------------------------------


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


def pg_engine(workload: str) -> tuple[str, Any] | None:
    """(URL, SQLAlchemy engine) of the benchmark's PostgreSQL server ($JOBTRACK_BENCH_PG_URL, else the local one),
    checked with one query; None, reported as a row of ``workload``, when there is no server to measure."""
    url = os.environ.get("JOBTRACK_BENCH_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - no server, no figures
        report(workload, "server", f"unavailable ({type(exc).__name__}); set JOBTRACK_BENCH_PG_URL")
        return None
    return url, engine


def raw_connect(path: str) -> sqlite3.Connection:
    """A raw sqlite3 connection with jobtrack's settings (WAL, synchronous=FULL, busy timeout, foreign keys)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def jobtrack_schema(path: str) -> None:
    """Create an empty jobtrack database at ``path``: the floors write the same tables and indexes."""
    from jobtrack import runtime
    from jobtrack.store import Store

    Store.open(path)
    runtime.close_all()


# -- the floors -------------------------------------------------------------------------------------


class KeptFlock:
    """``flock`` on a lock file kept open for the process's life: the OS lock jobtrack takes."""

    label = "flock on a kept descriptor"

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class FileLockLock:
    """A ``filelock.FileLock`` per transaction (opens and closes the lock file each time)."""

    label = "filelock.FileLock"

    def __init__(self, path: str) -> None:
        import filelock

        self.lock = filelock.FileLock(path)

    def acquire(self) -> None:
        self.lock.acquire()

    def release(self) -> None:
        self.lock.release()


LOCKS = {"flock": KeptFlock, "filelock": FileLockLock}


class RawJobs:
    """The floor: the same rows as jobtrack, written with raw sqlite3 into a jobtrack schema.

    Per transaction: lock, ``BEGIN IMMEDIATE``, statements, ``COMMIT``, unlock. ``durable=False``
    commits with ``synchronous=NORMAL`` (no fsync), jobtrack's rule for a claim and for an eager
    job's create+claim. ``metrics=True`` also does the per-epoch ``job_metrics`` upsert and
    ``jobs.best_metric`` update (when jobtrack's ``add_epoch`` writes them, the floor must too).
    Each transaction takes the current time (and a lease expiry where jobtrack renews one), and each
    epoch appends the same log line jobtrack writes to the job's log, on a descriptor kept per job.
    """

    def __init__(self, path: str, *, lock: str = "flock", json_lib: str = "orjson", metrics: bool = False) -> None:
        from jobtrack.store.records import JOB_COLUMNS

        jobtrack_schema(path)
        self.conn = raw_connect(path)
        self.lock = LOCKS[lock](path + ".floor-lock")
        self.dumps, self.loads = json_libraries()[json_lib]
        self.metrics = metrics
        self.columns = JOB_COLUMNS
        self.insert_job = (f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "
                           f"VALUES ({', '.join(':' + c for c in JOB_COLUMNS)})")
        self.n = 0
        self.top: dict[str, int] = {}  # the highest epoch number reported per job
        self.logs = Path(path + "-floor-logs")
        self.logs.mkdir(exist_ok=True)
        self.log_fds: dict[str, int] = {}  # per running job: its log, opened at its first line
        self.best: dict[str, tuple[Any, set[str]]] = {}  # per job: best roc_auc so far, metric names stored

    def tx(self, statements: Callable[[sqlite3.Connection], Any], *, durable: bool = True) -> Any:
        conn = self.conn
        self.lock.acquire()
        try:
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = statements(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if not durable:
                conn.execute("PRAGMA synchronous=FULL")
            return out
        finally:
            self.lock.release()

    def _event(self, conn: sqlite3.Connection, job_id: str, src: str | None, dst: str, reason: str,
               at: str) -> None:
        conn.execute("INSERT INTO job_events (job_id, from_status, to_status, at, reason) VALUES (?, ?, ?, ?, ?)",
                     (job_id, src, dst, at, reason))

    def _insert(self, conn: sqlite3.Connection, job_id: str, now: str) -> None:
        row = dict.fromkeys(self.columns)
        row.update(id=job_id, job_type="train", status="QUEUED", experiment_name="bench_binary_classification_jobs",
                   model_run_id="mr_" + job_id, created_at=now, updated_at=now, eval_metric="roc_auc",
                   metric_mode="max", spec_json="{}", runner_kind="thread", submitter="host|1|x", claim_token=0,
                   cancel_requested=False, export_paths_json="{}", source_views_json="{}", epoch_seq=0,
                   max_attempts=1, attempt=0)
        conn.execute(self.insert_job, row)
        conn.execute("INSERT INTO model_runs (id, job_id, experiment_name, task_type, created_at) "
                     "VALUES (?, ?, ?, ?, ?)", ("mr_" + job_id, job_id, row["experiment_name"], "binary", now))
        self._event(conn, job_id, None, "QUEUED", "submitted", now)

    def _claim(self, conn: sqlite3.Connection, job_id: str, now: str, lease: str) -> None:
        conn.execute("UPDATE jobs SET status = 'RUNNING', updated_at = ?, reason = 'claimed', claim_token = 1, "
                     "runner = 'host|1|x', heartbeat_at = ?, lease_expires_at = ? "
                     "WHERE id = ? AND status = 'QUEUED'", (now, now, lease, job_id))
        self._event(conn, job_id, "QUEUED", "RUNNING", "claimed", now)

    def submit(self, *, claim: bool) -> str:
        """Insert a job (durable), or insert and claim it in one transaction without fsync (eager)."""
        self.n += 1
        job_id = f"raw_{os.getpid()}_{self.n}"

        def statements(conn: sqlite3.Connection) -> None:
            now, lease = stamps()
            self._insert(conn, job_id, now)
            if claim:
                self._claim(conn, job_id, now, lease)

        self.tx(statements, durable=not claim)
        return job_id

    def claim(self, job_id: str) -> None:
        self.tx(lambda conn: self._claim(conn, job_id, *stamps()), durable=False)

    def epoch(self, job_id: str, epoch: int, train: dict[str, float], validation: dict[str, float]) -> None:
        """One log_epoch: renew the lease and count the epoch on the job row (RETURNING its count), insert the epoch,
        then append its line to the job's log."""
        train_json, val_json = self.dumps(train), self.dumps(validation)
        now, lease = stamps()

        def statements(conn: sqlite3.Connection) -> None:
            seq = conn.execute("UPDATE jobs SET updated_at = ?, heartbeat_at = ?, lease_expires_at = ?, "
                               "epoch_seq = epoch_seq + 1 WHERE id = ? AND status = 'RUNNING' AND claim_token = 1 "
                               "RETURNING epoch_seq, cancel_requested", (now, now, lease, job_id)).fetchall()[0][0]
            values = (train_json, val_json, now, job_id, epoch)  # a repeated epoch number replaces the stored one
            top = self.top.get(job_id)  # as jobtrack: look for a stored one only when the number is not new
            self.top[job_id] = epoch if top is None else max(top, epoch)
            if top is None or epoch > top or not conn.execute(
                    "UPDATE job_epochs SET train_json = ?, validation_json = ?, at = ? "
                    "WHERE job_id = ? AND epoch = ?", values).rowcount:
                conn.execute("INSERT INTO job_epochs (job_id, seq, epoch, train_json, validation_json, at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (job_id, seq, epoch, train_json, val_json, now))
            if self.metrics:  # jobtrack's job_metrics rows (#15), with the same statements as its add_epoch
                named = {f"train.{k}": v for k, v in train.items()}
                named.update((k, v) for k, v in train.items() if k not in validation)
                named.update(validation)
                best, names = self.best.get(job_id, (None, set()))
                value = validation["roc_auc"]  # eval_metric and mode known in the process, as jobtrack keeps them
                if best is None or value > best:  # this epoch is the best so far
                    if not names.issubset(named):  # names the best epoch lacks lose their best value
                        conn.execute("UPDATE job_metrics SET best_value = NULL WHERE job_id = ?", (job_id,))
                    conn.execute("UPDATE jobs SET best_metric = ? WHERE id = ?", (value, job_id))
                    conn.executemany("INSERT INTO job_metrics (job_id, name, best_value, last_value) "
                                     "VALUES (?, ?, ?, ?) ON CONFLICT (job_id, name) DO UPDATE SET "
                                     "best_value = excluded.best_value, last_value = excluded.last_value",
                                     [(job_id, n, float(x), float(x)) for n, x in named.items()])
                    best = value
                else:
                    conn.executemany("INSERT INTO job_metrics (job_id, name, best_value, last_value) "
                                     "VALUES (?, ?, NULL, ?) ON CONFLICT (job_id, name) DO UPDATE SET "
                                     "last_value = excluded.last_value",
                                     [(job_id, n, float(x)) for n, x in named.items()])
                self.best[job_id] = (best, names | set(named))

        self.tx(statements)
        self._log(job_id, f"epoch {epoch}: train " + ", ".join([f"{k}={_g(v)}" for k, v in train.items()])
                  + " | validation " + ", ".join([f"{k}={_g(v)}" for k, v in validation.items()]))

    def _log(self, job_id: str, line: str) -> None:
        fd = self.log_fds.get(job_id)
        if fd is None:
            fd = self.log_fds[job_id] = os.open(self.logs / f"{job_id}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                                0o600)
        os.write(fd, f"{datetime.now(UTC).isoformat(timespec='microseconds')} {line}\n".encode())

    def finish(self, job_id: str, summary: dict[str, Any] | None) -> None:
        """RUNNING -> COMPLETED: read the epochs, decode them, encode the frozen result, update, event."""
        now = stamps()[0]

        def statements(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT eval_metric, metric_mode, epoch_seq, cancel_requested FROM jobs WHERE id = ?",
                         (job_id,)).fetchone()
            loads = self.loads
            epochs = [{"epoch": e, "train": loads(t), "validation": loads(v)} for e, t, v in conn.execute(
                "SELECT epoch, train_json, validation_json FROM job_epochs WHERE job_id = ? ORDER BY seq",
                (job_id,))]
            best = max(range(len(epochs)), key=lambda i: epochs[i]["validation"]["roc_auc"]) if epochs else None
            result = {"epochs": epochs, "eval_metric": "roc_auc", "best_epoch": best,
                      "best_metric": None if best is None else epochs[best]["validation"]["roc_auc"],
                      "summary": summary, "error": None}
            conn.execute("UPDATE jobs SET status = 'COMPLETED', updated_at = ?, reason = 'completed', "
                         "finished_at = ?, lease_expires_at = NULL, result_json = ?, cancel_requested = 0 "
                         "WHERE id = ? AND status = 'RUNNING' AND claim_token = 1",
                         (now, now, self.dumps(result), job_id))
            self._event(conn, job_id, "RUNNING", "COMPLETED", "completed", now)

        self.tx(statements)
        fd = self.log_fds.pop(job_id, None)
        if fd is not None:
            os.close(fd)

    def status(self, job_id: str) -> dict[str, Any]:
        """A job's status as ``wait()`` returns it once the job ended: its status columns read, its JSON decoded."""
        from jobtrack.store.records import STATUS_COLUMNS

        r = self.conn.execute(f"SELECT {', '.join(STATUS_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        loads = self.loads
        return {"job_id": r[0], "status": r[1], "started_at": r[2], "finished_at": r[3], "updated_at": r[4],
                "experiment_name": r[5], "job_type": r[6], "model_run_id": r[7], "result": loads(r[8]),
                "export_paths": {} if r[9] == "{}" else loads(r[9]),
                "source_views": {} if r[10] == "{}" else loads(r[10])}

    def lifecycle(self, *, eager: bool, epochs: int = EPOCHS, summary: dict[str, Any] | None = None) -> str:
        """What one job costs jobtrack: eager (create+claim, epochs, finish) or thread (create, claim, ...)."""
        job_id = self.submit(claim=eager)
        if not eager:
            self.claim(job_id)
        for e in range(epochs):
            train, validation = epoch_metrics(e)
            self.epoch(job_id, e, train, validation)
        self.finish(job_id, summary)
        return job_id


def memory_kib() -> dict[str, int]:
    """This process's VmRSS and VmHWM (peak) from /proc/self/status, in KiB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


_FIFTY_EPOCH_RESULT = fifty_epoch_result()


def noop_job(ctx: Any) -> dict[str, Any]:
    """A job that does nothing and returns a 50-epoch result (importable for worker processes)."""
    return _FIFTY_EPOCH_RESULT


def fifty_epoch_job(ctx: Any) -> None:
    """A job that reports 50 epochs of the standard metrics."""
    for e in range(EPOCHS):
        train, validation = epoch_metrics(e)
        ctx.log_epoch(e, train=train, validation=validation)


def tiny_job(ctx: Any) -> dict[str, Any]:
    """A job that does nothing and returns a small summary."""
    return {"ok": True}


def quick_job(ctx: Any) -> None:
    """A job that returns at once (worker pickup)."""


def slow_job(ctx: Any) -> None:
    """A job that reports an epoch every 20 ms until it is stopped."""
    epoch = 0
    while True:
        epoch += 1
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
        time.sleep(0.02)
