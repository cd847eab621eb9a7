"""Sweeps (#17): an offline hyperparameter search on one database file, where every trial is an ordinary job.

``Trainer.sweep()`` opens (or resumes) a sweep by name and starts ``parallel`` drivers. A driver claims
the next trial number and grid point inside the write transaction that creates the trial's ``train``
job (``Store.trial_guard``), runs it with the trainer's runner, and repeats until the sweep has its
``n_trials``. Drivers in any number of processes may share a sweep: none runs a grid point twice. A
trial whose runner died reads FAILED (SPEC §5) and is replaced; a sweep has no status beyond its counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil, provenance, runtime
from jobtrack.dataset import Dataset, check_name
from jobtrack.errors import (
    InvalidArgument,
    MissingExtra,
    SnapshotCopy,
    SweepConflict,
    SweepNotFound,
    WaitTimeout,
)
from jobtrack.monitor import JobMonitor, check_wait
from jobtrack.runners import process, signals
from jobtrack.runners.base import run_job
from jobtrack.space import (
    PRUNERS,
    SAMPLERS,
    History,
    Space,
    median_says_prune,
    optuna_ask,
    optuna_should_prune,
    param_of,
    resume_config,
    with_params,
)
from jobtrack.states import JobStatus, JobType
from jobtrack.store.sweeps import SlotTaken, TrialRecord

if TYPE_CHECKING:
    from jobtrack.spec import JobSpec
    from jobtrack.store import Store
    from jobtrack.trainer import Trainer

log = logging.getLogger(__name__)
_UNSET = object()  # a space key the trial's config does not hold

IDLE_POLL_S = 0.2
"""Seconds between a driver's looks at a sweep whose remaining trials run elsewhere (or on workers)."""

SWEEP_CANCELED = "sweep canceled"
"""The cancel reason of trials stopped by ``SweepMonitor.cancel()``."""

_PRUNERS: dict[str, Callable[[int, dict[str, Any], dict[str, Any]], str | None]] = {}
"""job id -> the pruning check of a running trial of this process (``RunContext.log_epoch`` asks it)."""

_DRIVERS: dict[tuple[str, str], tuple[threading.Event, list[threading.Thread]]] = {}
"""(database, sweep id) -> this process's drivers of that sweep and the event that stops them."""


def pruner_for(job_id: str) -> Callable[[int, dict[str, Any], dict[str, Any]], str | None] | None:
    """The pruning check of a trial running in this process: ``check(epoch, train, validation)`` -> reason or None."""
    return _PRUNERS.get(job_id) if _PRUNERS else None


@dataclasses.dataclass
class _Plan:
    """A sweep as its drivers see it: the space, the sampler and the rules of the search."""

    store: Store
    trainer: Trainer
    dataset: Dataset
    sweep_id: str
    name: str
    space: Space
    sampler: Any  # "grid", "random" or an Optuna sampler
    n_trials: int
    seed: int
    prune: Any  # None, "median" or an Optuna pruner
    metric: str | None
    mode: str
    grid: list[dict[str, Any]] | None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    next_trial: int | None = None  # the trial number this process tries next without reading (random, Optuna)

    @property
    def max_void(self) -> int:
        return self.n_trials  # trials whose runner died are replaced, but not without end (a crashing config)

    def allocate(self) -> tuple[JobSpec, int | None] | None:
        """Create the next trial's job (claimed for the eager runner); None when the sweep needs no more trials."""
        store, grid_size = self.store, len(self.grid) if self.grid is not None else None
        with self.lock:  # this process's drivers take turns; other processes are kept apart by the guard
            while True:
                guess = self.next_trial  # random and Optuna: the number after our last claim, checked by the guard
                tally = store.sweep_tally(self.sweep_id, grid_size) if guess is None else None
                if tally is not None and (tally.stop_requested or tally.counted >= self.n_trials
                                          or tally.void > self.max_void):
                    return None
                if self.grid is not None:
                    assert tally is not None
                    assert grid_size is not None
                    free = [i for i in range(self.n_trials) if i not in tally.taken_points]
                    if not free:
                        return None
                    point = free[0]
                    trial = point if point > tally.max_trial else point + grid_size * ((tally.max_trial - point)
                                                                                        // grid_size + 1)
                    params = dict(self.grid[point])
                else:
                    trial = guess if guess is not None else tally.max_trial + 1  # type: ignore[union-attr]
                    params = self.space.sample(self.seed, trial) if self.sampler == "random" else self._ask()
                spec = self.trainer._job_spec(JobType.TRAIN, self.dataset, _new_id("mr"),
                                              config=with_params(self.trainer.config, params))
                row = {**spec.row(), "sweep_id": self.sweep_id, "trial": trial}
                recorded = provenance.record(spec, store.job_dir(spec.job_id)) if self.trainer.provenance else None
                row["provenance_json"] = recorded.json if recorded is not None else None  # as any fit() (#15)
                guard = store.trial_guard(self.sweep_id, trial, n_trials=self.n_trials, max_void=self.max_void,
                                          grid_size=grid_size)
                try:
                    token = store.create_job(row, model_run=spec.model_run(), claim=self.trainer.runner == "eager",
                                             guard=guard, tags=(*self.trainer.tags, self.name))
                except SlotTaken as exc:  # another process took it first, or the sweep is full: look again
                    log.debug("sweep %s: %s; picking again", self.name, exc)
                    if guess is None:
                        time.sleep(random.random() * 0.002)
                    self.next_trial = None
                    continue
                self.next_trial = None if self.grid is not None else trial + 1
                if recorded is not None:
                    recorded.save()  # the diff file, once the trial exists
                if not self.dataset.is_file_backed:
                    runtime.remember_dataset(spec.model_run_id or "", self.dataset)
                if self.prune is not None:
                    _PRUNERS[spec.job_id] = self._pruner(trial, spec.job_id)
                return spec, token

    def _history(self, curves: dict[str, dict[int, float]] | None = None) -> History:
        """The sweep's ended trials as Optuna sees them (trials whose runner died left out)."""
        out: History = []
        for t in self.store.sweep_trials(self.sweep_id):
            if t.void or not t.status.is_terminal:
                continue
            kind = ("COMPLETE" if t.status is JobStatus.COMPLETED and t.best_metric is not None
                    else "PRUNED" if (t.reason or "").startswith("pruned") else "FAIL")
            params = {k: v for k, _ in self.space.params if (v := param_of(t.config, k, _UNSET)) is not _UNSET}
            out.append((params, kind, t.best_metric, (curves or {}).get(t.job_id, {})))
        return out

    def _ask(self) -> dict[str, Any]:
        return optuna_ask(self.sampler, self.space, self.mode, self._history())

    def _pruner(self, trial: int, job_id: str) -> Callable[[int, dict[str, Any], dict[str, Any]], str | None]:
        def check(epoch: int, train: dict[str, Any], validation: dict[str, Any]) -> str | None:
            if self.metric is None:
                return None
            value = validation.get(self.metric, train.get(self.metric))
            if not isinstance(value, (int, float)):
                return None
            others = self.store.epoch_values(self.sweep_id, trial, epoch, self.metric)
            if self.prune == "median":
                prune = median_says_prune(float(value), others, self.mode)
            else:
                curves = self.store.sweep_curves(self.sweep_id, self.metric)
                prune = optuna_should_prune(self.prune, self.space, self.mode, self._history(curves),
                                            {**curves.get(job_id, {}), epoch: float(value)})
            return f"pruned at epoch {epoch}" if prune else None

        return check

    def run_trial(self, spec: JobSpec, token: int | None, stop: threading.Event) -> None:
        """Run one trial with the trainer's runner, in this thread; a worker's trial is waited for."""
        try:
            runner = self.trainer.runner
            if runner in ("eager", "thread"):
                run_job(self.store, spec, token=token)
            elif runner == "process":
                process.run_in_child(self.store, spec)
            else:  # "worker": queued for `jobtrack worker` processes; wait for its end (and prune from here)
                delay, seen, check = 0.005, 0, _PRUNERS.get(spec.job_id)
                while not self.store.get_job(spec.job_id).is_terminal and not stop.is_set():
                    epochs = self.store.epochs(spec.job_id)[seen:] if check is not None else []
                    for ep in epochs:
                        reason = check(ep["epoch"], ep["train"], ep["validation"]) if check is not None else None
                        if reason:  # the same cancel path: the worker's job ends CANCELED with this reason
                            self.store.request_cancel(spec.job_id, reason=reason)
                            check = None
                    seen += len(epochs)
                    stop.wait(delay)
                    delay = min(delay * 2, IDLE_POLL_S)
        finally:
            _PRUNERS.pop(spec.job_id, None)

    def drive(self, stop: threading.Event) -> None:
        """Allocate and run trials until the sweep has them all, ``stop`` is set or this process got a signal."""
        signals_at_start = runtime.signal_state().count
        while not stop.is_set() and runtime.signal_state().count == signals_at_start:
            got = self.allocate()
            if got is not None:
                self.run_trial(*got, stop)
                continue
            if self.store.refresh_open_trials(self.sweep_id) == 0 and self.allocate_none():
                return  # nothing open anywhere and nothing left to allocate: done
            stop.wait(IDLE_POLL_S)  # trials run elsewhere; one may die and need replacing

    def allocate_none(self) -> bool:
        tally = self.store.sweep_tally(self.sweep_id, len(self.grid) if self.grid is not None else None)
        return tally.open == 0 and (tally.stop_requested or tally.counted >= self.n_trials
                                    or tally.void > self.max_void)


def _scored(trial: TrialRecord) -> bool:
    """Whether a trial ranks: it completed with a value of the metric (a running or pruned one does not)."""
    return trial.best_metric is not None and trial.status is JobStatus.COMPLETED


def _new_id(prefix: str) -> str:
    from jobtrack.trainer import new_id

    return new_id(prefix)


def _sampler_name(sampler: Any) -> str:
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise InvalidArgument(f"Unknown sampler {sampler!r}; use 'grid', 'random' or an Optuna sampler object.")
        return sampler
    if type(sampler).__module__.startswith("optuna.") and hasattr(sampler, "sample_relative"):
        return f"optuna:{type(sampler).__name__}"
    raise InvalidArgument(f"sampler must be 'grid', 'random' or an optuna.samplers object, not {sampler!r}.")


def _prune_name(prune: Any) -> str | None:
    if prune is None or prune in PRUNERS:
        return prune  # type: ignore[no-any-return]
    if type(prune).__module__.startswith("optuna.") and hasattr(prune, "prune"):
        return f"optuna:{type(prune).__name__}"
    raise InvalidArgument(f"prune must be None, 'median' or an optuna.pruners object, not {prune!r}.")


def _exists(store: Store, name: str) -> bool:
    try:
        store.get_sweep(name)
    except SweepNotFound:
        return False
    return True


def _count(value: Any, what: str) -> int:
    number = jsonutil.as_int(value)  # numpy integers too (#13)
    if number is None or number < 1:
        raise InvalidArgument(f"{what} must be a positive integer, not {type(value).__name__} {value!r}.")
    return number


def start(trainer: Trainer, store: Store, dataset: Dataset, space: Mapping[str, Any] | Space, *,
          n_trials: int | None, parallel: int, sampler: Any, name: str | None, seed: int | None,
          prune: Any) -> SweepMonitor:
    """``Trainer.sweep()``: check everything, open or resume the sweep, start its drivers (see the Trainer)."""
    if sampler != "grid" and sampler != "random" and not isinstance(sampler, str):
        try:
            import optuna  # noqa: F401 - only to name the extra when it is missing
        except ImportError:
            raise MissingExtra("optuna", "optuna", "an Optuna sampler") from None
    sampler_name, prune_name = _sampler_name(sampler), _prune_name(prune)
    checked = Space.of(space)
    parallel = _count(parallel, "parallel")
    if trainer.runner == "eager" and parallel > 1:
        raise InvalidArgument("runner='eager' runs trials one at a time inside sweep(); use parallel=1, or "
                              "Trainer(runner='thread'/'process'/'worker') to run trials at once.")
    if seed is not None and jsonutil.as_int(seed) is None:
        raise InvalidArgument(f"seed must be an integer or None, not {type(seed).__name__} {seed!r}.")
    seed = None if seed is None else jsonutil.as_int(seed)
    grid = checked.grid() if sampler_name == "grid" else None
    if n_trials is not None:
        n_trials = _count(n_trials, "n_trials")
        if grid is not None and n_trials > len(grid):
            raise InvalidArgument(f"n_trials={n_trials} is more than the grid's {len(grid)} points, and a grid "
                                  "point never runs twice; leave n_trials out to run the whole grid.")
    name = check_name(name, "sweep name") if name is not None else _new_id("sweep")
    probe = trainer._job_spec(JobType.TRAIN, dataset, "mr_probe")
    metric, mode = probe.evaluation()
    doc: dict[str, Any] = {"space": checked.to_spec(), "sampler": sampler_name,
                           "n_trials": n_trials or (len(grid) if grid else None),
           "seed": seed if seed is not None else random.SystemRandom().randrange(2**31), "prune": prune_name,
           "metric": metric, "mode": mode or "max", "experiment": dataset.experiment_name,
           "base": resume_config(probe.config, checked)}
    if doc["n_trials"] is None and not _exists(store, name):  # checked before anything is written
        grid_hint = "" if checked.ranges else "; or run every point of this space once with sampler='grid'"
        raise InvalidArgument(f"sampler={sampler_name!r} needs n_trials= (how many trials to run){grid_hint}.")
    rec, created = store.open_sweep(_new_id("sw"), name, jsonutil.dumps(doc, "sweep spec"))
    stored = doc if created else rec.spec
    if not created:
        for key, label in (("space", "another space"), ("sampler", "another sampler"), ("prune", "another pruner"),
                           ("metric", "another metric"), ("experiment", "another experiment"),
                           ("base", "another Trainer config")):
            if stored.get(key) != doc[key] and (key in stored or key != "base"):  # sweeps before "base": unchecked
                raise SweepConflict(name, f"{label} ({stored.get(key)!r}, not {doc[key]!r})")
        for key in ("n_trials", "seed"):  # a grid without n_trials asks for all of its points
            asked = {"n_trials": n_trials or (len(grid) if grid else None), "seed": seed}[key]
            if asked is not None and stored.get(key) != asked:
                whole = " (the whole grid)" if key == "n_trials" and n_trials is None else ""
                raise SweepConflict(name, f"{key}={stored.get(key)!r}, not {asked!r}{whole}")
        if rec.stop_requested_iso is not None:
            store.set_sweep_stop(rec.id, False)  # sweep() again resumes a canceled sweep
    plan = _Plan(store, trainer, dataset, rec.id, name, checked, sampler, int(stored["n_trials"]),
                 int(stored["seed"]), prune, metric, stored["mode"], grid)
    monitor = SweepMonitor(store, rec.id, name)
    if trainer.runner != "worker":
        signals.watch(store)
    stop = threading.Event()
    if trainer.runner == "eager":
        plan.drive(stop)
        return monitor
    daemon = trainer.runner == "worker"  # a script ends without waiting for workers; sweep() again resumes
    threads = [threading.Thread(target=plan.drive, args=(stop,), daemon=daemon,
                                name=f"{runtime.RUNNER_THREAD_PREFIX}-sweep-{name}-{k}") for k in range(parallel)]
    _DRIVERS[(store.target, rec.id)] = (stop, threads)
    for t in threads:
        t.start()
    return monitor


class SweepMonitor:
    """A sweep: its trials (ordinary jobs), their counts and the best one. ``Trainer.sweep()`` and
    ``JobManager.fetch_sweep()`` return it."""

    def __init__(self, store: Store, sweep_id: str, name: str) -> None:
        self._store = store
        self.sweep_id = sweep_id
        self.name = name

    def __repr__(self) -> str:
        return f"SweepMonitor(sweep_id={self.sweep_id!r}, name={self.name!r})"

    @property
    def spec(self) -> dict[str, Any]:
        """What the sweep searches: space, sampler, n_trials, seed, prune, metric and mode."""
        return self._store.get_sweep(self.sweep_id).spec

    def trials(self) -> list[TrialRecord]:
        """The sweep's trials in trial order (a dead runner's trial first reads FAILED)."""
        return self._store.sweep_trials(self.sweep_id)

    def jobs(self) -> list[JobMonitor]:
        """The monitors of the sweep's trials, in trial order."""
        return [JobMonitor.from_record(self._store, self._store.get_job(t.job_id, check_liveness=False))
                for t in self.trials()]

    def ranked(self) -> list[TrialRecord]:
        """Trials with a metric, best first (ties: the earlier trial), then the others in trial order."""
        spec = self.spec
        mode = spec.get("mode") or "max"
        trials = self.trials()
        scored = [t for t in trials if _scored(t)]
        sign = -1.0 if mode == "max" else 1.0
        scored.sort(key=lambda t: (sign * (t.best_metric or 0.0), t.trial))
        return scored + [t for t in trials if t not in scored]

    def get_status(self) -> dict[str, Any]:
        """Counts per status, trials done / total, and the best completed trial so far (JSON-ready dict).

        ``done`` counts trials that ended (completed, failed by their code, canceled or pruned); trials that
        ended through no fault of their own (their runner died, ``cancel()``, a signal) are counted in
        ``replaced``: the sweep runs their points again (at once, or when it resumes).
        """
        spec = self.spec
        ranked = self.ranked()
        counts = {s.value: 0 for s in JobStatus}
        for t in ranked:
            counts[t.status.value] += 1
        best = ranked[0] if ranked and _scored(ranked[0]) else None
        keys = list(spec.get("space") or {})
        return {
            "sweep_id": self.sweep_id, "name": self.name, "total": spec.get("n_trials"),
            "done": sum(1 for t in ranked if t.status.is_terminal and not t.void),
            "replaced": sum(1 for t in ranked if t.void), "counts": counts,
            "metric": spec.get("metric"), "mode": spec.get("mode"), "sampler": spec.get("sampler"),
            "best": None if best is None else {
                "trial": best.trial, "job_id": best.job_id, "metric": best.best_metric,
                "params": {k: param_of(best.config, k) for k in keys}, "config": best.config},
        }

    def best(self) -> JobMonitor | None:
        """The monitor of the completed trial with the best metric (by the task's metric and direction), or None."""
        ranked = self.ranked()
        if not ranked or not _scored(ranked[0]):
            return None
        return JobMonitor.from_record(self._store, self._store.get_job(ranked[0].job_id, check_liveness=False))

    def wait(self, timeout: float | None = None, *, poll_interval: float = 0.05) -> dict[str, Any]:
        """Block until this process's drivers are done and no trial is open; return ``get_status()``.

        Raises:
            WaitTimeout: still running after ``timeout`` seconds.
            InvalidArgument: a timeout that is not a number >= 0 (or None), a poll_interval that is not > 0.
        """
        check_wait(timeout, poll_interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        _, threads = _DRIVERS.get((self._store.target, self.sweep_id), (None, []))
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive and self._store.refresh_open_trials(self.sweep_id) == 0:
                _DRIVERS.pop((self._store.target, self.sweep_id), None)
                return self.get_status()
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(self.name, timeout or 0.0, JobStatus.RUNNING)
            if alive:
                alive[0].join(poll_interval)
            else:
                time.sleep(poll_interval)

    def cancel(self) -> dict[str, Any]:
        """Stop the sweep: no driver (in any process) adds a trial, queued trials end CANCELED, running ones are
        asked to stop (reason ``sweep canceled``). ``sweep()`` with the same name resumes it; returns ``get_status()``.
        """
        self._store.set_sweep_stop(self.sweep_id, True)
        stop, _ = _DRIVERS.get((self._store.target, self.sweep_id), (None, []))
        if stop is not None:
            stop.set()
        for t in self._store.sweep_trials(self.sweep_id):
            if not t.status.is_terminal:
                with contextlib.suppress(SnapshotCopy):  # a trial copied from a bundle runs elsewhere (#19)
                    self._store.request_cancel(t.job_id, reason=SWEEP_CANCELED)
        return self.get_status()
