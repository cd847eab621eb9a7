"""Two real processes race to move the same QUEUED jobs; the conditional write lets exactly one win (SPEC §1).

Forty jobs are prepared up front; two long-lived children walk the same list in the same order,
meeting at a file barrier before each job and then attempting their own move on it, so they
contend on every job at about the same moment. Verification reads the file with plain ``sqlite3``
(no liveness side effects from children that have since exited).

On SQLite the file lock already serialises the two writers, so these races cannot tell whether the
write is conditional; the deterministic tests at the end can (each fails without the status guard
of ``store.core.FencedCore._apply_transition``).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobtrack import liveness
from jobtrack.errors import RunnerFenced
from jobtrack.states import JobStatus
from jobtrack.store import Store
from proc import run_python, spawn
from rows import create, raw as raw_job

N_JOBS = 40

# argv: db, mode, barrier dir, my name, other's name, comma-separated job ids.
# Prints {job_id: "won" | "lost"}. Before each job both racers meet at a barrier (one marker file
# each per round), so every job is contended, not just the first one.
RACER = r"""
import json, random, sys, time
import proc
from jobtrack.errors import InvalidTransition
from jobtrack.states import JobStatus
from jobtrack.store import Store

db, mode, barrier, me, other = sys.argv[1:6]
ids = sys.argv[6].split(",")
store = Store.open(db)
store.get_job(ids[0])  # connect before the first barrier, so both start from the same point
deadline = time.monotonic() + 30

def meet(round_):
    proc.meet(barrier, me, [other], round_, deadline)
    # A random head start of up to 0.5 ms (busy-waited: sleep is too coarse), so either racer can win.
    until = time.perf_counter() + random.random() * 0.0005
    while time.perf_counter() < until:
        pass

outcome = {}
for round_, job_id in enumerate(ids):
    meet(round_)
    if mode == "request_cancel":
        after = store.request_cancel(job_id)
        # CANCELED: this process applied QUEUED -> CANCELED; RUNNING: the claim came first (a stop was
        # requested); FAILED: the other racer failed it first.
        outcome[job_id] = {JobStatus.CANCELED: "won", JobStatus.RUNNING: "lost", JobStatus.FAILED: "lost"}[after]
    elif mode == "fail_unclaimed":
        outcome[job_id] = "won" if store.fail_unclaimed(job_id, "racer " + mode) else "lost"
    elif mode == "verdict/seen":
        # A reader's liveness verdict on the job as it read it a moment ago (status and claim token):
        # it applies from QUEUED or RUNNING, unless the job moved between the read and the write.
        rec = store.get_job(job_id, check_liveness=False)
        won = store.record_verdict(job_id, rec.status, rec.claim_token, "racer " + mode, None)
        outcome[job_id] = ("won " if won else "lost ") + rec.status
    else:
        try:
            store.claim(job_id)
        except InvalidTransition as err:
            assert err.current != "QUEUED", err
            outcome[job_id] = "lost"
        else:
            outcome[job_id] = "won"
print(json.dumps(outcome))
"""

TARGET = {"claim": "RUNNING", "request_cancel": "CANCELED", "fail_unclaimed": "FAILED"}


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
        ("claim", "fail_unclaimed"),  # a runner's claim vs a runner that cannot start the job
        ("claim", "request_cancel"),  # a runner's claim vs a user's cancel
        ("claim", "claim"),  # two runners claiming the same job
        ("fail_unclaimed", "request_cancel"),  # two terminal moves
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
    # A verdict from the status its reader saw: FAILED may follow the other racer's QUEUED -> RUNNING
    # (the reader saw RUNNING), or precede it (the reader saw QUEUED, and the claim is then refused);
    # a reader that saw QUEUED loses if the claim landed between its read and its write.
    store = Store.open(db_path)
    ids = prepare_jobs(store, "any")
    won_a, won_b = race(db_path, tmp_path, "claim", "verdict/seen", ids)
    rows, events = raw(db_path, ids)
    for job_id in ids:
        outcome = (won_a[job_id], won_b[job_id])
        history = {
            ("won", "won RUNNING"): [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "FAILED")],
            ("lost", "won QUEUED"): [(None, "QUEUED"), ("QUEUED", "FAILED")],
            ("won", "lost QUEUED"): [(None, "QUEUED"), ("QUEUED", "RUNNING")],
        }
        assert outcome in history, f"{job_id}: {outcome}"
        assert events[job_id] == history[outcome], f"{job_id}: {events[job_id]}"
        assert rows[job_id]["status"] == history[outcome][-1][1]
        assert rows[job_id]["claim_token"] == (1 if won_a[job_id] == "won" else 0)


# -- races that need the status guard ------------------------------------------------------------------------
# Each interleaving below is played out in order, so the outcome does not depend on timing; each would
# go wrong if the UPDATE of FencedCore._apply_transition lost its ``AND status = :expected``.


def test_a_claimed_job_cannot_then_be_failed_as_unclaimed(store: Store, db_path: str) -> None:
    # A runner decides it cannot start the job (it read it QUEUED), but another claimed it first.
    create(store, "job_a")
    store.claim("job_a")
    before = raw_job(db_path, "job_a")
    assert store.fail_unclaimed("job_a", "cannot run: gone") is False
    assert raw_job(db_path, "job_a") == before
    assert store.get_job("job_a").status is JobStatus.RUNNING


def test_a_runner_canceled_by_a_signal_cannot_then_complete_its_job(store: Store, db_path: str) -> None:
    # The signal's recorder cancels the process's jobs and leaves their claim token as it was: only
    # the status guard stops the runner, still holding that token, from finishing the job COMPLETED.
    create(store, "job_b")
    token = store.claim("job_b")
    assert store.cancel_process_jobs(liveness.current().encode(), reason="signal SIGTERM") == 1
    rec = store.get_job("job_b")
    assert (rec.status, rec.reason, rec.claim_token) == (JobStatus.CANCELED, "signal SIGTERM", token)
    before = raw_job(db_path, "job_b")
    with pytest.raises(RunnerFenced) as fenced:
        store.finish("job_b", token, JobStatus.COMPLETED, reason="completed")
    assert (fenced.value.job_id, fenced.value.status) == ("job_b", "CANCELED")
    assert store.record_verdict("job_b", JobStatus.RUNNING, token, "runner lost", None) is False
    assert raw_job(db_path, "job_b") == before
    assert [e.to_status for e in store.events("job_b")] == ["QUEUED", "RUNNING", "CANCELED"]


MOVER = """
import sys
from jobtrack.store import Store
store = Store.open(sys.argv[1])
if sys.argv[3] == "claim":
    print(store.claim(sys.argv[2]))
elif sys.argv[3] == "cancel":
    print(store.request_cancel(sys.argv[2]))
else:
    print(store.fail_unclaimed(sys.argv[2], "cannot run"))
"""


@pytest.mark.parametrize(("move", "after"), [("claim", "RUNNING"), ("cancel", "CANCELED"), ("fail", "FAILED")])
def test_a_verdict_on_a_job_that_moved_since_it_was_read_is_not_recorded(
    store: Store, db_path: str, move: str, after: str
) -> None:
    # A reader sees the job QUEUED (and, say, its submitter gone); before it records FAILED, another
    # process claims, cancels or fails the job. The reader's verdict must not apply. After a claim
    # the token also differs; after a cancel or a failure it does not, and only the status guard
    # keeps the user's CANCELED (or the first FAILED and its reason) from being overwritten.
    create(store, "job_c")
    seen = store.get_job("job_c")
    assert (seen.status, seen.claim_token) == (JobStatus.QUEUED, 0)
    run_python(MOVER, db_path, "job_c", move)
    before = raw_job(db_path, "job_c")
    assert store.record_verdict("job_c", seen.status, seen.claim_token, "submitter lost", None) is False
    assert raw_job(db_path, "job_c") == before
    assert store.get_job("job_c", check_liveness=False).status == after
