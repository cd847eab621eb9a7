"""``jobtrack ui``: the dashboard as a Starlette app over a read-only Store (extra ``ui``) (#16).

Every request needs the access token (``?token=`` once, then a SameSite=Strict cookie, or the
``X-Jobtrack-Token`` header); Cancel is a POST that must carry the token itself (a form field or the
header), so a page of another site cannot forge it with the cookie alone. The only write is Cancel, and
it goes through ``JobManager.cancel_job``. No URL names a file: logs are found by job id, checked to
lie inside the database's files directory, and static files come from a fixed list.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jobtrack import query as q
from jobtrack.config import is_url, resolve_db
from jobtrack.errors import DatabaseNotFound, JobNotFound, JobtrackError, StoreError
from jobtrack.manager import JobManager
from jobtrack.states import JobStatus, JobType
from jobtrack.store import JobRecord, Store
from jobtrack.store.dashboard import SORT_COLUMNS
from jobtrack.ui import data, jobpage, pages, svg

COOKIE = "jobtrack_token"
HEADER = "x-jobtrack-token"
PAGE_SIZE = 50
"""Jobs per page unless ``?per=`` says otherwise (10 to 500)."""
QUERY_COUNT_CAP = 1000
"""A query's matches are counted up to this many; beyond it the page says "more than" and pages by next/previous."""
CHOICES_TTL_S = 5.0
"""How long the filter menus' experiments and tags are reused before they are read again."""
_STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def new_token() -> str:
    """A random access token (as Jupyter prints one)."""
    return secrets.token_urlsafe(24)


class TokenGate:
    """ASGI middleware: 403 for every request without the token; a first ``?token=`` load sets the cookie
    and redirects to the same URL without the token (so it leaves no trace in history or referrers)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        query = request.query_params.get("token")
        if self._ok(query) and request.method == "GET":
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response: Response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
        elif self._ok(request.headers.get(HEADER)) or self._ok(request.cookies.get(COOKIE)) or self._ok(query):
            await self.app(scope, receive, _secure(send))
            return
        else:
            response = PlainTextResponse("403: this dashboard needs its access token; open the URL that "
                                         "`jobtrack ui` printed.", status_code=403)
        await response(scope, receive, _secure(send))


def _secure(send: Send) -> Send:
    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            message["headers"] = [*message.get("headers", []),
                                  *((k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()
                                    if k.encode() not in names)]
        await send(message)
    return wrapped


class Dashboard:
    """The dashboard's view of one database: a read-only Store, reopened when the file is replaced."""

    def __init__(self, db: str | os.PathLike[str] | None, token: str) -> None:
        self.db = resolve_db(db)
        self.token = token
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._identity: tuple[int, int] | None = None
        self._choices: tuple[float, dict[str, list[str]]] | None = None
        self.store()  # a missing or foreign file is an error at start, not at the first page

    def store(self) -> Store:
        """The read-only Store of the file the path names now (a replaced file is opened afresh)."""
        try:
            st = os.stat(self.db)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            if not is_url(self.db):  # deleted under the dashboard: say so, until a new file is there
                raise DatabaseNotFound(self.db, "--db or JOBTRACK_DB") from None  # started from the command line
            identity = None
        except OSError:
            identity = None
        with self._lock:
            if self._store is None or (identity is not None and identity != self._identity):
                old = self._store
                self._store = Store.open(self.db, read_only=True)
                self._identity = identity
                self._choices = None
                if old is not None and old is not self._store:
                    old.close()
            return self._store

    def choices(self, store: Store) -> dict[str, list[str]]:
        now = time.monotonic()
        cached = self._choices
        if cached is None or now - cached[0] > CHOICES_TTL_S:
            cached = self._choices = (now, store.dashboard_choices())
        return cached[1]

    def query_page(self, store: Store, query: str, filters: dict[str, str], sort: str, descending: bool,
                   page: int, per: int) -> QueryPage | str:
        """The search box's query AND the filters, counted (up to ``QUERY_COUNT_CAP``), sorted and cut in SQL;
        or why the query cannot be used (the page then shows the filters alone). One row past the page
        tells whether a next page exists, so paging works past the counted matches too."""
        try:
            node = q.parse(query)
        except JobtrackError as exc:
            return f"Query not used: {exc}"
        where = _and_filters(node, filters)
        keys = [q.SortKey(q.field("", name, 0), descending) for name in _QUERY_SORT[sort]]
        total = store.count_jobs(where, cap=QUERY_COUNT_CAP + 1)
        recs = store.search_jobs(where, sort=keys, limit=per + 1, offset=(page - 1) * per)
        if not recs and total and page > 1:  # past the end (jobs were pruned meanwhile): the last page
            last = store.count_jobs(where) if total > QUERY_COUNT_CAP else total
            page = max(1, -(-last // per))
            recs = store.search_jobs(where, sort=keys, limit=per + 1, offset=(page - 1) * per)
        capped = total > QUERY_COUNT_CAP
        return QueryPage(QUERY_COUNT_CAP if capped else total, capped, recs[:per], page, len(recs) > per)


class QueryPage(NamedTuple):
    """One page of a query: ``total`` matches (a lower bound when ``capped``), its jobs, its number, and
    whether a next page exists."""

    total: int
    capped: bool
    recs: list[JobRecord]
    page: int
    has_next: bool


_QUERY_SORT = {"created": ("created",), "status": ("status", "created"), "type": ("job_type", "created"),
               "experiment": ("experiment", "created"), "best": ("best_metric",), "id": ("id",)}
"""The jobs page's sort columns as the query language's sort keys (with the same tie-breaks)."""
_QUERY_FILTER = {"status": "status", "type": "job_type", "experiment": "experiment", "tag": "tag"}
"""The filter menus as query fields."""


def _and_filters(node: q.Node | None, filters: dict[str, str]) -> q.Node | None:
    """The query AND one ``field = value`` per filter, built as a tree (the values are bound, never parsed)."""
    items = [] if node is None else [node]
    items += [q.Compare(q.field("", _QUERY_FILTER[k], 0), "=", v) for k, v in filters.items()]
    if len(items) < 2:
        return items[0] if items else None
    return q.And(tuple(items))


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(value))) if value else default
    except ValueError:
        return default


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code)


def _filters(request: Request) -> dict[str, str]:
    qp = request.query_params
    out = {}
    status = JobStatus.parse(qp.get("status") or "")
    if status is not None:
        out["status"] = status.value
    job_type = JobType.parse(qp.get("type") or "")
    if job_type is not None:
        out["type"] = job_type.value
    for key in ("experiment", "tag"):
        if qp.get(key):
            out[key] = str(qp.get(key))
    return out


def create_app(db: str | os.PathLike[str] | None = None, *, token: str | None = None) -> Starlette:
    """The dashboard app for database ``db`` guarded by ``token`` (a new random one if None: see ``app.state``).

    Raises:
        DatabaseNotFound, NotAJobtrackDatabase, SchemaTooNew: the database cannot be read.
    """
    board = Dashboard(db, token or new_token())

    def jobs(request: Request) -> Response:
        qp = request.query_params
        store = board.store()
        filters = _filters(request)
        sort = str(qp.get("sort")) if qp.get("sort") in SORT_COLUMNS else "created"
        descending = qp.get("dir") != "asc"
        page, per = _int(qp.get("page"), 1, 1, 10**9), _int(qp.get("per"), PAGE_SIZE, 10, 500)
        query = (qp.get("q") or "").strip()
        found = board.query_page(store, query, filters, sort, descending, page, per) if query else ""
        capped, has_next = False, None
        if isinstance(found, QueryPage):
            total, capped, recs, page, has_next = found
            note = f"Query: {'more than ' if capped else ''}{total} job(s) match it and the filters."
        else:
            note = found
            query_args: dict[str, Any] = {
                "statuses": [JobStatus(filters["status"])] if "status" in filters else None,
                "job_type": filters.get("type"), "experiment": filters.get("experiment"), "tag": filters.get("tag"),
                "sort": sort, "descending": descending, "limit": per}
            total, recs = store.dashboard_page(offset=(page - 1) * per, **query_args)
            if not recs and total and page > 1:  # past the end (jobs were pruned meanwhile): the last page
                page = -(-total // per)
                total, recs = store.dashboard_page(offset=(page - 1) * per, **query_args)
        unknown = [f"{key}={qp.get(key)!r}" for key, kind in (("status", JobStatus), ("type", JobType))
                   if qp.get(key) and kind.parse(str(qp.get(key))) is None]  # a hand-edited or old link
        if unknown:
            note = (f"{note} " if note else "") + (
                f"Unknown filter {' and '.join(unknown)}, not applied; "
                f"statuses are {', '.join(s.value for s in JobStatus)}, types {', '.join(t.value for t in JobType)}.")
        return _html(pages.jobs_page(data.rows(store, recs), total=total, page=page, per=per, filters=filters,
                                     capped=capped, has_next=has_next,
                                     choices=board.choices(store), sort=sort, descending=descending,
                                     query=query, query_note=note, token=board.token))

    def jobs_live(request: Request) -> Response:
        ids = request.query_params.getlist("ids")[:500]
        store = board.store()
        _, recs = store.dashboard_page(ids=ids, limit=None)
        return JSONResponse({"rows": [{"id": r["id"], "terminal": r["terminal"], "cells": pages.job_cells(r)}
                                      for r in data.rows(store, recs)]})

    def job(request: Request) -> Response:
        store = board.store()
        job_id = request.path_params["job_id"]
        try:
            detail = data.job_detail(store, job_id)
        except JobNotFound:
            return _html(pages.error_page("Job not found", f"No job {job_id!r} in {board.db}.", token=board.token),
                         404)
        text, pos = data.read_log(store, job_id)
        charts = svg.job_charts(detail["epochs"], eval_metric=detail["eval_metric"], best_epoch=detail["best_epoch"])
        return _html(jobpage.job_page(detail, charts, token=board.token, log_text=text, log_pos=pos))

    def job_live(request: Request) -> Response:
        store = board.store()
        job_id = request.path_params["job_id"]
        seq = _int(request.query_params.get("seq"), 0, 0, 2**62)
        try:
            rec = store.get_job(job_id)
            events = store.events(job_id)
        except JobNotFound:
            return JSONResponse({"error": "job not found"}, status_code=404)
        status, epochs = data.status_and_epochs(store, rec)
        charts = None
        if rec.epoch_seq != seq:
            seq = rec.epoch_seq
            charts = jobpage.charts_html(svg.job_charts(epochs, eval_metric=rec.eval_metric,
                                                        best_epoch=status["result"].get("best_epoch")))
        log_text, log_pos = data.read_log(store, job_id, _int(request.query_params.get("log"), 0, 0, 2**62))
        return JSONResponse({"status": rec.status.value, "terminal": rec.is_terminal, "seq": seq, "charts": charts,
                             "log": log_text, "log_pos": log_pos, "badge": pages.badge(rec.status.value),
                             "fields": jobpage.status_fields(status), "timeline": jobpage.timeline(events)})

    async def cancel(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        given = request.headers.get(HEADER) or next(iter(parse_qs(body).get("token") or []), None)
        if given is None or not hmac.compare_digest(given.encode(), board.token.encode()):
            return PlainTextResponse("403: Cancel needs the access token in the request itself.", status_code=403)
        job_id = request.path_params["job_id"]
        try:
            status = await run_in_threadpool(lambda: JobManager(board.db).cancel_job(job_id))
        except JobNotFound:
            return PlainTextResponse("404: no such job", status_code=404)
        except JobtrackError as exc:
            return PlainTextResponse(f"409: {exc}", status_code=409)
        if request.headers.get(HEADER):
            return JSONResponse({"job_id": job_id, "status": status.value})
        return RedirectResponse(f"/jobs/{quote(job_id, safe='')}", status_code=303)

    def compare(request: Request) -> Response:
        ids = list(dict.fromkeys(i for i in request.query_params.getlist("ids") if i))[:12]
        if len(ids) < 2:
            note = "Pick at least two jobs." if ids else ""
            return _html(pages.compare_page(None, [], token=board.token, note=note))
        store = board.store()
        try:
            found = data.compare(store, ids)
        except JobNotFound as exc:
            return _html(pages.error_page("Job not found", str(exc), token=board.token), 404)
        charts = svg.overlay_charts([(r.id, found["epochs"][r.id]) for r in found["records"]])
        return _html(pages.compare_page(found, charts, token=board.token))

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("404: not found", status_code=404)
        # shipped with this version (the pages ask for ?v=<version>): a browser may keep them
        return Response(pages.asset(name), media_type=_STATIC[name],
                        headers={"cache-control": "private, max-age=86400"})

    def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("404: not found", status_code=404)

    def unavailable(request: Request, exc: Exception) -> Response:
        """The database cannot be read now (deleted, busy, a server down): say why; pages' scripts retry."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=503)
        return _html(pages.error_page("Database unavailable", str(exc), token=board.token), 503)

    app = Starlette(routes=[
        Route("/", jobs), Route("/jobs/{job_id}", job), Route("/compare", compare),
        Route("/static/{name}", static), Route("/api/jobs/live", jobs_live),
        Route("/api/jobs/{job_id}/live", job_live), Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    ], exception_handlers={404: not_found, StoreError: unavailable})
    app.add_middleware(TokenGate, token=board.token)
    app.state.token = board.token
    app.state.dashboard = board
    return app

