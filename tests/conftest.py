"""Shared fixtures: every test gets its own database file under tmp_path; no test touches ~."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtrack.store import Store


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Point the default database and data directory into the test's own folder.
    monkeypatch.setenv("JOBTRACK_DB", str(tmp_path / "default.db"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield
    for key, store in list(Store._instances.items()):
        if key[1] == os.getpid():
            store.close()
    Store._instances.clear()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Path of a fresh (not yet created) database file."""
    return str(tmp_path / "jobs.db")


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    """A Store on a fresh database file, closed after the test."""
    s = Store.open(db_path)
    yield s
    s.close()
