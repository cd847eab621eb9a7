"""Comparing runs (#15): only what differs, metric deltas with their direction, ``identical``, JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from jobtrack import Dataset, InvalidArgument, JobManager, JobNotFound, Trainer, cli
from jobtrack.compare import RunFacts, compare

ROWS = [{"x": i, "label": i % 2} for i in range(8)]


def facts(job_id: str, **kw: Any) -> RunFacts:
    base: dict[str, Any] = {
        "job_id": job_id, "status": "COMPLETED", "job_type": "train", "experiment": "d_binary_classification_t",
        "eval_metric": "roc_auc", "metric_mode": "max", "best_metric": 0.8, "best_epoch": 2, "epochs": 3,
        "duration_s": 1.5, "config": {"lr": 0.1, "model.depth": 4}, "metrics": {"roc_auc": (0.8, 0.7)},
        "tags": [], "provenance": {"git": {"commit": "abc", "branch": "main", "dirty": False, "diff_file": None,
                                           "diff_bytes": 0, "diff_truncated": False},
                                   "python": "3.11.9", "platform": "Linux", "host": "a",
                                   "packages": {"numpy": "2.0"}, "datasets": {"train": "f00"}},
    }
    base.update(kw)
    return RunFacts(**base)


def _prov(**kw: Any) -> dict[str, Any]:
    prov = facts("x").provenance
    assert prov is not None
    return {**prov, **kw}


def test_equal_runs_are_identical_whatever_their_durations_tags_and_hosts() -> None:
    result = compare([facts("a"), facts("b", duration_s=9.0, tags=["x"], provenance=_prov(host="b"))])
    assert result.identical
    assert result.format().startswith("identical: same config, code, data and metrics (durations: 1.5s, 9.0s)")
    assert [r.key for r in result.shown()] == ["tags", "host", "duration"]


def test_only_what_differs_is_shown_and_all_shows_everything() -> None:
    a = facts("a")
    b = facts("b", config={"lr": 0.01, "model.depth": 4, "dropout": 0.5}, best_metric=0.9, best_epoch=1,
              metrics={"roc_auc": (0.9, 0.85)}, provenance=_prov(packages={"numpy": "2.1"}))
    result = compare([a, b])
    assert not result.identical
    shown = {r.key: r for r in result.shown()}
    assert list(shown) == ["config.dropout", "config.lr", "best roc_auc", "best_epoch", "packages.numpy", "duration"]
    assert result.hidden() == ["last.roc_auc"]  # other metrics: with show_all
    assert shown["config.dropout"].present == (False, True)
    assert shown["config.lr"].values == (0.1, 0.01)
    assert "config.model.depth" in {r.key for r in compare([a, b], show_all=True).shown()}
    text = result.format()
    assert "(absent)" in text and "+0.1, better" in text and "1 other metric value(s) differ: last.roc_auc" in text


@pytest.mark.parametrize(("mode", "value", "direction"),
                         [("max", 0.9, "better"), ("max", 0.7, "worse"), ("min", 0.7, "better"),
                          ("min", 0.9, "worse"), ("max", 0.8, "equal")])
def test_direction_follows_the_metric_mode(mode: str, value: float, direction: str) -> None:
    runs = [facts("a", metric_mode=mode), facts("b", metric_mode=mode, best_metric=value)]
    evaluation = compare(runs).evaluation
    assert evaluation is not None
    assert evaluation["directions"] == [None, direction]
    assert evaluation["deltas"][1] == pytest.approx(value - 0.8)


def test_different_eval_metrics_are_compared_without_direction() -> None:
    result = compare([facts("a"), facts("b", eval_metric="rmse", metric_mode="min", best_metric=3.0)])
    assert result.evaluation is None
    keys = [r.key for r in result.shown()]
    assert "eval_metric" in keys and "best_metric" in keys and not result.identical


def test_one_int_and_one_float_of_equal_value_are_equal() -> None:
    assert compare([facts("a", config={"lr": 1}), facts("b", config={"lr": 1.0})]).identical
    assert not compare([facts("a", config={"flag": True}), facts("b", config={"flag": 1})]).identical
    assert not compare([facts("a", config={"x": None}), facts("b", config={})]).identical


def test_git_absent_on_one_side_and_a_missing_diff_file() -> None:
    no_git = facts("b", provenance=_prov(git=None))
    result = compare([facts("a"), no_git])
    assert {r.key for r in result.shown()} >= {"git.commit", "git.dirty"}
    dirty = _prov(git={"commit": "abc", "branch": "main", "dirty": True, "diff_file": "/nowhere/git.diff",
                       "diff_bytes": 12, "diff_truncated": False})
    row = next(r for r in compare([facts("a"), facts("b", provenance=dirty)], show_all=True).rows
               if r.key == "git.diff")
    assert row.values == (None, "12 bytes (file missing)")
    assert compare([facts("a", provenance=None), facts("b", provenance=None)]).identical


def test_as_dict_is_json() -> None:
    data = compare([facts("a"), facts("b", best_metric=0.6)]).as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["identical"] is False and data["jobs"] == ["a", "b"]
    assert data["evaluation"]["directions"] == [None, "worse"]
    assert {r["key"] for r in data["rows"]} == {"best roc_auc", "duration"}


def test_three_runs_use_the_first_as_baseline() -> None:
    result = compare([facts("a"), facts("b", best_metric=0.9), facts("c", best_metric=0.5)])
    assert result.evaluation is not None and result.evaluation["directions"] == [None, "better", "worse"]
    assert len(result.format().splitlines()[0].split()) == 3


# -- through JobManager and the command line --------------------------------------------------------------


def _train(ctx: Any) -> None:
    lr = ctx.config["lr"]
    for epoch in range(3):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)}, validation={"roc_auc": 0.5 + lr * epoch})


def _fit(db: str, lr: float, **kw: Any) -> Any:
    ds = Dataset("cmp", "binary_classification", "t", tables={"train": ROWS})
    return Trainer(_train, db=db, runner="eager", config={"lr": lr}, provenance=False, **kw).fit(ds)


def test_manager_and_cli_compare(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = _fit(db_path, 0.1), _fit(db_path, 0.1), _fit(db_path, 0.2)
    manager = JobManager(db_path)
    assert manager.compare([a.job_id, b.job_id]).identical
    assert cli.main(["compare", a.job_id, b.job_id, "--db", db_path]) == 0
    assert capsys.readouterr().out.startswith("identical")
    assert cli.main(["compare", a.job_id, c.job_id[:-2], "--db", db_path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"] == [a.job_id, c.job_id] and not data["identical"]
    assert data["evaluation"]["metric"] == "roc_auc" and data["evaluation"]["directions"] == [None, "better"]
    assert {r["key"] for r in data["rows"]} >= {"config.lr", "best roc_auc"} and "last.roc_auc" in data["hidden"]
    assert cli.main(["compare", a.job_id, c.job_id, "--all", "--db", db_path]) == 0
    out = capsys.readouterr().out
    assert "epochs" in out and "status" in out and "+0.2, better" in out


def test_compare_needs_two_known_jobs(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    a = _fit(db_path, 0.1)
    manager = JobManager(db_path)
    with pytest.raises(InvalidArgument, match="two or more"):
        manager.compare([a.job_id])
    with pytest.raises(InvalidArgument, match="two or more"):
        manager.compare(a.job_id)
    with pytest.raises(JobNotFound):
        manager.compare([a.job_id, "job_nothing"])
    assert cli.main(["compare", a.job_id, "--db", db_path]) == 2
    assert "two or more" in capsys.readouterr().err
    assert cli.main(["compare", a.job_id, "job_nothing", "--db", db_path]) == 1
    with pytest.raises(InvalidArgument, match=f"names {a.job_id} more than once"):
        manager.compare([a.job_id, a.job_id[:12]])  # the same job by id and by prefix
    assert cli.main(["compare", a.job_id, a.job_id, "--db", db_path]) == 2


def test_a_failed_run_is_not_identical_to_a_completed_one(db_path: str) -> None:
    a = _fit(db_path, 0.1)

    def broken(ctx: Any) -> None:
        _train(ctx)
        raise RuntimeError("late failure")

    ds = Dataset("cmp", "binary_classification", "t", tables={"train": ROWS})
    b = Trainer(broken, db=db_path, runner="eager", config={"lr": 0.1}, provenance=False).fit(ds)
    result = JobManager(db_path).compare([a.job_id, b.job_id])
    assert not result.identical and next(r.key for r in result.shown()) == "status"
    assert dataclasses.asdict(result)["jobs"] == (a.job_id, b.job_id)


def test_other_metrics_count_for_identical_even_when_hidden() -> None:
    result = compare([facts("a"), facts("b", metrics={"roc_auc": (0.8, 0.7), "loss": (0.3, 0.2)})])
    assert not result.identical and result.hidden() == ["best.loss", "last.loss"]
    assert [r.key for r in result.shown()] == ["duration"]
    assert "2 other metric value(s) differ" in result.format()
    assert {r.key for r in compare([facts("a"), facts("b")], show_all=True).shown()} >= {"last.roc_auc", "status"}
