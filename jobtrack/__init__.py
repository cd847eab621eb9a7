"""jobtrack: an embedded, single-file job tracker with the job API of a cloud training service."""

from jobtrack.errors import (
    DuplicateName,
    InvalidArgument,
    InvalidTransition,
    JobCanceled,
    JobNotFound,
    JobtrackError,
    ModelNotFound,
    ModelNotReady,
    NetworkFilesystem,
    NotAJobtrackDatabase,
    NotSerializable,
    RunnerFenced,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreReadOnly,
    WaitTimeout,
)
from jobtrack.context import RunContext
from jobtrack.dataset import TASK_TYPES, Dataset
from jobtrack.manager import JobManager
from jobtrack.monitor import JobMonitor, JobStatusDict
from jobtrack.states import JobStatus, JobType
from jobtrack.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DuplicateName",
    "InvalidArgument",
    "InvalidTransition",
    "JobCanceled",
    "JobManager",
    "JobMonitor",
    "JobNotFound",
    "JobStatus",
    "JobStatusDict",
    "JobType",
    "JobtrackError",
    "ModelNotFound",
    "ModelNotReady",
    "NetworkFilesystem",
    "NotAJobtrackDatabase",
    "NotSerializable",
    "RunContext",
    "RunnerFenced",
    "SchemaTooNew",
    "StoreBusy",
    "StoreError",
    "StoreReadOnly",
    "TASK_TYPES",
    "Trainer",
    "WaitTimeout",
    "__version__",
]
