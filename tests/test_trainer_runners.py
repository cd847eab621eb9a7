"""End to end with real training code (jobtrack.demo) under the eager, thread and process runners.

fit → predict with its model_run_id → fit_predict; results and best epochs checked against the
reported epochs; export files and source views (read with plain csv and sqlite3) checked against
each other and the test table; registry, logs and show_jobs. The worker runner is in test_worker.py.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import jobfuncs
from jobtrack import (
    TASK_TYPES,
    Dataset,
    DuplicateName,
    InvalidArgument,
    JobManager,
    JobMonitor,
    ModelNotReady,
    Trainer,
    demo,
    testing,
)
from proc import run_python, wait_until

EPOCHS = 5


def _best(epochs: list[dict[str, Any]], metric: str, mode: str) -> tuple[int, float]:
    """The first reported epoch with the best validation value (my own computation, not jobtrack's)."""
    values = [(e["epoch"], e["validation"][metric]) for e in epochs]
    best_value = max(v for _, v in values) if mode == "max" else min(v for _, v in values)
    return next((e, v) for e, v in values if v == best_value)


def _in_memory() -> Dataset:
    return Dataset("churn", "binary_classification", "m1", tables={
        "train": demo.make_rows(90, seed=7), "validation": demo.make_rows(30, seed=8),
        "test": demo.make_rows(30, seed=9)})


def _check_training(status: dict[str, Any], monitor: JobMonitor, job_type: str, dataset: Dataset) -> None:
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert status["job_type"] == job_type == monitor.job_type
    assert status["experiment_name"] == "churn_binary_classification_m1" == monitor.experiment_name
    assert status["model_run_id"] == monitor.model_run_id
    result = status["result"]
    assert [e["epoch"] for e in result["epochs"]] == list(range(1, EPOCHS + 1))
    assert all(set(e) == {"epoch", "train", "validation"} and "roc_auc" in e["validation"] for e in result["epochs"])
    assert result["eval_metric"] == "roc_auc"
    assert (result["best_epoch"], result["best_metric"]) == _best(result["epochs"], "roc_auc", "max")
    summary = result["summary"] if job_type == "train" else result["summary"]["train"]
    assert summary["train_rows"] == len(dataset.table("train"))


@pytest.mark.parametrize("tables", ["files", "memory"])
@pytest.mark.parametrize("runner", ["eager", "thread", "process"])
def test_fit_then_predict_then_fit_predict_end_to_end(db_path: str, dataset: Dataset, runner: str, tables: str) -> None:
    if tables == "memory":
        dataset = _in_memory()
    test_rows = dataset.table("test")
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner=runner, config={"epochs": EPOCHS})

    train = trainer.fit(dataset)
    assert train.job_type == "train" and train.model_run_id and train.model_run_id.startswith("mr_")
    if runner == "eager":
        assert train.get_status()["status"] == "COMPLETED"  # ran inside fit()
    _check_training(dict(testing.assert_completed(train)), train, "train", dataset)

    pred = trainer.predict(f"pred_{runner}_{tables}", model_run_id=train.model_run_id)
    if runner == "eager":
        assert pred.get_status()["status"] == "COMPLETED"
    pstatus = testing.assert_completed(pred)
    assert pstatus["job_type"] == pred.job_type == "inference"
    assert pstatus["model_run_id"] == pred.model_run_id == train.model_run_id
    assert pstatus["result"]["summary"]["rows"] == len(test_rows)
    assert "epochs" not in pstatus["result"] and "best_epoch" not in pstatus["result"]
    jobfuncs.check_predictions(pred, test_rows)
    assert set(pstatus["export_paths"]) == set(pstatus["source_views"]) == {"predictions"}  # no embeddings asked
    log = io.StringIO()
    pred.stream_logs(file=log)
    assert "embeddings export skipped" in log.getvalue()

    both = trainer.fit_predict(dataset, f"both_{runner}_{tables}", extract_embeddings=True)
    bstatus = testing.assert_completed(both)
    _check_training(dict(bstatus), both, "train_inference", dataset)
    assert both.model_run_id not in (None, train.model_run_id)
    assert set(bstatus["result"]["summary"]) == {"train", "predict"}
    jobfuncs.check_predictions(both, test_rows)
    assert set(bstatus["export_paths"]) == set(bstatus["source_views"]) == {"predictions", "embeddings"}
    from_view = [(r["id"], json.loads(r["embedding"])) for r in testing.exported_rows(both, "embeddings")]
    with open(bstatus["export_paths"]["embeddings"], newline="", encoding="utf-8") as fh:
        from_file = [(int(r["id"]), json.loads(r["embedding"])) for r in csv.DictReader(fh)]
    assert from_file == from_view
    assert [i for i, _ in from_view] == [r["id"] for r in test_rows]
    assert len({len(e) for _, e in from_view}) == 1  # one vector length
    assert all(isinstance(x, float) for _, e in from_view for x in e)

    listed = JobManager(db_path).show_jobs()
    assert [s["job_id"] for s in listed] == [both.job_id, pred.job_id, train.job_id]
    assert [s["job_type"] for s in listed] == ["train_inference", "inference", "train"]
    assert all(s["status"] == "COMPLETED" for s in listed)


def test_model_run_id_is_known_before_training_completes(db_path: str, dataset: Dataset, tmp_path: Path) -> None:
    release = tmp_path / "release"
    trainer = Trainer(jobfuncs.train_until_released, jobfuncs.predict_test_table, db=db_path,
                      config={"release": str(release)})
    train = trainer.fit(dataset)
    assert train.model_run_id and train.get_status()["model_run_id"] == train.model_run_id
    assert JobManager(db_path).fetch_job(train.job_id).model_run_id == train.model_run_id
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT job_id FROM model_runs WHERE id = ?", (train.model_run_id,)).fetchone() == (
            train.job_id,)
    finally:
        conn.close()
    try:
        testing.wait_for_epochs(train, 1)  # RUNNING, and it stays so until released
        with pytest.raises(ModelNotReady, match="RUNNING"):
            trainer.predict("too_early", model_run_id=train.model_run_id)
    finally:
        release.touch()
    assert train.wait(timeout=30)["status"] == "COMPLETED"
    pred = trainer.predict("in_time", model_run_id=train.model_run_id)
    assert pred.model_run_id == train.model_run_id
    assert pred.wait(timeout=30)["model_run_id"] == train.model_run_id


def test_predict_with_another_test_table_or_dataset(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    train = trainer.fit(dataset)
    other = demo.make_rows(7, seed=99)
    jobfuncs.check_predictions(trainer.predict("by_table", model_run_id=train.model_run_id, test_table=other), other)
    other_ds = Dataset("churn", "binary_classification", "m1", tables={"test": demo.make_rows(4, seed=98)})
    by_ds = trainer.predict("by_dataset", dataset=other_ds, model_run_id=train.model_run_id)
    jobfuncs.check_predictions(by_ds, other_ds.table("test"))


@pytest.mark.parametrize("task_type", sorted(TASK_TYPES))
def test_best_epoch_is_a_reported_epoch_in_each_task_types_direction(db_path: str, task_type: str) -> None:
    curve = [[10, 0.4], [20, 0.9], [30, 0.1], [40, 0.6], [50, 0.9]]
    ds = Dataset("d", task_type, "t", tables={"train": [{"x": 1}]})
    result = Trainer(jobfuncs.train_curve, db=db_path, runner="eager", config={"curve": curve}).fit(ds) \
        .get_status()["result"]
    metric, mode = TASK_TYPES[task_type].eval_metric, TASK_TYPES[task_type].mode
    assert result["eval_metric"] == metric
    assert [(e["epoch"], e["validation"][metric]) for e in result["epochs"]] == [tuple(p) for p in curve]
    expected = (20, 0.9) if mode == "max" else (30, 0.1)  # ties keep the earliest epoch
    assert (result["best_epoch"], result["best_metric"]) == expected == _best(result["epochs"], metric, mode)


def test_register_model_key_feeds_predict(db_path: str, dataset: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    train = trainer.fit(dataset)
    key = train.register_model("churn-model", "v1", comment="first try")
    assert "churn-model:v1" in key and key in capsys.readouterr().out
    by_key = trainer.predict("from_key", registered_model_key=key)
    assert by_key.model_run_id == train.model_run_id
    by_id = trainer.predict("from_id", model_run_id=train.model_run_id)
    test_rows = dataset.table("test")
    assert jobfuncs.check_predictions(by_key, test_rows) == jobfuncs.check_predictions(by_id, test_rows)

    conn = sqlite3.connect(db_path)
    before = conn.execute("SELECT count(*) FROM registered_models").fetchone()
    with pytest.raises(DuplicateName):
        trainer.fit(dataset).register_model("churn-model", "v1")
    with pytest.raises(InvalidArgument, match="inference"):
        by_key.register_model("churn-model", "v2")
    with pytest.raises(InvalidArgument):
        train.register_model("churn model", "v2")
    assert conn.execute("SELECT count(*) FROM registered_models").fetchone() == before
    conn.close()

    both = trainer.fit_predict(dataset, "both")
    key2 = both.register_model("churn-model", "v2")
    assert trainer.predict("from_key2", registered_model_key=key2).model_run_id == both.model_run_id


def test_register_model_of_an_unfinished_or_failed_job_is_refused(db_path: str, dataset: Dataset) -> None:
    queued = Trainer(demo.train, db=db_path, runner="worker").fit(dataset)
    with pytest.raises(ModelNotReady, match="QUEUED"):
        queued.register_model("m", "v1")
    failed = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3, "fail_at_epoch": 2}).fit(dataset)
    with pytest.raises(ModelNotReady, match="FAILED"):
        failed.register_model("m", "v1")


def test_stream_logs_follows_the_job_until_it_ends(db_path: str, dataset: Dataset) -> None:
    job = Trainer(demo.train, db=db_path, config={"epochs": 4, "epoch_pause_s": 0.01}).fit(dataset)
    out = io.StringIO()
    job.stream_logs(file=out, poll_interval=0.01)  # follows until the job ends
    assert job.get_status()["status"] == "COMPLETED"
    lines = [line for line in out.getvalue().splitlines() if "validation roc_auc=" in line]
    assert [line.split("epoch ")[1].split(":")[0] for line in lines] == ["1", "2", "3", "4"]


def _run_back_to_back(db_path: str, runner: str) -> list[JobMonitor]:
    ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
    trainer = Trainer(jobfuncs.train_slow, db=db_path, runner=runner, max_workers=1,
                      config={"epochs": 3, "pause_s": 0.01})
    jobs = [trainer.fit(ds) for _ in range(4)]  # submitted while the first one starts
    for job in jobs:
        status = job.wait(timeout=10)
        assert status["status"] == "COMPLETED", (status["result"].get("error"), job.events())
    return jobs


def _check_one_at_a_time_in_order(db_path: str, jobs: list[JobMonitor]) -> None:
    conn = sqlite3.connect(db_path)
    try:
        events = conn.execute("SELECT job_id, to_status FROM job_events WHERE to_status != 'QUEUED' ORDER BY id")
        order = [tuple(e) for e in events]
    finally:
        conn.close()
    # claims in submission order, and each job ends before the next one starts
    assert order == [(j.job_id, s) for j in jobs for s in ("RUNNING", "COMPLETED")]
    starts = [next(e.at for e in j.events() if e.to_status == "RUNNING") for j in jobs]
    assert starts == sorted(starts)


def test_thread_runner_runs_jobs_one_at_a_time_in_submission_order(db_path: str) -> None:
    _check_one_at_a_time_in_order(db_path, _run_back_to_back(db_path, "thread"))


def test_process_runner_runs_jobs_submitted_back_to_back(db_path: str) -> None:
    # Submitting while the runner thread forks the previous job's child must neither hang nor fail a job.
    _check_one_at_a_time_in_order(db_path, _run_back_to_back(db_path, "process"))


POOL_WORKER_SUBMITS = """
import multiprocessing, sys
from jobtrack import Dataset, Trainer

def submit(db):
    ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
    try:
        Trainer(lambda ctx: None, db=db, runner="process", provenance=False).fit(ds).wait(timeout=30)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "submitted"

with multiprocessing.get_context("fork").Pool(1) as pool:
    print(pool.apply(submit, (sys.argv[1],)))
"""


def test_process_runner_in_a_pool_worker_is_refused_before_a_job_is_written(db_path: str) -> None:
    # A multiprocessing.Pool worker is daemonic and may not start children: the job used to stay QUEUED.
    out = run_python(POOL_WORKER_SUBMITS, db_path, timeout=60)
    assert out.stdout.startswith("InvalidArgument: runner='process' cannot start a child process here"), out
    assert "runner='thread'" in out.stdout
    assert JobManager(db_path, create=True).show_jobs() == []


FORK_REFUSED = """
import errno, json, multiprocessing.process, sys
from jobtrack import Dataset, Trainer

def refuse(self):
    raise OSError(errno.ENOMEM, "Cannot allocate memory")

multiprocessing.process.BaseProcess.start = refuse  # fork refused (a large process, strict overcommit)
ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
st = Trainer(lambda ctx: None, db=sys.argv[1], runner="process", provenance=False).fit(ds).wait(timeout=30)
print(json.dumps([st["status"], st["result"].get("error", {}).get("message")]))
"""


def test_a_process_job_whose_child_cannot_be_started_ends_failed(db_path: str) -> None:
    out = run_python(FORK_REFUSED, db_path, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["FAILED", "[Errno 12] Cannot allocate memory"], out


def test_more_workers_are_opt_in_and_run_jobs_at_once(db_path: str) -> None:
    ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
    trainer = Trainer(jobfuncs.train_slow, db=db_path, max_workers=2, config={"pause_s": 0.01})
    a, b = trainer.fit(ds), trainer.fit(ds)
    wait_until(lambda: a.get_status()["status"] == b.get_status()["status"] == "RUNNING", timeout=20,
               message="both jobs running at once")
    a.cancel()
    b.cancel()
    assert a.wait(timeout=20)["status"] == b.wait(timeout=20)["status"] == "CANCELED"


def test_each_in_process_job_gets_its_own_copy_of_the_config(db_path: str) -> None:
    seen: list[tuple[float, list[int], bool]] = []

    def train(ctx: Any) -> None:
        seen.append((ctx.config["opt"]["lr"], list(ctx.config["layers"]), "added" in ctx.config))
        ctx.config["opt"]["lr"] *= 10  # code that edits its config in place
        ctx.config["layers"].append(0)
        ctx.config["added"] = True

    ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
    caller = {"opt": {"lr": 0.1}, "layers": [1]}
    trainer = Trainer(train, db=db_path, runner="eager", config=caller)
    for _ in range(2):
        assert trainer.fit(ds).get_status()["status"] == "COMPLETED"
    assert seen == [(0.1, [1], False)] * 2  # the second job saw none of the first one's edits
    assert caller == {"opt": {"lr": 0.1}, "layers": [1]} == trainer.config

    lock = threading.Lock()  # an object (a model, a lock) is the caller's own; the containers around it are copied
    shared: list[Any] = []

    def use(ctx: Any) -> None:
        shared.append(ctx.config["lock"])
        ctx.config["opt"]["lr"] = 1.0

    plain = {"lock": lock, "opt": {"lr": 0.1}}
    job = Trainer(use, db=db_path, runner="eager", config=plain).fit(ds)
    assert job.get_status()["status"] == "COMPLETED" and shared == [lock] and shared[0] is lock
    assert plain["opt"] == {"lr": 0.1}  # the dict next to the lock was the job's own


def test_show_jobs_pages_by_default_and_shows_all_with_limit_none(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="worker")  # only queues: cheap to make many
    ids = {trainer.fit(dataset).job_id for _ in range(130)}
    page = JobManager(db_path).show_jobs()  # a default limit of 100 (#14)
    assert len(page) == 100 and page.has_more and page.next_offset == 100
    rest = JobManager(db_path).show_jobs(offset=page.next_offset)
    assert len(rest) == 30 and not rest.has_more and {s["job_id"] for s in [*page, *rest]} == ids
    shown = JobManager(db_path).show_jobs(limit=None)
    assert len(shown) == 130 and {s["job_id"] for s in shown} == ids
