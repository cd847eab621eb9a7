"""Errors of finding, comparing, sweeping and retrying runs (#15, #17, #18, #20)."""

from __future__ import annotations

from typing import Any

from jobtrack.errors.api import InvalidArgument, JobManagerError, JobtrackError


class InvalidQuery(InvalidArgument):
    """A ``--where`` query that does not parse or names an unknown field; ``position`` is 0-based."""

    def __init__(self, query: str, position: int, problem: str) -> None:
        self.query, self.position, self.problem = query, position, problem
        caret = " " * position + "^"
        super().__init__(f"Invalid query at position {position}: {problem}\n  {query}\n  {caret}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.query, self.position, self.problem))


class NestedRun(JobtrackError, RuntimeError):
    """``jobtrack.track()`` inside another ``track()`` (or inside a running job) of the same thread."""

    def __init__(self, outer_job_id: str) -> None:
        self.outer_job_id = outer_job_id
        super().__init__(f"jobtrack.track() was entered while job {outer_job_id} is being tracked in this thread; "
                         "end the outer track() first, or log to its context instead of starting a new run.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.outer_job_id,))


class RetryNotAllowed(JobManagerError):
    """``retry`` of a job that has not ended FAILED or CANCELED: a COMPLETED job needs none, a live one runs."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"Job {job_id} is {status}; only a FAILED or CANCELED job can be retried. "
                         "Submit a new job with the same trainer to run it again.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.status))


class SweepNotFound(JobManagerError, LookupError):
    """No sweep with this id or name exists in the database."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"No sweep {ref!r} in this database; `jobtrack sweep list` shows the sweeps there are.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref,))


class SweepConflict(InvalidArgument):
    """``sweep(name=...)`` of an existing sweep with a different space, sampler, metric, experiment or config."""

    def __init__(self, name: str, detail: str) -> None:
        self.name, self.detail = name, detail
        super().__init__(f"A sweep named {name!r} already exists with {detail}; resume it with the same "
                         "space, sampler and Trainer config, or give the new search another name.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.detail))
