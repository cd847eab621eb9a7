"""``jobtrack.track()``: the current script, notebook cell or function as a ``train`` job of this process (#20).

For code that is not shaped as a ``train(ctx)`` function. The job is created and claimed at once (as
the eager runner's are), its output goes to its log and its lease is renewed while the block runs, and
its end is recorded by the runners' own code (``runners.base.run_job``) fed with what the block did:
COMPLETED on a normal exit, FAILED with the traceback on an exception, CANCELED on a cancel or Ctrl-C.
(The module is not called ``track``: importing ``jobtrack.track`` would then replace the function
``jobtrack.track`` by the module.)
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, SimpleNamespace, TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from jobtrack import capture, jsonutil, provenance, ranks, runtime
from jobtrack.dataset import Dataset, check_name
from jobtrack.errors import InvalidArgument, JobCanceled, NestedRun
from jobtrack.runners import signals
from jobtrack.runners.base import run_job
from jobtrack.spec import JobSpec
from jobtrack.states import JobStatus, JobType
from jobtrack.store import Store
from jobtrack.trainer import Trainer, new_id

if TYPE_CHECKING:
    from jobtrack.context import RunContext

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_EXPERIMENT = "default"
"""The experiment of a tracked run given neither ``dataset`` nor ``experiment`` outside a script file."""

_local = threading.local()  # .runs: the RunContexts of this thread's open track() blocks


def track(
    dataset: Dataset | None = None,
    *,
    experiment: str | None = None,
    config: Mapping[str, Any] | None = None,
    db: str | Path | None = None,
    eval_metric: str | None = None,
    eval_mode: str | None = None,
    patience: int | None = None,
    tags: Sequence[str] = (),
    provenance: bool = True,
) -> Tracking:
    """Track the code of a ``with`` block (``with jobtrack.track(...) as run:``) or of a decorated function
    as one ``train`` job, run in this process; ``run`` is its RunContext (``log_epoch``, ``log``, checkpoints;
    ``export`` belongs to prediction jobs: ``Trainer.predict()`` writes predictions and embeddings).

    The job belongs to ``dataset``'s experiment, or to ``experiment`` (default: the script's file name).
    ``config``, ``db``, ``eval_metric``, ``eval_mode``, ``patience``, ``tags`` and ``provenance`` mean what they
    mean for ``Trainer`` (provenance names the code that entered the block, or the decorated function).
    A normal exit records COMPLETED (a decorated function's dict return value is the summary); an exception
    records FAILED with its traceback and propagates; Ctrl-C records CANCELED and the KeyboardInterrupt
    propagates; a cancel from elsewhere (``JobCanceled`` from ``run.log_epoch``) records CANCELED and ends
    the block quietly, so the code after it runs. In a further rank of a multi-process run (``RANK``, else
    ``LOCAL_RANK`` or ``NODE_RANK``, set and not 0) no job is created: ``run`` is a ``jobtrack.ranks.RankReplica``
    that stores nothing, and rank zero's block is the run's job.

    Raises:
        InvalidArgument: a bad argument (checked here, before anything is written).
        NestedRun: (on entering) another tracked run or job is running in this thread.
    """
    return Tracking(dataset, experiment=experiment, config=config, db=db, eval_metric=eval_metric,
                    eval_mode=eval_mode, patience=patience, tags=tags, provenance=provenance)


def active_run() -> RunContext | None:
    """The RunContext of the innermost ``track()`` block open in this thread, or None."""
    runs: list[RunContext] = getattr(_local, "runs", [])
    return runs[-1] if runs else None


class Tracking:
    """What ``track()`` returns: a context manager and a decorator; each use is a new job."""

    def __init__(self, dataset: Dataset | None, *, experiment: str | None, config: Mapping[str, Any] | None,
                 db: str | Path | None, eval_metric: str | None, eval_mode: str | None,
                 patience: int | None, tags: Sequence[str] = (), provenance: bool = True) -> None:
        if dataset is not None and not isinstance(dataset, Dataset):
            raise InvalidArgument(f"track(dataset=...) must be a jobtrack.Dataset or None, "
                                  f"not {type(dataset).__name__}.")
        if experiment is not None:
            check_name(experiment, "track(experiment=...)")
            if dataset is not None and experiment != dataset.experiment_name:
                raise InvalidArgument(f"track(experiment={experiment!r}) disagrees with the dataset's experiment "
                                      f"{dataset.experiment_name!r}; pass one of them.")
        self._args: dict[str, Any] = {"dataset": dataset, "experiment": experiment, "config": config, "db": db,
                                      "eval_metric": eval_metric, "eval_mode": eval_mode, "patience": patience,
                                      "tags": tags, "provenance": provenance}
        # Trainer checks every option exactly as for fit(), and opens the store.
        self._trainer = Trainer(config=config, db=db, runner="eager", eval_metric=eval_metric,
                                eval_mode=eval_mode, patience=patience, tags=tags, provenance=provenance)
        self._code: Any = None  # what provenance names as the code: the decorated function, else the caller
        self._dataset = dataset if dataset is not None else _Experiment(experiment or _script_experiment())
        self._block: _Block | None = None
        self._replica: ranks.RankReplica | None = None  # the block open in a process that is not rank zero

    @property
    def job_id(self) -> str | None:
        """The id of the job of the block running now (or that ran last), None before the first one."""
        return self._block.spec.job_id if self._block else None

    def __enter__(self) -> RunContext:
        if self._block is not None and self._block.open:
            raise NestedRun(self._block.spec.job_id)
        _check_not_nested()
        rank = ranks.process_rank()
        if rank is not None:  # a further rank of a multi-process run: the job is rank zero's (jobtrack.ranks)
            replica: Any = ranks.RankReplica(rank, self._dataset, self._trainer.config, self._trainer.patience)
            self._replica = replica
            _runs().append(replica)
            return cast("RunContext", replica)
        store = Store.open(self._trainer.db)
        block = _Block(store)
        spec = block.spec = self._spec(store, block)
        row = spec.row()
        if self._trainer.provenance:
            code = self._code or _caller_code(sys._getframe(1))
            row["provenance_json"] = jsonutil.dumps(provenance.collect([code], _table_files(self._dataset),
                                                                       store.job_dir(spec.job_id)), "provenance")
        token = store.create_job(row, model_run=spec.model_run(), claim=True, tags=self._trainer.tags)
        assert token is not None
        if not self._dataset.is_file_backed:  # predict(model_run_id=...) finds the rows, as after fit()
            runtime.remember_dataset(spec.model_run_id or "", self._dataset)
        signals.watch(store)  # Ctrl-C and SIGTERM cancel it, as they cancel every in-process job
        self._block = block
        return block.start(token)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if self._replica is not None:
            self._replica.close()
            self._replica = None
            _runs().pop()
            return False
        assert self._block is not None
        self._block.end(exc)
        return isinstance(exc, JobCanceled)  # a cancel ends the block (the job is CANCELED); the script goes on

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | None]:
        """Decorate ``fn``: each call is a new tracked job; a dict it returns is the job's summary.

        A call whose job was canceled (``JobCanceled`` from its ``log_epoch``) returns None.
        """

        @functools.wraps(fn)
        def tracked(*args: P.args, **kwargs: P.kwargs) -> R | None:
            run = Tracking(**self._args)
            run._code = fn
            with run:
                result = fn(*args, **kwargs)
                if isinstance(result, Mapping) and run._block is not None:
                    run._block.summary = dict(result)
                return result
            return None  # canceled

        return tracked

    def _spec(self, store: Store, block: _Block) -> _TrackedSpec:
        trainer, model_run_id = self._trainer, new_id("mr")
        return _TrackedSpec(
            job_id=new_id("job"), job_type=JobType.TRAIN, dataset=self._dataset, config=trainer.config,
            model_run_id=model_run_id, model_dir=store.model_dir(model_run_id), runner_kind="eager",
            train_fn=block.replay, patience=trainer.patience, eval_metric=trainer.eval_metric,
            metric_mode=trainer.eval_mode, block=block,
        )


class _Block:
    """One tracked block: its job, its RunContext, and what it ended with."""

    spec: _TrackedSpec

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ctx: RunContext | None = None
        self.token = 0
        self.outcome: BaseException | None = None
        self.summary: dict[str, Any] | None = None
        self.open = False
        self._stack = ExitStack()

    def start(self, token: int) -> RunContext:
        """Renew the claim, capture the output and open the block; returns its RunContext."""
        self.token = token
        ctx = self.ctx = JobSpec.context(self.spec, self.store, token)  # the runner's RunContext, built once
        beats = runtime.current().heartbeats
        key = (id(self.store), self.spec.job_id)
        beats.add(key, lambda: self.store.heartbeat(self.spec.job_id, token), self.store.lease_s / 3)
        self._stack.callback(beats.remove, key)
        self._stack.enter_context(capture.job_output(ctx.log_file))  # by thread, as the eager runner's
        _runs().append(ctx)
        self._stack.callback(_runs().pop)
        self.open = True
        return ctx

    def end(self, exc: BaseException | None) -> JobStatus | None:
        """Record the end through the runners' code; the block's own exception is left to propagate."""
        tb = exc.__traceback__ if exc is not None else None
        self.outcome = exc
        try:
            self._stack.close()  # output capture off (run_job captures its own part), out of the stack
            return run_job(self.store, self.spec, token=self.token)
        except BaseException as raised:
            if raised is not exc:  # a second Ctrl-C while recording, say
                raise
            return None  # KeyboardInterrupt / SystemExit, re-raised by the runner once recorded: it is the block's
        finally:
            self.open = False
            if exc is not None:
                exc.__traceback__ = tb  # the user's traceback, without the runner's frames that replayed it

    def replay(self, ctx: RunContext) -> Any:
        """The job's code as the runner sees it: what the block did, done again (returned or raised)."""
        exc = self.outcome
        if exc is None:
            return self.summary
        if isinstance(exc, KeyboardInterrupt) and not ctx.stopped_by_signal:
            raise JobCanceled(ctx.job_id)  # an interrupt raised without jobtrack's handler (a notebook's)
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            return self.summary  # sys.exit() / sys.exit(0): a normal end
        raise exc


@dataclass(frozen=True)
class _TrackedSpec(JobSpec):
    """The spec of a tracked block: its code replays the block; its context is the one the block used."""

    block: _Block | None = None

    def context(self, store: Store, token: int, *args: Any, **kwargs: Any) -> RunContext:
        assert self.block is not None and self.block.ctx is not None
        return self.block.ctx

    def evaluation(self) -> tuple[str | None, str | None]:
        if isinstance(self.dataset, _Experiment):  # no task type: only an eval_metric the run chose
            return self.eval_metric, self.metric_mode
        return super().evaluation()


class _Experiment(Dataset):
    """No dataset: a tracked run that names only its experiment (no tables, no task type)."""

    def __init__(self, name: str) -> None:  # Dataset's own checks need a task type, which this lacks
        self.name = check_name(name, "experiment")
        self.task_type = ""
        self.task_name = ""
        self._tables = {}

    def __repr__(self) -> str:
        return f"experiment {self.name!r}"

    @property
    def experiment_name(self) -> str:
        return self.name


def _runs() -> list[RunContext]:
    if not hasattr(_local, "runs"):
        _local.runs = []
    runs: list[RunContext] = _local.runs
    return runs


def _check_not_nested() -> None:
    """NestedRun if this thread runs a tracked block or a job's code (whose output it captures)."""
    outer = active_run()
    if outer is not None:
        raise NestedRun(outer.job_id)
    routed = runtime.current().capture.routes.get(threading.get_ident())
    if routed is not None:
        raise NestedRun(routed.log.job_id)


def _caller_code(frame: FrameType) -> Any:
    """The code that entered the block, shaped as provenance reads a function (its code, module, globals)."""
    return SimpleNamespace(__code__=frame.f_code, __module__=frame.f_globals.get("__name__"),
                           __globals__=frame.f_globals)


def _table_files(dataset: Dataset) -> dict[str, Path]:
    return {s: p for s in dataset.splits if (p := dataset.table_path(s)) is not None}


def _script_experiment() -> str:
    """The running script's file name as an experiment name (``train.py`` → ``train``), else the default."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return DEFAULT_EXPERIMENT
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem).lstrip(".")
    return name[:200] or DEFAULT_EXPERIMENT
