"""Driver errors turned into jobtrack's typed store errors: by SQLite result code and PostgreSQL SQLSTATE.

Never by message text (#12): "locked" or "readonly" in a table name must not make an error a busy or
read-only one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from jobtrack.config import DEFAULT_BUSY_TIMEOUT_MS
from jobtrack.errors import (
    DatabaseReplaced,
    NotAJobtrackDatabase,
    StoreBusy,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
)
from jobtrack.store.location import out_of_descriptors, permission_problem

# Primary SQLite result codes (an extended code keeps its primary one in the low byte).
_SQLITE_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_SQLITE_READONLY = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH}
_SQLITE_FOREIGN = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}
_SQLITE_TRANSIENT = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}

# PostgreSQL SQLSTATEs: connection lost or server shutting down (retry on a new connection), a
# transaction that lost a race (retry it), no resources (class 53: disk full, retry later), no permission.
_PG_LOST = ("08", "57P01", "57P02", "57P03")
_PG_RETRY = {"40001", "40P01", "55P03"}
_PG_READONLY = {"25006", "42501"}


def shown(target: str) -> str:
    """The database as messages show it: a server URL without its password."""
    if "://" not in target:
        return target
    try:
        from sqlalchemy.engine import make_url

        return make_url(target).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password to hide
        return target


def sqlite_failure(target: str, exc: sqlite3.Error, replaced: Callable[[], str | None]) -> StoreError:
    """Classify by ``sqlite_errorcode`` (Python 3.11+).

    Args:
        replaced: says whether the path now names another file than the open one (an I/O error then
            means the file was deleted or replaced, not a transient failure).
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    name = getattr(exc, "sqlite_errorname", None)
    text = f"{exc} ({name})" if name else str(exc)
    if primary in _SQLITE_BUSY:
        return StoreBusy(target, DEFAULT_BUSY_TIMEOUT_MS / 1000, holder="another connection, through SQLite's own lock")
    if primary == sqlite3.SQLITE_CANTOPEN and (full := out_of_descriptors()):
        return StoreUnavailable(target, full)  # not a permissions problem: files can be opened again later
    if primary in _SQLITE_READONLY:
        return StoreReadOnly(target, permission_problem(target) or text)
    if primary in _SQLITE_FOREIGN:
        return NotAJobtrackDatabase(target, text)
    if primary in _SQLITE_TRANSIENT:
        detail = replaced()
        if detail:
            return DatabaseReplaced(target, detail)
        return StoreUnavailable(target, text)
    return StoreError(f"Database error on {target}: {text}")


def server_failure(target: str, exc: Any, *, lock_timeout: float) -> StoreError:
    """Classify a SQLAlchemy ``DBAPIError`` by its SQLSTATE and by whether the connection was lost."""
    from sqlalchemy.exc import OperationalError

    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    where = shown(target)
    if getattr(exc, "connection_invalidated", False) or sqlstate.startswith(_PG_LOST):
        return StoreUnavailable(where, f"the connection to the server was lost ({text})")
    if sqlstate in _PG_RETRY:
        return StoreBusy(where, lock_timeout, holder=f"a concurrent transaction: {text}")
    if sqlstate.startswith("53"):
        return StoreUnavailable(where, text)
    if sqlstate in _PG_READONLY:
        return StoreReadOnly(where, text)
    if not sqlstate and isinstance(exc, OperationalError):  # no server answered: refused, timed out
        return StoreUnavailable(where, text)
    return StoreError(f"Database error on {where}: {text}")
