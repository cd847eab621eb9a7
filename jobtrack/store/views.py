"""Exports: the rows a job exported, the read-only SQL view over them, and the paths in the job row."""

from __future__ import annotations

from jobtrack import jsonutil
from jobtrack.store.core import FencedCore
from jobtrack.store.db import Tx


class ExportsMixin(FencedCore):
    """Writes of a job's exports (fenced by the runner's token, like every runner write)."""

    def add_export(self, job_id: str, token: int, kind: str, columns: list[str], rows_json: list[str],
                   path: str, view_name: str, *, first_seq: int = 0) -> None:
        """Record one batch of an export atomically: its rows, and with the first batch (``first_seq`` 0) a
        read-only view over them and its file path.

        A first batch replaces what the job exported of this kind before; later batches are appended
        (rows ``first_seq``, ``first_seq + 1``, ...). The view turns each stored JSON array back into named
        columns, in the order the rows were written, so plain ``sqlite3`` can ``SELECT * FROM <view_name>``.

        Raises:
            RunnerFenced: the job is no longer RUNNING under this token.
        """
        try:
            with self.db.write() as tx:
                self._renew(tx, job_id, token, None)
                if first_seq == 0:
                    self._replace_export(tx, job_id, kind, columns, path, view_name)
                # a server's view types its columns by what they hold: made again if this batch changes that
                retype = first_seq > 0 and self.db.export_view_retype(tx, view_name, job_id, kind, rows_json)
                tx.run_many("INSERT INTO export_rows (job_id, kind, seq, data_json) "
                            "VALUES (:id, :kind, :seq, :data)",
                            [{"id": job_id, "kind": kind, "seq": first_seq + i, "data": d}
                             for i, d in enumerate(rows_json)])
                if first_seq == 0 or retype:  # after its rows, which type it
                    tx.ddl(f'DROP VIEW IF EXISTS "{view_name}"')
                    tx.ddl(self.db.export_view_sql(view_name, columns, job_id, kind, tx))
        except BaseException:
            self.db.forget_export_view(view_name)  # what this process knew of it may not have been committed
            raise

    def _replace_export(self, tx: Tx, job_id: str, kind: str, columns: list[str], path: str, view_name: str) -> None:
        tx.run("DELETE FROM export_rows WHERE job_id = :id AND kind = :kind", {"id": job_id, "kind": kind})
        tx.ddl(f'DROP VIEW IF EXISTS "{view_name}"')
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
