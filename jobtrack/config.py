"""Where jobtrack keeps its database and files, and the defaults of its knobs.

The default database is ``$XDG_DATA_HOME/jobtrack/jobtrack.db`` (``~/.local/share/jobtrack/jobtrack.db``
when ``XDG_DATA_HOME`` is unset). ``db=`` arguments win over ``JOBTRACK_DB``, which wins over the
default. Model files, exports and logs live in ``<db>-files/`` beside the database.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

ENV_DB = "JOBTRACK_DB"
"""Environment variable naming the database path (or a SQLAlchemy URL)."""

DEFAULT_DB_NAME = "jobtrack.db"
"""File name of the default database inside the data directory."""

DEFAULT_LOCK_TIMEOUT_S = 30.0
"""Seconds a writer waits for the file lock before raising StoreBusy."""

DEFAULT_LOCK_POLL_S = 0.001
"""Seconds between attempts on a contended file lock (filelock's default 50 ms is far too coarse here)."""

DEFAULT_BUSY_TIMEOUT_MS = 30_000
"""SQLite busy_timeout in milliseconds; a backstop, since writers already serialise on the file lock."""

DEFAULT_LEASE_S = 30.0
"""Seconds a runner's claim stays valid without a heartbeat, for runners that cannot be checked by pid.

Runners renew it every third of a lease; a reader on another host declares the job lost once it expires.
"""

ENV_LEASE = "JOBTRACK_LEASE_S"
"""Environment variable overriding DEFAULT_LEASE_S (seconds), e.g. for workers on several hosts."""

ENV_HOST = "JOBTRACK_HOST"
"""Environment variable naming this machine for liveness checks, where hostnames are not unique."""


def lease_seconds() -> float:
    """The runner lease: ``$JOBTRACK_LEASE_S`` if set, else DEFAULT_LEASE_S.

    Raises:
        InvalidArgument: a value that is not a positive number of seconds.
    """
    raw = os.environ.get(ENV_LEASE)
    if raw is None or raw == "":
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument(f"{ENV_LEASE}={raw!r} is not a positive number of seconds; unset it or use e.g. 30.")
    return value

DEFAULT_WAIT_POLL_S = 0.05
"""Seconds between status reads while wait() blocks."""


def default_db_path() -> Path:
    """The documented default database path, ignoring JOBTRACK_DB."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "jobtrack" / DEFAULT_DB_NAME


def resolve_db(db: str | os.PathLike[str] | None = None) -> str:
    """The database to use: ``db`` if given, else ``$JOBTRACK_DB``, else the default path.

    Returns a SQLAlchemy URL unchanged (``postgresql+psycopg://...``) or an absolute file path.
    """
    raw = os.fspath(db) if db is not None else os.environ.get(ENV_DB) or str(default_db_path())
    if is_url(raw):
        if raw.startswith("sqlite:///"):
            return str(Path(raw[len("sqlite:///") :]).expanduser().absolute())
        return raw
    return str(Path(raw).expanduser().absolute())


def is_url(db: str) -> bool:
    """Whether ``db`` is a SQLAlchemy URL rather than a file path."""
    return "://" in db


def files_dir(db_path: str) -> Path:
    """The directory beside the database that holds models, exports and logs."""
    return Path(db_path + "-files")


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents readable only by the user (0700); existing ones are left alone."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))
    return path
