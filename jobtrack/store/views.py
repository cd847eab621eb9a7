"""Exports: the rows a job exported, the read-only SQL view over them, and the paths in the job row."""

from __future__ import annotations

from jobtrack import jsonutil
from jobtrack.store.core import FencedCore


class ExportsMixin(FencedCore):
    """Writes of a job's exports (fenced by the runner's token, like every runner write)."""

    def add_export(self, job_id: str, token: int, kind: str, columns: list[str], rows_json: list[str],
                   path: str, view_name: str) -> None:
        """Record an export atomically: its rows, a read-only view over them, and its file path.

        The view turns each stored JSON array back into named columns, so plain ``sqlite3`` can
        ``SELECT * FROM <view_name>``.

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        with self.db.write() as tx:
            self._renew(tx, job_id, token, None)
            tx.run("DELETE FROM export_rows WHERE job_id = :id AND kind = :kind", {"id": job_id, "kind": kind})
            tx.run_many("INSERT INTO export_rows (job_id, kind, seq, data_json) VALUES (:id, :kind, :seq, :data)",
                        [{"id": job_id, "kind": kind, "seq": i, "data": d} for i, d in enumerate(rows_json)])
            tx.ddl(f'DROP VIEW IF EXISTS "{view_name}"')
            tx.ddl(self.db.export_view_sql(view_name, columns, job_id, kind))
            tx.run("DELETE FROM job_exports WHERE job_id = :id AND kind = :kind", {"id": job_id, "kind": kind})
            tx.run("INSERT INTO job_exports (job_id, kind, path, view_name, columns_json) "
                   "VALUES (:id, :kind, :path, :view, :columns)",
                   {"id": job_id, "kind": kind, "path": path, "view": view_name,
                    "columns": jsonutil.dumps(columns, "export columns")})
            paths, views = tx.one("SELECT export_paths_json, source_views_json FROM jobs WHERE id = :id",
                                  {"id": job_id}) or ("{}", "{}")
            paths_d, views_d = jsonutil.loads(paths), jsonutil.loads(views)
            paths_d[kind], views_d[kind] = path, view_name
            tx.run("UPDATE jobs SET export_paths_json = :paths, source_views_json = :views WHERE id = :id",
                   {"paths": jsonutil.dumps(paths_d, "export_paths"), "views": jsonutil.dumps(views_d, "source_views"),
                    "id": job_id})
