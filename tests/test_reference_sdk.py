"""Code written for the reference SDK runs unchanged (#22): its call sequence, materialized tables, error
names, four-part model keys and ``ModelManager``; permanent tables are read with plain ``sqlite3``."""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobtrack import (
    Dataset,
    DuplicateName,
    JobManager,
    JobManagerError,
    JobMonitorError,
    JobNotCompleted,
    JobNotFound,
    ModelInUse,
    ModelManager,
    ModelManagerError,
    ModelNotFound,
    ModelNotReady,
    TableExists,
    Trainer,
    ValidationError,
    demo,
)
from jobtrack.cli import main
from jobtrack.context import RunContext
from jobtrack.runners.worker import run_worker
from jobtrack.store import Store


def _sql(db: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(query, params).fetchall()
        conn.commit()
        return rows


def _tables(db: str) -> set[str]:
    return {name for (name,) in _sql(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def _jobs(db: str) -> int:
    return int(_sql(db, "SELECT COUNT(*) FROM jobs")[0][0]) if Path(db).exists() else 0


def _fail(ctx: RunContext) -> None:
    raise RuntimeError("the model file is corrupt")


# -- the reference tutorial, keyword for keyword ----------------------------------------------------------


def test_the_reference_tutorial_runs_keyword_for_keyword(tmp_path: Path) -> None:
    tables = demo.write_csv_tables(tmp_path / "data", n=90)
    dataset = Dataset("churn", "binary_classification", "next_month", tables=tables)
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 4})  # the database: $JOBTRACK_DB

    train_job = trainer.fit(dataset=dataset)
    assert train_job.get_status()["status"] in ("QUEUED", "RUNNING", "COMPLETED")
    train_job.wait(timeout=60)
    assert train_job.get_status()["status"] == "COMPLETED"
    assert train_job.model_run_id
    key = train_job.register_model("churn_model", "v1", "ANALYTICS", "PUBLIC")
    assert key == "ANALYTICS.PUBLIC.churn_model.v1"

    inference_job = trainer.predict(
        output_alias="EXPERIMENT_1",
        output_config={"format": "csv"},
        test_batch_size=128,
        dataset=dataset,
        registered_model_key="ANALYTICS.PUBLIC.churn_model.v1",
        extract_embeddings=True,
        materialize_results=True,
    )
    status = inference_job.get_status()  # materialize_results=True returned only once the job had ended
    assert status["status"] == "COMPLETED" and status["model_run_id"] == train_job.model_run_id
    made = {"predictions": "materialized_predictions_EXPERIMENT_1",
            "embeddings": "materialized_embeddings_EXPERIMENT_1"}
    assert inference_job.materialized_tables() == made
    assert inference_job.materialize_results() == made  # the reference's explicit call: idempotent

    db = trainer.db
    assert set(made.values()) <= _tables(db)  # tables, not views: plain sqlite3 sees them as such
    for kind, table in made.items():
        view = status["source_views"][kind]
        assert _sql(db, f"SELECT * FROM {table}") == _sql(db, f"SELECT * FROM {view}")
        assert len(_sql(db, f"SELECT * FROM {table}")) == 30  # the test table's rows, once each
    ids = [row[0] for row in _sql(db, "SELECT id FROM materialized_predictions_EXPERIMENT_1")]
    assert ids == list(range(30))

    manager = JobManager()
    assert {s["job_id"] for s in manager.show_jobs()} == {train_job.job_id, inference_job.job_id}
    fetched = manager.fetch_job(inference_job.job_id)
    assert fetched.get_status() == status
    assert manager.cancel_job(train_job.job_id) == "COMPLETED"  # a finished job is left as it is
    queued = Trainer(demo.train, demo.predict, runner="worker").fit(dataset=dataset)
    assert manager.cancel_job(queued.job_id) == "CANCELED"

    [entry] = [m for m in ModelManager().list_models() if m["model_run_id"] == train_job.model_run_id]
    assert entry["experiment_name"] == "churn_binary_classification_next_month"
    assert entry["registered"] == [{"key": key, "database_name": "ANALYTICS", "schema_name": "PUBLIC",
                                    "model_name": "churn_model", "version_name": "v1", "comment": None,
                                    "created_at": entry["registered"][0]["created_at"]}]


# -- materialize_results -----------------------------------------------------------------------------------


def test_materialize_results_defaults_to_false_and_then_returns_at_once(db_path: str, dataset: Dataset) -> None:
    assert inspect.signature(Trainer.predict).parameters["materialize_results"].default is False
    assert inspect.signature(Trainer.fit_predict).parameters["materialize_results"].default is False
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 2}, db=db_path, runner="worker")
    train = trainer.fit(dataset)
    run_worker(Store.open(db_path), burst=True)
    job = trainer.predict("later", model_run_id=train.model_run_id)  # the default: returns at once
    assert job.get_status()["status"] == "QUEUED" and job.materialized_tables() == {}
    assert not any(t.startswith("materialized_") for t in _tables(db_path))
    run_worker(Store.open(db_path), burst=True)
    assert job.materialize_results() == {"predictions": "materialized_predictions_later"}
    assert len(_sql(db_path, "SELECT * FROM materialized_predictions_later")) == 30


def test_fit_predict_with_materialize_results_true_blocks_until_the_tables_exist(db_path: str,
                                                                                 dataset: Dataset) -> None:
    job = Trainer(demo.train, demo.predict, config={"epochs": 2}, db=db_path).fit_predict(
        dataset, "both", materialize_results=True)
    assert job.get_status()["status"] == "COMPLETED"
    assert job.materialized_tables() == {"predictions": "materialized_predictions_both"}
    assert len(_sql(db_path, "SELECT * FROM materialized_predictions_both")) == 30


def test_materializing_a_failed_job_raises_a_job_monitor_error_and_creates_nothing(db_path: str,
                                                                                    dataset: Dataset) -> None:
    trainer = Trainer(demo.train, _fail, config={"epochs": 1}, db=db_path, runner="eager")
    train = trainer.fit(dataset)
    with pytest.raises(JobMonitorError) as caught:  # blocking predict: the job ended FAILED
        trainer.predict("broken", model_run_id=train.model_run_id, materialize_results=True)
    assert isinstance(caught.value, JobNotCompleted) and caught.value.status == "FAILED"
    failed = JobManager(db_path).fetch_job(caught.value.job_id)
    with pytest.raises(JobNotCompleted, match="FAILED, not COMPLETED"):
        failed.materialize_results()
    assert failed.materialized_tables() == {}
    assert not any(t.startswith("materialized_") for t in _tables(db_path))


def test_materialized_tables_survive_pruning_the_job_which_says_it_leaves_them(db_path: str, dataset: Dataset,
                                                                               capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    job = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager").fit_predict(
        dataset, "kept", extract_embeddings=True, materialize_results=True)
    before = _sql(db_path, "SELECT * FROM materialized_predictions_kept")
    export = Path(job.get_status()["export_paths"]["predictions"])

    assert main(["--db", db_path, "prune", "--older-than", "0s", "--dry-run"]) == 0
    assert "2 materialized table(s) would be left in place" in capsys.readouterr().out
    report = JobManager(db_path).prune("0s")
    assert job.job_id in report.removed
    assert sorted(report.tables) == ["materialized_embeddings_kept", "materialized_predictions_kept"]
    assert not export.exists() and "predictions_kept" not in {
        n for (n,) in _sql(db_path, "SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert _sql(db_path, "SELECT * FROM materialized_predictions_kept") == before
    # The alias is free again, but its tables are not replaced: a new job with it cannot materialize.
    with pytest.raises(TableExists):
        Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager").fit_predict(
            dataset, "kept", materialize_results=True)


# -- the reference's error names -----------------------------------------------------------------------------


def _any(value: Any) -> Any:
    """A value of the wrong type, passed on purpose."""
    return value


class _World:
    def __init__(self, db: str, dataset: Dataset) -> None:
        self.db = db
        self.dataset = dataset
        self.trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db, runner="eager")
        train = self.trainer.fit(dataset)
        self.run = train.model_run_id or ""
        self.no_test = Dataset("churn", "binary_classification", "m1", tables={"train": [{"id": 1, "x1": 0.0}]})
        self.trainer.predict("taken", model_run_id=self.run)
        _sql(db, "CREATE TABLE materialized_predictions_tabled (id INTEGER)")  # a table of the user's
        self.jobs = _jobs(db)


PREDICT_RULES: list[tuple[str, Callable[[_World], Any]]] = [
    ("exactly one model", lambda w: w.trainer.predict("a", dataset=w.dataset)),
    ("not both models", lambda w: w.trainer.predict("a", model_run_id=w.run, registered_model_key="x:y")),
    ("test_table only without dataset",
     lambda w: w.trainer.predict("a", dataset=w.dataset, test_table=[{"id": 1}], model_run_id=w.run)),
    ("a test table", lambda w: w.trainer.predict("a", dataset=w.no_test, model_run_id=w.run)),
    ("alias is a name", lambda w: w.trainer.predict("no spaces", model_run_id=w.run)),
    ("alias is free", lambda w: w.trainer.predict("taken", model_run_id=w.run)),
    ("tables are free", lambda w: w.trainer.predict("tabled", model_run_id=w.run, materialize_results=True)),
    ("output_config keys", lambda w: w.trainer.predict("a", {"path": "/tmp"}, model_run_id=w.run)),
    ("test_batch_size > 0", lambda w: w.trainer.predict("a", test_batch_size=0, model_run_id=w.run)),
    ("test_batch_size int", lambda w: w.trainer.predict("a", test_batch_size=_any("128"), model_run_id=w.run)),
    ("materialize flag", lambda w: w.trainer.predict("a", model_run_id=w.run, materialize_results=_any("yes"))),
    ("flatten flag", lambda w: w.trainer.predict("a", model_run_id=w.run, flatten_output=_any(1))),
    ("experiment needs test_table",
     lambda w: w.trainer.predict("a", experiment_name=w.dataset.experiment_name, model_run_id=w.run)),
    ("experiment is the model's",
     lambda w: w.trainer.predict("a", experiment_name="other_regression_x", test_table=[{"id": 1}],
                                 model_run_id=w.run)),
    ("experiment agrees with dataset",
     lambda w: w.trainer.predict("a", experiment_name="other_regression_x", dataset=w.dataset, model_run_id=w.run)),
    ("key format", lambda w: w.trainer.predict("a", registered_model_key=_any(42))),
]


@pytest.mark.parametrize(("rule", "call"), PREDICT_RULES, ids=[r for r, _ in PREDICT_RULES])
def test_except_validation_error_catches_every_argument_rule_of_predict(db_path: str, dataset: Dataset, rule: str,
                                                                         call: Callable[[_World], Any]) -> None:
    world = _World(db_path, dataset)
    caught = None
    try:
        call(world)
    except ValidationError as exc:  # as written for the reference SDK
        caught = exc
    assert caught is not None and str(caught), f"{rule}: no ValidationError"
    assert _jobs(db_path) == world.jobs  # refused before any row was written


def test_jobtracks_other_errors_carry_the_reference_names_of_the_same_situations(db_path: str) -> None:
    assert issubclass(JobNotFound, JobManagerError) and issubclass(JobNotFound, JobMonitorError)
    assert issubclass(ModelNotReady, JobMonitorError) and issubclass(JobNotCompleted, JobMonitorError)
    assert issubclass(ModelNotFound, ModelManagerError) and issubclass(ModelInUse, ModelManagerError)
    assert issubclass(TableExists, DuplicateName) and issubclass(TableExists, JobMonitorError)
    Store.open(db_path)  # a JobManager reads; it never creates the database (#13)
    with pytest.raises(JobManagerError) as caught:
        JobManager(db_path).fetch_job("job_missing")
    assert caught.value.code is None
    with pytest.raises(ModelManagerError):
        ModelManager(db_path).delete_model("e", "mr_missing")


# -- registry namespaces and ModelManager ----------------------------------------------------------------


def test_four_part_keys_are_namespaced_and_two_part_keys_keep_working(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager")
    train = trainer.fit(dataset)
    assert train.register_model("m", "v1", database_name="DB", schema_name="S1") == "DB.S1.m.v1"
    assert train.register_model("m", "v1", "DB", "S2", "the same name in another schema") == "DB.S2.m.v1"
    assert train.register_model("m", "v1") == "m:v1"
    with pytest.raises(DuplicateName):
        train.register_model("m", "v1", "DB", "S1")
    with pytest.raises(ValidationError, match="both database_name"):
        train.register_model("m", "v2", database_name="DB")
    with pytest.raises(ValidationError, match=r"(?s)database_name='my first model' alone.*comment="):
        train.register_model("m", "v2", "my first model")  # SPEC's register_model(name, version, comment=None)
    with pytest.raises(ValidationError, match="separates the parts"):
        train.register_model("m.x", "v2", "DB", "S1")
    for key in ("DB.S1.m.v1", "m:v1"):
        pred = trainer.predict(f"by_{key.replace(':', '_')}", registered_model_key=key)
        assert pred.get_status()["status"] == "COMPLETED" and pred.model_run_id == train.model_run_id
    with pytest.raises(ModelNotFound):
        trainer.predict("nope", registered_model_key="DB.S3.m.v1")


def test_model_manager_registers_lists_and_deletes_model_runs(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager")
    first, second = trainer.fit(dataset), trainer.fit(dataset)
    manager = ModelManager(db_path)
    experiment = dataset.experiment_name
    assert manager.register_model(first.model_run_id or "", experiment, "m", "v1", "DB", "S") == "DB.S.m.v1"
    with pytest.raises(ValidationError, match="belongs to experiment"):
        manager.register_model(first.model_run_id or "", "other_regression_x", "m", "v2", "DB", "S")
    listed = manager.list_models()
    assert [m["model_run_id"] for m in listed] == [second.model_run_id, first.model_run_id]  # newest first
    assert [r["key"] for r in listed[1]["registered"]] == ["DB.S.m.v1"] and listed[0]["registered"] == []

    model_dir = Path(Store.open(db_path).model_dir(first.model_run_id or ""))
    assert model_dir.is_dir()
    with pytest.raises(ValidationError, match="nothing was deleted"):
        manager.delete_model("other_regression_x", first.model_run_id or "")
    assert manager.delete_model(experiment, first.model_run_id or "") == ["DB.S.m.v1"]
    assert not model_dir.exists()
    assert [m["model_run_id"] for m in manager.list_models()] == [second.model_run_id]
    assert first.get_status()["status"] == "COMPLETED"  # the training job and its history stay
    with pytest.raises(ModelNotFound):
        trainer.predict("gone", registered_model_key="DB.S.m.v1")
    with pytest.raises(ModelManagerError):
        trainer.predict("gone", model_run_id=first.model_run_id)


def test_a_model_in_use_is_not_deleted(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="worker")
    queued = trainer.fit(dataset)
    with pytest.raises(ModelInUse, match="QUEUED"):
        ModelManager(db_path).delete_model(dataset.experiment_name, queued.model_run_id or "")
    assert len(ModelManager(db_path).list_models()) == 1


def test_jobtrack_models_lists_and_deletes_only_when_confirmed(db_path: str, dataset: Dataset,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    train = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager").fit(dataset)
    run = train.model_run_id or ""
    train.register_model("m", "v1", "DB", "S")
    capsys.readouterr()
    assert main(["models", "--db", db_path]) == 0
    out = capsys.readouterr().out
    assert "MODEL RUN" in out and run in out and "DB.S.m.v1" in out

    experiment = dataset.experiment_name
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["models", "delete", experiment, run, "--db", db_path]) == 2  # a script must say --yes (usage, #13)
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["models", "delete", experiment, run, "--db", db_path]) == 1
    assert len(ModelManager(db_path).list_models()) == 1
    assert main(["models", "delete", experiment, run, "--yes", "--db", db_path]) == 0
    assert f"deleted model run {run} (registered as DB.S.m.v1)" in capsys.readouterr().out
    assert ModelManager(db_path).list_models() == []


def test_materialized_tables_and_four_part_keys_on_postgres(pg_url: str, dataset: Dataset) -> None:
    from sqlalchemy import create_engine, text

    trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=pg_url, runner="eager")
    train = trainer.fit(dataset)
    train.register_model("m", "v1", "DB", "S")
    job = trainer.predict(output_alias="PG_1", registered_model_key="DB.S.m.v1", materialize_results=True)
    assert job.materialize_results() == {"predictions": "materialized_predictions_PG_1"}
    report = JobManager(pg_url).prune("0s")
    assert job.job_id in report.removed and report.tables == ["materialized_predictions_PG_1"]
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert len(conn.execute(text('SELECT * FROM "materialized_predictions_PG_1"')).all()) == 30
    engine.dispose()


def test_a_training_job_id_as_model_run_id_names_its_model_run(db_path: str, dataset: Dataset,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The reference's model_run_id is the training job's id, so ported code passes the job id: the error says which
    model run that job trained and how to pass it, in predict(), ModelManager and `jobtrack models delete`."""
    trainer = Trainer(demo.train, demo.predict, config={"epochs": 1}, db=db_path, runner="eager")
    train = trainer.fit(dataset)
    model_run_id = train.model_run_id or ""
    hint = f"model_run_id={model_run_id!r}"
    with pytest.raises(ModelNotFound, match=f"training job.*{hint}"):
        trainer.predict("by_job_id", model_run_id=train.job_id)
    with pytest.raises(ModelNotFound, match=hint):
        ModelManager(db_path).delete_model(dataset.experiment_name, train.job_id)
    with pytest.raises(ModelNotFound, match=hint):
        ModelManager(db_path).register_model(train.job_id, dataset.experiment_name, "m", "v1", "DB", "S")
    capsys.readouterr()
    assert main(["--db", db_path, "models", "delete", dataset.experiment_name, train.job_id, "--yes"]) == 1
    assert model_run_id in capsys.readouterr().err
    with pytest.raises(ModelNotFound) as plain:
        trainer.predict("unknown", model_run_id="mr_does_not_exist")
    assert "training job" not in str(plain.value)
