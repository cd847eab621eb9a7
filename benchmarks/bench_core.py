"""Status reads, lifecycles, per-epoch writes and memory, each against a floor doing the same work (#14).

Every workload runs twice: database on disk and on tmpfs (``/dev/shm``, where fsync is nearly free
and Python overhead shows). Floors (``common.RawJobs``) write the same rows into a jobtrack schema
with raw sqlite3, with the same transactions, fsync rule, JSON library and lock, and are measured
in alternating rounds with jobtrack.

Run: ``python benchmarks/bench_core.py [--quick] [--only status,running,lifecycle,epochs,memory]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from common import (  # noqa: E402
    EPOCHS,
    RawJobs,
    epoch_metrics,
    fifty_epoch_job,
    interleaved,
    jobtrack_json,
    jobtrack_schema,
    json_libraries,
    locations,
    paired_ratio,
    ratio_row,
    raw_connect,
    report,
    round_times,
    summary,
)
from jobtrack import Dataset, JobManager, Trainer, runtime  # noqa: E402
from jobtrack.store.records import SELECT_JOB, STATUS_COLUMNS  # noqa: E402

QUICK = False
DS = Dataset("bench", "binary_classification", "jobs", tables={"train": [{"x": 1}]})


def _status_floor(conn: Any, job_id: str, loads: Any) -> Any:
    """What a status read of a finished job must do: read the status columns, decode its JSON, build the dict."""
    sql = f"SELECT {', '.join(STATUS_COLUMNS)} FROM jobs WHERE id = ?"

    def read() -> dict[str, Any]:
        r = conn.execute(sql, (job_id,)).fetchone()
        return {"job_id": r[0], "status": r[1], "started_at": r[2], "finished_at": r[3], "updated_at": r[4],
                "experiment_name": r[5], "job_type": r[6], "model_run_id": r[7], "result": loads(r[8]),
                "export_paths": {} if r[9] == "{}" else loads(r[9]),
                "source_views": {} if r[10] == "{}" else loads(r[10])}

    return read


# -- COMPLETED status ---------------------------------------------------------------------------------------


def bench_status(where: str, tmp: Path) -> None:
    db = str(tmp / "status.db")
    job = Trainer(fifty_epoch_job, db=db, runner="eager").fit(DS)
    size = len(json.dumps(job.get_status()["result"]))
    conn = raw_connect(db)
    for lib, (_, loads) in json_libraries().items():
        floor = _status_floor(conn, job.job_id, loads)
        assert floor() == job.get_status()

        def ours(lib: str = lib) -> None:
            with jobtrack_json(lib):
                job.get_status()

        def floor_same_call(lib: str = lib, floor: Any = floor) -> None:
            with jobtrack_json(lib):  # the same context switch, so only the read itself differs
                floor()

        s = interleaved({"jt": ours, "floor": floor_same_call}, calls=1000 if QUICK else 10000)
        jt, fl = summary(s["jt"])["median_us"], summary(s["floor"])["median_us"]
        ratio_row(f"status ({where})", f"COMPLETED get_status(), {size} B result, {lib}", jt, fl,
                  f"raw sqlite3 select of the same 11 status columns by id on a kept connection, {lib} decode of "
                  "the result (and paths/views unless '{}'), the same dict", target=1.1)


# -- RUNNING status -----------------------------------------------------------------------------------------

_RUNNING_CHILD = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from common import EPOCHS, epoch_metrics
from jobtrack import Dataset, Trainer
hold = sys.argv[3]
def held(ctx):
    for e in range(EPOCHS):
        t, v = epoch_metrics(e)
        ctx.log_epoch(e, train=t, validation=v)
    while not os.path.exists(hold):
        time.sleep(0.01)
job = Trainer(held, db=sys.argv[1]).fit(Dataset("bench", "binary_classification", "run", tables={"train": [{"x": 1}]}))
print(job.job_id, flush=True)
job.wait()
"""


def _running_floor(conn: Any, job_id: str, loads: Any) -> Any:
    """The same reads as a RUNNING status: the job row, its 50 epoch rows (decoded), one /proc probe."""
    row_sql = SELECT_JOB + " WHERE id = ?"
    ep_sql = "SELECT epoch, train_json, validation_json FROM job_epochs WHERE job_id = ? ORDER BY seq"

    def read() -> dict[str, Any]:
        r = conn.execute(row_sql, (job_id,)).fetchone()
        pid = int(r[15].split("|")[1])  # runner: host|pid|start
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        assert data[data.rfind(b")") + 2:].split()[19]
        epochs = [{"epoch": e, "train": loads(t), "validation": loads(v)}
                  for e, t, v in conn.execute(ep_sql, (job_id,))]
        best = max(range(len(epochs)), key=lambda i: epochs[i]["validation"]["roc_auc"])
        result = {"epochs": epochs, "eval_metric": r[10], "best_epoch": epochs[best]["epoch"],
                  "best_metric": epochs[best]["validation"]["roc_auc"]}
        return {"job_id": r[0], "status": r[2], "started_at": r[6], "finished_at": r[8], "updated_at": r[7],
                "experiment_name": r[3], "job_type": r[1], "model_run_id": r[4], "result": result,
                "export_paths": {} if r[21] == "{}" else loads(r[21]),
                "source_views": {} if r[22] == "{}" else loads(r[22])}

    return read


def bench_running(where: str, tmp: Path) -> None:
    db = str(tmp / "running.db")
    hold = tmp / "hold"
    jobtrack_schema(db)
    child = subprocess.Popen([sys.executable, "-c", _RUNNING_CHILD, db, str(HERE), str(hold)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        job = JobManager(db).fetch_job(child.stdout.readline().strip())
        deadline = time.monotonic() + 60
        while len(job.get_status()["result"].get("epochs", [])) < EPOCHS:
            assert time.monotonic() < deadline, "the running job did not report its epochs"
            time.sleep(0.01)
        # the single-document floor: a COMPLETED job with the same 50 epochs, read as one row
        done = Trainer(fifty_epoch_job, db=str(tmp / "doc.db"), runner="eager").fit(DS)
        doc_conn = raw_connect(str(tmp / "doc.db"))
        conn = raw_connect(db)
        fresh_manager = JobManager(db)
        for lib, (_, loads) in json_libraries().items():
            floor = _running_floor(conn, job.job_id, loads)
            doc = _status_floor(doc_conn, done.job_id, loads)
            assert floor() == job.get_status(), "the floor reads something else than jobtrack"

            def ours(lib: str = lib) -> None:
                with jobtrack_json(lib):
                    job.get_status()

            def fresh(lib: str = lib) -> None:  # a new monitor each time: no epochs cached
                with jobtrack_json(lib):
                    fresh_manager.fetch_job(job.job_id).get_status()

            def wrap(fn: Any, lib: str = lib) -> Any:
                def call() -> None:
                    with jobtrack_json(lib):
                        fn()
                return call

            s = interleaved({"jt": ours, "fresh": fresh, "floor": wrap(floor), "doc": wrap(doc)},
                            calls=500 if QUICK else 5000, batch=25)
            jt, fr, fl, dc = (summary(s[k])["median_us"] for k in ("jt", "fresh", "floor", "doc"))
            ratio_row(f"running ({where})", f"RUNNING get_status(), 50 epochs, runner alive, {lib}", jt, fl,
                      f"raw sqlite3: the job row by id, its 50 epoch rows decoded with {lib}, one /proc/PID/stat "
                      "read for the runner, the same dict", target=1.5)
            ratio_row(f"running ({where})", f"RUNNING get_status() vs the single-document floor, {lib}", jt, dc,
                      f"raw sqlite3 select of one finished job's status columns holding the same 50 epochs as "
                      f"one JSON result, {lib} decode", target=2.0)
            ratio_row(f"running ({where})", f"RUNNING fetch_job(id).get_status() (nothing cached), {lib}", fr, fl,
                      "the same-reads floor above", target=None)
    finally:
        hold.touch()
        child.wait(timeout=60)


# -- lifecycles ---------------------------------------------------------------------------------------------


def _writes_metrics(tmp: Path) -> bool:
    """Whether jobtrack's add_epoch writes job_metrics rows (then the floor must write them too)."""
    db = str(tmp / "probe.db")
    Trainer(fifty_epoch_job, db=db, runner="eager").fit(DS)
    runtime.close_all()
    conn = raw_connect(db)
    try:
        return bool(conn.execute("SELECT count(*) FROM job_metrics").fetchone()[0])
    finally:
        conn.close()


def bench_lifecycle(where: str, tmp: Path, metrics: bool) -> None:
    n = 18 if QUICK else 99  # quick: still 9 alternating rounds (of 2 jobs); else 9 rounds of 11
    # provenance=False: the floor captures no provenance, so the target rows compare the same work; the default
    # Trainer (provenance on) is shown beside them, against the same floors, with what it adds
    trainers = {"eager": Trainer(fifty_epoch_job, db=str(tmp / "eager.db"), runner="eager", provenance=False),
                "thread": Trainer(fifty_epoch_job, db=str(tmp / "thread.db"), provenance=False),
                "eager_prov": Trainer(fifty_epoch_job, db=str(tmp / "eager-prov.db"), runner="eager"),
                "thread_prov": Trainer(fifty_epoch_job, db=str(tmp / "thread-prov.db"))}
    floor = RawJobs(str(tmp / "floor.db"), metrics=metrics)
    floor_fl = RawJobs(str(tmp / "floor-fl.db"), lock="filelock", metrics=metrics)

    def jt(trainer: Trainer, is_eager: bool) -> Any:
        def run(k: int) -> None:
            jobs = [trainer.fit(DS) for _ in range(k)]  # an eager fit() returns with the job ended: no wait(),
            if not is_eager:  # whose status read the eager floor does not do either
                for j in jobs:
                    j.wait()  # a thread job: wakes when its thread ends (runtime.local_jobs), not at a poll
        return run

    def raw(f: RawJobs, is_eager: bool) -> Any:
        def run(k: int) -> None:
            for _ in range(k):
                job_id = f.lifecycle(eager=is_eager)
                if not is_eager:  # jobtrack's thread side calls wait(), which reads the ended job's status
                    f.status(job_id)
        return run

    fns = {name: jt(t, name.startswith("eager")) for name, t in trainers.items()}
    fns.update({"floor_eager": raw(floor, True), "floor_thread": raw(floor, False), "fl_eager": raw(floor_fl, True),
                "fl_thread": raw(floor_fl, False)})
    # many short rounds, and each round's jobtrack time paired with the floor's of the same round: on this shared
    # machine the lifecycle ratios of whole runs moved by 0.2 or more from one run to the next
    times = round_times(fns, n=n, count=n // 3)
    rate = {k: 1 / statistics.median(v) for k, v in times.items()}
    paired = {k: paired_ratio(times[k], times[f"floor_{k.split('_')[0]}"]) for k in trainers}
    paired_fl = {k: paired_ratio(times[k], times[f"fl_{k}"]) for k in ("eager", "thread")}
    target = 0.9 if where == "disk" else 0.8
    rows_words = ("the same rows (job, model run, 3 events, 50 epoch rows, the job row renewed per epoch"
                  + (", job_metrics upserts and best_metric" if metrics else "") + ", the frozen result), the "
                  "current time taken per transaction, the same log line per epoch appended to the job's log")
    floors = {"eager": f"raw sqlite3, {rows_words}: create+claim in one transaction without fsync, 50 durable "
                       "epoch transactions, a durable finish; flock on a kept descriptor",
              "thread": f"raw sqlite3, {rows_words}: durable create, claim without fsync, 50 durable epoch "
                        "transactions, a durable finish, then the ended job's status read and decoded (what wait() "
                        "returns); flock on a kept descriptor"}
    label = {"eager": "eager job", "thread": "thread runner job"}
    for kind in ("eager", "thread"):
        ratio_row(f"lifecycle ({where})", f"{label[kind]}, 50 log_epoch, provenance=False (jobs/s)", rate[kind],
                  rate[f"floor_{kind}"], floors[kind], target=target, higher_is_better=True, unit="jobs/s",
                  ratio=paired[kind])
    for kind in ("eager", "thread"):
        ratio_row(f"lifecycle ({where})", f"{label[kind]}, default Trainer (provenance on) (jobs/s)",
                  rate[f"{kind}_prov"], rate[f"floor_{kind}"], f"the {kind} floor above; jobtrack also records the "
                  "job's provenance (git commit and diff, packages, host), which the floor does not", target=None,
                  higher_is_better=True, unit="jobs/s", ratio=paired[f"{kind}_prov"])
    for kind in ("eager", "thread"):
        ratio_row(f"lifecycle ({where})", f"{label[kind]} vs the filelock.FileLock floor", rate[kind],
                  rate[f"fl_{kind}"], f"the {kind} floor above with a filelock.FileLock per transaction",
                  target=None, higher_is_better=True, unit="jobs/s", ratio=paired_fl[kind])


# -- per-epoch writes ---------------------------------------------------------------------------------------


def bench_epochs(where: str, tmp: Path, metrics: bool) -> None:
    n = 500 if QUICK else 10000  # quick: still 10 alternating rounds (of 50 epochs)
    floor = RawJobs(str(tmp / "epochs-floor.db"), metrics=metrics)
    floor_id = floor.submit(claim=True)
    times: dict[str, list[float]] = {"jt": [], "floor": []}
    count = 10
    per_round = n // count

    def train(ctx: Any) -> None:
        e = 0
        fe = 0
        for _ in range(count):
            started = time.perf_counter()
            for _ in range(per_round):
                t, v = epoch_metrics(e)
                ctx.log_epoch(e, train=t, validation=v)
                e += 1
            times["jt"].append((time.perf_counter() - started) / per_round)
            started = time.perf_counter()
            for _ in range(per_round):
                t, v = epoch_metrics(fe)
                floor.epoch(floor_id, fe, t, v)
                fe += 1
            times["floor"].append((time.perf_counter() - started) / per_round)

    Trainer(train, db=str(tmp / "epochs.db"), runner="eager").fit(DS)
    jt, fl = (sorted(v)[len(v) // 2] * 1e6 for v in (times["jt"], times["floor"]))
    ratio_row(f"epochs ({where})", f"{n} log_epoch in one job (us/epoch)", jt, fl,
              "raw sqlite3 per epoch, one durable transaction under flock on a kept descriptor: the job row's "
              "lease renewed from the current time and epoch counted (UPDATE ... RETURNING), the epoch row inserted "
              "(an UPDATE first only for a number not above the highest so far) with orjson-encoded metrics"
              + (", job_metrics upserts and best_metric update (the same statements jobtrack runs)" if metrics
                 else "") + "; then the same epoch line appended to the job's log on a kept descriptor; "
              "10 alternating rounds",
              target=1.3 if where == "disk" else 1.5)


# -- memory -------------------------------------------------------------------------------------------------

_MEMORY_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[3])
from common import memory_kib, tiny_job
from jobtrack import Dataset, Trainer
db, marks = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
trainer = Trainer(tiny_job, db=db)  # the default thread runner
ds = Dataset("bench", "regression", "memory", tables={"train": [{"x": 1}]})
done, out = 0, {}
for mark in marks:
    while done < mark:  # waves of at most 100: the runner's queue never holds thousands at once
        wave = [trainer.fit(ds) for _ in range(min(100, mark - done))]
        wave[-1].wait()
        for j in wave:
            j.wait()
        done += len(wave)
    out[mark] = memory_kib()
print(json.dumps(out))
"""


def bench_memory(where: str, tmp: Path) -> None:
    marks = [1, 200, 600] if QUICK else [1, 1000, 10000]
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp / "mem.db"), ",".join(map(str, marks)),
                           str(HERE)], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    one, k, many = (out[str(m)] for m in marks)
    growth = (many["VmRSS"] - k["VmRSS"]) / 1024
    report(f"memory ({where})", "VmRSS / VmHWM after 1 job, read in the process running them",
           f"{one['VmRSS'] / 1024:.1f} / {one['VmHWM'] / 1024:.1f} MiB")
    report(f"memory ({where})", f"VmRSS / VmHWM after {marks[1]} / {marks[2]} jobs",
           f"{k['VmRSS'] / 1024:.1f} / {many['VmRSS'] / 1024:.1f}; peak {many['VmHWM'] / 1024:.1f} MiB")
    report(f"memory ({where})", f"RSS growth {marks[1]} -> {marks[2]} jobs", f"{growth:.2f} MB", "<= 2 MB",
           growth <= 2.0, "none: the process's own /proc/self/status, thread runner, waves of 100")


WORKLOADS = ("status", "running", "lifecycle", "epochs", "memory")


def main(argv: list[str] | None = None) -> int:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    QUICK = args.quick
    only = args.only.split(",")
    with locations() as places:
        for where, tmp in places:
            print(f"core workloads, database on {where} ({tmp})", flush=True)
            metrics = _writes_metrics(tmp)
            for name in WORKLOADS:
                if name not in only:
                    continue
                sub = tmp / name
                sub.mkdir()
                if name in ("lifecycle", "epochs"):
                    globals()[f"bench_{name}"](where, sub, metrics)
                else:
                    globals()[f"bench_{name}"](where, sub)
                runtime.close_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
