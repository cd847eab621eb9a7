"""The query language of ``jobtrack list --where``, ``JobManager.list_jobs(where=...)`` and the dashboard (#15).

Pure: a tokenizer and a recursive-descent parser from text to a small AST, with every check that
needs no database (field names, operators, value types), so a bad query fails with
``InvalidQuery(query, position, problem)`` before anything is read. ``store/search.py`` compiles
the AST to SQL with every value a bound parameter.

Grammar (keywords in any case; ``not`` binds tighter than ``and``, ``and`` tighter than ``or``)::

    query      := [or_expr]                       an empty query matches every job
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | predicate
    predicate  := FIELD op value | FIELD ["not"] "in" "(" value ("," value)* ")"
                | FIELD ["not"] "like" STRING | FIELD "is" ["not"] "null"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := NUMBER | STRING | "true" | "false" | "null" | AGE

- Strings use single or double quotes; ``\\\\``, ``\\'``, ``\\"``, ``\\n``, ``\\t`` are escapes and any
  other backslash stays (so ``'v1\\*'`` reaches ``like`` as an escaped star).
- ``like`` takes a glob, case-sensitive: ``*`` any run of characters, ``?`` one character, ``\\*``,
  ``\\?`` and ``\\\\`` literal ones (``tag like 'base*'``).
- ``created`` and ``finished`` take a date or time string, read as ``--since`` reads it (no zone
  means local time): ``created > '2026-11-01'``; or an age, ``created > -7d`` (also ``7d``): seven days
  before now. Units: ``s``, ``m`` (minutes), ``h``, ``d``, ``w``. ``duration`` is in seconds (a running
  job's: so far) and takes the same units: ``duration > 2h``.
- Null: ``f is null`` (or ``f = null``) is true when the job has no such value: no such config key
  or a null one, no such metric, no tag at all, not finished. Every other comparison is false on a
  missing value, ``!=``, ``not in`` and ``not like`` included: ``config.opt != 'adam'`` is the jobs that
  have an ``opt`` other than ``'adam'``, while ``not config.opt = 'adam'`` also keeps jobs without one.
  ``tag`` is a set: ``tag = 'x'`` means the job has tag x, and ``tag != 'x'``, ``tag not in (...)``,
  ``tag not like ...`` mean it has no such tag (untagged jobs included).
- Types: ``config.*`` and ``summary.*`` compare numbers with numbers and strings with strings (a
  string never equals a number, ``config.depth = '4'`` does not match ``depth: 4``) and booleans only
  with ``true``/``false``. Metrics and ``duration`` are numbers; ``status`` and ``job_type`` must
  name one of their values (any case).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Union

from jobtrack.errors import InvalidArgument, InvalidQuery
from jobtrack.querylex import Token, read_ident, tokenize
from jobtrack.states import JobStatus, JobType
from jobtrack.timeutil import parse_when, utcnow

MAX_DEPTH = 64
"""Deepest nesting of parentheses and ``not`` a query may use (a guard against runaway recursion)."""

MAX_LIST = 1000
"""Most values one ``in (...)`` list may hold (each is a bound SQL parameter)."""

MAX_TERMS = 300
"""Most comparisons one query may hold: SQLite refuses an expression more than 1000 deep, which a chain of about
900 ``or`` terms is (use ``in (...)`` for many values of one field)."""

Value = Union[float, int, str, bool, None, datetime]  # noqa: UP007 - a runtime alias, clearer spelled out

COLUMNS: dict[str, str] = {
    "id": "text", "status": "status", "job_type": "job_type", "experiment": "text", "eval_metric": "text",
    "created": "time", "finished": "time", "duration": "number", "best_metric": "number", "sweep": "text",
    "git.commit": "text", "git.branch": "text", "git.dirty": "bool", "tag": "tag",
}
"""The fixed fields and their types; besides them: ``config.<key>``, ``best.<m>``, ``last.<m>``, ``summary.<key>``."""

PREFIXES: dict[str, str] = {"config": "param", "summary": "param", "best": "number", "last": "number"}
"""Fields named ``<prefix>.<key>`` and the type of their values (``param``: number, string or bool)."""

_ORDER = frozenset({"<", "<=", ">", ">="})
_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "is", "null", "true", "false"})


@dataclass(frozen=True, slots=True)
class Field:
    """A field as named in a query: ``kind`` is ``column`` or a prefix (``config``, ``best``, ...)."""

    name: str  # as written, e.g. "config.model.depth"
    kind: str  # "column", "config", "summary", "best", "last"
    key: str  # the column's name ("status") or the key after the prefix ("model.depth")
    type: str  # "text", "status", "job_type", "time", "number", "bool", "tag", "param"
    pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    """``field op value`` for ``= != < <= > >=`` (never with null: see ``IsNull``)."""

    field: Field
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class In:
    """``field [not] in (values)``."""

    field: Field
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Like:
    """``field [not] like 'glob'`` (see ``glob_parts``)."""

    field: Field
    pattern: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    """``field is [not] null``."""

    field: Field
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node = Union[Compare, In, Like, IsNull, Not, And, Or]  # noqa: UP007


@dataclass(frozen=True, slots=True)
class SortKey:
    """One key of a sort (``-best_metric``: best_metric, descending)."""

    field: Field
    descending: bool


# -- fields --------------------------------------------------------------------------------------------------


def field(query: str, name: str, pos: int) -> Field:
    """The field ``name`` (written at ``pos`` of ``query``).

    Raises:
        InvalidQuery: an unknown field, with the nearest names it could have meant.
    """
    if name.lower() in COLUMNS:  # fixed names and prefixes in any case; config keys and metrics as written
        name = name.lower()
        return Field(name, "column", name, COLUMNS[name], pos)
    prefix, dot, key = name.partition(".")
    prefix = prefix.lower()
    if dot and prefix in PREFIXES:
        name = f"{prefix}.{key}"
        if not key:
            raise InvalidQuery(query, pos + len(prefix) + 1, f"{prefix}. needs a key after the dot, e.g. {prefix}.lr")
        if prefix == "summary" and '"' in key:
            raise InvalidQuery(query, pos, 'a summary key cannot contain "')
        return Field(name, prefix, key, PREFIXES[prefix], pos)
    known = [*COLUMNS, *(f"{p}.<key>" for p in PREFIXES)]
    import difflib  # only for a misspelt field's suggestion (#14)

    near = difflib.get_close_matches(name, list(COLUMNS), n=2)
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    if not dot and not near:
        hint = f"for a config value write config.{name}; "
    raise InvalidQuery(query, pos, f"unknown field {name!r}; {hint}fields are {', '.join(known)}")


# -- the parser ----------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str, now: datetime) -> None:
        self.query, self.now = query, now
        self.tokens = tokenize(query)
        self.i = 0
        self.depth = 0
        self.terms = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok.kind == "ident" and str(tok.value).lower() in words and "`" not in tok.text:
            self.i += 1
            return str(tok.value).lower()
        return None

    def fail(self, tok: Token, problem: str) -> InvalidQuery:
        return InvalidQuery(self.query, tok.pos, problem)

    def describe(self, tok: Token) -> str:
        return "the end of the query" if tok.kind == "end" else repr(tok.text)

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.keyword("or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.keyword("and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(self.peek(), f"the query nests deeper than {MAX_DEPTH} levels")
        try:
            if self.keyword("not"):
                return Not(self.not_expr())
            tok = self.peek()
            if tok.kind == "(":
                self.next()
                inner = self.or_expr()
                if self.peek().kind != ")":
                    raise self.fail(self.peek(), f"expected ')' to close the '(' at position {tok.pos}, "
                                                 f"found {self.describe(self.peek())}")
                self.next()
                return inner
            return self.predicate()
        finally:
            self.depth -= 1

    def predicate(self) -> Node:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.fail(self.peek(), f"a query holds at most {MAX_TERMS} comparisons; for many values of one "
                                         "field, use in (...), e.g. tag in ('a', 'b', 'c')")
        tok = self.next()
        if tok.kind != "ident" or (str(tok.value).lower() in _KEYWORDS and "`" not in tok.text):
            raise self.fail(tok, f"expected a field name (e.g. status, config.lr), found {self.describe(tok)}")
        f = field(self.query, str(tok.value), tok.pos)
        at = self.peek()
        if self.keyword("is"):
            negated = self.keyword("not") is not None
            if not self.keyword("null"):
                raise self.fail(self.peek(), f"expected null after 'is{' not' if negated else ''}', "
                                             f"found {self.describe(self.peek())}")
            return IsNull(f, negated)
        negated = self.keyword("not") is not None
        if self.keyword("in"):
            return self.in_list(f, negated, at)
        if self.keyword("like"):
            pat = self.next()
            if pat.kind != "string":
                raise self.fail(pat, f"like takes a quoted pattern such as 'base*', found {self.describe(pat)}")
            self.check_op(f, "like", at)
            return Like(f, pat.value, negated)
        if negated:
            raise self.fail(self.peek(), f"expected in or like after 'not', found {self.describe(self.peek())}")
        op_tok = self.next()
        if op_tok.kind != "op":
            raise self.fail(op_tok, f"expected an operator (= != < <= > >= in like is) after {f.name}, "
                                    f"found {self.describe(op_tok)}")
        op = str(op_tok.value)
        val_tok = self.peek()
        value = self.value(f)
        if value is None:
            if op in _ORDER:
                raise self.fail(val_tok, f"{op} null is never true; use {f.name} is null or is not null")
            return IsNull(f, op == "!=")
        self.check_op(f, op, op_tok)
        self.check_value(f, value, val_tok)
        return Compare(f, op, value)

    def in_list(self, f: Field, negated: bool, at: Token) -> Node:
        self.check_op(f, "in", at)
        if self.peek().kind != "(":
            raise self.fail(self.peek(), f"in takes a list in parentheses, e.g. in (4, 8); "
                                         f"found {self.describe(self.peek())}")
        self.next()
        values: list[Value] = []
        while True:
            tok = self.peek()
            value = self.value(f)
            if value is None:
                raise self.fail(tok, f"null cannot be in a list; write ({f.name} in (...) or {f.name} is null)")
            self.check_value(f, value, tok)
            values.append(value)
            if len(values) > MAX_LIST:
                raise self.fail(tok, f"an in list holds at most {MAX_LIST} values")
            sep = self.next()
            if sep.kind == ")":
                return In(f, tuple(values), negated)
            if sep.kind != ",":
                raise self.fail(sep, f"expected ',' or ')' in the list, found {self.describe(sep)}")

    def value(self, f: Field) -> Value:
        tok = self.next()
        if tok.kind == "number":
            number: int | float = tok.value
            return number
        if tok.kind == "age":
            if f.type == "time":
                try:
                    return self.now - timedelta(seconds=abs(float(tok.value)))
                except OverflowError:
                    raise self.fail(tok, f"{tok.text} reaches back before the year 1; use a smaller age") from None
            if f.type in ("number", "param"):
                return float(tok.value)
            raise self.fail(tok, f"{tok.text} is an age or duration; {f.name} does not take one")
        if tok.kind == "string":
            if f.type == "time":
                try:
                    return parse_when(str(tok.value), now=self.now)
                except InvalidArgument:
                    raise self.fail(tok, f"cannot read {tok.text} as a time; use e.g. '2026-11-01', "
                                         "'2026-11-01T12:00+00:00' or an age such as -7d") from None
            return str(tok.value)
        if tok.kind == "ident" and "`" not in tok.text:
            word = str(tok.value).lower()
            if word in ("true", "false", "null"):
                return None if word == "null" else word == "true"
            raise self.fail(tok, f"expected a value, found {tok.text!r}; quote strings: '{tok.value}'")
        raise self.fail(tok, f"expected a value (a number, a quoted string, true, false or null), "
                             f"found {self.describe(tok)}")

    def check_op(self, f: Field, op: str, tok: Token) -> None:
        allowed = {
            "tag": ("=", "!=", "in", "like"), "status": ("=", "!=", "in", "like"),
            "job_type": ("=", "!=", "in", "like"), "bool": ("=", "!="),
            "time": ("=", "!=", "<", "<=", ">", ">="), "number": ("=", "!=", "<", "<=", ">", ">=", "in"),
        }.get(f.type)
        if allowed is not None and op not in allowed:
            raise self.fail(tok, f"{f.name} takes {' '.join(allowed)}, not {op}")

    def check_value(self, f: Field, value: Value, tok: Token) -> None:
        if isinstance(value, bool):
            if f.type not in ("bool", "param"):
                raise self.fail(tok, f"{f.name} is not true or false; compare it with "
                                     f"{'a number' if f.type == 'number' else 'a string'}")
            return
        if isinstance(value, (int, float)):
            if f.type not in ("number", "param"):
                raise self.fail(tok, f"{f.name} is {_TYPE_WORDS.get(f.type, 'text')}; compare it with "
                                     f"{'true or false' if f.type == 'bool' else 'a quoted string'}")
            return
        if isinstance(value, str):
            if f.type in ("number", "bool"):
                raise self.fail(tok, f"{f.name} is {_TYPE_WORDS[f.type]}; compare it with "
                                     f"{'a number' if f.type == 'number' else 'true or false'}, not a string")
            if f.type == "status" and JobStatus.parse(value) is None:
                raise self.fail(tok, f"unknown status {value!r}; use one of {', '.join(JobStatus)}")
            if f.type == "job_type" and JobType.parse(value) is None:
                raise self.fail(tok, f"unknown job type {value!r}; use one of {', '.join(JobType)}")


_TYPE_WORDS = {"number": "a number", "bool": "true or false", "time": "a time", "tag": "a tag name",
               "status": "a status", "job_type": "a job type", "text": "text"}


def normalize(node: Node) -> Node:
    """Statuses in upper case and job types in lower case, as stored (``status = 'completed'`` works)."""
    if isinstance(node, (And, Or)):
        return type(node)(tuple(normalize(i) for i in node.items))
    if isinstance(node, Not):
        return Not(normalize(node.item))
    fix = {"status": str.upper, "job_type": str.lower}.get(node.field.type)
    if fix is None:
        return node
    if isinstance(node, Compare):
        return Compare(node.field, node.op, fix(str(node.value)))
    if isinstance(node, In):
        return In(node.field, tuple(fix(str(v)) for v in node.values), node.negated)
    if isinstance(node, Like):
        return Like(node.field, fix(node.pattern), node.negated)
    return node


def parse(query: str, *, now: datetime | None = None) -> Node | None:
    """The AST of ``query``; None for an empty (or blank) query, which matches every job.

    ``now`` is when ages such as ``-7d`` count back from (default: the current time).

    Raises:
        InvalidQuery: the query does not parse, names an unknown field, or compares a field with a
            value of the wrong type; its message shows the query with a caret under the problem.
    """
    if not isinstance(query, str):
        raise InvalidQuery(repr(query), 0, f"a query is a string, not {type(query).__name__}")
    p = _Parser(query, now or utcnow())
    if p.peek().kind == "end":
        return None
    node = p.or_expr()
    tok = p.peek()
    if tok.kind != "end":
        what = "an unmatched ')'" if tok.kind == ")" else repr(tok.text)
        raise p.fail(tok, f"expected and, or or the end of the query, found {what}")
    return normalize(node)


def parse_sort(text: str) -> list[SortKey]:
    """Sort keys from ``"-best_metric"`` or ``"config.lr,-created"``: ``-`` for descending, ``+`` or none ascending.

    Raises:
        InvalidQuery: an empty key or an unknown or unsortable field (``tag``), with its position.
    """
    keys: list[SortKey] = []
    pos = 0
    for part in text.split(","):
        stripped = part.strip()
        at = pos + (len(part) - len(part.lstrip()))
        pos += len(part) + 1
        if not stripped:
            raise InvalidQuery(text, at, "empty sort key; write e.g. -best_metric or config.lr,-created")
        descending = stripped[0] == "-"
        name = stripped[1:].strip() if stripped[0] in "+-" else stripped
        start = at + (len(stripped) - len(name))
        if name.startswith("`") or "`" in name:
            name = read_ident(name, 0)[0]
        f = field(text, name, start)
        if f.type == "tag" or f.kind == "summary":
            raise InvalidQuery(text, start, f"jobs cannot be sorted by {f.name}; sort by a column such as "
                                            "best_metric or created, a config.<key> or a best.<metric>")
        keys.append(SortKey(f, descending))
    return keys
