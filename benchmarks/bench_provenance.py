"""What provenance costs a submission, and what ``compare`` of two jobs costs (#15).

Targets (issue #15): ``fit()`` stays well under 10 ms extra in a git checkout; ``compare`` of two jobs
<= 50 ms in-process.

- fit: the same ``Trainer.fit()`` (``runner="worker"``: it only writes the job, so nothing runs meanwhile)
  with ``provenance=True`` and ``provenance=False``, in alternating batches, in a clean and in a dirty
  checkout of 200 files edited a minute earlier; the extra is the difference of the medians. Repeated
  submissions from one unchanged checkout reuse git's answer (one read of an inotify queue on Linux's local
  file systems, else a stat per tracked file); the cost of asking git
  (a changed tree) is the "fresh" figure: one ``provenance.git_info`` after touching a file. The floor of
  the git part is one bare ``git status`` process, timed in the same run. The first collection in a
  process (reading all installed distributions' metadata once) is reported on its own.
- compare: ``JobManager.compare([a, b])`` of two finished 50-epoch jobs with 20 config keys and provenance,
  against a floor that reads the same rows with raw sqlite3 and decodes their JSON.

Run:  python benchmarks/bench_provenance.py [--quick]   (BENCH_PROVENANCE_CALLS: timed calls, default 200)
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import epoch_metrics, interleaved, report  # noqa: E402

CALLS = int(os.environ.get("BENCH_PROVENANCE_CALLS", "200"))
MODULE = '''
import json  # the code's own imports: their distributions are looked up once per process

def train(ctx):
    from common import epoch_metrics
    for epoch in range(50):
        train, validation = epoch_metrics(epoch)
        ctx.log_epoch(epoch, train=train, validation=validation)
'''


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@example.com"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def _repo(tmp: Path) -> Path:
    """A checkout of 200 small files and the training module (a small project)."""
    repo = tmp / "project"
    (repo / "src").mkdir(parents=True)
    for i in range(200):
        (repo / "src" / f"m{i}.py").write_text(f"X = {i}\n" * 20)
    (repo / "bench_train_module.py").write_text(MODULE)
    (repo / "data.csv").write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(1000)))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    _age(repo)
    return repo


def _age(repo: Path) -> None:
    """Date the project's files a minute back: code edited before the runs start, as in a real session (a file
    changed within seconds of a submission is re-checked by git at every submission, ``provenance.RACY_S``)."""
    past = time.time() - 60
    for path in repo.rglob("*"):
        if ".git" not in path.parts:
            os.utime(path, (past, past))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def bench_fit(tmp: Path) -> dict[str, float]:
    from jobtrack import Dataset, Trainer, provenance

    repo = _repo(tmp)
    sys.path.insert(0, str(repo))
    import bench_train_module

    db = str(tmp / "fit.db")
    dataset = Dataset("bench", "binary_classification", "prov", tables={"train": str(repo / "data.csv")})
    started = time.perf_counter()
    provenance.collect([bench_train_module.train], {"train": repo / "data.csv"}, tmp / "cold")
    cold_ms = (time.perf_counter() - started) * 1e3
    with_prov = Trainer(bench_train_module.train, db=db, runner="worker", provenance=True)
    without = Trainer(bench_train_module.train, db=db, runner="worker", provenance=False)
    out: dict[str, float] = {"first_collect_ms": cold_ms}
    for state in ("clean", "dirty"):
        if state == "dirty":
            with open(repo / "src" / "m1.py", "a") as fh:
                fh.write("Y = 1\n" * 50)
            _age(repo)
        ticks = iter(range(10**9))

        def fresh(ticks: Any = ticks) -> None:  # a changed checkout: git is asked again (status, diff if dirty)
            past = time.time() - 30 - next(ticks) % 1000 * 1e-3
            os.utime(repo / "src" / "m7.py", (past, past))
            provenance.git_info(repo, tmp / "fresh")

        samples = interleaved({"with": lambda: with_prov.fit(dataset), "without": lambda: without.fit(dataset),
                               "fresh": fresh,
                               "git status": lambda: subprocess.run(
                                   ["git", "-C", str(repo), "status", "--porcelain=v2", "--branch",
                                    "--untracked-files=no"], capture_output=True, check=True)},
                              calls=CALLS, batch=20)
        out[f"{state}_with_ms"] = _median_ms(samples["with"])
        out[f"{state}_without_ms"] = _median_ms(samples["without"])
        out[f"{state}_extra_ms"] = out[f"{state}_with_ms"] - out[f"{state}_without_ms"]
        out[f"{state}_git_status_ms"] = _median_ms(samples["git status"])
        out[f"{state}_fresh_ms"] = _median_ms(samples["fresh"])
    return out


def _two_jobs(tmp: Path) -> tuple[str, str, str]:
    from jobtrack import Dataset, Trainer

    db = str(tmp / "compare.db")
    data = tmp / "data.csv"
    data.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(1000)))

    def train(ctx: Any) -> None:
        for epoch in range(50):
            t, v = epoch_metrics(epoch)
            ctx.log_epoch(epoch, train=t, validation={k: x * ctx.config["scale"] for k, x in v.items()})

    ids = []
    for scale in (1.0, 0.9):
        config = {"scale": scale, "model": {f"k{i}": i for i in range(18)}, "opt": "adam"}
        job = Trainer(train, db=db, runner="eager", config=config, tags=["bench"]).fit(
            Dataset("bench", "binary_classification", "cmp", tables={"train": str(data)}))
        ids.append(job.job_id)
    return db, ids[0], ids[1]


def bench_compare(tmp: Path) -> dict[str, float]:
    from jobtrack import JobManager

    db, a, b = _two_jobs(tmp)
    manager = JobManager(db)
    conn = sqlite3.connect(db)

    def floor() -> None:  # the same rows, read and decoded without jobtrack
        for job_id in (a, b):
            row = conn.execute("SELECT spec_json, provenance_json, result_json FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
            [json.loads(x) for x in row]
            conn.execute("SELECT * FROM job_params WHERE job_id = ?", (job_id,)).fetchall()
            conn.execute("SELECT * FROM job_metrics WHERE job_id = ?", (job_id,)).fetchall()
            conn.execute("SELECT tag FROM job_tags WHERE job_id = ?", (job_id,)).fetchall()
            conn.execute("SELECT * FROM job_events WHERE job_id = ?", (job_id,)).fetchall()
            conn.execute("SELECT COUNT(*) FROM job_epochs WHERE job_id = ?", (job_id,)).fetchone()

    samples = interleaved({"compare": lambda: manager.compare([a, b]), "floor": floor}, calls=CALLS, batch=20)
    conn.close()
    out = {"compare_ms": _median_ms(samples["compare"]), "floor_ms": _median_ms(samples["floor"])}
    out["ratio"] = out["compare_ms"] / out["floor_ms"]
    return out


def main() -> dict[str, float]:
    global CALLS
    if "--quick" in sys.argv[1:]:
        CALLS = min(CALLS, 40)
    with tempfile.TemporaryDirectory() as tmp:
        fit = bench_fit(Path(tmp))
        cmp = bench_compare(Path(tmp))
    for state in ("clean", "dirty"):
        extra = fit[f"{state}_extra_ms"]
        report("provenance", f"fit() extra with provenance, {state} checkout (median, ms)",
               f"{fit[f'{state}_with_ms']:.2f} - {fit[f'{state}_without_ms']:.2f} = {extra:+.2f} ms", "< 10 ms",
               extra < 10, floor="the same fit(provenance=False), alternating batches")
        report("provenance", f"after a change, git asked again, {state} (median)", f"{fit[f'{state}_fresh_ms']:.2f} ms",
               floor=f"one bare git status: {fit[f'{state}_git_status_ms']:.2f} ms")
    report("provenance", "first collection in a process (all installed metadata read once)",
           f"{fit['first_collect_ms']:.1f} ms")
    report("compare", "JobManager.compare of two 50-epoch jobs (median)",
           f"{cmp['compare_ms']:.2f} ms = {cmp['ratio']:.2f}x floor", "<= 50 ms", cmp["compare_ms"] <= 50,
           floor=f"raw sqlite3 reads of the same rows + JSON decode: {cmp['floor_ms']:.2f} ms")
    return {**{f"fit_{k}": v for k, v in fit.items()}, **{f"compare_{k}": v for k, v in cmp.items()}}


if __name__ == "__main__":
    main()
