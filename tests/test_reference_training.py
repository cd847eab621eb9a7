"""The reference SDK's per-job options reach the code (#22): ``test_batch_size`` and ``ctx.batches``,
``flatten_output`` per task type, ``experiment_name`` on predict, and ``patience``/``eval_every`` early stopping."""

from __future__ import annotations

import csv
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, Trainer, ValidationError, demo
from jobtrack.context import RunContext
from jobtrack.results import EarlyStopping

ELEVEN_KEYS = {"job_id", "status", "started_at", "finished_at", "updated_at", "experiment_name", "job_type",
               "model_run_id", "result", "export_paths", "source_views"}


def _view(db: str, view: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(db)) as conn:
        cur = conn.execute(f"SELECT * FROM {view}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _train(ctx: RunContext) -> None:
    (ctx.model_dir / "model.txt").write_text("ok", encoding="utf-8")


# -- flatten_output ------------------------------------------------------------------------------------------

MULTILABEL = [
    {"id": 1, "predicted_labels": ["sports", "news"], "probs": [0.9, 0.7], "ground_truth": ["sports"]},
    {"id": 2, "predicted_labels": ["tech"], "probs": [0.8], "ground_truth": ["tech", "news"]},
    {"id": 3, "predicted_labels": [], "probs": [], "ground_truth": []},
]
LINKS = [
    {"customer_id": 10, "predicted_item_id": [7, 3, 9], "scores": [0.5, 0.4, 0.1], "ground_truth": [3]},
    {"customer_id": 11, "predicted_item_id": [3, 8], "scores": [0.6, 0.2], "ground_truth": [8]},
]


def _export(ctx: RunContext) -> None:
    ctx.export("predictions", ctx.config["rows"])


def _predicted(db: str, tmp_path: Path, task_type: str, rows: list[dict[str, Any]], *,
               flatten: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows of the source view, columns of the CSV file) of a fit_predict job that exports ``rows``."""
    dataset = Dataset("shop", task_type, "t", tables={"train": [{"id": 1}], "test": [{"id": 1}]})
    job = Trainer(_train, _export, config={"rows": rows}, db=db, runner="eager").fit_predict(
        dataset, f"{task_type}_{flatten}", flatten_output=flatten)
    status = job.get_status()
    assert status["status"] == "COMPLETED", status["result"]
    with open(status["export_paths"]["predictions"], encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    return _view(db, status["source_views"]["predictions"]), header


def test_flatten_output_gives_one_row_per_id_and_label_for_multilabel(db_path: str, tmp_path: Path) -> None:
    rows, header = _predicted(db_path, tmp_path, "multilabel_classification", MULTILABEL, flatten=True)
    assert header == ["id", "predicted_labels", "probs"]  # the ground truth is dropped
    assert rows == [{"id": 1, "predicted_labels": "sports", "probs": 0.9},
                    {"id": 1, "predicted_labels": "news", "probs": 0.7},
                    {"id": 2, "predicted_labels": "tech", "probs": 0.8}]
    unflat, header = _predicted(db_path, tmp_path, "multilabel_classification", MULTILABEL, flatten=False)
    assert header == ["id", "predicted_labels", "probs", "ground_truth"] and len(unflat) == 3


@pytest.mark.parametrize("task_type", ["link_prediction", "repeated_link_prediction"])
def test_flatten_output_gives_one_row_per_source_and_candidate_for_link_prediction(db_path: str, tmp_path: Path,
                                                                                   task_type: str) -> None:
    rows, header = _predicted(db_path, tmp_path, task_type, LINKS, flatten=True)
    assert header == ["customer_id", "predicted_item_id", "scores", "rank"]
    assert [(r["customer_id"], r["predicted_item_id"], r["rank"]) for r in rows] == [
        (10, 7, 1), (10, 3, 2), (10, 9, 3), (11, 3, 1), (11, 8, 2)]
    assert rows[0]["scores"] == 0.5


def test_flatten_output_only_drops_the_ground_truth_of_other_tasks(db_path: str, tmp_path: Path) -> None:
    rows, header = _predicted(db_path, tmp_path, "binary_classification",
                              [{"id": 1, "probability": 0.3, "ground_truth": 0}], flatten=True)
    assert header == ["id", "probability"] and rows == [{"id": 1, "probability": 0.3}]


def test_flatten_output_refuses_lists_that_do_not_pair_up(db_path: str, tmp_path: Path) -> None:
    dataset = Dataset("shop", "link_prediction", "t", tables={"train": [{"id": 1}], "test": [{"id": 1}]})
    bad = [{"customer_id": 1, "predicted_item_id": [1, 2], "scores": [0.5]}]
    job = Trainer(_train, _export, config={"rows": bad}, db=db_path, runner="eager").fit_predict(
        dataset, "bad", flatten_output=True)
    error = job.get_status()["result"]["error"]
    assert error["type"] == "InvalidArgument" and "different lengths" in error["message"]


# -- test_batch_size, ctx.batches, experiment_name ---------------------------------------------------------------


def _batched(ctx: RunContext) -> dict[str, Any]:
    sizes = [len(batch) for batch in ctx.batches("test")]
    ctx.export("predictions", [{"id": r["id"], "score": 0.5} for r in ctx.dataset.table("test")])
    return {"test_batch_size": ctx.test_batch_size, "sizes": sizes, "small": [len(b) for b in ctx.batches(size=12)]}


def test_test_batch_size_reaches_the_code_and_batches_use_it(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, _batched, config={"epochs": 1}, db=db_path, runner="eager")
    train = trainer.fit(dataset)
    summary = trainer.predict("batched", test_batch_size=8, model_run_id=train.model_run_id).get_status()
    assert summary["result"]["summary"] == {"test_batch_size": 8, "sizes": [8, 8, 8, 6], "small": [12, 12, 6]}
    default = trainer.predict("default_batches", model_run_id=train.model_run_id).get_status()
    assert default["result"]["summary"]["sizes"] == [30]  # 128, as in the reference


def test_experiment_name_selects_the_training_dataset_with_a_new_test_table(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager")
    train = trainer.fit(dataset)
    new_test = demo.make_rows(5, seed=99)
    for n, experiment in enumerate((dataset.experiment_name, "churn/binary_classification/m1")):
        job = trainer.predict(f"by_exp_{n}", experiment_name=experiment, test_table=new_test,
                              model_run_id=train.model_run_id)
        status = job.get_status()
        assert status["status"] == "COMPLETED" and status["result"]["summary"]["rows"] == 5
        assert status["experiment_name"] == dataset.experiment_name


# -- early stopping ---------------------------------------------------------------------------------------------

PLATEAU = [0.60, 0.70, 0.80, 0.80, 0.79, 0.78, 0.77, 0.76, 0.75, 0.74]
"""Validation roc_auc per epoch 1..10: it improves up to epoch 3 and never after."""


def _plateau(ctx: RunContext) -> dict[str, Any]:
    seen = []
    for epoch in range(1, (ctx.n_epochs or 10) + 1):
        stop = ctx.log_epoch(epoch, train={"loss": 1.0 / epoch}, validation={"roc_auc": PLATEAU[epoch - 1]})
        seen.append(ctx.should_stop)
        if stop and not ctx.config.get("ignore_stop"):
            break
    return {"should_stop": seen}


def test_patience_stops_a_plateaued_model_at_epoch_5_and_it_completes(db_path: str, dataset: Dataset) -> None:
    job = Trainer(_plateau, db=db_path, runner="eager", n_epochs=10, patience=2).fit(dataset)
    status = job.get_status()
    assert set(status) == ELEVEN_KEYS  # the flag lives inside result
    result = status["result"]
    assert status["status"] == "COMPLETED" and result["stopped_early"] is True
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4, 5]
    assert result["best_epoch"] == 3 and result["best_metric"] == 0.80
    assert result["summary"]["should_stop"] == [False, False, False, False, True]
    assert job.events()[-1].reason == "completed (stopped early)"


def test_the_loop_decides_and_without_patience_nothing_is_said(db_path: str, dataset: Dataset) -> None:
    ignored = Trainer(_plateau, config={"ignore_stop": True}, db=db_path, runner="eager", n_epochs=10,
                      patience=2).fit(dataset).get_status()["result"]
    assert len(ignored["epochs"]) == 10 and ignored["stopped_early"] is False  # told at 5, it went on
    plain = Trainer(_plateau, db=db_path, runner="eager", n_epochs=10).fit(dataset).get_status()["result"]
    assert len(plain["epochs"]) == 10 and "stopped_early" not in plain


def test_the_demo_model_stops_early_with_eval_every(db_path: str, dataset: Dataset) -> None:
    job = Trainer(demo.train, demo.predict, config={"lr": 0.0}, db=db_path, runner="eager", n_epochs=20,
                  patience=2, eval_every=2).fit(dataset)  # lr 0: the metric never improves after its first value
    result = job.get_status()["result"]
    assert result["stopped_early"] is True
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4, 5, 6]  # evaluated at 2, 4, 6: stop at 6
    assert [e["epoch"] for e in result["epochs"] if e["validation"]] == [2, 4, 6]


def test_early_stopping_counts_evaluations_by_the_metrics_direction() -> None:
    rule = EarlyStopping("rmse", "min", 2)
    for epoch, rmse in enumerate([3.0, 2.0, 2.5, 1.0, 1.5], start=1):
        rule.update(epoch, {}, {"rmse": rmse})
    assert not rule.should_stop and rule.best_epoch == 4
    rule.update(6, {"rmse": 0.1}, {})  # training metrics do not count once validation reported it
    assert not rule.should_stop
    rule.update(7, {}, {"rmse": None})  # a non-finite value never improves
    assert rule.should_stop and rule.stop_epoch == 7 and rule.stopped_early


@pytest.mark.parametrize(("kwargs", "match"), [({"patience": 0}, "patience"), ({"eval_every": 0}, "eval_every"),
                                               ({"n_epochs": "10"}, "n_epochs"), ({"patience": True}, "patience")])
def test_trainer_refuses_bad_early_stopping_options(db_path: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Trainer(_plateau, db=db_path, **kwargs)
