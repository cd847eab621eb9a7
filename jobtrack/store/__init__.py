"""The store layer: all SQL, transactions and locking of jobtrack live in this package."""

from jobtrack.store.records import EventRecord, JobRecord, PruneReport
from jobtrack.store.store import Store

__all__ = ["EventRecord", "JobRecord", "PruneReport", "Store"]
