"""Schema version, creation and upgrade, and refusal of files that are not (or not yet) ours.

The version lives in the ``jobtrack_meta`` table (works on every SQLAlchemy database); every
upgrade step runs in one write transaction together with its version bump.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jobtrack.config import make_private_dir
from jobtrack.errors import NotAJobtrackDatabase, SchemaTooNew, StoreReadOnly
from jobtrack.store.db import Database, check_local_filesystem, read_only_probe, sniff_sqlite_file

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# The schema (SQLModel) and SQLAlchemy are imported inside the functions that create or upgrade a
# database: opening an up-to-date SQLite file needs neither.

SCHEMA_VERSION = 2
"""The schema this jobtrack writes and the newest it reads."""

APPLICATION = "jobtrack"


def _v1_to_v2(conn: Connection) -> None:
    """Version 2 counts each job's epochs in ``jobs.epoch_seq`` (one UPDATE per epoch instead of a MAX scan)
    and records each export's columns in ``job_exports`` (so views can be rebuilt on another database)."""
    from sqlalchemy import text

    from jobtrack.store import models

    conn.execute(text("ALTER TABLE jobs ADD COLUMN epoch_seq INTEGER NOT NULL DEFAULT 0"))
    conn.execute(text("UPDATE jobs SET epoch_seq = (SELECT COUNT(*) FROM job_epochs WHERE job_epochs.job_id = jobs.id)"))
    models.job_exports.create(conn, checkfirst=True)
    rows = conn.execute(text("SELECT id, export_paths_json, source_views_json FROM jobs "
                             "WHERE source_views_json != '{}'")).all()
    for job_id, paths_json, views_json in rows:  # version 1 existed on SQLite only
        paths, views = json.loads(paths_json), json.loads(views_json)
        for kind, view in views.items():
            columns = [r[1] for r in conn.exec_driver_sql(f'PRAGMA table_info("{view}")').all()]
            conn.execute(models.job_exports.insert(), {"job_id": job_id, "kind": kind, "path": paths.get(kind, ""),
                                                       "view_name": view, "columns_json": json.dumps(columns)})


UPGRADES: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}
"""Upgrade steps: ``UPGRADES[n]`` takes a version-n database to version n+1 (run in one write transaction
together with the version bump, so a failed upgrade leaves the database as it was)."""


def prepare(db: Database) -> None:
    """Make ``db`` ready: create it if new, upgrade it if old, refuse it if foreign or newer.

    Raises:
        NotAJobtrackDatabase: the file is not SQLite, or a SQLite database of something else.
        SchemaTooNew: the database was written by a newer jobtrack.
        StoreReadOnly: the file or its directory cannot be created or written.
    """
    if db.is_sqlite:
        assert db.path is not None
        check_local_filesystem(db.path)
        _prepare_location(db.path)
        found = _probe_sqlite(db.path)
        if found is not None and found == SCHEMA_VERSION:
            return  # the common case: nothing to write, no lock taken
    from jobtrack.store import models

    with db.admin() as conn:
        version = _read_version(conn, db.target)
        if version is None:
            models.METADATA.create_all(conn)
            conn.execute(
                models.meta.insert(),
                [
                    {"key": "application", "value": APPLICATION},
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                ],
            )
            return
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(db.target, version, SCHEMA_VERSION)
        while version < SCHEMA_VERSION:
            UPGRADES[version](conn)
            version += 1
            conn.execute(
                models.meta.update().where(models.meta.c.key == "schema_version"),
                {"value": str(version)},
            )


def _prepare_location(path: str) -> None:
    parent = Path(path).parent
    try:
        make_private_dir(parent)
    except OSError as exc:
        raise StoreReadOnly(path, f"cannot create the directory {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreReadOnly(path, f"the directory {parent} is not writable")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StoreReadOnly(path, "the file is not readable and writable by this user")
    if not os.path.exists(path):
        # Create the file private to the user before SQLite does (its -wal/-shm copy these bits).
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreReadOnly(path, exc.strerror or str(exc)) from None


def _probe_sqlite(path: str) -> int | None:
    """The schema version of an existing file, read without changing it; None for a new, empty file."""
    kind = sniff_sqlite_file(path)
    if kind in ("missing", "empty"):
        return None
    if kind == "foreign":
        raise NotAJobtrackDatabase(path, "it is not a SQLite file")
    try:
        tables = {r[0] for r in read_only_probe(path, "SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "jobtrack_meta" not in tables:
            raise NotAJobtrackDatabase(path, "a SQLite database without jobtrack's tables")
        rows = {str(k): str(v) for k, v in read_only_probe(path, "SELECT key, value FROM jobtrack_meta")}
    except sqlite3.DatabaseError as exc:
        raise NotAJobtrackDatabase(path, str(exc)) from None
    return _check_meta(path, rows)


def _read_version(conn: Connection, target: str) -> int | None:
    """The schema version seen inside a write transaction; None when the database is empty."""
    from sqlalchemy import select

    from jobtrack.store import models

    names = set(conn.dialect.get_table_names(conn))
    if conn.dialect.name != "sqlite":
        # A server database (or schema) may hold other applications' tables; only ours matter.
        names &= {t.name for t in models.METADATA.sorted_tables}
    if not names:
        return None
    if "jobtrack_meta" not in names:
        raise NotAJobtrackDatabase(target, "a database without jobtrack's tables")
    rows = {str(k): str(v) for k, v in conn.execute(select(models.meta.c.key, models.meta.c.value)).all()}
    return _check_meta(target, rows)


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


