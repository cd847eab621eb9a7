"""Export files for predictions and embeddings: format choice, validation and atomic writes (no SQL)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobtrack import jsonutil
from jobtrack.config import make_private_dir
from jobtrack.errors import InvalidArgument, MissingExtra, NotSerializable
from jobtrack.files import remove_stale_temps, temp_prefix
from jobtrack.scalars import narrow_floats

KINDS = ("predictions", "embeddings")
"""What a job may export."""

FORMATS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
"""Export formats and their file suffixes; parquet needs the ``parquet`` extra (pyarrow)."""

_OUTPUT_CONFIG_KEYS = {"format", "directory"}


def check_output_config(output_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``output_config`` at call time: ``{"format": "csv"|"jsonl"|"parquet", "directory": path}``.

    A missing directory is created private to the user (0700, whatever the umask); an existing one is
    left as it is.

    Raises:
        InvalidArgument: unknown keys or format, a missing extra, or a directory that cannot be created.
    """
    if output_config is not None and not isinstance(output_config, Mapping):
        raise InvalidArgument(
            f"output_config must be a dict, not {type(output_config).__name__} {_short(output_config)}; "
            "use e.g. {'format': 'csv', 'directory': 'exports'}."
        )
    config = dict(output_config or {})
    unknown = set(config) - _OUTPUT_CONFIG_KEYS
    if unknown:
        raise InvalidArgument(
            f"Unknown output_config keys {sorted(unknown)}; allowed: {sorted(_OUTPUT_CONFIG_KEYS)}."
        )
    fmt = str(config.get("format", "csv")).lower()
    if fmt not in FORMATS:
        raise InvalidArgument(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)} (never pickle).")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise MissingExtra("parquet", "pyarrow", "Parquet exports")
    out: dict[str, Any] = {"format": fmt}
    if config.get("directory") is not None:
        raw = config["directory"]
        text = os.fspath(raw) if isinstance(raw, (str, os.PathLike)) else None
        if not isinstance(text, str):
            raise InvalidArgument(
                f"output_config['directory'] must be a path (str or pathlib.Path), not {type(raw).__name__} "
                f"{_short(raw)}; use e.g. {{'directory': 'exports'}}."
            )
        if "\x00" in text or not text.strip():
            raise InvalidArgument(
                f"The export directory {_short(text)} is empty or holds a NUL byte, which no path can; name a folder "
                "(e.g. {'directory': 'exports'}), or leave 'directory' out for the job's own folder."
            )
        if not text.isascii() and _utf8(text) != text:  # its path is stored in the database, as UTF-8 text
            raise InvalidArgument(
                f"The export directory {_short(text)} is not valid UTF-8 (a name decoded from other bytes); "
                "choose a directory whose name is UTF-8."
            )
        directory = Path(text).expanduser().absolute()
        try:
            make_private_dir(directory)  # 0700 whatever the umask (#21)
        except OSError as exc:
            raise InvalidArgument(
                f"Cannot create the export directory {directory}: {exc.strerror or exc}; "
                "choose a writable directory in output_config['directory']."
            ) from None
        if not os.access(directory, os.W_OK):
            raise InvalidArgument(
                f"The export directory {directory} is not writable; "
                "choose a writable directory in output_config['directory']."
            )
        out["directory"] = str(directory)
    return out


def view_name(kind: str, alias: str) -> str:
    """The source view's name: a plain SQL identifier, so users need no quoting."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', alias)}"


def alias_key(alias: str) -> str:
    """Aliases that map to the same view name are the same alias (SQL names ignore case, so we do too)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", alias).lower()


EXPORT_BATCH_ROWS = 5000
"""Rows ``ctx.exporter()`` buffers before it writes them (to the file and the database) as one batch."""


@dataclass
class Batch:
    """Rows of one export call, checked and encoded: plain values for the file, JSON arrays for the database."""

    columns: list[str]
    values: list[list[Any]]
    rows_json: list[str]
    nonfinite: dict[str, list[int]] = field(default_factory=dict)  # column -> row numbers that held NaN/inf


def is_dataframe(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas)."""
    return hasattr(value, "to_dict") and hasattr(value, "columns") and hasattr(value, "iloc")


def _records(frame: Any, size: int = EXPORT_BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """A DataFrame's rows as dicts, a slice at a time: never the whole frame as dicts at once.

    A named index (``df.set_index("id")``) comes first as columns, as ``to_csv`` writes it, unless a column has
    its name; an unnamed one (the default ``0, 1, 2, ...``) is left out. Values are what ``to_dict("records")``
    gives, but a 32- or 16-bit float the decimal it stands for, as everywhere (``jobtrack.scalars``).
    """
    taken = set(frame.columns)  # an index level that is also a column (set_index("id", drop=False)) is there
    levels = [name for name in frame.index.names if name is not None and name not in taken]
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size]
        if levels:
            part = part.reset_index(level=levels)
        if len(part.columns) == 0:
            yield from ({} for _ in range(len(part)))
            continue
        # column by column, so a float32 or float16 column's values are the decimals they stand for, as the
        # same values in rows of dicts are (``to_dict`` gives their exact 64-bit values: 0.1 as 0.10000000149...)
        names = list(part.columns)
        columns = [narrow_floats(column, column.tolist()) for _, column in part.items()]
        for values in zip(*columns, strict=True):
            yield dict(zip(names, values, strict=True))


def as_rows(kind: str, rows: Any) -> Any:
    """``rows`` as an iterable of row mappings: a pandas DataFrame as its records; other rows as they are.

    Raises:
        InvalidArgument: a container that iterates as something other than rows (a dict of columns, text).
    """
    if is_dataframe(rows):
        return _records(rows)
    if isinstance(rows, (Mapping, str, bytes)):
        raise InvalidArgument(
            f"export({kind!r}) takes rows, a list of dicts (one per row: {{'id': 1, 'score': 0.9}}) or a pandas "
            f"DataFrame, not a {type(rows).__name__}; pass a dict of columns as "
            "[dict(zip(cols, values)) for values in zip(*cols.values())].")
    return rows


def normalise_rows(kind: str, rows: Iterable[Mapping[str, Any]], *, columns: list[str] | None = None,
                   first_row: int = 0) -> Batch:
    """Check and encode rows that all have the same columns (those of ``columns`` when given: an earlier batch's).

    Values ML code produces are converted as everywhere (``jsonutil.plain``: numpy and pandas scalars,
    arrays as lists, datetimes as UTC text); NaN and infinities become null, and ``Batch.nonfinite`` says
    in which columns and rows. Rows are numbered from ``first_row`` (the rows exported before).

    Raises:
        InvalidArgument: rows that are not mappings or disagree on their columns.
        NotSerializable: a value that cannot be stored, naming its row and column.
    """
    rows = as_rows(kind, rows)
    values: list[list[Any]] = []
    texts: list[str] = []
    nonfinite: dict[str, list[int]] = {}
    for i, row in enumerate(rows, first_row):
        if not isinstance(row, Mapping):
            raise InvalidArgument(f"export({kind!r}): row {i} is a {type(row).__name__}, not a dict; each row is a "
                                  "dict of column name to value ({'id': 1, 'score': 0.9}).")
        keys = [_utf8(str(k)) for k in row]  # names go into files, a SQL view and the database: UTF-8 only
        cells = list(row.values())
        if columns is None:
            columns = keys
        elif keys != columns:
            if sorted(keys) != sorted(columns) or len(set(keys)) != len(keys):
                raise InvalidArgument(f"export({kind!r}): row {i} has columns {keys}, the first row has {columns}; "
                                      "every row of an export needs the same columns.")
            by_name = dict(zip(keys, cells, strict=True))
            cells = [by_name[c] for c in columns]  # the same columns in another order: the first row's order
        found: list[str] = []
        try:
            text = jsonutil.dumps(cells, "row", nonfinite=found)
        except NotSerializable:
            for name, cell in zip(columns, cells, strict=True):  # name the column, not its position
                jsonutil.dumps(cell, f"export({kind!r}) row {i} column {name!r}")
            raise
        for path in found:
            name = columns[int(path[4:path.index("]")])]
            nonfinite.setdefault(name, []).append(i)
        texts.append(text)
        values.append(jsonutil.loads(text))  # plain values: what the file gets is what the view shows
    return Batch(columns or [], values, texts, nonfinite)


def describe_nonfinite(kind: str, nonfinite: dict[str, list[int]]) -> str:
    """The log line saying where NaN and infinities of an export were stored as null."""
    parts = []
    for name, rows in nonfinite.items():
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        parts.append(f"column {name!r}: {len(rows)} row(s) ({shown})")
    return f"export({kind!r}): non-finite values (NaN or infinite) stored as null in " + "; ".join(parts)


class ExportFile:
    """The file of one export of a job: written by its first batch, appended to by later ones.

    ``<directory>/<alias>_<kind>.<fmt>``, private to the user (0600). A batch is written before the
    database records it; ``batch()`` undoes the file's part if the body (the database write) raises.
    CSV and JSON Lines files are appended to; a Parquet file is rewritten per ``export()`` call, or
    streamed by an open writer between ``open_stream()`` and ``close()`` (``ctx.exporter``).
    """

    def __init__(self, directory: Path, alias: str, kind: str, fmt: str) -> None:
        self.directory = directory
        self.path = directory / f"{alias}_{kind}{FORMATS[fmt]}"
        self.fmt = fmt
        self._stream: Any = None  # an open pyarrow ParquetWriter (ctx.exporter, Parquet)
        self._stream_tmp: str | None = None

    @contextmanager
    def batch(self, columns: list[str], values: list[list[Any]], *, first: bool) -> Iterator[Path]:
        """Write one batch of rows (the ``first`` replaces an older file); undone if the body raises."""
        make_private_dir(self.directory)
        if self.fmt == "parquet":
            yield from self._parquet_batch(columns, values, first)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if first else os.O_APPEND)
        fd = os.open(self.path, flags, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask, and a file left by an earlier run of this alias too
        size = os.fstat(fd).st_size
        try:
            with open(fd, "a", encoding="utf-8", errors="backslashreplace", newline="") as fh:
                if self.fmt == "csv":
                    writer = csv.writer(fh)
                    if first:
                        writer.writerow(columns)
                    for vals in values:
                        writer.writerow([json.dumps(v) if isinstance(v, (list, dict)) else v for v in vals])
                else:
                    for vals in values:
                        fh.write(json.dumps(dict(zip(columns, vals, strict=True))) + "\n")
            yield self.path
        except BaseException:
            if first:
                with suppress(OSError):
                    os.unlink(self.path)
            else:
                with suppress(OSError):
                    os.truncate(self.path, size)
            raise

    def _parquet_batch(self, columns: list[str], values: list[list[Any]], first: bool) -> Iterator[Path]:
        table = _arrow_table(columns, values)
        if self._stream is not None:
            try:
                self._stream.write_table(table)
                yield self.path
            except BaseException:
                self.abort()  # a row group cannot be taken back: the stream ends here
                raise
            return
        import pyarrow as pa  # the parquet extra
        import pyarrow.parquet as pq

        if not first and self.path.exists():  # append: the rows so far, then these
            table = pa.concat_tables([pq.read_table(self.path), table], promote_options="default")
        tmp = self._temp()
        try:
            pq.write_table(table, tmp)
            os.chmod(tmp, 0o600)
            yield self.path
            os.replace(tmp, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def open_stream(self, columns: list[str], values: list[list[Any]], *, append: bool) -> None:
        """Parquet only: open a writer for a stream of batches (after the rows exported so far, if ``append``)."""
        if self.fmt != "parquet" or self._stream is not None:
            return
        import pyarrow.parquet as pq

        make_private_dir(self.directory)
        table = _arrow_table(columns, values)
        tmp = self._temp()
        existing = pq.read_table(self.path) if append and self.path.exists() else None
        self._stream = pq.ParquetWriter(tmp, (existing if existing is not None else table).schema)
        self._stream_tmp = tmp
        if existing is not None:
            self._stream.write_table(existing)

    def close(self) -> None:
        """End a Parquet stream: the file appears complete at its path."""
        if self._stream is not None and self._stream_tmp is not None:
            self._stream.close()
            os.chmod(self._stream_tmp, 0o600)
            os.replace(self._stream_tmp, self.path)
            self._stream = self._stream_tmp = None

    def abort(self) -> None:
        """Drop a Parquet stream that cannot be completed."""
        if self._stream is not None:
            with suppress(Exception):
                self._stream.close()
            with suppress(OSError):
                os.unlink(self._stream_tmp or "")
            self._stream = self._stream_tmp = None

    def _temp(self) -> str:
        remove_stale_temps(self.directory, "export")  # a Parquet file a job killed mid-write left
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f"{temp_prefix('export')}{self.path.name}.",
                                   suffix=".tmp")
        os.close(fd)
        return tmp


def _arrow_table(columns: list[str], values: list[list[Any]]) -> Any:
    import pyarrow as pa  # the parquet extra

    return pa.table({_utf8(c): [_utf8(v[i]) for v in values] for i, c in enumerate(columns)})


def _utf8(value: Any) -> Any:
    """value with lone surrogates in its strings written as ``\\udc80`` text, which pyarrow refuses to encode."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
