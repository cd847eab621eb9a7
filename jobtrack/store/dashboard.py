"""The reads behind ``jobtrack ui`` and ``jobtrack report`` (#16): pages of jobs, new epochs, tags, export heads.

Every method only reads (the liveness verdict of ``get_job``/``list_jobs`` aside, which a read-only
Store shows without saving). Pages are sorted and cut in SQL, so a page of a 100 k job file costs
what a page costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobtrack import jsonutil
from jobtrack.states import JobStatus
from jobtrack.store.base import in_list
from jobtrack.store.jobs import JobsMixin
from jobtrack.store.records import SELECT_JOB, JobRecord, job_record

SORT_COLUMNS = {
    "created": ("created_at",),
    "status": ("status", "created_at"),
    "type": ("job_type", "created_at"),
    "experiment": ("experiment_name", "created_at"),
    "best": ("best_metric",),
    "id": ("id",),
}
"""The sortable columns of the jobs page by the name the page uses, each with its tie-break: the order of
an index (``models.Job``; ``rowid`` ends every SQLite index), so a page is read in index order, not sorted."""


def _order(sort: str, descending: bool, tie: str) -> str:
    way = "DESC" if descending else "ASC"
    columns = SORT_COLUMNS.get(sort, SORT_COLUMNS["created"])
    keys = [f"{c} {way}" for c in columns]
    return ", ".join([*keys, f"{tie} {way}"])


_OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)
_OPEN_CHECKED = 2000  # open jobs whose liveness a status filter checks (a probe each, per distinct runner)


class DashboardMixin(JobsMixin):
    """Read-only queries of the dashboard and the HTML report."""

    def dashboard_page(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        job_type: str | None = None,
        experiment: str | None = None,
        tag: str | None = None,
        ids: Sequence[str] | None = None,
        sort: str = "created",
        descending: bool = True,
        offset: int = 0,
        limit: int | None = 50,
    ) -> tuple[int, list[JobRecord]]:
        """(number of matching jobs, the page of them) in the given order; ties by creation time, newest first.

        ``ids`` restricts to those jobs (the query language's result when it has been applied).
        ``best`` sorts missing values last in either direction.
        """
        where: list[str] = []
        params: dict[str, Any] = {}
        # Without table statistics SQLite may walk the status index for a common status while a named
        # experiment is far more selective: a unary + keeps the other columns' indexes out of the choice.
        plus = "+" if experiment and self.db.is_sqlite else ""
        tie = "rowid" if self.db.is_sqlite else "id"  # a server's rows have no rowid: the id breaks ties there
        probes: dict[str, bool] = {}  # one liveness probe per distinct runner per page (#14)
        if statuses:
            stored = f"{plus}status IN {in_list('s', [s.value for s in statuses], params)}"
            # filtered as they read: FAILED, saved or not (a read-only store); no other status holds a lost job
            lost = self._lost_ids(probes) if {*_OPEN, JobStatus.FAILED} & set(statuses) else []
            if lost:
                ids_in = in_list("l", lost, params)
                stored = (f"({stored} OR id IN {ids_in})" if JobStatus.FAILED in statuses
                          else f"({stored} AND id NOT IN {ids_in})")
            where.append(stored)
        if job_type:
            where.append(f"{'+' if (experiment or statuses) and self.db.is_sqlite else ''}job_type = :job_type")
            params["job_type"] = job_type
        if experiment:
            where.append("experiment_name = :experiment")
            params["experiment"] = experiment
        if tag:
            where.append("id IN (SELECT job_id FROM job_tags WHERE tag = :tag)")
            params["tag"] = tag
        if ids is not None:
            if not ids:
                return 0, []
            where.append(f"id IN {in_list('i', list(ids), params)}")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        offset = max(0, offset)
        with self.db.read() as tx:
            total = int(tx.scalar(f"SELECT COUNT(*) FROM jobs{clause}", params))
            if sort == "best" and not descending:
                recs = self._best_ascending(tx, where, params, offset, limit, tie)
            else:
                sql = f"{SELECT_JOB}{clause} ORDER BY {_order(sort, descending, tie)}"
                if limit is not None:
                    sql += " LIMIT :limit OFFSET :offset"
                recs = [job_record(r) for r in tx.all(sql, {**params, "limit": limit, "offset": offset})]
        return total, [self._apply_liveness(r, probes) if r.status in _OPEN else r for r in recs]

    def _lost_ids(self, probes: dict[str, bool]) -> list[str]:
        """Ids of the QUEUED and RUNNING jobs that liveness says can never finish (``_apply_liveness``).

        A writable store records them FAILED here; a read-only one (the dashboard's) cannot, so its status
        filter needs them to show a job under the status its row reads. Up to ``_OPEN_CHECKED`` open jobs are
        checked; past that the stored statuses are filtered as they are.
        """
        sql = f"{SELECT_JOB} WHERE status IN ('QUEUED', 'RUNNING') LIMIT {_OPEN_CHECKED + 1}"
        recs = [job_record(r) for r in self.db.read_all(sql, {})]
        if len(recs) > _OPEN_CHECKED:
            return []
        return [r.id for r in recs if self._apply_liveness(r, probes).status is JobStatus.FAILED]  # not ended meanwhile

    @staticmethod
    def _best_ascending(tx: Any, where: list[str], params: dict[str, Any], offset: int,
                        limit: int | None, tie: str) -> list[JobRecord]:
        """Lowest best metric first, jobs without one last: two index ranges rather than a sort of every row."""
        out: list[JobRecord] = []
        for part, order in (("best_metric IS NOT NULL", f"best_metric, {tie}"), ("best_metric IS NULL", tie)):
            clause = " WHERE " + " AND ".join([*where, part])
            if limit is not None and len(out) >= limit:
                break
            if offset:
                skipped = int(tx.scalar(f"SELECT COUNT(*) FROM jobs{clause}", params))
                if skipped <= offset:
                    offset -= skipped
                    continue
            # no limit: -1 on SQLite, NULL (LIMIT ALL) on a server, where a negative one is an error
            page = {**params, "limit": (-1 if tie == "rowid" else None) if limit is None else limit - len(out),
                    "offset": offset}
            out += [job_record(r) for r in tx.all(f"{SELECT_JOB}{clause} ORDER BY {order} LIMIT :limit OFFSET :offset",
                                                  page)]
            offset = 0
        return out

    def dashboard_choices(self, *, limit: int = 500) -> dict[str, list[str]]:
        """The experiments and tags present (at most ``limit`` of each), for the filter menus."""
        with self.db.read() as tx:
            experiments = [str(r[0]) for r in tx.all(
                "SELECT DISTINCT experiment_name FROM jobs ORDER BY experiment_name LIMIT :n", {"n": limit})]
            tags = [str(r[0]) for r in tx.all("SELECT DISTINCT tag FROM job_tags ORDER BY tag LIMIT :n",
                                              {"n": limit})]
        return {"experiments": experiments, "tags": tags}

    def epochs_after(self, job_id: str, seq: int = -1) -> list[dict[str, Any]]:
        """The job's epochs reported after position ``seq`` (``-1``: all), each with its ``seq``, in order."""
        with self.db.read() as tx:
            rows = tx.all("SELECT seq, epoch, train_json, validation_json FROM job_epochs "
                          "WHERE job_id = :id AND seq > :seq ORDER BY seq", {"id": job_id, "seq": seq})
        return [{"seq": s, "epoch": e, "train": jsonutil.loads(t), "validation": jsonutil.loads(v)}
                for s, e, t, v in rows]

    def tags_of(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each given job's tags, sorted (jobs without tags are left out)."""
        if not job_ids:
            return {}
        params: dict[str, Any] = {}
        sql = f"SELECT job_id, tag FROM job_tags WHERE job_id IN {in_list('j', list(job_ids), params)} ORDER BY tag"
        out: dict[str, list[str]] = {}
        with self.db.read() as tx:
            for job_id, tag in tx.all(sql, params):
                out.setdefault(str(job_id), []).append(str(tag))
        return out

    def epoch_counts(self, job_ids: Sequence[str]) -> dict[str, int]:
        """How many epochs each given job has stored (an epoch reported again replaced its row: not ``epoch_seq``,
        which counts reports); jobs without any are left out."""
        if not job_ids:
            return {}
        params: dict[str, Any] = {}
        sql = (f"SELECT job_id, count(*) FROM job_epochs WHERE job_id IN {in_list('j', list(job_ids), params)} "
               "GROUP BY job_id")
        with self.db.read() as tx:
            return {str(job_id): int(n) for job_id, n in tx.all(sql, params)}

    def export_head(self, job_id: str, *, rows: int = 10) -> dict[str, dict[str, Any]]:
        """Each export of the job: ``{kind: {"columns", "rows" (the first ``rows``), "total", "path", "view"}}``."""
        out: dict[str, dict[str, Any]] = {}
        with self.db.read() as tx:
            for kind, path, view, columns in tx.all(
                    "SELECT kind, path, view_name, columns_json FROM job_exports WHERE job_id = :id ORDER BY kind",
                    {"id": job_id}):
                head = tx.all("SELECT data_json FROM export_rows WHERE job_id = :id AND kind = :kind "
                              "ORDER BY seq LIMIT :n", {"id": job_id, "kind": kind, "n": rows})
                total = tx.scalar("SELECT COUNT(*) FROM export_rows WHERE job_id = :id AND kind = :kind",
                                  {"id": job_id, "kind": kind})
                out[str(kind)] = {"columns": jsonutil.loads(columns), "rows": [jsonutil.loads(r[0]) for r in head],
                                  "total": int(total), "path": path, "view": view}
        return out
