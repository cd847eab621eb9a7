"""Store: every INSERT, UPDATE and DELETE of jobtrack, and the one place a job's status changes.

Status changes go through ``_apply_transition``: the pure check of ``states.check_transition``,
then a conditional UPDATE (the row changes only if its status, and for runner writes its claim
token, are still what the caller saw), then the event row, all in one write transaction.

Statements are plain SQL text with ``:name`` parameters (the schema itself is defined with
SQLModel in ``models.py``): the same text runs on a raw sqlite3 connection, which keeps the hot
paths within a few times the cost of SQLite itself, and through SQLAlchemy on other databases.
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

from jobtrack import jsonutil, liveness, results
from jobtrack.config import DEFAULT_LOCK_TIMEOUT_S, files_dir, lease_seconds, resolve_db
from jobtrack.errors import (
    DuplicateName,
    InvalidTransition,
    JobNotFound,
    ModelNotFound,
    RunnerFenced,
)
from jobtrack.states import TERMINAL, JobStatus, check_transition
from jobtrack.store.db import Database, Tx
from jobtrack.store.schema import prepare
from jobtrack.timeutil import from_iso, to_iso, utcnow

log = logging.getLogger(__name__)

RUNNER_LOST = "runner lost"
SUBMITTER_LOST = "submitter lost"
IN_PROCESS_RUNNERS = ("thread", "eager", "process")
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row as read from the store.

    Timestamps are kept as the stored ISO 8601 UTC text (``*_iso``), which ``get_status()``
    returns as is; the ``*_at`` properties give them as aware UTC datetimes.
    """

    id: str
    job_type: str
    status: str
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
    summary_json: str | None
    error_json: str | None
    result_json: str | None
    export_paths_json: str
    source_views_json: str
    epoch_seq: int

    @property
    def created_at(self) -> datetime:
        return from_iso(self.created_iso)

    @property
    def updated_at(self) -> datetime:
        return from_iso(self.updated_iso)

    @property
    def finished_at(self) -> datetime | None:
        return None if self.finished_iso is None else from_iso(self.finished_iso)

    @property
    def lease_expires_at(self) -> datetime | None:
        return None if self.lease_expires_iso is None else from_iso(self.lease_expires_iso)

    @property
    def spec(self) -> dict[str, Any]:
        return jsonutil.loads(self.spec_json) or {}


# Column names in the table, in JobRecord's order (the record renames *_at columns to *_iso).
_JOB_FIELDS = [f.name.replace("_iso", "_at") for f in fields(JobRecord)]
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)
_SELECT_JOB = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = :id"


# What get_status() of a finished job needs, in the order of its dict (SPEC §2), and no more: the
# spec, summary and runner columns can be large and a finished job's status never needs them.
_STATUS_FIELDS = ("id", "status", "created_at", "finished_at", "updated_at", "experiment_name", "job_type",
                  "model_run_id", "result_json", "export_paths_json", "source_views_json")
_SELECT_STATUS = f"SELECT {', '.join(_STATUS_FIELDS)} FROM jobs WHERE id = :id"
_TERMINAL = frozenset(s.value for s in JobStatus if s.is_terminal)


def _record(row: Sequence[Any]) -> JobRecord:
    return JobRecord(*row)


def _in_list(name: str, items: Sequence[str], params: dict[str, Any]) -> str:
    """``(:name0, :name1, ...)`` with the values added to ``params``."""
    keys = [f"{name}{i}" for i in range(len(items))]
    params.update(zip(keys, items))
    return "(" + ", ".join(f":{k}" for k in keys) + ")"


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
        self.lease_s = lease_seconds()
        self.db = Database(self.target, lock_timeout=lock_timeout)
        self._sqlite_files = str(files_dir(self.target)) if self.db.is_sqlite else None
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
        """Release this thread's connections; the Store can still be used (it reconnects)."""
        self.db.dispose()

    @property
    def files_dir(self) -> Path:
        """Directory beside the database holding models, exports and logs."""
        return Path(self._files_root())

    def _files_root(self) -> str:
        if self._sqlite_files is not None:
            return self._sqlite_files
        return os.environ.get("JOBTRACK_FILES") or str(Path.home() / ".local" / "share" / "jobtrack" / "files")

    def job_dir(self, job_id: str) -> Path:
        return self.files_dir / "jobs" / job_id

    def model_dir(self, model_run_id: str) -> str:
        """Where a model run's files live (a path string: it is computed for every job submitted)."""
        return os.path.join(self._files_root(), "models", model_run_id)

    # -- creating jobs ---------------------------------------------------------------------

    def create_job(self, values: dict[str, Any], *, model_run: dict[str, Any] | None = None,
                   unique_alias: str | None = None, claim: bool = False,
                   lease_s: float | None = None) -> int | None:
        """Insert a QUEUED job (and its model run) with its creation event.

        ``unique_alias`` (a normalised output alias) is refused if another job uses it.
        ``claim=True`` also claims it for the calling process in the same transaction (the eager
        runner, which runs the job at once) and returns the fencing token; the history still
        shows QUEUED → RUNNING.
        """
        now = to_iso(utcnow())
        row: dict[str, Any] = {name: None for name in _JOB_FIELDS}
        row.update(status="QUEUED", created_at=now, updated_at=now, submitter=liveness.current().encode(),
                   claim_token=0, cancel_requested=False, export_paths_json="{}", source_views_json="{}",
                   spec_json="{}", runner_kind="thread", epoch_seq=0)
        row.update(values)
        with self.db.write(durable=not claim) as tx:  # an eager job is reported when it finishes
            if unique_alias is not None:
                self._check_alias_free(tx, unique_alias)
            tx.run(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join(':' + n for n in _JOB_FIELDS)})", row)
            if model_run is not None:
                tx.run("INSERT INTO model_runs (id, job_id, experiment_name, task_type, created_at) "
                       "VALUES (:id, :job_id, :experiment_name, :task_type, :created_at)",
                       {"created_at": now, **model_run})
            self._add_event(tx, row["id"], None, "QUEUED", now, "submitted")
            if claim:
                return self._claim(tx, row["id"], lease_s, token=0)  # just inserted with token 0
        return None

    @staticmethod
    def _add_event(tx: Tx, job_id: str, src: str | None, dst: str, at: str, reason: str | None) -> None:
        tx.run("INSERT INTO job_events (job_id, from_status, to_status, at, reason) "
               "VALUES (:job_id, :src, :dst, :at, :reason)",
               {"job_id": job_id, "src": src, "dst": dst, "at": at, "reason": reason})

    def _check_alias_free(self, tx: Tx, alias_key: str) -> None:
        rows = tx.all("SELECT id, status, export_paths_json FROM jobs WHERE output_alias = :alias",
                      {"alias": alias_key})
        for job_id, status, paths in rows:
            if not JobStatus(status).is_terminal or paths != "{}":
                raise DuplicateName(
                    f"output_alias {alias_key!r} is already used by job {job_id!r} ({status}); "
                    "choose a new output_alias, or prune that job first."
                )

    # -- reading ---------------------------------------------------------------------------

    def finished_status_row(self, job_id: str) -> tuple[Any, ...] | None:
        """A finished job's status fields (``_STATUS_FIELDS``) in one narrow read; None while it can change.

        Raises:
            JobNotFound: no job has this id.
        """
        row = self.db.read_one(_SELECT_STATUS, {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        return row if row[1] in _TERMINAL and row[8] is not None else None  # result_json: frozen at the end

    def get_job(self, job_id: str, *, check_liveness: bool = True) -> JobRecord:
        """The job's row; a RUNNING job whose runner is dead is first marked FAILED (SPEC §5).

        Raises:
            JobNotFound: no job has this id.
        """
        with self.db.read(snapshot=False) as tx:
            row = tx.one(_SELECT_JOB, {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        rec = _record(row)
        if check_liveness and rec.status in ("RUNNING", "QUEUED"):
            rec = self._apply_liveness(rec)
        return rec

    def epochs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's reported epochs in reporting order."""
        with self.db.read() as tx:
            return self._epochs(tx, job_id)

    @staticmethod
    def _epochs(tx: Tx, job_id: str) -> list[dict[str, Any]]:
        rows = tx.all("SELECT epoch, train_json, validation_json FROM job_epochs WHERE job_id = :id ORDER BY seq",
                      {"id": job_id})
        return [{"epoch": e, "train": jsonutil.loads(t), "validation": jsonutil.loads(v)} for e, t, v in rows]

    def result(self, rec: JobRecord) -> dict[str, Any]:
        """The job's result dict: frozen for terminal jobs, composed from its epochs otherwise."""
        if rec.result_json is not None:
            return jsonutil.loads(rec.result_json)  # type: ignore[no-any-return]
        return results.compose(
            eval_metric=rec.eval_metric,
            metric_mode=rec.metric_mode,
            epochs=self.epochs(rec.id) if rec.epoch_seq else [],
            summary=jsonutil.loads(rec.summary_json),
            error=jsonutil.loads(rec.error_json),
        )

    def events(self, job_id: str) -> list[EventRecord]:
        """The job's status history, oldest first, starting with its creation (None → QUEUED)."""
        with self.db.read() as tx:
            rows = tx.all("SELECT job_id, from_status, to_status, at, reason FROM job_events "
                          "WHERE job_id = :id ORDER BY id", {"id": job_id})
            if not rows and tx.one("SELECT id FROM jobs WHERE id = :id", {"id": job_id}) is None:
                raise JobNotFound(job_id, self.target)
        return [EventRecord(j, f, t, from_iso(at), r) for j, f, t, at, r in rows]

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
        where: list[str] = []
        params: dict[str, Any] = {}
        if statuses:
            where.append(f"status IN {_in_list('s', list(statuses), params)}")
        if job_type:
            where.append("job_type = :job_type")
            params["job_type"] = job_type
        if experiment_name:
            where.append("experiment_name = :experiment")
            params["experiment"] = experiment_name
        if since is not None:
            where.append("created_at >= :since")
            params["since"] = to_iso(since)
        if until is not None:
            where.append("created_at < :until")
            params["until"] = to_iso(until)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        with self.db.read() as tx:
            recs = [_record(r) for r in tx.all(sql, params)]
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
        reason, error_json = verdict
        values = {"error_json": error_json} if error_json else None
        try:
            with self.db.write() as tx:
                self._apply_transition(tx, rec.id, JobStatus(rec.status), JobStatus.FAILED, reason=reason,
                                       token=rec.claim_token, values=values)
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
        with self.db.write() as tx:
            if expected is None:
                expected = tx.scalar(f"SELECT status FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
                if expected is None:
                    raise JobNotFound(job_id, self.target)
            self._apply_transition(tx, job_id, JobStatus(expected), new, reason=reason)
        return self.get_job(job_id, check_liveness=False)

    def _apply_transition(
        self,
        tx: Tx,
        job_id: str,
        expected: JobStatus,
        new: JobStatus,
        *,
        reason: str | None,
        token: int | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        """The one place a status changes: pure check, conditional UPDATE, event row; same transaction.

        Raises:
            InvalidTransition: the state machine refuses the move, or the job is no longer ``expected``.
            RunnerFenced: a runner write (``token`` given) on a job it no longer owns.
            JobNotFound: no such job.
        """
        check_transition(expected, new, job_id=job_id)
        now = to_iso(utcnow())
        sets: dict[str, Any] = {"status": new.value, "updated_at": now, "reason": reason, **(values or {})}
        if new.is_terminal:
            sets["finished_at"] = now
            sets["lease_expires_at"] = None
            sets["result_json"] = self._frozen_result(tx, job_id, sets)
            # The frozen result holds the summary and the error: do not store them twice.
            sets["summary_json"] = sets["error_json"] = None
        params = {f"v_{k}": v for k, v in sets.items()}
        params.update(id=job_id, expected=expected.value, token=token)
        sql = (f"UPDATE jobs SET {', '.join(f'{k} = :v_{k}' for k in sets)} "
               "WHERE id = :id AND status = :expected")
        if token is not None:
            sql += " AND claim_token = :token"
        if tx.run(sql, params) != 1:
            row = tx.one("SELECT status FROM jobs WHERE id = :id", {"id": job_id})
            if row is None:
                raise JobNotFound(job_id, self.target)
            if token is not None:  # a runner's write: it no longer owns the job
                raise RunnerFenced(job_id, row[0])
            raise InvalidTransition(job_id, row[0], new)
        self._add_event(tx, job_id, expected.value, new.value, now, reason)
        log.debug("job %s: %s -> %s (%s)", job_id, expected, new, reason)

    def _frozen_result(self, tx: Tx, job_id: str, sets: dict[str, Any]) -> str:
        eval_metric, metric_mode, summary_json, error_json, epoch_seq, _ = self._row(tx, job_id)
        result = results.compose(
            eval_metric=eval_metric,
            metric_mode=metric_mode,
            epochs=self._epochs(tx, job_id) if epoch_seq else [],
        )
        # summary and error are already JSON: splice them in rather than decode and re-encode them
        return jsonutil.splice(jsonutil.dumps(result, "result"), {
            "summary": sets.get("summary_json", summary_json),
            "error": sets.get("error_json", error_json),
        })

    # -- runner writes (fenced by the claim token) ------------------------------------------

    def claim(self, job_id: str, *, lease_s: float | None = None) -> int:
        """QUEUED → RUNNING for the calling process; returns the fencing token its later writes must carry."""
        with self.db.write(durable=False) as tx:  # no caller is told; the runner's next write syncs it
            return self._claim(tx, job_id, lease_s)

    def claim_next(self, runner_kinds: Iterable[str], *, lease_s: float | None = None) -> tuple[str, int] | None:
        """Claim the oldest QUEUED job run by one of ``runner_kinds``; None when there is none."""
        params: dict[str, Any] = {}
        kinds = _in_list("k", list(runner_kinds), params)
        sql = (f"SELECT id FROM jobs WHERE status = 'QUEUED' AND runner_kind IN {kinds} "
               f"ORDER BY created_at, id LIMIT 1{self.db.skip_locked}")
        with self.db.write(durable=False) as tx:
            job_id = tx.scalar(sql, params)
            if job_id is None:
                return None
            return job_id, self._claim(tx, job_id, lease_s)

    def _claim(self, tx: Tx, job_id: str, lease_s: float | None, *, token: int | None = None) -> int:
        """QUEUED → RUNNING under a new fencing token (the previous token + 1, read unless given)."""
        if token is None:
            token = tx.scalar(f"SELECT claim_token FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
            if token is None:
                raise JobNotFound(job_id, self.target)
        now = utcnow()
        lease_s = self.lease_s if lease_s is None else lease_s
        token = int(token) + 1
        self._apply_transition(
            tx, job_id, JobStatus.QUEUED, JobStatus.RUNNING, reason="claimed",
            values={"claim_token": token, "runner": liveness.current().encode(), "heartbeat_at": to_iso(now),
                    "lease_expires_at": to_iso(now + timedelta(seconds=lease_s))},
        )
        return token

    def _renew(self, tx: Tx, job_id: str, token: int, lease_s: float | None, *,
               epoch: bool = False) -> tuple[int, bool]:
        """Renew the runner's lease (and count an epoch); returns (epoch_seq, cancel_requested).

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        now = utcnow()
        lease_s = self.lease_s if lease_s is None else lease_s
        changed = tx.run(
            "UPDATE jobs SET updated_at = :now, heartbeat_at = :now, lease_expires_at = :lease"
            + (", epoch_seq = epoch_seq + 1" if epoch else "")
            + " WHERE id = :id AND status = 'RUNNING' AND claim_token = :token",
            {"now": to_iso(now), "lease": to_iso(now + timedelta(seconds=lease_s)), "id": job_id, "token": token},
        )
        row = tx.one("SELECT status, epoch_seq, cancel_requested FROM jobs WHERE id = :id", {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        if changed != 1:
            raise RunnerFenced(job_id, row[0])
        return int(row[1]), bool(row[2])

    def heartbeat(self, job_id: str, token: int, *, lease_s: float | None = None) -> bool:
        """Extend the runner's lease; returns whether cancellation was requested."""
        with self.db.write() as tx:
            return self._renew(tx, job_id, token, lease_s)[1]

    def add_epoch(self, job_id: str, token: int, epoch: int, train_json: str, validation_json: str,
                  *, lease_s: float | None = None) -> bool:
        """Append one epoch's metrics; returns whether cancellation was requested.

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        with self.db.write() as tx:
            seq, cancel = self._renew(tx, job_id, token, lease_s, epoch=True)
            tx.run("INSERT INTO job_epochs (job_id, seq, epoch, train_json, validation_json, at) "
                   "VALUES (:id, :seq, :epoch, :train, :validation, :at)",
                   {"id": job_id, "seq": seq, "epoch": epoch, "train": train_json, "validation": validation_json,
                    "at": to_iso(utcnow())})
            return cancel

    def add_export(self, job_id: str, token: int, kind: str, columns: list[str], rows_json: list[str],
                   path: str, view_name: str) -> None:
        """Record an export atomically: its rows, a read-only view over them, and its file path.

        The view turns each stored JSON array back into named columns, so plain ``sqlite3`` can
        ``SELECT * FROM <view_name>``.
        """
        with self.db.write() as tx:
            self._renew(tx, job_id, token, None)
            tx.run("DELETE FROM export_rows WHERE job_id = :id AND kind = :kind", {"id": job_id, "kind": kind})
            tx.run_many("INSERT INTO export_rows (job_id, kind, seq, data_json) VALUES (:id, :kind, :seq, :data)",
                        [{"id": job_id, "kind": kind, "seq": i, "data": d} for i, d in enumerate(rows_json)])
            tx.ddl(f'DROP VIEW IF EXISTS "{view_name}"')
            tx.ddl(self.db.export_view_sql(view_name, columns, job_id, kind))
            tx.run("DELETE FROM job_exports WHERE job_id = :id AND kind = :kind", {"id": job_id, "kind": kind})
            tx.run("INSERT INTO job_exports (job_id, kind, path, view_name, columns_json) "
                   "VALUES (:id, :kind, :path, :view, :columns)",
                   {"id": job_id, "kind": kind, "path": path, "view": view_name,
                    "columns": jsonutil.dumps(columns, "export columns")})
            paths, views = tx.one("SELECT export_paths_json, source_views_json FROM jobs WHERE id = :id",
                                  {"id": job_id}) or ("{}", "{}")
            paths_d, views_d = jsonutil.loads(paths), jsonutil.loads(views)
            paths_d[kind], views_d[kind] = path, view_name
            tx.run("UPDATE jobs SET export_paths_json = :paths, source_views_json = :views WHERE id = :id",
                   {"paths": jsonutil.dumps(paths_d, "export_paths"), "views": jsonutil.dumps(views_d, "source_views"),
                    "id": job_id})

    def finish(self, job_id: str, token: int, new: JobStatus, *, reason: str,
               summary_json: str | None = None, error_json: str | None = None) -> JobStatus:
        """RUNNING → a terminal status by the runner holding ``token`` (fenced); returns the status applied.

        COMPLETED becomes CANCELED if a cancel was requested that the code never noticed (SPEC §5:
        the job was asked to stop; its summary is kept).
        """
        values: dict[str, Any] = {"cancel_requested": False}
        if summary_json is not None:
            values["summary_json"] = summary_json
        if error_json is not None:
            values["error_json"] = error_json
        with self.db.write() as tx:
            if new is JobStatus.COMPLETED and self._row(tx, job_id)[5]:  # cancel_requested
                new, reason = JobStatus.CANCELED, "canceled by user"
            self._apply_transition(tx, job_id, JobStatus.RUNNING, new, reason=reason, token=token, values=values)
        return new

    def _row(self, tx: Tx, job_id: str) -> tuple[Any, ...]:
        """(eval_metric, metric_mode, summary_json, error_json, epoch_seq, cancel_requested) of a job.

        Read once per transaction: finishing a job needs it twice (cancel check, frozen result).
        """
        row: tuple[Any, ...] | None = tx.memo.get(("job", job_id))
        if row is None:
            row = tx.one("SELECT eval_metric, metric_mode, summary_json, error_json, epoch_seq, cancel_requested "
                         f"FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
            if row is None:
                raise JobNotFound(job_id, self.target)
            tx.memo[("job", job_id)] = row
        return row

    def fail_unclaimed(self, job_id: str, reason: str, error_json: str | None = None) -> bool:
        """QUEUED → FAILED for a job that cannot be started; False if it was no longer QUEUED."""
        try:
            with self.db.write() as tx:
                self._apply_transition(tx, job_id, JobStatus.QUEUED, JobStatus.FAILED, reason=reason,
                                       values={"error_json": error_json} if error_json else None)
            return True
        except InvalidTransition:
            return False

    def request_cancel(self, job_id: str, *, reason: str = "canceled by user") -> JobStatus:
        """Cancel a QUEUED job at once; ask a RUNNING one to stop; leave a terminal one alone.

        Returns the status right after the call (RUNNING means a stop was requested).
        """
        with self.db.write() as tx:
            status = tx.scalar(f"SELECT status FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
            if status is None:
                raise JobNotFound(job_id, self.target)
            if status == "QUEUED":
                self._apply_transition(tx, job_id, JobStatus.QUEUED, JobStatus.CANCELED, reason=reason)
                return JobStatus.CANCELED
            if status == "RUNNING":
                tx.run("UPDATE jobs SET cancel_requested = :yes, updated_at = :now "
                       "WHERE id = :id AND status = 'RUNNING'",
                       {"yes": True, "now": to_iso(utcnow()), "id": job_id})
            return JobStatus(status)

    def cancel_process_jobs(self, process: str, *, reason: str) -> int:
        """Cancel every job that a process runs or holds queued for its in-process runners.

        Used when that process is stopped by a signal. Returns how many jobs were canceled.
        """
        params: dict[str, Any] = {"p": process}
        kinds = _in_list("k", list(IN_PROCESS_RUNNERS), params)
        with self.db.write() as tx:
            rows = tx.all(
                "SELECT id, status, claim_token FROM jobs WHERE "
                f"(status = 'RUNNING' AND (runner = :p OR (submitter = :p AND runner_kind IN {kinds}))) "
                f"OR (status = 'QUEUED' AND submitter = :p AND runner_kind IN {kinds}){self.db.for_update}",
                params,
            )
            for job_id, status, token in rows:
                self._apply_transition(tx, job_id, JobStatus(status), JobStatus.CANCELED, reason=reason,
                                       token=token)
        return len(rows)

    def prune(self, finished_before: datetime, *, dry_run: bool = False) -> PruneReport:
        """Remove terminal jobs finished before ``finished_before``, with their epochs, events, exports, views and files.

        A training job whose model is registered is kept (its registry entry needs it). Files are
        deleted after the transaction commits, never under the lock.
        """
        report = PruneReport()
        with self.db.write() as tx:
            rows = tx.all(
                "SELECT id, job_type, model_run_id, export_paths_json, source_views_json, spec_json FROM jobs "
                f"WHERE status IN ({_TERMINAL_SQL}) AND finished_at < :before ORDER BY created_at",
                {"before": to_iso(finished_before)},
            )
            for job_id, job_type, model_run_id, paths_json, views_json, spec_json in rows:
                own_model = job_type != "inference" and model_run_id is not None
                if own_model:
                    key = tx.scalar("SELECT key FROM registered_models WHERE model_run_id = :m", {"m": model_run_id})
                    if key is not None:
                        report.kept[job_id] = f"its model is registered as {key!r}"
                        continue
                job_dir = str(self.job_dir(job_id))
                report.removed.append(job_id)
                report.files.append(job_dir)
                report.files.extend(p for p in jsonutil.loads(paths_json).values() if not p.startswith(job_dir))
                views = list(jsonutil.loads(views_json).values())
                report.views.extend(views)
                if own_model:
                    recorded = (jsonutil.loads(spec_json) or {}).get("model_dir")
                    report.files.append(recorded or self.model_dir(model_run_id))
                if dry_run:
                    continue
                for view in views:
                    tx.ddl(f'DROP VIEW IF EXISTS "{view}"')
                for table in ("export_rows", "job_exports", "job_epochs", "job_events", "model_runs"):
                    tx.run(f"DELETE FROM {table} WHERE job_id = :id", {"id": job_id})
                tx.run("DELETE FROM jobs WHERE id = :id", {"id": job_id})
        if not dry_run:
            for path in report.files:
                _remove_path(Path(path))
        return report

    def set_runner_identity(self, job_id: str, runner: str) -> None:
        """Overwrite the recorded runner of a RUNNING job (fault injection: make it look dead or remote)."""
        with self.db.write() as tx:
            tx.run("UPDATE jobs SET runner = :runner WHERE id = :id AND status = 'RUNNING'",
                   {"runner": runner, "id": job_id})

    # -- models ----------------------------------------------------------------------------

    def get_model_run(self, model_run_id: str) -> tuple[dict[str, Any], JobRecord]:
        """The model run and its training job.

        Raises:
            ModelNotFound: no such model run.
        """
        with self.db.read() as tx:
            row = tx.one("SELECT id, job_id, experiment_name, task_type, created_at FROM model_runs WHERE id = :id",
                         {"id": model_run_id})
        if row is None:
            raise ModelNotFound(model_run_id)
        run = dict(zip(("id", "job_id", "experiment_name", "task_type", "created_at"), row))
        return run, self.get_job(run["job_id"])

    def resolve_registered(self, key: str) -> str:
        """The model_run_id behind a registered model key ("name:version")."""
        with self.db.read() as tx:
            run_id = tx.scalar("SELECT model_run_id FROM registered_models WHERE key = :key", {"key": key})
        if run_id is None:
            raise ModelNotFound(key, "no registered model has this key")
        return str(run_id)

    def register_model(self, key: str, model_name: str, version_name: str, model_run_id: str,
                       comment: str | None) -> None:
        """Record a registry entry; a (name, version) pair can be registered once."""
        with self.db.write() as tx:
            if tx.one("SELECT key FROM registered_models WHERE model_name = :n AND version_name = :v",
                      {"n": model_name, "v": version_name}):
                raise DuplicateName(
                    f"Model {model_name!r} already has a version {version_name!r}; choose a new version_name.")
            tx.run("INSERT INTO registered_models (key, model_name, version_name, model_run_id, comment, created_at) "
                   "VALUES (:key, :n, :v, :m, :c, :at)",
                   {"key": key, "n": model_name, "v": version_name, "m": model_run_id, "c": comment,
                    "at": to_iso(utcnow())})


def runner_exit_error(how: str) -> str:
    """The ``error`` of a job whose runner process ended without recording the end itself."""
    return jsonutil.dumps({"type": "RunnerExited", "message": f"The job's runner process {how}.",
                           "traceback": ""}, "error")


def _liveness_verdict(rec: JobRecord, now: datetime) -> tuple[str, str | None] | None:
    """Why a RUNNING or QUEUED job can never finish (reason, error JSON), or None if it still can."""
    if rec.status == "RUNNING":
        ident = liveness.ProcessIdentity.decode(rec.runner)
        alive = liveness.is_alive(ident) if ident else None
        if alive is False:
            how = liveness.child_exit(ident.pid) if ident else None  # a process-runner child of ours?
            return (f"runner process {how}", runner_exit_error(how)) if how else (RUNNER_LOST, None)
        if alive is None and rec.lease_expires_at is not None and rec.lease_expires_at < now:
            return f"{RUNNER_LOST} (lease expired)", None
        return None
    if rec.status == "QUEUED" and rec.runner_kind in IN_PROCESS_RUNNERS:
        ident = liveness.ProcessIdentity.decode(rec.submitter)
        if ident and liveness.is_alive(ident) is False:
            return SUBMITTER_LOST, None
    return None
