"""Whole-process `jobtrack status JOB_ID` against a raw sqlite3 + json script printing the same status (#14).

Three commands, run in alternating rounds, on disk and on tmpfs: ``jobtrack status ID`` (the console
script), a raw script (``python -c``: import sqlite3 and json, read the job's status columns, print
the same JSON; its output is checked to be identical), and ``python -c pass`` (the interpreter alone).
Target: `jobtrack status` <= 2x the raw script. Medians.

A finished job's status is read by ``jobtrack.store.peek`` (sqlite3 alone, no Store). A fourth command,
``jobtrack status`` of a RUNNING job (its runner alive: a thread of this process, in a database of its
own, so the finished job's file stays closed), takes the full path (Store, liveness check) and is shown
for information, against the same raw script, without a target.

Every command runs with a bytecode cache, as an installed package has one (pip compiles it):
``PYTHONDONTWRITEBYTECODE`` is dropped and ``PYTHONPYCACHEPREFIX`` points into the temporary directory,
filled by the warm-up runs, so the checkout is not written. Without it every jobtrack module is
compiled on every start; that figure (``jobtrack status``, no bytecode cache) is shown too, labelled.

Run: ``python benchmarks/bench_cli.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import threading  # noqa: E402

from common import fifty_epoch_job, locations, ratio_row, report  # noqa: E402
from jobtrack import Dataset, Trainer, runtime  # noqa: E402

_release = threading.Event()


def _held_job(ctx: object) -> None:
    """Report 50 epochs, then stay RUNNING until the measurement ends (the runner, this process, is alive)."""
    fifty_epoch_job(ctx)
    _release.wait(timeout=600)

RAW = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
r = conn.execute("SELECT id, status, created_at, finished_at, updated_at, experiment_name, job_type, model_run_id, "
                 "result_json, export_paths_json, source_views_json FROM jobs WHERE id = ?", (sys.argv[2],)).fetchone()
print(json.dumps({"job_id": r[0], "status": r[1], "started_at": r[2], "finished_at": r[3], "updated_at": r[4],
                  "experiment_name": r[5], "job_type": r[6], "model_run_id": r[7], "result": json.loads(r[8]),
                  "export_paths": json.loads(r[9]), "source_views": json.loads(r[10])}, indent=2))
"""


def _time(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def measure(where: str, tmp: Path, rounds: int) -> None:
    db = str(tmp / "cli.db")
    dataset = Dataset("bench", "binary_classification", "cli", tables={"train": [{"x": 1}]})
    job = Trainer(fifty_epoch_job, db=db, runner="eager").fit(dataset)
    runtime.close_all()
    _release.clear()
    running_db = str(tmp / "cli-running.db")
    running = Trainer(_held_job, db=running_db, runner="thread").fit(dataset)
    try:
        _measure(where, tmp, rounds, db, job.job_id, running_db, running.job_id)
    finally:
        _release.set()
        running.wait(timeout=60)
        runtime.close_all()


def _measure(where: str, tmp: Path, rounds: int, db: str, job_id: str, running_db: str, running_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(JOBTRACK_DB=db, PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    no_bytecode = {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp / "empty-pycache")}
    script = os.path.join(os.path.dirname(sys.executable), "jobtrack")
    commands = {
        "jobtrack": [script, "status", job_id],
        "raw": [sys.executable, "-c", RAW, db, job_id],
        "pass": [sys.executable, "-c", "pass"],
        "running": [script, "status", running_id, "--db", running_db],
    }
    ours = subprocess.run(commands["jobtrack"], capture_output=True, text=True, env=env, check=True).stdout
    theirs = subprocess.run(commands["raw"], capture_output=True, text=True, env=env, check=True).stdout
    assert ours == theirs, "the raw script prints something else than `jobtrack status`"
    seen = subprocess.run(commands["running"], capture_output=True, text=True, env=env, check=True).stdout
    assert '"status": "RUNNING"' in seen, "the running job is not RUNNING"
    for _ in range(2):  # warm the page cache, and write the bytecode cache
        for cmd in commands.values():
            _time(cmd, env)
    times: dict[str, list[float]] = {k: [] for k in [*commands, "uncompiled"]}
    for _ in range(rounds):
        for name, cmd in commands.items():
            times[name].append(_time(cmd, env))
        times["uncompiled"].append(_time(commands["jobtrack"], no_bytecode))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    w = f"cli ({where})"
    ratio_row(w, "`jobtrack status ID`, whole process (ms)", med["jobtrack"], med["raw"],
              "`python -c` script: import sqlite3 and json, read the same row, print the same JSON (checked "
              "identical)", target=2.0, unit="ms")
    ratio_row(w, "`jobtrack status ID` vs `python -c pass` (ms)", med["jobtrack"], med["pass"],
              "the interpreter starting and exiting, nothing imported", target=None, unit="ms")
    report(w, "interpreter alone / raw script / jobtrack status (finished) / (running)",
           f"{med['pass']:.0f} / {med['raw']:.0f} / {med['jobtrack']:.0f} / {med['running']:.0f} ms")
    ratio_row(w, "`jobtrack status ID` of a RUNNING job, full path (ms)", med["running"], med["raw"],
              "the same raw script (of the finished job); informational: a RUNNING job is read through the Store, "
              "with its 50 epochs and a liveness check", target=None, unit="ms")
    ratio_row(w, "`jobtrack status ID` without a bytecode cache (ms)", med["uncompiled"], med["raw"],
              "the same raw script; jobtrack run with PYTHONDONTWRITEBYTECODE=1 and an empty cache, so every "
              "jobtrack module is compiled at each start (not what an installed package does)", target=None,
              unit="ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with locations() as places:
        for where, tmp in places:
            measure(where, tmp, 5 if args.quick else 25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
