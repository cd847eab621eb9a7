"""What every part of the store shares: the database handle, where files live, and small SQL helpers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobtrack.config import DEFAULT_LOCK_TIMEOUT_S, ENV_FILES, files_dir, lease_seconds, resolve_db
from jobtrack.states import TERMINAL
from jobtrack.store.db import Database, Tx
from jobtrack.store.schema import prepare

TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))
"""The terminal statuses as a SQL list (constants, not user input)."""


def in_list(name: str, items: Sequence[Any], params: dict[str, Any]) -> str:
    """``(:name0, :name1, ...)`` with the values added to ``params``."""
    keys = [f"{name}{i}" for i in range(len(items))]
    params.update(zip(keys, items, strict=True))
    return "(" + ", ".join(f":{k}" for k in keys) + ")"


def add_event(tx: Tx, job_id: str, src: str | None, dst: str, at: str, reason: str | None) -> None:
    """Append one row to a job's status history."""
    tx.run("INSERT INTO job_events (job_id, from_status, to_status, at, reason) "
           "VALUES (:job_id, :src, :dst, :at, :reason)",
           {"job_id": job_id, "src": src, "dst": dst, "at": at, "reason": reason})


class StoreBase:
    """The database of a Store, its lease, and the directories of its files."""

    def __init__(self, db: str | os.PathLike[str] | None = None, *,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S, read_only: bool = False, create: bool = True) -> None:
        self.target = resolve_db(db)
        self.lease_s = lease_seconds()
        self.db = Database(self.target, lock_timeout=lock_timeout, read_only=read_only)
        self._sqlite_files = str(files_dir(self.target)) if self.db.is_sqlite else None
        prepare(self.db, create=create and not read_only)

    @property
    def read_only(self) -> bool:
        """Whether this store only reads (``Store.open(..., read_only=True)``): every write raises StoreReadOnly."""
        return self.db.read_only

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"

    def close(self) -> None:
        """Release this thread's connections; the Store can still be used (it reconnects)."""
        self.db.dispose()

    @property
    def files_dir(self) -> Path:
        """Directory beside the database holding models, exports and logs."""
        return Path(self._files_root())

    def _files_root(self) -> str:
        if self._sqlite_files is not None:
            return self._sqlite_files
        return os.environ.get(ENV_FILES) or str(Path.home() / ".local" / "share" / "jobtrack" / "files")

    def job_dir(self, job_id: str) -> Path:
        """This job's own directory (log file, default export location)."""
        return self.files_dir / "jobs" / job_id

    def model_dir(self, model_run_id: str) -> str:
        """Where a model run's files live (a path string: it is computed for every job submitted)."""
        return os.path.join(self._files_root(), "models", model_run_id)

    def inside_files(self, path: str) -> bool:
        """Whether ``path`` lies in this database's files folder (as written, or once symlinks are resolved)."""
        root = self._files_root()
        for mine, theirs in ((os.path.abspath(root), os.path.abspath(path)),
                             (os.path.realpath(root), os.path.realpath(path))):
            try:
                if os.path.commonpath([mine, theirs]) == mine:
                    return True
            except ValueError:  # a relative path, or one on another drive
                continue
        return False

    def owns_path(self, path: str, *, carried: bool = False) -> bool:
        """Whether this database may delete a job's ``path``: inside its files folder, or, for a job made here (not
        ``carried`` in by an import, merge or migrate), outside every ``*-files`` folder (an export directory its
        config chose). A path in another database's files folder, or a carried job's path outside this one's
        (the source's exports, or any path a bundle's rows name), is not."""
        if self.inside_files(path):
            return True
        parts = os.path.abspath(path).split(os.sep)[:-1]
        return not carried and not any(p.endswith("-files") for p in parts)

    def model_dir_of(self, model_run_id: str | None, recorded: str | None) -> str:
        """Where a model run's files are now: the directory its jobs recorded while that exists, else its place in
        this database's files folder if that exists (a moved or copied project folder, an imported bundle:
        the recorded absolute path names the old place), else the recorded one."""
        if not model_run_id:
            return recorded or ""
        here = self.model_dir(model_run_id)
        if not recorded or recorded == here or os.path.isdir(recorded):
            return recorded or here
        return here if os.path.isdir(here) else recorded
