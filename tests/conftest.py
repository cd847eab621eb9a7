"""Shared fixtures: every test gets its own database file under tmp_path (or its own PostgreSQL schema)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtrack import Dataset, demo, runtime
from jobtrack.store import Store

PG_URL = os.environ.get("JOBTRACK_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
"""The PostgreSQL server the multi-machine tests use; .ci/run starts it and sets this."""


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here rather than in tests/hostile/conftest.py: pytest only honours options of the conftest files
    # it loads before parsing the command line, and a bare `pytest` loads this one only.
    parser.addoption("--hostile-long", action="store_true", default=False,
                     help="run the hostile loops of tests/hostile (random signals, random kills) at full length")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Point the default database and data directory into the test's own folder.
    monkeypatch.setenv("JOBTRACK_DB", str(tmp_path / "default.db"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("JOBTRACK_FILES", str(tmp_path / "files"))  # files of server-database jobs
    yield
    runtime.close_all()


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


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    """A binary-classification dataset of demo CSV files (train, validation and test) for real training code."""
    return Dataset("churn", "binary_classification", "m1", tables=demo.write_csv_tables(tmp_path / "data", n=90))


def _pg_unavailable(reason: str) -> None:
    message = (f"PostgreSQL tests need a server at {PG_URL} ({reason}); start one, set JOBTRACK_TEST_PG_URL, "
               "and pip install -e '.[dev,postgres]'")
    if os.environ.get("CI"):
        pytest.fail(message)  # in CI a missing server is a failure, never a silent skip
    pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections see a fresh, empty PostgreSQL schema of their own (dropped afterwards)."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_URL)
        with engine.begin() as conn:
            schema = f"jt_{secrets.token_hex(6)}"
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except ImportError as exc:
        _pg_unavailable(f"driver missing: {exc}")
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        _pg_unavailable(f"cannot connect: {type(exc).__name__}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    runtime.close_all()
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest, db_path: str) -> str:
    """The same test on a SQLite file and on a PostgreSQL server."""
    if request.param == "sqlite":
        return db_path
    return str(request.getfixturevalue("pg_url"))


# Scripts that tests run as child processes: pytest must not import them (--doctest-modules would).
collect_ignore_glob = ["hostile/signal_child.py", "hostile/stuck_*.py"]
