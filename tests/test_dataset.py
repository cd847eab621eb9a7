"""Dataset: task types and their metrics, experiment names, name rules, tables and how they read back."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

from jobtrack import TASK_TYPES, Dataset, InvalidArgument, JobtrackError, demo

EXPECTED_METRICS = {
    "binary_classification": ("roc_auc", "max"),
    "multiclass_classification": ("macro_f1", "max"),
    "multilabel_classification": ("multilabel_auroc_macro", "max"),
    "regression": ("rmse", "min"),
    "link_prediction": ("link_prediction_map", "max"),
    "repeated_link_prediction": ("link_prediction_map", "max"),
}


def _refused(call: Any, *fragments: str) -> InvalidArgument:
    """Assert ``call()`` raises InvalidArgument (a ValueError and a JobtrackError) whose message has ``fragments``."""
    with pytest.raises(InvalidArgument) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, JobtrackError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


# -- task types, metrics, experiment names ------------------------------------------------------


def test_exactly_the_six_task_types_of_the_reference() -> None:
    assert set(TASK_TYPES) == set(EXPECTED_METRICS)


@pytest.mark.parametrize(("task_type", "metric", "mode"), [(t, m, d) for t, (m, d) in EXPECTED_METRICS.items()])
def test_each_task_type_has_its_default_metric_and_direction(task_type: str, metric: str, mode: str) -> None:
    ds = Dataset("shop", task_type, "target")
    assert (ds.eval_metric, ds.metric_mode) == (metric, mode)
    assert (TASK_TYPES[task_type].eval_metric, TASK_TYPES[task_type].mode) == (metric, mode)
    assert ds.experiment_name == f"shop_{task_type}_target"
    assert ds.task_type == task_type and ds.name == "shop" and ds.task_name == "target"


@pytest.mark.parametrize(("name", "task_name"), [("shop-1.v2", "price_usd"), ("_x", "-y"), ("A9", "b.c.d")])
def test_experiment_name_joins_name_task_type_and_task_name(name: str, task_name: str) -> None:
    ds = Dataset(name, "regression", task_name)
    assert ds.experiment_name == "_".join((name, "regression", task_name))


@pytest.mark.parametrize("task_type", ["ranking", "regression ", "", None, 3])
def test_unknown_task_type_is_refused_naming_the_valid_ones(task_type: Any) -> None:
    _refused(lambda: Dataset("shop", task_type, "t"), "task_type", *EXPECTED_METRICS)


# -- names ---------------------------------------------------------------------------------------

UNSAFE_NAMES = ["my shop", "données", "a/b", "../x", "..", ".hidden", ".", "", "a\\b", "x;drop", "robert'); --",
                "tab\there", "new\nline", "quote'd", 'dq"', 7, None, b"bytes", ["list"]]


@pytest.mark.parametrize("bad", UNSAFE_NAMES, ids=repr)
def test_unsafe_dataset_names_are_refused_with_the_rule(bad: Any) -> None:
    _refused(lambda: Dataset(bad, "regression", "t"), "not allowed", "ASCII letters, digits", "not starting with '.'")


@pytest.mark.parametrize("bad", UNSAFE_NAMES, ids=repr)
def test_unsafe_task_names_are_refused_with_the_rule(bad: Any) -> None:
    _refused(lambda: Dataset("shop", "regression", bad), "task_name", "not allowed")


@pytest.mark.parametrize("good", ["a", "A-b_c.d", "0", "-lead", "_lead", "a..b"])
def test_safe_names_are_accepted(good: str) -> None:
    assert Dataset(good, "regression", good).name == good


# -- tables --------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["holdout", "Train", "val", "", "tests"])
def test_unknown_split_is_refused_naming_the_valid_ones(split: str) -> None:
    _refused(lambda: Dataset("d", "regression", "t", tables={split: [{"x": 1}]}),
             "Unknown table", "train", "validation", "test")


def test_missing_table_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    _refused(lambda: Dataset("d", "regression", "t", tables={"train": str(missing)}), "does not exist", str(missing))
    _refused(lambda: Dataset("d", "regression", "t", tables={"test": missing}), "does not exist")


def test_a_directory_is_not_a_table_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    _refused(lambda: Dataset("d", "regression", "t", tables={"train": folder}), str(folder))


def test_unsupported_table_file_format_is_refused(tmp_path: Path) -> None:
    for name in ("table.txt", "table.pkl", "table"):
        path = tmp_path / name
        path.write_text("x\n1\n")
        _refused(lambda p=path: Dataset("d", "regression", "t", tables={"train": p}), "unsupported format", ".csv")


@pytest.mark.parametrize("source", [42, 1.5, {"x": 1}, [1, 2], [{"x": 1}, "row"], object(), (r for r in [{"x": 1}])],
                         ids=["int", "float", "dict", "list-of-ints", "mixed-list", "object", "generator"])
def test_wrong_table_type_is_refused_saying_what_is_accepted(source: Any) -> None:
    _refused(lambda: Dataset("d", "regression", "t", tables={"train": source}), "file path or a list of dicts")


def test_a_dataframe_table_is_refused_saying_how_to_pass_it() -> None:
    """A pandas DataFrame (what ctx.export() takes) was refused without a word on how to pass it instead."""
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"x": [1, 2]})
    _refused(lambda: Dataset("d", "regression", "t", tables={"train": frame}), "not DataFrame",
             "df.to_dict('records')", "df.to_csv(path, index=False)")


def test_csv_ids_and_codes_that_int_would_change_stay_text(tmp_path: Path) -> None:
    """``00123`` (an id, a zip code) was read as 123, ``+15551234567`` as 15551234567 and ``1_000`` as 1000: a
    prediction exported with such an id no longer matched its row."""
    path = tmp_path / "t.csv"
    path.write_text("id,zip,phone,code,pad,x,delta\n00123,02139,+15551234567,1_000, 42 ,1.5e-3,+0.5\n"
                    "124,94105,5551234567,1000,7,2,-0.5\n", encoding="utf-8")
    rows = Dataset("d", "regression", "t", tables={"test": str(path)}).table("test")
    assert rows == [  # one type per column: a column with one cell that is no number stays text in every row
        {"id": "00123", "zip": "02139", "phone": "+15551234567", "code": "1_000", "pad": 42, "x": 0.0015,
         "delta": "+0.5"},
        {"id": "124", "zip": "94105", "phone": "5551234567", "code": "1000", "pad": 7, "x": 2, "delta": "-0.5"}]


def test_csv_tables_read_back_with_numbers_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,score,name,big,sci,empty,neg\n1,2.5,alice,12345678901234,1e3,,-4\n2,0.0,bob,0,2E-2,,-0.5\n",
                    encoding="utf-8")
    rows = Dataset("d", "regression", "t", tables={"train": str(path)}).table("train")
    assert rows == [
        {"id": 1, "score": 2.5, "name": "alice", "big": 12345678901234, "sci": 1000.0, "empty": "", "neg": -4},
        {"id": 2, "score": 0.0, "name": "bob", "big": 0, "sci": 0.02, "empty": "", "neg": -0.5},
    ]
    assert [type(v) for v in rows[0].values()] == [int, float, str, int, float, str, int]


def test_demo_csv_tables_read_back_as_written(tmp_path: Path) -> None:
    paths = demo.write_csv_tables(tmp_path / "data", n=30)
    ds = Dataset("d", "binary_classification", "t", tables=paths)
    assert ds.splits == ["train", "validation", "test"] and ds.is_file_backed
    for split in ds.splits:
        with open(paths[split], newline="", encoding="utf-8") as fh:
            written = list(csv.DictReader(fh))
        rows = ds.table(split)
        assert rows and [list(r) for r in rows] == [list(w) for w in written]
        # the demo columns are numeric
        assert all(r[k] == float(w[k]) for r, w in zip(rows, written, strict=True) for k in w)
        assert all(isinstance(r["id"], int) and isinstance(r["x1"], float) for r in rows)
        assert ds.table_path(split) == Path(paths[split]).absolute()


def test_json_and_jsonl_tables_read_back_as_written(tmp_path: Path) -> None:
    rows = [{"id": 1, "x": 0.5, "tags": ["a", "b"], "name": "n"}, {"id": 2, "x": -1.0, "tags": [], "name": None}]
    as_json = tmp_path / "t.json"
    as_json.write_text(json.dumps(rows), encoding="utf-8")
    as_jsonl = tmp_path / "t.jsonl"
    as_jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    ds = Dataset("d", "regression", "t", tables={"train": as_json, "test": str(as_jsonl)})
    assert ds.table("train") == rows and ds.table("test") == rows


def test_a_json_table_that_is_not_a_list_is_refused_when_read(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"id": 1}), encoding="utf-8")
    ds = Dataset("d", "regression", "t", tables={"train": path})
    _refused(lambda: ds.table("train"), "JSON list")


def test_in_memory_rows_are_copied_and_not_file_backed() -> None:
    rows = [{"id": 1, "x": 2.0}, {"id": 2, "x": 3.0}]
    ds = Dataset("d", "regression", "t", tables={"train": rows, "test": tuple(rows)})
    rows.append({"id": 3, "x": 4.0})  # later changes of the caller's list do not leak in
    assert ds.table("train") == [{"id": 1, "x": 2.0}, {"id": 2, "x": 3.0}]
    assert ds.table("test") == ds.table("train")
    assert not ds.is_file_backed and ds.table_path("train") is None
    assert ds.to_spec()["tables"] == {"train": {"rows_in_memory": 2}, "test": {"rows_in_memory": 2}}
    json.dumps(ds.to_spec())


def test_relative_table_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.csv").write_text("x\n1\n")
    monkeypatch.chdir(tmp_path)
    ds = Dataset("d", "regression", "t", tables={"train": "t.csv"})
    monkeypatch.chdir(os.path.dirname(tmp_path))
    assert ds.table_path("train") == tmp_path / "t.csv" and ds.table("train") == [{"x": 1}]


def test_a_missing_split_is_refused_when_asked_for() -> None:
    ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
    assert not ds.has_table("test") and ds.splits == ["train"]
    _refused(lambda: ds.table("test"), "no 'test' table", "train")


def test_spec_round_trips_a_file_backed_dataset(tmp_path: Path) -> None:
    paths = demo.write_csv_tables(tmp_path, n=9)
    ds = Dataset("d", "binary_classification", "t", tables=paths)
    again = Dataset.from_spec(json.loads(json.dumps(ds.to_spec())))
    assert again.experiment_name == ds.experiment_name and again.splits == ds.splits
    assert again.table("test") == ds.table("test")


def test_a_table_path_with_dot_dot_is_stored_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``../data`` from a project folder names the data folder itself: renaming the project must not break it."""
    tables = demo.write_csv_tables(tmp_path / "data", n=10)
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    ds = Dataset("dots", "binary_classification", "m", tables={"train": os.path.join("..", "data", "train.csv")})
    stored = ds.to_spec()["tables"]["train"]["path"]
    assert stored == str(tmp_path / "data" / "train.csv") == str(tables["train"])
    assert ".." not in Path(stored).parts


def test_dot_dot_after_a_symlinked_folder_stays_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a symlink, ".." leads to the link target's parent: the path is kept as given, not tidied to a
    file of the same name elsewhere."""
    demo.write_csv_tables(tmp_path / "big" / "data", n=10)  # the real data, beside the real project
    (tmp_path / "big" / "proj").mkdir()
    (tmp_path / "proj").symlink_to(tmp_path / "big" / "proj")
    monkeypatch.chdir(tmp_path)
    through = os.path.join("proj", "..", "data", "train.csv")
    ds = Dataset("link", "binary_classification", "m", tables={"train": through})
    stored = Path(ds.to_spec()["tables"]["train"]["path"])
    assert stored.is_file() and stored.samefile(tmp_path / "big" / "data" / "train.csv")

