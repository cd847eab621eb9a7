"""What ML code produces is stored (#13): numpy and pandas scalars and arrays, datetimes, paths, tuples; NaN as null
everywhere; what cannot be stored is a typed error in the user's call, and never fails a finished training job;
a cap on results and summaries; a word when the evaluation metric is never reported; Trainer(eval_metric=)."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jobtrack import Dataset, InvalidArgument, JobManager, NotSerializable, RunContext, Trainer, jsonutil, testing
from jobtrack.errors import ResultTooLarge
from jobtrack.store import Store
from proc import run_python


def _dataset(task_type: str = "regression") -> Dataset:
    return Dataset("values", task_type, "t", tables={"train": [{"x": 1}], "test": [{"x": 1}, {"x": 2}]})


def _log(db_path: str, job_id: str) -> str:
    path = Store.open(db_path).job_dir(job_id) / "log.txt"
    return path.read_text(encoding="utf-8") if path.exists() else ""  # a job with nothing to say has no log


def _query(db_path: str, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql).fetchall()


# -- numpy, pandas and the standard library's values -------------------------------------------------------------


def test_numpy_summary_and_metrics_complete_and_read_back_as_plain_numbers(db_path: str) -> None:
    def train(ctx: RunContext) -> dict[str, Any]:
        for bad in (np.array(2.0), np.array(True), np.array([3])):  # a float, a bool, an array: no epoch number
            with pytest.raises(InvalidArgument, match=r"log_epoch\(epoch=...\) must be an int"):
                ctx.log_epoch(bad)
        for epoch in (np.arange(1, 3)[0], np.array(2)):  # numpy.int64 and 0-d array epochs too (a tensor's item)
            ctx.log_epoch(epoch, train={"loss": np.float32(0.5) / epoch},
                          validation={"rmse": np.float64(1.5) / epoch, "r2": np.array(0.25)})
        return {"n": np.int64(3), "mean": np.float32(0.75), "flag": np.bool_(True)}

    status = testing.assert_completed(Trainer(train, db=db_path, runner="eager").fit(_dataset()))
    result = status["result"]
    assert result["summary"] == {"n": 3, "mean": 0.75, "flag": True}
    assert type(result["summary"]["n"]) is int and type(result["summary"]["mean"]) is float
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert result["epochs"][0] == {"epoch": 1, "train": {"loss": 0.5}, "validation": {"rmse": 1.5, "r2": 0.25}}
    assert all(type(v) is float for e in result["epochs"] for part in ("train", "validation") for v in e[part].values())
    assert (result["best_epoch"], result["best_metric"]) == (2, 0.75)
    json.dumps(status)  # plain JSON all the way


def test_metrics_of_one_element_arrays_are_stored_as_numbers_and_larger_ones_are_refused(db_path: str) -> None:
    def train(ctx: RunContext) -> None:
        ctx.log_epoch(0, train={"loss": np.array([0.5]), "count": np.array([[3]])},
                      validation={"rmse": pd.Series([0.25]), "nan": np.array([np.nan])})
        for bad in (np.array([0.3, 0.4]), np.array([], dtype=float), np.array([True]), None, "0.5", [0.5]):
            with pytest.raises(NotSerializable) as caught:
                ctx.log_epoch(1, train={"loss": bad})
            message = str(caught.value)
            assert "A metric is one number under a string name" in message
            assert "array or tensor of one element" in message and "leave out a metric" in message
            assert "strings, lists and dicts" not in message and "1-d arrays lists" not in message  # not for metrics

    result = testing.assert_completed(Trainer(train, db=db_path, runner="eager").fit(_dataset()))["result"]
    assert result["epochs"] == [{"epoch": 0, "train": {"loss": 0.5, "count": 3},
                                 "validation": {"rmse": 0.25, "nan": None}}]
    assert type(result["epochs"][0]["train"]["loss"]) is float and type(result["epochs"][0]["train"]["count"]) is int


def test_numpy_longdouble_is_stored_as_a_float_and_complex_is_a_clear_error(db_path: str) -> None:
    """numpy's longdouble has no Python counterpart (its item() returns itself): it is stored in 64 bits, in a
    metric, a summary and a config; a complex value is refused as not a real number, not as a recursion."""
    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(0, train={"loss": np.longdouble(0.5)}, validation={"rmse": np.array(np.longdouble(0.25))})
        with pytest.raises(NotSerializable, match=r"clongdouble"):
            ctx.log_epoch(1, train={"loss": np.clongdouble(1)})
        return {"mean": np.longdouble(0.75), "curve": np.array([1.5, 2.5], dtype=np.longdouble)}

    trainer = Trainer(train, db=db_path, runner="eager", config={"lr": np.longdouble(0.125)})
    job = trainer.fit(_dataset())
    status = testing.assert_completed(job)
    assert status["result"]["epochs"] == [{"epoch": 0, "train": {"loss": 0.5}, "validation": {"rmse": 0.25}}]
    assert status["result"]["summary"] == {"mean": 0.75, "curve": [1.5, 2.5]}
    assert type(status["result"]["summary"]["mean"]) is float
    spec = json.loads(_query(db_path, f"SELECT spec_json FROM jobs WHERE id = '{job.job_id}'")[0][0])
    assert spec["config"] == {"lr": 0.125}
    for value in (np.clongdouble(1), np.complex128(1 + 2j)):
        with pytest.raises(NotSerializable, match="not a real number"):
            jsonutil.dumps({"z": value}, "summary")


def test_pandas_datetimes_paths_tuples_and_small_arrays_are_stored_as_json_types(db_path: str) -> None:
    when = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(1, validation={"rmse": pd.Series([2.0]).mean()})
        frame = pd.DataFrame({"a": [1, 2, 3]})
        return {"when": when, "stamp": pd.Timestamp("2026-03-01 10:30", tz="UTC"), "path": Path("/models/m.bin"),
                "shape": (3, 1), "weights": np.array([0.5, 0.25]), "column": frame["a"], "rows": frame.shape[0],
                "missing": pd.NA, "never": pd.NaT, "total": frame["a"].sum()}

    summary = testing.assert_completed(Trainer(train, db=db_path, runner="eager").fit(_dataset()))["result"]["summary"]
    assert summary == {"when": "2026-03-01T10:30:00.000000+00:00", "stamp": "2026-03-01T10:30:00.000000+00:00",
                       "path": "/models/m.bin", "shape": [3, 1], "weights": [0.5, 0.25], "column": [1, 2, 3],
                       "rows": 3, "missing": None, "never": None, "total": 6}


def test_a_config_of_numpy_values_reaches_a_worker_as_plain_values(db_path: str) -> None:
    trainer = Trainer(_noop_train, db=db_path, runner="eager",
                      config={"lr": np.float32(0.5), "layers": (64, 32), "out": Path("/tmp/x")})
    job = trainer.fit(_dataset())
    testing.assert_completed(job)
    spec = json.loads(_query(db_path, f"SELECT spec_json FROM jobs WHERE id = '{job.job_id}'")[0][0])
    assert spec["config"] == {"lr": 0.5, "layers": [64, 32], "out": "/tmp/x"}


def _noop_train(ctx: RunContext) -> None:
    return None


@pytest.mark.parametrize(("value", "fragment"), [
    (np.zeros((2, 2)), "2-d ndarray of shape (2, 2)"),
    (np.zeros(jsonutil.MAX_ARRAY_ITEMS + 1), f"more than the {jsonutil.MAX_ARRAY_ITEMS}"),
    (object(), "holds object"),
    ({1, 2}, "holds set"),
], ids=["2d-array", "large-array", "object", "set"])
def test_what_cannot_be_stored_is_refused_naming_the_key_and_the_type(value: Any, fragment: str) -> None:
    with pytest.raises(NotSerializable) as info:
        jsonutil.dumps({"ok": 1, "bad": [value]}, "summary")
    assert info.value.field == "summary" and "summary['bad'][0]" in str(info.value) and fragment in str(info.value)


def test_nan_and_infinities_are_null_and_their_place_is_reported() -> None:
    where: list[str] = []
    text = jsonutil.dumps({"a": [1.0, math.nan], "b": {"c": np.float32("inf")}, "d": None}, "summary",
                          nonfinite=where)
    assert json.loads(text) == {"a": [1.0, None], "b": {"c": None}, "d": None}
    assert where == ["summary['a'][1]", "summary['b']['c']"]


def test_the_standard_path_converts_the_same_values(tmp_path: Path) -> None:
    (tmp_path / "orjson.py").write_text("raise ImportError('fast extra not installed')\n", encoding="utf-8")
    code = (
        "import json, math, sys, numpy as np, pandas as pd\n"
        "from pathlib import Path\n"
        "from jobtrack import jsonutil\n"
        "assert 'orjson' not in sys.modules\n"
        "where = []\n"
        "v = {'n': np.int64(3), 'f': np.float32(0.5), 'a': np.arange(2), 't': (1, 2), 'p': Path('/x'),\n"
        "     'nan': np.float64('nan'), 'na': pd.NA, 'k': {np.int64(1): 'numpy key'}}\n"
        "print(jsonutil.dumps(v, 'v', nonfinite=where), where)\n"
    )
    out = run_python(code, PYTHONPATH=str(tmp_path))
    text, where = out.stdout.rsplit("}", 1)
    assert json.loads(text + "}") == {"n": 3, "f": 0.5, "a": [0, 1], "t": [1, 2], "p": "/x", "nan": None, "na": None,
                                      "k": {"1": "numpy key"}}
    assert "v['nan']" in where


# -- the summary never fails a finished training job ---------------------------------------------------------------


def test_a_summary_holding_a_model_completes_storing_what_it_can(db_path: str) -> None:
    class Model:
        pass

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(1, validation={"rmse": 1.0})
        return {"model": Model(), "weights": np.zeros((3, 3)), "score": np.float32(0.5), "nan": math.nan}

    job = Trainer(train, db=db_path, runner="eager").fit(_dataset())
    status = testing.assert_completed(job)
    result = status["result"]
    assert result["summary"] == {"model": "<not stored: Model>", "weights": "<not stored: ndarray>", "score": 0.5,
                                 "nan": None}
    error = result["summary_error"]
    assert error["type"] == "NotSerializable"
    assert "['model'] holds Model" in error["message"] and "['weights'] holds a 2-d ndarray" in error["message"]
    log = _log(db_path, job.job_id)
    assert "the returned summary was stored in part" in log and "['model'] holds Model" in log
    assert "non-finite values (NaN or infinite) stored as null at the returned summary['nan']" in log
    # the model can be used: the job is COMPLETED
    assert job.register_model("values", "v1") == "values:v1"


def test_a_log_epoch_with_a_value_that_is_not_a_number_raises_in_the_call(db_path: str) -> None:
    caught: list[BaseException] = []

    def train(ctx: RunContext) -> dict[str, Any]:
        try:
            ctx.log_epoch(1, validation={"rmse": np.array([1.0, 2.0])})
        except NotSerializable as exc:
            caught.append(exc)
        ctx.log_epoch(1, validation={"rmse": 1.0})
        return {}

    testing.assert_completed(Trainer(train, db=db_path, runner="eager").fit(_dataset()))
    assert len(caught) == 1 and "validation metrics['rmse']" in str(caught[0]) and "ndarray" in str(caught[0])


# -- the size cap --------------------------------------------------------------------------------------------------


def test_log_epoch_past_the_result_cap_raises_naming_the_metrics_and_the_size(db_path: str) -> None:
    caught: list[ResultTooLarge] = []

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(1, validation={"rmse": 1.0})
        try:
            ctx.log_epoch(2, train={f"m{i}": float(i) for i in range(200)}, validation={"rmse": 0.5})
        except ResultTooLarge as exc:
            caught.append(exc)
        return {"epochs": 1}

    job = Trainer(train, db=db_path, runner="eager", max_result_bytes=1000).fit(_dataset())
    status = testing.assert_completed(job)
    assert len(caught) == 1
    assert caught[0].limit == 1000 and caught[0].size > 1000 and "log_epoch(2): its train metrics" in str(caught[0])
    assert "max_result_bytes" in str(caught[0])
    assert [e["epoch"] for e in status["result"]["epochs"]] == [1]  # nothing of epoch 2 was stored


def test_the_result_cap_counts_stored_bytes_not_characters(db_path: str) -> None:
    """A summary of 900 "精" is 2,711 bytes of JSON: it was stored past max_result_bytes=1000 (900 characters), and
    so were epochs whose non-ASCII metric names passed the cap in bytes."""
    caught: list[ResultTooLarge] = []

    def train(ctx: RunContext) -> dict[str, Any]:
        try:
            ctx.log_epoch(1, validation={"精度" * 200: 0.5})  # 1,200 bytes in 400 characters
        except ResultTooLarge as exc:
            caught.append(exc)
        return {"text": "精" * 900}

    job = Trainer(train, db=db_path, runner="eager", max_result_bytes=1000).fit(_dataset())
    status = testing.assert_completed(job)
    assert len(caught) == 1 and caught[0].size > 1200 and "(1,2" in str(caught[0]), caught
    assert "summary" not in status["result"] and "epochs" not in status["result"]
    assert "would take 2,711 bytes" in status["result"]["summary_error"]["message"]


def test_a_summary_past_the_cap_is_not_stored_and_the_job_completes(db_path: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBTRACK_MAX_RESULT_BYTES", "5000")

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(1, validation={"rmse": 1.0})
        return {"big": "x" * 10_000}

    job = Trainer(train, db=db_path, runner="eager").fit(_dataset())
    status = testing.assert_completed(job)
    assert "summary" not in status["result"]
    error = status["result"]["summary_error"]
    assert error["type"] == "ResultTooLarge" and "the returned summary would take 10,010 bytes" in error["message"]
    assert "cap of 5,000 bytes" in error["message"]
    assert "the returned summary was not stored: the returned summary would take" in _log(db_path, job.job_id)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4MB", True])
def test_a_bad_max_result_bytes_is_refused_at_call_time(db_path: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="max_result_bytes"):
        Trainer(_noop_train, db=db_path, max_result_bytes=bad)


# -- the evaluation metric -----------------------------------------------------------------------------------------


def test_epochs_without_the_evaluation_metric_say_so_in_the_result_and_the_log(db_path: str) -> None:
    def train(ctx: RunContext) -> dict[str, Any]:
        for epoch in (1, 2):
            ctx.log_epoch(epoch, train={"loss": 1.0 / epoch}, validation={"auc": 0.6 + epoch / 10})
        return {}

    job = Trainer(train, db=db_path, runner="eager").fit(_dataset("binary_classification"))
    result = testing.assert_completed(job)["result"]
    assert result["eval_metric"] == "roc_auc" and result["best_epoch"] is None
    missing = result["eval_metric_missing"]
    assert missing["reported"] == ["auc", "loss"] and "'roc_auc'" in missing["note"]
    assert "Trainer(eval_metric=" in missing["note"]
    log = _log(db_path, job.job_id)
    assert "no epoch reported 'roc_auc'" in log and "reported: auc, loss" in log
    assert set(job.get_status()) == {"job_id", "status", "started_at", "finished_at", "updated_at", "experiment_name",
                                     "job_type", "model_run_id", "result", "export_paths", "source_views"}


def test_an_eval_metric_named_with_a_framework_prefix_says_which_name_to_choose(db_path: str) -> None:
    """``Trainer(eval_metric="val_loss")`` with a framework callback, which reports Keras's ``val_loss`` as
    ``validation.loss``: no best epoch and no early stopping, and the note only said to report 'val_loss'."""
    def train(ctx: RunContext) -> dict[str, Any]:
        for epoch in (1, 2):  # what JobtrackCallback reports of logs {"loss": ..., "val_loss": ...}
            ctx.log_epoch(epoch, train={"loss": 1.0 / epoch}, validation={"loss": 2.0 / epoch})
        return {}

    job = Trainer(train, db=db_path, runner="eager", eval_metric="val_loss", eval_mode="min").fit(
        _dataset("regression"))
    result = testing.assert_completed(job)["result"]
    assert result["best_epoch"] is None
    fix = "choose Trainer(eval_metric='loss')"
    assert fix in result["eval_metric_missing"]["note"] and fix in _log(db_path, job.job_id)

    def train_only(ctx: RunContext) -> dict[str, Any]:  # a training loss alone is not what val_loss meant
        ctx.log_epoch(1, train={"loss": 1.0})
        return {}

    job = Trainer(train_only, db=db_path, runner="eager", eval_metric="val_loss", eval_mode="min").fit(
        _dataset("regression"))
    result = testing.assert_completed(job)["result"]
    assert fix not in result["eval_metric_missing"]["note"] and fix not in _log(db_path, job.job_id)


def test_a_job_that_reports_its_metric_has_no_note(db_path: str) -> None:
    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(1, train={"roc_auc": 0.7})
        return {}

    job = Trainer(train, db=db_path, runner="eager").fit(_dataset("binary_classification"))
    result = testing.assert_completed(job)["result"]
    assert result["best_epoch"] == 1 and "eval_metric_missing" not in result
    assert "no epoch reported" not in _log(db_path, job.job_id)


def test_trainer_eval_metric_chooses_the_best_epoch(db_path: str) -> None:
    def train(ctx: RunContext) -> dict[str, Any]:
        for epoch, loss in ((1, 0.9), (2, 0.4), (3, 0.6)):
            ctx.log_epoch(epoch, validation={"val_loss": loss, "auc": 0.5 + epoch / 10})
        return {}

    by_loss = Trainer(train, db=db_path, runner="eager", eval_metric="val_loss", eval_mode="min")
    job = by_loss.fit(_dataset("binary_classification"))
    result = testing.assert_completed(job)["result"]
    assert (result["eval_metric"], result["best_epoch"], result["best_metric"]) == ("val_loss", 2, 0.4)
    assert "eval_metric_missing" not in result
    assert _query(db_path, f"SELECT eval_metric, metric_mode FROM jobs WHERE id = '{job.job_id}'") == [
        ("val_loss", "min")]
    by_auc = Trainer(train, db=db_path, runner="eager", eval_metric="auc")  # a known name needs no mode
    assert testing.assert_completed(by_auc.fit(_dataset("binary_classification")))["result"]["best_epoch"] == 3


def test_eval_metric_drives_early_stopping(db_path: str) -> None:
    def train(ctx: RunContext) -> dict[str, Any]:
        for epoch, loss in enumerate((0.5, 0.6, 0.7, 0.8, 0.9), start=1):
            if ctx.log_epoch(epoch, validation={"val_loss": loss}):
                break
        return {}

    trainer = Trainer(train, db=db_path, runner="eager", eval_metric="val_loss", eval_mode="min", patience=2)
    result = testing.assert_completed(trainer.fit(_dataset()))["result"]
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3] and result["stopped_early"] is True


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"eval_metric": "val_loss"}, "needs eval_mode='max'"),
    ({"eval_mode": "min"}, "eval_mode= needs eval_metric="),
    ({"eval_metric": "auc", "eval_mode": "up"}, "eval_mode must be 'max'"),
    ({"eval_metric": ""}, "eval_metric must be a metric name"),
    ({"eval_metric": 3, "eval_mode": "max"}, "eval_metric must be a metric name"),
])
def test_bad_eval_metric_options_are_refused_at_call_time(db_path: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        Trainer(_noop_train, db=db_path, **kwargs)
    assert not Path(db_path).exists() or _query(db_path, "SELECT count(*) FROM jobs") == [(0,)]


# -- export rows --------------------------------------------------------------------------------------------------


def test_export_rows_take_numpy_and_pandas_values_and_nan_is_null_in_file_and_view(db_path: str) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "score": [0.5, np.nan, np.inf],
                          "day": pd.to_datetime(["2026-01-01", "2026-01-02", None], utc=True)})

    def predict(ctx: RunContext) -> dict[str, Any]:
        rows = frame.to_dict("records")
        for row in rows:
            row["embedding"] = np.array([row["id"], 0.5])
        ctx.export("predictions", rows)
        return {"rows": len(rows)}

    trainer = Trainer(_noop_train, predict, db=db_path, runner="eager")
    job = trainer.fit_predict(_dataset(), "values_out")
    status = testing.assert_completed(job)
    assert testing.exported_rows(job) == [
        {"id": 1, "score": 0.5, "day": "2026-01-01T00:00:00.000000+00:00", "embedding": "[1.0,0.5]"},
        {"id": 2, "score": None, "day": "2026-01-02T00:00:00.000000+00:00", "embedding": "[2.0,0.5]"},
        {"id": 3, "score": None, "day": None, "embedding": "[3.0,0.5]"},
    ]
    lines = Path(status["export_paths"]["predictions"]).read_text(encoding="utf-8").splitlines()
    assert lines == ["id,score,day,embedding", "1,0.5,2026-01-01T00:00:00.000000+00:00,\"[1.0, 0.5]\"",
                     "2,,2026-01-02T00:00:00.000000+00:00,\"[2.0, 0.5]\"", "3,,,\"[3.0, 0.5]\""]
    log = _log(db_path, job.job_id)
    assert "non-finite values (NaN or infinite) stored as null in column 'score': 2 row(s) (1, 2)" in log


def test_an_export_value_that_cannot_be_stored_names_its_row_and_column(db_path: str) -> None:
    caught: list[NotSerializable] = []

    def predict(ctx: RunContext) -> None:
        try:
            ctx.export("predictions", [{"id": 1, "score": 0.5}, {"id": 2, "score": object()}])
        except NotSerializable as exc:
            caught.append(exc)

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "bad_cell")
    status = testing.assert_completed(job)
    assert len(caught) == 1 and "export('predictions') row 1 column 'score' is not JSON-serializable" in str(caught[0])
    assert status["export_paths"] == {}


def test_a_metric_name_with_a_byte_that_is_not_utf8_is_stored_as_its_escape(db_path: str) -> None:
    """``os.fsdecode`` makes a lone surrogate of such a byte (a file name as a metric name): the epoch, the metric
    rows and the log take it as the text ``\\udcff``, as summaries and configs do, instead of failing the job."""
    name = __import__("os").fsdecode(b"file\xff.txt")

    def train(ctx: RunContext) -> None:
        ctx.log_epoch(0, validation={name: 0.5, "roc_auc": 0.7})
        ctx.log_epoch(1, validation={name: 0.6, "roc_auc": 0.8})

    job = Trainer(train, db=db_path, runner="eager").fit(Dataset("s", "binary_classification", "t",
                                                                  tables={"train": [{"x": 1}]}))
    status = testing.assert_completed(job)
    assert status["result"]["epochs"][1]["validation"] == {"file\\udcff.txt": 0.6, "roc_auc": 0.8}
    with closing(sqlite3.connect(db_path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM job_metrics WHERE job_id = ?", (job.job_id,))}
    assert names == {"file\\udcff.txt", "roc_auc"}


def test_numpy_integers_are_taken_wherever_a_count_is(db_path: str) -> None:
    """Counts computed with numpy (``np.int64(3)``, a 0-d array) are plain ints to jobtrack; bools never are."""
    trainer = Trainer(lambda ctx: None, db=db_path, runner="eager", n_epochs=np.int64(3), patience=np.int32(2),
                      eval_every=np.array(1), retries=np.int64(1), max_workers=np.int16(2),
                      max_log_bytes=np.uint32(1 << 20), max_result_bytes=np.int64(1 << 22))
    assert (trainer.n_epochs, trainer.patience, trainer.eval_every, trainer.max_workers) == (3, 2, 1, 2)
    assert all(type(v) is int for v in (trainer.n_epochs, trainer.patience, trainer.eval_every, trainer.max_workers,
                                        trainer.max_log_bytes, trainer.max_result_bytes))
    assert trainer.retry_policy.max_attempts == 2 and type(trainer.retry_policy.max_attempts) is int
    for bad in ({"n_epochs": np.bool_(True)}, {"patience": True}, {"retries": np.float64(1.0)},
                {"max_workers": np.array([2])}):
        with pytest.raises(InvalidArgument, match="must be"):
            Trainer(lambda ctx: None, db=db_path, **bad)
    sweep = Trainer(lambda ctx: None, db=db_path, runner="eager").sweep(
        Dataset("n", "regression", "t", tables={"train": [{"x": 1}]}), {"lr": [0.1, 0.2, 0.3]},
        n_trials=np.int64(2), parallel=np.int8(1), seed=np.int64(7))
    sweep.wait(timeout=60)
    assert len(sweep.trials()) == 2


class _BFloat16Scalar:
    """What jobtrack sees of ``torch.tensor(0.1, dtype=torch.bfloat16)`` (torch is not a dependency of these tests)."""

    shape = ()
    dtype = "torch.bfloat16"

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


def test_bfloat16_values_are_stored_as_the_decimals_they_stand_for(db_path: str) -> None:
    """A bfloat16 loss (mixed precision) was stored as 0.10009765625, while float16 and float32 ones were 0.1."""
    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(0, train={"loss": _BFloat16Scalar(0.10009765625)}, validation={"rmse": _BFloat16Scalar(-2.5)})
        return {"scale": _BFloat16Scalar(0.322265625)}

    result = testing.assert_completed(Trainer(train, db=db_path, runner="eager").fit(_dataset()))["result"]
    assert result["epochs"] == [{"epoch": 0, "train": {"loss": 0.1}, "validation": {"rmse": -2.5}}]
    assert result["summary"] == {"scale": 0.322}


def test_32_and_16_bit_floats_are_stored_as_the_decimals_they_stand_for(db_path: str) -> None:
    torch_like = np.array([0.2], dtype=np.float32)  # a one-element array, as a tensor's metric often is

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(0, train={"loss": np.float32(0.1), "acc": torch_like}, validation={"rmse": np.float16(0.3)})
        return {"scale": np.float32(1e-7), "grid": np.array([0.1, 0.7], dtype=np.float32)}

    job = Trainer(train, db=db_path, runner="eager", config={"lr": np.float32(0.01)}).fit(_dataset())
    result = testing.assert_completed(job)["result"]
    assert result["epochs"] == [{"epoch": 0, "train": {"loss": 0.1, "acc": 0.2}, "validation": {"rmse": 0.3}}]
    assert result["summary"] == {"scale": 1e-07, "grid": [0.1, 0.7]}
    found = JobManager(db_path).list_jobs(where="config.lr = 0.01 and best.rmse = 0.3", limit=None)
    assert [j.job_id for j in found] == [job.job_id]  # not 0.009999999776482582, which nobody writes
    assert np.float32(0.009999999776482582) == np.float32(0.01)  # the same 32-bit value, so nothing was lost
