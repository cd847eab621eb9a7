"""Two real processes race to move the same QUEUED jobs; the conditional write lets exactly one win (SPEC §1).

Forty jobs are prepared up front; two long-lived children walk the same list in the same order,
meeting at a file barrier before each job and then attempting their own move on it, so they
contend on every job at about the same moment. Verification reads the file with plain ``sqlite3``
(no liveness side effects from children that have since exited).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobtrack.store import Store
from proc import spawn

N_JOBS = 40

# argv: db, mode, barrier dir, my name, other's name, comma-separated job ids.
# Prints {job_id: "won" | "lost"}. Before each job both racers meet at a barrier (one marker file
# each per round), so every job is contended, not just the first one.
RACER = r"""
import json, os, random, sys, time
from jobtrack.errors import InvalidTransition
from jobtrack.states import JobStatus
from jobtrack.store import Store

db, mode, barrier, me, other = sys.argv[1:6]
ids = sys.argv[6].split(",")
store = Store.open(db)
store.get_job(ids[0])  # connect before the first barrier, so both start from the same point
deadline = time.monotonic() + 30

def meet(round_):
    open(os.path.join(barrier, f"{me}_{round_}"), "w").close()
    theirs = os.path.join(barrier, f"{other}_{round_}")
    while not os.path.exists(theirs):
        if time.monotonic() > deadline:
            sys.exit(f"the other racer never reached round {round_}")
        os.sched_yield()
    # A random head start of up to 0.5 ms (busy-waited: sleep is too coarse), so either racer can win.
    until = time.perf_counter() + random.random() * 0.0005
    while time.perf_counter() < until:
        pass

outcome = {}
for round_, job_id in enumerate(ids):
    meet(round_)
    if mode == "request_cancel":
        after = store.request_cancel(job_id)
        # CANCELED: this process applied QUEUED -> CANCELED; RUNNING: the claim came first (a stop was requested).
        outcome[job_id] = {JobStatus.CANCELED: "won", JobStatus.RUNNING: "lost"}[after]
        continue
    try:
        if mode == "claim":
            store.claim(job_id)
        elif mode.endswith("/any"):  # from whatever status the job has when this racer gets the lock
            store.transition(job_id, mode[:-4], reason="racer " + mode)
        else:
            # expected=QUEUED: both race for the same QUEUED job (without it, RUNNING -> CANCELED would
            # legitimately apply after the other racer's QUEUED -> RUNNING).
            store.transition(job_id, mode, expected="QUEUED", reason="racer " + mode)
    except InvalidTransition as err:
        assert err.current != "QUEUED", err
        outcome[job_id] = "lost"
    else:
        outcome[job_id] = "won"
print(json.dumps(outcome))
"""

TARGET = {"claim": "RUNNING", "request_cancel": "CANCELED", "RUNNING": "RUNNING", "CANCELED": "CANCELED",
          "FAILED": "FAILED"}


def prepare_jobs(store: Store, prefix: str) -> list[str]:
    ids = [f"job_{prefix}_{i:02d}" for i in range(N_JOBS)]
    for job_id in ids:
        store.create_job({"id": job_id, "job_type": "train", "experiment_name": "race_regression_t",
                          "model_run_id": f"mr_{job_id}", "runner_kind": "worker"})
    return ids


def raw(path: str, ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[Any, ...]]]]:
    with closing(sqlite3.connect(path)) as conn:
        cur = conn.execute("SELECT * FROM jobs")
        cols = [d[0] for d in cur.description]
        rows = {r[0]: dict(zip(cols, r, strict=True)) for r in cur}
        events: dict[str, list[tuple[Any, ...]]] = {job_id: [] for job_id in ids}
        for job_id, src, dst in conn.execute("SELECT job_id, from_status, to_status FROM job_events ORDER BY id"):
            events[job_id].append((src, dst))
    return rows, events


def race(
    db_path: str, tmp_path: Path, mode_a: str, mode_b: str, ids: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Run the two racers over ``ids``; their outcomes per job. No 'database is locked', ever."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    joined = ",".join(ids)
    with spawn(RACER, db_path, mode_a, str(barrier), "a", "b", joined) as a, \
            spawn(RACER, db_path, mode_b, str(barrier), "b", "a", joined) as b:
        out_a, err_a = a.communicate(timeout=60)
        out_b, err_b = b.communicate(timeout=60)
    for name, proc, err in (("a", a, err_a), ("b", b, err_b)):
        assert "database is locked" not in err, err
        assert proc.returncode == 0, f"racer {name} failed:\n{err}"
    won_a, won_b = json.loads(out_a), json.loads(out_b)
    assert set(won_a) == set(won_b) == set(ids)
    return won_a, won_b


@pytest.mark.parametrize(
    ("mode_a", "mode_b"),
    [
        ("RUNNING", "CANCELED"),  # store.transition(expected=QUEUED) vs the same, different targets
        ("claim", "request_cancel"),  # a runner's claim vs a user's cancel
        ("claim", "claim"),  # two runners claiming the same job
        ("FAILED", "CANCELED"),  # two terminal moves
    ],
)
def test_exactly_one_process_wins_every_race(db_path: str, tmp_path: Path, mode_a: str, mode_b: str) -> None:
    store = Store.open(db_path)
    ids = prepare_jobs(store, f"{mode_a}_{mode_b}".lower())
    won_a, won_b = race(db_path, tmp_path, mode_a, mode_b, ids)

    rows, events = raw(db_path, ids)
    for job_id in ids:
        outcomes = (won_a[job_id], won_b[job_id])
        assert sorted(outcomes) == ["lost", "won"], f"{job_id}: {outcomes}"
        winner_mode = mode_a if outcomes[0] == "won" else mode_b
        target = TARGET[winner_mode]
        assert rows[job_id]["status"] == target
        assert events[job_id] == [(None, "QUEUED"), ("QUEUED", target)], f"{job_id}: {events[job_id]}"
        if (mode_a, mode_b) == ("claim", "request_cancel") and target == "RUNNING":
            assert rows[job_id]["cancel_requested"]  # the cancel that lost became a stop request
        if target == "RUNNING" and "claim" in winner_mode:
            assert rows[job_id]["claim_token"] == 1


def test_racing_moves_from_whatever_status_still_leave_one_consistent_history(db_path: str, tmp_path: Path) -> None:
    # Without expected=, RUNNING -> CANCELED is allowed after the other racer's QUEUED -> RUNNING: both
    # may succeed, in that order only; otherwise CANCELED came first and the move to RUNNING was refused.
    store = Store.open(db_path)
    ids = prepare_jobs(store, "any")
    won_a, won_b = race(db_path, tmp_path, "RUNNING/any", "CANCELED/any", ids)
    rows, events = raw(db_path, ids)
    for job_id in ids:
        assert won_b[job_id] == "won"  # CANCELED is reachable from both QUEUED and RUNNING
        assert rows[job_id]["status"] == "CANCELED"
        if won_a[job_id] == "won":
            assert events[job_id] == [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "CANCELED")]
        else:
            assert events[job_id] == [(None, "QUEUED"), ("QUEUED", "CANCELED")]
