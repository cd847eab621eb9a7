"""The store layer: all SQL, transactions and locking of jobtrack live in this package.

Its public names load on first use (PEP 562, as ``jobtrack``'s own): importing a small module of the
package (``jobtrack.store.peek``, which ``jobtrack status`` reads finished jobs with) does not import the
Store and everything it is built from (#14).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time (#14)
if TYPE_CHECKING:
    from jobtrack.store.records import (
        EventRecord as EventRecord,
        JobRecord as JobRecord,
        PruneReport as PruneReport,
    )
    from jobtrack.store.store import Store as Store

_EXPORTS = {"EventRecord": "jobtrack.store.records", "JobRecord": "jobtrack.store.records",
            "PruneReport": "jobtrack.store.records", "Store": "jobtrack.store.store"}

__all__ = ["EventRecord", "JobRecord", "PruneReport", "Store"]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:  # AttributeError lets `from jobtrack.store import models` import the submodule
        raise AttributeError(f"module 'jobtrack.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
