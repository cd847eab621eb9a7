"""Job rows made directly through the store's public operations, and raw reads of them, for tests about
states and reads rather than runners.

A job changes status only through the operations a runner, a user or a reader performs (SPEC §1, §5):

| to        | operation                                                  | from              |
|-----------|------------------------------------------------------------|-------------------|
| RUNNING   | ``claim(job)``                                             | QUEUED            |
| CANCELED  | ``request_cancel(job)``                                    | QUEUED            |
| FAILED    | ``fail_unclaimed(job, reason)``                            | QUEUED            |
| FAILED    | ``record_verdict(job, seen_status, seen_token, ...)``      | QUEUED, RUNNING   |
| COMPLETED | ``finish(job, token, COMPLETED)``                          | RUNNING           |
| FAILED    | ``finish(job, token, FAILED)``                             | RUNNING           |
| CANCELED  | ``finish(job, token, CANCELED)``, ``cancel_process_jobs``  | RUNNING           |

Nothing moves a job to QUEUED: a job is created QUEUED and never returns there. ``MOVES`` lists these
operations with how each refuses a move it cannot make; ``job_in`` walks a new job into any status.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from jobtrack.errors import InvalidTransition, RunnerFenced
from jobtrack.states import JobStatus
from jobtrack.store import JobRecord, Store

Q, R, C, F, X = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED

PATH_TO = {
    "QUEUED": [],
    "RUNNING": ["RUNNING"],
    "COMPLETED": ["RUNNING", "COMPLETED"],
    "FAILED": ["RUNNING", "FAILED"],
    "CANCELED": ["CANCELED"],
}
"""Allowed moves from QUEUED to each status."""


@dataclass(frozen=True)
class Move:
    """One public operation that changes a job's status, seen from a caller who read ``rec`` just before."""

    name: str
    target: JobStatus
    sources: frozenset[JobStatus]
    """The statuses it moves a job from; from the others it is refused (and changes nothing)."""
    run: Callable[[Store, JobRecord, str], Any]
    refusal: str
    """How a refusal shows: ``"invalid"`` raises InvalidTransition, ``"fenced"`` raises RunnerFenced,
    ``"false"`` returns False, ``"status"`` returns the job's (unchanged) status."""

    def __repr__(self) -> str:
        return self.name


def _finish(new: JobStatus) -> Callable[[Store, JobRecord, str], Any]:
    return lambda store, rec, why: store.finish(rec.id, rec.claim_token, new, reason=why)


MOVES: tuple[Move, ...] = (
    Move("claim", R, frozenset({Q}), lambda store, rec, why: store.claim(rec.id), "invalid"),
    Move("request_cancel", X, frozenset({Q}),
         lambda store, rec, why: store.request_cancel(rec.id, reason=why), "status"),
    Move("fail_unclaimed", F, frozenset({Q}), lambda store, rec, why: store.fail_unclaimed(rec.id, why), "false"),
    Move("record_verdict", F, frozenset({Q, R}),
         lambda store, rec, why: store.record_verdict(rec.id, rec.status, rec.claim_token, why, None), "false"),
    Move("finish COMPLETED", C, frozenset({R}), _finish(C), "fenced"),
    Move("finish FAILED", F, frozenset({R}), _finish(F), "fenced"),
    Move("finish CANCELED", X, frozenset({R}), _finish(X), "fenced"),
)
"""Every public operation that moves a job (``cancel_process_jobs`` aside: it moves all of a process's jobs)."""

REASON_OF = {"claim": "claimed"}
"""Event reasons an operation writes itself instead of the caller's."""


def assert_refused(move: Move, store: Store, rec: JobRecord, why: str = "refused") -> None:
    """Run ``move`` on a job read as ``rec`` and assert it was refused in that operation's way."""
    assert rec.status not in move.sources
    if move.refusal == "invalid":
        with pytest.raises(InvalidTransition) as invalid:
            move.run(store, rec, why)
        assert (invalid.value.job_id, invalid.value.current, invalid.value.requested) == (
            rec.id, rec.status, move.target)
        assert rec.status in str(invalid.value) and move.target in str(invalid.value)
    elif move.refusal == "fenced":
        with pytest.raises(RunnerFenced) as fenced:
            move.run(store, rec, why)
        assert (fenced.value.job_id, fenced.value.status) == (rec.id, rec.status)
    elif move.refusal == "false":
        assert move.run(store, rec, why) is False
    else:
        assert move.run(store, rec, why) == rec.status


def create(store: Store, job_id: str, *, job_type: str = "train", experiment: str = "a_b_c",
           eval_metric: str | None = "rmse") -> None:
    """A QUEUED job for a worker (nothing runs it), with its model run ``mr_<job_id>`` unless it is inference."""
    run_id = f"mr_{job_id}"
    store.create_job(
        {"id": job_id, "job_type": job_type, "experiment_name": experiment, "model_run_id": run_id,
         "eval_metric": eval_metric, "metric_mode": "min", "runner_kind": "worker"},
        model_run=None if job_type == "inference" else
        {"id": run_id, "job_id": job_id, "experiment_name": experiment, "task_type": "regression"},
    )


def move(store: Store, job_id: str, new: str | JobStatus, *, reason: str | None = None) -> JobRecord:
    """Apply the public operation that moves ``job_id`` from its current status to ``new``; its record after.

    A RUNNING job is finished under the claim token it holds (as its runner would).
    """
    rec = store.get_job(job_id, check_liveness=False)
    new = JobStatus(new)
    why = reason or f"setup {new.value}"
    if rec.status is Q and new is R:
        store.claim(job_id)
    elif rec.status is Q and new is X:
        assert store.request_cancel(job_id, reason=why) is X
    elif rec.status is Q and new is F:
        assert store.fail_unclaimed(job_id, why)
    elif rec.status is R and new.is_terminal:
        assert store.finish(job_id, rec.claim_token, new, reason=why) is new
    else:
        raise AssertionError(f"no operation moves a {rec.status} job to {new}")
    after = store.get_job(job_id, check_liveness=False)
    assert after.status is new
    return after


def job_in(store: Store, job_id: str, status: str | JobStatus, **create_args: Any) -> JobRecord:
    """Create ``job_id`` and move it along allowed transitions into ``status``; its record."""
    create(store, job_id, **create_args)
    for step in PATH_TO[JobStatus(status).value]:
        move(store, job_id, step)
    rec = store.get_job(job_id, check_liveness=False)
    assert rec.status == status
    return rec


# -- raw reads: what is on disk, not what the store makes of it ----------------------------------------------


def raw(db: str, job_id: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The job's row, its event rows and its epoch rows, every column, read without jobtrack.

    ``db`` is a SQLite path (read with plain ``sqlite3``) or a server URL (read with SQLAlchemy).
    """
    queries = ("SELECT * FROM jobs WHERE id = :id",
               "SELECT * FROM job_events WHERE job_id = :id ORDER BY id",
               "SELECT * FROM job_epochs WHERE job_id = :id ORDER BY seq")
    if "://" not in db:
        with closing(sqlite3.connect(db)) as conn:
            rows = [[tuple(r) for r in conn.execute(q, {"id": job_id})] for q in queries]
    else:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(db, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                rows = [[tuple(r) for r in conn.execute(text(q), {"id": job_id})] for q in queries]
        finally:
            engine.dispose()
    job, events, epochs = rows
    assert len(job) == 1, f"no job {job_id!r}"
    return job[0], events, epochs


def raw_columns(db: str, table: str) -> list[str]:
    """The column names of a table of a SQLite file, in order."""
    with closing(sqlite3.connect(db)) as conn:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


# -- an older schema ----------------------------------------------------------------------------------------------

V4_TABLES = ("job_params", "job_tags", "job_metrics", "job_attempts", "sweeps")
V4_COLUMNS = ("best_metric", "provenance_json", "sweep_id", "trial", "max_attempts", "attempt", "retry_of")


def drop_schema_4(execute: Callable[[str], Any]) -> None:
    """Make a database what jobtrack schema 3 left: none of schema 4's tables, columns or indexes (``execute`` runs
    one statement: a raw sqlite3 ``execute`` or a transaction's ``ddl``)."""
    from jobtrack.store import models

    for index in models.jobs.indexes:  # the indexes on schema 4's columns go with them
        if {c.name for c in index.columns} & set(V4_COLUMNS):
            execute(f"DROP INDEX {index.name}")
    for table in V4_TABLES:
        execute(f"DROP TABLE {table}")
    for column in V4_COLUMNS:
        execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    execute("UPDATE jobtrack_meta SET value = '3' WHERE key = 'schema_version'")
