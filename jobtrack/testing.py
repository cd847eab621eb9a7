"""Helpers for testing training code with jobtrack (no pytest import; the pytest plugin builds on these).

Assertions read as sentences and fail with the job's error and traceback in the message; fault
injectors make a runner look dead or unreachable, hold the write lock, or shift jobtrack's clock,
each as a context manager or with an explicit undo.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from jobtrack import jsonutil, liveness, runtime
from jobtrack.errors import InvalidArgument, WaitTimeout
from jobtrack.monitor import JobMonitor, JobStatusDict, check_wait
from jobtrack.states import JobStatus
from jobtrack.store import Store

UNREACHABLE_HOST = "jobtrack-unreachable-host"
"""Host name given to a runner by ``detach_runner``: no pid check is possible, only its lease counts."""


def _describe(status: JobStatusDict) -> str:
    text = f"job {status['job_id']} is {status['status']}"
    error = status["result"].get("error")
    if error:
        text += f"\n{error['type']}: {error['message']}\n{error.get('traceback', '').rstrip()}"
    return text


def _status(value: str | JobStatus) -> JobStatus:
    status = JobStatus.parse(value)
    if status is None:
        raise InvalidArgument(f"Unknown job status {value!r}; use one of {', '.join(JobStatus)}.")
    return status


def assert_status(monitor: JobMonitor, expected: str | JobStatus) -> JobStatusDict:
    """Assert the job's current status; the message carries its error and traceback if it has one."""
    status = monitor.get_status()
    want = _status(expected)
    if status["status"] != want:
        raise AssertionError(f"expected {want}, but {_describe(status)}")
    return status


def assert_completed(monitor: JobMonitor, *, timeout: float | None = 30) -> JobStatusDict:
    """Wait for the job to end and assert it COMPLETED; on failure the message shows the error and traceback.

    A job still running after ``timeout`` seconds is an AssertionError too (a test failure, not an error)."""
    try:
        monitor.wait(timeout=timeout)
    except WaitTimeout:
        raise AssertionError(f"expected COMPLETED within {timeout} s, but {_describe(monitor.get_status())}") from None
    return assert_status(monitor, JobStatus.COMPLETED)


def wait_for_status(monitor: JobMonitor, expected: str | JobStatus, *, timeout: float = 30) -> JobStatusDict:
    """Poll until the job reaches ``expected`` (e.g. RUNNING); AssertionError after ``timeout`` seconds."""
    want = _status(expected)
    deadline = time.monotonic() + timeout
    while True:
        status = monitor.get_status()
        if status["status"] == want:
            return status
        if JobStatus(status["status"]).is_terminal or time.monotonic() > deadline:
            raise AssertionError(f"waited for {want}, but {_describe(status)}")
        time.sleep(0.01)


def wait_for_epochs(monitor: JobMonitor, count: int, *, timeout: float | None = 30) -> list[dict[str, Any]]:
    """Poll until the job has reported at least ``count`` epochs; returns them."""
    number = jsonutil.as_int(count)  # numpy integers too
    if number is None or number < 0:
        raise InvalidArgument(f"wait_for_epochs(count=...) must be an int >= 0, not {type(count).__name__} {count!r}; "
                              "e.g. wait_for_epochs(job, 3).")
    check_wait(timeout, 0.01)  # seconds >= 0, or None: no deadline
    deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
    while True:
        status = monitor.get_status()
        found = status["result"].get("epochs", [])
        if len(found) >= count:
            return list(found)
        if JobStatus(status["status"]).is_terminal or time.monotonic() > deadline:
            raise AssertionError(f"waited for {count} epochs, got {len(found)}; {_describe(status)}")
        time.sleep(0.01)


def epochs(monitor: JobMonitor) -> list[dict[str, Any]]:
    """The job's reported epochs: ``[{"epoch": n, "train": {...}, "validation": {...}}, ...]``."""
    return list(monitor.get_status()["result"].get("epochs", []))


def exported_rows(monitor: JobMonitor, kind: str = "predictions") -> list[dict[str, Any]]:
    """The rows a job exported, read back through its source view with plain sqlite3."""
    status = monitor.get_status()
    view = status["source_views"].get(kind)
    if view is None:
        raise AssertionError(f"job {status['job_id']} has no {kind} export; it has {sorted(status['source_views'])}")
    target = monitor.db
    if "://" in target:  # a server database: read the view as any SQL client would
        from sqlalchemy import create_engine, text

        engine = create_engine(target)
        try:
            with engine.connect() as server:
                return [dict(row._mapping) for row in server.execute(text(f'SELECT * FROM "{view}"'))]
        finally:
            engine.dispose()
    conn = sqlite3.connect(target)  # plain sqlite3, as a user would
    try:
        cur = conn.execute(f'SELECT * FROM "{view}"')
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


# -- fault injection ----------------------------------------------------------------------------


def kill_runner(monitor: JobMonitor) -> None:
    """Make a RUNNING job's runner look dead (a process that no longer exists): the next read says FAILED.

    The real runner, if any, is fenced off at its next report, as a runner that lost its claim is.

    Raises:
        InvalidArgument: the job is not RUNNING (nothing is changed); ``wait_for_status(job, "RUNNING")`` first.
    """
    me = liveness.current()
    _set_runner(monitor, f"{me.host}|{_unused_pid()}|gone:0", "kill_runner")


def detach_runner(monitor: JobMonitor) -> None:
    """Make a RUNNING job's runner look like it lives on another host: only its lease decides now.

    Raises:
        InvalidArgument: the job is not RUNNING (nothing is changed); ``wait_for_status(job, "RUNNING")`` first.
    """
    _set_runner(monitor, f"{UNREACHABLE_HOST}|1|unknown", "detach_runner")


def _set_runner(monitor: JobMonitor, runner: str, what: str) -> None:
    if not Store.open(monitor.db).set_runner_identity(monitor.job_id, runner):
        raise InvalidArgument(f"{what}() needs a RUNNING job, but job {monitor.job_id} is {monitor.status}, so "
                              f"nothing was changed; call wait_for_status(job, 'RUNNING') before {what}(job).")


def _unused_pid() -> int:
    pid = 4_000_000  # above the usual pid_max; checked anyway
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


@contextmanager
def hold_write_lock(db: str | os.PathLike[str] | None = None, *, lock_timeout: float = 0.2) -> Iterator[None]:
    """Hold the database's write lock (as another process would) and shorten writers' wait to ``lock_timeout``.

    Writers in this process then raise ``StoreBusy`` after ``lock_timeout`` seconds; both are undone on exit.

    Raises:
        DatabaseNotFound: no database at ``db`` (a mistyped path makes none).
    """
    import fcntl  # POSIX only, like the lock it imitates

    store = Store.open(db, create=False)  # a mistyped path is DatabaseNotFound, not a new empty database
    assert store.db.lock_path is not None, "only file databases have a write lock"
    old_timeout = store.db.lock_timeout
    fd = os.open(store.db.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        store.db.lock_timeout = lock_timeout
        yield
    finally:
        store.db.lock_timeout = old_timeout
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_clock_lock = threading.Lock()


@contextmanager
def shift_clock(delta: timedelta) -> Iterator[None]:
    """Move jobtrack's clock by ``delta`` (timestamps and lease expiry), restoring it on exit."""
    if not isinstance(delta, timedelta):
        raise InvalidArgument(f"shift_clock(delta) takes a datetime.timedelta, not {type(delta).__name__} "
                              f"{delta!r}; e.g. shift_clock(timedelta(seconds=5)).")
    with _clock_lock:
        previous = runtime.clock_offset()
        runtime.set_clock_offset(previous + delta)
    try:
        yield
    finally:
        runtime.set_clock_offset(previous)
