"""The SQL of job bundles (#19): the rows a bundle carries, the checks an import makes, and its writes.

``jobtrack.bundle`` owns the file format; this mixin reads a selection of jobs with everything that
belongs to them, checks a bundle's rows against the target (conflicts are found before anything is
written), and inserts them one batch per write transaction, recreating each export's SQL view and
each materialized table. Which tables and columns a job carries is derived from the schema by
``migrate`` (``job_tables``), so a new per-job table or ``jobs`` column needs no change here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from jobtrack import jsonutil, liveness
from jobtrack.errors import BundleConflict, InvalidArgument, JobNotFound
from jobtrack.store.base import TERMINAL_SQL, in_list
from jobtrack.store.db import Tx
from jobtrack.store.jobs import JobsMixin
from jobtrack.store.materialize import _CREATE as _CREATE_RECORDS, PREFIX, RECORD_TABLE
from jobtrack.timeutil import from_iso, to_iso, utcnow

MATERIALIZED_COLUMNS = ("job_id", "kind", "table_name", "view_name", "created_at")
CARRIED_TABLE = "jobtrack_carried"
"""Jobs written here by an import, merge or migrate (made on its first use, as ``jobtrack_materialized``): their
paths outside this database's files folder belong to where they came from, so ``prune`` never deletes them."""
_CREATE_CARRIED = (f"CREATE TABLE IF NOT EXISTS {CARRIED_TABLE} (job_id VARCHAR(200) NOT NULL PRIMARY KEY, "
                   "carried_at VARCHAR(32) NOT NULL)")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,250}$")
_CHUNK = 500


def mark_carried(tx: Tx, job_ids: Sequence[str]) -> None:
    """Record ``job_ids`` as carried in (``CARRIED_TABLE``), in the transaction that wrote their rows."""
    if job_ids:
        tx.ddl(_CREATE_CARRIED)
        at = to_iso(utcnow())
        tx.run_many(f"INSERT INTO {CARRIED_TABLE} (job_id, carried_at) VALUES (:id, :at) ON CONFLICT DO NOTHING",
                    [{"id": job_id, "at": at} for job_id in job_ids])


def is_carried(tx: Tx, tables: Collection[str], job_id: str) -> bool:
    """Whether the job came in by an import, merge or migrate (``tables``: the database's table names)."""
    return CARRIED_TABLE in tables and tx.scalar(f"SELECT 1 FROM {CARRIED_TABLE} WHERE job_id = :id",
                                                 {"id": job_id}) is not None


def job_tables() -> tuple[str, ...]:
    """Tables of a job's own rows, parents first (foreign keys): ``jobs`` and every table with a ``job_id``."""
    from jobtrack.store.migrate import job_tables as tables  # imports SQLAlchemy: only when bundles are used

    return tables()


def bundle_tables() -> tuple[str, ...]:
    """Every table a bundle carries rows of: a job's own, its sweep, registry entries, materialized tables."""
    return (*job_tables(), "sweeps", "registered_models", RECORD_TABLE)


def table_columns(table: str) -> list[str]:
    """The columns a bundle carries for a table (job events without their local numbering)."""
    from jobtrack.store.migrate import _columns

    return list(MATERIALIZED_COLUMNS) if table == RECORD_TABLE else _columns(table)


def required_columns(table: str) -> set[str]:
    """The columns every carried row of ``table`` has; bundles of older versions lack the others."""
    from jobtrack.store.migrate import required_columns as required

    return set(MATERIALIZED_COLUMNS) if table == RECORD_TABLE else required(table)


def _select(tx: Tx, table: str, key: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    from jobtrack.store.migrate import _select as select

    return select(tx, table, key, ids)


def _key(table: str) -> str:
    return "id" if table == "jobs" else "job_id"


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _same(have: dict[str, Any], row: dict[str, Any]) -> bool:
    """The target's row equals the bundle's in every column the bundle carries (older bundles carry fewer)."""
    return jsonutil.dumps({c: have.get(c) for c in row}, "row") == jsonutil.dumps(row, "row")


def _newer(have: dict[str, Any], row: dict[str, Any]) -> bool | None:
    """Whether the bundle's ``row`` replaces the target's ``have`` of the same job id: False when the target
    keeps its own (the same row, or a snapshot copy older than the target's), True for a snapshot copy in the
    target that the bundle has a state of at least as new, None for a conflict (another job, other content)."""
    if _same(have, row):
        return False
    if _when(have.get("created_at")) != _when(row.get("created_at")):
        return None  # another job with this id
    mine, theirs = liveness.is_snapshot(have.get("runner")), liveness.is_snapshot(row.get("runner"))
    if mine and _when(row.get("updated_at")) >= _when(have.get("updated_at")):
        return True
    if theirs and _when(have.get("updated_at")) >= _when(row.get("updated_at")):
        return False
    return None


def _when(value: Any) -> str:
    """A timestamp as comparable text (a server returns datetimes, a bundle carries ISO text)."""
    return to_iso(value) if isinstance(value, datetime) else to_iso(from_iso(str(value)))


def _leave_out(job_id: str) -> str:
    """How to carry a bundle's jobs but one, the end of a conflict's message."""
    return (f"to carry the others, leave it out: jobtrack export --where \"id != '{job_id}'\" (with --no-deps if "
            "others used its model or retry it: they would bring it back)")


def _other_content(have: dict[str, Any], row: dict[str, Any]) -> str:
    """The detail of a job conflict: the columns in which the target's job and the bundle's differ."""
    cols = [c for c in row if jsonutil.dumps({c: have.get(c)}, "row") != jsonutil.dumps({c: row[c]}, "row")]
    more = f" and {len(cols) - 6} more" if len(cols) > 6 else ""
    return (f"the target has a job of this id with other content (it differs in {', '.join(cols[:6])}{more}); "
            f"{_leave_out(str(row['id']))}")


def _check_trials(tx: Tx, jobs: dict[str, dict[str, Any]], skip: set[str], sweeps: list[dict[str, Any]]) -> None:
    """One trial number, one job: a sweep resumed in two databases ran its trials in both, and importing one
    side's runs into the other would count each trial twice (``BundleConflict``)."""
    trials = {(str(j["sweep_id"]), int(j["trial"])): i for i, j in jobs.items()
              if j.get("sweep_id") and j.get("trial") is not None and i not in skip}
    names = {str(s["id"]): str(s["name"]) for s in sweeps}
    for sweep in sorted({s for s, _ in trials}):
        for other, trial in tx.all("SELECT id, trial FROM jobs WHERE sweep_id = :s AND trial IS NOT NULL",
                                   {"s": sweep}):
            mine = trials.get((sweep, int(trial)))
            if mine is not None and str(other) != mine and str(other) not in jobs:
                name = names.get(sweep, sweep)
                raise BundleConflict("sweep trial", f"{name} #{trial}", (
                    f"the target ran trial {trial} of sweep {name!r} as job {other}, the bundle as job {mine} (the "
                    "sweep was resumed in both databases: importing both would count each trial twice); carry the "
                    f"other jobs only, e.g. jobtrack export --where \"sweep is null or sweep != '{name}'\", and "
                    "keep one database's runs of the sweep"))


def _insert(tx: Tx, table: str, rows: list[dict[str, Any]]) -> None:
    from jobtrack.store.migrate import insert_rows

    insert_rows(tx, table, rows)


class BundlesMixin(JobsMixin):
    """Reads and writes of job bundles and database merges."""

    def database_id(self) -> str:
        """A stable id of this database: its recorded ``database_id``, else a digest of where it is."""
        with self.db.read() as tx:
            recorded = tx.scalar("SELECT value FROM jobtrack_meta WHERE key = 'database_id'")
        import hashlib  # not on `jobtrack status`'s path (#14)

        return str(recorded) if recorded else "db-" + hashlib.sha256(self.target.encode()).hexdigest()[:16]

    def bundle_job_ids(self, job_ids: Sequence[str] | None = None, *, since: datetime | None = None,
                       among: Collection[str] | None = None, include_running: bool = False,
                       deps: bool = True) -> tuple[list[str], list[str]]:
        """(ids to carry, the ones among them not yet terminal): the named jobs (or every job created
        since ``since`` and, if given, in ``among`` — a query's matches —, or all), only terminal ones
        unless ``include_running`` (then RUNNING ones too, never QUEUED ones), with the jobs they depend on
        unless ``deps`` is false: the training job of every model run they used, and the jobs they retry.
        A QUEUED or RUNNING job nothing can finish (its runner killed) is first marked FAILED, as ``migrate`` does:
        carried as it ends, not left out nor carried as a snapshot that never ends in the target.

        Raises:
            JobNotFound: a named job does not exist.
            InvalidArgument: a named job is not terminal and ``include_running`` is false.
        """
        for (job_id,) in self.db.read_all("SELECT id FROM jobs WHERE status IN ('QUEUED', 'RUNNING')", {}):
            with contextlib.suppress(JobNotFound):  # pruned meanwhile
                self.get_job(str(job_id))  # its liveness verdict, recorded
        with self.db.read() as tx:
            if job_ids is None:
                params: dict[str, Any] = {}
                sql = "SELECT id, status FROM jobs"
                if since is not None:
                    sql += " WHERE created_at >= :since"
                    params["since"] = to_iso(since)
                rows = tx.all(sql + " ORDER BY created_at, id", params)
                wanted = None if among is None else set(among)
                chosen = [str(i) for i, s in rows if (f"'{s}'" in TERMINAL_SQL or (include_running and s != "QUEUED"))
                          and (wanted is None or str(i) in wanted)]
            else:
                found: dict[str, str] = {}
                for part in _chunks(list(job_ids)):
                    params = {}
                    found.update({str(i): str(s) for i, s in tx.all(
                        f"SELECT id, status FROM jobs WHERE id IN {in_list('j', part, params)}", params)})
                for job_id in job_ids:
                    if job_id not in found:
                        raise JobNotFound(job_id, self.target)
                    if found[job_id] == "QUEUED":
                        raise InvalidArgument(f"Job {job_id} is QUEUED: it has nothing to carry yet (and a copy "
                                              "could be run a second time elsewhere); export it once it started.")
                    if not include_running and f"'{found[job_id]}'" not in TERMINAL_SQL:
                        raise InvalidArgument(f"Job {job_id} is {found[job_id]}; only finished jobs are exported "
                                              "unless include_running=True (--include-running).")
                chosen = list(dict.fromkeys(job_ids))
            if deps:
                chosen = self._with_dependencies(tx, chosen)
            running: list[str] = []
            for part in _chunks(chosen):
                params = {}
                running += [str(r[0]) for r in tx.all(f"SELECT id FROM jobs WHERE id IN {in_list('j', part, params)} "
                                                      f"AND status NOT IN ({TERMINAL_SQL})", params)]
        return chosen, running

    def _with_dependencies(self, tx: Tx, ids: list[str]) -> list[str]:
        """``ids`` with the training jobs of the models they used and the jobs they retry, dependencies first."""
        have, todo, extra = set(ids), list(ids), list[str]()
        while todo:
            found: list[str] = []
            for part in _chunks(todo):
                params: dict[str, Any] = {}
                chosen = in_list("j", part, params)
                found += [str(r[0]) for r in tx.all(
                    "SELECT DISTINCT m.job_id FROM jobs j JOIN model_runs m ON m.id = j.model_run_id "
                    f"WHERE j.id IN {chosen} AND m.job_id <> j.id", params)]
                found += [str(r[0]) for r in tx.all(
                    f"SELECT DISTINCT retry_of FROM jobs WHERE id IN {chosen} AND retry_of IS NOT NULL", params)]
            todo = [i for i in dict.fromkeys(found) if i not in have]
            have.update(todo)
            extra = todo + extra
        if not extra:
            return ids
        params = {}
        present = {str(r[0]) for r in tx.all(f"SELECT id FROM jobs WHERE id IN {in_list('j', extra, params)}", params)}
        return [i for i in extra if i in present] + ids  # parents first: their model runs precede the predictions

    def bundle_rows(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Every row that belongs to these jobs, by table (``bundle_tables()``), in one read transaction."""
        out: dict[str, list[dict[str, Any]]] = {t: [] for t in bundle_tables()}
        with self.db.read() as tx:
            names = self.db.table_names(tx)
            for part in _chunks(list(job_ids)):
                for table in job_tables():
                    if table in names:  # a table a newer jobtrack declared and this file does not have yet
                        out[table] += _select(tx, table, _key(table), part)
                if RECORD_TABLE in names:
                    params: dict[str, Any] = {}
                    rows = tx.all(f"SELECT {', '.join(MATERIALIZED_COLUMNS)} FROM {RECORD_TABLE} "
                                  f"WHERE job_id IN {in_list('j', part, params)} ORDER BY job_id, kind", params)
                    out[RECORD_TABLE] += [dict(zip(MATERIALIZED_COLUMNS, r, strict=True)) for r in rows]
            runs = [str(r["id"]) for r in out["model_runs"]]
            for part in _chunks(runs):
                out["registered_models"] += _select(tx, "registered_models", "model_run_id", part)
            sweeps = sorted({str(j["sweep_id"]) for j in out["jobs"] if j.get("sweep_id")})
            for part in _chunks(sweeps):
                out["sweeps"] += _select(tx, "sweeps", "id", part)
        return out

    # -- import ------------------------------------------------------------------------------------------

    def check_bundle_rows(self, rows: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
        """(the bundle's job ids the target already has, or has in a newer state: skipped; the ids of the
        target's snapshot copies the bundle has a newer state of: replaced).

        Raises:
            BundleConflict: a job, model run, sweep, registry entry, view or table exists with other content.
        """
        with self.db.read() as tx:
            return self._check(tx, rows)

    def _check(self, tx: Tx, rows: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
        from jobtrack.store.migrate import check_sweeps

        jobs = {str(r["id"]): r for r in rows["jobs"]}
        present: list[str] = []
        replace: list[str] = []
        for part in _chunks(list(jobs)):
            for row in _select(tx, "jobs", "id", part):
                newer = _newer(row, jobs[row["id"]])
                if newer is None:
                    raise BundleConflict("job", row["id"], _other_content(row, jobs[row["id"]]))
                (replace if newer else present).append(row["id"])
        skip = set(present) | set(replace)  # a replaced job's model run, views and tables are its own
        check_sweeps(tx, rows.get("sweeps", []))
        _check_trials(tx, jobs, skip, rows.get("sweeps", []))
        for run in rows["model_runs"]:
            if run["job_id"] not in skip:
                other = tx.scalar("SELECT job_id FROM model_runs WHERE id = :id", {"id": run["id"]})
                if other is not None:
                    raise BundleConflict("model run", run["id"],
                                         f"the target has it for job {other}; {_leave_out(str(run['job_id']))}")
        for reg in rows["registered_models"]:
            found = tx.one("SELECT key, model_run_id FROM registered_models WHERE key = :key OR "
                           "(model_name = :n AND version_name = :v)",
                           {"key": reg["key"], "n": reg["model_name"], "v": reg["version_name"]})
            if found is not None and (found[0] != reg["key"] or found[1] != reg["model_run_id"]):
                experiment = tx.scalar("SELECT experiment_name FROM model_runs WHERE id = :m", {"m": found[1]})
                raise BundleConflict("registered model", reg["key"], (
                    f"the target's {found[0]!r} names model run {found[1]} with this name and version; to import "
                    f"the bundle's, delete the target's first: jobtrack models delete {experiment} {found[1]} "
                    "(its registry entries and model files go; its jobs stay), or import into another database"))
        names = {n.lower() for n in self.db.table_names(tx)}
        for export in rows["job_exports"]:
            if export["job_id"] in present:
                continue
            view = export["view_name"]
            owner = tx.scalar("SELECT job_id FROM job_exports WHERE view_name = :v", {"v": view})
            if owner != export["job_id"] and (owner is not None or view.lower() in names):  # a replaced job's own
                raise BundleConflict("view", view, (
                    f"the target's job {owner} made it (the same output alias)" if owner is not None else
                    "the target has a view or table of this name that no job made: rename or drop it there, or")
                    + f"; {_leave_out(str(export['job_id']))}")
        for rec in rows[RECORD_TABLE]:
            if rec["job_id"] not in skip and rec["table_name"].lower() in names:
                raise BundleConflict("materialized table", rec["table_name"], "the target has a table of this name: "
                                     f"rename or drop it there, or {_leave_out(str(rec['job_id']))}")
        return present, replace

    def import_bundle_rows(self, rows: dict[str, list[dict[str, Any]]], *, batch: int = 500,
                           committed: list[str] | None = None,
                           replaced: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
        """Insert the bundle's jobs the target lacks, ``batch`` jobs per write transaction; (imported,
        skipped, tagged): a job the target has with the same row is skipped, but gets the bundle's tags it
        lacks (``migrate.UNION_TABLES``: tags are mutable metadata, merged by union, never removed).
        ``committed`` gets each batch's job ids once its transaction committed: what an interrupted import wrote;
        ``replaced``, the imported jobs whose snapshot copy here the bundle's newer state replaced.

        The rows were checked (``check_bundle_rows``) before any file was written; each batch checks
        again inside its transaction, so a job written meanwhile by someone else is skipped or refused.

        Raises:
            BundleConflict: see ``check_bundle_rows``.
        """
        from jobtrack.store.migrate import UNION_TABLES, add_sweeps, union_rows

        tables = (*job_tables(), RECORD_TABLE)
        order = [str(r["id"]) for r in rows["jobs"]]
        batch_of = {job_id: n // batch for n, job_id in enumerate(order)}
        parts: list[dict[str, list[dict[str, Any]]]] = [{t: [] for t in tables} for _ in range(0, len(order), batch)]
        for table in tables:  # each row to its job's batch, in the bundle's order (verified: its job is there)
            key = _key(table)
            for row in rows[table]:
                parts[batch_of[str(row[key])]][table].append(row)
        sweeps = {str(s["id"]): s for s in rows["sweeps"]}
        imported: list[str] = []
        skipped: set[str] = set()
        tagged: set[str] = set()
        for n, part in enumerate(parts):
            ids = order[n * batch : (n + 1) * batch]
            used = {str(j["sweep_id"]) for j in part["jobs"] if j.get("sweep_id")}
            part["sweeps"] = [sweeps[i] for i in sorted(used) if i in sweeps]
            with self.db.write() as tx:
                kept, replace = self._check(tx, {**part, "registered_models": []})
                for job_id in replace:
                    self._replace_snapshot(tx, job_id, part)
                there = set(kept) | set(replace)  # rows of both are in place now: insert the others'
                new = {t: [r for r in v if str(r[_key(t)]) not in there] for t, v in part.items() if t != "sweeps"}
                add_sweeps(tx, part["sweeps"])
                for table in job_tables():
                    _insert(tx, table, new[table])
                mark_carried(tx, [str(r["id"]) for r in new["jobs"]])
                self._recreate(tx, new)
                for table in UNION_TABLES:
                    tagged |= union_rows(tx, table, [r for r in part[table] if str(r["job_id"]) in there])
            imported += [i for i in ids if i not in kept]
            skipped.update(kept)
            if replaced is not None:
                replaced += replace
            if committed is not None:
                committed += ids
        return imported, sorted(skipped), sorted(tagged)

    def _replace_snapshot(self, tx: Tx, job_id: str, part: dict[str, list[dict[str, Any]]]) -> None:
        """Put the bundle's rows of ``job_id`` in place of the target's snapshot copy of it: its own rows of
        every table are deleted and inserted again, its job row and model run updated in place (a registry
        entry may name the model run), its export views recreated."""
        for (view,) in tx.all("SELECT view_name FROM job_exports WHERE job_id = :id", {"id": job_id}):
            tx.ddl(f'DROP VIEW IF EXISTS "{view}"')
        from jobtrack.store.migrate import UNION_TABLES

        mine = {t: [r for r in part[t] if str(r[_key(t)]) == job_id] for t in job_tables()}
        for table in reversed(job_tables()):
            if table in UNION_TABLES:  # tags: merged as for a job already there (a tag added here stays)
                continue
            if table in ("jobs", "model_runs"):
                for row in mine[table]:
                    cols = [c for c in row if c != "id"]
                    tx.run(f"UPDATE {table} SET {', '.join(f'{c} = :{c}' for c in cols)} WHERE id = :id", row)
                continue
            tx.run(f"DELETE FROM {table} WHERE job_id = :id", {"id": job_id})
            _insert(tx, table, mine[table])
        self._recreate(tx, {"job_exports": mine["job_exports"], RECORD_TABLE: []})

    def import_registry_rows(self, rows: list[dict[str, Any]]) -> list[str]:
        """Registry entries whose model run the target now has and whose key it lacks; their keys."""
        added: list[str] = []
        with self.db.write() as tx:
            for reg in rows:
                found = tx.one("SELECT key, model_run_id FROM registered_models WHERE key = :key OR "
                               "(model_name = :n AND version_name = :v)",
                               {"key": reg["key"], "n": reg["model_name"], "v": reg["version_name"]})
                if found is not None:
                    if found[0] != reg["key"] or found[1] != reg["model_run_id"]:
                        raise BundleConflict("registered model", reg["key"], "the target registered it meanwhile; "
                                             "import again: the check names the model run that has it, and what to do")
                    continue
                if tx.scalar("SELECT id FROM model_runs WHERE id = :id", {"id": reg["model_run_id"]}) is None:
                    continue
                _insert(tx, "registered_models", [reg])
                added.append(str(reg["key"]))
        return added

    def _recreate(self, tx: Tx, part: dict[str, list[dict[str, Any]]]) -> None:
        for export in part["job_exports"]:
            columns = jsonutil.loads(export["columns_json"])
            tx.ddl(f'DROP VIEW IF EXISTS "{export["view_name"]}"')
            tx.ddl(self.db.export_view_sql(export["view_name"], columns, export["job_id"], export["kind"], tx))
        if not part[RECORD_TABLE]:
            return
        tx.ddl(_CREATE_RECORDS)
        for rec in part[RECORD_TABLE]:
            assert NAME.match(rec["table_name"]) and rec["table_name"] == PREFIX + rec["view_name"]
            tx.ddl(f'CREATE TABLE "{rec["table_name"]}" AS SELECT * FROM "{rec["view_name"]}"')
            _insert(tx, RECORD_TABLE, [rec])
