"""Whole-process `jobtrack status JOB_ID` against a bare `python -c "import sqlmodel, filelock, dateutil"`.

Target (issue #5): the status command within 1.3x of the bare import, measured in the same run,
interleaved so that machine noise hits both alike. Prints medians and the ratio.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = int(os.environ.get("BENCH_CLI_ROUNDS", "25"))


def _time(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def main() -> dict[str, float]:
    from jobtrack import Dataset, Trainer, demo

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        trainer = Trainer(demo.train, db=db, runner="eager", config={"epochs": 50})
        rows = demo.make_rows(50, seed=1)
        job = trainer.fit(Dataset("bench", "binary_classification", "cli", tables={"train": rows}))
        env = {**os.environ, "JOBTRACK_DB": db}
        script = os.path.join(os.path.dirname(sys.executable), "jobtrack")
        status_cmd = [script, "status", job.job_id]
        bare_cmd = [sys.executable, "-c", "import sqlmodel, filelock, dateutil"]
        for cmd in (status_cmd, bare_cmd):  # warm the page cache
            _time(cmd, env)
        status_s, bare_s = [], []
        for _ in range(ROUNDS):
            status_s.append(_time(status_cmd, env))
            bare_s.append(_time(bare_cmd, env))
    result = {
        "status_median_s": statistics.median(status_s),
        "bare_import_median_s": statistics.median(bare_s),
    }
    result["ratio"] = result["status_median_s"] / result["bare_import_median_s"]
    print(f"cli: `jobtrack status` median {result['status_median_s'] * 1e3:.0f} ms, bare import "
          f"median {result['bare_import_median_s'] * 1e3:.0f} ms, ratio {result['ratio']:.2f}x "
          f"(target <= 1.30x: {'met' if result['ratio'] <= 1.3 else 'MISSED'}; {ROUNDS} rounds)")
    return result


if __name__ == "__main__":
    main()
