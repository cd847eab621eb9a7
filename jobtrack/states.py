"""The job state machine of SPEC §1: five statuses, six transitions, pure data and no I/O.

>>> check_transition(JobStatus.QUEUED, JobStatus.RUNNING)
>>> check_transition("COMPLETED", "RUNNING", job_id="job_1")
Traceback (most recent call last):
...
jobtrack.errors.InvalidTransition: Job 'job_1' is COMPLETED, which is terminal; it cannot move anywhere; refused the move to RUNNING.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Mapping

from jobtrack.errors import InvalidArgument, InvalidTransition


class JobStatus(StrEnum):
    """Where a job is; the values are the upper-case strings ``get_status()`` reports."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    def next_statuses(self) -> frozenset[JobStatus]:
        """The statuses this one may move to (empty for terminal ones)."""
        return TRANSITIONS[self]

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and CANCELED, which have no exits."""
        return self in TERMINAL


class JobType(StrEnum):
    """What created the job: ``fit()``, ``predict()`` or ``fit_predict()``."""

    TRAIN = "train"
    INFERENCE = "inference"
    TRAIN_INFERENCE = "train_inference"


TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = MappingProxyType(
    {
        JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
        JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}),
        JobStatus.COMPLETED: frozenset(),
        JobStatus.FAILED: frozenset(),
        JobStatus.CANCELED: frozenset(),
    }
)
"""Each status mapped to the statuses it may move to; nothing else is allowed."""

TERMINAL: frozenset[JobStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
"""Statuses with no exits."""

INITIAL = JobStatus.QUEUED
"""The status every job is created with."""


def parse_status(value: str | JobStatus) -> JobStatus:
    """Turn user input (any case) into a JobStatus, or raise InvalidArgument naming the choices."""
    try:
        return JobStatus(str(value).upper())
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise InvalidArgument(f"Unknown job status {value!r}; use one of {choices}.") from None


def is_allowed(current: str | JobStatus, new: str | JobStatus) -> bool:
    """Whether the move current → new is one of the six allowed transitions."""
    return JobStatus(new) in TRANSITIONS[JobStatus(current)]


def check_transition(
    current: str | JobStatus, new: str | JobStatus, *, job_id: str | None = None
) -> None:
    """Return if current → new is allowed, else raise InvalidTransition naming job, current and new."""
    if not is_allowed(current, new):
        raise InvalidTransition(job_id, JobStatus(current), JobStatus(new))


def _check_table() -> None:
    # Validate the definition at import, as a state-machine library checks its class at build time.
    if set(TRANSITIONS) != set(JobStatus):
        raise RuntimeError("TRANSITIONS must name every JobStatus")
    if TERMINAL != {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}:
        raise RuntimeError("the terminal statuses must be COMPLETED, FAILED and CANCELED")
    if sum(len(v) for v in TRANSITIONS.values()) != 6 or INITIAL in TERMINAL:
        raise RuntimeError("the state machine has exactly six transitions out of non-terminal states")


_check_table()
