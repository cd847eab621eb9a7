"""The store layer: all SQL, transactions and locking of jobtrack live in this package."""

from jobtrack.store.store import EventRecord, JobRecord, Store

__all__ = ["EventRecord", "JobRecord", "Store"]
