"""Store: one database of jobtrack, assembled from one module per concern.

| module         | owns                                                                 |
|----------------|----------------------------------------------------------------------|
| ``base``       | the Database handle, where files live, shared SQL helpers             |
| ``core``       | the one status-changing function, claims, leases, epochs, finishing  |
| ``jobs``       | creating jobs, reading rows, results, histories, listings, verdicts  |
| ``views``      | exports: rows, read-only SQL views, paths                            |
| ``registry``   | model runs and registered model keys                                 |
| ``retention``  | pruning old jobs (their files are deleted by ``jobtrack.files``)     |
| ``materialize``| permanent tables made from a completed job's source views            |

Statements are plain SQL text with ``:name`` parameters (the schema itself is defined with SQLModel
in ``models.py``); the same text runs on SQLite and, through SQLAlchemy, on PostgreSQL.
"""

from __future__ import annotations

import os

from jobtrack import runtime
from jobtrack.config import is_url, resolve_db
from jobtrack.errors import DatabaseNotFound
from jobtrack.store.attempts import AttemptsMixin
from jobtrack.store.bundles import BundlesMixin
from jobtrack.store.dashboard import DashboardMixin
from jobtrack.store.experiments import ExperimentsMixin
from jobtrack.store.location import permission_problem
from jobtrack.store.materialize import MaterializeMixin
from jobtrack.store.registry import RegistryMixin
from jobtrack.store.retention import RetentionMixin
from jobtrack.store.search import SearchMixin
from jobtrack.store.sweeps import SweepsMixin
from jobtrack.store.views import ExportsMixin


def _identity(target: str) -> tuple[str | int, ...]:
    """The registry key of a database: the file itself (device, inode) once it exists, else its real path.

    Two spellings of one file (``x.db``, ``sub/../x.db``, a symlink) are one database, so a process
    never holds two sets of connections to one file (issue #21: closing one drops the other's locks).
    """
    if is_url(target):
        return ("url", target)
    real = os.path.realpath(target)
    try:
        st = os.stat(real)
    except OSError:
        return ("path", real)
    return ("file", st.st_dev, st.st_ino)


class Store(RegistryMixin, RetentionMixin, ExportsMixin, MaterializeMixin, BundlesMixin, DashboardMixin,
            AttemptsMixin, SweepsMixin, ExperimentsMixin, SearchMixin):
    """All reads and writes of one jobtrack database; share one per database and process (``Store.open``)."""

    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None, *, lock_timeout: float | None = None,
             read_only: bool = False, create: bool = True) -> Store:
        """The shared Store of this database in this process (created and checked on first use).

        ``lock_timeout`` (seconds a writer waits for the write lock) applies to this database in this
        process from now on; None keeps the current value. ``create=False`` is for reads (#13): a file
        that does not exist is ``DatabaseNotFound`` and nothing is created; a file or folder this user
        cannot write is opened read-only. ``read_only=True`` opens it read-only in any case (SQLite's
        ``mode=ro``): nothing is created, locked or written, and every write raises ``StoreReadOnly``.

        Raises:
            DatabaseNotFound: reading (``create=False`` or ``read_only=True``) a path with no file.
            NotAJobtrackDatabase, SchemaTooNew, StoreReadOnly: see ``schema.prepare``.
        """
        target = resolve_db(db)
        if (read_only or not create) and not is_url(target):
            if not os.path.exists(target):
                raise DatabaseNotFound(target)
            read_only = read_only or permission_problem(target) is not None
        key = _identity(target)
        if read_only:
            key = ("read-only", *key)
        store: Store = runtime.store(key, lambda: cls(target, read_only=read_only, create=create))
        if key[0] == "path":  # the file exists now: later spellings find it by its identity ...
            made = store
            store = runtime.store(_identity(target), lambda: made)
            runtime.forget_store(key)  # ... and a file made at that path after this one is deleted is another database
        if lock_timeout is not None:
            store.db.lock_timeout = lock_timeout
        return store
