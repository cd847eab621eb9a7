"""Materialized results: permanent tables made from a job's source views (the reference's ``materialize_results``).

A completed job's read-only views read its export rows, which ``prune`` removes with the job; a
materialized table is a copy (``CREATE TABLE ... AS SELECT * FROM <view>``) that stays. The table of
view ``predictions_<alias>`` is ``materialized_predictions_<alias>``: every view starts with its kind, so
no view name can ever be a table name. Which tables a job made is recorded in ``jobtrack_materialized``,
created on first use under the write lock (no schema version is needed for it).
"""

from __future__ import annotations

from jobtrack import jsonutil
from jobtrack.errors import JobNotCompleted, JobNotFound, TableExists
from jobtrack.states import JobStatus, JobType
from jobtrack.store.core import FencedCore
from jobtrack.store.db import Tx
from jobtrack.timeutil import to_iso, utcnow

RECORD_TABLE = "jobtrack_materialized"
PREFIX = "materialized_"

_CREATE = (f"CREATE TABLE IF NOT EXISTS {RECORD_TABLE} (job_id VARCHAR(200) NOT NULL, kind VARCHAR(40) NOT NULL, "
           "table_name VARCHAR(300) NOT NULL, view_name VARCHAR(300) NOT NULL, created_at VARCHAR(32) NOT NULL, "
           "PRIMARY KEY (job_id, kind))")


def table_name(view: str) -> str:
    """The permanent table made from a source view."""
    return PREFIX + view


def tables_of(tx: Tx, names: set[str], job_id: str) -> dict[str, str]:
    """kind → table a job materialized (``names``: the database's table names, read once per transaction)."""
    if RECORD_TABLE not in names:
        return {}
    rows = tx.all(f"SELECT kind, table_name FROM {RECORD_TABLE} WHERE job_id = :id ORDER BY kind", {"id": job_id})
    return {str(k): str(t) for k, t in rows}


def forget(tx: Tx, names: set[str], job_id: str) -> None:
    """Drop a removed job's record of its tables (the tables themselves stay: they are the user's now)."""
    if RECORD_TABLE in names:
        tx.run(f"DELETE FROM {RECORD_TABLE} WHERE job_id = :id", {"id": job_id})


class MaterializeMixin(FencedCore):
    """Permanent tables of a completed job's predictions and embeddings."""

    def materialized_tables(self, job_id: str) -> dict[str, str]:
        """kind → permanent table this job's results were materialized into ({} if none)."""
        with self.db.read() as tx:
            return tables_of(tx, self.db.table_names(tx), job_id)

    def check_tables_free(self, views: list[str]) -> None:
        """Refuse, before a job is written, source views whose permanent tables would replace existing tables.

        Raises:
            TableExists: a table of that name is already in the database.
        """
        wanted = {table_name(view).lower() for view in views}
        with self.db.read() as tx:
            taken = sorted(n for n in self.db.table_names(tx) if n.lower() in wanted)
        if taken:
            raise TableExists(taken[0], "choose another output_alias")

    def materialize(self, job_id: str) -> dict[str, str]:
        """Create the permanent table of each of a COMPLETED job's source views; kind → table name.

        Idempotent: tables already made for this job are returned, not made again. All tables of one
        call are created in one transaction, or none.

        Raises:
            JobNotFound: no such job.
            JobNotCompleted: the job is not COMPLETED.
            TableExists: a table of the name to create exists and was not made for this job.
        """
        with self.db.write() as tx:
            row = tx.one(f"SELECT status, job_type, reason, source_views_json FROM jobs WHERE id = :id"
                         f"{self.db.for_update}", {"id": job_id})
            if row is None:
                raise JobNotFound(job_id, self.target)
            status, job_type, reason, views_json = row
            if status != JobStatus.COMPLETED:
                raise JobNotCompleted(job_id, status, reason or "")
            if job_type == JobType.TRAIN:
                return {}  # a training job exports nothing
            tx.ddl(_CREATE)
            names = self.db.table_names(tx)
            done = tables_of(tx, names | {RECORD_TABLE}, job_id)
            lower = {n.lower() for n in names}
            now = to_iso(utcnow())
            for kind, view in sorted(jsonutil.loads(views_json).items()):
                if kind in done:
                    continue
                table = table_name(view)
                if table.lower() in lower:
                    owner = tx.scalar(f"SELECT job_id FROM {RECORD_TABLE} WHERE table_name = :t", {"t": table})
                    raise TableExists(table, f"made by job {owner!r}" if owner else "")
                tx.ddl(f'CREATE TABLE "{table}" AS SELECT * FROM "{view}"')
                tx.run(f"INSERT INTO {RECORD_TABLE} (job_id, kind, table_name, view_name, created_at) "
                       "VALUES (:id, :kind, :table, :view, :at)",
                       {"id": job_id, "kind": kind, "table": table, "view": view, "at": now})
                done[kind] = table
            return done
