"""The store layer: all SQL, transactions and locking of jobtrack live in this package."""

from jobtrack.store.store import EventRecord, JobRecord, PruneReport, Store

__all__ = ["EventRecord", "JobRecord", "PruneReport", "Store"]
