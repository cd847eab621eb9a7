"""Exports in batches (#13): repeated ``ctx.export()`` calls append to one file and one view, and
``ctx.exporter()`` streams rows in batches without holding them all; both complete when the job ends."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, InvalidArgument, RunContext, Trainer, testing
from jobtrack.store import Store

TEST_ROWS = [{"id": i, "x": i / 10} for i in range(7)]


def _dataset(task_type: str = "regression") -> Dataset:
    return Dataset("exp", task_type, "t", tables={"train": [{"x": 1}], "test": TEST_ROWS})


def _noop_train(ctx: RunContext) -> None:
    return None


def _view_rows(db_path: str, view: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(f'SELECT * FROM "{view}"').fetchall()


def _file_rows(path: str, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [{"id": int(r["id"]), "p": float(r["p"])} for r in csv.DictReader(fh)]
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_repeated_exports_append_batches_to_one_file_and_one_view(db_path: str, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")

    def predict(ctx: RunContext) -> dict[str, Any]:
        paths = [ctx.export("predictions", [{"id": r["id"], "p": r["x"] * 2} for r in batch])
                 for batch in ctx.batches(size=3)]
        assert len(set(paths)) == 1  # one file, whatever the number of batches
        return {"batches": len(paths)}

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), f"appended_{fmt}", output_config={"format": fmt, "directory": str(tmp_path / "out")})
    status = testing.assert_completed(job)
    expected = [{"id": r["id"], "p": r["x"] * 2} for r in TEST_ROWS]
    assert status["result"]["summary"]["predict"] == {"batches": 3}
    assert testing.exported_rows(job) == expected  # the view: every batch, in the order written
    assert _file_rows(status["export_paths"]["predictions"], fmt) == expected
    assert status["source_views"] == {"predictions": f"predictions_appended_{fmt}"}
    log = (Store.open(db_path).job_dir(job.job_id) / "log.txt").read_text(encoding="utf-8")
    assert "exported 1 predictions rows" in log and "(7 in all)" in log


def test_a_later_batch_with_other_columns_is_refused_and_the_first_ones_are_kept(db_path: str) -> None:
    caught: list[BaseException] = []

    def predict(ctx: RunContext) -> None:
        ctx.export("predictions", [{"id": 1, "p": 0.5}])
        ctx.export("predictions", [{"p": 0.25, "id": 2}])  # the same columns in another order: fine
        try:
            ctx.export("predictions", [{"id": 3, "score": 0.1}])
        except InvalidArgument as exc:
            caught.append(exc)

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "columns")
    status = testing.assert_completed(job)
    assert len(caught) == 1 and "the first row has ['id', 'p']" in str(caught[0])
    assert testing.exported_rows(job) == [{"id": 1, "p": 0.5}, {"id": 2, "p": 0.25}]
    assert Path(status["export_paths"]["predictions"]).read_text(encoding="utf-8").splitlines() == [
        "id,p", "1,0.5", "2,0.25"]


def _rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):  # a generator: nothing holds all the rows
        yield {"id": i, "p": i / n}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_exporter_streams_rows_in_batches_and_completes_at_the_end(db_path: str, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    seen: dict[str, Any] = {}

    def predict(ctx: RunContext) -> dict[str, Any]:
        view = "predictions_streamed_" + fmt
        with ctx.exporter("predictions", batch_rows=4) as out:
            out.write({"id": -1, "p": 0.0})
            out.write_many(_rows(9))
            seen["written_inside"] = len(_view_rows(db_path, view))
            seen["rows"] = out.rows
        seen["path"] = out.path
        return {"rows": out.rows}

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), f"streamed_{fmt}", output_config={"format": fmt})
    status = testing.assert_completed(job)
    expected = [{"id": -1, "p": 0.0}, *_rows(9)]
    assert seen["written_inside"] == 8  # two full batches of 4 were written while the block ran; 2 rows waited
    assert seen["rows"] == 10 and str(seen["path"]) == status["export_paths"]["predictions"]
    assert testing.exported_rows(job) == expected
    assert _file_rows(status["export_paths"]["predictions"], fmt) == expected


def test_an_exporter_after_an_export_appends_to_it(db_path: str) -> None:
    def predict(ctx: RunContext) -> None:
        ctx.export("predictions", [{"id": 0, "p": 0.0}])
        with ctx.exporter("predictions", batch_rows=2) as out:
            out.write_many({"id": i, "p": i / 10} for i in range(1, 4))
        ctx.export("predictions", [{"id": 9, "p": 0.9}])

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "mixed")
    testing.assert_completed(job)
    assert [r["id"] for r in testing.exported_rows(job)] == [0, 1, 2, 3, 9]


def test_an_exporter_that_writes_nothing_leaves_an_empty_export(db_path: str) -> None:
    def predict(ctx: RunContext) -> None:
        with ctx.exporter("predictions"):
            pass

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "nothing")
    status = testing.assert_completed(job)
    assert testing.exported_rows(job) == [] and Path(status["export_paths"]["predictions"]).exists()


def test_an_exporter_of_embeddings_not_asked_for_drops_its_rows(db_path: str) -> None:
    def predict(ctx: RunContext) -> dict[str, Any]:
        with ctx.exporter("embeddings") as out:
            out.write({"id": 1, "embedding": [0.1, 0.2]})
        return {"skipped": out.skipped, "path": out.path}

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "no_emb")
    status = testing.assert_completed(job)
    assert status["result"]["summary"]["predict"] == {"skipped": True, "path": None}
    assert status["export_paths"] == {} and status["source_views"] == {}


def test_an_error_inside_an_exporter_fails_the_job(db_path: str) -> None:
    def predict(ctx: RunContext) -> None:
        with ctx.exporter("predictions", batch_rows=2) as out:
            out.write_many(_rows(3))
            raise RuntimeError("the model broke mid-way")

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "broken")
    status = job.get_status()
    assert status["status"] == "FAILED" and "the model broke mid-way" in status["result"]["error"]["message"]


def test_flattened_batches_append_too(db_path: str) -> None:
    def predict(ctx: RunContext) -> None:
        ctx.export("predictions", [{"id": 1, "labels": ["a", "b"], "probs": [0.9, 0.1], "ground_truth": ["a"]}])
        ctx.export("predictions", [{"id": 2, "labels": ["c"], "probs": [0.5], "ground_truth": ["c"]}])

    job = Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(
        Dataset("exp", "multilabel_classification", "t", tables={"train": [{"x": 1}], "test": TEST_ROWS}),
        "flat", flatten_output=True)
    testing.assert_completed(job)
    assert testing.exported_rows(job) == [{"id": 1, "labels": "a", "probs": 0.9},
                                          {"id": 1, "labels": "b", "probs": 0.1},
                                          {"id": 2, "labels": "c", "probs": 0.5}]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_a_bad_batch_size_is_refused(db_path: str, bad: Any) -> None:
    caught: list[BaseException] = []

    def predict(ctx: RunContext) -> None:
        try:
            with ctx.exporter("predictions", batch_rows=bad):
                pass
        except InvalidArgument as exc:
            caught.append(exc)

    testing.assert_completed(Trainer(_noop_train, predict, db=db_path, runner="eager").fit_predict(_dataset(), "bs"))
    assert len(caught) == 1 and "batch_rows" in str(caught[0])
