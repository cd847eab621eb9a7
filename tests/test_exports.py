"""Exports: files in each format, where they go, the read-only source views, and embeddings only on request."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jobfuncs
from jobtrack import Dataset, DuplicateName, JobMonitor, Trainer

ROWS = [
    {"id": 1, "label": "cat", "score": 0.25, "flag": True, "tags": ["a", "b"], "missing": None, "text": "naïve, \"q\""},
    {"id": 2, "label": "dog", "score": -1.5e-3, "flag": False, "tags": [], "missing": None, "text": "line\nbreak"},
    {"id": 3, "label": "émeu", "score": 3.0, "flag": True, "tags": ["c"], "missing": None, "text": ""},
]
EMBEDDINGS = [{"id": r["id"], "embedding": [float(r["id"]), 0.5, -2.0]} for r in ROWS]


def _dataset() -> Dataset:
    return Dataset("exp", "binary_classification", "t", tables={"train": [{"x": 1}], "test": [{"id": 1}]})


def _run(db: str, alias: str, *, config: dict[str, Any] | None = None, **kwargs: Any) -> JobMonitor:
    trainer = Trainer(jobfuncs.train_noop, jobfuncs.predict_rows, db=db, runner="eager",
                      config={"rows": ROWS, **(config or {})})
    job = trainer.fit_predict(_dataset(), alias, **kwargs)
    status = job.get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    return job


def _query(db: str, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _views(db: str) -> set[str]:
    return {r["name"] for r in _query(db, "SELECT name FROM sqlite_master WHERE type = 'view'")}


def _log(job: JobMonitor) -> str:
    out = io.StringIO()
    job.stream_logs(file=out, follow=False)
    return out.getvalue()


def test_csv_export_file_holds_the_exported_rows(db_path: str) -> None:
    status = _run(db_path, "scores").get_status()
    path = Path(status["export_paths"]["predictions"])
    assert path.is_absolute() and path.name == "scores_predictions.csv"
    assert path.parent == Path(f"{db_path}-files") / "jobs" / status["job_id"]  # default: the job's directory
    with open(path, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == list(ROWS[0])
    assert lines[1:] == [
        ["1", "cat", "0.25", "True", '["a", "b"]', "", 'naïve, "q"'],
        ["2", "dog", "-0.0015", "False", "[]", "", "line\nbreak"],
        ["3", "émeu", "3.0", "True", '["c"]', "", ""],
    ]


def test_source_view_returns_the_exported_rows_to_plain_sqlite3(db_path: str) -> None:
    status = _run(db_path, "scores").get_status()
    view = status["source_views"]["predictions"]
    assert view == "predictions_scores" and view in _views(db_path)
    rows = _query(db_path, f"SELECT * FROM {view}")
    assert rows == [
        {"id": 1, "label": "cat", "score": 0.25, "flag": 1, "tags": '["a","b"]', "missing": None, "text": 'naïve, "q"'},
        {"id": 2, "label": "dog", "score": -1.5e-3, "flag": 0, "tags": "[]", "missing": None, "text": "line\nbreak"},
        {"id": 3, "label": "émeu", "score": 3.0, "flag": 1, "tags": '["c"]', "missing": None, "text": ""},
    ]
    assert _query(db_path, f"SELECT id FROM {view} WHERE score > 0 ORDER BY id DESC") == [{"id": 3}, {"id": 1}]


def test_source_view_is_read_only(db_path: str) -> None:
    view = _run(db_path, "ro").get_status()["source_views"]["predictions"]
    conn = sqlite3.connect(db_path)
    try:
        for sql in (f"INSERT INTO {view} (id) VALUES (9)", f"DELETE FROM {view}", f"UPDATE {view} SET id = 0"):
            with pytest.raises(sqlite3.OperationalError, match="view"):
                conn.execute(sql)
    finally:
        conn.close()
    assert len(_query(db_path, f"SELECT * FROM {view}")) == len(ROWS)


def test_column_names_that_need_quoting_stay_queryable(db_path: str) -> None:
    rows = [{"my col": 1, "order": "x", 'we"ird': 2.5}, {"my col": 2, "order": "y", 'we"ird': None}]
    status = _run(db_path, "quoted", config={"rows": rows}).get_status()
    view = status["source_views"]["predictions"]
    assert _query(db_path, f'SELECT "my col", "order", "we""ird" FROM {view}') == [
        {"my col": 1, "order": "x", 'we"ird': 2.5}, {"my col": 2, "order": "y", 'we"ird': None}]


def test_jsonl_export_round_trips_the_rows(db_path: str) -> None:
    status = _run(db_path, "as_jsonl", output_config={"format": "jsonl"}).get_status()
    path = Path(status["export_paths"]["predictions"])
    assert path.suffix == ".jsonl"
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == ROWS


def test_parquet_export_round_trips_the_rows(db_path: str) -> None:
    import pyarrow.parquet as pq  # the dev extra installs it: this test never skips in CI
    rows = [{"id": r["id"], "label": r["label"], "score": r["score"]} for r in ROWS]
    status = _run(db_path, "as_parquet", config={"rows": rows}, output_config={"format": "PARQUET"}).get_status()
    path = Path(status["export_paths"]["predictions"])
    assert path.suffix == ".parquet"
    assert pq.read_table(path).to_pylist() == rows


def test_output_directory_is_created_and_recorded_as_an_absolute_path(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status = _run(db_path, "placed", output_config={"directory": "out/nested"}, extract_embeddings=True,
                  config={"embeddings": EMBEDDINGS}).get_status()
    assert status["export_paths"] == {
        "predictions": str(tmp_path / "out" / "nested" / "placed_predictions.csv"),
        "embeddings": str(tmp_path / "out" / "nested" / "placed_embeddings.csv"),
    }
    assert all(Path(p).is_file() for p in status["export_paths"].values())
    assert sorted(p.name for p in (tmp_path / "out" / "nested").iterdir()) == [
        "placed_embeddings.csv", "placed_predictions.csv"]  # no temp files left behind


def test_embeddings_are_exported_only_when_asked(db_path: str) -> None:
    asked = _run(db_path, "with_emb", extract_embeddings=np.bool_(True), config={"embeddings": EMBEDDINGS})
    status = asked.get_status()  # numpy's True is True (an argument built from a numpy comparison)
    assert set(status["export_paths"]) == set(status["source_views"]) == {"predictions", "embeddings"}
    rows = _query(db_path, f"SELECT * FROM {status['source_views']['embeddings']}")
    assert [(r["id"], json.loads(r["embedding"])) for r in rows] == [(e["id"], e["embedding"]) for e in EMBEDDINGS]
    with open(status["export_paths"]["embeddings"], newline="", encoding="utf-8") as fh:
        file_rows = list(csv.DictReader(fh))
    assert [json.loads(r["embedding"]) for r in file_rows] == [e["embedding"] for e in EMBEDDINGS]

    skipped = _run(db_path, "without_emb", config={"embeddings": EMBEDDINGS})
    status = skipped.get_status()
    assert "embeddings" not in status["export_paths"] and "embeddings" not in status["source_views"]
    assert "embeddings_without_emb" not in _views(db_path)
    log = _log(skipped)
    assert "embeddings export skipped" in log and "extract_embeddings=True" in log
    assert "embeddings export returned None" in log  # ctx.export() told the code it skipped


def test_exporting_twice_appends_the_second_batch(db_path: str) -> None:
    def predict(ctx: Any) -> None:
        ctx.export("predictions", [{"id": 1, "v": "old"}, {"id": 2, "v": "old"}])
        ctx.export("predictions", [{"id": 3, "v": "new"}])

    job = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(_dataset(), "twice")
    status = job.get_status()
    assert status["status"] == "COMPLETED"
    assert _query(db_path, f"SELECT * FROM {status['source_views']['predictions']}") == [
        {"id": 1, "v": "old"}, {"id": 2, "v": "old"}, {"id": 3, "v": "new"}]
    with open(status["export_paths"]["predictions"], encoding="utf-8") as fh:
        assert fh.read().splitlines() == ["id,v", "1,old", "2,old", "3,new"]


@pytest.mark.parametrize(("rows", "error", "fragment"), [
    ([{"id": 1, "v": 1}, {"id": 2, "w": 2}], "InvalidArgument", "columns"),
    ([{"id": 1}, "not a row"], "InvalidArgument", "not a dict"),
    ([{"id": 1, "v": object()}], "NotSerializable", "not JSON-serializable"),
], ids=["mismatched-columns", "not-a-dict", "not-serializable"])
def test_bad_export_rows_fail_the_job_and_export_nothing(db_path: str, rows: list[Any], error: str,
                                                         fragment: str) -> None:
    def predict(ctx: Any) -> None:
        ctx.export("predictions", rows)

    job = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(_dataset(), "bad_rows")
    status = job.get_status()
    assert status["status"] == "FAILED"
    assert status["result"]["error"]["type"] == error and fragment in status["result"]["error"]["message"]
    assert status["export_paths"] == {} and status["source_views"] == {}
    assert "predictions_bad_rows" not in _views(db_path)
    assert not list((Path(f"{db_path}-files") / "jobs" / job.job_id).glob("*.csv"))


def _columns_frame() -> Any:
    pandas = pytest.importorskip("pandas")
    return pandas.DataFrame({"id": [1, 2], "score": [0.5, 0.25]})


@pytest.mark.parametrize("make_rows", [lambda: {"id": [1, 2], "score": [0.5, 0.25]}, lambda: "id,score\n1,0.5"],
                         ids=["dict-of-columns", "text"])
def test_rows_given_as_columns_are_refused_saying_what_export_takes(db_path: str, make_rows: Any) -> None:
    """A dict of columns iterates as its column names: it was refused with "row 0 is a str"."""
    rows = make_rows()

    def predict(ctx: Any) -> None:
        ctx.export("predictions", rows)

    status = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), "columns").get_status()
    assert status["status"] == "FAILED" and status["result"]["error"]["type"] == "InvalidArgument"
    message = status["result"]["error"]["message"]
    assert f"not a {type(rows).__name__}" in message and "a list of dicts" in message and "DataFrame" in message
    assert "row 0" not in message
    assert status["export_paths"] == {}


def test_a_train_job_cannot_export(db_path: str) -> None:
    def train(ctx: Any) -> None:
        ctx.export("predictions", [{"id": 1}])

    status = Trainer(train, db=db_path, runner="eager").fit(_dataset()).get_status()
    assert status["status"] == "FAILED" and status["export_paths"] == {}
    assert status["result"]["error"]["type"] == "InvalidArgument"
    assert "output_alias" in status["result"]["error"]["message"]


def test_an_unknown_export_kind_fails_the_job(db_path: str) -> None:
    def predict(ctx: Any) -> None:
        ctx.export("features", [{"id": 1}])

    status = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), "kinds").get_status()
    assert status["status"] == "FAILED" and "predictions" in status["result"]["error"]["message"]


def test_a_job_views_keep_their_own_rows_when_another_alias_differs_only_in_case(db_path: str) -> None:
    first = _run(db_path, "scores").get_status()
    other_rows = [{"id": 99, "label": "other"}]
    with contextlib.suppress(DuplicateName):  # refusing the second alias is acceptable; clobbering the view is not
        _run(db_path, "Scores", config={"rows": other_rows})
    view = first["source_views"]["predictions"]
    assert [r["id"] for r in _query(db_path, f"SELECT * FROM {view}")] == [r["id"] for r in ROWS]


@pytest.mark.parametrize("streamed", [False, True], ids=["export", "write_many"])
def test_a_dataframe_is_exported_as_its_rows(db_path: str, streamed: bool) -> None:
    frame = _columns_frame()

    def predict(ctx: Any) -> None:
        if streamed:
            with ctx.exporter("predictions") as out:
                out.write_many(frame)
        else:
            ctx.export("predictions", frame)

    status = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), f"frame_{streamed}").get_status()
    assert status["status"] == "COMPLETED", status["result"]["error"]
    rows = _query(db_path, f"SELECT * FROM {status['source_views']['predictions']}")
    assert [(r["id"], r["score"]) for r in rows] == [(1, 0.5), (2, 0.25)]


def test_a_predict_that_returns_its_rows_instead_of_exporting_them_is_told_in_its_log(db_path: str) -> None:
    def returns(ctx: Any) -> list[dict[str, Any]]:
        return [{"id": 1, "score": 0.5}, {"id": 2, "score": 0.25}]

    def both(ctx: Any) -> list[dict[str, Any]]:
        ctx.export("predictions", [{"id": 1, "score": 0.5}])
        return [{"id": 1, "score": 0.5}]

    hinted = Trainer(jobfuncs.train_noop, returns, db=db_path, runner="eager").fit_predict(_dataset(), "returned")
    status = hinted.get_status()
    assert status["status"] == "COMPLETED" and status["export_paths"] == {}
    logged = hinted.log_path.read_text()
    assert "predict returned 2 row(s) and exported none: a returned value is the job's summary" in logged
    quiet = Trainer(jobfuncs.train_noop, both, db=db_path, runner="eager").fit_predict(_dataset(), "exported")
    assert quiet.get_status()["status"] == "COMPLETED"
    assert "exported none" not in quiet.log_path.read_text()


def test_a_predict_that_returns_an_array_of_predictions_is_told_in_its_log(db_path: str) -> None:
    """``return model(x)``: an array or tensor of predictions completed with no export and no word about it."""
    numpy = pytest.importorskip("numpy")

    def returns(ctx: Any) -> Any:
        return numpy.array([[0.5, 0.5], [0.25, 0.75], [0.1, 0.9]])

    job = Trainer(jobfuncs.train_noop, returns, db=db_path, runner="eager").fit_predict(_dataset(), "array")
    assert job.get_status()["export_paths"] == {}
    assert "predict returned 3 row(s) and exported none" in job.log_path.read_text()


def test_a_dataframe_export_keeps_its_named_index_as_columns(db_path: str) -> None:
    """``df.set_index("id")`` exported its other columns only: the ids were lost without a word."""
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"id": [7, 8, 9], "score": [0.5, 0.25, 0.125]}).set_index("id")
    unnamed = pandas.DataFrame({"score": [0.5]}, index=[3])

    def predict(ctx: Any) -> None:
        ctx.export("predictions", frame)
        ctx.export("embeddings", unnamed)  # the default, unnamed index is no column
        ctx.export("predictions", frame.reset_index().set_index("id", drop=False))  # an index that is a column too

    status = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), "indexed", extract_embeddings=True).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    with open(status["export_paths"]["predictions"], newline="") as f:
        assert list(csv.DictReader(f)) == [{"id": "7", "score": "0.5"}, {"id": "8", "score": "0.25"},
                                           {"id": "9", "score": "0.125"}] * 2
    assert _query(db_path, f"SELECT id FROM {status['source_views']['predictions']}") == [
        {"id": 7}, {"id": 8}, {"id": 9}] * 2
    with open(status["export_paths"]["embeddings"], newline="") as f:
        assert list(csv.DictReader(f)) == [{"score": "0.5"}]


def test_a_dataframe_exports_narrow_floats_as_the_decimals_rows_of_dicts_get(db_path: str) -> None:
    """A float32 column was exported as its exact 64-bit values (0.1 as 0.10000000149011612), while the same
    numpy values in rows of dicts were written as the decimals they stand for (0.1)."""
    numpy = pytest.importorskip("numpy")
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"id": [1, 2], "p32": numpy.array([0.1, 0.7], dtype=numpy.float32),
                              "p16": numpy.array([0.1, 0.7], dtype=numpy.float16), "p64": [0.1, 0.7]})

    def predict(ctx: Any) -> None:
        ctx.export("predictions", frame)
        ctx.export("embeddings", [{c: frame[c].to_numpy()[i] for c in frame.columns}  # rows of numpy scalars
                                  for i in range(len(frame))])

    status = Trainer(jobfuncs.train_noop, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), "narrow", extract_embeddings=True).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    expected = [{"id": 1, "p32": 0.1, "p16": 0.1, "p64": 0.1}, {"id": 2, "p32": 0.7, "p16": 0.7, "p64": 0.7}]
    for kind in ("predictions", "embeddings"):
        assert _query(db_path, f"SELECT * FROM {status['source_views'][kind]}") == expected
        with open(status["export_paths"][kind], newline="") as f:
            assert [row["p32"] for row in csv.DictReader(f)] == ["0.1", "0.7"]
