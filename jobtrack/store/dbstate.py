"""Whether this process checked a database's schema, and the probe that looks at a file that may not be
jobtrack's: mixed into ``Database`` (``schema.prepare`` uses both)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from jobtrack.store.openfiles import OpenFile
from jobtrack.store.tx import Tx

T = TypeVar("T")


class SchemaState:
    """``ready``/``mark_ready`` (shared by every spelling of a file) and ``probe``."""

    is_sqlite: bool
    _ready: bool

    def _sqlite_file(self) -> OpenFile:
        raise NotImplementedError

    def read(self, *, snapshot: bool = True) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        """Whether this process already checked (created, upgraded) the schema; shared by every spelling of a file."""
        return self._sqlite_file().ready if self.is_sqlite else self._ready

    def mark_ready(self) -> None:
        """Record that the schema is current (see ``ready``)."""
        if self.is_sqlite:
            f = self._sqlite_file()
            f.owned = f.ready = True
        else:
            self._ready = True

    def probe(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a read transaction on a database that may not be jobtrack's, changing nothing.

        On SQLite it runs on this thread's connection through SQLite itself, never a plain ``open()``
        (#21), and before ``adopt()`` no connection switches the file to WAL. If ``fn`` raises, a
        connection opened for the probe is closed again (SQLite keeps the process's locks meanwhile).
        """
        if not self.is_sqlite:
            with self.read() as tx:
                return fn(tx)
        f = self._sqlite_file()
        fresh = getattr(f.local, "conn", None) is None
        try:
            with self.read() as tx:
                return fn(tx)
        except BaseException:
            if fresh and not f.owned:
                f.drop_connection()
            raise
