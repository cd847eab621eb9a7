"""The fenced core of the store: the one function that changes a job's status, and the runner writes.

Every status change goes through ``FencedCore._apply_transition``: the pure check of the state
machine, then a conditional UPDATE (the row changes only if its status, and for runner writes its
claim token, are still what the caller saw), then the event row, all in one write transaction.
Runner writes carry the claim token they got from ``claim``; a runner declared dead or canceled
is fenced off by it (``RunnerFenced``).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any

from jobtrack import jsonutil, liveness, results, timeutil
from jobtrack.errors import DatabaseReplaced, InvalidTransition, JobNotFound, RunnerFenced, SnapshotCopy
from jobtrack.states import JobStatus, is_allowed, refusal
from jobtrack.store import experiments
from jobtrack.store.base import StoreBase, add_event, in_list
from jobtrack.store.db import Tx
from jobtrack.store.tx import numbered
from jobtrack.timeutil import iso_ns, to_iso, utcnow

log = logging.getLogger(__name__)

_RETURNING = sqlite3.sqlite_version_info >= (3, 35)  # UPDATE ... RETURNING (SQLite 3.35, 2021)
_RENEW = {(counts, returns): "UPDATE jobs SET updated_at = :now, heartbeat_at = :now, lease_expires_at = :lease"
          + (", epoch_seq = epoch_seq + 1" if counts else "")
          + " WHERE id = :id AND status = 'RUNNING' AND claim_token = :token"
          + (" RETURNING epoch_seq, cancel_requested" if returns else "")
          for counts in (False, True) for returns in (False, True)}
"""The lease renewal, by (counts an epoch, returns the row): built once, not per epoch (#14)."""
_RENEW_NAMES = ("now", "lease", "id", "token")
_EPOCH_NAMES = ("id", "seq", "epoch", "train", "validation", "at")  # an epoch row's values, bound as a tuple
_REPLACE_EPOCH = ("UPDATE job_epochs SET train_json = :train, validation_json = :validation, at = :at "
                  "WHERE job_id = :id AND epoch = :epoch")
_INSERT_EPOCH = ("INSERT INTO job_epochs (job_id, seq, epoch, train_json, validation_json, at) "
                 "VALUES (:id, :seq, :epoch, :train, :validation, :at)")

_RENEW_EPOCH = numbered(_RENEW[True, True], _RENEW_NAMES)  # SQLite's statements of an epoch, numbered once (#14)
_REPLACE_EPOCH_N = numbered(_REPLACE_EPOCH, _EPOCH_NAMES)
_INSERT_EPOCH_N = numbered(_INSERT_EPOCH, _EPOCH_NAMES)


@functools.lru_cache(maxsize=16)
def _lease_ns(seconds: float) -> int:
    """A lease's length in nanoseconds, rounded to whole microseconds as ``timedelta(seconds=...)`` rounds it
    (built once per length)."""
    return timedelta(seconds=seconds) // timedelta(microseconds=1) * 1000


def check_transition(job_id: str | None, current: JobStatus, new: JobStatus) -> None:
    """Return if the state machine allows current → new, else raise InvalidTransition naming all three."""
    if not is_allowed(current, new):
        raise InvalidTransition(job_id, current, new, refusal(current, new) or "")


def read_epochs(tx: Tx, job_id: str) -> list[dict[str, Any]]:
    """A job's reported epochs in reporting order."""
    rows = tx.all("SELECT epoch, train_json, validation_json FROM job_epochs WHERE job_id = :id ORDER BY seq",
                  {"id": job_id})
    return [{"epoch": e, "train": jsonutil.loads(t), "validation": jsonutil.loads(v)} for e, t, v in rows]


class FencedCore(StoreBase):
    """Transitions, claims, leases, epochs and the end of a job: every write that moves or renews one."""

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
        summary_json: str | None = None,
        error_json: str | None = None,
        extra_json: dict[str, str] | None = None,
    ) -> None:
        """The one place a status changes: pure check, conditional UPDATE, event row; same transaction.

        A terminal move freezes the result (epochs, best epoch, ``summary_json``, ``error_json``, and
        ``extra_json``: more encoded members such as ``stopped_early``).

        Raises:
            InvalidTransition: the state machine refuses the move, or the job is no longer ``expected``.
            RunnerFenced: a runner write (``token`` given) on a job it no longer owns.
            JobNotFound: no such job.
        """
        check_transition(job_id, expected, new)
        now = tx.memo.get("now") or to_iso(utcnow())  # one timestamp per transaction (#14)
        sets: dict[str, Any] = {"status": new.value, "updated_at": now, "reason": reason, **(values or {})}
        if new.is_terminal:
            sets["finished_at"] = now
            sets["lease_expires_at"] = None
            sets["result_json"] = self._frozen_result(tx, job_id, summary_json, error_json, extra_json,
                                                      ended=(now, reason))
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
            found = JobStatus(row[0])
            if token is not None:  # a runner's write: it no longer owns the job
                raise RunnerFenced(job_id, found)
            raise InvalidTransition(job_id, found, new, refusal(found, new) or "it moved meanwhile")
        add_event(tx, job_id, expected.value, new.value, now, reason)
        log.debug("job %s: %s -> %s (%s)", job_id, expected, new, reason)

    def _frozen_result(self, tx: Tx, job_id: str, summary_json: str | None, error_json: str | None,
                       extra_json: dict[str, str] | None = None, *, ended: tuple[str, str | None] = ("", None)) -> str:
        eval_metric, metric_mode, epoch_seq, _, attempt, max_attempts = self._row(tx, job_id)
        if max_attempts and max_attempts > 1:  # a job that may be retried lists its attempts (#18)
            from jobtrack.store.attempts import frozen_attempts_json  # attempts builds on this module

            extra_json = {**(extra_json or {}), "attempts": frozen_attempts_json(tx, job_id, attempt, *ended)}
        result = results.compose(
            eval_metric=eval_metric,
            metric_mode=metric_mode,
            epochs=read_epochs(tx, job_id) if epoch_seq else [],
        )
        # summary and error are already JSON: splice them in rather than decode and re-encode them
        return jsonutil.splice(jsonutil.dumps(result, "result"),
                               {"summary": summary_json, "error": error_json, **(extra_json or {})})

    def _row(self, tx: Tx, job_id: str) -> tuple[Any, ...]:
        """(eval_metric, metric_mode, epoch_seq, cancel_requested, attempt, max_attempts) of a job, read once
        per transaction."""
        row: tuple[Any, ...] | None = tx.memo.get(("job", job_id))
        if row is None:
            row = tx.one("SELECT eval_metric, metric_mode, epoch_seq, cancel_requested, attempt, max_attempts "
                         f"FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
            if row is None:
                raise JobNotFound(job_id, self.target)
            tx.memo[("job", job_id)] = row
        return row

    # -- claims and leases -----------------------------------------------------------------

    def claim(self, job_id: str, *, lease_s: float | None = None) -> int:
        """QUEUED → RUNNING for the calling process; returns the fencing token its later writes must carry.

        Raises:
            InvalidTransition: the job is no longer QUEUED (canceled or declared lost first).
            JobNotFound: no such job.
        """
        with self.db.write(durable=False) as tx:  # no caller is told; the runner's next write syncs it
            return self._claim(tx, job_id, lease_s)

    def claim_next(self, runner_kinds: Iterable[str], *, lease_s: float | None = None) -> tuple[str, int] | None:
        """Claim the oldest QUEUED job run by one of ``runner_kinds``; None when there is none."""
        params: dict[str, Any] = {}
        kinds = in_list("k", list(runner_kinds), params)
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
        now = self.db.clock()  # leases are compared with the database's clock (a server's, on PostgreSQL)
        if self.db.is_sqlite:  # the same clock: the claim's event and updated_at take this timestamp (#14)
            tx.memo["now"] = to_iso(now)
        lease_s = self.lease_s if lease_s is None else lease_s
        token = int(token) + 1
        self._apply_transition(
            tx, job_id, JobStatus.QUEUED, JobStatus.RUNNING, reason="claimed",
            values={"claim_token": token, "attempt": 1, "runner": liveness.current().encode(),
                    "heartbeat_at": to_iso(now),
                    "lease_expires_at": to_iso(now + timedelta(seconds=lease_s))},
        )
        return token

    def _renew(self, tx: Tx, job_id: str, token: int, lease_s: float | None, *,
               epoch: bool = False) -> tuple[int, bool]:
        """Renew the runner's lease (and count an epoch); returns (epoch_seq, cancel_requested).

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        # leases are compared with the database's clock (a server's, on PostgreSQL); as nanoseconds, no datetime
        now = timeutil.now_ns() if self.db.is_sqlite else timeutil.ns_of(self.db.clock())  # made per epoch (#14)
        tx.memo["now"] = stamp = iso_ns(now)  # the transaction's one timestamp (the epoch row's ``at``, #14)
        values = (stamp, iso_ns(now + _lease_ns(self.lease_s if lease_s is None else lease_s)), job_id, token)
        if _RETURNING or not self.db.is_sqlite:  # one statement instead of UPDATE then SELECT (#14)
            returned = tx.execute_row(_RENEW[epoch, True], _RENEW_NAMES, values).fetchall()
            if returned:
                return int(returned[0][0]), bool(returned[0][1])
            return self._not_renewed(tx, job_id, 0)
        return self._not_renewed(tx, job_id, tx.execute_row(_RENEW[epoch, False], _RENEW_NAMES, values).rowcount)

    def _not_renewed(self, tx: Tx, job_id: str, changed: int) -> tuple[int, bool]:
        """After a renewal that changed ``changed`` rows: the job's (epoch_seq, cancel_requested) if it changed one,
        else the reason it did not: JobNotFound, or RunnerFenced naming the job's status now."""
        row = tx.one("SELECT status, epoch_seq, cancel_requested FROM jobs WHERE id = :id", {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        if changed != 1:
            raise RunnerFenced(job_id, row[0])
        return int(row[1]), bool(row[2])

    def heartbeat(self, job_id: str, token: int, *, lease_s: float | None = None) -> bool:
        """Extend the runner's lease; returns whether cancellation was requested.

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        with self.db.write() as tx:
            return self._renew(tx, job_id, token, lease_s)[1]

    def add_epoch(self, job_id: str, token: int, epoch: int, train_json: str, validation_json: str,
                  *, lease_s: float | None = None, replace: bool = True,
                  decoded: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> bool:
        """Append one epoch's metrics; returns whether cancellation was requested.

        With ``replace`` an epoch already stored is replaced, so an epoch reported again (by a resumed
        attempt, #18) is held once; ``replace=False`` is for a caller that knows the epoch is new (one
        statement less, and no look through the job's epochs). ``decoded``: the two metric mappings the
        JSON texts encode, when the caller has them (the best-metric bookkeeping then decodes nothing, #14).

        On a server a lost connection is retried until ``lock_timeout`` (a restart must not fail the job), each
        attempt after the first as a replacement: the one before may have been applied as its connection went.

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        if self.db.is_sqlite and _RETURNING:
            return self.db.write_call(self._add_epoch_sqlite, job_id, token, epoch, train_json, validation_json,
                                      lease_s, decoded, replace)
        if self.db.is_sqlite:
            with self.db.write() as tx:
                return self._add_epoch(tx, job_id, token, epoch, train_json, validation_json, lease_s, decoded,
                                       replace)
        first = [replace]
        return self.db.transact(lambda tx: self._add_epoch(tx, job_id, token, epoch, train_json, validation_json,
                                                           lease_s, decoded, first.pop() if first else True))

    def _add_epoch(self, tx: Tx, job_id: str, token: int, epoch: int, train_json: str, validation_json: str,
                   lease_s: float | None, decoded: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
                   replace: bool) -> bool:
        seq, cancel = self._renew(tx, job_id, token, lease_s, epoch=True)
        values = (job_id, seq, epoch, train_json, validation_json, tx.memo["now"])
        if not replace or not tx.execute_row(_REPLACE_EPOCH, _EPOCH_NAMES, values).rowcount:
            tx.execute_row(_INSERT_EPOCH, _EPOCH_NAMES, values)
        experiments.record_epoch(self, tx, job_id, token, seq, epoch, train_json, validation_json, decoded)  # #15
        return cancel

    def _add_epoch_sqlite(self, conn: sqlite3.Connection, job_id: str, token: int, epoch: int, train_json: str,
                          validation_json: str, lease_s: float | None,
                          decoded: tuple[Mapping[str, Any], Mapping[str, Any]] | None, replace: bool) -> bool:
        """``_add_epoch`` on a SQLite file's connection, as one function: the statements of ``_renew`` and
        ``_add_epoch`` bound as tuples to SQL numbered once (the per-epoch path, #14)."""
        now = timeutil.now_ns()
        stamp = iso_ns(now)
        returned = conn.execute(_RENEW_EPOCH, (stamp, iso_ns(now + _lease_ns(self.lease_s if lease_s is None
                                                                             else lease_s)), job_id, token)).fetchall()
        tx = Tx(conn, raw=True)
        seq, cancel = (int(returned[0][0]), bool(returned[0][1])) if returned else self._not_renewed(tx, job_id, 0)
        values = (job_id, seq, epoch, train_json, validation_json, stamp)
        if not replace or not conn.execute(_REPLACE_EPOCH_N, values).rowcount:
            conn.execute(_INSERT_EPOCH_N, values)
        experiments.record_epoch(self, tx, job_id, token, seq, epoch, train_json, validation_json, decoded)  # #15
        return cancel

    # -- the end of a job -------------------------------------------------------------------

    def finish(self, job_id: str, token: int, new: JobStatus, *, reason: str,
               summary_json: str | None = None, error_json: str | None = None,
               extra_json: dict[str, str] | None = None) -> JobStatus:
        """RUNNING → a terminal status by the runner holding ``token`` (fenced); returns the status applied.

        COMPLETED becomes CANCELED if a cancel was requested that the code never noticed (SPEC §5:
        the job was asked to stop; its summary is kept). A requested cancel ends with the reason it was
        requested with (``request_cancel(reason=...)``: "pruned at epoch 3", #17).

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token (nothing is written).
        """
        with self.db.write() as tx:
            if self._row(tx, job_id)[3] and (new is JobStatus.COMPLETED or reason == "canceled by user"):
                asked = tx.scalar("SELECT reason FROM jobs WHERE id = :id", {"id": job_id})  # request_cancel's
                new, reason = JobStatus.CANCELED, asked if asked and asked != "claimed" else "canceled by user"
            self._apply_transition(tx, job_id, JobStatus.RUNNING, new, reason=reason, token=token,
                                   values={"cancel_requested": False}, summary_json=summary_json,
                                   error_json=error_json, extra_json=extra_json)
        return new

    def fail_unclaimed(self, job_id: str, reason: str, error_json: str | None = None) -> bool:
        """QUEUED → FAILED for a job that cannot be started; False if it was no longer QUEUED."""
        try:
            with self.db.write() as tx:
                self._apply_transition(tx, job_id, JobStatus.QUEUED, JobStatus.FAILED, reason=reason,
                                       error_json=error_json)
            return True
        except InvalidTransition:
            return False

    def record_verdict(self, job_id: str, status: JobStatus, token: int, reason: str,
                       error_json: str | None) -> bool:
        """A liveness verdict: QUEUED or RUNNING → FAILED for a job nothing can finish (SPEC §5).

        Fenced by the token the reader saw, so a runner that claimed or finished the job meanwhile
        wins. Returns False if the job moved first.
        """
        try:
            with self.db.write() as tx:
                self._apply_transition(tx, job_id, status, JobStatus.FAILED, reason=reason, token=token,
                                       error_json=error_json)
            return True
        except (InvalidTransition, RunnerFenced):
            return False

    def request_cancel(self, job_id: str, *, reason: str = "canceled by user") -> JobStatus:
        """Cancel a QUEUED job at once; ask a RUNNING one to stop (it ends with ``reason``); leave a terminal one alone.

        Returns the status right after the call (RUNNING means a stop was requested).

        Raises:
            JobNotFound: no such job.
            SnapshotCopy: a RUNNING copy imported from a bundle: it runs in another database (nothing is written).
        """
        with self.db.write() as tx:
            row = tx.one(f"SELECT status, runner FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
            if row is None:
                raise JobNotFound(job_id, self.target)
            status, runner = row
            if status == JobStatus.RUNNING and liveness.is_snapshot(runner):
                raise SnapshotCopy(job_id, status, runner.split("|", 2)[2], doing="cancel")
            if status == JobStatus.QUEUED:
                self._apply_transition(tx, job_id, JobStatus.QUEUED, JobStatus.CANCELED, reason=reason)
                return JobStatus.CANCELED
            if status == JobStatus.RUNNING:
                tx.run("UPDATE jobs SET cancel_requested = :yes, reason = :reason, updated_at = :now "
                       "WHERE id = :id AND status = 'RUNNING'",
                       {"yes": True, "reason": reason, "now": to_iso(utcnow()), "id": job_id})
            return JobStatus(status)

    def cancel_process_jobs(self, process: str, *, reason: str,
                            spare: Callable[[], Collection[str]] | None = None) -> int:
        """Cancel every job that a process runs or holds queued for its in-process runners, but those ``spare()``
        names, asked once the jobs are read (a job created meanwhile was noted before its row was written).

        Used when that process is stopped by a signal. Returns how many jobs were canceled.
        """
        if self.db.is_sqlite and not os.path.exists(self.target):
            return 0  # deleted since: none of its jobs can be recorded, and no empty file is to be made there
        try:
            return self._cancel_process_jobs(process, reason, spare)
        except DatabaseReplaced:
            return 0  # another file is at the path now: the jobs were in the one that was deleted

    def _cancel_process_jobs(self, process: str, reason: str, spare: Callable[[], Collection[str]] | None) -> int:
        params: dict[str, Any] = {"p": process}
        kinds = in_list("k", list(liveness.IN_PROCESS_RUNNERS), params)
        with self.db.write() as tx:
            rows = tx.all(
                "SELECT id, status, claim_token FROM jobs WHERE "
                f"(status = 'RUNNING' AND (runner = :p OR (submitter = :p AND runner_kind IN {kinds}))) "
                f"OR (status = 'QUEUED' AND submitter = :p AND runner_kind IN {kinds}){self.db.for_update}",
                params,
            )
            if spare is not None:
                spared = spare()
                rows = [r for r in rows if r[0] not in spared]
            for job_id, status, token in rows:
                self._apply_transition(tx, job_id, JobStatus(status), JobStatus.CANCELED, reason=reason,
                                       token=token)
        return len(rows)

    def set_runner_identity(self, job_id: str, runner: str) -> bool:
        """Overwrite the recorded runner of a RUNNING job (fault injection: make it look dead or remote); whether
        the job was RUNNING (else nothing changed)."""
        with self.db.write() as tx:
            return tx.run("UPDATE jobs SET runner = :runner WHERE id = :id AND status = 'RUNNING'",
                          {"runner": runner, "id": job_id}) > 0
