"""Attempts of a job that may be retried (#18): a new fenced claim of a RUNNING job, never a new status.

A retried job stays RUNNING: the next attempt bumps its claim token (the previous runner's late
writes are refused), counts ``jobs.attempt`` up and says why in ``jobs.reason``; ``job_attempts``
keeps one row per attempt (started, ended, why), shown in ``result["attempts"]`` and by ``jobtrack
show``. Each new attempt is also an event of the job's history (SPEC §7), RUNNING → RUNNING with
the reason ``attempt 2 of 3 after ...``: not a status change, and written here, never through
``_apply_transition`` (the state machine allows no RUNNING → RUNNING move). Rows exist only for jobs
with ``max_attempts > 1``; attempt 1 gets its row (started at its claim) when it ends or is replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from jobtrack import jsonutil, liveness
from jobtrack.errors import JobNotFound, RunnerFenced
from jobtrack.states import INITIAL, JobStatus
from jobtrack.store.base import add_event, in_list
from jobtrack.store.db import Tx
from jobtrack.store.jobs import EpochCache, JobsMixin
from jobtrack.store.records import JOB_COLUMNS, JobRecord
from jobtrack.timeutil import to_iso, utcnow

log = logging.getLogger(__name__)

LEASE_EXPIRED = f"{liveness.RUNNER_LOST} (lease expired)"
"""Why a worker's attempt ended when another worker takes its job over."""

_INSERT_JOB = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join(':' + c for c in JOB_COLUMNS)})"


def _rows(tx: Tx, job_id: str) -> list[tuple[Any, ...]]:
    return tx.all("SELECT number, started_at, ended_at, ended_why FROM job_attempts WHERE job_id = :id "
                  "ORDER BY number", {"id": job_id})


def _claimed_at(tx: Tx, job_id: str) -> str | None:
    """When attempt 1 started: the job's QUEUED → RUNNING event."""
    at = tx.scalar("SELECT at FROM job_events WHERE job_id = :id AND to_status = 'RUNNING' ORDER BY id LIMIT 1",
                   {"id": job_id})
    return None if at is None else str(at)


def _gone(runner: str | None) -> bool:
    """Whether ``runner`` was a process of this host that is provably gone."""
    ident = liveness.ProcessIdentity.decode(runner)
    return ident is not None and liveness.is_alive(ident) is False


def _as_dicts(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{"number": int(n), "started_at": s, "ended_at": e, "why": w} for n, s, e, w in rows]


def _close(tx: Tx, job_id: str, number: int, at: str, why: str) -> None:
    """End attempt ``number`` (its row made first for attempt 1, which has none while it runs)."""
    if number == 1 and not tx.scalar("SELECT COUNT(*) FROM job_attempts WHERE job_id = :id", {"id": job_id}):
        tx.run("INSERT INTO job_attempts (job_id, number, started_at) VALUES (:id, 1, :at)",
               {"id": job_id, "at": _claimed_at(tx, job_id) or at})
    tx.run("UPDATE job_attempts SET ended_at = :at, ended_why = :why "
           "WHERE job_id = :id AND number = :n AND ended_at IS NULL",
           {"at": at, "why": why, "id": job_id, "n": number})


def frozen_attempts_json(tx: Tx, job_id: str, number: int, at: str, why: str | None) -> str:
    """End the running attempt (if any) as the job ends; its attempts as the JSON of ``result["attempts"]``."""
    if number >= 1:
        _close(tx, job_id, number, at, why or "ended")
    return jsonutil.dumps(_as_dicts(_rows(tx, job_id)), "attempts")


class AttemptsMixin(JobsMixin):
    """Next attempts in place, takeovers by workers, and ``jobtrack retry``'s new job."""

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's attempts, oldest first: number, started_at, ended_at (None while it runs), why."""
        with self.db.read() as tx:
            rows = _rows(tx, job_id)
            if not rows:
                attempt = tx.scalar("SELECT attempt FROM jobs WHERE id = :id", {"id": job_id})
                if attempt is None:
                    raise JobNotFound(job_id, self.target)
                started = _claimed_at(tx, job_id) if attempt else None
                rows = [(1, started, None, None)] if started else []
        return _as_dicts(rows)

    def result(self, rec: JobRecord, cache: EpochCache | None = None) -> dict[str, Any]:
        """The job's result dict; a running job that may be retried also lists its attempts so far."""
        out = super().result(rec, cache)
        if rec.result_json is None and rec.max_attempts > 1 and rec.attempt:
            out["attempts"] = self.attempts(rec.id)
        return out

    def last_epoch(self, job_id: str) -> int | None:
        """The largest epoch number stored for the job, or None (``ctx.resume_epoch`` is this + 1)."""
        with self.db.read() as tx:
            value = tx.scalar("SELECT MAX(epoch) FROM job_epochs WHERE job_id = :id", {"id": job_id})
        return None if value is None else int(value)

    def retried_by(self, job_id: str) -> list[str]:
        """Ids of the jobs that retry this one (``jobtrack retry``), oldest first."""
        with self.db.read() as tx:
            return [str(r[0]) for r in tx.all("SELECT id FROM jobs WHERE retry_of = :id ORDER BY created_at, id",
                                              {"id": job_id})]

    def next_attempt(self, job_id: str, token: int, why: str, *,
                     lease_s: float | None = None) -> tuple[int, int] | None:
        """Start the next attempt of a RUNNING job held under ``token`` by the calling process.

        Returns (new token, attempt number), or None when no attempt is left or a cancel was requested
        (the caller then records the end as it would without retries).

        Raises:
            RunnerFenced: the job is no longer RUNNING under ``token``.
            JobNotFound: no such job.
        """
        with self.db.write() as tx:
            return self._take_over(tx, job_id, token, why, lease_s, expired=False)

    def take_over_next(self, runner_kinds: Iterable[str], *, lease_s: float | None = None) -> tuple[str, int] | None:
        """Take over the oldest RUNNING job of ``runner_kinds`` whose runner is lost and that has attempts left.

        For ``jobtrack worker``. Lost: its lease expired, or its runner was a process of this host that is
        provably gone (killed: nothing to wait for). Its late writes are fenced off by the new token. One read
        without the lock when there is nothing to take over. Returns (job id, token) or None.
        """
        params: dict[str, Any] = {"now": to_iso(self.db.clock()), "no": False}
        open_ = (f"status = 'RUNNING' AND runner_kind IN {in_list('k', list(runner_kinds), params)} "
                 "AND max_attempts > 1 AND attempt < max_attempts AND cancel_requested = :no")
        with self.db.read() as tx:
            row = tx.one(f"SELECT id, claim_token, NULL FROM jobs WHERE {open_} AND lease_expires_at < :now "
                         "ORDER BY created_at, id LIMIT 1", params)
            if row is None:  # else a job whose runner was a process of this host that is gone: one probe per runner
                here = liveness.current().host + "|"
                runners = [str(r) for (r,) in tx.all(f"SELECT DISTINCT runner FROM jobs WHERE {open_} AND "
                                                     "substr(runner, 1, :n) = :here", {**params, "n": len(here),
                                                                                        "here": here})]
                gone = next((r for r in runners if _gone(r)), None)
                if gone is not None:
                    row = tx.one(f"SELECT id, claim_token, runner FROM jobs WHERE {open_} AND runner = :r "
                                 "ORDER BY created_at, id LIMIT 1", {**params, "r": gone})
        if row is None:
            return None
        job_id, token, runner = str(row[0]), int(row[1]), row[2]
        try:
            with self.db.write() as tx:
                taken = self._take_over(tx, job_id, token, liveness.RUNNER_LOST if runner else LEASE_EXPIRED,
                                        lease_s, expired=True, gone=runner)
        except RunnerFenced:
            return None  # renewed, finished or taken by another worker meanwhile
        return None if taken is None else (job_id, taken[0])

    def _take_over(self, tx: Tx, job_id: str, token: int, why: str, lease_s: float | None, *,
                   expired: bool, gone: str | None = None) -> tuple[int, int] | None:
        """The next attempt, in ``tx``. ``expired``: only if the lease expired, or the runner is still ``gone``."""
        row = tx.one("SELECT status, claim_token, attempt, max_attempts, cancel_requested, lease_expires_at, runner "
                     f"FROM jobs WHERE id = :id{self.db.for_update}", {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        status, held, attempt, max_attempts, cancel, lease, runner = row
        now = self.db.clock()
        lost = (lease is not None and lease < to_iso(now)) or (gone is not None and runner == gone)
        if status != JobStatus.RUNNING or int(held) != token or (expired and not lost):
            raise RunnerFenced(job_id, status)
        attempt = max(int(attempt), 1)
        if attempt >= int(max_attempts) or cancel:
            return None
        at, nxt = to_iso(utcnow()), attempt + 1
        lease_s = self.lease_s if lease_s is None else lease_s
        _close(tx, job_id, attempt, at, why)
        tx.run("INSERT INTO job_attempts (job_id, number, started_at) VALUES (:id, :n, :at)",
               {"id": job_id, "n": nxt, "at": at})
        reason = f"attempt {nxt} of {max_attempts} after {why}"
        tx.run("UPDATE jobs SET claim_token = :new, attempt = :n, runner = :runner, reason = :reason, "
               "updated_at = :at, heartbeat_at = :beat, lease_expires_at = :lease "
               "WHERE id = :id AND status = 'RUNNING' AND claim_token = :old",
               {"new": token + 1, "n": nxt, "runner": liveness.current().encode(), "reason": reason, "at": at,
                "beat": to_iso(now), "lease": to_iso(now + timedelta(seconds=lease_s)), "id": job_id, "old": token})
        running = JobStatus.RUNNING.value
        add_event(tx, job_id, running, running, at, reason)  # in the history; the status does not change
        log.info("job %s: attempt %d of %d after %s", job_id, nxt, max_attempts, why)
        return token + 1, nxt

    def create_retry(self, values: dict[str, Any], *, retry_of: str, model_run: dict[str, Any] | None,
                     unique_alias: str | None, copy_epochs: bool) -> None:
        """Insert a QUEUED job that retries the ended job ``retry_of`` (``jobtrack retry``), in one transaction.

        ``copy_epochs`` copies the old job's epochs, so the new one resumes after them (``ctx.resume_epoch``).

        Raises:
            DuplicateName: ``unique_alias`` is taken.
        """
        now = to_iso(utcnow())
        row: dict[str, Any] = dict.fromkeys(JOB_COLUMNS)
        row.update(status=INITIAL.value, created_at=now, updated_at=now, submitter=liveness.current().encode(),
                   claim_token=0, cancel_requested=False, export_paths_json="{}", source_views_json="{}",
                   epoch_seq=0, max_attempts=1, attempt=0, retry_of=retry_of)
        row.update(values)
        with self.db.write() as tx:
            if unique_alias is not None:
                self._check_alias_free(tx, unique_alias)
            if copy_epochs:
                row["epoch_seq"] = tx.scalar("SELECT COUNT(*) FROM job_epochs WHERE job_id = :id", {"id": retry_of})
            tx.run(_INSERT_JOB, row)
            if model_run is not None:
                tx.run("INSERT INTO model_runs (id, job_id, experiment_name, task_type, created_at) "
                       "VALUES (:id, :job_id, :experiment_name, :task_type, :created_at)",
                       {"created_at": now, **model_run})
            if copy_epochs:
                old = tx.all("SELECT epoch, train_json, validation_json, at FROM job_epochs WHERE job_id = :id "
                             "ORDER BY seq", {"id": retry_of})
                for seq, (epoch, train, validation, at) in enumerate(old, 1):
                    tx.run("INSERT INTO job_epochs (job_id, seq, epoch, train_json, validation_json, at) "
                           "VALUES (:id, :seq, :epoch, :train, :validation, :at)",
                           {"id": row["id"], "seq": seq, "epoch": epoch, "train": train,
                            "validation": validation, "at": at})
            add_event(tx, row["id"], None, INITIAL.value, now, f"submitted (retry of {retry_of})")
