"""The SQL that differs between SQLite files and server databases, mixed into ``Database``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobtrack.store.tx import Tx

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

    from jobtrack.store.server import Server


class DialectSQL:
    """Dialect-specific SQL text and schema introspection (``self._server`` is None for a SQLite file)."""

    is_sqlite: bool
    _server: Server | None

    @property
    def dialect_name(self) -> str:
        """``sqlite``, ``postgresql``, ...: the SQL dialect of this database."""
        return "sqlite" if self._server is None else str(self._server.engine.dialect.name)

    def ddl_dialect(self) -> Dialect:
        """The SQLAlchemy dialect that schema DDL is compiled for (SQLite's without any engine)."""
        if self._server is not None:
            return self._server.engine.dialect
        from sqlalchemy.dialects import sqlite

        return sqlite.dialect()

    def table_names(self, tx: Tx) -> set[str]:
        """Names of the tables the transaction sees (a server: in its current schema)."""
        if self._server is not None:
            return self._server.table_names(tx)
        return {str(r[0]) for r in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def column_names(self, tx: Tx, table: str) -> list[str]:
        """Names of a table's (or view's) columns, in order."""
        if self._server is not None:
            return self._server.column_names(tx, table)
        return [str(r[1]) for r in tx.all(f'PRAGMA table_info("{_ident(table)}")')]

    def export_view_sql(self, view_name: str, columns: Sequence[str], job_id: str, kind: str) -> str:
        """DDL of a read-only view turning stored JSON arrays back into named columns."""
        if self.is_sqlite:
            cells = [f"json_extract(data_json, '$[{i}]')" for i in range(len(columns))]
        else:
            cells = [f"(data_json::jsonb)->>{i}" for i in range(len(columns))]
        pairs = zip(cells, columns, strict=True)
        select_list = ", ".join(f'{cell} AS "{_ident(col)}"' for cell, col in pairs) or "NULL AS empty"
        return (f'CREATE VIEW "{_ident(view_name)}" AS SELECT {select_list} FROM export_rows '
                f"WHERE job_id = '{_literal(job_id)}' AND kind = '{_literal(kind)}' ORDER BY seq")

    @property
    def for_update(self) -> str:
        """Row lock for a read that a write in the same transaction depends on (servers; SQLite holds the database)."""
        return "" if self.is_sqlite else " FOR UPDATE"

    @property
    def skip_locked(self) -> str:
        """Row-locking suffix for claiming queued jobs (servers); SQLite's write lock already serialises."""
        return "" if self.is_sqlite else " FOR UPDATE SKIP LOCKED"


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _literal(value: str) -> str:
    return value.replace("'", "''")
