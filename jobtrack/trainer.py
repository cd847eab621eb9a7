"""Trainer: holds the user's training and prediction code; each call validates, writes one job, hands it to a runner."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobtrack import exports, jsonutil, provenance, retrying, runtime
from jobtrack.config import check_lock_timeout
from jobtrack.dataset import TASK_TYPES, Dataset, TableSource, check_name, check_tags
from jobtrack.errors import InvalidArgument, ModelNotReady
from jobtrack.monitor import JobMonitor
from jobtrack.runners import RUNNERS, process, signals, thread
from jobtrack.runners.base import run_job
from jobtrack.spec import JobSpec, UserFn, check_user_fn, function_ref
from jobtrack.states import JobStatus, JobType
from jobtrack.store import Store

if TYPE_CHECKING:
    from jobtrack.sweep import SweepMonitor


def _positive_int(value: Any, what: str) -> int:
    """``value`` as a plain int >= 1 (numpy integers too, #13), else InvalidArgument naming ``what``."""
    number = jsonutil.as_int(value)
    if number is None or number < 1:
        raise InvalidArgument(f"{what} must be a positive integer, not {type(value).__name__} {value!r}.")
    return number


_flag = jsonutil.as_flag


def new_id(prefix: str) -> str:
    """A unique id that sorts by creation time: prefix, microseconds in hex, random suffix."""
    return f"{prefix}_{time.time_ns() // 1000:x}{runtime.random_bits(32):08x}"


class Trainer:
    """The user's training and prediction code and its config, bound to a database and a runner.

    Args:
        train: ``train(ctx) -> dict | None``; reports epochs with ``ctx.log_epoch`` and saves the
            model under ``ctx.model_dir``.
        predict: ``predict(ctx) -> dict | None``; loads the model from ``ctx.model_dir`` and calls
            ``ctx.export("predictions", rows)``.
        config: passed to the code as ``ctx.config``.
        db: database path or URL (default: ``$JOBTRACK_DB``, then the documented default path).
        runner: ``"thread"`` (default), ``"eager"``, ``"process"`` or ``"worker"``.
        max_workers: jobs run at once by the thread and process runners (default 1: submission order).
        lock_timeout: seconds a write waits for the database's write lock before ``StoreBusy``
            (default 30; applies to this database in this process).
        n_epochs: the number of epochs the training code should run (``ctx.n_epochs``; the reference's
            ``TrainerConfig.n_epochs``); None leaves it to the code's config.
        patience: early stopping, as the reference's ``TrainerConfig.patience``: after this many evaluations
            without improvement of the evaluation metric, ``ctx.should_stop`` becomes True and
            ``ctx.log_epoch()`` returns True. None (the default) never says stop; the loop always decides.
        eval_every: evaluate every this many epochs (``ctx.eval_every``, ``ctx.should_evaluate(epoch)``).
        eval_metric: the metric that chooses the best epoch (and early stopping), instead of the task
            type's (``roc_auc``, ``rmse``, ...): a name the training code reports with ``ctx.log_epoch``.
        eval_mode: ``"max"`` if a larger ``eval_metric`` is better, ``"min"`` if smaller; needed unless the
            metric is a well-known one (a task type's metric, ``loss``, ``accuracy``, ``mae``, ...).
        max_result_bytes: the cap, in bytes, of a job's reported epochs and of its summary as stored JSON;
            None: ``$JOBTRACK_MAX_RESULT_BYTES``, else ``config.DEFAULT_MAX_RESULT_BYTES`` (4 MiB).
        retries: how many more times a job may run after its first attempt (#18): when its runner is lost
            (process killed, worker gone) or its code raises one of ``retry_on``. Default 0: no retries.
        retry_on: exception classes of the job's code that start another attempt (needs ``retries``).
        tags: names stored with each job (``monitor.tag()``/``untag()`` change them later; #15).
        provenance: record the code, environment and data of each job at submission (git commit and diff,
            Python, host, package versions, table file hashes; ``monitor.provenance()``). Default True.
        max_log_bytes: the cap of each job's log file (what its code prints and logs, ``ctx.log`` lines);
            None: ``config.DEFAULT_MAX_LOG_BYTES`` (4 MiB). Output past it reaches the terminal only.
    """

    def __init__(
        self,
        train: UserFn | None = None,
        predict: UserFn | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        db: str | os.PathLike[str] | None = None,
        runner: str = "thread",
        max_workers: int = 1,
        lock_timeout: float | None = None,
        n_epochs: int | None = None,
        patience: int | None = None,
        eval_every: int = 1,
        max_log_bytes: int | None = None,
        eval_metric: str | None = None,
        eval_mode: str | None = None,
        max_result_bytes: int | None = None,
        retries: int = 0,
        retry_on: tuple[type[Exception], ...] = (),
        tags: Sequence[str] = (),
        provenance: bool = True,
    ) -> None:
        if runner not in RUNNERS:
            raise InvalidArgument(f"Unknown runner {runner!r}; use one of {', '.join(RUNNERS)}.")
        for fn, what in ((train, "train"), (predict, "predict")):
            if fn is not None:
                check_user_fn(fn, what)
        max_workers = _positive_int(max_workers, "max_workers")
        if config is not None and not isinstance(config, Mapping):
            raise InvalidArgument(f"config must be a dict, not {type(config).__name__}.")
        if lock_timeout is not None:
            check_lock_timeout(lock_timeout)
        self.n_epochs, self.patience, self.max_log_bytes, self.max_result_bytes = (
            None if value is None else _positive_int(value, what)
            for value, what in ((n_epochs, "n_epochs"), (patience, "patience"), (max_log_bytes, "max_log_bytes"),
                                (max_result_bytes, "max_result_bytes")))
        self.eval_every = _positive_int(eval_every, "eval_every")
        self.eval_metric, self.eval_mode = _evaluation(eval_metric, eval_mode)
        self.retry_policy = retrying.policy(retries, retry_on)  # (#18)
        self.tags, self.provenance = check_tags(tags), _flag(provenance, "provenance")  # (#15)
        self.train_fn = train
        self.predict_fn = predict
        self.config: dict[str, Any] = dict(config or {})
        self.runner = runner
        self.max_workers = max_workers
        self._refs: dict[str, str] = {}
        if runner == "worker":
            jsonutil.dumps(self.config, "config (runner='worker' stores it for the worker)")
            self._refs = {what: function_ref(fn, what) for fn, what in ((train, "train"), (predict, "predict"))
                          if fn is not None}
            retrying.check_importable(self.retry_policy)  # a worker imports retry_on back
        self._store = Store.open(db, lock_timeout=lock_timeout)

    @property
    def db(self) -> str:
        """The database this trainer writes to."""
        return self._store.target

    # -- the three calls -------------------------------------------------------------------

    def fit(self, dataset: Dataset) -> JobMonitor:
        """Create a ``train`` job for ``dataset`` and return its monitor at once.

        Raises:
            InvalidArgument: no train function, a dataset without a train table, or a dataset the runner cannot use.
        """
        self._require("train", self.train_fn)
        self._check_dataset(dataset, needs=("train",))
        model_run_id = new_id("mr")
        return self._submit(JobType.TRAIN, dataset, model_run_id, new_model=True)

    def predict(
        self,
        output_alias: str,
        output_config: Mapping[str, Any] | None = None,
        test_batch_size: int = 128,
        experiment_name: str | None = None,
        dataset: Dataset | None = None,
        test_table: TableSource | None = None,
        model_run_id: str | None = None,
        registered_model_key: str | None = None,
        extract_embeddings: bool = False,
        materialize_results: bool = False,
        flatten_output: bool = False,
    ) -> JobMonitor:
        """Create an ``inference`` job with a trained model and return its monitor (at once by default).

        The parameters are the reference SDK's, in its order. Exactly one of ``model_run_id`` /
        ``registered_model_key`` (``"name:version"`` or ``"database.schema.name.version"``).
        ``test_table`` only without ``dataset`` (it replaces the training dataset's test table); with
        neither, the training dataset's test table is used. ``experiment_name`` names the model's
        experiment (``name_task_type_task_name``; ``name/task_type/task_name`` also reads): without
        ``dataset`` it selects the model's training dataset and then needs ``test_table``, as in the
        reference. ``test_batch_size`` reaches the code as ``ctx.test_batch_size`` (``ctx.batches()``).
        ``flatten_output=True`` writes one predictions row per label or candidate and drops the
        ``ground_truth`` column. ``materialize_results=True`` blocks until the job ends and turns its
        source views into permanent tables (``JobMonitor.materialize_results()``); jobtrack's default is
        False, so the call returns at once (see the README's differences from the reference).

        Raises:
            ValidationError (InvalidArgument): a broken argument rule, or no test table.
            ModelNotFound: an unknown model run or registered key.
            ModelNotReady: the model's training job has not completed.
            DuplicateName: ``output_alias`` already has exports (or, to materialize, tables).
            JobNotCompleted: with ``materialize_results=True``, the job ended FAILED or CANCELED.
        """
        self._require("predict", self.predict_fn)
        alias = check_name(output_alias, "output_alias")
        out_config = exports.check_output_config(output_config)
        batch_size = _positive_int(test_batch_size, "test_batch_size")
        materialize = _flag(materialize_results, "materialize_results")
        flat = _flag(flatten_output, "flatten_output")
        embeddings = _flag(extract_embeddings, "extract_embeddings")
        if (model_run_id is None) == (registered_model_key is None):
            raise InvalidArgument("Pass exactly one of model_run_id= and registered_model_key=.")
        for value, what in ((model_run_id, "model_run_id"), (registered_model_key, "registered_model_key")):
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(f"{what} must be a string, not {type(value).__name__} {value!r}.")
        if dataset is not None and test_table is not None:
            raise InvalidArgument(
                "Pass test_table= only without dataset= (it overrides the training dataset's test table); "
                "to use another dataset, give that dataset a test table."
            )
        experiment = _experiment(experiment_name, dataset, test_table)
        if registered_model_key is not None:
            model_run_id = self._store.resolve_registered(registered_model_key)
        assert model_run_id is not None
        run, train_job = self._store.get_model_run(model_run_id)
        if experiment is not None and experiment != run["experiment_name"]:
            raise InvalidArgument(
                f"experiment_name {experiment_name!r} is not the experiment of model run {model_run_id!r}, "
                f"which was trained on {run['experiment_name']!r}."
            )
        if train_job.status is not JobStatus.COMPLETED:
            raise ModelNotReady(model_run_id, train_job.status)
        if dataset is None:
            dataset = self._training_dataset(model_run_id, train_job.spec, test_table)
        self._check_dataset(dataset, needs=("test",))
        if materialize:
            self._store.check_tables_free([exports.view_name(kind, alias) for kind in exports.KINDS])
        model_dir = self._store.model_dir_of(model_run_id, train_job.spec.get("model_dir"))
        monitor = self._submit(JobType.INFERENCE, dataset, model_run_id, alias=alias, output_config=out_config,
                               extract_embeddings=embeddings, model_dir=model_dir,
                               test_batch_size=batch_size, flatten_output=flat)
        if materialize:
            monitor.materialize_results()
        return monitor

    def fit_predict(
        self,
        dataset: Dataset,
        output_alias: str,
        output_config: Mapping[str, Any] | None = None,
        test_batch_size: int = 128,
        extract_embeddings: bool = False,
        materialize_results: bool = False,
        flatten_output: bool = False,
    ) -> JobMonitor:
        """Create a ``train_inference`` job: train on ``dataset``, then predict its test table.

        The parameters are the reference SDK's, in its order; ``test_batch_size``, ``flatten_output`` and
        ``materialize_results`` work as in ``predict()`` (jobtrack's default: ``materialize_results=False``).

        Raises:
            ValidationError (InvalidArgument): missing code, a dataset without train and test tables, a bad
                alias, output_config, batch size or flag.
            DuplicateName: ``output_alias`` already has exports (or, to materialize, tables).
            JobNotCompleted: with ``materialize_results=True``, the job ended FAILED or CANCELED.
        """
        self._require("train", self.train_fn)
        self._require("predict", self.predict_fn)
        alias = check_name(output_alias, "output_alias")
        out_config = exports.check_output_config(output_config)
        batch_size = _positive_int(test_batch_size, "test_batch_size")
        materialize = _flag(materialize_results, "materialize_results")
        flat = _flag(flatten_output, "flatten_output")
        embeddings = _flag(extract_embeddings, "extract_embeddings")
        self._check_dataset(dataset, needs=("train", "test"))
        if materialize:
            self._store.check_tables_free([exports.view_name(kind, alias) for kind in exports.KINDS])
        monitor = self._submit(JobType.TRAIN_INFERENCE, dataset, new_id("mr"), new_model=True, alias=alias,
                               output_config=out_config, extract_embeddings=embeddings,
                               test_batch_size=batch_size, flatten_output=flat)
        if materialize:
            monitor.materialize_results()
        return monitor

    def sweep(self, dataset: Dataset, space: Mapping[str, Any], n_trials: int | None = None, parallel: int = 1,
              sampler: Any = "random", name: str | None = None, seed: int | None = None,
              prune: Any = None) -> SweepMonitor:
        """Search ``space`` (config key -> list of choices, ``jobtrack.uniform/loguniform/randint`` range, or value):
        each trial is a ``train`` job with its point merged into this trainer's config (#17, ``jobtrack.sweep``).

        ``sampler``: "grid" (every point once; ``n_trials`` defaults to the grid size), "random" (seeded) or an
        Optuna sampler. ``parallel`` trials run at once with this trainer's runner. The same ``name`` resumes the
        sweep. ``prune="median"`` (or an Optuna pruner) stops trials worse than the median at an epoch.

        Raises:
            InvalidArgument: a bad space, sampler, count or name; ranges with sampler="grid".
            SweepConflict: a sweep of this name exists with another space, sampler, pruner, experiment or config.
        """
        from jobtrack import sweep

        self._require("train", self.train_fn)
        self._check_dataset(dataset, needs=("train",))
        return sweep.start(self, self._store, dataset, space, n_trials=n_trials, parallel=parallel, sampler=sampler,
                           name=name, seed=seed, prune=prune)

    # -- helpers ---------------------------------------------------------------------------

    def _require(self, what: str, fn: Callable[..., Any] | None) -> None:
        if fn is None:
            raise InvalidArgument(f"This Trainer has no {what} function; pass {what}=... to Trainer().")

    def _check_dataset(self, dataset: Any, *, needs: tuple[str, ...]) -> None:
        if self.runner == "process":
            process.check_can_start()  # before any row is written: a Pool worker cannot start the job's child
        if not isinstance(dataset, Dataset):
            raise InvalidArgument(f"dataset must be a jobtrack.Dataset, not {type(dataset).__name__}.")
        for split in needs:
            if not dataset.has_table(split):
                raise InvalidArgument(
                    f"Dataset {dataset.name!r} has no {split!r} table, which this job needs; "
                    f"it has {', '.join(dataset.splits) or 'no tables'}."
                )
        if self.runner == "worker" and not dataset.is_file_backed:
            raise InvalidArgument(
                "runner='worker' needs every table as a file path (a worker process cannot see this "
                "process's memory); write the rows to CSV/JSON, or use runner='thread'."
            )

    def _training_dataset(self, model_run_id: str, train_spec: dict[str, Any], test_table: Any) -> Dataset:
        """The model run's training dataset, with ``test_table`` (if given) as its test table."""
        ds: Dataset | None = runtime.training_dataset(model_run_id)
        spec = train_spec.get("dataset") or {}
        try:
            if ds is None and test_table is not None:  # only its names are needed: tables whose files are gone
                tables = {split: t for split, t in (spec.get("tables") or {}).items()  # (moved, another machine)
                          if isinstance(t, dict) and os.path.isfile(str(t.get("path")))}  # are left out
                ds = Dataset.from_spec({**spec, "tables": tables}, files_only=True)
            elif ds is None:  # read back from the job spec
                ds = Dataset.from_spec(spec)
        except (InvalidArgument, KeyError):
            raise InvalidArgument(
                f"The training dataset of model run {model_run_id!r} is not available here (its tables were "
                "in another process's memory or its files are gone); pass dataset= or test_table=."
            ) from None
        return ds if test_table is None else ds.with_table("test", test_table)

    def _submit(
        self,
        job_type: JobType,
        dataset: Dataset,
        model_run_id: str,
        *,
        new_model: bool = False,
        alias: str | None = None,
        output_config: dict[str, Any] | None = None,
        extract_embeddings: bool = False,
        model_dir: str | None = None,
        test_batch_size: int = 128,
        flatten_output: bool = False,
    ) -> JobMonitor:
        spec = self._job_spec(job_type, dataset, model_run_id, alias=alias, output_config=output_config,
                              extract_embeddings=extract_embeddings, model_dir=model_dir,
                              test_batch_size=test_batch_size, flatten_output=flatten_output)
        row = spec.row()
        recorded = provenance.record(spec, self._store.job_dir(spec.job_id)) if self.provenance else None
        row["provenance_json"] = recorded.json if recorded is not None else None
        if self.runner != "worker":
            runtime.note_submitted(spec.job_id)  # before its row exists: a signal caught before this spares it
        token = self._store.create_job(row, model_run=spec.model_run() if new_model else None,
                                       unique_alias=row["output_alias"], claim=self.runner == "eager",
                                       tags=self.tags)
        if recorded is not None:
            recorded.save()  # the diff file, once the job exists (a refused submission leaves none)
        if new_model and not dataset.is_file_backed:
            runtime.remember_dataset(model_run_id, dataset)
        monitor = JobMonitor(self._store, spec.job_id, job_type.value, dataset.experiment_name, model_run_id)
        self._dispatch(token, spec)
        return monitor

    def _job_spec(self, job_type: JobType, dataset: Dataset, model_run_id: str, *, alias: str | None = None,
                  output_config: dict[str, Any] | None = None, extract_embeddings: bool = False,
                  model_dir: str | None = None, test_batch_size: int = 128, flatten_output: bool = False,
                  config: dict[str, Any] | None = None) -> JobSpec:
        """The JobSpec of a new job of this trainer (a sweep's trial passes its own ``config``, #17)."""
        trains = job_type is not JobType.INFERENCE
        predicts = job_type is not JobType.TRAIN
        spec = JobSpec(
            job_id=new_id("job"), job_type=job_type, dataset=dataset, config=self.config if config is None else config,
            model_run_id=model_run_id, model_dir=model_dir or self._store.model_dir(model_run_id),
            runner_kind=self.runner,
            train_fn=self.train_fn if trains else None, predict_fn=self.predict_fn if predicts else None,
            train_ref=self._refs.get("train") if trains else None,
            predict_ref=self._refs.get("predict") if predicts else None,
            output_alias=alias, output_config=output_config or {}, extract_embeddings=extract_embeddings,
            test_batch_size=test_batch_size, flatten_output=flatten_output,
            n_epochs=self.n_epochs if trains else None, patience=self.patience if trains else None,
            eval_every=self.eval_every, max_log_bytes=self.max_log_bytes,
            eval_metric=self.eval_metric if trains else None, metric_mode=self.eval_mode if trains else None,
            max_result_bytes=self.max_result_bytes, max_attempts=self.retry_policy.max_attempts,
            retry_on=self.retry_policy.retry_on,
        )
        return spec

    def _dispatch(self, token: int | None, spec: JobSpec) -> None:
        if self.runner != "worker":
            signals.watch(self._store)
        if self.runner == "eager":
            run_job(self._store, spec, token=token)
        elif self.runner in ("thread", "process"):
            run = run_job if self.runner == "thread" else process.run_in_child
            future = thread.submit(self._store, run, self._store, spec, max_workers=self.max_workers)
            runtime.current().local_jobs[spec.job_id] = future  # wait() wakes when it is done (#14)
        # "worker": the row is queued; `jobtrack worker` processes pick it up.


_KNOWN_MODES = {**{t.eval_metric: t.mode for t in TASK_TYPES.values()},
                **dict.fromkeys(("loss", "log_loss", "mse", "mae", "rmsle", "mape", "error", "perplexity"), "min"),
                **dict.fromkeys(("accuracy", "auc", "f1", "precision", "recall", "r2", "map", "ndcg"), "max")}
"""Directions of well-known metric names: ``Trainer(eval_metric=...)`` needs no ``eval_mode`` for these."""


def _evaluation(metric: Any, mode: Any) -> tuple[str | None, str | None]:
    """``Trainer(eval_metric=, eval_mode=)`` checked at call time: (metric, "max"|"min"), or (None, None).

    Raises:
        InvalidArgument: a metric that is not a name, a mode other than "max"/"min", a mode without a
            metric, or an unknown metric without a mode.
    """
    if mode is not None and mode not in ("max", "min"):
        raise InvalidArgument(f"eval_mode must be 'max' (larger is better) or 'min', not {mode!r}.")
    if metric is None:
        if mode is not None:
            raise InvalidArgument("eval_mode= needs eval_metric=: name the metric it applies to, "
                                  "e.g. Trainer(eval_metric='val_loss', eval_mode='min').")
        return None, None
    if not isinstance(metric, str) or not metric.strip() or not metric.isprintable():
        raise InvalidArgument(f"eval_metric must be a metric name your code reports with ctx.log_epoch, not "
                              f"{type(metric).__name__} {metric!r}.")
    known = _KNOWN_MODES.get(metric.lower())
    if mode is None and known is None:
        raise InvalidArgument(f"eval_metric={metric!r} needs eval_mode='max' (larger is better) or 'min'.")
    return metric, mode or known


def _experiment(experiment_name: Any, dataset: Dataset | None, test_table: Any) -> str | None:
    """``predict(experiment_name=...)`` checked against the reference's rules; the name in jobtrack's form.

    Raises:
        InvalidArgument: not a string, a dataset of another experiment, or no test_table without a dataset.
    """
    if experiment_name is None:
        return None
    if not isinstance(experiment_name, str) or not experiment_name:
        raise InvalidArgument(f"experiment_name must be a string, not {type(experiment_name).__name__} "
                              f"{experiment_name!r}; use e.g. 'churn_binary_classification_next_month'.")
    name = experiment_name.replace("/", "_")  # the reference's README also writes name/task_type/task_name
    if dataset is not None and dataset.experiment_name != name:
        raise InvalidArgument(f"experiment_name {experiment_name!r} and the dataset's experiment "
                              f"{dataset.experiment_name!r} disagree; pass one of them.")
    if dataset is None and test_table is None:
        raise InvalidArgument("Test table is mandatory when using an experiment name: pass test_table= "
                              "(a file or rows) with experiment_name=, or pass dataset=.")
    return name
