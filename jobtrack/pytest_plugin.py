"""pytest fixtures for testing training code with jobtrack (loaded through the ``pytest11`` entry point).

Everything is imported lazily inside the fixtures: this module loads in every pytest run of anyone
who installed jobtrack, so it must cost nothing until a test asks for a ``jobtrack_*`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from contextlib import ExitStack

    from jobtrack.manager import JobManager
    from jobtrack.monitor import JobMonitor
    from jobtrack.trainer import Trainer


@pytest.fixture
def jobtrack_db(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database file in the test's tmp_path, also set as ``JOBTRACK_DB`` for code under test."""
    from jobtrack import runtime

    path = str(tmp_path / "jobtrack.db")
    monkeypatch.setenv("JOBTRACK_DB", path)
    yield path
    runtime.close_all()


@pytest.fixture
def jobtrack_manager(jobtrack_db: str) -> JobManager:
    """A JobManager on the test's database (created first: a JobManager alone never creates one)."""
    from jobtrack.manager import JobManager
    from jobtrack.store import Store

    Store.open(jobtrack_db)
    return JobManager(jobtrack_db)


@pytest.fixture
def jobtrack_trainer(jobtrack_db: str) -> Any:
    """A factory ``jobtrack_trainer(train, predict=None, config=None, runner="eager")`` bound to the test's database.

    Eager by default: the job runs inside ``fit()`` through the real state machine and store, so
    the returned monitor is already terminal.
    """
    from jobtrack.trainer import Trainer

    def make(train: Any = None, predict: Any = None, *, config: Any = None, runner: str = "eager",
             **kwargs: Any) -> Trainer:
        return Trainer(train, predict, config=config, db=jobtrack_db, runner=runner, **kwargs)

    return make


class JobtrackFaults:
    """Fault injectors for one test; everything they change is undone when the test ends."""

    def __init__(self, db: str, stack: ExitStack) -> None:
        self._db = db
        self._stack = stack

    def kill_runner(self, monitor: JobMonitor) -> None:
        """Make the job's runner look dead: its next read says FAILED (reason "runner lost")."""
        from jobtrack import testing

        testing.kill_runner(monitor)

    def detach_runner(self, monitor: JobMonitor) -> None:
        """Make the job's runner look remote, so only its lease decides (see ``shift_clock``)."""
        from jobtrack import testing

        testing.detach_runner(monitor)

    def hold_lock(self, *, lock_timeout: float = 0.2) -> None:
        """Hold the write lock until the test ends; writers raise StoreBusy after ``lock_timeout`` s."""
        from jobtrack import testing
        from jobtrack.store import Store

        Store.open(self._db)  # the test's database, made if nothing made it yet
        self._stack.enter_context(testing.hold_write_lock(self._db, lock_timeout=lock_timeout))

    def release_lock(self) -> None:
        """Release everything held so far (the lock, a shifted clock) before the test ends."""
        self._stack.close()

    def shift_clock(self, delta: timedelta | float) -> None:
        """Move jobtrack's clock forward by ``delta`` (a timedelta or seconds) until the test ends."""
        from jobtrack import testing

        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._stack.enter_context(testing.shift_clock(delta))


@pytest.fixture
def jobtrack_faults(jobtrack_db: str) -> Iterator[JobtrackFaults]:
    """Fault injection on the test's database: ``kill_runner``, ``detach_runner``, ``hold_lock``, ``shift_clock``."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield JobtrackFaults(jobtrack_db, stack)
