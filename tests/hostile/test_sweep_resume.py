"""Sweeps under kill -9 and many processes (#17): resume after the driving process dies, and eight processes
driving one sweep at once. Every grid point ends done exactly once; dead runners' trials are replaced."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from jobtrack import Dataset, JobManager, JobStatus, Trainer, demo
from proc import run_python, spawn, wait_until

LRS = [0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 1.0, 1.5]
L2S = [0.0, 0.001, 0.01, 0.1, 0.3]
SPACE = {"lr": LRS, "l2": L2S}  # 40 grid points

DRIVER = """
import sys
from jobtrack import Dataset, Trainer, demo
db, data, name = sys.argv[1:4]
tables = {s: f"{data}/{s}.csv" for s in ("train", "validation", "test")}
trainer = Trainer(demo.train, db=db, runner=sys.argv[4], config={"epochs": 3, "epoch_pause_s": float(sys.argv[5])},
                  provenance=False)
sweep = trainer.sweep(Dataset("churn", "binary_classification", "m1", tables=tables),
                      {"lr": %r, "l2": %r}, sampler="grid", parallel=int(sys.argv[6]), name=name)
print("started", flush=True)
sweep.wait(timeout=300)
""" % (LRS, L2S)


def _counts(db: str, name: str) -> dict[str, int]:
    try:
        return dict(JobManager(db).fetch_sweep(name).get_status()["counts"])
    except Exception:  # noqa: BLE001 - not created yet
        return {}


def _halfway_and_running(db: str, name: str) -> bool:
    """Half the sweep done and a trial running now: the kill then has a trial to lose (between two trials it has
    none, and on a loaded machine the driver can be caught there)."""
    counts = _counts(db, name)
    return counts.get("COMPLETED", 0) >= 20 and counts.get("RUNNING", 0) >= 1


def _check_each_point_once(sweep: object) -> None:
    trials = sweep.trials()  # type: ignore[attr-defined]
    kept = Counter((t.config["lr"], t.config["l2"]) for t in trials if not t.void)
    assert len(kept) == 40 and set(kept.values()) == {1}, kept
    assert all(t.status is JobStatus.COMPLETED for t in trials if not t.void)


def test_kill_9_halfway_then_the_same_name_finishes_exactly_40(tmp_path: Path) -> None:
    db, data = str(tmp_path / "s.db"), tmp_path / "data"
    demo.write_csv_tables(data, n=60)
    with spawn(DRIVER, db, str(data), "resume40", "thread", "0.03", "2") as child:
        wait_until(lambda: _halfway_and_running(db, "resume40"), timeout=120, message="half of the sweep done")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    tables = {s: str(data / f"{s}.csv") for s in ("train", "validation", "test")}
    trainer = Trainer(demo.train, db=db, runner="thread", config={"epochs": 3, "epoch_pause_s": 0.03},
                      provenance=False)
    sweep = trainer.sweep(Dataset("churn", "binary_classification", "m1", tables=tables), SPACE, sampler="grid",
                          parallel=2, name="resume40")
    status = sweep.wait(timeout=180)
    assert status["done"] == 40 and status["counts"]["COMPLETED"] == 40
    lost = [t for t in sweep.trials() if t.void]
    assert lost and status["replaced"] == len(lost) == status["counts"]["FAILED"]
    assert all(t.reason and t.reason.startswith(("runner lost", "submitter lost")) for t in lost)
    assert len({t.trial for t in sweep.trials()}) == len(sweep.trials())  # trial numbers are never reused
    assert all(t.trial >= 40 for t in sweep.trials() if not t.void and t.trial % 40 in {x.trial % 40 for x in lost})
    _check_each_point_once(sweep)
    again = trainer.sweep(Dataset("churn", "binary_classification", "m1", tables=tables), SPACE, sampler="grid",
                          name="resume40")
    assert len(again.trials()) == len(sweep.trials())  # a finished sweep adds nothing


def test_eight_processes_driving_one_sweep_run_every_point_exactly_once(tmp_path: Path) -> None:
    db, data = str(tmp_path / "s.db"), tmp_path / "data"
    demo.write_csv_tables(data, n=30)
    code = DRIVER.replace('print("started", flush=True)\n', "")
    children = [spawn(code, db, str(data), "eight", "eager", "0", "1") for _ in range(8)]
    procs = [c.__enter__() for c in children]
    try:
        for p in procs:
            assert p.wait(timeout=240) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for c in children:
            c.__exit__(None, None, None)
    sweep = JobManager(db).fetch_sweep("eight")
    assert sweep.get_status()["done"] == 40 and len(sweep.trials()) == 40
    _check_each_point_once(sweep)
    run_python("import sys\nfrom jobtrack import JobManager\n"
               "assert JobManager(sys.argv[1]).fetch_sweep('eight').get_status()['done'] == 40\n", db)
