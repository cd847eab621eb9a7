"""Issue #18: a worker dies under a job that may be retried; another ``jobtrack worker`` carries it on.

Two real ``jobtrack worker`` processes share a database (a SQLite file, or a PostgreSQL schema). The
one running the job is killed with SIGKILL, or stopped with SIGSTOP: the other takes the job over as its
attempt 2, resuming after the last stored epoch from its checkpoint. A killed worker's job is taken over
as soon as the other sees its process gone, without waiting out a two-minute lease; a stopped one lives,
so its one-second lease decides. A stopped worker that is continued later finds its writes refused (fencing):
its late report never reaches the job, which completes with each epoch exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
import retryfuncs

from jobtrack import Dataset, JobStatus, Trainer
from proc import spawn, wait_until

WORKER = "import sys\nfrom jobtrack import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
"""``jobtrack`` in a ``python -c`` child (for ``proc.spawn``)."""

LEASE_S = {"SIGKILL": "120", "SIGSTOP": "1"}
"""The workers' lease: longer than the test waits for a killed worker's job; a stopped one's expires at once."""


def _marker(folder: Path, name: str, timeout: float = 30) -> str:
    path = folder / name
    wait_until(path.exists, timeout=timeout, message=f"marker {name}")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_another_worker_takes_over_and_the_first_ones_late_writes_are_refused(
    any_db: str, dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("JOBTRACK_LEASE_S", LEASE_S[how])  # for the workers (children inherit it)
    folder = tmp_path / "marks"
    folder.mkdir()
    # Attempt 1 waits before reporting epoch 3 (epochs 0..2 are stored); with SIGSTOP, attempt 2 waits at 6.
    hold = {"1": 3, "2": 6} if how == "SIGSTOP" else {"1": 3}
    job = Trainer(retryfuncs.train_resumable, db=any_db, runner="worker", retries=2,
                  config={"dir": str(folder), "hold": hold}).fit(dataset)
    with spawn(WORKER, "worker", "--db", any_db) as one, spawn(WORKER, "worker", "--db", any_db) as two:
        pid = int(_marker(folder, "a1-e3"))
        assert pid in (one.pid, two.pid)
        victim, other = (one, two) if pid == one.pid else (two, one)
        os.kill(victim.pid, getattr(signal, how))
        try:
            assert _marker(folder, "start-a2") == "3 2"  # resume_epoch 3, checkpoint of epoch 2
            assert int(_marker(folder, "a2-e3")) == other.pid
            assert job.get_status()["status"] == "RUNNING"
            if how == "SIGSTOP":
                _marker(folder, "a2-e6")  # attempt 2 holds the job; now the stopped worker wakes up
                (folder / "release-a1").touch()
                os.kill(victim.pid, signal.SIGCONT)
                assert _marker(folder, "fenced-a1") == "3"  # its report of epoch 3 was refused
                (folder / "release-a2").touch()
            final = job.wait(timeout=60)
        finally:
            if how == "SIGSTOP":
                os.kill(victim.pid, signal.SIGCONT)
    assert final["status"] == "COMPLETED", final["result"].get("error")
    result = final["result"]
    assert [e["epoch"] for e in result["epochs"]] == list(range(10))
    assert [e["train"]["attempt"] for e in result["epochs"]] == [1] * 3 + [2] * 7
    lost = "runner lost" if how == "SIGKILL" else "runner lost (lease expired)"
    assert [(a["number"], a["why"]) for a in result["attempts"]] == [(1, lost), (2, "completed")]
    assert result["summary"] == {"attempt": 2, "resume_epoch": 3, "restored": "2"}
    assert [e.to_status for e in job.events()] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RUNNING,
                                                   JobStatus.COMPLETED]


def test_a_killed_workers_job_is_taken_over_before_the_jobs_queued_after_it(
    db_path: str, dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBTRACK_LEASE_S", "120")  # only the dead process can make it a take-over at once
    folder, later = tmp_path / "marks", [tmp_path / f"later{k}" for k in range(2)]
    for f in (folder, *later):
        f.mkdir()
    job = Trainer(retryfuncs.train_resumable, db=db_path, runner="worker", retries=1,
                  config={"dir": str(folder), "hold": {"1": 3}, "epochs": 5}).fit(dataset)
    queued = [Trainer(retryfuncs.train_resumable, db=db_path, runner="worker",
                      config={"dir": str(f), "epochs": 1}).fit(dataset) for f in later]
    with spawn(WORKER, "worker", "--db", db_path) as first:
        _marker(folder, "a1-e3")  # the oldest job first; held there
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    with spawn(WORKER, "worker", "--db", db_path):
        assert job.wait(timeout=30)["status"] == "COMPLETED"
        for q in queued:
            assert q.wait(timeout=30)["status"] == "COMPLETED"
    conn = sqlite3.connect(db_path)  # event ids grow across jobs: the order the worker did things in
    try:
        (takeover,), = conn.execute("SELECT id FROM job_events WHERE job_id = ? AND from_status = 'RUNNING' "
                                    "AND to_status = 'RUNNING'", (job.job_id,)).fetchall()
        claims = [i for q in queued for (i,) in conn.execute(
            "SELECT id FROM job_events WHERE job_id = ? AND to_status = 'RUNNING'", (q.job_id,))]
    finally:
        conn.close()
    assert len(claims) == 2 and takeover < min(claims), \
        "the second worker ran a job queued later before taking over the killed worker's job"
