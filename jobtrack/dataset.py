"""Dataset: the data a job uses, its task type and the evaluation metric that comes with it."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from jobtrack.errors import InvalidArgument


@dataclass(frozen=True)
class TaskType:
    """A task type of the reference SDK with its default evaluation metric and its direction."""

    name: str
    eval_metric: str
    mode: str  # "max": larger is better; "min": smaller is better


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (
        TaskType("binary_classification", "roc_auc", "max"),
        TaskType("multiclass_classification", "macro_f1", "max"),
        TaskType("multilabel_classification", "multilabel_auroc_macro", "max"),
        TaskType("regression", "rmse", "min"),
        # link_prediction_map is the mean average precision at k=12, as in the reference.
        TaskType("link_prediction", "link_prediction_map", "max"),
        TaskType("repeated_link_prediction", "link_prediction_map", "max"),
    )
}
"""The six task types, by name."""

SPLITS = ("train", "validation", "test")
"""Table names a dataset may have."""

TABLE_SUFFIXES = (".csv", ".json", ".jsonl")
"""File formats a table may be read from."""

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

Rows = Sequence[Mapping[str, Any]]
TableSource = Union[str, "os.PathLike[str]", Rows]


def check_name(value: Any, what: str) -> str:
    """Return value if it is a safe name (letters, digits, '-', '_', '.', not starting with '.').

    Raises:
        InvalidArgument: anything else, with the rule in the message.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > 200:
        raise InvalidArgument(
            f"{what} {value!r} is not allowed: use 1-200 ASCII letters, digits, '-', '_' and '.', "
            "not starting with '.' (names become file and table names; other text can go in the job's config)."
        )
    return value


def check_tags(tags: Any) -> tuple[str, ...]:
    """Tags checked as names (``check_name``), in order, duplicates dropped; a lone string is one tag (#15).

    Raises:
        InvalidArgument: a tag that is not a valid name, or tags given as something other than names.
    """
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple, set, frozenset)):
        raise InvalidArgument(f"tags must be a list of names, not {type(tags).__name__} {_short(tags)}; "
                              "use e.g. tags=['baseline'].")
    return tuple(dict.fromkeys(check_name(t, "tag") for t in tags))


class Dataset:
    """The data a job uses: a name, a task type and task name, and tables by split.

    ``tables`` maps ``train``/``validation``/``test`` to a file path (CSV, JSON list or JSON lines)
    or to in-memory rows (a list of dicts). ``experiment_name`` is ``name_task_type_task_name``.
    """

    def __init__(
        self,
        name: str,
        task_type: str,
        task_name: str,
        tables: Mapping[str, TableSource] | None = None,
    ) -> None:
        self.name = check_name(name, "Dataset name")
        if not isinstance(task_type, str) or task_type not in TASK_TYPES:  # a list is not even hashable (#21)
            raise InvalidArgument(
                f"Unknown task_type {_short(task_type)}; use one of {', '.join(TASK_TYPES)} (one string)."
            )
        self.task_type = task_type
        self.task_name = check_name(task_name, "task_name")
        if tables is not None and not isinstance(tables, Mapping):
            raise InvalidArgument(
                f"Dataset tables must map split names to files or rows, not {type(tables).__name__} "
                f"{_short(tables)}; use e.g. tables={{'train': 'train.csv', 'validation': 'valid.csv'}}."
            )
        self._tables: dict[str, Path | list[dict[str, Any]]] = {}
        for split, source in (tables or {}).items():
            self._tables[split] = _check_table(split, source)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {self.task_type!r}, {self.task_name!r}, tables={sorted(self._tables)})"

    @property
    def experiment_name(self) -> str:
        """``f"{name}_{task_type}_{task_name}"``: the experiment this dataset's jobs belong to."""
        return "_".join((self.name, self.task_type, self.task_name))

    @property
    def eval_metric(self) -> str:
        """The task type's default evaluation metric."""
        return TASK_TYPES[self.task_type].eval_metric

    @property
    def metric_mode(self) -> str:
        """"max" if a larger eval_metric is better, else "min"."""
        return TASK_TYPES[self.task_type].mode

    @property
    def splits(self) -> list[str]:
        """The splits this dataset has tables for."""
        return [s for s in SPLITS if s in self._tables]

    def has_table(self, split: str) -> bool:
        return split in self._tables

    def table_path(self, split: str) -> Path | None:
        """The file behind a split, or None for in-memory rows or a missing split."""
        source = self._tables.get(split)
        return source if isinstance(source, Path) else None

    @property
    def is_file_backed(self) -> bool:
        """True when every table is a file (needed for jobs run by ``jobtrack worker``)."""
        return all(isinstance(s, Path) for s in self._tables.values())

    def table(self, split: str) -> list[dict[str, Any]]:
        """The rows of one split, read from its file or returned from memory.

        Raises:
            InvalidArgument: the dataset has no such table, or its file cannot be read as rows (not UTF-8, malformed
                CSV / JSON, a row with more cells than the header, a column named twice); the message names the file.
        """
        if split not in self._tables:
            raise InvalidArgument(
                f"Dataset {self.name!r} has no {split!r} table; it has {', '.join(self.splits) or 'none'}."
            )
        source = self._tables[split]
        return _read_rows(source) if isinstance(source, Path) else source

    def with_table(self, split: str, source: TableSource) -> Dataset:
        """A copy of this dataset with one table replaced."""
        tables: dict[str, TableSource] = dict(self._tables)
        tables[split] = source
        return Dataset(self.name, self.task_type, self.task_name, tables)

    def to_spec(self) -> dict[str, Any]:
        """A JSON description: names, and each table as a path or a count of in-memory rows."""
        return {
            "name": self.name,
            "task_type": self.task_type,
            "task_name": self.task_name,
            "tables": {
                split: {"path": str(src)} if isinstance(src, Path) else {"rows_in_memory": len(src)}
                for split, src in self._tables.items()
            },
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, files_only: bool = False) -> Dataset:
        """Rebuild a file-backed dataset from ``to_spec()`` output.

        ``files_only=True`` leaves out the tables that were in memory instead of refusing them.

        Raises:
            InvalidArgument: a table was held in the memory of the process that submitted the job.
        """
        tables = spec.get("tables", {})
        in_memory = [split for split, t in tables.items() if "path" not in t]
        if files_only:
            tables = {split: t for split, t in tables.items() if "path" in t}
        elif in_memory:
            raise InvalidArgument(
                f"Dataset {spec.get('name')!r} had its {', '.join(in_memory)} table(s) in the memory of the "
                "process that submitted the job; they cannot be read back here. Pass the tables again, "
                "or give them as CSV/JSON files."
            )
        return cls(spec["name"], spec["task_type"], spec["task_name"], {s: t["path"] for s, t in tables.items()})


def _check_table(split: Any, source: Any) -> Path | list[dict[str, Any]]:
    if not isinstance(split, str) or split not in SPLITS:
        raise InvalidArgument(f"Unknown table {_short(split)}; tables are named {', '.join(SPLITS)}.")
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if not isinstance(text, str) or "\x00" in text:
            raise InvalidArgument(
                f"The {split} table path {_short(text)} is not a usable file name (bytes, or a NUL byte); "
                "pass a str or pathlib.Path."
            )
        path = Path(text).expanduser().absolute()
        tidy = Path(os.path.normpath(path))  # "proj/../data" stored as "data": renaming proj keeps the table
        if tidy != path and tidy.is_file() and path.is_file() and os.path.samefile(tidy, path):
            path = tidy  # (unless proj is a symlink, where ".." leads elsewhere: then it stays as given)
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise InvalidArgument(
                f"The {split} table {str(path)!r} has an unsupported format; use {', '.join(TABLE_SUFFIXES)}."
            )
        if not path.is_file():
            raise InvalidArgument(f"The {split} table file {str(path)!r} does not exist.")
        return path
    if isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        return [dict(r) for r in source]
    frame = hasattr(source, "to_dict") and hasattr(source, "columns")  # a pandas DataFrame: say how to pass it
    raise InvalidArgument(
        f"The {split} table must be a file path or a list of dicts (rows), not {type(source).__name__}"
        + ("; pass df.to_dict('records'), or write it with df.to_csv(path, index=False) and pass the path."
           if frame else ".")
    )


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a table file; a byte order mark (as Excel writes "CSV UTF-8") is not part of the first column.

    Raises:
        InvalidArgument: the file is not UTF-8, not valid CSV / JSON / JSON Lines, or holds something besides rows.
    """
    suffix, where = path.suffix.lower(), ""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            if suffix == ".csv":
                return _read_csv(fh, path)
            if suffix == ".jsonl":
                data = []
                for number, line in enumerate(fh, 1):
                    where = f"line {number}: "
                    data.extend([json.loads(line)] if line.strip() else [])
            else:
                data = json.load(fh)
    except UnicodeDecodeError:
        raise InvalidArgument(f"Table file {path} is not UTF-8 text; save it as UTF-8 (in Excel: CSV UTF-8).") from None
    except (json.JSONDecodeError, csv.Error) as exc:
        raise InvalidArgument(f"Table file {path} cannot be read: {where}{exc}; fix the file.") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        shape = "one JSON object per line" if suffix == ".jsonl" else "a JSON list of row objects"
        raise InvalidArgument(f"{path} must hold {shape}, e.g. {{\"id\": 1, \"x\": 0.5}} for a row.")
    return data


_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:(?:0|[1-9][0-9]*)?\.[0-9]+|(?:0|[1-9][0-9]*)\.?)(?:[eE][-+]?[0-9]+)?")
_NOT_FINITE = {"nan", "-nan", "inf", "-inf", "infinity", "-infinity"}


def _read_csv(fh: Any, path: Path) -> list[dict[str, Any]]:
    """CSV cells are text; a column whose every non-empty cell is written as a number is read as numbers, so
    training code need not convert. Any other column stays text, as in the file: one type per column, and an id or
    a code such as ``00123``, ``+15551234567`` or ``1_000`` (which ``int()`` reads as 123, 15551234567 and 1000)
    keeps its spelling, with the rest of its column."""
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    twice = sorted({name for name in header if name and header.count(name) > 1})  # "id,x,,": Excel's unnamed ones
    if twice:
        raise InvalidArgument(f"Table file {path} names the column(s) {twice} more than once in its header; give each "
                              "column its own name.")
    rows = []
    for row in reader:
        extra = row.pop(None, ())  # more cells than the header names (empty ones, a trailing comma: dropped)
        if any(extra):
            raise InvalidArgument(f"Table file {path}, line {reader.line_num}: {len(header) + len(extra)} cells "
                                  f"under a header of {len(header)} columns; fix the row or the header.")
        rows.append(row)
    if "" in header and not any(row.get("") for row in rows):  # unnamed columns with nothing in them: no column
        for row in rows:
            row.pop("", None)
    text = {k for row in rows for k, v in row.items() if isinstance(v, str) and v and _number(v) is None}
    return [{k: v if k in text or not isinstance(v, str) or not v else _number(v) for k, v in row.items()}
            for row in rows]


def _number(text: str) -> int | float | None:
    """The number ``text`` is written as (spaces around it allowed, as in ``1, 2``), or None."""
    number = text.strip()
    if _INTEGER.fullmatch(number):
        return int(number)
    if _FLOAT.fullmatch(number) or number.lower() in _NOT_FINITE:
        return float(number)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
