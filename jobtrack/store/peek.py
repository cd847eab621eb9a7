"""A finished job's status read straight from its SQLite file, read-only, without the Store (``jobtrack status``, #14).

A COMPLETED, FAILED or CANCELED job's row never changes again (only ``prune`` removes it), so its status
needs no liveness check, no write and none of the Store's machinery: one read-only ``sqlite3`` connection,
the schema version, the id, one row. ``finished_status`` answers only when all of that is certain and
returns None otherwise; the caller then takes the full path (``JobManager``), which answers, or raises
the error it always raised, exactly as before.

Nothing is created or written. With no ``-wal``/``-shm`` beside the file, no writer has it open, and
SQLite's ``immutable=1`` reads it without them (``mode=ro`` alone would create both in a writable folder
and leave them there); the file is checked unchanged after the read. With both there, ``mode=ro`` reads
through them as any reader does. With only one, or a rollback journal, the full path answers. (One race
remains: should a writer's last connection remove both in the microseconds between the check and the
read, SQLite recreates them empty, as for any reader; the next writer uses and removes them.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat

from jobtrack import config
from jobtrack.states import TERMINAL
from jobtrack.statusdoc import STATUS_COLUMNS, finished_status_document
from jobtrack.store import location
from jobtrack.store.version import APPLICATION, SCHEMA_VERSION

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time (#14)
if TYPE_CHECKING:
    from jobtrack.monitor import JobStatusDict

_SELECT_STATUS = f"SELECT {', '.join(STATUS_COLUMNS)} FROM jobs WHERE id = ?"
_SELECT_IDS = "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2"
_FINISHED = frozenset(s.value for s in TERMINAL)
_SIDE_FILES = ("-wal", "-shm", "-journal")


def finished_status(db: str | os.PathLike[str] | None, job_id: str) -> JobStatusDict | None:
    """``get_status()`` of the finished job ``job_id`` (an id or a unique id prefix) in the SQLite file ``db``.

    ``db`` is resolved as everywhere (``db``, else ``$JOBTRACK_DB``, else the default path). The dict is
    the one ``JobMonitor.get_status()`` returns (the same ``jobtrack.statusdoc`` code builds it).

    Returns None, having created and changed nothing, whenever the full path must answer: a URL, no file,
    a file that is not a jobtrack database of exactly this schema version, no job or several jobs for the
    id, a job not finished yet, a writer's files half there, or any error of SQLite.
    """
    try:
        path = config.resolve_db(db)
        if config.is_url(path):  # PostgreSQL: the full path, which knows the server
            return None
        location.check_local_filesystem(path)
        return _read(path, job_id)
    except Exception:  # noqa: BLE001 - whatever stops it, the full path answers, or raises its own error
        return None


def _read(path: str, job_id: str) -> JobStatusDict | None:
    before = _file_state(path)
    if before is None:
        return None
    wal, shm, journal = (os.path.exists(path + suffix) for suffix in _SIDE_FILES)
    if journal or wal != shm:  # a rollback journal to replay, or a writer's files half made: not ours to judge
        return None
    # Neither -wal nor -shm: nothing writes the file now, and immutable=1 reads it without them, creating
    # none (mode=ro alone would make both in a writable folder, and leave them there). Both there: a
    # writer has the file open, and mode=ro reads through its WAL; timeout=0, so a writer closing right
    # now (it holds the lock while it removes them) sends us to the full path rather than waiting.
    uri = f"file://{_quote(path)}?mode=ro" + ("" if wal else "&immutable=1")
    conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
    try:
        row = _finished_row(conn, job_id)
    finally:
        conn.close()
    if row is None or (not wal and not _unchanged(path, before)):
        return None
    return finished_status_document(row, json.loads)  # what jsonutil.loads returns too; json is loaded already


def _finished_row(conn: sqlite3.Connection, job_id: str) -> tuple[object, ...] | None:
    """The job's STATUS_COLUMNS if this is a jobtrack database of this schema version and the job is finished."""
    meta = dict(conn.execute("SELECT key, value FROM jobtrack_meta").fetchall())
    if meta.get("application") != APPLICATION or not _is_version(meta.get("schema_version")):
        return None
    row: tuple[object, ...] | None = conn.execute(_SELECT_STATUS, (job_id,)).fetchone()
    if row is None:  # a unique prefix, as JobManager.resolve_job_id takes it
        if not job_id:
            return None
        ids = [r[0] for r in conn.execute(_SELECT_IDS, (job_id, after_prefix(job_id))) if r[0].startswith(job_id)]
        if len(ids) != 1:
            return None
        row = conn.execute(_SELECT_STATUS, (ids[0],)).fetchone()
    if row is None or row[1] not in _FINISHED or row[8] is None:  # result_json: frozen when the job ended
        return None
    return row


def _is_version(value: object) -> bool:
    try:
        return int(str(value)) == SCHEMA_VERSION  # as the full path reads it (store/schema.py)
    except ValueError:
        return False


def after_prefix(prefix: str) -> str:
    """The first text after every text that starts with ``prefix``: the upper bound of an id-prefix range
    (here and ``Store.job_ids_starting``)."""
    try:
        return prefix[:-1] + chr(ord(prefix[-1]) + 1)
    except ValueError:  # the last character is the largest there is
        return prefix + "\U0010ffff"


def _quote(path: str) -> str:
    """``path`` in a SQLite URI: only ``%``, ``?`` and ``#`` mean something there (https://sqlite.org/uri.html)."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _file_state(path: str) -> tuple[int, ...] | None:
    """What changes when anything writes the file (identity, size, times); None for no regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open; the full path names what it is
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _unchanged(path: str, before: tuple[int, ...]) -> bool:
    """Nothing wrote the file during an ``immutable=1`` read: it is as it was, and no writer appeared beside it."""
    return _file_state(path) == before and not any(os.path.exists(path + s) for s in _SIDE_FILES)
