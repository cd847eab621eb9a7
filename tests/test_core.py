"""The core on a SQLite file: files that are not (or not yet) jobtrack databases, where the database lives,
and readers that never take the write lock.

The state machine is in test_states.py, the 25 (from, to) pairs in test_backends.py (SQLite and
PostgreSQL), random operation sequences in test_property.py, several processes in test_cross_process.py,
the read API in test_status_dict.py.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from jobtrack import (
    JobManager,
    NotAJobtrackDatabase,
    SchemaTooNew,
    StoreError,
    StoreReadOnly,
)
from jobtrack.states import JobStatus
from jobtrack.store import Store
from jobtrack.store.schema import SCHEMA_VERSION

# -- files that are not (or not yet) ours --------------------------------------------------------


def _state(path: Path) -> tuple[bytes, float, list[str]]:
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name != path.name)
    return path.read_bytes(), path.stat().st_mtime, siblings


@pytest.mark.parametrize("kind", ["text", "foreign", "newer"])
def test_files_that_are_not_ours_are_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "sub" / "x.db"
    path.parent.mkdir()
    if kind == "text":
        path.write_text("these are my notes, not a database\n")
    else:
        conn = sqlite3.connect(path)
        if kind == "foreign":
            conn.execute("CREATE TABLE recipes (name TEXT)")
        else:
            conn.execute("CREATE TABLE jobtrack_meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.executemany("INSERT INTO jobtrack_meta VALUES (?, ?)",
                             [("application", "jobtrack"), ("schema_version", str(SCHEMA_VERSION + 5))])
        conn.commit()
        conn.close()
    before = _state(path)
    expected = SchemaTooNew if kind == "newer" else NotAJobtrackDatabase
    with pytest.raises(expected) as info:
        JobManager(str(path))
    assert isinstance(info.value, StoreError)
    if kind == "newer":
        assert (info.value.found, info.value.supported) == (SCHEMA_VERSION + 5, SCHEMA_VERSION)  # type: ignore[attr-defined]
        assert "Upgrade jobtrack" in str(info.value)
    assert _state(path) == before


def test_an_empty_file_and_a_missing_directory_just_work(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    Store.open(str(empty))  # a write (a Trainer, a worker) creates the tables; a JobManager only reads (#13)
    assert JobManager(str(empty)).list_jobs() == []
    nested = tmp_path / "a" / "b" / "c.db"
    Store.open(str(nested))
    assert JobManager(str(nested)).list_jobs() == []
    assert stat.S_IMODE(nested.stat().st_mode) == 0o600
    assert stat.S_IMODE(nested.parent.stat().st_mode) == 0o700


def test_a_location_that_cannot_be_written_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(StoreReadOnly, match="cannot create the directory"):
        Store.open(str(blocker / "jobs.db"))
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(StoreReadOnly):
            Store.open(str(locked / "jobs.db"))


def test_default_location_and_its_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBTRACK_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert Store.open().target == str(tmp_path / "data" / "jobtrack" / "jobtrack.db")
    monkeypatch.setenv("JOBTRACK_DB", str(tmp_path / "env.db"))
    assert Store.open().target == str(tmp_path / "env.db")
    assert JobManager().db == str(tmp_path / "env.db")  # a JobManager finds the same database once it exists
    assert Store.open(tmp_path / "arg.db").target == str(tmp_path / "arg.db")
    assert JobManager(tmp_path / "arg.db").db == str(tmp_path / "arg.db")
    assert Path(str(tmp_path / "arg.db") + "-files") == Store.open(tmp_path / "arg.db").files_dir


def test_readers_never_take_the_write_lock(db_path: str) -> None:
    store = Store.open(db_path)
    store.create_job({"id": "job_r", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    token = store.claim("job_r")
    store.finish("job_r", token, JobStatus.COMPLETED, reason="done")
    from jobtrack import testing

    with testing.hold_write_lock(db_path, lock_timeout=0.1):
        manager = JobManager(db_path)
        assert manager.fetch_job("job_r").get_status()["status"] == "COMPLETED"
        assert len(manager.list_jobs()) == 1

