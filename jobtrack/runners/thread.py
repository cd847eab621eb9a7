"""The default runner: background threads in the submitting process, jobs in submission order."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtrack.store import Store

_executors: dict[tuple[str, int, int], ThreadPoolExecutor] = {}
_lock = threading.Lock()


def submit(store: Store, fn: Callable[..., Any], *args: Any, max_workers: int = 1) -> Future[Any]:
    """Queue ``fn(*args)`` on the executor of this database and parallelism.

    One executor per (database, max_workers) in a process: with the default of one worker, the
    jobs of a database run one at a time in submission order, as the reference SDK does. The
    executor's threads are joined at interpreter exit, so queued jobs finish before a script ends.
    """
    key = (store.target, os.getpid(), max_workers)
    with _lock:
        executor = _executors.get(key)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="jobtrack-runner")
            _executors[key] = executor
    return executor.submit(fn, *args)


def _forget_in_child() -> None:
    global _lock
    _executors.clear()  # the parent's threads do not exist in a forked child
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
