"""The base error, the reference SDK's error names, and errors about jobs, arguments and values."""

from __future__ import annotations

from typing import Any


class JobtrackError(Exception):
    """Base class of every error jobtrack raises on purpose."""


# -- the reference SDK's error names (issue #22) ----------------------------------------------------
# Code written for the reference catches these; jobtrack's own errors derive from the one the reference
# raises in the same situation, so ``except ValidationError`` / ``except JobMonitorError`` work unchanged.


class ValidationError(JobtrackError, ValueError):
    """An argument rule was broken (the reference SDK's name; ``InvalidArgument`` is jobtrack's)."""


class JobError(JobtrackError):
    """Base of the reference's job errors; ``code`` names where it was raised (None in jobtrack)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class JobMonitorError(JobError):
    """A ``JobMonitor`` operation failed (reference name): unknown job, model not ready, results not materialized."""


class JobManagerError(JobError):
    """A ``JobManager`` operation failed (reference name): for example an unknown job id."""


class ModelManagerError(JobtrackError):
    """A model registry operation failed (reference name): unknown model, model in use."""


class JobNotFound(JobManagerError, JobMonitorError, LookupError):
    """No job with this id exists in the database."""

    def __init__(self, job_id: str, db: str | None = None) -> None:
        self.job_id = job_id
        self.db = db
        where = f" in {db}" if db else ""
        super().__init__(
            f"No job with id {job_id!r}{where}. "
            "Check the id (JobManager().list_jobs() shows them) and the database path."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.db))


class AmbiguousJobId(JobNotFound):
    """A job id prefix that more than one job starts with (``jobtrack show job_66``)."""

    def __init__(self, prefix: str, matches: list[str], db: str | None = None) -> None:
        self.prefix = prefix
        self.matches = list(matches)
        self.job_id, self.db, self.code = prefix, db, None
        count = f"{len(matches)} jobs" if len(matches) <= 10 else "more than 10 jobs, among them"  # 11 are read
        Exception.__init__(self, f"Job id prefix {prefix!r} matches {count}: {', '.join(matches[:10])}. "
                                 "Give more of the id.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.prefix, self.matches, self.db))


class ModelNotFound(ModelManagerError, LookupError):
    """No model run or registered model matches the given id or key."""

    def __init__(self, model_ref: str, detail: str = "") -> None:
        self.model_ref = model_ref
        self.detail = detail
        super().__init__(
            f"No model {model_ref!r} in this database{': ' + detail if detail else ''}. "
            "Use the model_run_id of a train job, or a key printed by register_model()."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model_ref, self.detail))


class ModelNotReady(JobMonitorError):
    """The model's training job has not completed, so the model cannot be used or registered."""

    def __init__(self, model_run_id: str, status: str) -> None:
        self.model_run_id = model_run_id
        self.status = status
        super().__init__(
            f"Model run {model_run_id!r} comes from a training job that is {status}, not COMPLETED. "
            "Wait for the training job (monitor.wait()) or use another model."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model_run_id, self.status))


class ModelInUse(ModelManagerError):
    """A model run cannot be deleted while its training job, or a job using it, is QUEUED or RUNNING."""

    def __init__(self, model_run_id: str, job_id: str, status: str) -> None:
        self.model_run_id = model_run_id
        self.job_id = job_id
        self.status = status
        super().__init__(
            f"Model run {model_run_id!r} is in use by job {job_id!r}, which is {status}; nothing was deleted. "
            "Wait for that job (or cancel it), then delete the model."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model_run_id, self.job_id, self.status))


class JobNotCompleted(JobMonitorError, RuntimeError):
    """``materialize_results()`` on a job that ended FAILED or CANCELED: it has no results to make permanent.

    Also a ``RuntimeError``, which the reference SDK raises in this case.
    """

    def __init__(self, job_id: str, status: str, detail: str = "") -> None:
        self.job_id = job_id
        self.status = status
        self.detail = detail
        super().__init__(
            f"Job {job_id!r} is {status}, not COMPLETED{' (' + detail + ')' if detail else ''}; its results "
            "cannot be materialized. Look at get_status()['result'] and submit the job again."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status, self.detail))


class InvalidTransition(JobtrackError):
    """A status change that the state machine does not allow (SPEC §1).

    ``why`` follows "is <current>, ...": ``states.refusal()`` words it, so this module needs no import.
    """

    def __init__(self, job_id: str | None, current: str, requested: str, why: str = "") -> None:
        self.job_id = job_id
        self.current = str(current)
        self.requested = str(requested)
        self.why = why
        who = f"Job {job_id!r}" if job_id else "A job"
        middle = f", {why};" if why else ";"
        super().__init__(f"{who} is {self.current}{middle} refused the move to {self.requested}.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.current, self.requested, self.why))


class InvalidArgument(ValidationError):
    """An argument, or a combination of arguments, that cannot be accepted."""


class DuplicateName(InvalidArgument):
    """A name that must be unique (output alias, model version) is already taken."""


class TableExists(DuplicateName, JobMonitorError):
    """A permanent table of materialized results would replace a table that is already there.

    Raised by ``materialize_results()`` (a ``JobMonitorError``) and, before anything is written, by
    ``predict(..., materialize_results=True)`` (a ``ValidationError`` of its ``output_alias``).
    """

    def __init__(self, table: str, owner: str = "") -> None:
        self.table = table
        self.owner = owner
        super().__init__(
            f"A table named {table!r} already exists in this database{' (' + owner + ')' if owner else ''}; "
            "materialized results never replace a table. Drop it, or predict again with another output_alias."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.table, self.owner))


class MissingExtra(JobtrackError, ImportError):
    """An optional feature whose extra is not installed."""

    def __init__(self, extra: str, package: str, feature: str) -> None:
        self.extra = extra
        self.package = package
        self.feature = feature
        super().__init__(f"{feature} needs {package}, which is not installed: pip install 'jobtrack[{extra}]'.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.extra, self.package, self.feature))


class NotSerializable(JobtrackError, TypeError):
    """A value meant for the database is not JSON-serializable."""

    def __init__(self, field: str, detail: str, hint: str | None = None) -> None:
        self.field = field
        self.detail = detail
        self.hint = hint
        super().__init__(
            f"{field} is not JSON-serializable: {detail}. "
            + (hint or "Store numbers, strings, lists and dicts (numpy, pandas and torch scalars become numbers, "
                       "small 1-d arrays lists, datetimes and paths text).")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.detail, self.hint))


class ResultTooLarge(JobtrackError, ValueError):
    """A job's metrics or summary would make its ``result`` larger than its cap (``max_result_bytes``)."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        self.field = field
        self.size = size
        self.limit = limit
        super().__init__(
            f"{field} would take {size:,} bytes of the job's result, over its cap of {limit:,} bytes. "
            "Store large values in a file under ctx.model_dir or export them; or raise the cap with "
            "Trainer(max_result_bytes=...) or JOBTRACK_MAX_RESULT_BYTES."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.size, self.limit))


class WaitTimeout(JobtrackError, TimeoutError):
    """``wait()`` ran out of time before the job reached a terminal status."""

    def __init__(self, job_id: str, timeout: float, status: str, hint: str = "") -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.status = status
        self.hint = hint  # why it may never end as things stand (no worker runs its queue), or ""
        super().__init__(
            f"Job {job_id!r} is still {status} after {timeout:g} s. "
            + (hint or "Wait longer (wait(timeout=...)) or cancel it (cancel()).")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.timeout, self.status, self.hint))


class SnapshotCopy(JobMonitorError):
    """``wait()`` on (``doing="wait"``), or a cancel of (``doing="cancel"``), a job imported unfinished from a
    bundle (``--include-running``): it runs in another database, so it never ends in this one and cannot be
    stopped from it; a newer bundle of it brings its progress or its end (#19)."""

    def __init__(self, job_id: str, status: str, source: str, doing: str = "wait") -> None:
        self.job_id = job_id
        self.status = status
        self.source = source
        self.doing = doing
        then = ("Cancel it in that database; a bundle of it exported there once it ended brings its end here."
                if doing == "cancel" else "Export it again there (jobtrack export --include-running, or once it "
                "ended) and import that bundle: it replaces this copy.")
        super().__init__(
            f"Job {job_id!r} is a snapshot copy, imported from a bundle while {status} in database {source}: it "
            f"runs there and never ends here. {then}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status, self.source, self.doing))


class RunnerFenced(JobtrackError):
    """A runner lost its claim on a job (declared dead or canceled) and may no longer write to it."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(
            f"This runner no longer owns job {job_id!r} (it is {status}); its writes were refused. "
            "The job was taken over or declared lost; nothing more is recorded from this run."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status))


class JobCanceled(BaseException):
    """Raised inside user code when its job was canceled; control flow, not an error.

    It derives from BaseException so that a broad ``except Exception`` in training code
    cannot swallow a cancel request.
    """
