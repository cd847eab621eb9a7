"""Every Trainer argument rule raises a typed error at call time, before any row is written.

Each case checks the error's type and message, and that the jobs, job_events, model_runs and
registered_models tables (read with plain sqlite3) and the job files directory are unchanged.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobtrack import (
    Dataset,
    DuplicateName,
    InvalidArgument,
    JobtrackError,
    ModelNotFound,
    ModelNotReady,
    NotSerializable,
    Trainer,
    demo,
)

TABLES = ("jobs", "job_events", "model_runs", "registered_models", "job_epochs", "job_exports")


def _snapshot(db: str) -> tuple[Any, ...]:
    """Row counts of every table a call could write, plus the job directories on disk."""
    conn = sqlite3.connect(db)
    try:
        counts = tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)
        views = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'view'").fetchone()[0]
    finally:
        conn.close()
    jobs_dir = Path(f"{db}-files") / "jobs"
    files = tuple(sorted(os.listdir(jobs_dir))) if jobs_dir.is_dir() else ()
    return (*counts, views, files)


@dataclass
class World:
    """A database with a completed model, a queued one, a failed one, and one trained without a test table."""

    db: str
    tmp: Path
    trainer: Trainer
    dataset: Dataset
    no_test: Dataset
    done: str  # model_run_id of a COMPLETED train job (with exports under alias "taken")
    queued: str  # model_run_id of a train job left QUEUED (runner='worker', no worker runs)
    failed: str  # model_run_id of a FAILED train job
    canceled: str  # model_run_id of a CANCELED train job
    no_test_model: str  # COMPLETED model trained on a dataset without a test table


@pytest.fixture
def world(db_path: str, tmp_path: Path) -> World:
    tables = demo.write_csv_tables(tmp_path / "data", n=60)
    dataset = Dataset("churn", "binary_classification", "m1", tables=tables)
    no_test = Dataset("churn", "binary_classification", "m1",
                      tables={"train": tables["train"], "validation": tables["validation"]})
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    done = trainer.fit(dataset)
    assert done.get_status()["status"] == "COMPLETED"
    taken = trainer.predict("taken", model_run_id=done.model_run_id)
    assert taken.get_status()["status"] == "COMPLETED"
    done.register_model("churn", "v1")
    queued = Trainer(demo.train, db=db_path, runner="worker").fit(dataset)
    failed = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3, "fail_at_epoch": 1}).fit(dataset)
    assert failed.get_status()["status"] == "FAILED"
    canceled = Trainer(demo.train, db=db_path, runner="worker").fit(dataset)
    assert canceled.cancel() == "CANCELED"
    no_test_model = trainer.fit(no_test)
    assert no_test_model.get_status()["status"] == "COMPLETED"
    return World(db_path, tmp_path, trainer, dataset, no_test, done.model_run_id, queued.model_run_id,
                 failed.model_run_id, canceled.model_run_id, no_test_model.model_run_id)


def _in_memory(w: World) -> Dataset:
    return Dataset("mem", "binary_classification", "t",
                   tables={"train": demo.make_rows(20, seed=1), "test": demo.make_rows(5, seed=2)})


# (id, expected error, message fragments, call)
Case = tuple[str, type[BaseException], tuple[str, ...], Callable[[World], Any]]

CASES: list[Case] = [
    # predict: model reference
    ("predict-neither-model", InvalidArgument, ("exactly one", "model_run_id", "registered_model_key"),
     lambda w: w.trainer.predict("a")),
    ("predict-both-models", InvalidArgument, ("exactly one",),
     lambda w: w.trainer.predict("a", model_run_id=w.done, registered_model_key="churn:v1")),
    ("predict-unknown-model-run", ModelNotFound, ("mr_does_not_exist",),
     lambda w: w.trainer.predict("a", model_run_id="mr_does_not_exist")),
    ("predict-unknown-registered-key", ModelNotFound, ("churn:v9",),
     lambda w: w.trainer.predict("a", registered_model_key="churn:v9")),
    ("predict-model-queued", ModelNotReady, ("QUEUED", "not COMPLETED"),
     lambda w: w.trainer.predict("a", model_run_id=w.queued)),
    ("predict-model-failed", ModelNotReady, ("FAILED",),
     lambda w: w.trainer.predict("a", model_run_id=w.failed)),
    ("predict-model-canceled", ModelNotReady, ("CANCELED",),
     lambda w: w.trainer.predict("a", model_run_id=w.canceled)),
    # predict: test table
    ("predict-dataset-and-test-table", InvalidArgument, ("test_table", "dataset"),
     lambda w: w.trainer.predict("a", dataset=w.dataset, test_table=[{"x": 1}], model_run_id=w.done)),
    ("predict-dataset-without-test", InvalidArgument, ("no 'test' table",),
     lambda w: w.trainer.predict("a", dataset=w.no_test, model_run_id=w.done)),
    ("predict-training-dataset-without-test", InvalidArgument, ("no 'test' table",),
     lambda w: w.trainer.predict("a", model_run_id=w.no_test_model)),
    ("predict-missing-test-table-file", InvalidArgument, ("does not exist",),
     lambda w: w.trainer.predict("a", model_run_id=w.no_test_model, test_table=str(w.tmp / "gone.csv"))),
    ("predict-not-a-dataset", InvalidArgument, ("jobtrack.Dataset",),
     lambda w: w.trainer.predict("a", dataset={"test": "x.csv"}, model_run_id=w.done)),
    # predict: output alias
    *[(f"predict-bad-alias-{i}", InvalidArgument, ("output_alias", "not allowed"),
       lambda w, alias=alias: w.trainer.predict(alias, model_run_id=w.done))
      for i, alias in enumerate(["bad alias", "a/b", "..", ".hidden", "", "x;drop table jobs", None, 7])],
    ("predict-alias-with-exports", DuplicateName, ("taken", "already used"),
     lambda w: w.trainer.predict("taken", model_run_id=w.done)),
    ("predict-alias-differs-only-in-case", DuplicateName, ("already used",),
     lambda w: w.trainer.predict("TAKEN", model_run_id=w.done)),  # SQL names ignore case: same view
    # predict: output_config
    ("predict-output-config-unknown-key", InvalidArgument, ("colour", "format", "directory"),
     lambda w: w.trainer.predict("a", output_config={"colour": "red"}, model_run_id=w.done)),
    ("predict-output-config-pickle", InvalidArgument, ("pickle", "csv"),
     lambda w: w.trainer.predict("a", output_config={"format": "pickle"}, model_run_id=w.done)),
    ("predict-output-config-bad-directory", InvalidArgument, ("export directory",),
     lambda w: w.trainer.predict("a", output_config={"directory": str(Path(w.db))}, model_run_id=w.done)),
    ("predict-extract-embeddings-not-a-flag", InvalidArgument, ("extract_embeddings", "True or False", "'no'"),
     lambda w: w.trainer.predict("a", model_run_id=w.done, extract_embeddings="no")),
    ("predict-without-predict-function", InvalidArgument, ("no predict function",),
     lambda w: Trainer(demo.train, db=w.db, runner="eager").predict("a", model_run_id=w.done)),
    # fit / fit_predict
    ("fit-not-a-dataset", InvalidArgument, ("jobtrack.Dataset",), lambda w: w.trainer.fit("churn")),
    ("fit-dataset-without-train", InvalidArgument, ("no 'train' table",),
     lambda w: w.trainer.fit(Dataset("d", "regression", "t", tables={"test": [{"x": 1}]}))),
    ("fit-without-train-function", InvalidArgument, ("no train function",),
     lambda w: Trainer(predict=demo.predict, db=w.db).fit(w.dataset)),
    ("fit-predict-without-test", InvalidArgument, ("no 'test' table",),
     lambda w: w.trainer.fit_predict(w.no_test, "fresh")),
    ("fit-predict-bad-alias", InvalidArgument, ("output_alias",),
     lambda w: w.trainer.fit_predict(w.dataset, "no spaces")),
    ("fit-predict-alias-with-exports", DuplicateName, ("taken",),
     lambda w: w.trainer.fit_predict(w.dataset, "taken")),
    ("fit-predict-output-config-format", InvalidArgument, ("xlsx",),
     lambda w: w.trainer.fit_predict(w.dataset, "fresh", output_config={"format": "xlsx"})),
    ("fit-predict-output-config-key", InvalidArgument, ("path",),
     lambda w: w.trainer.fit_predict(w.dataset, "fresh", output_config={"path": "/tmp"})),
    ("fit-predict-extract-embeddings-not-a-flag", InvalidArgument, ("extract_embeddings", "True or False"),
     lambda w: w.trainer.fit_predict(w.dataset, "fresh", extract_embeddings="False")),
    ("fit-predict-without-predict-function", InvalidArgument, ("no predict function",),
     lambda w: Trainer(demo.train, db=w.db).fit_predict(w.dataset, "fresh")),
    # Trainer construction
    ("trainer-bogus-runner", InvalidArgument, ("bogus", "thread", "eager", "process", "worker"),
     lambda w: Trainer(demo.train, db=w.db, runner="bogus")),
    ("trainer-train-not-callable", InvalidArgument, ("train",),
     lambda w: Trainer("jobtrack.demo:train", db=w.db)),  # type: ignore[arg-type]
    ("trainer-zero-workers", InvalidArgument, ("max_workers",),
     lambda w: Trainer(demo.train, db=w.db, max_workers=0)),
    ("trainer-config-not-a-dict", InvalidArgument, ("config",),
     lambda w: Trainer(demo.train, db=w.db, config=[("epochs", 2)])),  # type: ignore[arg-type]
    # runner='worker': code must import, tables must be files, config must be JSON
    ("worker-lambda", InvalidArgument, ("importable", "lambda"),
     lambda w: Trainer(lambda ctx: None, db=w.db, runner="worker")),
    ("worker-lambda-predict", InvalidArgument, ("predict",),
     lambda w: Trainer(demo.train, lambda ctx: None, db=w.db, runner="worker")),
    ("worker-in-memory-tables", InvalidArgument, ("file",),
     lambda w: Trainer(demo.train, db=w.db, runner="worker").fit(_in_memory(w))),
    ("worker-in-memory-fit-predict", InvalidArgument, ("file",),
     lambda w: Trainer(demo.train, demo.predict, db=w.db, runner="worker").fit_predict(_in_memory(w), "fresh")),
    ("worker-in-memory-test-table", InvalidArgument, ("file",),
     lambda w: Trainer(demo.train, demo.predict, db=w.db, runner="worker").predict(
         "fresh", model_run_id=w.done, test_table=demo.make_rows(5, seed=4))),
    ("worker-config-object", NotSerializable, ("config",),
     lambda w: Trainer(demo.train, db=w.db, runner="worker", config={"f": object()})),
    ("worker-config-set", NotSerializable, ("config",),
     lambda w: Trainer(demo.train, db=w.db, runner="worker", config={"s": {1, 2}})),
]


@pytest.mark.parametrize(("error", "fragments", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_is_refused_with_a_typed_error_before_anything_is_written(
    world: World, error: type[BaseException], fragments: tuple[str, ...], call: Callable[[World], Any]
) -> None:
    before = _snapshot(world.db)
    with pytest.raises(error) as info:
        call(world)
    assert isinstance(info.value, JobtrackError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _snapshot(world.db) == before


def test_typed_errors_are_also_the_builtin_kinds(world: World) -> None:
    with pytest.raises(ValueError):
        world.trainer.predict("a")
    with pytest.raises(LookupError):
        world.trainer.predict("a", model_run_id="mr_nope")
    with pytest.raises(TypeError):
        Trainer(demo.train, db=world.db, runner="worker", config={"f": object()})
    with pytest.raises(ValueError):
        world.trainer.predict("taken", model_run_id=world.done)  # DuplicateName is an InvalidArgument


def test_worker_runner_refuses_a_function_from_a_nested_scope(world: World) -> None:
    def train(ctx: Any) -> None:
        return None

    before = _snapshot(world.db)
    with pytest.raises(InvalidArgument, match="importable"):
        Trainer(train, db=world.db, runner="worker")
    with pytest.raises(InvalidArgument, match="importable"):
        Trainer(demo.train, train, db=world.db, runner="worker")
    assert _snapshot(world.db) == before


def test_an_alias_of_a_job_without_exports_may_be_reused(world: World) -> None:
    def no_export(ctx: Any) -> None:
        raise RuntimeError("exports nothing")

    failed = Trainer(demo.train, no_export, db=world.db, runner="eager").predict("retry", model_run_id=world.done)
    assert failed.get_status()["status"] == "FAILED" and failed.get_status()["export_paths"] == {}
    again = world.trainer.predict("retry", model_run_id=world.done)
    assert again.get_status()["status"] == "COMPLETED"


def test_an_alias_in_use_by_an_unfinished_job_is_refused(world: World) -> None:
    worker = Trainer(demo.train, demo.predict, db=world.db, runner="worker")
    pending = worker.predict("pending", model_run_id=world.done)
    assert pending.get_status()["status"] == "QUEUED"
    before = _snapshot(world.db)
    with pytest.raises(DuplicateName):
        world.trainer.predict("pending", model_run_id=world.done)
    assert _snapshot(world.db) == before


def test_aliases_that_share_a_view_name_collide(world: World) -> None:
    world.trainer.predict("a-b", model_run_id=world.done)
    before = _snapshot(world.db)
    with pytest.raises(DuplicateName):
        world.trainer.predict("a_b", model_run_id=world.done)  # both would be the view predictions_a_b
    assert _snapshot(world.db) == before


def test_registered_key_of_a_completed_model_is_accepted(world: World) -> None:
    job = world.trainer.predict("via_key", registered_model_key="churn:v1")
    assert job.model_run_id == world.done and job.get_status()["status"] == "COMPLETED"


TRAIN_IN_MEMORY = """
import sys
from jobtrack import Dataset, Trainer, demo
ds = Dataset("mem", "binary_classification", "t",
             tables={"train": demo.make_rows(30, seed=1), "test": demo.make_rows(5, seed=2)})
job = Trainer(demo.train, demo.predict, db=sys.argv[1], runner="eager", config={"epochs": 1}).fit(ds)
assert job.get_status()["status"] == "COMPLETED"
print(job.model_run_id)
"""


def test_in_memory_training_tables_of_another_process_are_not_reused(world: World) -> None:
    from proc import run_python

    model_run_id = run_python(TRAIN_IN_MEMORY, world.db).stdout.strip()
    before = _snapshot(world.db)
    with pytest.raises(InvalidArgument) as info:
        world.trainer.predict("elsewhere", model_run_id=model_run_id)
    # the message must say why: the training tables were in the other process's memory (not "no tables")
    assert "memory" in str(info.value) and "test_table" in str(info.value), str(info.value)
    assert _snapshot(world.db) == before
    job = world.trainer.predict("elsewhere", model_run_id=model_run_id, test_table=demo.make_rows(4, seed=3))
    assert job.get_status()["status"] == "COMPLETED"


def _train_generator(ctx: Any) -> Any:
    yield ctx.log_epoch(0, validation={"roc_auc": 0.5})


async def _train_async(ctx: Any) -> None:
    ctx.log_epoch(0, validation={"roc_auc": 0.5})


@pytest.mark.parametrize("fn", [_train_generator, _train_async], ids=["generator", "async"])
@pytest.mark.parametrize("role", ["train", "predict"])
def test_a_function_whose_call_runs_no_code_is_refused(db_path: str, fn: Any, role: str) -> None:
    """Calling a generator or async function runs none of its body: the job completed having trained nothing."""
    train, predict = (fn, None) if role == "train" else (demo.train, fn)
    with pytest.raises(InvalidArgument, match=f"{role} is a(n async)? (generator )?function: calling it runs none"):
        Trainer(train, predict, db=db_path, runner="eager")
    assert not Path(db_path).exists()
