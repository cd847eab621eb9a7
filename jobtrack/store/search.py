"""Finding jobs with the query language (#15): the AST of ``jobtrack.query`` compiled to SQL, and its reads.

Every value of a query is a bound parameter; the SQL text holds only the fixed column expressions
below. Conditions on config values, tags and metrics are correlated ``EXISTS`` subqueries served by
the indexes ``job_params(key, num_value)``, ``job_params(key, text_value)``, ``job_tags(tag, job_id)``
and ``job_metrics(name, best_value)``. Each predicate is two-valued (a missing value makes it false,
never NULL), so ``not`` means what it says; see the module docstring of ``jobtrack.query``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from jobtrack.errors import InvalidArgument, InvalidQuery
from jobtrack.states import JobStatus
from jobtrack.store.base import in_list
from jobtrack.store.jobs import JobsMixin
from jobtrack.store.records import SELECT_JOB, JobRecord, job_record
from jobtrack.timeutil import to_iso, utcnow

if TYPE_CHECKING:
    from jobtrack import query as q

DEFAULT_LIMIT = 100
"""Jobs a listing returns unless told otherwise (``limit=None`` for all of them, ``offset=`` for the next page)."""

_STARTED = ("(SELECT MIN(e.at) FROM job_events e WHERE e.job_id = jobs.id AND e.to_status = 'RUNNING')")
_CHUNK = 500  # ids per IN list when reading a table's extra rows
EXTRAS = ("params", "metrics", "tags", "started", "sweep")
"""What ``job_extras`` can read for each job."""


def _load_query() -> None:
    """Import the query language into this module's ``q`` when a query or a sort is given: a plain listing
    (``jobtrack list``, ``list_jobs(status=...)``) never loads it (#14)."""
    global q  # bound once, to the module itself
    if "q" not in globals():
        from jobtrack import query as q


class _Compiler:
    """SQL text and parameters of one query on one dialect (``_load_query`` has run when it meets a node)."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"q{len(self.params)}"
        self.params[name] = to_iso(value) if isinstance(value, datetime) else value
        return ":" + name

    # -- the tree --------------------------------------------------------------------------------------------

    def node(self, n: q.Node) -> str:
        if isinstance(n, q.And):
            return "(" + " AND ".join(self.node(i) for i in n.items) + ")"
        if isinstance(n, q.Or):
            return "(" + " OR ".join(self.node(i) for i in n.items) + ")"
        if isinstance(n, q.Not):
            return f"(NOT {self.node(n.item)})"
        f = n.field
        if f.type == "tag":
            return self.tag(n)
        if f.kind in ("best", "last"):
            return self.metric(n, "best_value" if f.kind == "best" else "last_value")
        if f.kind == "config":
            return self.config(n)
        if f.kind == "summary":
            return self.summary(n)
        return self.column(n)

    def glob(self, expr: str, pattern: str) -> str:
        """``expr`` matches the glob: GLOB on SQLite, LIKE with escapes elsewhere (both case-sensitive)."""
        from jobtrack.querylex import glob_parts

        parts = glob_parts(pattern)
        if self.sqlite:
            text = "".join(t if wild else "".join(f"[{c}]" if c in "*?[" else c for c in t) for wild, t in parts)
            return f"{expr} GLOB {self.bind(text)}"
        text = "".join({"*": "%", "?": "_"}[t] if wild else
                       "".join("\\" + c if c in "\\%_" else c for c in t) for wild, t in parts)
        return f"{expr} LIKE {self.bind(text)} ESCAPE '\\'"

    def text_op(self, op: str) -> str:
        """Ordering of text by code point on every backend (a server's collation may differ from SQLite's)."""
        return f' COLLATE "C" {op}' if op in ("<", "<=", ">", ">=") and not self.sqlite else f" {op}"

    # -- fixed fields ----------------------------------------------------------------------------------------

    def column_expr(self, f: q.Field) -> tuple[str, bool]:
        """(SQL expression, whether it is computed) of a fixed field."""
        plain = {"id": "jobs.id", "status": "jobs.status", "job_type": "jobs.job_type",
                 "experiment": "jobs.experiment_name", "eval_metric": "jobs.eval_metric",
                 "created": "jobs.created_at", "finished": "jobs.finished_at", "best_metric": "jobs.best_metric"}
        if f.key in plain:
            return plain[f.key], False
        if f.key == "sweep":
            return "(SELECT s.name FROM sweeps s WHERE s.id = jobs.sweep_id)", True
        if f.key == "duration":
            return self.duration_expr(), True
        part = f.key.split(".")[1]  # git.commit, git.branch, git.dirty
        if self.sqlite:
            return f"json_extract(jobs.provenance_json, '$.git.{part}')", True
        return f"(CAST(jobs.provenance_json AS jsonb) #>> '{{git,{part}}}')", True

    def duration_expr(self) -> str:
        """Seconds from the claim (first RUNNING event) to the end, or now while RUNNING; NULL before; never < 0."""
        end = f"COALESCE(jobs.finished_at, CASE WHEN jobs.status = 'RUNNING' THEN {self.bind(utcnow())} END)"
        if self.sqlite:
            return f"max(0.0, (julianday({end}) - julianday({_STARTED})) * 86400.0)"  # NULL stays NULL
        seconds = f"EXTRACT(EPOCH FROM CAST({end} AS timestamptz) - CAST({_STARTED} AS timestamptz))"
        return f"CAST(CASE WHEN {seconds} < 0 THEN 0 ELSE {seconds} END AS double precision)"

    def column_value(self, f: q.Field, value: Any) -> Any:
        if f.type == "bool" and not self.sqlite:
            return "true" if value else "false"  # the text of a JSON boolean
        return int(value) if isinstance(value, bool) else value

    def column(self, n: q.Node) -> str:
        f = n.field  # type: ignore[union-attr]
        expr, computed = self.column_expr(f)
        nullable = computed or f.key in ("eval_metric", "finished", "best_metric")
        if isinstance(n, q.IsNull):
            return f"({expr} IS {'NOT ' if n.negated else ''}NULL)"
        if isinstance(n, q.Compare):
            op = "<>" if n.op == "!=" else n.op
            cond = f"{expr}{self.text_op(op) if isinstance(n.value, str) else ' ' + op} " \
                   f"{self.bind(self.column_value(f, n.value))}"
        elif isinstance(n, q.In):
            cond = f"{expr} {'NOT ' if n.negated else ''}IN {self.in_values(n.values)}"
        else:
            assert isinstance(n, q.Like)
            cond = self.glob(expr, n.pattern)
            if n.negated:
                cond = f"NOT ({cond})"
        if not nullable:
            return f"({cond})"
        if computed:
            return f"COALESCE({cond}, FALSE)"
        return f"({expr} IS NOT NULL AND {cond})"

    def in_values(self, values: Sequence[Any]) -> str:
        return "(" + ", ".join(self.bind(v) for v in values) + ")"

    # -- tags and metrics ------------------------------------------------------------------------------------

    def tag(self, n: q.Node) -> str:
        sub = "SELECT 1 FROM job_tags t WHERE t.job_id = jobs.id"
        if isinstance(n, q.IsNull):
            return f"({'' if n.negated else 'NOT '}EXISTS ({sub}))"
        if isinstance(n, q.Compare):
            negated, cond = n.op == "!=", f"t.tag = {self.bind(n.value)}"
        elif isinstance(n, q.In):
            negated, cond = n.negated, f"t.tag IN {self.in_values(n.values)}"
        else:
            assert isinstance(n, q.Like)
            negated, cond = n.negated, self.glob("t.tag", n.pattern)
        return f"({'NOT ' if negated else ''}EXISTS ({sub} AND {cond}))"

    def metric(self, n: q.Node, column: str) -> str:
        f = n.field  # type: ignore[union-attr]
        sub = f"SELECT 1 FROM job_metrics m WHERE m.job_id = jobs.id AND m.name = {self.bind(f.key)}"
        if isinstance(n, q.IsNull):
            return f"({'' if n.negated else 'NOT '}EXISTS ({sub} AND m.{column} IS NOT NULL))"
        if isinstance(n, q.Compare):
            cond = f"m.{column} {'<>' if n.op == '!=' else n.op} {self.bind(n.value)}"
        else:
            assert isinstance(n, q.In)
            cond = f"m.{column} {'NOT ' if n.negated else ''}IN {self.in_values(n.values)}"
        return f"(EXISTS ({sub} AND {cond}))"

    # -- config and summary values: numbers, strings, booleans ------------------------------------------------

    def config(self, n: q.Node) -> str:
        f = n.field  # type: ignore[union-attr]
        sub = f"SELECT 1 FROM job_params p WHERE p.job_id = jobs.id AND p.key = {self.bind(f.key)}"
        typed = _Typed(num_test="p.kind = 'number'", num="p.num_value", text_test="p.text_value IS NOT NULL",
                       text="p.text_value", bool_test="p.kind = 'bool'", boolean="p.num_value",
                       present="p.kind <> 'null'")
        if isinstance(n, q.IsNull):
            return f"({'' if n.negated else 'NOT '}EXISTS ({sub} AND {typed.present}))"
        if isinstance(n, q.Compare) and n.op in ("=", "!=") and _as_param_text(n.value) != n.value:
            n = q.In(n.field, (n.value, _as_param_text(n.value)), negated=n.op == "!=")  # either spelling
        elif isinstance(n, q.In):
            n = dataclasses.replace(n, values=tuple(dict.fromkeys([*n.values, *map(_as_param_text, n.values)])))
        return f"(EXISTS ({sub} AND {self.typed(n, typed)}))"

    def summary(self, n: q.Node) -> str:
        f = n.field  # type: ignore[union-attr]
        keys = ["summary", *f.key.split(".")]
        if self.sqlite:
            path = self.bind("$" + "".join(f'."{k}"' for k in keys))
            kind, value = f"json_type(jobs.result_json, {path})", f"json_extract(jobs.result_json, {path})"
            typed = _Typed(num_test=f"{kind} IN ('integer', 'real')", num=value, text_test=f"{kind} = 'text'",
                           text=value, bool_test=f"{kind} IN ('true', 'false')", boolean=value,
                           present=f"({kind} IS NOT NULL AND {kind} <> 'null')")
        else:
            elem = "CAST(jobs.result_json AS jsonb)" + "".join(f" -> CAST({self.bind(k)} AS text)" for k in keys)
            kind, value = f"jsonb_typeof({elem})", f"({elem} #>> '{{}}')"
            typed = _Typed(num_test=f"{kind} = 'number'",
                           num=f"(CASE WHEN {kind} = 'number' THEN CAST({value} AS double precision) END)",
                           text_test=f"{kind} = 'string'", text=value, bool_test=f"{kind} = 'boolean'",
                           boolean=f"(CASE WHEN {value} = 'true' THEN 1 ELSE 0 END)",
                           present=f"({kind} IS NOT NULL AND {kind} <> 'null')")
        if isinstance(n, q.IsNull):
            return f"({'' if n.negated else 'NOT '}{typed.present})"
        # false, never NULL, where a job has no such key (or no result yet): `not summary.x = 1` then lists it
        return f"COALESCE({self.typed(n, typed)}, {'0' if self.sqlite else 'FALSE'})"

    def typed(self, n: q.Node, t: _Typed) -> str:
        """The condition of a comparison, list or pattern on a value that may be a number, a string or a bool."""
        if isinstance(n, q.Like):
            cond = f"({t.text_test} AND {self.glob(t.text, n.pattern)})"
            return f"({t.present} AND NOT {cond})" if n.negated else cond
        if isinstance(n, q.In):
            groups = []
            nums = [v for v in n.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            texts = [v for v in n.values if isinstance(v, str)]
            bools = [int(v) for v in n.values if isinstance(v, bool)]
            for test, expr, vals in ((t.num_test, t.num, nums), (t.text_test, t.text, texts),
                                     (t.bool_test, t.boolean, bools)):
                if vals:
                    groups.append(f"({test} AND {expr} IN {self.in_values(vals)})")
            cond = "(" + " OR ".join(groups) + ")"
            return f"({t.present} AND NOT {cond})" if n.negated else cond
        assert isinstance(n, q.Compare)
        value = n.value
        if isinstance(value, bool):
            test, expr, value = t.bool_test, t.boolean, int(value)
        elif isinstance(value, str):
            test, expr = t.text_test, t.text
        else:
            test, expr = t.num_test, t.num
        if n.op == "!=":
            return f"({t.present} AND NOT ({test} AND {expr} = {self.bind(value)}))"
        op = self.text_op(n.op) if isinstance(value, str) else " " + n.op
        return f"({test} AND {expr}{op} {self.bind(value)})"

    # -- sorting ---------------------------------------------------------------------------------------------

    def order_by(self, keys: Sequence[q.SortKey]) -> str:
        terms: list[str] = []
        for key in keys:
            direction = " DESC" if key.descending else " ASC"
            for expr in self.sort_exprs(key.field):
                terms.append(f"{expr}{direction} NULLS LAST")
        names = [k.field.name for k in keys]
        if "created" not in names:
            terms.append("jobs.created_at DESC")
        if "id" not in names:
            terms.append("jobs.id DESC")
        return ", ".join(terms)

    def sort_exprs(self, f: q.Field) -> list[str]:
        collate = "" if self.sqlite else ' COLLATE "C"'
        if f.kind in ("best", "last"):
            column = "best_value" if f.kind == "best" else "last_value"
            return [f"(SELECT m.{column} FROM job_metrics m WHERE m.job_id = jobs.id AND m.name = {self.bind(f.key)})"]
        if f.kind == "config":
            sub = f"FROM job_params p WHERE p.job_id = jobs.id AND p.key = {self.bind(f.key)}"
            return [f"(SELECT p.num_value {sub})", f"(SELECT p.text_value {sub}){collate}"]
        expr, _ = self.column_expr(f)
        numeric = f.type in ("number", "time", "bool")
        return [expr if numeric else expr + collate]


def _as_param_text(value: Any) -> Any:
    """A list written in a query (``'[64, 32]'``, as ``jobtrack show`` prints it) as a config row stores a list
    (compact JSON, ``'[64,32]'``); any other value as it is. Queries match either spelling: a string setting
    that looks like a list (``"[64, 32]"``) is stored as written."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, (list, dict)):
            return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return value


class _Typed:
    """SQL for a value that holds a number, a string or a bool: the tests of each kind and its expressions."""

    __slots__ = ("bool_test", "boolean", "num", "num_test", "present", "text", "text_test")

    def __init__(self, *, num_test: str, num: str, text_test: str, text: str, bool_test: str, boolean: str,
                 present: str) -> None:
        self.num_test, self.num, self.text_test, self.text = num_test, num, text_test, text
        self.bool_test, self.boolean, self.present = bool_test, boolean, present


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


Where: TypeAlias = "str | q.Node | None"
"""A query: its text, an already parsed AST, or None for every job."""


def _as_node(where: Where) -> q.Node | None:
    """The parsed query: text is parsed, a parsed one kept; anything else is an InvalidQuery naming its type."""
    if where is None or isinstance(where, typing.get_args(q.Node)):
        return typing.cast("q.Node | None", where)
    return q.parse(typing.cast(str, where))  # text; any other type: "a query is a string, not int"


def _as_keys(sort: str | Sequence[q.SortKey] | None) -> list[q.SortKey]:
    if sort is None:
        return []
    if isinstance(sort, str):
        return q.parse_sort(sort)
    keys = list(sort) if isinstance(sort, list | tuple) else None
    if keys is None or not all(isinstance(k, q.SortKey) for k in keys):
        raise InvalidQuery(repr(sort), 0, f"a sort is a string such as '-best_metric' or 'config.lr,-created', not "
                                          f"{type(sort).__name__}")
    return keys


class SearchMixin(JobsMixin):
    """Jobs matching a query, in a chosen order, a page at a time; and the rows a run table needs."""

    def _search_sql(self, select: str, where: Where, *, sort: str | Sequence[q.SortKey] | None = None,
                    filters: dict[str, Any] | None = None, page: tuple[int | None, int] = (None, 0)
                    ) -> tuple[str, dict[str, Any]]:
        if where is not None or sort is not None:
            _load_query()
        node, keys = _as_node(where), _as_keys(sort)
        c = _Compiler(self.db.is_sqlite)
        clauses = [] if node is None else [c.node(node)]
        f = filters or {}
        if f.get("statuses"):
            clauses.append(f"jobs.status IN {in_list('fs', [s.value for s in f['statuses']], c.params)}")
        for name, column, op in (("job_type", "job_type", "="), ("experiment_name", "experiment_name", "="),
                                 ("since", "created_at", ">="), ("until", "created_at", "<")):
            if f.get(name):
                clauses.append(f"jobs.{column} {op} {c.bind(f[name])}")
        sql = select + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += " ORDER BY " + c.order_by(keys)
        limit, offset = page
        if limit is not None or offset:
            sql += f" LIMIT {c.bind(-1 if limit is None and self.db.is_sqlite else limit)}"
            if offset:
                sql += f" OFFSET {c.bind(offset)}"
        return sql, c.params

    def search_jobs(self, where: Where = None, *, sort: str | Sequence[q.SortKey] | None = None,
                    limit: int | None = DEFAULT_LIMIT, offset: int = 0,
                    statuses: Sequence[JobStatus] | None = None, job_type: str | None = None,
                    experiment_name: str | None = None, since: datetime | None = None,
                    until: datetime | None = None) -> list[JobRecord]:
        """Jobs matching ``where`` (and every other filter) in ``sort`` order (default: newest first).

        Ties are broken by creation time, newest first, then by id, so pages never overlap. A
        QUEUED or RUNNING job that nothing can finish is recorded FAILED first (SPEC §5); if that
        changed a status, the query runs once more so the page matches what is now stored.

        Raises:
            InvalidQuery: ``where`` or ``sort`` does not parse; nothing is read.
        """
        filters = {"statuses": statuses, "job_type": job_type, "experiment_name": experiment_name,
                   "since": since, "until": until}
        sql, params = self._search_sql(SELECT_JOB, where, sort=sort, filters=filters, page=(limit, offset))
        out: list[JobRecord] = []
        probes: dict[str, bool] = {}  # one liveness probe per distinct runner per call, both reads included (#14)
        for attempt in range(2):
            recs = [job_record(r) for r in self.db.read_all(sql, params)]  # one SELECT, no transaction around it
            out, changed = self._settle(recs, probes)
            if attempt or not changed:
                break
        if statuses:  # a verdict that could not be saved (a read-only file) still moves a job out
            out = [r for r in out if r.status in statuses]
        return out

    def search_ids(self, where: Where = None, *, sort: str | Sequence[q.SortKey] | None = None,
                   limit: int | None = None, offset: int = 0) -> list[str]:
        """Ids of the jobs matching ``where``, in ``sort`` order, all of them unless ``limit`` says otherwise.

        A plain read (no liveness verdicts): for ``jobtrack export --where`` and the dashboard.

        Raises:
            InvalidQuery: ``where`` or ``sort`` does not parse; nothing is read.
        """
        sql, params = self._search_sql("SELECT jobs.id FROM jobs", where, sort=sort, page=(limit, offset))
        with self.db.read() as tx:
            return [str(r[0]) for r in tx.all(sql, params)]

    def count_jobs(self, where: Where = None, *, cap: int | None = None) -> int:
        """How many jobs match ``where``; with ``cap``, counting stops at ``cap`` (the result is then
        ``min(matches, cap)``), so a query matching half of a big file costs a bounded read (#16).

        Raises:
            InvalidQuery: ``where`` does not parse; nothing is read.
            InvalidArgument: ``cap`` is below 1; nothing is read.
        """
        if cap is not None and cap < 1:
            raise InvalidArgument(f"count_jobs(cap={cap!r}): give cap >= 1, or cap=None to count every match")
        if where is not None:
            _load_query()
        node = _as_node(where)
        c = _Compiler(self.db.is_sqlite)
        cond = "" if node is None else f" WHERE {c.node(node)}"
        if cap is None:
            sql = "SELECT COUNT(*) FROM jobs" + cond
        else:
            sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM jobs{cond} LIMIT {c.bind(int(cap))}) capped"
        with self.db.read() as tx:
            return int(tx.scalar(sql, c.params))

    def job_extras(self, ids: Sequence[str], parts: Sequence[str] = EXTRAS) -> dict[str, dict[str, Any]]:
        """Per job id: ``params`` (key, kind, num, text rows), ``metrics`` {name: (best, last)}, ``tags``,
        ``started`` (ISO text of its claim, or None) and ``sweep`` (its sweep's name, or None); only the
        ``parts`` asked for are read (the others stay empty)."""
        out: dict[str, dict[str, Any]] = {
            i: {"params": [], "metrics": {}, "tags": [], "started": None, "sweep": None} for i in ids}
        with self.db.read() as tx:
            for chunk in _chunks(list(out)):
                params: dict[str, Any] = {}
                ids_sql = in_list("i", chunk, params)
                for part in parts:
                    for job_id, *values in tx.all(_EXTRA_SQL[part].format(ids=ids_sql), params):
                        into = out[job_id]
                        if part == "params":
                            into["params"].append(tuple(values))
                        elif part == "metrics":
                            into["metrics"][values[0]] = (values[1], values[2])
                        elif part == "tags":
                            into["tags"].append(values[0])
                        else:
                            into[part] = values[0]
        return out


_EXTRA_SQL = {
    "params": "SELECT job_id, key, kind, num_value, text_value FROM job_params WHERE job_id IN {ids} "
              "ORDER BY job_id, key",
    "metrics": "SELECT job_id, name, best_value, last_value FROM job_metrics WHERE job_id IN {ids} "
               "ORDER BY job_id, name",
    "tags": "SELECT job_id, tag FROM job_tags WHERE job_id IN {ids} ORDER BY job_id, tag",
    "started": "SELECT job_id, MIN(at) FROM job_events WHERE job_id IN {ids} AND to_status = 'RUNNING' "
               "GROUP BY job_id",
    "sweep": "SELECT j.id, s.name FROM jobs j JOIN sweeps s ON s.id = j.sweep_id WHERE j.id IN {ids}",
}
"""The reads of ``job_extras``, by part (``{ids}``: a list of bound parameters)."""
