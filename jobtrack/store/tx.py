"""One open transaction, the same SQL text with ``:name`` parameters on every backend."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Params = Mapping[str, Any]

_NAME = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_numbered: dict[tuple[str, tuple[str, ...]], str] = {}  # (SQL with :name, names) -> the same with ?N


def numbered(sql: str, names: tuple[str, ...]) -> str:
    """``sql`` with each ``:name`` as SQLite's ``?N`` (N: its place in ``names``, from 1), for rows bound as tuples.

    >>> numbered("INSERT INTO t (a, b, c) VALUES (:id, :v, :v)", ("id", "v"))
    'INSERT INTO t (a, b, c) VALUES (?1, ?2, ?2)'
    """
    key = (sql, names)
    out = _numbered.get(key)
    if out is None:
        out = _numbered[key] = _NAME.sub(lambda m: f"?{names.index(m.group(1)) + 1}", sql)
    return out


class Tx:
    """One open transaction (``Database.read()`` / ``write()``): sqlite3 directly, or SQLAlchemy on servers."""

    __slots__ = ("_conn", "_raw", "_text", "memo")

    def __init__(self, conn: Any, *, raw: bool, text: Callable[[str], Any] | None = None) -> None:
        self._conn = conn
        self._raw = raw
        self._text = text
        self.memo: dict[Any, Any] = {}  # reads remembered for the rest of this transaction

    @property
    def connection(self) -> Any:
        """The driver connection underneath: a ``sqlite3.Connection`` or a SQLAlchemy ``Connection``."""
        return self._conn

    def execute(self, sql: str, params: Params | None = None) -> Any:
        if self._raw:
            return self._conn.execute(sql, params or {})
        assert self._text is not None
        return self._conn.execute(self._text(sql), dict(params or {}))

    def execute_row(self, sql: str, names: tuple[str, ...], values: tuple[Any, ...]) -> Any:
        """``execute`` with the values of ``names`` as one tuple, in that order: SQLite binds it as is (#14: six
        named values cost 2.5 µs more per statement than a tuple, on the per-epoch path); servers get a dict."""
        if self._raw:
            return self._conn.execute(numbered(sql, names), values)
        assert self._text is not None
        return self._conn.execute(self._text(sql), dict(zip(names, values, strict=True)))

    def all(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        rows = self.execute(sql, params).fetchall()
        return rows if self._raw else [tuple(r) for r in rows]  # sqlite3's rows are tuples already

    def one(self, sql: str, params: Params | None = None) -> tuple[Any, ...] | None:
        row = self.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def run(self, sql: str, params: Params | None = None) -> int:
        """Execute a write and return how many rows it changed."""
        return int(self.execute(sql, params).rowcount)

    def run_many(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        if self._raw:
            self._conn.executemany(sql, rows)
        else:
            assert self._text is not None
            self._conn.execute(self._text(sql), [dict(r) for r in rows])

    def run_rows(self, sql: str, names: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
        """``run_many`` with each row a tuple of the values of ``names``, in that order.

        SQLite binds the tuples directly (#14: a dict per row cost 2.7 µs per epoch's metric upserts);
        servers get the same rows as dicts.
        """
        if not rows:
            return
        if self._raw:
            self._conn.executemany(numbered(sql, names), rows)
        else:
            assert self._text is not None
            self._conn.execute(self._text(sql), [dict(zip(names, r, strict=True)) for r in rows])

    def ddl(self, sql: str) -> None:
        if self._raw:
            self._conn.execute(sql)
        else:
            self._conn.exec_driver_sql(sql)
