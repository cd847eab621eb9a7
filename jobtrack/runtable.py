"""Runs as a table (#15): plain rows for analysis, a pandas DataFrame, and a job list Jupyter shows as HTML.

A row holds the job's fixed fields, its config flattened as ``config.<key>`` and its metrics at the best
epoch as ``best.<name>``; every row of one table has the same keys (None where a job has no value).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobtrack.errors import MissingExtra
from jobtrack.timeutil import from_iso, utcnow

if TYPE_CHECKING:
    from jobtrack.monitor import JobMonitor
    from jobtrack.store import JobRecord, Store

FIXED_KEYS = ("id", "status", "job_type", "experiment", "created", "started", "finished", "duration",
              "eval_metric", "best_metric", "model_run_id", "sweep", "tags")
"""The keys every row has, in order; ``config.*`` and ``best.*`` keys follow, sorted."""


def param_value(kind: str, num: float | None, text: str | None) -> Any:
    """A stored config value back as Python: numbers (integral ones as int), bools, strings, None."""
    if kind == "bool":
        return bool(num)
    if kind == "number" and num is not None:
        return int(num) if num.is_integer() and abs(num) < 2**53 else num
    if kind == "null":
        return None
    return text


def rows(store: Store, records: Sequence[JobRecord], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One plain dict per job, in the records' order (see the module docstring).

    ``columns`` (names of ``--columns``) reads only what they need: the fixed keys are always there.
    """
    parts: tuple[str, ...] = ("params", "metrics", "tags", "started", "sweep")
    if columns is not None:
        wanted = {c.split(".")[0] for c in columns}
        parts = ("started", *(p for p, key in (("params", "config"), ("metrics", "best"), ("metrics", "last"),
                                                 ("tags", "tags"), ("sweep", "sweep")) if key in wanted))
    extras = store.job_extras([r.id for r in records], tuple(dict.fromkeys(parts)))
    lasts = columns is not None and any(c.startswith("last.") for c in columns)
    out: list[dict[str, Any]] = []
    config_keys: set[str] = set()
    metric_keys: set[str] = set()
    now = utcnow()
    for r in records:
        e = extras[r.id]
        started = from_iso(e["started"]) if e["started"] else None
        finished = r.finished_at
        end = r.run_end(now)  # a copy's as exported; a running job's so far
        row: dict[str, Any] = {
            "id": r.id, "status": r.status.value, "job_type": r.job_type.value, "experiment": r.experiment_name,
            "created": r.created_at, "started": started, "finished": finished,
            # never below 0, as jobtrack list and compare show it: a clock stepped back mid-run ends it "earlier"
            "duration": max(0.0, (end - started).total_seconds()) if started and end else None,
            "eval_metric": r.eval_metric, "best_metric": r.best_metric, "model_run_id": r.model_run_id,
            "sweep": e["sweep"], "tags": list(e["tags"]),
        }
        for key, kind, num, text in e["params"]:
            row[f"config.{key}"] = param_value(kind, num, text)
        for name, (best, last) in e["metrics"].items():
            row[f"best.{name}"] = best
            if lasts:  # only when a column asks: the last reported value of each metric
                row[f"last.{name}"] = last
        config_keys.update(k for k in row if k.startswith("config."))
        metric_keys.update(k for k in row if k.startswith(("best.", "last.")))
        out.append(row)
    keys = [*FIXED_KEYS, *sorted(config_keys), *sorted(metric_keys)]
    return [{k: row.get(k) for k in keys} for row in out]


def frame(table: list[dict[str, Any]]) -> Any:
    """The rows as a pandas DataFrame (columns in the rows' order).

    Raises:
        MissingExtra: pandas is not installed (``pip install 'jobtrack[pandas]'``).
    """
    try:
        import pandas as pd
    except ImportError:
        raise MissingExtra("pandas", "pandas", "JobManager.frame()") from None
    columns = list(table[0]) if table else list(FIXED_KEYS)
    return pd.DataFrame(table, columns=columns)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def html_table(header: Sequence[str], body: Iterable[Sequence[Any]], *, note: str | None = None) -> str:
    """An HTML table of escaped cells (Jupyter's ``_repr_html_``), with an optional note under it."""
    import html  # not on `jobtrack status`'s path (#14)

    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(_cell(v))}</td>" for v in r)
                    + "</tr>" for r in body)
    foot = f"<p>{html.escape(note)}</p>" if note else ""
    return f"<table class='jobtrack-jobs'><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>{foot}"


class JobList(list["JobMonitor"]):
    """What ``JobManager.list_jobs()`` returns: a plain list of monitors that Jupyter shows as an HTML table.

    ``has_more`` says whether ``limit`` cut the listing short; ``next_offset`` is the ``offset=`` of the
    next page (None when there is none).
    """

    def __init__(self, store: Store, records: Sequence[JobRecord], *, has_more: bool = False,
                 offset: int = 0) -> None:
        from jobtrack.monitor import JobMonitor

        super().__init__(JobMonitor.from_record(store, r) for r in records)
        self._store, self._records = store, list(records)
        self.has_more = has_more
        self.next_offset: int | None = offset + len(self) if has_more else None

    def table(self, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """These jobs as ``JobManager.table()`` rows, in this list's order (``rows``: ``columns`` reads less)."""
        return rows(self._store, self._records, columns)

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self) -> str:
        """These jobs as an HTML table, every value escaped (what Jupyter shows), with a note if more match."""
        header = ("job_id", "status", "job_type", "experiment", "created", "eval_metric", "best_metric")
        body = [(r.id, r.status.value, r.job_type.value, r.experiment_name, r.created_at, r.eval_metric,
                 r.best_metric) for r in self._records]
        note = None
        if self.has_more:
            note = (f"{len(self)} jobs shown; more match: list_jobs(..., offset={self.next_offset}) gives the "
                    "next page, limit=None all of them.")
        elif not self:
            note = "No jobs match."
        return html_table(header, body, note=note)
