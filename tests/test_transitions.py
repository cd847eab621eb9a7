"""Store transitions beyond the 25 pairs (those are in test_backends.py, on SQLite and PostgreSQL), on a
real SQLite file read back with plain ``sqlite3``: finish times, a caller's stale view of a job, claims
of jobs that are not QUEUED, unknown jobs and unknown statuses all refuse and change nothing.
"""

from __future__ import annotations

import pytest

from jobtrack.errors import InvalidTransition, JobNotFound, RunnerFenced
from jobtrack.states import TERMINAL, JobStatus
from jobtrack.store import Store
from rows import MOVES, assert_refused, create, job_in, raw, raw_columns


def raw_job(path: str, job_id: str) -> tuple[object, ...]:
    return raw(path, job_id)[0]


def raw_events(path: str, job_id: str) -> list[tuple[object, ...]]:
    return raw(path, job_id)[1]


@pytest.mark.parametrize("status", sorted(s.value for s in TERMINAL))
def test_a_finished_job_keeps_its_finish_time_and_holds_no_lease(store: Store, db_path: str, status: str) -> None:
    job_id = f"job_fin_{status.lower()}"
    job_in(store, job_id, status)
    rec = store.get_job(job_id)
    row = dict(zip(raw_columns(db_path, "jobs"), raw_job(db_path, job_id), strict=True))
    assert rec.finished_iso is not None and row["finished_at"] == rec.finished_iso
    assert rec.finished_at is not None and rec.finished_at >= rec.created_at
    assert row["lease_expires_at"] is None


def test_a_stale_view_of_the_job_is_refused_and_changes_nothing(store: Store, db_path: str) -> None:
    # A caller read the job QUEUED; it is RUNNING now. Every operation it would make from what it saw
    # (claim, fail it as unclaimed, record a verdict on the QUEUED job) must not apply.
    create(store, "job_stale")
    seen = store.get_job("job_stale")
    token = store.claim("job_stale")
    row_before, events_before = raw_job(db_path, "job_stale"), raw_events(db_path, "job_stale")
    with pytest.raises(InvalidTransition) as info:
        store.claim("job_stale")
    assert (info.value.current, info.value.requested) == ("RUNNING", "RUNNING")
    assert store.fail_unclaimed("job_stale", "stale") is False
    assert store.record_verdict("job_stale", seen.status, seen.claim_token, "stale", None) is False
    assert raw_job(db_path, "job_stale") == row_before
    assert raw_events(db_path, "job_stale") == events_before
    # Its runner is canceled; the runner's own view (RUNNING under its token) is now stale too.
    store.request_cancel("job_stale")
    assert store.finish("job_stale", token, JobStatus.COMPLETED, reason="done") is JobStatus.CANCELED
    row_before, events_before = raw_job(db_path, "job_stale"), raw_events(db_path, "job_stale")
    with pytest.raises(RunnerFenced) as fenced:
        store.finish("job_stale", token, JobStatus.FAILED, reason="late")
    assert fenced.value.status == "CANCELED"
    assert store.record_verdict("job_stale", JobStatus.RUNNING, token, "stale", None) is False
    assert raw_job(db_path, "job_stale") == row_before
    assert raw_events(db_path, "job_stale") == events_before


def test_claim_of_a_non_queued_job_is_refused_and_changes_nothing(store: Store, db_path: str) -> None:
    job_in(store, "job_claimed", "RUNNING")
    row_before, events_before = raw_job(db_path, "job_claimed"), raw_events(db_path, "job_claimed")
    with pytest.raises(InvalidTransition):
        store.claim("job_claimed")
    assert raw_job(db_path, "job_claimed") == row_before
    assert raw_events(db_path, "job_claimed") == events_before


@pytest.mark.parametrize("operation", ["claim", "request_cancel", "finish", "fail_unclaimed", "record_verdict",
                                       "heartbeat", "add_epoch", "events", "get_job"])
def test_an_unknown_job_raises_job_not_found(store: Store, operation: str) -> None:
    calls = {
        "claim": lambda: store.claim("job_missing"),
        "request_cancel": lambda: store.request_cancel("job_missing"),
        "finish": lambda: store.finish("job_missing", 1, JobStatus.COMPLETED, reason="x"),
        "fail_unclaimed": lambda: store.fail_unclaimed("job_missing", "x"),
        "record_verdict": lambda: store.record_verdict("job_missing", JobStatus.QUEUED, 0, "x", None),
        "heartbeat": lambda: store.heartbeat("job_missing", 1),
        "add_epoch": lambda: store.add_epoch("job_missing", 1, 1, "{}", "{}"),
        "events": lambda: store.events("job_missing"),
        "get_job": lambda: store.get_job("job_missing"),
    }
    with pytest.raises(JobNotFound) as info:
        calls[operation]()
    assert info.value.job_id == "job_missing"
    assert isinstance(info.value, LookupError)
    assert store.list_jobs() == []


def test_finish_to_a_non_terminal_status_is_refused_and_changes_nothing(store: Store, db_path: str) -> None:
    job = job_in(store, "job_bad_status", "RUNNING")
    row_before, events_before = raw_job(db_path, job.id), raw_events(db_path, job.id)
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        with pytest.raises(InvalidTransition) as info:
            store.finish(job.id, job.claim_token, status, reason="x")
        assert (info.value.current, info.value.requested) == ("RUNNING", status)
    with pytest.raises(ValueError):
        store.finish(job.id, job.claim_token, "DONE", reason="x")  # type: ignore[arg-type]
    assert raw_job(db_path, job.id) == row_before
    assert raw_events(db_path, job.id) == events_before


def test_every_refused_operation_names_the_job_and_changes_nothing(store: Store, db_path: str) -> None:
    # The table-driven companion of test_all_25_pairs: each public move from each status it cannot leave by.
    n = 0
    for move in MOVES:
        for status in JobStatus:
            if status in move.sources or (move.name == "request_cancel" and status is JobStatus.RUNNING):
                continue  # applies (or, for a RUNNING job, asks its runner to stop): see test_backends.py
            n += 1
            rec = job_in(store, f"job_refused_{n:02d}", status)
            before = raw(db_path, rec.id)
            assert_refused(move, store, rec)
            assert raw(db_path, rec.id) == before, (move, status)
    assert sum(len(m.sources) for m in MOVES) == 8 and n == 7 * 5 - 8 - 1  # every other pair was refused
