"""HTML of the dashboard's pages and of the report, written with the standard library (#16).

Every piece of user content (names, configs, logs, export cells, tags) passes ``html.escape`` here;
the only markup that reaches a page unescaped is built in this module and in ``svg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from jobtrack import __version__
from jobtrack.states import JobStatus, JobType

STATUS_ICONS = {"QUEUED": "◷", "RUNNING": "▶", "COMPLETED": "✓", "FAILED": "✗", "CANCELED": "⊘"}
"""A shape per status, beside its name: statuses read without colour."""

COLUMNS = (("id", "Job"), ("status", "Status"), ("type", "Type"), ("experiment", "Experiment"),
           ("created", "Created"), ("epochs", "Epochs"), ("best", "Best metric"))
"""The jobs table's columns (all sortable on the dashboard but the epoch count)."""


def asset(name: str) -> str:
    """The text of a static file shipped in ``jobtrack/ui/static`` (package data)."""
    return resources.files("jobtrack.ui").joinpath("static", name).read_text(encoding="utf-8")


def e(value: Any) -> str:
    """Escaped text of any value (None shows as a dash)."""
    return "\u2013" if value is None else escape(str(value))


def num(value: Any) -> str:
    """A metric value, short."""
    if isinstance(value, float):
        return f"{value:.5g}"
    return e(value)


def badge(status: str) -> str:
    """A status as icon and text (``class`` adds colour, which is never the only signal)."""
    s = escape(status)
    return f'<span class="st st-{s.lower()}"><span aria-hidden="true">{STATUS_ICONS.get(status, "?")}</span> {s}</span>'


def when(iso: str | None) -> str:
    """A time: UTC in the page and on hover; the script shows it in the browser's zone."""
    if not iso:
        return "\u2013"
    t = escape(iso)
    return f'<time datetime="{t}" title="UTC: {t}">{t}</time>'


def job_href(job_id: str, prefix: str = "/jobs/") -> str:
    return escape(prefix + quote(job_id, safe=""))


def layout(title: str, body: str, *, active: str = "", token: str | None = None, inline: bool = False,
           data: Mapping[str, Any] | None = None) -> str:
    """A whole page: served pages link the shipped CSS and script; the report (``inline``) carries them."""
    if inline:
        head = (f"<style>{asset('app.css')}</style>"
                '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">")
        script = f"<script>{asset('app.js')}</script>"
    else:
        head = f'<link rel="stylesheet" href="/static/app.css?v={__version__}">'
        script = f'<script src="/static/app.js?v={__version__}" defer></script>'
    meta = f'<meta name="jobtrack-token" content="{escape(token)}">' if token else ""
    attrs = "".join(f' data-{escape(k)}="{e(v)}"' for k, v in (data or {}).items())
    nav = ""
    if not inline:
        links = (("jobs", "/", "Jobs"), ("compare", "/compare", "Compare"))
        nav = "".join(f'<a href="{h}"' + (' aria-current="page"' if k == active else "") + f">{t}</a>"
                      for k, h, t in links)
        nav = f'<nav aria-label="main">{nav}</nav>'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}{head}'
            f'{"" if inline else "<link rel=icon href=data:,>"}'
            f"<title>{escape(title)} · jobtrack</title></head><body{attrs}>"
            f'<header><a class="brand" href="{"#top" if inline else "/"}">jobtrack</a>{nav}</header>'
            f'<main id="top">{body}</main>{script}</body></html>')


# -- the jobs table ---------------------------------------------------------------------------


def job_cells(r: Mapping[str, Any], *, prefix: str = "/jobs/", selectable: bool = True) -> str:
    """The cells of one job's table row (also sent alone to refresh a running job's row)."""
    tags = " ".join(f'<span class="tag">{e(t)}</span>' for t in r["tags"])
    best = num(r["best"]) if r["best"] is not None else "\u2013"
    if r["best"] is not None and r["eval_metric"]:
        at = f" @ {e(r['best_epoch'])}" if r["best_epoch"] is not None else ""
        best = f'{best}<br><span class="muted small">{e(r["eval_metric"])}{at}</span>'
    select = "" if not selectable else (f'<td class="sel"><input type="checkbox" name="ids" value="{e(r["id"])}" '
                                        f'aria-label="select {e(r["id"])}"></td>')
    return (select +
            f'<td class="c-id"><a href="{job_href(r["id"], prefix)}"><code>{e(r["id"])}</code></a></td>'
            f'<td class="c-status">{badge(r["status"])}</td><td class="c-type">{e(r["type"])}</td>'
            f'<td class="c-experiment">{e(r["experiment"])} {tags}</td><td class="c-created">{when(r["created"])}</td>'
            f'<td class="num c-epochs">{e(r["epochs"])}</td>'
            f'<td class="num c-best">{best}</td>')


def jobs_table(rows: Sequence[Mapping[str, Any]], *, sort_link: Any = None, prefix: str = "/jobs/") -> str:
    """The jobs table; ``sort_link(key)`` gives a header's (href, aria-sort) when the table is sortable."""
    selectable = sort_link is not None
    heads = ['<th scope="col"><span class="sr">select</span></th>'] if selectable else []
    for key, label in COLUMNS:
        if sort_link is None or key == "epochs":
            heads.append(f'<th scope="col" class="c-{key}">{label}</th>')
            continue
        href, state = sort_link(key)
        arrow = {"ascending": " ▲", "descending": " ▼"}.get(state, "")
        aria = f' aria-sort="{state}"' if state else ""
        heads.append(f'<th scope="col" class="c-{key}"{aria}><a href="{escape(href)}">{label}{arrow}</a></th>')
    body = "".join(f'<tr data-job="{e(r["id"])}" data-terminal="{int(r["terminal"])}">'
                   f"{job_cells(r, prefix=prefix, selectable=selectable)}</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(heads)}" class="empty">No jobs match.</td></tr>'
    return (f'<div class="scroll"><table class="jobs"><thead><tr>{"".join(heads)}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _select(name: str, label: str, options: Iterable[str], chosen: str | None) -> str:
    opts = "".join(f'<option value="{e(o)}"' + (" selected" if o == chosen else "") + f">{e(o)}</option>"
                   for o in options)
    return (f'<label>{label} <select name="{name}"><option value="">any</option>{opts}</select></label>')


def jobs_page(rows: Sequence[Mapping[str, Any]], *, total: int, page: int, per: int, filters: Mapping[str, Any],
              choices: Mapping[str, list[str]], sort: str, descending: bool, query: str, query_note: str,
              token: str | None, capped: bool = False, has_next: bool | None = None) -> str:
    """The Jobs page: filters and query box, the table (sortable, selectable for Compare), pages.

    ``capped``: ``total`` is a lower bound (counting stopped there), so the pager says "more than" and
    shows no last page; ``has_next`` (when known) says whether a next page exists."""
    keep = {k: v for k, v in {**filters, "q": query}.items() if v}

    def link(**over: Any) -> str:
        params = {**keep, "sort": sort, "dir": "desc" if descending else "asc", "page": page, **over}
        return "/?" + urlencode({k: v for k, v in params.items() if v not in (None, "")}, doseq=False)

    def sort_link(key: str) -> tuple[str, str]:
        state = ("descending" if descending else "ascending") if key == sort else ""
        return link(sort=key, dir="asc" if key == sort and descending else "desc", page=1), state

    form = ('<form class="filters" method="get" action="/" role="search">'
            + _select("status", "Status", [s.value for s in JobStatus], filters.get("status"))
            + _select("type", "Type", [t.value for t in JobType], filters.get("type"))
            + _select("experiment", "Experiment", choices.get("experiments", []), filters.get("experiment"))
            + _select("tag", "Tag", choices.get("tags", []), filters.get("tag"))
            + f'<label class="q">Query <input name="q" value="{e(query) if query else ""}" '
              'placeholder="status = &#39;completed&#39; and best.roc_auc &gt; 0.8" aria-describedby="qnote"></label>'
            + f'<input type="hidden" name="sort" value="{e(sort)}">'
              f'<input type="hidden" name="dir" value="{"desc" if descending else "asc"}">'
            + '<button type="submit">Apply</button> <a href="/">Reset</a></form>'
            + f'<p id="qnote" class="muted">{e(query_note)}</p>')
    pages = max(1, -(-total // per))
    if capped:
        nav = [f"<span>more than {total} job(s) · page {page}</span>"]
    else:
        nav = [f"<span>{total} job(s) · page {page} of {pages}</span>"]
    before, after = ("newer", "older") if sort == "created" and descending else ("previous", "next")  # by time or not
    if page > 1:
        nav.insert(0, f'<a href="{escape(link(page=page - 1))}" rel="prev">← {before}</a>')
    if (page < pages and not capped) if has_next is None else has_next:
        nav.append(f'<a href="{escape(link(page=page + 1))}" rel="next">{after} →</a>')
    table = jobs_table(rows, sort_link=sort_link)
    body = (f"<h1>Jobs</h1>{form}"
            f'<form method="get" action="/compare"><div class="bar">{" ".join(nav)}'
            '<button type="submit">Compare selected</button></div>'
            f'{table}</form><p class="pager">{" ".join(nav)}</p>')
    return layout("Jobs", body, active="jobs", token=token, data={"page": "jobs"})


# -- compare -----------------------------------------------------------------------------------


def diff_table(recs: Sequence[Any], differ: Mapping[str, list[Any]], same: Mapping[str, Any],
               *, prefix: str = "/jobs/") -> str:
    """What differs between jobs (a column per job), then what they share."""
    heads = "".join(f'<th scope="col"><a href="{job_href(r.id, prefix)}"><code>{e(r.id)}</code></a></th>' for r in recs)
    body = "".join(f'<tr><th scope="row">{e(k)}</th>' + "".join(f"<td>{num(v)}</td>" for v in vals) + "</tr>"
                   for k, vals in differ.items())
    if not differ:
        body = f'<tr><td colspan="{len(recs) + 1}">Nothing differs.</td></tr>'
    shared = "".join(f'<tr><th scope="row">{e(k)}</th><td>{num(v)}</td></tr>' for k, v in same.items())
    return (f'<h2>What differs</h2><div class="scroll"><table class="diff"><thead><tr><th scope="col">field</th>'
            f"{heads}</tr></thead><tbody>{body}</tbody></table></div>"
            f'<details><summary>Same in all ({len(same)})</summary><div class="scroll"><table class="diff">'
            f"<tbody>{shared}</tbody></table></div></details>")


def compare_body(data: Mapping[str, Any], charts: Sequence[str], *, prefix: str = "/jobs/",
                 extra: str = "") -> str:
    """The comparison: curves overlaid per metric, and the table of what differs."""
    recs = data["records"]
    names = ", ".join(f'<a href="{job_href(r.id, prefix)}"><code>{e(r.id)}</code></a> {badge(r.status.value)}'
                      for r in recs)
    grid = "".join(f'<figure class="card">{c}</figure>' for c in charts) or '<p class="muted">No metrics.</p>'
    return (f'<p>{names}</p><h2>Curves</h2><div class="charts">{grid}</div>'
            + diff_table(recs, data["differ"], data["same"], prefix=prefix) + extra)


def compare_page(data: Mapping[str, Any] | None, charts: Sequence[str], *, token: str | None, note: str = "",
                 extra: str = "") -> str:
    """The Compare page (or how to use it, without two jobs)."""
    if data is None:
        body = (f"<h1>Compare</h1><p>{e(note) if note else ''}</p><p>Select two or more jobs on the "
                '<a href="/">Jobs</a> page and press <em>Compare selected</em>, or open '
                "<code>/compare?ids=JOB&amp;ids=JOB</code>.</p>")
    else:
        body = "<h1>Compare</h1>" + compare_body(data, charts, extra=extra)
    return layout("Compare", body, active="compare", token=token, data={"page": "compare"})


def error_page(title: str, message: str, *, token: str | None = None) -> str:
    """A short page saying what went wrong (escaped)."""
    return layout(title, f'<h1>{e(title)}</h1><p role="alert">{e(message)}</p><p><a href="/">Back to jobs</a></p>',
                  token=token)


def generic(value: Any) -> str:
    """Any JSON-like value as nested tables/text, escaped (for optional API results such as ``compare``)."""
    if isinstance(value, Mapping):
        return ('<table class="kv"><tbody>' + "".join(f'<tr><th scope="row">{e(k)}</th><td>{generic(v)}</td></tr>'
                                                      for k, v in value.items()) + "</tbody></table>")
    if isinstance(value, (list, tuple)):
        return "<ul>" + "".join(f"<li>{generic(v)}</li>" for v in value) + "</ul>"
    return num(value)
