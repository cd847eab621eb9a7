"""The schema: SQLModel tables on a private registry, and the UTC timestamp column type.

The private registry keeps these tables out of ``SQLModel.metadata``, so a user's own
``SQLModel.metadata.create_all()`` never touches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, UniqueConstraint, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from jobtrack.timeutil import from_iso, to_iso


class UTCText(TypeDecorator[datetime]):
    """Aware UTC datetimes stored as fixed-width ISO 8601 text with offset.

    SQLite's ``DateTime(timezone=True)`` silently drops the offset; this column refuses naive
    values on the way in and returns aware UTC on the way out, and its text sorts by instant.
    """

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else to_iso(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else from_iso(value)


class _Base(SQLModel, registry=registry()):
    """Base of jobtrack's tables, on a registry of its own."""


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCText(), nullable=nullable, index=index))


class Meta(_Base, table=True):
    """Key/value facts about the database itself, such as the schema version."""

    __tablename__ = "jobtrack_meta"
    key: str = Field(primary_key=True)
    value: str


class Job(_Base, table=True):
    """One job: its identity, status, runner claim and results."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_type_created", "job_type", "created_at"),
        Index("ix_jobs_experiment_created", "experiment_name", "created_at"),
        # Partial: only inference jobs have an alias, so other jobs write no page of this index.
        Index("ix_jobs_output_alias", "output_alias", sqlite_where=text("output_alias IS NOT NULL"),
              postgresql_where=text("output_alias IS NOT NULL")),
        Index("ix_jobs_best_metric", "best_metric"),
        Index("ix_jobs_sweep", "sweep_id", "trial", sqlite_where=text("sweep_id IS NOT NULL"),
              postgresql_where=text("sweep_id IS NOT NULL")),
        # A sweep's counts by status without reading its rows (#17: a trial is claimed in O(log n) reads).
        Index("ix_jobs_sweep_status", "sweep_id", "status", sqlite_where=text("sweep_id IS NOT NULL"),
              postgresql_where=text("sweep_id IS NOT NULL")),
    )

    id: str = Field(primary_key=True)
    job_type: str
    status: str
    experiment_name: str
    model_run_id: str | None = None
    output_alias: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)
    reason: str | None = None
    eval_metric: str | None = None
    metric_mode: str | None = None  # "max" or "min": which direction of eval_metric is better
    spec_json: str = "{}"  # dataset, config, function references: what a runner needs to run the job
    runner_kind: str = "thread"
    submitter: str = ""  # "host|pid|start" of the submitting process (liveness.ProcessIdentity)
    runner: str | None = None  # the same for the runner that claimed the job
    claim_token: int = 0  # fencing token: bumped at every claim, checked by every runner write
    heartbeat_at: datetime | None = _ts(nullable=True)
    lease_expires_at: datetime | None = _ts(nullable=True)
    cancel_requested: bool = False
    epoch_seq: int = 0  # epochs reported so far; the next epoch row's seq
    result_json: str | None = None  # the whole result, frozen once the job is terminal
    export_paths_json: str = "{}"
    source_views_json: str = "{}"
    # Schema 4 (#15 experiments, #17 sweeps, #18 retries): added by the additive upgrade step.
    best_metric: float | None = None  # eval_metric's value at the best epoch (for sorting and queries)
    provenance_json: str | None = None  # git, python, platform, packages, dataset hashes at submission
    sweep_id: str | None = None  # the sweep this job is a trial of
    trial: int | None = None  # its trial number in that sweep
    max_attempts: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # retries + 1
    attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # running or last (0 = never claimed)
    retry_of: str | None = None  # the ended job this one retries (``jobtrack retry``)


class JobEvent(_Base, table=True):
    """One applied status change: (job, from, to, when, reason); or a new attempt of a RUNNING job (#18),
    RUNNING -> RUNNING with the attempt's reason, which changes no status."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id")
    from_status: str | None = None
    to_status: str
    at: datetime = _ts()
    reason: str | None = None


class JobEpoch(_Base, table=True):
    """One reported epoch of a job, in the order reported."""

    __tablename__ = "job_epochs"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    seq: int = Field(primary_key=True)
    epoch: int
    train_json: str = "{}"
    validation_json: str = "{}"
    at: datetime = _ts()


class ModelRun(_Base, table=True):
    """A model trained (or being trained) by a train or train_inference job."""

    __tablename__ = "model_runs"

    id: str = Field(primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True)
    experiment_name: str
    task_type: str
    created_at: datetime = _ts()


class RegisteredModel(_Base, table=True):
    """A name and version given to a completed model run (the local model registry)."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("model_name", "version_name"),)

    key: str = Field(primary_key=True)
    model_name: str
    version_name: str
    model_run_id: str = Field(foreign_key="model_runs.id")
    comment: str | None = None
    created_at: datetime = _ts()


class JobExport(_Base, table=True):
    """One export of a job: its file, its source view and the view's column names."""

    __tablename__ = "job_exports"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    kind: str = Field(primary_key=True)
    path: str
    view_name: str
    columns_json: str


class ExportRow(_Base, table=True):
    """One exported row (predictions or embeddings) as a JSON array; source views read these."""

    __tablename__ = "export_rows"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    kind: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    data_json: str


class JobParam(_Base, table=True):
    """One flattened config key of a job with its typed value, for queries such as ``config.lr < 0.01``."""

    __tablename__ = "job_params"
    __table_args__ = (Index("ix_job_params_key_num", "key", "num_value"),
                      Index("ix_job_params_key_text", "key", "text_value"))

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    key: str = Field(primary_key=True)  # dotted path: "lr", "model.depth"
    kind: str  # "number", "string", "bool" or "null"
    num_value: float | None = None  # numbers, and bools as 0/1
    text_value: str | None = None  # strings


class JobTag(_Base, table=True):
    """One tag of a job; changing tags is not a status change."""

    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_tag", "tag", "job_id"),)

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    tag: str = Field(primary_key=True)


class JobMetric(_Base, table=True):
    """A job's value of one metric at its best epoch and at its last one, for ``best.<m>`` / ``last.<m>``."""

    __tablename__ = "job_metrics"
    __table_args__ = (Index("ix_job_metrics_name_best", "name", "best_value"),)

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    name: str = Field(primary_key=True)
    best_value: float | None = None
    last_value: float | None = None


class JobAttempt(_Base, table=True):
    """One attempt of a job that may be retried (#18): its start and end (its start is also a history event).

    Rows exist only for jobs with ``max_attempts > 1``; attempt 1 gets its row when it ends or is replaced.
    """

    __tablename__ = "job_attempts"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True)
    number: int = Field(primary_key=True)  # 1, 2, ...: jobs.attempt of the attempt
    started_at: datetime = _ts()
    ended_at: datetime | None = _ts(nullable=True)
    ended_why: str | None = None  # "runner lost", "error: ValueError", "completed", ...


class Sweep(_Base, table=True):
    """A hyperparameter search; its trials are ordinary jobs carrying its id. It has no status of its own."""

    __tablename__ = "sweeps"

    id: str = Field(primary_key=True)
    name: str = Field(sa_column=Column(String, unique=True, nullable=False))
    created_at: datetime = _ts()
    spec_json: str = "{}"  # space, sampler, n_trials, seed, prune, trainer reference
    stop_requested_at: datetime | None = _ts(nullable=True)  # SweepMonitor.cancel(): drivers add no trials (#17)


METADATA = _Base.metadata
jobs = Job.__table__  # type: ignore[attr-defined]
events = JobEvent.__table__  # type: ignore[attr-defined]
epochs = JobEpoch.__table__  # type: ignore[attr-defined]
model_runs = ModelRun.__table__  # type: ignore[attr-defined]
registered_models = RegisteredModel.__table__  # type: ignore[attr-defined]
export_rows = ExportRow.__table__  # type: ignore[attr-defined]
job_exports = JobExport.__table__  # type: ignore[attr-defined]
meta = Meta.__table__  # type: ignore[attr-defined]
job_params = JobParam.__table__  # type: ignore[attr-defined]
job_tags = JobTag.__table__  # type: ignore[attr-defined]
job_metrics = JobMetric.__table__  # type: ignore[attr-defined]
sweeps = Sweep.__table__  # type: ignore[attr-defined]
job_attempts = JobAttempt.__table__  # type: ignore[attr-defined]
