"""The job state machine of SPEC §1: five statuses, six transitions; pure data, no I/O, no jobtrack imports.

The store applies a transition only when ``is_allowed`` says so and raises ``InvalidTransition`` with
the explanation ``refusal`` gives otherwise (see ``jobtrack.store.core``).

>>> is_allowed(JobStatus.QUEUED, JobStatus.RUNNING)
True
>>> refusal("COMPLETED", "RUNNING")
'which is terminal; it cannot move anywhere'
>>> refusal("RUNNING", "QUEUED")
'which may only move to CANCELED, COMPLETED, FAILED'
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


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

    @classmethod
    def parse(cls, value: object) -> JobStatus | None:
        """The status named by ``value`` in any case, or None if it names none."""
        try:
            return cls(str(value).upper())
        except ValueError:
            return None


class JobType(StrEnum):
    """What created the job: ``fit()``, ``predict()`` or ``fit_predict()``."""

    TRAIN = "train"
    INFERENCE = "inference"
    TRAIN_INFERENCE = "train_inference"

    @classmethod
    def parse(cls, value: object) -> JobType | None:
        """The job type named by ``value`` in any case, or None if it names none."""
        try:
            return cls(str(value).lower())
        except ValueError:
            return None


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


def is_allowed(current: JobStatus, new: JobStatus) -> bool:
    """Whether the move current → new is one of the six allowed transitions."""
    return new in TRANSITIONS[current]


def refusal(current: JobStatus | str, new: JobStatus | str) -> str | None:
    """Why current → new is refused, worded to follow "Job 'x' is <current>, ..."; None if it is allowed."""
    here, there = JobStatus(current), JobStatus(new)
    if there in TRANSITIONS[here]:
        return None
    if here in TERMINAL:
        return "which is terminal; it cannot move anywhere"
    return f"which may only move to {', '.join(sorted(TRANSITIONS[here]))}"


def _check_table() -> None:
    # Validate the definition at import, as a state-machine library checks its class at build time.
    if set(TRANSITIONS) != set(JobStatus):
        raise RuntimeError("TRANSITIONS must name every JobStatus")
    if TERMINAL != {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}:
        raise RuntimeError("the terminal statuses must be COMPLETED, FAILED and CANCELED")
    if sum(len(v) for v in TRANSITIONS.values()) != 6 or INITIAL in TERMINAL:
        raise RuntimeError("the state machine has exactly six transitions out of non-terminal states")


_check_table()
