"""Copy a database's history into another (``jobtrack migrate --from FILE --to URL``); safe to run twice.

What a job carries is derived from the schema (``models.METADATA``), so a new per-job table or ``jobs``
column needs no change here: the ``jobs`` row, every table with a ``job_id`` column (events, epochs,
exports, model runs, config parameters, tags, metrics, attempts, ...) and the ``sweeps`` row of a
trial. Jobs are copied whole or not at all, in batches, each batch in one write transaction on the
target; jobs the target already has are skipped, except that their tags are merged (union). Export
files stay where they are and their paths are kept. Job bundles (``store/bundles.py``) use the same
helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean

from jobtrack import jsonutil
from jobtrack.errors import BundleConflict
from jobtrack.store import models
from jobtrack.store.db import Tx

if TYPE_CHECKING:
    from jobtrack.store.store import Store

UNION_TABLES = ("job_tags",)
"""Per-job tables that may change after a job ended: a job the target has gets the rows it lacks (a
union; nothing is removed), so a tag added on either side survives a second import or merge."""


@dataclass
class MigrateReport:
    """What a migration copied and what it found already there."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)  # skipped jobs that got tags they lacked


def job_tables() -> tuple[str, ...]:
    """``jobs`` and every table with a ``job_id`` column, parents first (foreign keys): what a job carries."""
    return ("jobs", *(t.name for t in models.METADATA.sorted_tables if t.name != "jobs" and "job_id" in t.c))


def key_of(table: str) -> str:
    """The column naming the job a row of ``table`` belongs to."""
    return "id" if table in ("jobs", "sweeps") else "job_id"


def _columns(table: str) -> list[str]:
    cols = [c.name for c in models.METADATA.tables[table].columns]
    return [c for c in cols if not (table == "job_events" and c == "id")]  # the target numbers its own events


def required_columns(table: str) -> set[str]:
    """Columns a carried row must have: NOT NULL without a server default (older bundles lack the others)."""
    cols = models.METADATA.tables[table].columns
    return {c.name for c in cols if not c.nullable and c.server_default is None} & set(_columns(table))


def _booleans(table: str) -> set[str]:
    return {c.name for c in models.METADATA.tables[table].columns if isinstance(c.type, Boolean)}


def _select(tx: Tx, table: str, key: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    cols = _columns(table)
    params = {f"i{n}": v for n, v in enumerate(ids)}
    order = " ORDER BY id" if table == "job_events" else ""
    rows = tx.all(f"SELECT {', '.join(cols)} FROM {table} WHERE {key} IN ({', '.join(':' + k for k in params)}){order}",
                  params)
    out = [dict(zip(cols, row, strict=True)) for row in rows]
    for flag in _booleans(table):  # SQLite's 0/1 as the booleans a server returns, so rows compare equal
        for r in out:
            if r[flag] is not None:
                r[flag] = bool(r[flag])
    return out


def insert_rows(tx: Tx, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows; the columns a row lacks (an older bundle) take the schema's defaults."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for cols, group in groups.items():
        tx.run_many(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})", group)


def sweep_rows(tx: Tx, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``sweeps`` rows of the trials among ``jobs``."""
    return _select(tx, "sweeps", "id", sorted({str(j["sweep_id"]) for j in jobs if j.get("sweep_id")}))


def check_sweeps(tx: Tx, sweeps: list[dict[str, Any]]) -> None:
    """A sweep is added by id (one the target has is kept as it is); its name must not name another sweep there.

    Raises:
        BundleConflict: the target has a sweep of this name with another id.
    """
    for sweep in sweeps:
        for found_id, _ in tx.all("SELECT id, name FROM sweeps WHERE id = :id OR name = :name",
                                  {"id": sweep["id"], "name": sweep["name"]}):
            if found_id != sweep["id"]:
                raise BundleConflict("sweep", str(sweep["name"]),
                                     f"the target's sweep {found_id} has this name (this one is {sweep['id']})")


def add_sweeps(tx: Tx, sweeps: list[dict[str, Any]]) -> None:
    """Insert the sweeps the target lacks (by id), after ``check_sweeps``."""
    check_sweeps(tx, sweeps)
    have = {str(r["id"]) for r in _select(tx, "sweeps", "id", [str(s["id"]) for s in sweeps])}
    insert_rows(tx, "sweeps", [s for s in sweeps if str(s["id"]) not in have])


def union_rows(tx: Tx, table: str, rows: list[dict[str, Any]]) -> set[str]:
    """Add the rows of jobs the target has that it lacks (``UNION_TABLES``); the jobs that changed."""
    if not rows:
        return set()
    cols = _columns(table)
    have = {tuple(r[c] for c in cols) for r in _select(tx, table, "job_id", sorted({str(r["job_id"]) for r in rows}))}
    new = [r for r in rows if tuple(r.get(c) for c in cols) not in have]
    insert_rows(tx, table, new)
    return {str(r["job_id"]) for r in new}


def _job_rows(tx: Tx, ids: Sequence[str], tables: set[str]) -> dict[str, list[dict[str, Any]]]:
    return {t: _select(tx, t, key_of(t), ids) if t in tables else [] for t in job_tables()}


def migrate(source: Store, target: Store, *, batch: int = 200) -> MigrateReport:
    """Copy every job of ``source`` that ``target`` lacks, with its rows, exports, views, sweep and model run.

    Raises:
        BundleConflict: a sweep of a copied job has a name the target gives another sweep; nothing was written.
    """
    report = MigrateReport()
    with source.db.read() as tx:
        listed = tx.all("SELECT id, sweep_id FROM jobs ORDER BY created_at, id")
        tables = source.db.table_names(tx)
    all_ids = [r[0] for r in listed]
    with target.db.read() as tx:
        present = {r[0] for r in tx.all("SELECT id FROM jobs")}
    todo = [i for i in all_ids if i not in present]
    report.skipped = [i for i in all_ids if i in present]
    wanted = set(todo)
    with source.db.read() as tx:
        sweeps = sweep_rows(tx, [{"sweep_id": s} for i, s in listed if i in wanted])
    with target.db.read() as tx:
        check_sweeps(tx, sweeps)  # before anything is written
    for start in range(0, len(todo), batch):
        ids = todo[start : start + batch]
        with source.db.read() as tx:
            data = _job_rows(tx, ids, tables)
        with target.db.write() as tx:
            used = {str(j["sweep_id"]) for j in data["jobs"] if j.get("sweep_id")}
            add_sweeps(tx, [s for s in sweeps if str(s["id"]) in used])
            for table in job_tables():
                insert_rows(tx, table, data[table])
            for export in data["job_exports"]:
                columns = jsonutil.loads(export["columns_json"])
                tx.ddl(f'DROP VIEW IF EXISTS "{export["view_name"]}"')
                tx.ddl(target.db.export_view_sql(export["view_name"], columns, export["job_id"], export["kind"]))
        report.copied.extend(ids)
    for start in range(0, len(report.skipped), batch):
        ids = report.skipped[start : start + batch]
        with source.db.read() as tx:
            extra = {t: _select(tx, t, "job_id", ids) for t in UNION_TABLES if t in tables}
        if not any(extra.values()):
            continue
        with target.db.write() as tx:
            report.tagged += sorted(set().union(*(union_rows(tx, t, rows) for t, rows in extra.items())))
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
