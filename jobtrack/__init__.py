"""jobtrack: an embedded, single-file job tracker with the job API of a cloud training service.

Public names load on first use (PEP 562), so ``import jobtrack`` and the pytest plugin stay cheap
until a job is actually touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AmbiguousJobId": "jobtrack.errors",
    "BundleConflict": "jobtrack.errors",
    "DatabaseNotFound": "jobtrack.errors",
    "DatabaseReplaced": "jobtrack.errors",
    "Dataset": "jobtrack.dataset",
    "DuplicateName": "jobtrack.errors",
    "InvalidArgument": "jobtrack.errors",
    "InvalidBundle": "jobtrack.errors",
    "InvalidQuery": "jobtrack.errors",
    "InvalidTransition": "jobtrack.errors",
    "JobCanceled": "jobtrack.errors",
    "JobError": "jobtrack.errors",
    "JobManager": "jobtrack.manager",
    "JobManagerError": "jobtrack.errors",
    "JobMonitor": "jobtrack.monitor",
    "JobMonitorError": "jobtrack.errors",
    "JobNotCompleted": "jobtrack.errors",
    "JobNotFound": "jobtrack.errors",
    "JobStatus": "jobtrack.states",
    "JobStatusDict": "jobtrack.monitor",
    "JobType": "jobtrack.states",
    "JobtrackError": "jobtrack.errors",
    "MissingExtra": "jobtrack.errors",
    "ModelInUse": "jobtrack.errors",
    "ModelManager": "jobtrack.model_manager",
    "ModelManagerError": "jobtrack.errors",
    "ModelNotFound": "jobtrack.errors",
    "ModelNotReady": "jobtrack.errors",
    "NestedRun": "jobtrack.errors",
    "NestedWrite": "jobtrack.errors",
    "NetworkFilesystem": "jobtrack.errors",
    "NotAJobtrackDatabase": "jobtrack.errors",
    "NotSerializable": "jobtrack.errors",
    "ResultTooLarge": "jobtrack.errors",
    "RetryNotAllowed": "jobtrack.errors",
    "RunContext": "jobtrack.context",
    "RunnerFenced": "jobtrack.errors",
    "SchemaTooNew": "jobtrack.errors",
    "SnapshotCopy": "jobtrack.errors",
    "StoreBusy": "jobtrack.errors",
    "StoreError": "jobtrack.errors",
    "StoreReadOnly": "jobtrack.errors",
    "StoreUnavailable": "jobtrack.errors",
    "SweepConflict": "jobtrack.errors",
    "SweepMonitor": "jobtrack.sweep",
    "SweepNotFound": "jobtrack.errors",
    "TASK_TYPES": "jobtrack.dataset",
    "TableExists": "jobtrack.errors",
    "Trainer": "jobtrack.trainer",
    "ValidationError": "jobtrack.errors",
    "WaitTimeout": "jobtrack.errors",
    "loguniform": "jobtrack.space",
    "randint": "jobtrack.space",
    "track": "jobtrack.tracking",
    "uniform": "jobtrack.space",
}

# Kept in sorted() order; tests/test_public_names.py checks it against the TYPE_CHECKING imports below.
__all__ = [
    "AmbiguousJobId",
    "BundleConflict",
    "DatabaseNotFound",
    "DatabaseReplaced",
    "Dataset",
    "DuplicateName",
    "InvalidArgument",
    "InvalidBundle",
    "InvalidQuery",
    "InvalidTransition",
    "JobCanceled",
    "JobError",
    "JobManager",
    "JobManagerError",
    "JobMonitor",
    "JobMonitorError",
    "JobNotCompleted",
    "JobNotFound",
    "JobStatus",
    "JobStatusDict",
    "JobType",
    "JobtrackError",
    "MissingExtra",
    "ModelInUse",
    "ModelManager",
    "ModelManagerError",
    "ModelNotFound",
    "ModelNotReady",
    "NestedRun",
    "NestedWrite",
    "NetworkFilesystem",
    "NotAJobtrackDatabase",
    "NotSerializable",
    "ResultTooLarge",
    "RetryNotAllowed",
    "RunContext",
    "RunnerFenced",
    "SchemaTooNew",
    "SnapshotCopy",
    "StoreBusy",
    "StoreError",
    "StoreReadOnly",
    "StoreUnavailable",
    "SweepConflict",
    "SweepMonitor",
    "SweepNotFound",
    "TASK_TYPES",
    "TableExists",
    "Trainer",
    "ValidationError",
    "WaitTimeout",
    "__version__",
    "loguniform",
    "randint",
    "track",
    "uniform",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobtrack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from jobtrack.context import RunContext as RunContext
    from jobtrack.dataset import TASK_TYPES as TASK_TYPES, Dataset as Dataset
    from jobtrack.errors import (
        AmbiguousJobId as AmbiguousJobId,
        BundleConflict as BundleConflict,
        DatabaseNotFound as DatabaseNotFound,
        DatabaseReplaced as DatabaseReplaced,
        DuplicateName as DuplicateName,
        InvalidArgument as InvalidArgument,
        InvalidBundle as InvalidBundle,
        InvalidQuery as InvalidQuery,
        InvalidTransition as InvalidTransition,
        JobCanceled as JobCanceled,
        JobError as JobError,
        JobManagerError as JobManagerError,
        JobMonitorError as JobMonitorError,
        JobNotCompleted as JobNotCompleted,
        JobNotFound as JobNotFound,
        JobtrackError as JobtrackError,
        MissingExtra as MissingExtra,
        ModelInUse as ModelInUse,
        ModelManagerError as ModelManagerError,
        ModelNotFound as ModelNotFound,
        ModelNotReady as ModelNotReady,
        NestedRun as NestedRun,
        NestedWrite as NestedWrite,
        NetworkFilesystem as NetworkFilesystem,
        NotAJobtrackDatabase as NotAJobtrackDatabase,
        NotSerializable as NotSerializable,
        ResultTooLarge as ResultTooLarge,
        RetryNotAllowed as RetryNotAllowed,
        RunnerFenced as RunnerFenced,
        SchemaTooNew as SchemaTooNew,
        SnapshotCopy as SnapshotCopy,
        StoreBusy as StoreBusy,
        StoreError as StoreError,
        StoreReadOnly as StoreReadOnly,
        StoreUnavailable as StoreUnavailable,
        SweepConflict as SweepConflict,
        SweepNotFound as SweepNotFound,
        TableExists as TableExists,
        ValidationError as ValidationError,
        WaitTimeout as WaitTimeout,
    )
    from jobtrack.manager import JobManager as JobManager
    from jobtrack.model_manager import ModelManager as ModelManager
    from jobtrack.monitor import JobMonitor as JobMonitor, JobStatusDict as JobStatusDict
    from jobtrack.space import loguniform as loguniform, randint as randint, uniform as uniform
    from jobtrack.states import JobStatus as JobStatus, JobType as JobType
    from jobtrack.sweep import SweepMonitor as SweepMonitor
    from jobtrack.tracking import track as track
    from jobtrack.trainer import Trainer as Trainer
