"""Trainer, Dataset and the runners with real training code: argument rules, results, exports, faults."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from jobtrack import (
    TASK_TYPES,
    Dataset,
    DuplicateName,
    InvalidArgument,
    JobCanceled,
    JobManager,
    JobtrackError,
    ModelNotFound,
    ModelNotReady,
    NotSerializable,
    RunContext,
    Trainer,
    demo,
    testing,
)
from proc import run_python, wait_until


def _counts(db: str) -> tuple[int, int, int]:
    if not os.path.exists(db):
        return (0, 0, 0)
    conn = sqlite3.connect(db)
    try:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                     for t in ("jobs", "job_events", "model_runs"))
    finally:
        conn.close()


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, str]:
    return demo.write_csv_tables(tmp_path / "data", n=90)


@pytest.fixture
def dataset(tables: dict[str, str]) -> Dataset:
    return Dataset("churn", "binary_classification", "m1", tables=tables)


# -- Dataset -------------------------------------------------------------------------------------


def test_task_types_and_their_metrics() -> None:
    assert {name: (t.eval_metric, t.mode) for name, t in TASK_TYPES.items()} == {
        "binary_classification": ("roc_auc", "max"),
        "multiclass_classification": ("macro_f1", "max"),
        "multilabel_classification": ("multilabel_auroc_macro", "max"),
        "regression": ("rmse", "min"),
        "link_prediction": ("link_prediction_map", "max"),
        "repeated_link_prediction": ("link_prediction_map", "max"),
    }
    assert Dataset("shop", "regression", "price").experiment_name == "shop_regression_price"


@pytest.mark.parametrize("args", [
    ("shop", "ranking", "t"), ("my shop", "regression", "t"), ("shop", "regression", "a/b"),
    (".hidden", "regression", "t"), ("", "regression", "t"), (7, "regression", "t"), ("..", "regression", "t"),
])
def test_bad_dataset_names_and_task_types_are_refused(args: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidArgument) as info:
        Dataset(*args)
    assert isinstance(info.value, ValueError)


def test_bad_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="Unknown table"):
        Dataset("d", "regression", "t", tables={"holdout": [{"x": 1}]})
    with pytest.raises(InvalidArgument, match="does not exist"):
        Dataset("d", "regression", "t", tables={"train": str(tmp_path / "missing.csv")})
    with pytest.raises(InvalidArgument, match="list of dicts"):
        Dataset("d", "regression", "t", tables={"train": 42})  # type: ignore[dict-item]


def test_csv_tables_read_numbers_as_numbers(tables: dict[str, str]) -> None:
    row = Dataset("d", "binary_classification", "t", tables=tables).table("test")[0]
    assert isinstance(row["id"], int) and isinstance(row["x1"], float) and row["label"] in (0, 1)


# -- argument rules: refused before anything is written -----------------------------------------


def test_every_argument_rule_is_checked_before_anything_is_written(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    train = trainer.fit(dataset)
    queued = Trainer(demo.train, db=db_path, runner="worker").fit(dataset)
    before = _counts(db_path)
    no_test = Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(20, seed=1)})
    cases: list[tuple[type[BaseException], Any]] = [
        (InvalidArgument, lambda: trainer.predict("a")),
        (InvalidArgument, lambda: trainer.predict("a", model_run_id=train.model_run_id, registered_model_key="k:v")),
        (InvalidArgument, lambda: trainer.predict("a", dataset=dataset, test_table=[{"x": 1}],
                                                  model_run_id=train.model_run_id)),
        (InvalidArgument, lambda: trainer.predict("a", dataset=no_test, model_run_id=train.model_run_id)),
        (ModelNotFound, lambda: trainer.predict("a", model_run_id="mr_nope")),
        (ModelNotFound, lambda: trainer.predict("a", registered_model_key="nope:v1")),
        (ModelNotReady, lambda: trainer.predict("a", model_run_id=queued.model_run_id)),
        (InvalidArgument, lambda: trainer.predict("bad alias", model_run_id=train.model_run_id)),
        (InvalidArgument, lambda: trainer.predict("a", output_config={"format": "pickle"},
                                                  model_run_id=train.model_run_id)),
        (InvalidArgument, lambda: trainer.predict("a", output_config={"colour": "red"},
                                                  model_run_id=train.model_run_id)),
        (InvalidArgument, lambda: trainer.fit_predict(no_test, "a")),
        (InvalidArgument, lambda: trainer.fit("not a dataset")),
        (InvalidArgument, lambda: Trainer(demo.train, db=db_path).predict("a", model_run_id=train.model_run_id)),
        (InvalidArgument, lambda: Trainer(demo.train, db=db_path, runner="bogus")),
        (InvalidArgument, lambda: Trainer(lambda ctx: None, db=db_path, runner="worker")),
        (InvalidArgument, lambda: Trainer(demo.train, db=db_path, runner="worker").fit(no_test)),
        (NotSerializable, lambda: Trainer(demo.train, db=db_path, runner="worker", config={"f": object()})),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, JobtrackError)
    assert _counts(db_path) == before


def test_an_output_alias_with_exports_cannot_be_reused(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    trainer.fit_predict(dataset, "once")
    before = _counts(db_path)
    with pytest.raises(DuplicateName):
        trainer.fit_predict(dataset, "once")
    assert _counts(db_path) == before


# -- real training code under each runner --------------------------------------------------------


@pytest.mark.parametrize("runner", ["eager", "thread", "process"])
def test_fit_then_predict_then_fit_predict(db_path: str, dataset: Dataset, runner: str) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner=runner, config={"epochs": 6})
    train = trainer.fit(dataset)
    assert train.model_run_id and train.job_type == "train"
    if runner == "eager":
        assert train.get_status()["status"] == "COMPLETED"
    status = testing.assert_completed(train)
    result = status["result"]
    aucs = {e["epoch"]: e["validation"]["roc_auc"] for e in result["epochs"]}
    assert len(aucs) == 6 and result["eval_metric"] == "roc_auc"
    assert result["best_metric"] == max(aucs.values()) and aucs[result["best_epoch"]] == result["best_metric"]
    assert result["summary"]["train_rows"] == 90

    pred = trainer.predict(f"out_{runner}", model_run_id=train.model_run_id)
    pstatus = testing.assert_completed(pred)
    assert pred.job_type == "inference" and pstatus["model_run_id"] == train.model_run_id
    rows = testing.exported_rows(pred)
    assert [r["id"] for r in rows] == [r["id"] for r in dataset.table("test")]
    with open(pstatus["export_paths"]["predictions"], encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "id,probability" and len(lines) == 31
    assert [float(line.split(",")[1]) for line in lines[1:]] == pytest.approx([r["probability"] for r in rows])
    assert "embeddings" not in pstatus["export_paths"]
    out = io.StringIO()
    pred.stream_logs(file=out)
    assert "embeddings export skipped" in out.getvalue()

    both = trainer.fit_predict(dataset, f"both_{runner}", extract_embeddings=True)
    bstatus = testing.assert_completed(both)
    assert both.job_type == "train_inference" and both.model_run_id not in (None, train.model_run_id)
    assert set(bstatus["result"]["summary"]) == {"train", "predict"}
    assert set(bstatus["export_paths"]) == set(bstatus["source_views"]) == {"predictions", "embeddings"}
    assert len(testing.exported_rows(both, "embeddings")) == 30


def test_best_epoch_follows_the_metric_direction(db_path: str) -> None:
    def train(ctx: RunContext) -> None:
        for epoch, rmse in zip((10, 20, 30), (3.0, 1.0, 2.0)):
            ctx.log_epoch(epoch, validation={"rmse": rmse})

    job = Trainer(train, db=db_path, runner="eager").fit(Dataset("h", "regression", "price", tables={"train": []}))
    result = job.get_status()["result"]
    assert (result["best_epoch"], result["best_metric"]) == (20, 1.0)


def test_registry_keys_feed_predict_and_duplicates_are_refused(db_path: str, dataset: Dataset,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    train = trainer.fit(dataset)
    key = train.register_model("churn", "v1", comment="first")
    assert key == "churn:v1" and "churn:v1" in capsys.readouterr().out
    pred = trainer.predict("from_registry", registered_model_key=key)
    assert pred.model_run_id == train.model_run_id and pred.get_status()["status"] == "COMPLETED"
    with pytest.raises(DuplicateName):
        trainer.fit(dataset).register_model("churn", "v1")
    with pytest.raises(InvalidArgument):
        pred.register_model("churn", "v2")
    failed = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3, "fail_at_epoch": 1}).fit(dataset)
    with pytest.raises(ModelNotReady):
        failed.register_model("churn", "v3")


def test_show_jobs_and_stream_logs(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3})
    jobs = [trainer.fit(dataset) for _ in range(2)]
    shown = JobManager(db_path).show_jobs()
    assert [s["job_id"] for s in shown] == [j.job_id for j in reversed(jobs)]
    out = io.StringIO()
    jobs[0].stream_logs(file=out)
    assert out.getvalue().count("validation roc_auc=") == 3


def test_thread_runner_runs_jobs_in_submission_order(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, db=db_path, config={"epochs": 2})
    jobs = [trainer.fit(dataset) for _ in range(4)]
    jobs[-1].wait(timeout=60)
    starts = [[e.at for e in j.events() if e.to_status == "RUNNING"][0] for j in jobs]
    ends = [[e.at for e in j.events() if e.to_status == "COMPLETED"][0] for j in jobs]
    assert starts == sorted(starts)
    assert all(end <= next_start for end, next_start in zip(ends, starts[1:]))  # one at a time


# -- failure, cancel, and code that cannot run ---------------------------------------------------


def test_code_that_raises_fails_the_job_with_its_error_and_keeps_the_epochs(db_path: str, dataset: Dataset) -> None:
    job = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 5, "fail_at_epoch": 3}).fit(dataset)
    status = job.get_status()
    assert status["status"] == "FAILED" and len(status["result"]["epochs"]) == 2
    error = status["result"]["error"]
    assert error["type"] == "RuntimeError" and error["message"] == "simulated failure at epoch 3"
    assert "demo.py" in error["traceback"]


def test_cancel_mid_training_keeps_the_epochs_even_through_except_exception(db_path: str) -> None:
    def stubborn(ctx: RunContext) -> None:
        for epoch in range(100_000):
            try:
                ctx.log_epoch(epoch, train={"loss": 1.0})
            except Exception:  # noqa: BLE001 - the point: a broad except must not swallow a cancel
                pass
            testing_pause()

    job = Trainer(stubborn, db=db_path).fit(Dataset("s", "regression", "t", tables={"train": []}))
    testing.wait_for_epochs(job, 3)
    job.cancel()
    final = job.wait(timeout=30)
    assert final["status"] == "CANCELED" and len(final["result"]["epochs"]) >= 3
    assert job.events()[-1].reason == "canceled by user"
    assert job.cancel() == "CANCELED"  # terminal: unchanged


def testing_pause() -> None:
    import time

    time.sleep(0.005)


def test_a_queued_job_canceled_before_its_turn_never_runs(db_path: str, dataset: Dataset) -> None:
    ran: list[str] = []

    def train(ctx: RunContext) -> None:
        ran.append(ctx.job_id)
        for epoch in range(100_000):
            ctx.log_epoch(epoch)
            testing_pause()

    trainer = Trainer(train, db=db_path)
    first, second = trainer.fit(dataset), trainer.fit(dataset)
    testing.wait_for_status(first, "RUNNING")
    assert second.cancel() == "CANCELED"
    first.cancel()
    first.wait(timeout=30)
    assert ran == [first.job_id] and second.get_status()["status"] == "CANCELED"


def test_result_grows_while_the_job_runs(db_path: str, dataset: Dataset) -> None:
    job = Trainer(demo.train, db=db_path, config={"epochs": 10_000, "epoch_pause_s": 0.01}).fit(dataset)
    first = len(testing.wait_for_epochs(job, 1))
    later = len(testing.wait_for_epochs(job, first + 3))
    assert job.get_status()["status"] == "RUNNING" and later > first
    job.cancel()
    job.wait(timeout=30)


@pytest.mark.parametrize(("how", "expected"), [("exit", "exited with code 7"), ("kill", "SIGKILL")])
def test_process_runner_survives_a_crashing_job(db_path: str, how: str, expected: str) -> None:
    def crash(ctx: RunContext) -> None:
        ctx.log_epoch(1, train={"loss": 1.0})
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), signal.SIGKILL)

    job = Trainer(crash, db=db_path, runner="process").fit(Dataset("c", "regression", "t", tables={"train": []}))
    status = job.wait(timeout=60)
    assert status["status"] == "FAILED" and expected in job.events()[-1].reason
    assert status["result"]["error"]["type"] == "RunnerExited" and len(status["result"]["epochs"]) == 1


def test_process_runner_cancel_reaches_the_child(db_path: str, dataset: Dataset) -> None:
    job = Trainer(demo.train, db=db_path, runner="process",
                  config={"epochs": 10_000, "epoch_pause_s": 0.01}).fit(dataset)
    testing.wait_for_epochs(job, 2)
    job.cancel()
    assert job.wait(timeout=30)["status"] == "CANCELED"


SUBMIT_AND_DIE = """
import os, sys
from jobtrack import Dataset, Trainer, demo
ds = Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(30, seed=1)})
trainer = Trainer(demo.train, db=sys.argv[1], config={"epochs": 10_000, "epoch_pause_s": 0.05})
first = trainer.fit(ds)
queued = trainer.fit(ds)
print(first.job_id, queued.job_id, flush=True)
os._exit(0)  # the thread runner dies with the process, its queue unrun
"""


def test_jobs_of_a_process_that_died_read_failed(db_path: str) -> None:
    first, queued = run_python(SUBMIT_AND_DIE, db_path).stdout.split()
    manager = JobManager(db_path)
    assert manager.fetch_job(queued).get_status()["status"] == "FAILED"
    assert manager.fetch_job(queued).events()[-1].reason == "submitter lost"
    assert manager.fetch_job(first).get_status()["status"] == "FAILED"
    assert manager.fetch_job(first).events()[-1].reason in ("runner lost", "submitter lost")


def test_a_worker_job_whose_code_no_longer_imports_fails(db_path: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "vanishing_model.py"
    module.write_text("def train(ctx):\n    return {'ok': True}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_model  # type: ignore[import-not-found]

    table = tmp_path / "t.csv"
    table.write_text("x\n1\n")
    job = Trainer(vanishing_model.train, db=db_path, runner="worker").fit(
        Dataset("v", "regression", "t", tables={"train": str(table)}))
    module.unlink()
    out = run_python("import sys\nfrom jobtrack.cli import main\nraise SystemExit(main(sys.argv[1:]))",
                     "worker", "--burst", "--db", db_path)
    assert "ran 1 job" in out.stdout
    status = job.get_status()
    assert status["status"] == "FAILED" and "Cannot import 'vanishing_model:train'" in job.events()[-1].reason
    sys.modules.pop("vanishing_model", None)


def test_job_canceled_is_not_an_exception() -> None:
    assert issubclass(JobCanceled, BaseException) and not issubclass(JobCanceled, Exception)


def test_wait_until_helper_is_bounded() -> None:
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, timeout=0.05, message="never")
