"""Copy a database's history into another (``jobtrack migrate --from FILE --to URL``); safe to run twice.

What a job carries is derived from the schema (``models.METADATA``), so a new per-job table or ``jobs``
column needs no change here: the ``jobs`` row, every table with a ``job_id`` column (events, epochs,
exports, model runs, config parameters, tags, metrics, attempts, ...) and the ``sweeps`` row of a
trial. ``migrate`` carries a bundle's rows (``store/bundles.py``) without its files, whose paths are
kept: jobs whole or not at all, in batches, each batch in one write transaction on the target; jobs the
target already has are skipped, except that their tags are merged (union).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean

from jobtrack import liveness
from jobtrack.errors import BundleConflict
from jobtrack.states import JobStatus
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
    unfinished: list[str] = field(default_factory=list)  # QUEUED or RUNNING in the source: not copied (yet)


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
                                     f"the target's sweep {found_id} has this name (this one is {sweep['id']}); to "
                                     "carry the other jobs, leave the sweep's out: jobtrack export --where "
                                     f"\"sweep is null or sweep != '{sweep['name']}'\"")


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


def migrate(source: Store, target: Store, *, batch: int = 200) -> MigrateReport:
    """Copy every finished job of ``source`` that ``target`` lacks (QUEUED and RUNNING ones are listed in the report's
    ``unfinished``, for a later run once they ended; a snapshot copy of a job running elsewhere is copied as such,
    for an import of its finished bundle to replace), with its rows, exports, views, materialized tables,
    sweep, model run and registry entries: a bundle's rows (``Store.bundle_rows``) without its files, whose
    paths are kept. The same rules as ``jobtrack import`` and ``merge``: every batch is checked before any is
    written, so a conflict writes nothing; a job the target has is skipped, its tags merged.

    Raises:
        BundleConflict: a view, materialized table, registry entry, model run or sweep name of a copied job is
            the target's with other content; nothing was written.
    """
    with source.db.read() as tx:  # finished jobs only: a copy of a QUEUED job would run in both databases, one
        listed = tx.all("SELECT id, status, runner FROM jobs ORDER BY created_at, id")  # of a RUNNING one in neither
    # a snapshot copy (imported unfinished, #19) runs in no database here: it is copied as the copy it is
    ended = {str(i) for i, status, runner in listed if JobStatus(status).is_terminal or liveness.is_snapshot(runner)}
    ended.update(str(i) for i, _, _ in listed  # a job whose runner is gone ends now (its liveness verdict)
                 if str(i) not in ended and source.get_job(str(i)).status.is_terminal)
    ids = [str(i) for i, _, _ in listed if str(i) in ended]
    unfinished = [str(i) for i, _, _ in listed if str(i) not in ended]
    batches = [ids[start : start + batch] for start in range(0, len(ids), batch)]
    for part in batches:  # every conflict before anything is written (the source is read twice)
        target.check_bundle_rows(source.bundle_rows(part))
    report = MigrateReport(unfinished=unfinished)
    for part in batches:
        rows = source.bundle_rows(part)
        copied, skipped, tagged = target.import_bundle_rows(rows, batch=batch)
        report.copied += copied
        report.skipped += skipped
        report.tagged += tagged
        report.registered += target.import_registry_rows(rows["registered_models"])
    return report
