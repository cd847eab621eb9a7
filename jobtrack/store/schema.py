"""Schema version, creation and upgrade, and refusal of files that are not (or not yet) ours.

The version lives in the ``jobtrack_meta`` table (works on every SQLAlchemy database); every
upgrade step runs in one write transaction together with its version bump. The DDL comes from the
SQLModel metadata (``store/models.py``), compiled for the database's dialect and run through the
same ``Database.write()`` machinery as every other statement: on SQLite, the raw sqlite3 connection.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jobtrack import runtime
from jobtrack.config import make_private_dir
from jobtrack.errors import DatabaseNotFound, NotAJobtrackDatabase, SchemaTooNew, StoreReadOnly
from jobtrack.store.db import Database, Tx, check_local_filesystem, permission_problem
from jobtrack.store.version import APPLICATION as APPLICATION, SCHEMA_VERSION as SCHEMA_VERSION

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

# The schema (SQLModel) and SQLAlchemy are imported inside the functions that create or upgrade a
# database: opening an up-to-date SQLite file needs neither. The version itself lives in store/version.py.

_META_INSERT = "INSERT INTO jobtrack_meta (key, value) VALUES (:key, :value)"

CREATION_WAIT_S = 2.0
"""How long a read waits for the tables of an empty file made this recently: the process that just made it
creates them within milliseconds, and a read at that moment must not be refused."""


def create_statements(dialect: Dialect) -> list[str]:
    """The DDL of every jobtrack table and index, from the SQLModel metadata, parents first."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    from jobtrack.store import models

    statements = []
    for table in models.METADATA.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)).strip())
    return statements


def _v1_to_v2(tx: Tx, db: Database) -> None:
    """Version 2 counts each job's epochs in ``jobs.epoch_seq`` (one UPDATE per epoch instead of a MAX scan)
    and records each export's columns in ``job_exports`` (so views can be rebuilt on another database)."""
    from sqlalchemy.schema import CreateTable

    from jobtrack.store import models

    tx.ddl("ALTER TABLE jobs ADD COLUMN epoch_seq INTEGER NOT NULL DEFAULT 0")
    tx.run("UPDATE jobs SET epoch_seq = (SELECT COUNT(*) FROM job_epochs WHERE job_epochs.job_id = jobs.id)")
    if "job_exports" not in db.table_names(tx):
        tx.ddl(str(CreateTable(models.job_exports).compile(dialect=db.ddl_dialect())).strip())
    rows = tx.all("SELECT id, export_paths_json, source_views_json FROM jobs WHERE source_views_json != '{}'")
    for job_id, paths_json, views_json in rows:  # version 1 existed on SQLite only
        paths, views = json.loads(paths_json), json.loads(views_json)
        for kind, view in views.items():
            tx.run("INSERT INTO job_exports (job_id, kind, path, view_name, columns_json) "
                   "VALUES (:job_id, :kind, :path, :view_name, :columns_json)",
                   {"job_id": job_id, "kind": kind, "path": paths.get(kind, ""), "view_name": view,
                    "columns_json": json.dumps(db.column_names(tx, view))})


def _v2_to_v3(tx: Tx, db: Database) -> None:
    """Version 3 drops ``jobs.summary_json`` and ``jobs.error_json``: the frozen ``result_json`` holds both (#12).

    SQLite has had ``ALTER TABLE ... DROP COLUMN`` since 3.35 (Python 3.11 ships a newer one).
    """
    present = set(db.column_names(tx, "jobs"))
    for column in ("summary_json", "error_json"):
        if column in present:
            tx.ddl(f"ALTER TABLE jobs DROP COLUMN {column}")


def _v3_to_v4(tx: Tx, db: Database) -> None:
    """Version 4 adds what the schema declares and the database lacks: tables (config parameters, tags,
    metrics, sweeps), ``jobs`` columns (best metric, provenance, sweep trial, attempts) and indexes.

    Additive only: every new column is nullable or has a ``server_default``, so existing rows stay valid. The
    jobs already there get their config parameters, metrics and best metric (``experiments.backfill``): without
    them ``--where config.lr = 0.1``, ``best.<m>``, ``-best_metric`` and ``table()`` would miss every old job.
    """
    from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

    from jobtrack.store import experiments, models

    dialect = db.ddl_dialect()
    present = set(db.table_names(tx))
    for table in models.METADATA.sorted_tables:
        if table.name not in present:
            tx.ddl(str(CreateTable(table).compile(dialect=dialect)).strip())
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                tx.ddl(str(CreateIndex(index).compile(dialect=dialect)).strip())
            continue
        columns = set(db.column_names(tx, table.name))
        for column in table.columns:
            if column.name in columns:
                continue
            if not column.nullable and column.server_default is None:
                raise AssertionError(f"new NOT NULL column {table.name}.{column.name} needs a server_default")
            tx.ddl(f"ALTER TABLE {table.name} ADD COLUMN {CreateColumn(column).compile(dialect=dialect)}")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            tx.ddl(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)).strip())
    experiments.backfill(tx)


UPGRADES: dict[int, Callable[[Tx, Database], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}
"""Upgrade steps: ``UPGRADES[n]`` takes a version-n database to version n+1 (run in one write transaction
together with the version bump, so a failed upgrade leaves the database as it was)."""


def prepare(db: Database, *, create: bool = True) -> None:
    """Make ``db`` ready: create it if new, upgrade it if old, refuse it if foreign or newer.

    A file this process already checked (under any spelling of its path) is not looked at again.
    With ``create=False`` (reads, #13) a missing or empty file is refused, not created (an empty file made less
    than ``CREATION_WAIT_S`` ago is first given until then to get the tables another process is creating); a
    read-only ``db`` is only checked, never changed.

    Raises:
        DatabaseNotFound: ``create=False`` and no file at the path (on a server: no jobtrack tables).
        NotAJobtrackDatabase: the file is not SQLite, or a SQLite database of something else (or, with
            ``create=False``, an empty file).
        SchemaTooNew: the database was written by a newer jobtrack.
        StoreReadOnly: the file, its ``-wal``/``-shm`` or its directory cannot be created or written (or a
            read-only database that needs an upgrade).
    """
    statements: list[str] | None = None
    if db.is_sqlite:
        assert db.path is not None
        if not os.path.exists(db.path):
            if not create:
                raise DatabaseNotFound(db.target)
            if not db.read_only:  # built before the file appears (importing SQLAlchemy takes a second, more
                statements = create_statements(db.ddl_dialect())  # under load): a reader waits for the tables
        check_local_filesystem(db.path)
        if not db.read_only:
            _prepare_location(db.path)
        if db.ready:
            return
        found = db.probe(lambda tx: _read_version(tx, db))  # through SQLite: never open() the file (#21)
        if found is None and not (create and not db.read_only):
            found = _created_meanwhile(db)
            if found is None:
                raise NotAJobtrackDatabase(db.target, "it is empty; submitting a job to it creates jobtrack's tables")
        if db.read_only:
            _check_readable(db, found)
            db.mark_ready()
            return
        db.adopt()
        if found == SCHEMA_VERSION:
            db.mark_ready()
            return  # the common case: nothing to write, no lock taken
    elif db.ready:
        return
    elif not create:  # a read of a server database (a report, the dashboard, list): nothing is created or locked
        with db.read() as tx:
            found = _read_version(tx, db)
        if found is None:
            raise DatabaseNotFound(db.target)
        if found == SCHEMA_VERSION or db.read_only:
            _check_readable(db, found)
            db.mark_ready()
            return
    with db.admin() as tx:
        version = _read_version(tx, db)
        if version is None:
            for statement in statements or create_statements(db.ddl_dialect()):
                tx.ddl(statement)
            tx.run_many(_META_INSERT, [{"key": "application", "value": APPLICATION},
                                       {"key": "schema_version", "value": str(SCHEMA_VERSION)}])
        else:
            while version < SCHEMA_VERSION:
                UPGRADES[version](tx, db)
                version += 1
                tx.run("UPDATE jobtrack_meta SET value = :value WHERE key = 'schema_version'",
                       {"value": str(version)})
    db.mark_ready()


def _check_readable(db: Database, found: int | None) -> None:
    """A database opened read-only must not need the upgrade its first write would make."""
    if db.read_only and found is not None and found < SCHEMA_VERSION:
        raise StoreReadOnly(db.target, f"it was written by jobtrack schema {found}; this version upgrades it "
                                       f"to {SCHEMA_VERSION} at its first write, and it cannot be written")


def _created_meanwhile(db: Database) -> int | None:
    """The schema version of an empty file made less than ``CREATION_WAIT_S`` ago, once the process making it
    has committed its tables; None for an older file, or one still empty at that age."""
    assert db.path is not None
    try:
        st = os.stat(db.path)
    except OSError:
        return None
    age = max(time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns), 0) / 1e9  # a stamp in the future: age 0
    if age >= CREATION_WAIT_S:
        return None
    found: list[int | None] = [None]

    def tables_there() -> bool:
        found[0] = db.probe(lambda tx: _read_version(tx, db))
        return found[0] is not None

    runtime.until(tables_there, time.monotonic() + CREATION_WAIT_S - age)
    return found[0]


def _prepare_location(path: str) -> None:
    """The directory exists (private), and nothing there that this user must write is unwritable."""
    if os.path.exists(path) and not os.path.isfile(path):  # a directory, /dev/null, a FIFO: no lock file beside it
        raise NotAJobtrackDatabase(path, "it is not a regular file")
    parent = Path(path).parent
    try:
        make_private_dir(parent)
    except OSError as exc:
        raise StoreReadOnly(path, f"cannot create the directory {parent}: {exc.strerror}") from None
    problem = permission_problem(path)
    if problem:
        raise StoreReadOnly(path, problem)


def _read_version(tx: Tx, db: Database) -> int | None:
    """The schema version of the database; None when it holds no tables (of ours, on a server)."""
    names = db.table_names(tx)
    if not db.is_sqlite:
        from jobtrack.store import models

        # A server database (or schema) may hold other applications' tables; only ours matter.
        names &= set(models.METADATA.tables)
    if not names:
        return None
    if "jobtrack_meta" not in names:
        raise NotAJobtrackDatabase(db.target, "a database without jobtrack's tables")
    rows = {str(k): str(v) for k, v in tx.all("SELECT key, value FROM jobtrack_meta")}
    return _check_meta(db.target, rows)


def _check_meta(target: str, rows: dict[str, str]) -> int:
    if rows.get("application") != APPLICATION:
        raise NotAJobtrackDatabase(target, "its jobtrack_meta table is not jobtrack's")
    try:
        version = int(rows["schema_version"])
    except (KeyError, ValueError):
        raise NotAJobtrackDatabase(target, "it has no readable schema version") from None
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(target, version, SCHEMA_VERSION)
    return version
