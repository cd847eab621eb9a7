"""Sweeps (#17): the ``sweeps`` table, a sweep's trials, and the claim of a trial number and grid point.

A trial is an ordinary job carrying ``sweep_id`` and ``trial``. Its grid point is ``trial % grid_size``:
the first run of point i is trial i, a replacement of it trial i + grid_size, and so on. A trial is
claimed by ``trial_guard``, which runs inside the write transaction that inserts the job
(``create_job(guard=...)``): two drivers, in any processes, can never both take a trial number, and
never run a grid point twice, because the check and the insert commit together under the write lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobtrack import jsonutil
from jobtrack.errors import SweepNotFound
from jobtrack.states import JobStatus
from jobtrack.store.db import Tx
from jobtrack.store.jobs import JobsMixin
from jobtrack.timeutil import to_iso, utcnow

VOID_SQL = ("((status = 'FAILED' AND (reason LIKE 'runner lost%' OR reason = 'submitter lost' "
            "OR reason LIKE 'runner process % before starting the job')) "
            "OR (status = 'CANCELED' AND (reason = 'sweep canceled' OR reason LIKE 'signal %')))")
"""Trials that ended through no fault of their own: their runner (or submitting process) died (they count as
failed), or the sweep was canceled or its process stopped by a signal. A resumed sweep runs them again.

A process-runner child that dies running the trial (an OOM kill, a segfault: ``runner process killed by signal
SIGKILL``) while the sweep's process lives is the trial's own end, as code that raises: it counts as done. Run
again, such a point would die again and again, using up the sweep's replacements before the rest of a grid ran
(``Trainer(retries=N)`` retries it, as any job)."""

_OPEN_SQL = "status IN ('QUEUED', 'RUNNING')"
_SWEEP_COLUMNS = "id, name, created_at, spec_json, stop_requested_at"
_TRIAL_COLUMNS = "id, trial, status, reason, best_metric, result_json, spec_json, created_at, finished_at"


class SlotTaken(Exception):
    """The trial number or grid point was claimed by another driver first, or the sweep needs no more trials."""


@dataclass(frozen=True, slots=True)
class SweepRecord:
    """A row of ``sweeps``."""

    id: str
    name: str
    created_iso: str
    spec_json: str
    stop_requested_iso: str | None

    @property
    def spec(self) -> dict[str, Any]:
        return jsonutil.loads(self.spec_json) or {}


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One trial of a sweep: its job and what ranking needs."""

    job_id: str
    trial: int
    status: JobStatus
    reason: str | None
    best_metric: float | None  # jobs.best_metric, else the frozen result's best_metric
    config: dict[str, Any]
    created_iso: str
    finished_iso: str | None
    void: bool  # the runner died: counted failed, replaced


@dataclass(frozen=True, slots=True)
class Tally:
    """What a driver needs to pick the next trial, read in one go."""

    max_trial: int  # -1 before the first trial
    void: int  # trials whose runner died
    open: int  # QUEUED or RUNNING
    counted: int  # trials that are not void (done or in flight)
    taken_points: frozenset[int]  # grid points held by a trial that is not void (grid sweeps only)
    stop_requested: bool


def _is_void(status: str, reason: str | None) -> bool:
    r = reason or ""
    if status == "CANCELED":
        return r == "sweep canceled" or r.startswith("signal ")
    if status != "FAILED":
        return False
    return r.startswith("runner lost") or r == "submitter lost" or (
        r.startswith("runner process ") and r.endswith(" before starting the job"))  # as VOID_SQL


def _metric(validation_json: str, train_json: str, metric: str) -> float | None:
    """An epoch's value of ``metric``: validation first, else training (as ``results.best_epoch``)."""
    value = (jsonutil.loads(validation_json) or {}).get(metric)
    if value is None:
        value = (jsonutil.loads(train_json) or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _trial(row: tuple[Any, ...]) -> TrialRecord:
    job_id, trial, status, reason, best, result_json, spec_json, created, finished = row
    if best is None and result_json:
        best = (jsonutil.loads(result_json) or {}).get("best_metric")  # until jobs.best_metric is kept (#15)
    config = (jsonutil.loads(spec_json) or {}).get("config") or {}
    return TrialRecord(job_id, int(trial), JobStatus(status), reason, None if best is None else float(best),
                       config, created, finished, _is_void(status, reason))


class SweepsMixin(JobsMixin):
    """The sweeps table and the reads and claims of a sweep's trials."""

    def open_sweep(self, sweep_id: str, name: str, spec_json: str) -> tuple[SweepRecord, bool]:
        """The sweep called ``name``: created with ``sweep_id`` and ``spec_json`` unless it exists; (row, created)."""
        with self.db.write() as tx:
            row = tx.one(f"SELECT {_SWEEP_COLUMNS} FROM sweeps WHERE name = :name", {"name": name})
            if row is not None:
                return SweepRecord(*row), False
            now = to_iso(utcnow())
            tx.run("INSERT INTO sweeps (id, name, created_at, spec_json) VALUES (:id, :name, :at, :spec)",
                   {"id": sweep_id, "name": name, "at": now, "spec": spec_json})
            return SweepRecord(sweep_id, name, now, spec_json, None), True

    def set_sweep_stop(self, sweep_id: str, stop: bool) -> None:
        """Ask every driver of the sweep, in any process, to add no more trials (``stop``), or let them again."""
        with self.db.write() as tx:
            tx.run("UPDATE sweeps SET stop_requested_at = :at WHERE id = :id",
                   {"at": to_iso(utcnow()) if stop else None, "id": sweep_id})

    def get_sweep(self, ref: str) -> SweepRecord:
        """The sweep whose id or name is ``ref``.

        Raises:
            SweepNotFound: no sweep has this id or name.
        """
        with self.db.read() as tx:
            row = (tx.one(f"SELECT {_SWEEP_COLUMNS} FROM sweeps WHERE id = :ref", {"ref": ref})
                   or tx.one(f"SELECT {_SWEEP_COLUMNS} FROM sweeps WHERE name = :ref", {"ref": ref}))
        if row is None:
            raise SweepNotFound(ref)
        return SweepRecord(*row)

    def list_sweeps(self) -> list[SweepRecord]:
        """Every sweep, newest first."""
        with self.db.read() as tx:
            rows = tx.all(f"SELECT {_SWEEP_COLUMNS} FROM sweeps ORDER BY created_at DESC, id DESC")
        return [SweepRecord(*r) for r in rows]

    def sweep_trials(self, sweep_id: str) -> list[TrialRecord]:
        """The sweep's trials in trial order; a QUEUED or RUNNING one whose process is gone is first marked FAILED."""
        self.refresh_open_trials(sweep_id)
        with self.db.read() as tx:
            rows = tx.all(f"SELECT {_TRIAL_COLUMNS} FROM jobs WHERE sweep_id = :s ORDER BY trial", {"s": sweep_id})
        return [_trial(r) for r in rows]

    def refresh_open_trials(self, sweep_id: str) -> int:
        """Apply liveness verdicts (SPEC §5) to the sweep's open trials; how many are still open."""
        with self.db.read() as tx:
            ids = [r[0] for r in tx.all(f"SELECT id FROM jobs WHERE sweep_id = :s AND {_OPEN_SQL}", {"s": sweep_id})]
        return sum(1 for job_id in ids if not self.get_job(job_id).is_terminal)

    def sweep_tally(self, sweep_id: str, grid_size: int | None = None) -> Tally:
        """Counts of the sweep's trials (and, for a grid, the points taken) in one read transaction."""
        with self.db.read() as tx:
            return self._tally(tx, sweep_id, grid_size)

    @staticmethod
    def _top(tx: Tx, sweep_id: str) -> tuple[int, set[int]]:
        """(highest trial number, numbers of the void trials), by index reads only (ix_jobs_sweep,
        ix_jobs_sweep_status): a claim must not read every trial's row."""
        max_trial = tx.scalar("SELECT COALESCE(MAX(trial), -1) FROM jobs WHERE sweep_id = :s", {"s": sweep_id})
        void = {int(t) for t, st, r in tx.all("SELECT trial, status, reason FROM jobs WHERE sweep_id = :s "
                                              "AND status IN ('FAILED', 'CANCELED')", {"s": sweep_id})
                if _is_void(st, r)}
        return int(max_trial), void

    def _tally(self, tx: Tx, sweep_id: str, grid_size: int | None) -> Tally:
        max_trial, void = self._top(tx, sweep_id)
        total = tx.scalar("SELECT COUNT(*) FROM jobs WHERE sweep_id = :s", {"s": sweep_id})
        open_ = tx.scalar(f"SELECT COUNT(*) FROM jobs WHERE sweep_id = :s AND {_OPEN_SQL}", {"s": sweep_id})
        points: frozenset[int] = frozenset()
        if grid_size:
            points = frozenset(int(t) % grid_size for (t,) in tx.all("SELECT trial FROM jobs WHERE sweep_id = :s",
                                                                     {"s": sweep_id}) if int(t) not in void)
        stop = tx.scalar("SELECT stop_requested_at FROM sweeps WHERE id = :s", {"s": sweep_id})
        return Tally(int(max_trial), len(void), int(open_ or 0), int(total) - len(void), points, stop is not None)

    def trial_guard(self, sweep_id: str, trial: int, *, n_trials: int, max_void: int,
                    grid_size: int | None = None) -> Callable[[Tx], None]:
        """The claim of trial number ``trial`` (and its grid point), for ``create_job(guard=...)``.

        Inside the job's write transaction it raises ``SlotTaken`` (so nothing is written) when the
        number or the point is taken, ``n_trials`` trials already count, ``max_void`` trials already
        died (no more replacements), or the sweep was asked to stop.
        """
        def guard(tx: Tx) -> None:
            # The sweep's row lock orders the claims of one sweep on servers, whose writers run at once (a
            # SQLite write already holds the file's write lock); later reads see every claim committed before.
            row = tx.one(f"SELECT stop_requested_at FROM sweeps WHERE id = :s{self.db.for_update}", {"s": sweep_id})
            if row is None or row[0] is not None:
                raise SlotTaken("the sweep was asked to stop")
            if tx.scalar("SELECT 1 FROM jobs WHERE sweep_id = :s AND trial = :t", {"s": sweep_id, "t": trial}):
                raise SlotTaken(f"trial {trial} exists")
            max_trial, void = self._top(tx, sweep_id)
            if len(void) > max_void:
                raise SlotTaken("no more replacements: too many trials ended through no fault of their own")
            # numbers are unique from 0: only when max_trial + 1 - void reaches n_trials can the trials count up
            if max_trial + 1 - len(void) >= n_trials and tx.scalar(
                    "SELECT COUNT(*) FROM jobs WHERE sweep_id = :s", {"s": sweep_id}) - len(void) >= n_trials:
                raise SlotTaken("the sweep needs no more trials")
            if grid_size and tx.scalar(f"SELECT 1 FROM jobs WHERE sweep_id = :s AND trial % :g = :p AND NOT {VOID_SQL}",
                                       {"s": sweep_id, "g": grid_size, "p": trial % grid_size}):
                raise SlotTaken(f"grid point {trial % grid_size} is taken")

        return guard

    def epoch_values(self, sweep_id: str, before_trial: int, epoch: int, metric: str) -> list[float]:
        """``metric`` at ``epoch`` of the sweep's trials numbered below ``before_trial`` (validation first)."""
        with self.db.read() as tx:
            rows = tx.all("SELECT e.validation_json, e.train_json FROM jobs j JOIN job_epochs e ON e.job_id = j.id "
                          "WHERE j.sweep_id = :s AND j.trial < :t AND e.epoch = :e",
                          {"s": sweep_id, "t": before_trial, "e": epoch})
        return [v for v in (_metric(val, train, metric) for val, train in rows) if v is not None]

    def sweep_curves(self, sweep_id: str, metric: str) -> dict[str, dict[int, float]]:
        """job id -> {epoch: ``metric``} of every trial of the sweep (validation first), for Optuna's pruners."""
        with self.db.read() as tx:
            rows = tx.all("SELECT j.id, e.epoch, e.validation_json, e.train_json FROM jobs j "
                          "JOIN job_epochs e ON e.job_id = j.id WHERE j.sweep_id = :s", {"s": sweep_id})
        out: dict[str, dict[int, float]] = {}
        for job_id, epoch, validation, train in rows:
            value = _metric(validation, train, metric)
            if value is not None:
                out.setdefault(job_id, {})[int(epoch)] = value
        return out
