"""Config parameters, tags and best/last metrics of jobs (#15): the rows the query language reads."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, InvalidArgument, JobManager, JobNotFound, Trainer, cli, results
from jobtrack.monitor import status_html
from jobtrack.store import Store
from jobtrack.store.experiments import flatten_config, param_row

ROWS = [{"x": i, "label": i % 2} for i in range(8)]


def _dataset() -> Dataset:
    return Dataset("exp", "binary_classification", "t1", tables={"train": ROWS, "test": ROWS})


def _report(epochs: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
    def train(ctx: Any) -> dict[str, Any]:
        for n, (t, v) in enumerate(epochs):
            ctx.log_epoch(n, train=t, validation=v)
        return {"ok": True}

    return train


def _fit(db: str, epochs: list[tuple[dict[str, Any], dict[str, Any]]] = (), **kw: Any) -> Any:
    kw.setdefault("provenance", False)
    return Trainer(_report(list(epochs)), db=db, runner="eager", **kw).fit(_dataset())


def _rows(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with store.db.read() as tx:
        return tx.all(sql, params)


def _metrics(store: Store, job_id: str) -> dict[str, tuple[Any, Any]]:
    return {n: (b, v) for n, b, v in _rows(store, "SELECT name, best_value, last_value FROM job_metrics "
                                                  "WHERE job_id = :id", id=job_id)}


# -- config parameters ---------------------------------------------------------------------------------


def test_config_is_stored_flattened_with_typed_values(db_path: str) -> None:
    config = {"lr": 0.01, "epochs": 3, "model": {"depth": 4, "act": "relu", "deep": {"x": None}},
              "layers": [64, 32], "fast": True, "slow": False, "nan": float("nan"), "empty": {},
              "huge": 10**400, "name": "x'; DROP TABLE jobs; --"}
    job = _fit(db_path, config=config)
    rows = {k: (kind, n, t) for _, k, kind, n, t in _rows(Store.open(db_path),
            "SELECT job_id, key, kind, num_value, text_value FROM job_params WHERE job_id = :id", id=job.job_id)}
    assert rows == {
        "lr": ("number", 0.01, None), "epochs": ("number", 3.0, None),
        "model.depth": ("number", 4.0, None), "model.act": ("string", None, "relu"),
        "model.deep.x": ("null", None, None), "layers": ("string", None, "[64,32]"),
        "fast": ("bool", 1.0, None), "slow": ("bool", 0.0, None),
        "nan": ("null", None, None),  # stored as null in the config JSON, so a null parameter
        "empty": ("string", None, "{}"), "huge": ("string", None, str(10**400)),
        "name": ("string", None, "x'; DROP TABLE jobs; --"),
    }


def test_flatten_and_param_rows_are_pure() -> None:
    assert flatten_config({"a": {"b": {"c": 1}}, "d": [1, {"e": 2}]}) == {"a.b.c": 1, "d": [1, {"e": 2}]}
    assert param_row("j", "k", [1, {"e": 2}])["text_value"] == '[1,{"e":2}]'
    assert param_row("j", "k", float("inf"))["kind"] == "null"


def test_a_job_without_config_has_no_parameters(db_path: str) -> None:
    job = _fit(db_path)
    assert _rows(Store.open(db_path), "SELECT * FROM job_params WHERE job_id = :id", id=job.job_id) == []


# -- tags ------------------------------------------------------------------------------------------------


def test_tags_at_creation_and_changed_later_without_a_status_change(db_path: str) -> None:
    job = _fit(db_path, tags=["baseline", "small", "baseline"])
    assert job.tags() == ["baseline", "small"]
    events = len(job.events())
    assert job.tag("v1.2", "baseline") == ["baseline", "small", "v1.2"]  # idempotent; a terminal job too
    assert job.untag("small", "never-had") == ["baseline", "v1.2"]
    assert job.untag("small") == ["baseline", "v1.2"]
    assert len(job.events()) == events and job.get_status()["status"] == "COMPLETED"
    assert sorted(job.get_status()) == sorted(["job_id", "status", "started_at", "finished_at", "updated_at",
                                               "experiment_name", "job_type", "model_run_id", "result",
                                               "export_paths", "source_views"])


def test_a_lone_string_is_one_tag(db_path: str) -> None:
    assert _fit(db_path, tags="baseline").tags() == ["baseline"]


@pytest.mark.parametrize("bad", ["has space", ".hidden", "", "x" * 201, "semi;colon", 7, None])
def test_an_invalid_tag_is_refused_and_nothing_is_written(db_path: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="tag"):
        Trainer(_report([]), db=db_path, runner="eager", tags=["ok", bad])
    job = _fit(db_path, tags=["ok"])
    with pytest.raises(InvalidArgument, match="tag"):
        job.tag("fine", bad)
    assert job.tags() == ["ok"]


def test_tags_must_be_a_list(db_path: str) -> None:
    with pytest.raises(InvalidArgument, match="tags must be a list"):
        Trainer(_report([]), db=db_path, tags={"a": 1})


def test_tags_of_a_removed_job_raise_job_not_found(db_path: str) -> None:
    job = _fit(db_path)
    store = Store.open(db_path)
    with pytest.raises(JobNotFound):
        store.change_tags("job_missing", add=["x"])
    with pytest.raises(JobNotFound):
        store.job_tags("job_missing")
    assert job.tags() == []


def test_cli_tag_and_untag_take_an_id_prefix(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    job = _fit(db_path)
    prefix = job.job_id[:-3]
    assert cli.main(["tag", prefix, "best", "v2", "--db", db_path]) == 0
    assert capsys.readouterr().out == f"{job.job_id}: tags best, v2\n"
    assert cli.main(["untag", prefix, "v2", "--db", db_path]) == 0
    assert capsys.readouterr().out == f"{job.job_id}: tags best\n"
    assert cli.main(["tag", prefix, "no way", "--db", db_path]) == 2
    assert "tag 'no way' is not allowed" in capsys.readouterr().err
    assert job.tags() == ["best"]


# -- best and last metrics ---------------------------------------------------------------------------------


def test_best_and_last_follow_the_result(db_path: str) -> None:
    epochs = [({"loss": 1.0, "acc": 0.5}, {"roc_auc": 0.6, "loss": 1.2}),
              ({"loss": 0.5, "acc": 0.7}, {"roc_auc": 0.8, "loss": 1.0}),
              ({"loss": 0.2, "acc": 0.9}, {"roc_auc": 0.7, "loss": 1.1})]
    job = _fit(db_path, epochs)
    result = job.get_status()["result"]
    assert result["best_epoch"] == 1
    store = Store.open(db_path)
    assert _metrics(store, job.job_id) == {
        "roc_auc": (0.8, 0.7), "loss": (1.0, 1.1), "acc": (0.7, 0.9),  # acc: bare (validation lacks it)
        "train.loss": (0.5, 0.2), "train.acc": (0.7, 0.9)}
    assert store.get_job(job.job_id).best_metric == result["best_metric"] == 0.8


def test_min_mode_training_fallback_and_names_missing_at_the_best_epoch(db_path: str) -> None:
    # No validation value of the metric: the training values choose (as result["best_epoch"] does).
    epochs = [({"loss": 0.9, "extra": 1.0}, {}), ({"loss": 0.3}, {}), ({"loss": 0.4, "extra": 3.0}, {})]
    job = _fit(db_path, epochs, eval_metric="loss")
    store = Store.open(db_path)
    assert job.get_status()["result"]["best_epoch"] == 1
    assert _metrics(store, job.job_id) == {"loss": (0.3, 0.4), "train.loss": (0.3, 0.4),
                                           "extra": (None, 3.0), "train.extra": (None, 3.0)}
    assert store.get_job(job.job_id).best_metric == 0.3


def test_without_an_evaluation_metric_best_is_last(db_path: str) -> None:
    store = Store.open(db_path)
    store.create_job({"id": "job_inf", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    token = store.claim("job_inf")
    store.add_epoch("job_inf", token, 0, '{"loss": 2.0}', '{"f1": 0.1}')
    store.add_epoch("job_inf", token, 1, '{"loss": 1.0}', "{}")
    assert _metrics(store, "job_inf") == {"loss": (1.0, 1.0), "train.loss": (1.0, 1.0), "f1": (0.1, 0.1)}
    assert store.get_job("job_inf").best_metric is None


def test_a_metric_never_reported_leaves_best_values_empty(db_path: str) -> None:
    job = _fit(db_path, [({"loss": 1.0}, {"auc": 0.9})])  # the task type's metric is roc_auc
    store = Store.open(db_path)
    assert _metrics(store, job.job_id) == {"loss": (None, 1.0), "train.loss": (None, 1.0), "auc": (None, 0.9)}
    assert store.get_job(job.job_id).best_metric is None
    assert job.get_status()["result"].get("best_metric") is None


def _expected(epochs: list[dict[str, Any]], metric: str | None, mode: str | None) -> dict[str, tuple[Any, Any]]:
    """job_metrics computed from scratch, by the documented rule, for the property test."""
    def named(ep: dict[str, Any]) -> dict[str, Any]:
        out = {f"train.{k}": v for k, v in ep["train"].items()}
        out.update((k, v) for k, v in ep["train"].items() if k not in ep["validation"])
        out.update(ep["validation"])
        return out

    last: dict[str, Any] = {}
    for ep in epochs:
        last.update(named(ep))
    if metric is None:
        return {n: (v, v) for n, v in last.items()}
    indexed = [{**ep, "epoch": i} for i, ep in enumerate(epochs)]
    index, _ = results.best_epoch(indexed, metric, mode)
    best = {} if index is None else named(epochs[index])
    return {n: (best.get(n), v) for n, v in last.items()}


@pytest.mark.parametrize("seed", range(12))
def test_incremental_metrics_match_a_recomputation(db_path: str, seed: int) -> None:
    # Random epochs (values missing, null, repeated epoch numbers that replace a stored epoch, #18): the
    # rows kept epoch by epoch equal the rows computed from the final epochs by the documented rule.
    rng = random.Random(seed)
    store = Store.open(db_path)
    metric, mode = rng.choice([("roc_auc", "max"), ("loss", "min"), (None, None)])
    store.create_job({"id": "job_p", "job_type": "train", "experiment_name": "e", "runner_kind": "worker",
                      "eval_metric": metric, "metric_mode": mode})
    token = store.claim("job_p")

    def values(names: list[str]) -> dict[str, Any]:
        return {n: rng.choice([None, round(rng.random(), 2), 0.5]) for n in names if rng.random() < 0.7}

    for _ in range(rng.randint(1, 25)):
        epoch = rng.randint(0, 12)
        store.add_epoch("job_p", token, epoch, json.dumps(values(["loss", "acc", "roc_auc"])),
                        json.dumps(values(["roc_auc", "loss"])))
        stored = store.epochs("job_p")
        assert _metrics(store, "job_p") == _expected(stored, metric, mode)
        result = results.compose(eval_metric=metric, metric_mode=mode, epochs=stored)
        assert store.get_job("job_p").best_metric == result.get("best_metric")


def test_metrics_on_postgresql(pg_url: str) -> None:
    store = Store.open(pg_url)
    store.create_job({"id": "job_pg", "job_type": "train", "experiment_name": "e", "runner_kind": "worker",
                      "eval_metric": "rmse", "metric_mode": "min",
                      "spec_json": json.dumps({"config": {"lr": 0.1, "m": {"d": 4}, "ok": True}})},
                     tags=["pg", "pg"])
    token = store.claim("job_pg")
    store.add_epoch("job_pg", token, 0, '{"loss": 1}', '{"rmse": 2}')
    store.add_epoch("job_pg", token, 1, '{"loss": 0.5}', '{"rmse": 1.5}')
    store.add_epoch("job_pg", token, 2, '{"loss": 0.4}', '{"rmse": 1.7}')
    assert _metrics(store, "job_pg") == {"rmse": (1.5, 1.7), "loss": (0.5, 0.4), "train.loss": (0.5, 0.4)}
    assert store.get_job("job_pg").best_metric == 1.5
    assert store.change_tags("job_pg", add=["x"], remove=["pg"]) == ["x"]
    facts = store.experiment_facts("job_pg")
    assert facts["config"] == {"lr": 0.1, "m.d": 4, "ok": True} and facts["epochs"] == 3
    kinds = dict(_rows(store, "SELECT key, kind FROM job_params WHERE job_id = :id", id="job_pg"))
    assert kinds == {"lr": "number", "m.d": "number", "ok": "bool"}


# -- show and HTML -----------------------------------------------------------------------------------------


def test_show_prints_config_tags_and_provenance(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    job = _fit(db_path, [({"loss": 1.0}, {"roc_auc": 0.6})], config={"lr": 0.1, "m": {"depth": 4}, "opt": "4"},
               tags=["b", "a"], provenance=True)
    assert cli.main(["show", job.job_id, "--db", db_path]) == 0
    out = capsys.readouterr().out
    assert "config:\n  lr = 0.1\n  m.depth = 4\n  opt = \"4\"\n" in out
    assert "tags: a, b\n" in out
    assert "provenance:\n" in out and "  python " in out and "packages (" in out


def test_monitor_html_is_an_escaped_table(db_path: str, tmp_path: Path) -> None:
    ds = Dataset("x", "binary_classification", "t", tables={"train": ROWS})

    def train(ctx: Any) -> None:
        raise ValueError("<script>alert(1)</script>")

    job = Trainer(train, db=db_path, runner="eager", provenance=False, tags=["t1"]).fit(ds)
    assert "_repr_html_" in dir(job)  # Jupyter shows it: status_html of the job's status and tags
    page = status_html(job.get_status(), job.tags())
    assert page.startswith("<table") and page.endswith("</table>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert job.job_id in page and "FAILED" in page and "t1" in page


def test_manager_reads_the_same_rows(db_path: str) -> None:
    job = _fit(db_path, tags=["m"])
    assert JobManager(db_path).fetch_job(job.job_id).tags() == ["m"]
