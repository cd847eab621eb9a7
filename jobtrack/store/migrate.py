"""Copy a database's history into another (``jobtrack migrate --from FILE --to URL``); safe to run twice.

Jobs are copied whole (row, events, epochs, export rows and views, model run) or not at all, in
batches, each batch in one write transaction on the target; jobs the target already has are
skipped. Export files stay where they are and their paths are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean

from jobtrack import jsonutil
from jobtrack.store import models
from jobtrack.store.db import Tx

if TYPE_CHECKING:
    from jobtrack.store.store import Store

_COPIED = ("jobs", "model_runs", "job_events", "job_epochs", "job_exports", "export_rows")
"""Tables copied per job, parents first (foreign keys)."""


@dataclass
class MigrateReport:
    """What a migration copied and what it found already there."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)


def _columns(table: str) -> list[str]:
    cols = [c.name for c in models.METADATA.tables[table].columns]
    return [c for c in cols if not (table == "job_events" and c == "id")]  # the target numbers its own events


def _booleans(table: str) -> set[str]:
    return {c.name for c in models.METADATA.tables[table].columns if isinstance(c.type, Boolean)}


def _select(tx: Tx, table: str, key: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    cols = _columns(table)
    params = {f"i{n}": v for n, v in enumerate(ids)}
    order = " ORDER BY id" if table == "job_events" else ""
    rows = tx.all(f"SELECT {', '.join(cols)} FROM {table} WHERE {key} IN ({', '.join(':' + k for k in params)}){order}",
                  params)
    flags = _booleans(table)
    return [{c: (bool(v) if c in flags and v is not None else v) for c, v in zip(cols, row, strict=True)}
            for row in rows]


def migrate(source: Store, target: Store, *, batch: int = 200) -> MigrateReport:
    """Copy every job of ``source`` that ``target`` lacks, with its history, exports, views and model run."""
    report = MigrateReport()
    with source.db.read() as tx:
        all_ids = [r[0] for r in tx.all("SELECT id FROM jobs ORDER BY created_at, id")]
    with target.db.read() as tx:
        present = {r[0] for r in tx.all("SELECT id FROM jobs")}
    todo = [i for i in all_ids if i not in present]
    report.skipped = [i for i in all_ids if i in present]
    for start in range(0, len(todo), batch):
        ids = todo[start : start + batch]
        with source.db.read() as tx:
            data = {t: _select(tx, t, "id" if t == "jobs" else "job_id", ids) for t in _COPIED}
        with target.db.write() as tx:
            for table in _COPIED:
                cols = _columns(table)
                tx.run_many(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})",
                            data[table])
            for export in data["job_exports"]:
                columns = jsonutil.loads(export["columns_json"])
                tx.ddl(f'DROP VIEW IF EXISTS "{export["view_name"]}"')
                tx.ddl(target.db.export_view_sql(export["view_name"], columns, export["job_id"], export["kind"]))
        report.copied.extend(ids)
    report.registered = _copy_registry(source, target)
    return report


def _copy_registry(source: Store, target: Store) -> list[str]:
    """Registered models whose model run the target has and whose key it lacks."""
    with source.db.read() as tx:
        rows = [dict(zip(_columns("registered_models"), r, strict=True))
                for r in tx.all(f"SELECT {', '.join(_columns('registered_models'))} FROM registered_models")]
    copied = []
    with target.db.write() as tx:
        runs = {r[0] for r in tx.all("SELECT id FROM model_runs")}
        keys = {r[0] for r in tx.all("SELECT key FROM registered_models")}
        for row in rows:
            if row["key"] not in keys and row["model_run_id"] in runs:
                cols = list(row)
                tx.run(f"INSERT INTO registered_models ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})",
                       row)
                copied.append(row["key"])
    return copied
