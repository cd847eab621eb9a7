"""Sweeps (#17): no-op trials per second, against Optuna with its SQLite storage, and 8 processes on one sweep.

- Throughput: a random-sampler sweep of N no-op trials (``lr`` log-uniform, ``depth`` a choice) through the
  eager runner and through the thread runner (``parallel=1``): each trial is a full job (created with its
  config parameters and tag, claimed, finished, three events). Target >= 500 trials/s.
- Floor, measured in alternating rounds in the same run: Optuna's ``study.optimize`` with a ``RandomSampler``
  and ``storage="sqlite:///..."`` (its RDB storage), the same N trials suggesting the same two parameters and
  returning a constant. Target: jobtrack >= 3x Optuna. Each round uses fresh database files for both.
- jobtrack's own floor: the same N no-op jobs submitted with ``fit()`` (eager runner) in the same rounds, so
  the cost of the sweep itself (claiming trial numbers, sampling) shows as a ratio.
- Many processes: 8 processes drive one sweep of M no-op trials on one file (eager runner, each until the sweep
  is full). Target: 0 errors, every trial number and every trial exactly once, exactly M trials.

Run: ``python benchmarks/bench_sweep.py [--trials 400] [--rounds 5] [--procs 8] [--many 800]`` (needs the
``bench`` extra for Optuna); prints the table rows for RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobtrack
from jobtrack import Dataset, JobManager, Trainer, runtime

SPACE = {"lr": jobtrack.loguniform(1e-4, 1e-1), "depth": [2, 4, 8]}


def noop(ctx: Any) -> None:
    """A trial that does nothing."""


def _dataset() -> Dataset:
    return Dataset("bench", "binary_classification", "sweep", tables={"train": [{"x": 1, "label": 0}]})


def jobtrack_round(folder: Path, n: int, runner: str, tag: str) -> float:
    db = str(folder / f"jt-{tag}-{time.monotonic_ns()}.db")
    trainer = Trainer(noop, db=db, runner=runner, provenance=False)
    started = time.perf_counter()
    sweep = trainer.sweep(_dataset(), SPACE, n_trials=n, seed=1, name="bench")
    status = sweep.wait(timeout=600)
    elapsed = time.perf_counter() - started
    assert status["done"] == n and status["counts"]["COMPLETED"] == n, status
    runtime.close_all()
    return n / elapsed


def fit_round(folder: Path, n: int) -> float:
    """jobtrack's own floor: the same number of no-op jobs with ``fit()`` (eager), no sweep around them."""
    trainer = Trainer(noop, db=str(folder / f"fit-{time.monotonic_ns()}.db"), runner="eager", provenance=False)
    dataset = _dataset()
    started = time.perf_counter()
    for _ in range(n):
        trainer.fit(dataset)
    elapsed = time.perf_counter() - started
    runtime.close_all()
    return n / elapsed


def optuna_round(folder: Path, n: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{folder / f'optuna-{time.monotonic_ns()}.db'}"

    def objective(trial: Any) -> float:
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("depth", [2, 4, 8])
        return 0.5

    started = time.perf_counter()
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    study.optimize(objective, n_trials=n)
    elapsed = time.perf_counter() - started
    assert len(study.trials) == n
    return n / elapsed


CHILD = """
import sys
sys.path.insert(0, sys.argv[3])
from bench_sweep import SPACE, _dataset, noop
from jobtrack import Trainer
trainer = Trainer(noop, db=sys.argv[1], runner="eager", provenance=False)
trainer.sweep(_dataset(), SPACE, n_trials=int(sys.argv[2]), seed=1, name="many")
"""


def many_processes(folder: Path, procs: int, m: int) -> dict[str, Any]:
    db = str(folder / "many.db")
    Trainer(noop, db=db, runner="eager", provenance=False)  # create the file first: children race on rows only
    runtime.close_all()
    here = str(Path(__file__).resolve().parent)
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, db, str(m), here], stderr=subprocess.PIPE, text=True)
                for _ in range(procs)]
    errors = []
    for child in children:
        _, err = child.communicate(timeout=900)
        if child.returncode != 0 or "Error" in err or "locked" in err:
            errors.append(err.strip().splitlines()[-1:] or [f"exit {child.returncode}"])
    elapsed = time.perf_counter() - started
    sweep = JobManager(db).fetch_sweep("many")
    trials = sweep.trials()
    numbers = Counter(t.trial for t in trials)
    jobs = Counter(t.job_id for t in trials)
    return {"elapsed": elapsed, "errors": errors, "trials": len(trials), "status": sweep.get_status(),
            "twice": sum(1 for c in numbers.values() if c > 1) + sum(1 for c in jobs.values() if c > 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--many", type=int, default=800)
    parser.add_argument("--dir", default=None, help="folder of the database files (/dev/shm: tmpfs)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="jobtrack-bench-sweep-", dir=args.dir))
    samples: dict[str, list[float]] = {"eager": [], "thread": [], "fit": [], "optuna": []}
    for _ in range(args.rounds):  # alternating rounds: machine noise hits all three alike
        samples["eager"].append(jobtrack_round(folder, args.trials, "eager", "e"))
        samples["thread"].append(jobtrack_round(folder, args.trials, "thread", "t"))
        samples["fit"].append(fit_round(folder, args.trials))
        samples["optuna"].append(optuna_round(folder, args.trials))
    med = {k: statistics.median(v) for k, v in samples.items()}
    import optuna

    print(f"# {args.trials} no-op random-sampler trials per round, median of {args.rounds} alternating rounds; "
          f"optuna {optuna.__version__}, SQLite {__import__('sqlite3').sqlite_version}, files in {folder}")
    print("| workload | figure | value | target | status |")
    print("|---|---|---|---|---|")
    for runner in ("eager", "thread"):
        rate = med[runner]
        met = "met" if rate >= 500 else "MISSED"
        print(f"| sweeps | {runner} runner: no-op trials/s | {rate:.0f} | >= 500 | {met} |")
        ratio = rate / med["optuna"]
        print(f"| sweeps | {runner} runner vs Optuna RDB (SQLite) storage, same trials | {rate:.0f} vs "
              f"{med['optuna']:.0f} trials/s = {ratio:.2f}x | >= 3x | {'met' if ratio >= 3 else 'MISSED'} |")
    print(f"| sweeps | eager sweep vs the same no-op jobs by fit() (eager, no sweep) | {med['eager']:.0f} vs "
          f"{med['fit']:.0f} jobs/s = {med['eager'] / med['fit']:.2f}x |  |  |")
    many = many_processes(folder, args.procs, args.many)
    ok = not many["errors"] and many["twice"] == 0 and many["trials"] == args.many
    print(f"| sweeps | {args.procs} processes, one sweep of {args.many}: trials / errors / run twice | "
          f"{many['trials']} / {len(many['errors'])} / {many['twice']} | {args.many} / 0 / 0 | "
          f"{'met' if ok else 'MISSED'} |")
    print(f"| sweeps | {args.procs} processes: trials/s together | {args.many / many['elapsed']:.0f} |  |  |")
    for err in many["errors"][:5]:
        print("  error:", err)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("JOBTRACK_FILES", tempfile.mkdtemp(prefix="jobtrack-bench-files-"))
    sys.exit(main())
