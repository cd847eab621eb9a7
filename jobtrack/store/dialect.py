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

    def export_view_sql(self, view_name: str, columns: Sequence[str], job_id: str, kind: str,
                        tx: Tx | None = None) -> str:
        """DDL of a read-only view turning stored JSON arrays back into named columns.

        SQLite's ``json_extract`` gives each value its own type. On a server a column is ``numeric`` (or
        ``boolean``) when every value stored (read through ``tx``) is a number (a boolean) or null, so
        ``WHERE score > 0.5`` compares numbers; other columns are text (``export_view_retype`` says when a
        later batch changes that).
        """
        if self.is_sqlite:
            cells = [f"json_extract(data_json, '$[{i}]')" for i in range(len(columns))]
        else:
            kinds = {} if tx is None else self._export_kinds(tx, job_id, kind)
            self._view_kinds()[view_name] = kinds
            cells = []
            for i in range(len(columns)):
                value, cast = f"(data_json::jsonb)->{i}", _SERVER_CASTS.get(kinds.get(i, ""))
                cells.append(f"(data_json::jsonb)->>{i}" if cast is None else
                             f"CASE WHEN jsonb_typeof({value}) = '{kinds[i]}' THEN ({value} #>> '{{}}')::{cast} END")
        pairs = zip(cells, columns, strict=True)
        select_list = ", ".join(f'{cell} AS "{_ident(col)}"' for cell, col in pairs) or "NULL AS empty"
        return (f'CREATE VIEW "{_ident(view_name)}" AS SELECT {select_list} FROM export_rows '
                f"WHERE job_id = '{_literal(job_id)}' AND kind = '{_literal(kind)}' ORDER BY seq")

    def export_view_retype(self, tx: Tx, view_name: str, job_id: str, kind: str, rows_json: Sequence[str]) -> bool:
        """Whether a batch of rows added to an export changes a column type of its server view (a string where
        only numbers were, a first number where there were only nulls): then the view is made again. A column
        that is text stays text, so a batch never costs more than its own decoding. Never on SQLite."""
        if self.is_sqlite or not rows_json:
            return False
        from jobtrack import jsonutil

        known = self._view_kinds()
        if view_name not in known:  # made by another process (an earlier attempt), or not committed: read it
            known[view_name] = self._export_kinds(tx, job_id, kind)  # the rows before this batch's
        kinds = known[view_name]
        before = dict(kinds)
        for row in rows_json:
            for i, value in enumerate(jsonutil.loads(row)):
                if value is not None:
                    now = "boolean" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) \
                        else "text"
                    kinds[i] = now if kinds.get(i, now) == now else "text"
        return any(_SERVER_CASTS.get(kinds[i]) != _SERVER_CASTS.get(before.get(i, "")) for i in kinds)

    def forget_export_view(self, view_name: str) -> None:
        """Drop what this process knows of a view's column types (its transaction failed): read again when needed."""
        self._view_kinds().pop(view_name, None)

    def _view_kinds(self) -> dict[str, dict[int, str]]:
        """This process's knowledge of its server export views: view -> column position -> the JSON type of the
        values stored there (``number``, ``boolean``, or ``text`` for strings, objects and a mix); nulls count not."""
        kinds: dict[str, dict[int, str]] | None = self.__dict__.get("_export_view_kinds")
        if kinds is None:
            kinds = self.__dict__["_export_view_kinds"] = {}
        return kinds

    @staticmethod
    def _export_kinds(tx: Tx, job_id: str, kind: str) -> dict[int, str]:
        """Column position -> ``number``, ``boolean`` or ``text``: the JSON type of the non-null values stored there."""
        rows = tx.all("SELECT e.i - 1, min(jsonb_typeof(e.v)), max(jsonb_typeof(e.v)) FROM export_rows r, "
                      "jsonb_array_elements(r.data_json::jsonb) WITH ORDINALITY AS e(v, i) "
                      "WHERE r.job_id = :id AND r.kind = :kind AND jsonb_typeof(e.v) <> 'null' GROUP BY e.i",
                      {"id": job_id, "kind": kind})
        return {int(i): str(low) if low == high and low in _SERVER_CASTS else "text" for i, low, high in rows}

    @property
    def for_update(self) -> str:
        """Row lock for a read that a write in the same transaction depends on (servers; SQLite holds the database)."""
        return "" if self.is_sqlite else " FOR UPDATE"

    @property
    def skip_locked(self) -> str:
        """Row-locking suffix for claiming queued jobs (servers); SQLite's write lock already serialises."""
        return "" if self.is_sqlite else " FOR UPDATE SKIP LOCKED"


_SERVER_CASTS = {"number": "numeric", "boolean": "boolean"}
"""The server type of an export view's column whose stored values are all of that JSON type."""


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _literal(value: str) -> str:
    return value.replace("'", "''")
