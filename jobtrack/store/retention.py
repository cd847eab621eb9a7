"""Retention: removing old finished jobs with their rows and views (their files go after the commit)."""

from __future__ import annotations

import os
from datetime import datetime

from jobtrack import jsonutil
from jobtrack.store import materialize
from jobtrack.store.base import TERMINAL_SQL
from jobtrack.store.bundles import CARRIED_TABLE, is_carried
from jobtrack.store.core import FencedCore
from jobtrack.store.records import PruneReport
from jobtrack.store.registry import model_in_use
from jobtrack.timeutil import to_iso


class RetentionMixin(FencedCore):
    """``prune``: which finished jobs go, which stay and why."""

    def prune(self, finished_before: datetime, *, dry_run: bool = False) -> PruneReport:
        """Remove terminal jobs finished before ``finished_before``, with their epochs, events, exports and views.

        A training job whose model is registered, or used by a QUEUED or RUNNING job, is kept. The report
        lists the files the jobs leave; the caller deletes them after this transaction commits
        (``jobtrack.files.remove_paths``), never under the lock. A path in another database's files folder (a
        bundle imported without files, a migrated or copied database), or a carried job's path outside this
        database's files folder (``owns_path``), is listed under ``left``, never deleted. Tables materialized
        from a removed job's views are not removed: the report lists them under ``tables``.
        """
        report = PruneReport()

        def owned(path: str, carried: bool) -> None:
            if self.owns_path(path, carried=carried):
                report.files.append(path)
            elif os.path.lexists(path):  # another database's: named, never deleted
                report.left.append(path)

        with self.db.write() as tx:
            rows = tx.all(
                "SELECT id, job_type, model_run_id, export_paths_json, source_views_json, spec_json FROM jobs "
                f"WHERE status IN ({TERMINAL_SQL}) AND finished_at < :before ORDER BY created_at",
                {"before": to_iso(finished_before)},
            )
            names = self.db.table_names(tx) if rows else set()
            for job_id, job_type, model_run_id, paths_json, views_json, spec_json in rows:
                own_model = job_type != "inference" and model_run_id is not None
                if own_model:
                    key = tx.scalar("SELECT key FROM registered_models WHERE model_run_id = :m", {"m": model_run_id})
                    if key is not None:
                        report.kept[job_id] = f"its model is registered as {key!r}"
                        continue
                    busy = model_in_use(tx, job_id, model_run_id)  # as delete_model's ModelInUse
                    if busy is not None:
                        report.kept[job_id] = f"its model is used by {busy[0]}, which has not ended"
                        continue
                job_dir = str(self.job_dir(job_id))
                report.removed.append(job_id)
                report.files.append(job_dir)
                carried = is_carried(tx, names, job_id)
                for path in jsonutil.loads(paths_json).values():
                    if not path.startswith(job_dir + os.sep):
                        owned(path, carried)
                views = list(jsonutil.loads(views_json).values())
                report.views.extend(views)
                report.tables.extend(materialize.tables_of(tx, names, job_id).values())
                if own_model:
                    recorded = (jsonutil.loads(spec_json) or {}).get("model_dir")
                    owned(self.model_dir_of(model_run_id, recorded), True)  # made in its files folder, if here
                if dry_run:
                    continue
                for view in views:
                    tx.ddl(f'DROP VIEW IF EXISTS "{view}"')
                materialize.forget(tx, names, job_id)
                for table in ("export_rows", "job_exports", "job_epochs", "job_events", "job_attempts", "model_runs",
                              "job_params", "job_tags", "job_metrics"):  # the last three: #15
                    tx.run(f"DELETE FROM {table} WHERE job_id = :id", {"id": job_id})
                if carried:
                    tx.run(f"DELETE FROM {CARRIED_TABLE} WHERE job_id = :id", {"id": job_id})
                tx.run("DELETE FROM jobs WHERE id = :id", {"id": job_id})
        return report
