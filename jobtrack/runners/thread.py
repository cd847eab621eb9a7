"""The default runner: background threads in the submitting process, jobs in submission order."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from jobtrack import runtime

if TYPE_CHECKING:
    from jobtrack.store import Store


def submit(store: Store, fn: Callable[..., Any], *args: Any, max_workers: int = 1) -> Future[Any]:
    """Queue ``fn(*args)`` on the executor of this database and parallelism.

    One executor per (database, max_workers) in a process: with the default of one worker, the
    jobs of a database run one at a time in submission order, as the reference SDK does. The
    executor's threads are joined at interpreter exit, so queued jobs finish before a script ends. The threads of
    databases that have nothing to run end, but for the few most recently used (``runtime.EXECUTORS_KEPT_IDLE``).
    """
    return runtime.run_on_executor((store.target, max_workers), max_workers, fn, *args)
