"""Creating jobs and reading them back: rows, epochs, results, histories and listings.

Reads take no lock. The one write on the read path is a liveness verdict (SPEC §5): a QUEUED or
RUNNING job that nothing can finish any more is recorded FAILED when it is read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from jobtrack import jsonutil, liveness, results
from jobtrack.errors import DuplicateName, JobNotFound, StoreError, StoreReadOnly
from jobtrack.states import INITIAL, TERMINAL, JobStatus
from jobtrack.store import experiments
from jobtrack.store.base import add_event, in_list
from jobtrack.store.core import FencedCore
from jobtrack.store.db import Tx
from jobtrack.store.peek import after_prefix
from jobtrack.store.records import (
    JOB_COLUMNS,
    SELECT_JOB,
    STATUS_COLUMNS,
    EventRecord,
    JobRecord,
    job_record,
)
from jobtrack.timeutil import from_iso, to_iso, utcnow

log = logging.getLogger(__name__)

_SELECT_ONE = SELECT_JOB + " WHERE id = :id"
_SELECT_STATUS = f"SELECT {', '.join(STATUS_COLUMNS)} FROM jobs WHERE id = :id"
_INSERT_JOB = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join(':' + c for c in JOB_COLUMNS)})"
_TERMINAL = frozenset(s.value for s in TERMINAL)
_OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)
NOTIFY_CHANNEL = "jobtrack_jobs"
"""PostgreSQL: the channel a job's creation is announced on; idle workers LISTEN to it (#14)."""
_me: list[Any] = [None, ""]  # this process's identity and its encoding


_SELECT_EPOCHS = ("SELECT seq, epoch, train_json, validation_json FROM job_epochs "
                  "WHERE job_id = :id AND seq > :after ORDER BY seq")


class EpochCache:
    """One monitor's decoded epochs of a running job, extended by ``epoch_seq`` rather than re-read (#14).

    ``jobs.epoch_seq`` counts every ``add_epoch``; a new epoch is a new row with the next ``seq``, a
    repeated epoch number updates its row in place (#18). So the rows after the last ``seq`` seen are
    exactly the new epochs only if there are as many as ``epoch_seq`` grew; anything else (a replaced
    epoch, a new attempt, a row read ahead of its job row) makes the read start over.
    """

    __slots__ = ("attempt", "best", "epoch_seq", "epochs", "job_id", "last_seq", "lock", "numbers")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # a monitor may be read from several threads
        self.job_id: str | None = None
        self.attempt = self.epoch_seq = self.last_seq = 0
        self.epochs: list[dict[str, Any]] = []
        self.numbers: set[Any] = set()
        self.best: tuple[Any, tuple[Any, Any]] = (None, (None, None))  # (state it was chosen in, best epoch)

    def read(self, rec: JobRecord, read_all: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]],
             ) -> tuple[list[dict[str, Any]], tuple[Any, Any]]:
        """The job's epochs as of ``rec`` (its ``epoch_seq``, reading only what is new when it can), copied so
        callers may change theirs, and ``results.best_epoch`` of them for
        the job's evaluation metric: chosen again only when the epochs changed (a poll between two epochs
        costs no scan, #14)."""
        with self.lock:
            epochs = self._update(rec, read_all)
            state = (self.job_id, self.attempt, self.epoch_seq, rec.eval_metric, rec.metric_mode)
            if self.best[0] != state:
                self.best = (state, results.best_epoch(epochs, rec.eval_metric, rec.metric_mode))
            return ([{"epoch": e["epoch"], "train": dict(e["train"]), "validation": dict(e["validation"])}
                     for e in epochs], self.best[1])

    def _update(self, rec: JobRecord, read_all: Callable[[str, dict[str, Any]], list[tuple[Any, ...]]],
                ) -> list[dict[str, Any]]:
        if (rec.id, rec.attempt) == (self.job_id, self.attempt) and rec.epoch_seq == self.epoch_seq:
            return self.epochs
        fresh = (rec.id, rec.attempt) != (self.job_id, self.attempt) or rec.epoch_seq < self.epoch_seq
        rows = [] if fresh else read_all(_SELECT_EPOCHS, {"id": rec.id, "after": self.last_seq})
        rows = [r for r in rows if r[0] <= rec.epoch_seq]  # committed after ``rec`` was read: next time
        if fresh or len(rows) != rec.epoch_seq - self.epoch_seq or any(r[1] in self.numbers for r in rows):
            self.job_id, self.attempt, self.epochs, self.numbers, self.last_seq = rec.id, rec.attempt, [], set(), 0
            rows = [r for r in read_all(_SELECT_EPOCHS, {"id": rec.id, "after": 0}) if r[0] <= rec.epoch_seq]
        loads = jsonutil.loads
        for seq, e, t, v in rows:
            self.epochs.append({"epoch": e, "train": loads(t), "validation": loads(v)})
            self.numbers.add(e)
            self.last_seq = max(self.last_seq, seq)
        self.epoch_seq = rec.epoch_seq
        return self.epochs


class JobsMixin(FencedCore):
    """Job creation and every read of jobs."""

    def create_job(self, values: dict[str, Any], *, model_run: dict[str, Any] | None = None,
                   unique_alias: str | None = None, claim: bool = False,
                   lease_s: float | None = None, guard: Callable[[Tx], None] | None = None,
                   tags: Sequence[str] = ()) -> int | None:
        """Insert a QUEUED job (and its model run) with its creation event.

        ``unique_alias`` (a normalised output alias) is refused if another job uses it.
        ``claim=True`` also claims it for the calling process in the same transaction (the eager
        runner, which runs the job at once) and returns the fencing token; the history still
        shows QUEUED → RUNNING. ``guard(tx)`` runs first inside the write transaction and may raise to
        write nothing (a sweep claims its trial number and grid point there, #17). The config's parameters
        and ``tags`` (names already checked) are written with the row (#15, ``store.experiments``).

        Raises:
            DuplicateName: ``unique_alias`` is taken.
        """
        now = to_iso(utcnow())
        row: dict[str, Any] = dict.fromkeys(JOB_COLUMNS)
        row.update(status=INITIAL.value, created_at=now, updated_at=now, submitter=liveness.current().encode(),
                   claim_token=0, cancel_requested=False, export_paths_json="{}", source_views_json="{}",
                   spec_json="{}", runner_kind="thread", epoch_seq=0, max_attempts=1, attempt=0)
        row.update(values)
        params = experiments.config_rows(row["id"], row["spec_json"])
        with self.db.write(durable=not claim) as tx:  # an eager job is reported when it finishes
            if guard is not None:
                guard(tx)
            if unique_alias is not None:
                self._check_alias_free(tx, unique_alias)
            tx.run(_INSERT_JOB, row)
            if model_run is not None:
                tx.run("INSERT INTO model_runs (id, job_id, experiment_name, task_type, created_at) "
                       "VALUES (:id, :job_id, :experiment_name, :task_type, :created_at)",
                       {"created_at": now, **model_run})
            add_event(tx, row["id"], None, INITIAL.value, now, "submitted")
            experiments.insert_created(tx, row["id"], params, tags)
            if claim:
                return self._claim(tx, row["id"], lease_s, token=0)  # just inserted with token 0
            if self.db.dialect_name == "postgresql":  # wakes idle workers at commit (store/watch.py, #14)
                tx.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")
        return None

    @staticmethod
    def _check_alias_free(tx: Tx, alias_key: str) -> None:
        rows = tx.all("SELECT id, status, export_paths_json FROM jobs WHERE output_alias = :alias",
                      {"alias": alias_key})
        for job_id, status, paths in rows:
            if status not in _TERMINAL or paths != "{}":
                raise DuplicateName(
                    f"output_alias {alias_key!r} is already used by job {job_id!r} ({status}); "
                    "choose a new output_alias, or prune that job first."
                )

    # -- one job -----------------------------------------------------------------------------

    def finished_status_row(self, job_id: str) -> tuple[Any, ...] | None:
        """A finished job's status fields (``STATUS_COLUMNS``) in one narrow read; None while it can change.

        Raises:
            JobNotFound: no job has this id.
        """
        row = self.db.read_one(_SELECT_STATUS, {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        return row if row[1] in _TERMINAL and row[8] is not None else None  # result_json: frozen at the end

    def get_job(self, job_id: str, *, check_liveness: bool = True) -> JobRecord:
        """The job's row; a QUEUED or RUNNING job that nothing can finish is first marked FAILED (SPEC §5).

        Raises:
            JobNotFound: no job has this id.
        """
        row = self.db.read_one(_SELECT_ONE, {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        rec = job_record(row)
        if check_liveness and rec.status in _OPEN:
            rec = self._apply_liveness(rec)
        return rec

    def job_ids_starting(self, prefix: str, *, limit: int = 11) -> list[str]:
        """Ids of jobs that start with ``prefix``, in id order, at most ``limit`` (``jobtrack show job_66``)."""
        if not prefix:
            return []
        with self.db.read() as tx:
            rows = tx.all("SELECT id FROM jobs WHERE id >= :lo AND id < :hi ORDER BY id LIMIT :n",
                          {"lo": prefix, "hi": after_prefix(prefix), "n": limit})
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    def epochs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's reported epochs in reporting order (one SELECT: no transaction around it)."""
        loads = jsonutil.loads
        return [{"epoch": e, "train": loads(t), "validation": loads(v)}
                for _, e, t, v in self.db.read_all(_SELECT_EPOCHS, {"id": job_id, "after": 0})]

    def result(self, rec: JobRecord, cache: EpochCache | None = None) -> dict[str, Any]:
        """The job's result dict: frozen for terminal jobs, composed from its epochs otherwise.

        ``cache`` (a monitor's) keeps a running job's decoded epochs between calls: only new ones are read.
        """
        if rec.result_json is not None:
            return jsonutil.loads(rec.result_json)  # type: ignore[no-any-return]
        if not rec.epoch_seq:
            epochs: list[dict[str, Any]] = []
        elif cache is None:
            epochs = self.epochs(rec.id)
        else:
            epochs, best = cache.read(rec, self.db.read_all)
            return results.compose(eval_metric=rec.eval_metric, metric_mode=rec.metric_mode, epochs=epochs,
                                   best=best)
        return results.compose(eval_metric=rec.eval_metric, metric_mode=rec.metric_mode, epochs=epochs)

    def events(self, job_id: str) -> list[EventRecord]:
        """The job's status history, oldest first, starting with its creation (None → QUEUED).

        Raises:
            JobNotFound: no job has this id.
        """
        with self.db.read() as tx:
            rows = tx.all("SELECT job_id, from_status, to_status, at, reason FROM job_events "
                          "WHERE job_id = :id ORDER BY id", {"id": job_id})
            if not rows and tx.one("SELECT id FROM jobs WHERE id = :id", {"id": job_id}) is None:
                raise JobNotFound(job_id, self.target)
        return [EventRecord(j, JobStatus(f) if f else None, JobStatus(t), from_iso(at), r)
                for j, f, t, at, r in rows]

    # -- many jobs ----------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
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
            where.append(f"status IN {in_list('s', [s.value for s in statuses], params)}")
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
        sql = SELECT_JOB
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        out, _ = self._settle([job_record(r) for r in self.db.read_all(sql, params)], {})  # one SELECT
        if statuses:  # a verdict may have moved a job out of the requested statuses
            out = [r for r in out if r.status in statuses]
        return out

    # -- liveness -------------------------------------------------------------------------------

    def _settle(self, recs: list[JobRecord], probes: dict[str, bool]) -> tuple[list[JobRecord], bool]:
        """``recs`` with each open job's liveness verdict applied (``_apply_liveness``), and whether one changed a
        status. ``probes`` is the listing call's own dict: one probe per distinct runner (#14); a RUNNING job of
        a runner already seen alive in this call costs a dict lookup."""
        out: list[JobRecord] = []
        changed = False
        running = JobStatus.RUNNING
        for rec in recs:
            status = rec.status
            if (status is running and probes.get(rec.runner or "")) or status not in _OPEN:
                out.append(rec)
                continue
            settled = self._apply_liveness(rec, probes)
            changed = changed or settled.status is not status
            out.append(settled)
        return out, changed

    @staticmethod
    def _seen_alive(runner: str, probes: dict[str, bool] | None = None) -> bool:
        """Whether a runner process is alive: this process, or one probed alive by ``/proc`` now.

        ``probes`` (one listing call's own dict) keeps each runner's answer for the rest of that call, so a
        listing of 100 jobs of one worker probes once (#14). Nothing is kept across calls: a read made after
        a runner died must see it dead.
        """
        if probes is not None and runner in probes:
            return probes[runner]
        me = liveness.current()
        if _me[0] is not me:  # encoded once per process (a forked child has its own identity)
            _me[:] = [me, me.encode()]
        if runner == _me[1]:
            alive = True
        else:
            ident = liveness.ProcessIdentity.decode(runner)
            alive = ident is not None and liveness.is_alive(ident) is True
        if probes is not None:
            probes[runner] = alive
        return alive

    def _apply_liveness(self, rec: JobRecord, probes: dict[str, bool] | None = None) -> JobRecord:
        """Record FAILED for a job whose process is provably gone or whose lease expired (``liveness.verdict``).

        If the verdict cannot be written (the database is read-only, full or locked for longer than
        ``lock_timeout``), the reader still sees it: the record comes back FAILED, unsaved.
        """
        if rec.status is JobStatus.RUNNING and rec.runner and self._seen_alive(rec.runner, probes):
            return rec
        verdict = liveness.verdict(rec, self.db.clock())  # the server's clock on PostgreSQL (leases)
        if verdict is None:
            return rec
        error_json = jsonutil.dumps(verdict.error, "error") if verdict.error else None
        try:
            if self.db.read_only:  # a read of a file this user cannot write: the verdict is shown, unsaved (#13)
                raise StoreReadOnly(self.target, "it was opened for reading only")
            self.record_verdict(rec.id, rec.status, rec.claim_token, verdict.reason, error_json)
        except StoreError as exc:
            (log.debug if self.db.read_only else log.warning)(
                "job %s: %s, but that cannot be recorded now: %s", rec.id, verdict.reason, exc)
            now = to_iso(utcnow())
            return rec.replace(status=JobStatus.FAILED, reason=verdict.reason, finished_iso=now,
                                       updated_iso=now, lease_expires_iso=None)
        return self.get_job(rec.id, check_liveness=False)
