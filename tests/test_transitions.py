"""Store transitions beyond the 25 pairs (those are in test_backends.py, on SQLite and PostgreSQL), on a
real SQLite file read back with plain ``sqlite3``: finish times, stale expected statuses, claims of
jobs that are not QUEUED, unknown jobs and unknown statuses all refuse and change nothing.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest

from jobtrack.errors import InvalidTransition, JobNotFound
from jobtrack.states import TERMINAL
from jobtrack.store import Store
from rows import job_in


def raw_job(path: str, job_id: str) -> tuple[Any, ...]:
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None
    return tuple(row)


def raw_events(path: str, job_id: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return [tuple(r) for r in conn.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))]


def raw_columns(path: str, table: str) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


@pytest.mark.parametrize("status", sorted(s.value for s in TERMINAL))
def test_a_finished_job_keeps_its_finish_time_and_holds_no_lease(store: Store, db_path: str, status: str) -> None:
    job_id = f"job_fin_{status.lower()}"
    job_in(store, job_id, status)
    rec = store.get_job(job_id)
    row = dict(zip(raw_columns(db_path, "jobs"), raw_job(db_path, job_id), strict=True))
    assert rec.finished_iso is not None and row["finished_at"] == rec.finished_iso
    assert rec.finished_at is not None and rec.finished_at >= rec.created_at
    assert row["lease_expires_at"] is None


def test_expected_status_that_no_longer_holds_is_refused_and_changes_nothing(store: Store, db_path: str) -> None:
    # QUEUED -> CANCELED is allowed, but the job is RUNNING now: the conditional write must not apply.
    job_in(store, "job_stale", "RUNNING")
    row_before, events_before = raw_job(db_path, "job_stale"), raw_events(db_path, "job_stale")
    with pytest.raises(InvalidTransition) as info:
        store.transition("job_stale", "CANCELED", expected="QUEUED")
    assert (info.value.current, info.value.requested) == ("RUNNING", "CANCELED")
    assert raw_job(db_path, "job_stale") == row_before
    assert raw_events(db_path, "job_stale") == events_before


def test_claim_of_a_non_queued_job_is_refused_and_changes_nothing(store: Store, db_path: str) -> None:
    job_in(store, "job_claimed", "RUNNING")
    row_before, events_before = raw_job(db_path, "job_claimed"), raw_events(db_path, "job_claimed")
    with pytest.raises(InvalidTransition):
        store.claim("job_claimed")
    assert raw_job(db_path, "job_claimed") == row_before
    assert raw_events(db_path, "job_claimed") == events_before


def test_transition_of_unknown_job_raises_job_not_found(store: Store) -> None:
    with pytest.raises(JobNotFound) as info:
        store.transition("job_missing", "RUNNING")
    assert info.value.job_id == "job_missing"
    assert isinstance(info.value, LookupError)
    with pytest.raises(JobNotFound):
        store.events("job_missing")


def test_transition_to_unknown_status_is_a_value_error(store: Store, db_path: str) -> None:
    job_in(store, "job_bad_status", "QUEUED")
    row_before = raw_job(db_path, "job_bad_status")
    with pytest.raises(ValueError):
        store.transition("job_bad_status", "DONE")
    assert raw_job(db_path, "job_bad_status") == row_before
