"""Export files for predictions and embeddings: format choice, validation and atomic writes (no SQL)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jobtrack import jsonutil
from jobtrack.config import make_private_dir
from jobtrack.errors import InvalidArgument, MissingExtra

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
        if "\x00" in text:
            raise InvalidArgument(
                f"The export directory {_short(text)} holds a NUL byte, which no path can; remove it."
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


def normalise_rows(kind: str, rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and value lists of rows that all have the same keys and JSON-serializable values.

    Raises:
        InvalidArgument: rows that are not mappings or disagree on their columns.
        NotSerializable: a value that cannot be stored as JSON.
    """
    columns: list[str] | None = None
    values: list[list[Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidArgument(f"export({kind!r}): row {i} is a {type(row).__name__}, not a dict.")
        keys = [_utf8(str(k)) for k in row]  # names go into files, a SQL view and the database: UTF-8 only
        if columns is None:
            columns = keys
        elif keys != columns:
            raise InvalidArgument(f"export({kind!r}): row {i} has columns {keys}, the first row has {columns}.")
        values.append([_plain(v) for v in row.values()])
    for i, vals in enumerate(values):
        jsonutil.dumps(vals, f"export({kind!r}) row {i}")  # names the bad cell before anything is written
    return columns or [], values


def _plain(value: Any) -> Any:
    # numpy scalars and arrays become plain numbers and lists without importing numpy
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    return value


def write_file(directory: Path, alias: str, kind: str, fmt: str, columns: list[str], values: list[list[Any]]) -> Path:
    """Write rows to ``<directory>/<alias>_<kind>.<fmt>`` atomically (temp file, then rename)."""
    make_private_dir(directory)
    path = directory / f"{alias}_{kind}{FORMATS[fmt]}"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if fmt == "csv":
            # lone surrogates (os.fsdecode of bytes that are not UTF-8) are written as \udc80 text (#21)
            with open(tmp, "w", encoding="utf-8", errors="backslashreplace", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                for vals in values:
                    writer.writerow([json.dumps(v) if isinstance(v, (list, dict)) else v for v in vals])
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for vals in values:
                    fh.write(json.dumps(dict(zip(columns, vals))) + "\n")
        else:
            import pyarrow as pa  # the parquet extra
            import pyarrow.parquet as pq

            table = pa.table({_utf8(c): [_utf8(v[i]) for v in values] for i, c in enumerate(columns)})
            pq.write_table(table, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
