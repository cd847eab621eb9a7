"""Retries (#18): which ended attempt gets another one, and ``jobtrack retry``'s new job for an ended one.

The policy is pure: ``Trainer(retries=N, retry_on=(ExcType, ...))`` gives a job ``N + 1`` attempts.
A lost runner (process killed, worker gone, lease expired) is always retried while attempts are
left; an exception of the job's code only if it is one of ``retry_on``. ``JobCanceled`` and cancels
never are. The statuses do not move: a retried job stays RUNNING (SPEC §7).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from jobtrack import checkpoints, jsonutil, runtime
from jobtrack.errors import InvalidArgument, JobCanceled, RetryNotAllowed
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.store import Store

MAX_RETRIES = 100
"""The most retries a job may ask for (a larger number is a mistake, not a plan)."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a job gets and which exceptions of its code start another one."""

    max_attempts: int = 1
    retry_on: tuple[type[BaseException], ...] = ()

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether the code's exception ``exc`` in attempt ``attempt`` starts another attempt."""
        if isinstance(exc, JobCanceled) or not isinstance(exc, Exception) or attempt >= self.max_attempts:
            return False
        return bool(self.retry_on) and isinstance(exc, self.retry_on)

    def refs(self) -> list[str]:
        """``retry_on`` as importable ``module:QualName`` references (the stored spec)."""
        return [f"{cls.__module__}:{cls.__qualname__}" for cls in self.retry_on]


def policy(retries: Any = 0, retry_on: Any = ()) -> RetryPolicy:
    """``Trainer(retries=, retry_on=)`` checked at call time.

    Raises:
        InvalidArgument: retries not an integer in 0..MAX_RETRIES, or retry_on not exception classes
            (JobCanceled and BaseExceptions that are not Exceptions are refused: a cancel is never retried).
    """
    count = jsonutil.as_int(retries)  # numpy integers too (#13)
    if count is None or not 0 <= count <= MAX_RETRIES:
        raise InvalidArgument(f"retries must be an integer from 0 to {MAX_RETRIES} (the attempts after the first), "
                              f"not {type(retries).__name__} {retries!r}.")
    retries = count
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if not isinstance(retry_on, Iterable) or isinstance(retry_on, (str, bytes)):
        raise InvalidArgument(f"retry_on must be a tuple of exception classes, e.g. (ValueError,), not {retry_on!r}.")
    classes = tuple(retry_on)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Exception)) or issubclass(cls, JobCanceled):
            raise InvalidArgument(f"retry_on holds {cls!r}, which is not an Exception class; pass classes such as "
                                  "(ValueError, OSError). Cancels (JobCanceled) are never retried.")
    if classes and not retries:
        raise InvalidArgument("retry_on= needs retries=N (how many more attempts the job may make), "
                              "e.g. Trainer(retries=2, retry_on=(ValueError,)).")
    return RetryPolicy(retries + 1, classes)


def from_refs(max_attempts: int, refs: Iterable[str]) -> RetryPolicy:
    """The policy of a stored job (a worker rebuilding it); a class that no longer imports is skipped."""
    from jobtrack.spec import import_function

    classes = []
    for ref in refs:
        try:
            cls: Any = import_function(ref)
        except InvalidArgument:
            continue
        if isinstance(cls, type) and issubclass(cls, Exception):
            classes.append(cls)
    return RetryPolicy(max(int(max_attempts or 1), 1), tuple(classes))


def check_importable(rule: RetryPolicy) -> None:
    """Refuse ``retry_on`` classes a worker could not import back (``runner="worker"``).

    Raises:
        InvalidArgument: a class defined in ``__main__``, in a function, or not found under its name.
    """
    for cls, ref in zip(rule.retry_on, rule.refs(), strict=True):
        if from_refs(1, [ref]).retry_on != (cls,):
            raise InvalidArgument(f"runner='worker' needs retry_on classes importable as 'module:Class'; {ref!r} is "
                                  "not (classes defined in __main__ or in a function cannot be imported by a worker).")


# -- jobtrack retry ------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    # the format of trainer.new_id: ids sort by creation time
    return f"{prefix}_{time.time_ns() // 1000:x}{runtime.random_bits(32):08x}"


def resubmit(store: Store, job_id: str, *, resume: bool = True) -> str:
    """Queue a new job that runs an ended (FAILED or CANCELED) job's spec again; returns its id.

    The new job carries ``retry_of``; the old one stays as it ended. With ``resume`` it starts from the
    old job's epochs and checkpoints (copied: pruning the old job loses nothing). A training job
    trains a new model run. The new job is run by ``jobtrack worker``s, so the old job's code must
    be importable (it ran with ``runner="worker"``).

    Raises:
        RetryNotAllowed: the job is QUEUED, RUNNING or COMPLETED (nothing is written).
        InvalidArgument: the job ran in-process, so its code is not stored.
        JobNotFound: no such job.
    """
    rec = store.get_job(job_id)
    if rec.status not in (JobStatus.FAILED, JobStatus.CANCELED):
        raise RetryNotAllowed(job_id, rec.status.value)
    doc = rec.spec
    if rec.runner_kind != "worker" or not (doc.get("train_fn") or doc.get("predict_fn")):
        raise InvalidArgument(
            f"Job {job_id} ran with runner={rec.runner_kind!r}: its code lived in the process that submitted it and "
            "is not stored, so it cannot be retried from here. Submit it again with its Trainer, or run jobs with "
            "runner='worker' to retry them with `jobtrack retry`.")
    new_id = _new_id("job")
    trains = rec.job_type.value != "inference"
    model_run_id = _new_id("mr") if trains else rec.model_run_id
    if trains:
        assert model_run_id is not None
        doc = {**doc, "model_dir": store.model_dir(model_run_id)}
    values = {"id": new_id, "job_type": rec.job_type.value, "experiment_name": rec.experiment_name,
              "model_run_id": model_run_id, "output_alias": rec.output_alias, "eval_metric": rec.eval_metric,
              "metric_mode": rec.metric_mode, "runner_kind": rec.runner_kind,
              "spec_json": jsonutil.dumps(doc, "job spec"), "max_attempts": rec.max_attempts}
    model_run = {"id": model_run_id, "job_id": new_id, "experiment_name": rec.experiment_name,
                 "task_type": (doc.get("dataset") or {}).get("task_type", "")} if trains else None
    target = checkpoints.directory(store.job_dir(new_id)) if resume else None
    if target is not None:
        checkpoints.copy_all(store.job_dir(job_id) / checkpoints.DIR_NAME, target)
    try:
        store.create_retry(values, retry_of=job_id, model_run=model_run, unique_alias=rec.output_alias,
                           copy_epochs=resume)
    except BaseException:
        shutil.rmtree(store.job_dir(new_id), ignore_errors=True)
        raise
    return new_id


def retry_links(store: Store, rec: Any) -> dict[str, Any]:
    """``{"retry_of": id or None, "retried_by": [ids]}`` of a job, for ``jobtrack show``."""
    return {"retry_of": rec.retry_of, "retried_by": store.retried_by(rec.id)}
