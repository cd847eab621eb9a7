"""The query language as text (#15): tokens, precedence, quoting, values, and malformed queries with positions.

Pure: no database. What the queries select is tested in test_query_sql.py.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from jobtrack import query as q
from jobtrack.errors import InvalidArgument, InvalidQuery
from jobtrack.querylex import glob_parts

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def parse(text: str) -> q.Node | None:
    return q.parse(text, now=NOW)


def names(node: q.Node | None) -> str:
    """A compact rendering of the tree: ``(a & (b | !c))``."""
    if isinstance(node, q.And):
        return "(" + " & ".join(names(i) for i in node.items) + ")"
    if isinstance(node, q.Or):
        return "(" + " | ".join(names(i) for i in node.items) + ")"
    if isinstance(node, q.Not):
        return "!" + names(node.item)
    assert node is not None
    return node.field.name


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    assert names(parse("status = 'QUEUED' or id = 'a' and not tag = 'x'")) == "(status | (id & !tag))"
    assert names(parse("(status = 'QUEUED' or id = 'a') and tag = 'x'")) == "((status | id) & tag)"
    assert names(parse("not (id = 'a' or id = 'b') and tag = 'x'")) == "(!(id | id) & tag)"
    assert names(parse("not not id = 'a'")) == "!!id"
    assert names(parse("id = 'a' and id = 'b' and id = 'c' or id = 'd'")) == "((id & id & id) | id)"


def test_keywords_in_any_case_and_operator_spellings() -> None:
    node = parse("config.lr < 1 AND Tag = 'x' Or NOT best.auc >= 0.5")
    assert names(node) == "((config.lr & tag) | !best.auc)"
    for spelt, op in (("=", "="), ("==", "="), ("!=", "!="), ("<>", "!="), ("<", "<"), ("<=", "<="), (">", ">"),
                      (">=", ">=")):
        node = parse(f"config.x {spelt} 3")
        assert isinstance(node, q.Compare) and node.op == op and node.value == 3


def test_every_field_parses() -> None:
    for text in ("status = 'running'", "job_type = 'TRAIN'", "experiment = 'e'", "id = 'job_1'", "eval_metric = 'rmse'",
                 "created > '2026-11-01'", "finished < -1d", "duration > 2h", "best_metric >= 0.5",
                 "config.model.depth = 4", "best.roc_auc > 0.9", "last.loss < 1", "tag = 'baseline'",
                 "summary.n = 3", "git.commit like 'abc*'", "git.branch = 'main'", "git.dirty = false",
                 "sweep = 'search-1'"):
        node = parse(text)
        assert isinstance(node, q.Compare | q.Like), text


def test_values_numbers_strings_booleans() -> None:
    values = {"config.x = 4": 4, "config.x = -4": -4, "config.x = 4.5": 4.5, "config.x = .5": 0.5,
              "config.x = 1e-3": 0.001, "config.x = -2.5E2": -250.0, "config.x = true": True,
              "config.x = FALSE": False, "config.x = 'a b'": "a b", 'config.x = "a b"': "a b",
              r"config.x = 'it\'s'": "it's", r'config.x = "say \"hi\""': 'say "hi"', r"config.x = 'a\\b'": "a\\b",
              r"config.x = 'tab\there'": "tab\there", "config.x = 'both \" kinds'": 'both " kinds',
              "config.x = ''": "", "config.x = 'ünï ✓'": "ünï ✓"}
    for text, value in values.items():
        node = parse(text)
        assert isinstance(node, q.Compare) and node.value == value and type(node.value) is type(value), text


def test_null_comparisons_become_is_null() -> None:
    assert parse("config.x is null") == parse("config.x = null") == parse("config.x IS NULL")
    node = parse("config.x != null")
    assert isinstance(node, q.IsNull) and node.negated and node == parse("config.x is not null")


def test_in_like_and_their_negations() -> None:
    node = parse("config.depth in (4, 8, 'deep',)".replace(",)", ")"))
    assert isinstance(node, q.In) and node.values == (4, 8, "deep") and not node.negated
    node = parse("tag not in ('a')")
    assert isinstance(node, q.In) and node.negated and node.values == ("a",)
    node = parse("experiment not like 'churn_*'")
    assert isinstance(node, q.Like) and node.negated and node.pattern == "churn_*"


def test_status_and_job_type_are_normalised() -> None:
    assert parse("status = 'completed'") == parse("status = 'COMPLETED'")
    node = parse("job_type in ('TRAIN', 'Inference')")
    assert isinstance(node, q.In) and node.values == ("train", "inference")


def test_times_and_ages() -> None:
    node = parse("created > -7d")
    assert isinstance(node, q.Compare) and node.value == NOW - timedelta(days=7)
    assert parse("created > 7d") == node
    node = parse("finished <= '2026-11-01T00:00:00+00:00'")
    assert isinstance(node, q.Compare) and node.value == datetime(2026, 11, 1, tzinfo=UTC)
    node = parse("duration > 1.5h")
    assert isinstance(node, q.Compare) and node.value == 5400.0
    assert [parse(f"duration < 1{u}").value for u in "smhdw"] == [1, 60, 3600, 86400, 604800]  # type: ignore[union-attr]


def test_backticks_quote_odd_config_keys() -> None:
    node = parse("config.`learning rate` > 0.1")
    assert isinstance(node, q.Compare) and node.field.key == "learning rate"
    node = parse("config.`and` = 1")  # a keyword as a key
    assert isinstance(node, q.Compare) and node.field.key == "and"
    node = parse("CONFIG.LR = 1 and Status = 'queued'")  # field names in any case; keys as written
    assert isinstance(node, q.And) and [i.field.name for i in node.items] == ["config.LR", "status"]  # type: ignore[union-attr]


def test_blank_query_matches_everything() -> None:
    assert parse("") is None and parse("   \n") is None


def test_sort_keys() -> None:
    keys = q.parse_sort("-best_metric, config.lr,+created")
    assert [(k.field.name, k.descending) for k in keys] == [("best_metric", True), ("config.lr", False),
                                                             ("created", False)]


def test_glob_parts() -> None:
    assert glob_parts("a*b?c") == [(False, "a"), (True, "*"), (False, "b"), (True, "?"), (False, "c")]
    assert glob_parts(r"50\% \*") == [(False, r"50\% *")]


MALFORMED = [
    ("lr < 0.01", 0, "unknown field 'lr'"),
    ("config.lr <", 11, "expected a value"),
    ("status =", 8, "expected a value"),
    ("status = 'x", 9, "unterminated string"),
    ('tag = "open', 6, "unterminated string"),
    ("status = 'RUNNING' and", 22, "expected a field name"),
    ("and status = 'RUNNING'", 0, "expected a field name"),
    ("(status = 'RUNNING'", 19, "expected ')'"),
    ("status = 'RUNNING')", 18, "unmatched ')'"),
    ("status = 'RUNNING' tag = 'x'", 19, "expected and, or or the end"),
    ("status == = 'x'", 10, "expected a value"),
    ("status ~ 'x'", 7, "unexpected character '~'"),
    ("status ! 'x'", 7, "'!' must be followed by '='"),
    ("statuz = 'RUNNING'", 0, "did you mean status"),
    ("config. = 1", 7, "a name was expected after '.'"),
    ("best.auc > 'high'", 11, "is a number"),
    ("status = 'DONE'", 9, "unknown status 'DONE'"),
    ("job_type = 'training'", 11, "unknown job type"),
    ("tag < 'x'", 4, "tag takes"),
    ("git.dirty > true", 10, "git.dirty takes"),
    ("created > 'not a time'", 10, "cannot read"),
    ("created > 5", 10, "created is a time"),
    ("created > -99999999999d", 10, "before the year 1"),
    ("config.x in 4", 12, "in takes a list in parentheses"),
    ("config.x in ()", 13, "expected a value"),
    ("config.x in (1 2)", 15, "expected ',' or ')'"),
    ("config.x in (1, null)", 16, "null cannot be in a list"),
    ("config.x like 5", 14, "like takes a quoted pattern"),
    ("config.x is 5", 12, "expected null"),
    ("config.x is not", 15, "expected null"),
    ("config.x not = 1", 13, "expected in or like"),
    ("config.x < null", 11, "never true"),
    ("config.x = banana", 11, "quote strings"),
    ("config.x = 7days", 12, "after a number"),
    ("config.x = 1e999", 11, "too large"),
    ("config.x", 8, "expected an operator"),
    ("not", 3, "expected a field name"),
    ("()", 1, "expected a field name"),
    ("status = 'QUEUED' or", 20, "expected a field name"),
    ("config.`open = 1", 7, "unterminated `name`"),
    ("duration > 'long'", 11, "is a number"),
    ("tag = 3", 6, "compare it with a quoted string"),
    ("experiment = true", 13, "is not true or false"),
    ("(" * 70 + "id = 'a'" + ")" * 70, 64, "nests deeper"),
    ("summary.\"x\" = 1", 8, "a name was expected"),
    (" or ".join(["tag = 'x'"] * 301), 300 * 13, "at most 300 comparisons"),  # SQLite: expression too deep
]


@pytest.mark.parametrize(("text", "position", "problem"), MALFORMED)
def test_malformed_queries_raise_with_a_position(text: str, position: int, problem: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        parse(text)
    err = info.value
    assert (err.position, err.query) == (position, text), err.problem
    assert problem in err.problem
    lines = str(err).splitlines()
    assert lines[1] == f"  {text}" and lines[2] == "  " + " " * position + "^"  # the caret under the problem
    assert isinstance(err, InvalidArgument) and isinstance(err, ValueError)


def test_more_than_twenty_malformed_queries_are_covered() -> None:
    assert len(MALFORMED) >= 20


def test_invalid_query_crosses_processes() -> None:
    with pytest.raises(InvalidQuery) as info:
        parse("lr <")
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.query, again.position, again.problem) == ("lr <", 0, info.value.problem)


def test_bad_sort_keys() -> None:
    for text, position in (("-bogus", 1), ("created,,id", 8), ("created, tag", 9), ("summary.x", 0)):
        with pytest.raises(InvalidQuery) as info:
            q.parse_sort(text)
        assert info.value.position == position, text


def test_a_query_must_be_text() -> None:
    with pytest.raises(InvalidQuery, match="a query is a string"):
        q.parse(42)  # type: ignore[arg-type]
