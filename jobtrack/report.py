"""``jobtrack report``: one self-contained HTML file of jobs, their curves and their comparison (#16).

Standard library only (no ``ui`` extra): styles, the small time-zone script and the SVG charts are
inline, and a Content-Security-Policy in the file forbids every request, so it opens from disk on a
machine with no network and shows the same thing anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

from jobtrack.errors import InvalidArgument
from jobtrack.files import check_output
from jobtrack.store import Store
from jobtrack.timeutil import to_iso, utcnow
from jobtrack.ui import data, jobpage, pages, svg

DEFAULT_REPORT_JOBS = 200
"""Jobs a report holds when none are named and no query is given: the newest ones."""

COMPARE_MAX_JOBS = 10
"""Jobs overlaid in the report's comparison (the first ones of the table); more make unreadable charts."""


@dataclass(frozen=True)
class ReportInfo:
    """What ``write_report`` wrote: the file, its size in bytes, and the jobs in it."""

    path: str
    bytes: int
    job_ids: list[str]
    total: int = -1
    """Jobs the selection found (more than ``len(job_ids)`` when ``limit`` left the older ones out)."""


def select_jobs(db: str | os.PathLike[str] | None, job_ids: Sequence[str] = (), *, where: str | None = None,
                limit: int = DEFAULT_REPORT_JOBS) -> list[str]:
    """The ids a report covers: the named jobs (ids or unique prefixes), else the newest ``limit`` of the query's
    matches, else the newest ``limit`` jobs.

    Raises:
        JobNotFound, AmbiguousJobId: a named job does not exist or is ambiguous.
        InvalidArgument: both jobs and a query; a query in a version without the query language.
        InvalidQuery: a query that cannot be read.
    """
    return _select(db, job_ids, where, limit)[0]


def _select(db: str | os.PathLike[str] | None, job_ids: Sequence[str], where: str | None,
            limit: int) -> tuple[list[str], int]:
    """``select_jobs`` and how many jobs there were to choose from (the newest ``limit`` of them are taken)."""
    from jobtrack.manager import JobManager

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(f"limit must be a positive integer, not {limit!r}.")
    if job_ids and where:
        raise InvalidArgument("Name jobs or give --where, not both.")
    if job_ids:
        ids = list(dict.fromkeys(JobManager(db).resolve_job_id(j) for j in job_ids))
        return ids, len(ids)
    store = Store.open(db, read_only=True)
    if where:  # the newest ``limit`` matches, as without a query: a report of every match could be any size
        return store.search_ids(where, limit=limit), store.count_jobs(where)
    total, records = store.dashboard_page(limit=limit)
    return [r.id for r in records], total


def _anchor(job_id: str) -> str:
    return "job-" + quote(job_id, safe="")


def build_report(store: Store, job_ids: Sequence[str], *, title: str = "jobtrack report",
                 total: int | None = None) -> str:
    """The report's HTML: the job table, the comparison of the first jobs, then each job with its curves.

    ``total``: how many jobs the selection found, when the report holds only the newest of them (it says so).

    Raises:
        JobNotFound: a job does not exist.
    """
    details = [data.job_detail(store, j) for j in job_ids]
    recs = [d["record"] for d in details]
    table_rows = data.rows(store, recs)
    count = (f"The newest {len(recs)} of {total} jobs" if total is not None and total > len(recs)
             else f"{len(recs)} job(s)")
    parts = [f"<h1>{escape(title)}</h1>",
             f'<p class="muted">{count} from <code>{pages.e(store.target)}</code>, written '
             f"{pages.when(to_iso(utcnow()))}.</p>",
             "<h2>Jobs</h2>", pages.jobs_table(table_rows, prefix="#job-")]
    shown = details[:COMPARE_MAX_JOBS]
    if len(shown) >= 2:
        found = data.compare(store, [d["record"].id for d in shown])
        charts = svg.overlay_charts([(r.id, found["epochs"][r.id]) for r in found["records"]])
        more = (f'<p class="muted">The first {COMPARE_MAX_JOBS} of {len(details)} jobs are compared.</p>'
                if len(details) > COMPARE_MAX_JOBS else "")
        parts.append(f'<section id="compare"><h2>Comparison</h2>{more}'
                     f'{pages.compare_body(found, charts, prefix="#job-")}</section>')
    for d in details:
        charts = svg.job_charts(d["epochs"], eval_metric=d["eval_metric"], best_epoch=d["best_epoch"])
        parts.append(f'<section class="report-job">'
                     f'{jobpage.job_body(d, charts, heading="h2", anchor=_anchor(d["record"].id))}</section>')
    # the job table's links point at "#job-<quoted id>": the same text as the anchors
    return pages.layout(title, "".join(parts), inline=True, data={"page": "report"})


def write_report(out: str | os.PathLike[str], db: str | os.PathLike[str] | None = None,
                 job_ids: Sequence[str] = (), *, where: str | None = None, title: str = "jobtrack report",
                 limit: int = DEFAULT_REPORT_JOBS) -> ReportInfo:
    """Write the report of ``db``'s jobs (see ``select_jobs``: the newest ``limit`` when none are named and no
    query is given) to ``out``; reads the database only.

    Raises:
        DatabaseNotFound: no database at the path.
        JobNotFound, InvalidArgument, InvalidQuery: see ``select_jobs``.
        InvalidArgument: ``out`` cannot be written, or is a database, a folder or in a missing folder.
    """
    ids, total = _select(db, job_ids, where, limit)
    store = Store.open(db, read_only=True)
    path = Path(check_output(out, "report", store.db.path))
    text = build_report(store, ids, title=title, total=total)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # private, as every file
        with open(fd, "w", encoding="utf-8") as fh:  # jobtrack creates: it holds configs and paths
            fh.write(text)
    except OSError as exc:
        raise InvalidArgument(f"Cannot write the report to {str(path)!r} ({exc.strerror}); "
                              "choose another -o path.") from exc
    return ReportInfo(str(path.resolve()), len(text.encode("utf-8")), ids, total)
