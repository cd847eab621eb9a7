"""HTML of one job: its status fields, history, charts, config, tags, provenance, exports and log (#16)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from jobtrack.ui.data import flat, json_text
from jobtrack.ui.pages import badge, e, layout, num, when

_TIME_FIELDS = ("started_at", "finished_at", "updated_at")


def status_fields(status: Mapping[str, Any]) -> str:
    """The eleven ``get_status()`` fields as a definition list (``result`` without its epochs list)."""
    items = []
    for key, value in status.items():
        if key in _TIME_FIELDS:
            shown = when(value)
        elif key == "status":
            shown = badge(value)
        elif isinstance(value, dict):
            shown = f"<pre>{e(json_text(value))}</pre>" if value else "{}"
        else:
            shown = f"<code>{e(value)}</code>" if key in ("job_id", "model_run_id") and value else e(value)
        items.append(f'<div class="{"wide" if isinstance(value, dict) and value else ""}"><dt>{e(key)}</dt>'
                     f"<dd>{shown}</dd></div>")
    return f'<dl class="fields" id="fields">{"".join(items)}</dl>'


def timeline(events: Sequence[Any]) -> str:
    """The status history, oldest first."""
    items = "".join(
        f"<li>{when(ev.at.isoformat())} {badge(ev.from_status.value) if ev.from_status else '<em>new</em>'}"
        f' <span aria-label="to">→</span> {badge(ev.to_status.value)}'
        + (f' <span class="muted">{e(ev.reason)}</span>' if ev.reason else "") + "</li>"
        for ev in events)
    return f'<ol class="timeline" id="timeline">{items}</ol>'


def kv_table(mapping: Mapping[str, Any]) -> str:
    """A flat key/value table (nested keys dotted)."""
    if not mapping:
        return '<p class="muted">none</p>'
    rows = "".join(f'<tr><th scope="row">{e(k)}</th><td>{num(v) if isinstance(v, float) else e(json_text(v))}</td></tr>'
                   for k, v in flat(dict(mapping)).items())  # as JSON: "4" and 4, true and "True" differ
    return f'<div class="scroll"><table class="kv"><tbody>{rows}</tbody></table></div>'


def exports_section(exports: Mapping[str, Mapping[str, Any]]) -> str:
    """Each export: where it is, its SQL view, and its first rows."""
    if not exports:
        return ""
    parts = ["<h2>Exports</h2>"]
    for kind, ex in exports.items():
        heads = "".join(f'<th scope="col">{e(c)}</th>' for c in ex["columns"])
        body = "".join("<tr>" + "".join(f"<td>{num(v) if not isinstance(v, list) else e(v)}</td>" for v in row)
                       + "</tr>" for row in ex["rows"])
        parts.append(f"<h3>{e(kind)}</h3><p>{e(ex['total'])} row(s) · file <code>{e(ex['path'])}</code> · view "
                     f"<code>{e(ex['view'])}</code> · first {len(ex['rows'])}:</p>"
                     f'<div class="scroll"><table class="export"><thead><tr>{heads}</tr></thead>'
                     f"<tbody>{body}</tbody></table></div>")
    return "".join(parts)


def charts_html(charts: Sequence[str]) -> str:
    """The grid of a job's charts."""
    return "".join(f'<figure class="card">{c}</figure>' for c in charts) or \
        '<p class="muted">No epochs reported yet.</p>'


def cancel_form(job_id: str, status: str, token: str | None) -> str:
    """A POST form with the token (never a link: another site cannot forge it) for QUEUED/RUNNING jobs."""
    if token is None or status not in ("QUEUED", "RUNNING"):
        return ""
    action = escape("/api/jobs/" + quote(job_id, safe="") + "/cancel")
    return (f'<form method="post" action="{action}" class="cancel" '
            'id="cancel-form"><input type="hidden" name="token" '
            f'value="{escape(token)}"><button type="submit" class="danger">Cancel job</button></form>')


def error_section(error: Any, sub: str) -> str:
    """A failed job's error as people read it: its type and message, and the traceback as lines (not JSON)."""
    if not isinstance(error, Mapping):
        return ""
    head = f"{error.get('type') or 'Error'}: {error.get('message') or ''}"
    trace = error.get("traceback")
    return (f'<section class="error"><{sub}>Error</{sub}><p><strong>{e(head)}</strong></p>'
            + (f'<pre class="traceback">{e(trace)}</pre>' if trace else "") + "</section>")


def job_body(detail: Mapping[str, Any], charts: Sequence[str], *, token: str | None = None,
             log_text: str | None = None, heading: str = "h1", anchor: str = "") -> str:
    """A job's sections; the dashboard adds the log and the Cancel button, the report leaves them out."""
    rec = detail["record"]
    status = detail["status"]["status"]
    tags = " ".join(f'<span class="tag">{e(t)}</span>' for t in detail["tags"])
    sub = "h2" if heading == "h1" else "h3"
    parts = [f'<{heading} id="{escape(anchor)}">Job <code>{e(rec.id)}</code> '
             f'<span id="status-badge">{badge(status)}</span></{heading}>',
             f'<p class="muted">{e(rec.experiment_name)} · {e(rec.job_type.value)} {tags}</p>',
             cancel_form(rec.id, status, token),
             error_section(detail["status"]["result"].get("error"), sub),
             f'<{sub}>Curves</{sub}><div class="charts" id="charts">{charts_html(charts)}</div>',
             f'<div class="cols"><section><{sub}>Status</{sub}>{status_fields(detail["status"])}</section>',
             f'<section><{sub}>History</{sub}>{timeline(detail["events"])}',
             f'<{sub}>Config</{sub}>{kv_table(detail["config"])}']
    if detail.get("dataset"):
        parts.append(f'<details><summary>Dataset</summary><pre>{e(json_text(detail["dataset"]))}</pre></details>')
    if detail.get("provenance"):
        parts.append(f'<details><summary>Provenance</summary><pre>{e(json_text(detail["provenance"]))}</pre>'
                     "</details>")
    parts.append("</section></div>")
    parts.append(exports_section(detail["exports"]))
    if log_text is not None:
        parts.append(f'<{sub}>Log</{sub}><p class="muted" id="log-note">'
                     f'{"Following the log while the job runs." if not detail["terminal"] else "The job has ended."}'
                     f'</p><pre class="log" id="log" tabindex="0" aria-label="job log">{e(log_text)}</pre>')
    return "".join(parts)


def job_page(detail: Mapping[str, Any], charts: Sequence[str], *, token: str | None, log_text: str,
             log_pos: int) -> str:
    """The Job page, with what its script needs to follow the job live."""
    rec = detail["record"]
    data = {"page": "job", "job": rec.id, "seq": detail["seq"], "log": log_pos,
            "terminal": int(detail["terminal"])}
    return layout(f"Job {rec.id}", job_body(detail, charts, token=token, log_text=log_text), token=token, data=data)
