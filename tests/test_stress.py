"""Eight real processes share one database: no 'database is locked', nothing lost or duplicated, legal histories."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from jobtrack.runners.worker import run_worker
from jobtrack.states import TERMINAL, is_allowed
from jobtrack.store import Store
from proc import child_env

# Imported (not run as __main__) so its job function is importable by the worker-kind jobs.
RUN_CHILD = ("import json, sys, stress_child\n"
             "print(json.dumps(stress_child.main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))")
PROCESSES = 8
SECONDS = float(os.environ.get("JOBTRACK_STRESS_SECONDS", "6"))


def test_eight_processes_submit_run_cancel_and_poll_without_errors(db_path: str, tmp_path: Path) -> None:
    Store.open(db_path)  # create the schema once, before the crowd arrives
    started = time.monotonic()
    children = [
        subprocess.Popen([sys.executable, "-c", RUN_CHILD, db_path, str(SECONDS), str(seed), str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        for seed in range(PROCESSES)
    ]
    reports = []
    try:
        for child in children:
            out, err = child.communicate(timeout=SECONDS + 60)
            assert child.returncode == 0, err
            assert "locked" not in err.lower(), err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert [r for r in reports if r["errors"]] == []
    assert sum(r["locked"] for r in reports) == 0

    # Drain what is still queued, as a worker would; then every job must be terminal.
    store = Store.open(db_path)
    run_worker(store, burst=True)
    submitted = [job_id for r in reports for job_id in r["submitted"]]
    assert len(submitted) == len(set(submitted)) > PROCESSES * 5

    conn = sqlite3.connect(db_path)
    rows = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    assert sorted(rows) == sorted(submitted)  # none lost, none duplicated, none invented
    assert set(rows.values()) <= {t.value for t in TERMINAL}
    history: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
    for job_id, src, dst in conn.execute("SELECT job_id, from_status, to_status FROM job_events ORDER BY id"):
        history[job_id].append((src, dst))
    conn.close()
    for job_id, steps in history.items():
        assert steps[0] == (None, "QUEUED"), (job_id, steps)
        for (_, prev_to), (src, dst) in itertools.pairwise(steps):
            assert src == prev_to and is_allowed(src, dst), (job_id, steps)
        assert steps[-1][1] == rows[job_id]
    print(f"stress: {len(submitted)} jobs by {PROCESSES} processes in {elapsed:.1f} s "
          f"({len(submitted) / elapsed:.0f} jobs/s), {sum(r['canceled'] for r in reports)} cancels, "
          f"{sum(r['polled'] for r in reports)} polls")
