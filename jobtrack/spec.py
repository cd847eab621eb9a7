"""JobSpec: the one declaration of what a job runs with.

A Trainer builds it; it serialises itself for the store (the job row and its ``spec_json``), a
worker rebuilds it from the stored row, and every runner builds the job's RunContext from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobtrack import exports, jsonutil
from jobtrack.dataset import Dataset
from jobtrack.errors import InvalidArgument, NotSerializable
from jobtrack.retrying import RetryPolicy, from_refs
from jobtrack.states import JobType

if TYPE_CHECKING:
    from jobtrack.context import RunContext
    from jobtrack.store import JobRecord, Store

UserFn = Callable[["RunContext"], Any]


@dataclass(frozen=True)
class JobSpec:
    """Everything one job runs with: its code, data, config, model and exports."""

    job_id: str
    job_type: JobType
    dataset: Dataset
    config: dict[str, Any]
    model_run_id: str | None
    model_dir: str
    runner_kind: str = "thread"
    train_fn: UserFn | None = None
    predict_fn: UserFn | None = None
    train_ref: str | None = None  # "package.module:function", for workers in other processes
    predict_ref: str | None = None
    output_alias: str | None = None
    output_config: dict[str, Any] = field(default_factory=dict)
    extract_embeddings: bool = False
    # The reference SDK's per-job options (#22): inference batch size, flattened exports, early stopping.
    test_batch_size: int = 128
    flatten_output: bool = False
    n_epochs: int | None = None
    patience: int | None = None
    eval_every: int = 1
    max_log_bytes: int | None = None  # the cap of the job's log; None: config.DEFAULT_MAX_LOG_BYTES (#13)
    # Trainer(eval_metric=, eval_mode=) (#13): None keeps the task type's metric and its direction
    eval_metric: str | None = None
    metric_mode: str | None = None
    max_result_bytes: int | None = None  # the cap of the result and summary; None: config.max_result_bytes()
    # Trainer(retries=, retry_on=) (#18): attempts in all, and the code's exceptions that start another one
    max_attempts: int = 1
    retry_on: tuple[type[BaseException], ...] = ()
    retry_of: str | None = None  # the ended job this one retries (``jobtrack retry``): it may start with epochs

    @property
    def trains(self) -> bool:
        """Whether the job trains a model (train and train_inference)."""
        return self.job_type is not JobType.INFERENCE

    @property
    def retry_policy(self) -> RetryPolicy:
        """The job's retry policy (``jobtrack.retrying``)."""
        return RetryPolicy(self.max_attempts, self.retry_on)

    def evaluation(self) -> tuple[str | None, str | None]:
        """(evaluation metric, "max" or "min") of a training job: the Trainer's choice, else the task type's."""
        if not self.trains:
            return None, None
        if self.eval_metric:
            return self.eval_metric, self.metric_mode or self.dataset.metric_mode
        return self.dataset.eval_metric, self.dataset.metric_mode

    # -- to and from the store ------------------------------------------------------------------

    def spec_json(self) -> str:
        """The stored description (``jobs.spec_json``): what a worker needs and a person reads.

        Raises:
            NotSerializable: a config value that cannot be stored, for a job run by a worker.
        """
        doc: dict[str, Any] = {
            "dataset": self.dataset.to_spec(),
            "config": self.config,
            "output_alias": self.output_alias,
            "output_config": self.output_config,
            "extract_embeddings": self.extract_embeddings,
            "train_fn": self.train_ref,
            "predict_fn": self.predict_ref,
            "model_dir": self.model_dir,
        }
        doc.update(self._reference_options())
        if self.max_log_bytes is not None:
            doc["max_log_bytes"] = self.max_log_bytes
        if self.max_result_bytes is not None:
            doc["max_result_bytes"] = self.max_result_bytes
        if self.retry_on:
            doc["retry_on"] = self.retry_policy.refs()
        try:
            return jsonutil.dumps(doc, "job spec")
        except NotSerializable:
            if self.runner_kind == "worker":
                raise
            # In-process runners keep the real config in memory; the stored copy is for people to read.
            doc["config"] = {k: _readable(v) for k, v in self.config.items()}
            return jsonutil.dumps(doc, "job spec")

    def _reference_options(self) -> dict[str, Any]:
        """The reference SDK's options that differ from their defaults (the stored spec stays small)."""
        defaults = {"test_batch_size": 128, "flatten_output": False, "n_epochs": None, "patience": None,
                    "eval_every": 1}
        return {k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v}

    def row(self) -> dict[str, Any]:
        """The columns of the job's row that come from its spec."""
        return {
            "id": self.job_id,
            "job_type": self.job_type.value,
            "experiment_name": self.dataset.experiment_name,
            "model_run_id": self.model_run_id,
            "output_alias": exports.alias_key(self.output_alias) if self.output_alias else None,
            "eval_metric": self.evaluation()[0],
            "metric_mode": self.evaluation()[1],
            "runner_kind": self.runner_kind,
            "spec_json": self.spec_json(),
            "max_attempts": self.max_attempts,
        }

    def model_run(self) -> dict[str, Any] | None:
        """The model run row a training job creates (None for inference)."""
        if not self.trains:
            return None
        return {"id": self.model_run_id, "job_id": self.job_id, "experiment_name": self.dataset.experiment_name,
                "task_type": self.dataset.task_type}

    @classmethod
    def from_record(cls, rec: JobRecord) -> JobSpec:
        """Rebuild a stored job's spec in another process (importable functions, file-backed tables).

        Raises:
            InvalidArgument: a function that does not import, or a table that is not a readable file.
        """
        doc = rec.spec
        try:
            dataset = Dataset.from_spec(doc["dataset"])
        except KeyError as exc:
            raise InvalidArgument(f"Job {rec.id!r} has no stored dataset ({exc}); it cannot be run here.") from None
        return cls(
            job_id=rec.id,
            job_type=rec.job_type,
            dataset=dataset,
            config=doc.get("config") or {},
            model_run_id=rec.model_run_id,
            model_dir=doc.get("model_dir") or "",
            runner_kind=rec.runner_kind,
            train_fn=import_function(doc["train_fn"]) if doc.get("train_fn") else None,
            predict_fn=import_function(doc["predict_fn"]) if doc.get("predict_fn") else None,
            train_ref=doc.get("train_fn"),
            predict_ref=doc.get("predict_fn"),
            output_alias=doc.get("output_alias"),
            output_config=doc.get("output_config") or {},
            extract_embeddings=bool(doc.get("extract_embeddings")),
            test_batch_size=int(doc.get("test_batch_size") or 128),
            flatten_output=bool(doc.get("flatten_output")),
            n_epochs=doc.get("n_epochs"),
            patience=doc.get("patience"),
            eval_every=int(doc.get("eval_every") or 1),
            max_log_bytes=doc.get("max_log_bytes"),
            eval_metric=rec.eval_metric,
            metric_mode=rec.metric_mode,
            max_result_bytes=doc.get("max_result_bytes"),
            max_attempts=max(rec.max_attempts, 1),
            retry_on=from_refs(rec.max_attempts, doc.get("retry_on") or ()).retry_on,
            retry_of=rec.retry_of,
        )

    def context(self, store: Store, token: int, attempt: int = 1) -> RunContext:
        """The RunContext the job's code receives, for the runner holding ``token`` (in attempt ``attempt``)."""
        from jobtrack.context import RunContext

        return RunContext(store, self, token, attempt=attempt)


def _readable(value: Any) -> Any:
    try:
        jsonutil.dumps(value, "config value")
        return value
    except NotSerializable:
        return repr(value)


def import_object(ref: str, what: str = "function") -> Any:
    """Import ``package.module:name`` (dots after the colon reach nested attributes).

    Raises:
        InvalidArgument: a malformed reference, or one that does not import; ``what`` names it in the message.
    """
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise InvalidArgument(f"{what} {ref!r} is not of the form 'package.module:name'.")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(f"Cannot import {what} {ref!r}: {exc}.") from None
    return obj


def import_function(ref: str) -> UserFn:
    """Import ``package.module:function``.

    Raises:
        InvalidArgument: a malformed reference, or one that does not import to a callable.
    """
    obj = import_object(ref)
    if not callable(obj):
        raise InvalidArgument(f"{ref!r} is not callable.")
    return obj  # type: ignore[no-any-return]


def function_ref(fn: Callable[..., Any], what: str) -> str:
    """The importable reference of ``fn``, checked by importing it back.

    Raises:
        InvalidArgument: ``fn`` is a lambda, a nested function, or defined in ``__main__``.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        raise InvalidArgument(
            f"runner='worker' needs {what} importable as 'package.module:function'; {fn!r} is not "
            "(lambdas, nested functions and functions defined in __main__ cannot be imported by a worker). "
            "Move it into a module, or use runner='thread'."
        )
    ref = f"{module}:{qualname}"
    if import_function(ref) is not fn:
        raise InvalidArgument(f"{ref!r} does not import back to {fn!r}; use a module-level function.")
    return ref


def check_user_fn(fn: Any, what: str) -> None:
    """A job function must run its body when called: a generator or async function would complete having run none.

    Raises:
        InvalidArgument: not callable, or a generator or async function.
    """
    import inspect

    if not callable(fn):
        raise InvalidArgument(f"{what} must be a function taking a RunContext, not {type(fn).__name__}.")
    kind = ("an async generator" if inspect.isasyncgenfunction(fn) else "an async" if inspect.iscoroutinefunction(fn)
            else "a generator" if inspect.isgeneratorfunction(fn) else None)
    if kind is not None:
        raise InvalidArgument(f"{what} is {kind} function: calling it runs none of its code, so the job would "
                              "end having done nothing. Use a plain def that runs its loop (no yield; run async "
                              "code with asyncio.run() inside it).")
