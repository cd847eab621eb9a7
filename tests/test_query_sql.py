"""What queries select (#15): every operator and field on real jobs, SQLite and PostgreSQL, plus a property test.

The jobs are made by a real Trainer (eager runner) with real configs, tags and epochs, so the tables the
queries read are the ones jobtrack writes.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jobtrack import Dataset, JobManager, Trainer, cli
from jobtrack.context import RunContext
from jobtrack.errors import InvalidQuery
from jobtrack.store import Store

PG_URL = os.environ.get("JOBTRACK_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
INJECTION = "x'; DROP TABLE jobs; --"


def _train(ctx: RunContext) -> dict[str, Any]:
    """Report ``config["auc"]`` (one value per epoch) as roc_auc; fail when ``config["fail"]``."""
    if ctx.config.get("fail"):
        raise RuntimeError("asked to fail")
    for epoch, auc in enumerate(ctx.config.get("auc", []), start=1):
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch}, validation={"roc_auc": auc})
    return {"n": len(ctx.config.get("auc", [])), "kind": ctx.config.get("opt") or "none", "ok": True}


CONFIGS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "a": ({"lr": 0.001, "model": {"depth": 4}, "opt": "adam", "flag": True, "auc": [0.7, 0.9, 0.8]}, ["baseline"]),
    "b": ({"lr": 0.1, "model": {"depth": 8}, "opt": "sgd", "flag": False, "auc": [0.6, 0.65]}, []),
    "c": ({"lr": 0.005, "model": {"depth": 2}, "opt": None, "auc": [0.95]}, ["baseline", "x"]),
    "d": ({"lr": 0.0001, "model": {"depth": "4"}, "auc": [0.5, 0.55]}, ["y"]),
    "e": ({"model": {"depth": 16}, "name": INJECTION, "auc": [0.8], "shape": "[2, 3]"}, []),
    "f": ({"lr": 0.01, "fail": True}, ["broken"]),
}


@dataclass
class Population:
    db: str
    ids: dict[str, str]  # label -> job id ("q" is a QUEUED job made without a trainer)

    def labels(self, where: str | None = None, **kw: Any) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[i] for i in Store.open(self.db).search_ids(where, **kw)]

    def match(self, where: str) -> set[str]:
        return set(self.labels(where))


def _populate(db: str) -> Population:
    ds = Dataset("churn", "binary_classification", "q", tables={"train": [{"x": 1}], "validation": [{"x": 1}]})
    ids = {}
    for label, (config, tags) in CONFIGS.items():
        trainer = Trainer(_train, config=config, db=db, runner="eager", tags=tags, provenance=label == "a")
        ids[label] = trainer.fit(ds).job_id
    Store.open(db).create_job({"id": "job_queued_q", "job_type": "inference", "experiment_name": "other_x_y",
                               "runner_kind": "worker"})
    ids["q"] = "job_queued_q"
    return Population(db, ids)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def pop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Population]:
    """Seven jobs (five completed, one failed, one queued) on a SQLite file or in a PostgreSQL schema."""
    folder = tmp_path_factory.mktemp("query")
    old = {k: os.environ.get(k) for k in ("JOBTRACK_FILES",)}
    os.environ["JOBTRACK_FILES"] = str(folder / "files")
    if request.param == "sqlite":
        yield _populate(str(folder / "jobs.db"))
    else:
        try:
            import sqlalchemy

            engine = sqlalchemy.create_engine(PG_URL)
            schema = f"jt_{secrets.token_hex(6)}"
            with engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        except Exception as exc:  # noqa: BLE001 - any failure to reach a server means "no PostgreSQL here"
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL tests need a server at {PG_URL}: {exc}")
            pytest.skip(f"no PostgreSQL server at {PG_URL} ({type(exc).__name__})")
        sep = "&" if "?" in PG_URL else "?"
        try:
            yield _populate(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")
        finally:
            from jobtrack import runtime

            runtime.close_all()
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            engine.dispose()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


ALL = {"a", "b", "c", "d", "e", "f", "q"}
CASES = [
    # columns
    ("status = 'completed'", {"a", "b", "c", "d", "e"}),
    ("status != 'COMPLETED'", {"f", "q"}),
    ("status in ('FAILED', 'queued')", {"f", "q"}),
    ("status not in ('COMPLETED')", {"f", "q"}),
    ("status like 'F*'", {"f"}),
    ("job_type = 'inference'", {"q"}),
    ("experiment = 'other_x_y'", {"q"}),
    ("experiment like 'churn_*'", ALL - {"q"}),
    ("experiment not like 'churn_*'", {"q"}),
    ("id = 'job_queued_q'", {"q"}),
    ("id like 'job_queued_?'", {"q"}),
    ("eval_metric = 'roc_auc'", ALL - {"q"}),
    ("created > -1d and created <= -0s", ALL),
    ("created < '2000-01-01'", set()),
    ("finished is null", {"q"}),
    ("finished > -1h", ALL - {"q"}),
    ("duration >= 0", ALL - {"q"}),
    ("duration is null", {"q"}),
    ("duration > 1d", set()),
    # the evaluation metric at the best epoch, and each metric
    ("best_metric > 0.85", {"a", "c"}),
    ("best_metric is null", {"f", "q"}),
    ("not best_metric > 0.85", {"b", "d", "e", "f", "q"}),
    ("best_metric != 0.9", {"b", "c", "d", "e"}),
    ("best.roc_auc >= 0.9", {"a", "c"}),
    ("best.roc_auc in (0.65, 0.8)", {"b", "e"}),
    ("best.roc_auc not in (0.65, 0.8)", {"a", "c", "d"}),
    ("last.roc_auc = 0.8", {"a", "e"}),
    ("last.roc_auc != 0.8", {"b", "c", "d"}),
    ("best.roc_auc is null", {"f", "q"}),
    ("best.roc_auc is not null", {"a", "b", "c", "d", "e"}),
    ("best.`train.loss` < 1", {"a", "b", "d"}),
    ("best.nothing_like_it > 0", set()),
    # config values: numbers, strings, booleans, nulls
    ("config.lr < 0.01", {"a", "c", "d"}),
    ("config.lr <= 0.01", {"a", "c", "d", "f"}),
    ("config.lr = 0.1", {"b"}),
    ("config.lr != 0.1", {"a", "c", "d", "f"}),
    ("config.lr is null", {"e", "q"}),
    ("not config.lr = 0.1", ALL - {"b"}),
    ("config.model.depth = 4", {"a"}),
    ("config.model.depth = '4'", {"d"}),
    ("config.model.depth in (4, 8)", {"a", "b"}),
    ("config.model.depth in ('4', 16)", {"d", "e"}),
    ("config.model.depth not in (4, 8)", {"c", "d", "e"}),
    ("config.model.depth > 3", {"a", "b", "e"}),
    ("config.model.depth > '3'", {"d"}),
    ("config.opt = 'adam'", {"a"}),
    ("config.opt != 'adam'", {"b"}),
    ("config.opt is null", {"c", "d", "e", "f", "q"}),
    ("config.opt is not null", {"a", "b"}),
    ("config.opt = null", {"c", "d", "e", "f", "q"}),
    ("config.opt like '*d*'", {"a", "b"}),
    ("config.opt not like 'a*'", {"b"}),
    ("config.flag = true", {"a"}),
    ("config.flag = false", {"b"}),
    ("config.flag != true", {"b"}),
    ("config.flag = 1", set()),
    ("config.flag in (true, 0.1)", {"a"}),
    ("config.fail = true", {"f"}),
    ("config.name = " + repr(INJECTION), {"e"}),
    ('config.name = "x\'; DROP TABLE jobs; --"', {"e"}),
    ("config.name like 'x\\'*'", {"e"}),
    # tags
    ("tag = 'baseline'", {"a", "c"}),
    ("tag != 'baseline'", {"b", "d", "e", "f", "q"}),
    ("tag in ('x', 'y')", {"c", "d"}),
    ("tag not in ('x', 'y', 'baseline')", {"b", "e", "f", "q"}),
    ("tag like 'b*'", {"a", "c", "f"}),
    ("tag not like 'b*'", {"b", "d", "e", "q"}),
    ("tag is null", {"b", "e", "q"}),
    ("tag is not null", {"a", "c", "d", "f"}),
    ("tag = 'baseline' and tag = 'x'", {"c"}),
    # the summary the code returned
    ("summary.n = 3", {"a"}),
    ("summary.n >= 2", {"a", "b", "d"}),
    ("summary.kind = 'none'", {"c", "d", "e"}),
    ("summary.kind like 's?d'", {"b"}),
    ("summary.ok = true", {"a", "b", "c", "d", "e"}),
    ("summary.ok is null", {"f", "q"}),
    ("summary.n = '3'", set()),
    ("summary.n != 3", {"b", "c", "d", "e"}),
    ("not summary.n = 3", ALL - {"a"}),  # jobs without a summary (failed, queued) too: `not` of false
    ("not summary.ok = true", {"f", "q"}),
    ("not (summary.n = 3 or tag = 'nope')", ALL - {"a"}),
    # provenance and sweeps (recorded for "a" only; nothing is in a sweep)
    ("git.commit is null", ALL - {"a"} if True else set()),
    ("sweep is null", ALL),
    ("sweep = 'any'", set()),
    # a list in the config, spelled as `jobtrack show` prints it or as it is stored
    ("config.auc = '[0.6, 0.65]'", {"b"}),
    ("config.auc = '[0.6,0.65]'", {"b"}),
    ("config.auc in ('[0.95]', '[0.5, 0.55]')", {"c", "d"}),
    ("config.auc != '[0.8]'", {"a", "b", "c", "d"}),
    ("config.shape = '[2, 3]'", {"e"}),  # a string that looks like a list: found as written
    ("config.shape in ('[2, 3]', 'x')", {"e"}),
    ("config.shape != '[2, 3]'", set()),
    # precedence and parentheses
    ("config.lr < 0.01 and (tag = 'baseline' or config.model.depth in (4, 8))", {"a", "c"}),
    ("config.lr < 0.01 and tag = 'baseline' or config.model.depth in (4, 8)", {"a", "b", "c"}),
    ("not (tag = 'baseline' or status = 'FAILED')", {"b", "d", "e", "q"}),
    ("not tag = 'baseline' and not status = 'FAILED'", {"b", "d", "e", "q"}),
    ("", ALL),
]


@pytest.mark.parametrize(("where", "expected"), CASES)
def test_each_operator_and_field(pop: Population, where: str, expected: set[str]) -> None:
    if where == "git.commit is null":
        prov = JobManager(pop.db).fetch_job(pop.ids["a"]).provenance()
        if prov and prov.get("git"):  # a git checkout: "a" has a commit, which a query finds
            assert pop.match(f"git.commit = '{prov['git']['commit']}'") == {"a"}
            assert pop.match(f"git.dirty = {str(prov['git']['dirty']).lower()}") == {"a"}
        else:
            expected = ALL
    assert pop.match(where) == expected
    store = Store.open(pop.db)
    assert store.count_jobs(where) == len(expected)
    assert [store.count_jobs(where, cap=cap) for cap in (1, 2, 6)] == [min(cap, len(expected)) for cap in (1, 2, 6)]


def test_sql_in_a_value_is_only_a_value(pop: Population) -> None:
    assert pop.match(f"config.name = {INJECTION!r}") == {"e"}
    assert pop.match("tag = 'a\\'; DELETE FROM job_tags; --'") == set()
    with pytest.raises(InvalidQuery, match="expected and, or or the end"):
        pop.match("tag = 'a''; DELETE FROM job_tags; --'")  # SQL's doubled quote is two strings here
    assert len(pop.labels()) == len(ALL)  # every table still there, every job still there
    assert pop.match("tag = 'baseline'") == {"a", "c"}


def test_the_longest_query_allowed_runs_on_every_backend(pop: Population) -> None:
    """300 comparisons (query.MAX_TERMS): within SQLite's expression depth, with tag's subquery in each."""
    many = " or ".join([f"tag = 'none{i}'" for i in range(299)] + ["tag = 'baseline'"])
    assert pop.match(many) == {"a", "c"}


def test_sort_orders_with_a_stable_tiebreak(pop: Population) -> None:
    assert pop.labels("best_metric is not null", sort="-best_metric") == ["c", "a", "e", "b", "d"]
    assert pop.labels("best_metric is not null", sort="best_metric") == ["d", "b", "e", "a", "c"]
    assert pop.labels(sort="-best_metric")[-2:] == ["q", "f"]  # missing values last, then newest first
    assert pop.labels("config.lr is not null", sort="config.lr") == ["d", "a", "c", "f", "b"]
    assert pop.labels("config.model.depth is not null", sort="-config.model.depth") == ["e", "b", "a", "c", "d"]
    assert pop.labels("status = 'completed'", sort="best.`train.loss`,-best.roc_auc") == ["a", "b", "d", "c", "e"]
    newest_first = pop.labels()
    assert newest_first == ["q", "f", "e", "d", "c", "b", "a"]
    assert pop.labels(sort="created") == newest_first[::-1]
    assert pop.labels(sort="status,id") == [*sorted(ALL - {"f", "q"}, key=lambda k: pop.ids[k]), "f", "q"]


def test_pages(pop: Population) -> None:
    whole = pop.labels(sort="-best_metric")
    pages = [pop.labels(sort="-best_metric", limit=3, offset=o) for o in (0, 3, 6)]
    assert [label for page in pages for label in page] == whole
    manager = JobManager(pop.db)
    first = manager.list_jobs(sort="-best_metric", limit=3)
    assert first.has_more and first.next_offset == 3 and len(first) == 3
    rest = manager.list_jobs(sort="-best_metric", limit=None, offset=first.next_offset)
    assert not rest.has_more and rest.next_offset is None
    assert [j.job_id for j in [*first, *rest]] == [pop.ids[k] for k in whole]


def test_list_jobs_keeps_its_filters_and_adds_where(pop: Population) -> None:
    manager = JobManager(pop.db)
    jobs = manager.list_jobs(status=["completed"], where="tag = 'baseline'", sort="best_metric")
    assert [j.job_id for j in jobs] == [pop.ids["a"], pop.ids["c"]]
    assert [j.job_id for j in manager.list_jobs(job_type="inference", where="")] == [pop.ids["q"]]
    assert manager.list_jobs(experiment_name="other_x_y", where="tag = 'baseline'") == []
    assert len(manager.list_jobs(since="1h", until="2999-01-01", where="status != 'QUEUED'")) == 6


def test_an_age_written_as_the_query_language_writes_it_counts_back_in_every_time_bound(pop: Population) -> None:
    # `created > -7d` is the query language's age; "-2h" in --since, list_jobs(since=...) or a quoted query value
    # was read by dateutil as 02:00 today: a time in the future, so nothing matched
    manager = JobManager(pop.db)
    everything = {j.job_id for j in manager.list_jobs(limit=None)}
    assert {j.job_id for j in manager.list_jobs(since="-2h", limit=None)} == everything
    assert {j.job_id for j in manager.list_jobs(since="-90m", limit=None)} == everything
    assert manager.list_jobs(until="-2h") == []
    assert set(pop.labels("created > '-2h'")) == set(pop.labels("created > -2h")) == set(pop.ids)


def test_a_bad_query_reads_nothing_and_changes_nothing(pop: Population) -> None:
    manager = JobManager(pop.db)
    before = manager.table()
    for bad in ("lr < 0.01", "config.lr <", "tag = 'x' and", "config.name = 'x'; DROP TABLE jobs; --"):
        with pytest.raises(InvalidQuery):
            manager.list_jobs(where=bad)
    with pytest.raises(InvalidQuery):
        manager.table(sort="-nothing")
    assert manager.table() == before


def test_table_rows(pop: Population) -> None:
    rows = {r["id"]: r for r in JobManager(pop.db).table()}
    a, d, q = rows[pop.ids["a"]], rows[pop.ids["d"]], rows[pop.ids["q"]]
    assert a["config.lr"] == 0.001 and a["config.model.depth"] == 4 and a["config.flag"] is True
    assert d["config.model.depth"] == "4" and d["config.opt"] is None and "config.opt" in d
    assert a["best.roc_auc"] == 0.9 and a["best_metric"] == 0.9 and a["tags"] == ["baseline"]
    assert a["status"] == "COMPLETED" and a["created"].tzinfo is not None and a["duration"] >= 0
    assert q["status"] == "QUEUED" and q["finished"] is None and q["duration"] is None and q["tags"] == []
    assert all(list(r) == list(a) for r in rows.values())  # one set of keys, in one order


def test_frame(pop: Population) -> None:
    frame = JobManager(pop.db).frame("status = 'completed'", sort="-best_metric")
    assert list(frame["id"]) == [pop.ids[k] for k in ("c", "a", "e", "b", "d")]
    assert "config.lr" in frame.columns and "best.roc_auc" in frame.columns


def test_html_of_a_job_list_is_escaped(pop: Population) -> None:
    jobs = JobManager(pop.db).list_jobs(limit=2)
    page = jobs.to_html()
    assert hasattr(jobs, "_repr_html_")  # what Jupyter calls: to_html()
    assert page.count("<tr>") == 3 and "offset=2" in page and pop.ids["q"] in page
    assert JobManager(pop.db).list_jobs(where="tag = '<b>'").to_html().endswith("<p>No jobs match.</p>")


# -- the property: SQL and a Python filter over table() agree ----------------------------------------------------


Pred = Callable[[dict[str, Any]], bool]


def _typed_eq(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(b, str) or isinstance(a, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


def _compare(value: Any, op: str, lit: Any) -> bool:
    if value is None:
        return False
    if op == "=":
        return _typed_eq(value, lit)
    if op == "!=":
        return not _typed_eq(value, lit)
    if isinstance(value, bool) or isinstance(lit, str) != isinstance(value, str):
        return False
    return {"<": value < lit, "<=": value <= lit, ">": value > lit, ">=": value >= lit}[op]


LITERALS = st.sampled_from([0.001, 0.005, 0.01, 0.1, 4, 8, 16, 2, "4", "adam", "sgd", "none", 0.5, 0.9, 0.8])
FIELDS = ["config.lr", "config.model.depth", "config.opt", "best.roc_auc", "best_metric"]


@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> tuple[str, Pred]:
    choice = draw(st.integers(0, 6 if depth < 3 else 3))
    if choice == 0:
        name, op = draw(st.sampled_from(FIELDS)), draw(st.sampled_from(["=", "!=", "<", ">=", "<="]))
        lit = draw(LITERALS)
        if name.startswith("best") and isinstance(lit, str):
            lit = 0.8
        return f"{name} {op} {lit!r}", lambda r: _compare(r.get(name), op, lit)
    if choice == 1:
        tag, neg = draw(st.sampled_from(["baseline", "x", "y", "broken", "zzz"])), draw(st.booleans())
        return f"tag {'!=' if neg else '='} '{tag}'", lambda r: (tag in r["tags"]) != neg
    if choice == 2:
        name, neg = draw(st.sampled_from([*FIELDS, "config.flag", "finished"])), draw(st.booleans())
        return f"{name} is {'not ' if neg else ''}null", lambda r: (r.get(name) is None) != neg
    if choice == 3:
        name = draw(st.sampled_from(["config.model.depth", "config.opt", "status"]))
        lits = draw(st.lists(st.sampled_from([4, 8, "4", "adam", "COMPLETED", "FAILED"]), min_size=1, max_size=3))
        if name == "status":
            lits = [v for v in lits if v in ("COMPLETED", "FAILED")] or ["FAILED"]
        neg = draw(st.booleans())
        text = f"{name} {'not ' if neg else ''}in ({', '.join(map(repr, lits))})"
        return text, lambda r: r.get(name) is not None and any(_typed_eq(r[name], v) for v in lits) != neg
    if choice == 4:
        name, pat = draw(st.sampled_from(["config.opt", "experiment", "tag"])), draw(st.sampled_from(
            ["a*", "*d*", "s?d", "churn_*", "b*", "*"]))
        if name == "tag":
            return f"tag like '{pat}'", lambda r: any(fnmatch.fnmatchcase(t, pat) for t in r["tags"])
        return f"{name} like '{pat}'", lambda r: isinstance(r.get(name), str) and fnmatch.fnmatchcase(r[name], pat)
    text, pred = draw(predicates(depth + 1))
    if choice == 5:
        return f"not ({text})", lambda r: not pred(r)
    other, pred2 = draw(predicates(depth + 1))
    if draw(st.booleans()):
        return f"({text}) and ({other})", lambda r: pred(r) and pred2(r)
    return f"({text}) or ({other})", lambda r: pred(r) or pred2(r)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(predicates())
def test_random_queries_agree_with_a_python_filter_over_table(pop: Population, case: tuple[str, Pred]) -> None:
    text, pred = case
    rows = JobManager(pop.db).table()
    expected = {r["id"] for r in rows if pred(r)}
    assert set(Store.open(pop.db).search_ids(text)) == expected, text


def test_frame_without_pandas_names_the_extra(pop: Population, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobtrack.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails as if it were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'jobtrack\[pandas\]'"):
        JobManager(pop.db).frame()


# -- the command line ------------------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_where_sort_columns(pop: Population, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "list", "--db", pop.db, "--where",
                          "config.lr < 0.01 and (tag = 'baseline' or config.model.depth in (4, 8))",
                          "--sort", "-best_metric", "--columns", "config.lr,best.roc_auc,tags")
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0].split()[-3:] == ["CONFIG.LR", "BEST.ROC_AUC", "TAGS"]
    assert [line.split()[0] for line in lines[1:]] == [pop.ids["c"], pop.ids["a"]]
    assert lines[1].split()[-3:] == ["0.005", "0.95", "baseline,x"]
    code, out, err = _cli(capsys, "list", "--db", pop.db, "--sort", "-best_metric", "--limit", "2", "--json",
                          "--columns", "config.model.depth,best.roc_auc")
    rows = json.loads(out)
    assert code == 0 and [r["job_id"] for r in rows] == [pop.ids["c"], pop.ids["a"]]
    assert rows[0]["config.model.depth"] == 2 and rows[1]["best.roc_auc"] == 0.9 and "status" in rows[0]
    assert "--offset 2" in err  # more match: the next page is named
    code, out, err = _cli(capsys, "list", "--db", pop.db, "--where", f"id = '{pop.ids['a']}'", "--json",
                          "--columns", "best.roc_auc,last.roc_auc,last.loss")
    row = json.loads(out)[0]  # a's roc_auc by epoch: 0.7, 0.9, 0.8; its loss 1/epoch
    assert code == 0 and (row["best.roc_auc"], row["last.roc_auc"], row["last.loss"]) == (0.9, 0.8, 1 / 3), err


@pytest.mark.parametrize(("argv", "option", "position"), [
    (["--where", "config.lr <"], "--where", 11),
    (["--where", "lr < 0.01"], "--where", 0),
    (["--sort", "-best_metric,nope"], "--sort", 13),
    (["--columns", "config.lr,summary.n"], "--columns", 10),
])
def test_cli_invalid_query_shows_a_caret_and_exits_2(pop: Population, capsys: pytest.CaptureFixture[str],
                                                     argv: list[str], option: str, position: int) -> None:
    code, out, err = _cli(capsys, "list", "--db", pop.db, *argv)
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert lines[0].startswith(f"jobtrack: error: invalid {option} at position {position}: ")
    assert lines[1] == "  " + argv[1] and lines[2] == "  " + " " * position + "^"


def test_sweep_names_select_their_trials(db_path: str) -> None:
    ds = Dataset("churn", "binary_classification", "s", tables={"train": [{"x": 1}], "validation": [{"x": 1}]})
    trainer = Trainer(_train, config={"auc": [0.5]}, db=db_path, runner="eager", provenance=False)
    trainer.sweep(ds, {"lr": [0.1, 0.01]}, sampler="grid", name="search-1")
    other = trainer.fit(ds).job_id
    store = Store.open(db_path)
    trials = store.search_ids("sweep = 'search-1'", sort="config.lr")
    assert len(trials) == 2 and other not in trials
    assert store.search_ids("sweep is null") == [other]
    assert store.search_ids("sweep like 'search-*' and config.lr < 0.05") == trials[:1]
    assert [row["sweep"] for row in JobManager(db_path).table(sort="config.lr")] == ["search-1", "search-1", None]


def test_arguments_of_the_wrong_type_are_typed_errors(pop: Population) -> None:
    """A query, a sort or a job id of the wrong type names the argument, never an AttributeError or TypeError."""
    from jobtrack.errors import InvalidArgument

    manager = JobManager(pop.db)
    for bad in ({"where": 5}, {"where": b"status = 'QUEUED'"}, {"sort": 5}, {"sort": ["-created"]}):
        with pytest.raises(InvalidQuery, match="is a string"):
            manager.list_jobs(**bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="is a string"):
        manager.table(where=5)  # type: ignore[arg-type]
    for job_id in (None, 123, ""):
        with pytest.raises(InvalidArgument, match="A job id is a non-empty string"):
            manager.fetch_job(job_id)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="A job id is a non-empty string"):
            manager.cancel_job(job_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="A job id is a non-empty string"):
        manager.compare([1, 2])  # type: ignore[list-item]
