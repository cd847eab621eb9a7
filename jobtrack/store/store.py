"""Store: every INSERT, UPDATE and DELETE of jobtrack, and the one place a job's status changes.

Status changes go through ``_apply_transition``: the pure check of ``states.check_transition``,
then a conditional UPDATE (the row changes only if its status, and for runner writes its claim
token, are still what the caller saw), then the event row, all in one write transaction.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from jobtrack import jsonutil, liveness, results
from jobtrack.config import DEFAULT_LEASE_S, DEFAULT_LOCK_TIMEOUT_S, files_dir, resolve_db
from jobtrack.errors import (
    DuplicateName,
    InvalidTransition,
    JobNotFound,
    ModelNotFound,
    RunnerFenced,
)
from jobtrack.states import JobStatus, check_transition
from jobtrack.store import models
from jobtrack.store.db import Database
from jobtrack.store.schema import prepare
from jobtrack.timeutil import utcnow

log = logging.getLogger(__name__)

J = models.jobs
E = models.events
EP = models.epochs

RUNNER_LOST = "runner lost"
SUBMITTER_LOST = "submitter lost"
IN_PROCESS_RUNNERS = frozenset({"thread", "eager", "process"})


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row as read from the store (timestamps are aware UTC datetimes)."""

    id: str
    job_type: str
    status: str
    experiment_name: str
    model_run_id: str | None
    output_alias: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    reason: str | None
    eval_metric: str | None
    metric_mode: str | None
    spec_json: str
    runner_kind: str
    submitter: str
    runner: str | None
    claim_token: int
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    summary_json: str | None
    error_json: str | None
    result_json: str | None
    export_paths_json: str
    source_views_json: str

    @property
    def spec(self) -> dict[str, Any]:
        return jsonutil.loads(self.spec_json) or {}


_JOB_FIELDS = [f.name for f in fields(JobRecord)]
_JOB_COLUMNS = [J.c[name] for name in _JOB_FIELDS]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One applied transition of a job's history."""

    job_id: str
    from_status: str | None
    to_status: str
    at: datetime
    reason: str | None


@dataclass
class PruneReport:
    """What ``prune`` removed (or would remove, in a dry run) and what it kept and why."""

    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)


def _remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Store:
    """All reads and writes of one jobtrack database; share one per database and process (``Store.open``)."""

    _instances: dict[tuple[str, int], Store] = {}
    _instances_lock = threading.Lock()

    def __init__(self, db: str | os.PathLike[str] | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S):
        self.target = resolve_db(db)
        self.db = Database(self.target, lock_timeout=lock_timeout)
        prepare(self.db)

    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None) -> Store:
        """The shared Store of this database in this process (created and checked on first use)."""
        key = (resolve_db(db), os.getpid())
        store = cls._instances.get(key)
        if store is None:
            with cls._instances_lock:
                store = cls._instances.get(key)
                if store is None:
                    store = cls(key[0])
                    cls._instances = {k: v for k, v in cls._instances.items() if k[1] == key[1]}
                    cls._instances[key] = store
        return store

    def close(self) -> None:
        """Release this process's connections; the Store can still be used (it reconnects)."""
        self.db.dispose()

    @property
    def files_dir(self) -> Path:
        """Directory beside the database holding models, exports and logs."""
        return files_dir(self.target) if self.db.is_sqlite else Path(os.environ.get("JOBTRACK_FILES", ".jobtrack-files"))

    def job_dir(self, job_id: str) -> Path:
        return self.files_dir / "jobs" / job_id

    def model_dir(self, model_run_id: str) -> Path:
        return self.files_dir / "models" / model_run_id

    # -- creating jobs ---------------------------------------------------------------------

    def create_job(self, values: dict[str, Any], *, model_run: dict[str, Any] | None = None,
                   alias_check: tuple[str, str] | None = None) -> None:
        """Insert a QUEUED job (and its model run) with its creation event.

        ``alias_check`` = (normalised alias, message) refuses an output alias that is in use.
        """
        now = utcnow()
        row = {
            "status": JobStatus.QUEUED.value,
            "created_at": now,
            "updated_at": now,
            "submitter": liveness.current().encode(),
            "claim_token": 0,
            "cancel_requested": False,
            "export_paths_json": "{}",
            "source_views_json": "{}",
            "spec_json": "{}",
            **values,
        }
        with self.db.write() as conn:
            if alias_check is not None:
                self._check_alias_free(conn, alias_check[0])
            conn.execute(insert(J), row)
            if model_run is not None:
                conn.execute(insert(models.model_runs), {"created_at": now, **model_run})
            conn.execute(insert(E), {"job_id": row["id"], "from_status": None, "to_status": "QUEUED",
                                     "at": now, "reason": "submitted"})

    def _check_alias_free(self, conn: Connection, alias_key: str) -> None:
        rows = conn.execute(
            select(J.c.id, J.c.status, J.c.export_paths_json).where(J.c.output_alias == alias_key)
        ).all()
        for job_id, status, paths in rows:
            if not JobStatus(status).is_terminal or paths != "{}":
                raise DuplicateName(
                    f"output_alias {alias_key!r} is already used by job {job_id!r} ({status}); "
                    "choose a new output_alias, or prune that job first."
                )

    # -- reading ---------------------------------------------------------------------------

    _by_id = select(*_JOB_COLUMNS).where(J.c.id == bindparam("id"))

    def get_job(self, job_id: str, *, check_liveness: bool = True) -> JobRecord:
        """The job's row; a RUNNING job whose runner is dead is first marked FAILED (SPEC §5).

        Raises:
            JobNotFound: no job has this id.
        """
        with self.db.read() as conn:
            row = conn.execute(self._by_id, {"id": job_id}).first()
        if row is None:
            raise JobNotFound(job_id, self.target)
        rec = JobRecord(*row)
        if check_liveness and rec.status in ("RUNNING", "QUEUED"):
            rec = self._apply_liveness(rec)
        return rec

    def epochs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's reported epochs in reporting order."""
        with self.db.read() as conn:
            return self._epochs(conn, job_id)

    @staticmethod
    def _epochs(conn: Connection, job_id: str) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(EP.c.epoch, EP.c.train_json, EP.c.validation_json).where(EP.c.job_id == job_id).order_by(EP.c.seq)
        ).all()
        return [{"epoch": e, "train": jsonutil.loads(t), "validation": jsonutil.loads(v)} for e, t, v in rows]

    def result(self, rec: JobRecord) -> dict[str, Any]:
        """The job's result dict: frozen for terminal jobs, composed from its epochs otherwise."""
        if rec.result_json is not None:
            return jsonutil.loads(rec.result_json)  # type: ignore[no-any-return]
        return results.compose(
            eval_metric=rec.eval_metric,
            metric_mode=rec.metric_mode,
            epochs=self.epochs(rec.id) if rec.status != "QUEUED" else [],
            summary=jsonutil.loads(rec.summary_json),
            error=jsonutil.loads(rec.error_json),
        )

    def events(self, job_id: str) -> list[EventRecord]:
        """The job's status history, oldest first, starting with its creation (None → QUEUED)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(E.c.job_id, E.c.from_status, E.c.to_status, E.c.at, E.c.reason)
                .where(E.c.job_id == job_id)
                .order_by(E.c.id)
            ).all()
            if not rows and conn.execute(select(J.c.id).where(J.c.id == job_id)).first() is None:
                raise JobNotFound(job_id, self.target)
        return [EventRecord(*r) for r in rows]

    def list_jobs(
        self,
        *,
        statuses: Sequence[str] | None = None,
        job_type: str | None = None,
        experiment_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
    ) -> list[JobRecord]:
        """Jobs matching every given filter, newest first (by creation time), at most ``limit``."""
        stmt = select(*_JOB_COLUMNS)
        if statuses:
            stmt = stmt.where(J.c.status.in_(list(statuses)))
        if job_type:
            stmt = stmt.where(J.c.job_type == job_type)
        if experiment_name:
            stmt = stmt.where(J.c.experiment_name == experiment_name)
        if since is not None:
            stmt = stmt.where(J.c.created_at >= since)
        if until is not None:
            stmt = stmt.where(J.c.created_at < until)
        stmt = stmt.order_by(J.c.created_at.desc(), J.c.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.db.read() as conn:
            recs = [JobRecord(*r) for r in conn.execute(stmt).all()]
        out = [self._apply_liveness(r) if r.status in ("RUNNING", "QUEUED") else r for r in recs]
        if statuses:  # a verdict may have moved a job out of the requested statuses
            out = [r for r in out if r.status in statuses]
        return out

    # -- liveness --------------------------------------------------------------------------

    def _apply_liveness(self, rec: JobRecord) -> JobRecord:
        """Mark a job FAILED if the process it depends on is provably gone or its lease expired."""
        verdict = _liveness_verdict(rec, utcnow())
        if verdict is None:
            return rec
        try:
            with self.db.write() as conn:
                self._apply_transition(conn, rec.id, JobStatus(rec.status), JobStatus.FAILED, reason=verdict,
                                       token=rec.claim_token)
        except (InvalidTransition, RunnerFenced):
            pass  # someone else moved it first; re-read below
        return self.get_job(rec.id, check_liveness=False)

    # -- transitions -----------------------------------------------------------------------

    def transition(self, job_id: str, new: JobStatus | str, *, expected: JobStatus | str | None = None,
                   reason: str | None = None) -> JobRecord:
        """Move a job to ``new`` if the state machine allows it from its status (or from ``expected``).

        Raises:
            JobNotFound: no job has this id.
            InvalidTransition: the move is not allowed from the job's status; nothing changes.
        """
        new = JobStatus(new)
        with self.db.write() as conn:
            if expected is None:
                current = conn.execute(select(J.c.status).where(J.c.id == job_id)).scalar()
                if current is None:
                    raise JobNotFound(job_id, self.target)
                expected = current
            self._apply_transition(conn, job_id, JobStatus(expected), new, reason=reason)
        return self.get_job(job_id, check_liveness=False)

    def _apply_transition(
        self,
        conn: Connection,
        job_id: str,
        expected: JobStatus,
        new: JobStatus,
        *,
        reason: str | None,
        token: int | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        """The one place a status changes: pure check, conditional UPDATE, event row; same transaction."""
        check_transition(expected, new, job_id=job_id)
        now = utcnow()
        vals: dict[str, Any] = {"status": new.value, "updated_at": now, "reason": reason, **(values or {})}
        if new.is_terminal:
            vals["finished_at"] = now
            vals["lease_expires_at"] = None
            vals["result_json"] = self._frozen_result(conn, job_id, vals)
        cond = [J.c.id == job_id, J.c.status == expected.value]
        if token is not None:
            cond.append(J.c.claim_token == token)
        if conn.execute(update(J).where(and_(*cond)).values(**vals)).rowcount != 1:
            row = conn.execute(select(J.c.status, J.c.claim_token).where(J.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id, self.target)
            if token is not None:  # a runner's write: it no longer owns the job
                raise RunnerFenced(job_id, row.status)
            raise InvalidTransition(job_id, row.status, new)
        conn.execute(insert(E), {"job_id": job_id, "from_status": expected.value, "to_status": new.value,
                                 "at": now, "reason": reason})
        log.debug("job %s: %s -> %s (%s)", job_id, expected, new, reason)

    def _frozen_result(self, conn: Connection, job_id: str, vals: dict[str, Any]) -> str:
        row = conn.execute(
            select(J.c.eval_metric, J.c.metric_mode, J.c.summary_json, J.c.error_json).where(J.c.id == job_id)
        ).first()
        if row is None:
            return "{}"
        summary = vals.get("summary_json", row.summary_json)
        error = vals.get("error_json", row.error_json)
        result = results.compose(
            eval_metric=row.eval_metric,
            metric_mode=row.metric_mode,
            epochs=self._epochs(conn, job_id),
            summary=jsonutil.loads(summary),
            error=jsonutil.loads(error),
        )
        return jsonutil.dumps(result, "result")

    # -- runner writes (fenced by the claim token) ------------------------------------------

    def claim(self, job_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> int:
        """QUEUED → RUNNING for the calling process; returns the fencing token its later writes must carry."""
        with self.db.write() as conn:
            return self._claim(conn, job_id, lease_s)

    def claim_next(self, runner_kinds: Iterable[str], *, lease_s: float = DEFAULT_LEASE_S) -> tuple[str, int] | None:
        """Claim the oldest QUEUED job run by one of ``runner_kinds``; None when there is none."""
        with self.db.write() as conn:
            job_id = conn.execute(
                select(J.c.id)
                .where(J.c.status == "QUEUED", J.c.runner_kind.in_(list(runner_kinds)))
                .order_by(J.c.created_at, J.c.id)
                .limit(1)
            ).scalar()
            if job_id is None:
                return None
            return job_id, self._claim(conn, job_id, lease_s)

    def _claim(self, conn: Connection, job_id: str, lease_s: float) -> int:
        token = conn.execute(select(J.c.claim_token).where(J.c.id == job_id)).scalar()
        if token is None:
            raise JobNotFound(job_id, self.target)
        now = utcnow()
        token += 1
        self._apply_transition(
            conn, job_id, JobStatus.QUEUED, JobStatus.RUNNING, reason="claimed",
            values={"claim_token": token, "runner": liveness.current().encode(), "heartbeat_at": now,
                    "lease_expires_at": now + timedelta(seconds=lease_s)},
        )
        return int(token)

    def _fenced_row(self, conn: Connection, job_id: str, token: int) -> Any:
        row = conn.execute(
            select(J.c.status, J.c.claim_token, J.c.cancel_requested).where(J.c.id == job_id)
        ).first()
        if row is None:
            raise JobNotFound(job_id, self.target)
        if row.status != "RUNNING" or row.claim_token != token:
            raise RunnerFenced(job_id, row.status)
        return row

    def heartbeat(self, job_id: str, token: int, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend the runner's lease; returns whether cancellation was requested."""
        now = utcnow()
        with self.db.write() as conn:
            row = self._fenced_row(conn, job_id, token)
            conn.execute(update(J).where(J.c.id == job_id).values(
                heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s)))
            return bool(row.cancel_requested)

    def add_epoch(self, job_id: str, token: int, epoch: int, train_json: str, validation_json: str,
                  *, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Append one epoch's metrics; returns whether cancellation was requested.

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        now = utcnow()
        with self.db.write() as conn:
            row = self._fenced_row(conn, job_id, token)
            seq = conn.execute(select(func.coalesce(func.max(EP.c.seq), 0)).where(EP.c.job_id == job_id)).scalar()
            conn.execute(insert(EP), {"job_id": job_id, "seq": int(seq or 0) + 1, "epoch": epoch,
                                      "train_json": train_json, "validation_json": validation_json, "at": now})
            conn.execute(update(J).where(J.c.id == job_id).values(
                updated_at=now, heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s)))
            return bool(row.cancel_requested)

    def add_export(self, job_id: str, token: int, kind: str, columns: list[str], rows_json: list[str],
                   path: str, view_name: str) -> None:
        """Record an export atomically: its rows, a read-only view over them, and its file path.

        The view turns each stored JSON array back into named columns, so plain ``sqlite3`` can
        ``SELECT * FROM <view_name>``.
        """
        XR = models.export_rows
        select_list = ", ".join(
            f"json_extract(data_json, '$[{i}]') AS \"{col.replace(chr(34), chr(34) * 2)}\""
            for i, col in enumerate(columns)
        ) or "NULL AS empty"
        view_sql = (
            f'CREATE VIEW "{view_name}" AS SELECT {select_list} FROM export_rows '
            f"WHERE job_id = '{job_id}' AND kind = '{kind}' ORDER BY seq"
        )
        with self.db.write() as conn:
            self._fenced_row(conn, job_id, token)
            conn.execute(XR.delete().where(XR.c.job_id == job_id, XR.c.kind == kind))
            if rows_json:
                conn.execute(insert(XR), [{"job_id": job_id, "kind": kind, "seq": i, "data_json": d}
                                          for i, d in enumerate(rows_json)])
            conn.exec_driver_sql(f'DROP VIEW IF EXISTS "{view_name}"')
            conn.exec_driver_sql(view_sql)
            paths, views = conn.execute(
                select(J.c.export_paths_json, J.c.source_views_json).where(J.c.id == job_id)).one()
            paths_d, views_d = jsonutil.loads(paths), jsonutil.loads(views)
            paths_d[kind], views_d[kind] = path, view_name
            conn.execute(update(J).where(J.c.id == job_id).values(
                updated_at=utcnow(), export_paths_json=jsonutil.dumps(paths_d, "export_paths"),
                source_views_json=jsonutil.dumps(views_d, "source_views")))

    def finish(self, job_id: str, token: int, new: JobStatus, *, reason: str,
               summary_json: str | None = None, error_json: str | None = None) -> None:
        """RUNNING → a terminal status by the runner holding ``token`` (fenced)."""
        values: dict[str, Any] = {"cancel_requested": False}
        if summary_json is not None:
            values["summary_json"] = summary_json
        if error_json is not None:
            values["error_json"] = error_json
        with self.db.write() as conn:
            self._apply_transition(conn, job_id, JobStatus.RUNNING, new, reason=reason, token=token, values=values)

    def fail_unclaimed(self, job_id: str, reason: str, error_json: str | None = None) -> bool:
        """QUEUED → FAILED for a job that cannot be started; False if it was no longer QUEUED."""
        try:
            with self.db.write() as conn:
                self._apply_transition(conn, job_id, JobStatus.QUEUED, JobStatus.FAILED, reason=reason,
                                       values={"error_json": error_json} if error_json else None)
            return True
        except InvalidTransition:
            return False

    def request_cancel(self, job_id: str, *, reason: str = "canceled by user") -> JobStatus:
        """Cancel a QUEUED job at once; ask a RUNNING one to stop; leave a terminal one alone.

        Returns the status right after the call (RUNNING means a stop was requested).
        """
        with self.db.write() as conn:
            status = conn.execute(select(J.c.status).where(J.c.id == job_id)).scalar()
            if status is None:
                raise JobNotFound(job_id, self.target)
            if status == "QUEUED":
                self._apply_transition(conn, job_id, JobStatus.QUEUED, JobStatus.CANCELED, reason=reason)
                return JobStatus.CANCELED
            if status == "RUNNING":
                conn.execute(update(J).where(J.c.id == job_id, J.c.status == "RUNNING").values(
                    cancel_requested=True, updated_at=utcnow()))
            return JobStatus(status)

    def cancel_process_jobs(self, process: str, *, reason: str) -> int:
        """Cancel every job that a process runs or holds queued for its in-process runners.

        Used when that process is stopped by a signal. Returns how many jobs were canceled.
        """
        kinds = list(IN_PROCESS_RUNNERS)
        with self.db.write() as conn:
            rows = conn.execute(
                select(J.c.id, J.c.status, J.c.claim_token).where(
                    ((J.c.status == "RUNNING") & ((J.c.runner == process) |
                                                  ((J.c.submitter == process) & J.c.runner_kind.in_(kinds))))
                    | ((J.c.status == "QUEUED") & (J.c.submitter == process) & J.c.runner_kind.in_(kinds))
                )
            ).all()
            for job_id, status, token in rows:
                self._apply_transition(conn, job_id, JobStatus(status), JobStatus.CANCELED, reason=reason,
                                       token=token)
        return len(rows)

    def prune(self, finished_before: datetime, *, dry_run: bool = False) -> PruneReport:
        """Remove terminal jobs finished before ``finished_before``, with their epochs, events, exports, views and files.

        A training job whose model is registered is kept (its registry entry needs it). Files are
        deleted after the transaction commits, never under the lock.
        """
        XR, MR, RM = models.export_rows, models.model_runs, models.registered_models
        report = PruneReport()
        with self.db.write() as conn:
            rows = conn.execute(
                select(J.c.id, J.c.status, J.c.job_type, J.c.model_run_id, J.c.export_paths_json,
                       J.c.source_views_json)
                .where(J.c.status.in_(["COMPLETED", "FAILED", "CANCELED"]), J.c.finished_at < finished_before)
                .order_by(J.c.created_at)
            ).all()
            for job_id, status, job_type, model_run_id, paths_json, views_json in rows:
                own_model = job_type != "inference" and model_run_id is not None
                if own_model:
                    key = conn.execute(select(RM.c.key).where(RM.c.model_run_id == model_run_id)).scalar()
                    if key is not None:
                        report.kept[job_id] = f"its model is registered as {key!r}"
                        continue
                report.removed.append(job_id)
                report.files.append(str(self.job_dir(job_id)))
                report.files.extend(p for p in jsonutil.loads(paths_json).values()
                                    if not p.startswith(str(self.job_dir(job_id))))
                views = list(jsonutil.loads(views_json).values())
                report.views.extend(views)
                if own_model:
                    report.files.append(str(self.model_dir(model_run_id)))
                if dry_run:
                    continue
                for view in views:
                    conn.exec_driver_sql(f'DROP VIEW IF EXISTS "{view}"')
                conn.execute(XR.delete().where(XR.c.job_id == job_id))
                conn.execute(EP.delete().where(EP.c.job_id == job_id))
                conn.execute(E.delete().where(E.c.job_id == job_id))
                conn.execute(MR.delete().where(MR.c.job_id == job_id))
                conn.execute(J.delete().where(J.c.id == job_id))
        if not dry_run:
            for path in report.files:
                _remove_path(Path(path))
        return report

    def set_runner_identity(self, job_id: str, runner: str) -> None:
        """Overwrite the recorded runner of a RUNNING job (fault injection: make it look dead or remote)."""
        with self.db.write() as conn:
            conn.execute(update(J).where(J.c.id == job_id, J.c.status == "RUNNING").values(runner=runner))

    # -- models ----------------------------------------------------------------------------

    def get_model_run(self, model_run_id: str) -> tuple[dict[str, Any], JobRecord]:
        """The model run and its training job.

        Raises:
            ModelNotFound: no such model run.
        """
        with self.db.read() as conn:
            row = conn.execute(select(models.model_runs).where(models.model_runs.c.id == model_run_id)).first()
        if row is None:
            raise ModelNotFound(model_run_id)
        run = dict(row._mapping)
        return run, self.get_job(run["job_id"])

    def resolve_registered(self, key: str) -> str:
        """The model_run_id behind a registered model key ("name:version")."""
        with self.db.read() as conn:
            run_id = conn.execute(select(models.registered_models.c.model_run_id)
                                  .where(models.registered_models.c.key == key)).scalar()
        if run_id is None:
            raise ModelNotFound(key, "no registered model has this key")
        return str(run_id)

    def register_model(self, key: str, model_name: str, version_name: str, model_run_id: str,
                       comment: str | None) -> None:
        """Record a registry entry; a (name, version) pair can be registered once."""
        RM = models.registered_models
        with self.db.write() as conn:
            if conn.execute(select(RM.c.key).where(RM.c.model_name == model_name,
                                                   RM.c.version_name == version_name)).first():
                raise DuplicateName(
                    f"Model {model_name!r} already has a version {version_name!r}; choose a new version_name.")
            conn.execute(insert(RM), {"key": key, "model_name": model_name, "version_name": version_name,
                                      "model_run_id": model_run_id, "comment": comment, "created_at": utcnow()})


def _liveness_verdict(rec: JobRecord, now: datetime) -> str | None:
    """Why a RUNNING or QUEUED job can never finish, or None if it still can."""
    if rec.status == "RUNNING":
        ident = liveness.ProcessIdentity.decode(rec.runner)
        alive = liveness.is_alive(ident) if ident else None
        if alive is False:
            return RUNNER_LOST
        if alive is None and rec.lease_expires_at is not None and rec.lease_expires_at < now:
            return f"{RUNNER_LOST} (lease expired)"
        return None
    if rec.status == "QUEUED" and rec.runner_kind in IN_PROCESS_RUNNERS:
        ident = liveness.ProcessIdentity.decode(rec.submitter)
        if ident and liveness.is_alive(ident) is False:
            return SUBMITTER_LOST
    return None
