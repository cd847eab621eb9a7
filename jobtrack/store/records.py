"""What the store hands back: job and event records, typed, with their column lists derived in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from jobtrack import jsonutil
from jobtrack.liveness import is_snapshot
from jobtrack.states import TERMINAL, JobStatus, JobType
from jobtrack.timeutil import from_iso


class JobRecord(NamedTuple):
    """A job row as read from the store (one field per column of ``models.Job``; a test checks they agree).

    Timestamps are kept as the stored ISO 8601 UTC text (``*_iso``), which ``get_status()``
    returns as is; the ``*_at`` properties give them as aware UTC datetimes. Immutable; ``_replace()``
    gives a changed copy. A named tuple rather than a frozen dataclass: a listing builds one per row, and
    a tuple is built in a fraction of the time 31 frozen attribute sets take (#14).
    """

    id: str
    job_type: JobType
    status: JobStatus
    experiment_name: str
    model_run_id: str | None
    output_alias: str | None
    created_iso: str
    updated_iso: str
    finished_iso: str | None
    reason: str | None
    eval_metric: str | None
    metric_mode: str | None
    spec_json: str
    runner_kind: str
    submitter: str
    runner: str | None
    claim_token: int
    heartbeat_iso: str | None
    lease_expires_iso: str | None
    cancel_requested: int  # 0/1 (SQLite) or a bool (servers): test its truth
    result_json: str | None
    export_paths_json: str
    source_views_json: str
    epoch_seq: int
    best_metric: float | None = None
    provenance_json: str | None = None
    sweep_id: str | None = None
    trial: int | None = None
    max_attempts: int = 1
    attempt: int = 0
    retry_of: str | None = None

    def replace(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` (field=value) applied: ``_replace`` under its public name."""
        return self._replace(**changes)

    @property
    def created_at(self) -> datetime:
        return from_iso(self.created_iso)

    @property
    def updated_at(self) -> datetime:
        return from_iso(self.updated_iso)

    @property
    def finished_at(self) -> datetime | None:
        return None if self.finished_iso is None else from_iso(self.finished_iso)

    def run_end(self, now: datetime) -> datetime | None:
        """Where the job's run time ends (durations in ``table()`` and ``compare``, as ``jobtrack list`` shows
        them): its finish; for a bundle's unfinished copy, when it was exported; ``now`` while it runs; else None."""
        if self.finished_iso is not None:
            return from_iso(self.finished_iso)
        if is_snapshot(self.runner):
            return self.updated_at
        return now if self.status is JobStatus.RUNNING else None

    @property
    def lease_expires_at(self) -> datetime | None:
        return None if self.lease_expires_iso is None else from_iso(self.lease_expires_iso)

    @property
    def spec(self) -> dict[str, Any]:
        return jsonutil.loads(self.spec_json) or {}

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


FIELDS: tuple[str, ...] = JobRecord._fields
"""JobRecord's field names, in order."""

JOB_COLUMNS: tuple[str, ...] = tuple(name.replace("_iso", "_at") for name in FIELDS)
"""The ``jobs`` columns in JobRecord's order (the record renames ``*_at`` columns to ``*_iso``)."""

SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
"""Every column of ``jobs``; add a WHERE clause."""

STATUS_COLUMNS = ("id", "status", "created_at", "finished_at", "updated_at", "experiment_name", "job_type",
                  "model_run_id", "result_json", "export_paths_json", "source_views_json")
"""What ``get_status()`` of a finished job needs, in the order of its dict (SPEC §2), and no more."""


class _Members(dict[Any, Any]):
    """An enum's members by value: a dict lookup instead of ``Enum.__call__`` (about 0.7 us a row, #14);
    a value it does not hold goes to the enum itself, which raises its ValueError."""

    def __init__(self, enum: type[JobType] | type[JobStatus]) -> None:
        super().__init__((m.value, m) for m in enum)
        self.enum = enum

    def __missing__(self, value: Any) -> Any:
        return self.enum(value)


_TYPES, _STATUSES = _Members(JobType), _Members(JobStatus)


def job_record(row: Sequence[Any]) -> JobRecord:
    """A JobRecord from a row of ``SELECT_JOB``, the job type and status as enum members (an unknown one
    raises ValueError)."""
    return JobRecord._make((row[0], _TYPES[row[1]], _STATUSES[row[2]], *row[3:]))  # a named tuple's public API


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One applied transition of a job's history."""

    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    at: datetime
    reason: str | None


@dataclass
class PruneReport:
    """What ``prune`` removed (or would remove, in a dry run) and what it kept and why."""

    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # materialized tables the removed jobs leave in place
    left: list[str] = field(default_factory=list)  # paths the rows name outside this database's files folder
