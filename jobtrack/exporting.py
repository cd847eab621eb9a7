"""A running job's exports: ``ctx.export()`` appends a batch, ``ctx.exporter()`` streams rows in batches (#13).

Each batch goes to the export's file (``exports.ExportFile``) and, in one write transaction, to the
database's rows of that export (``Store.add_export``); the first batch of a kind also creates its
source view and records its path, so ``export_paths`` and ``source_views`` name one file and one view
that hold every batch, in the order they were written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrack import exports, flatten, jsonutil
from jobtrack.errors import InvalidArgument

if TYPE_CHECKING:
    from jobtrack.context import RunContext


class Exporter:
    """Rows of one export, written in batches of ``batch_rows`` (``with ctx.exporter("predictions") as out``).

    ``write(row)`` and ``write_many(rows)`` buffer rows and write each full batch to the file and the
    database; the rest is written when the ``with`` block ends, which also completes the file. Rows are
    never all held in memory. An exporter of embeddings for a job submitted without
    ``extract_embeddings=True`` drops its rows (``skipped`` is True; the log says so once).
    """

    def __init__(self, owner: JobExports, kind: str, batch_rows: int, *, skipped: bool) -> None:
        self._owner = owner
        self.kind = kind
        self.batch_rows = batch_rows
        self.skipped = skipped
        self.rows = 0
        """Rows written through this exporter so far (buffered ones included)."""
        self._buffer: list[Mapping[str, Any]] = []

    @property
    def path(self) -> Path | None:
        """The export's file (complete once the ``with`` block has ended), or None before the first batch."""
        return self._owner.path(self.kind)

    def write(self, row: Mapping[str, Any]) -> None:
        """Add one row; a full batch is written at once.

        Raises:
            InvalidArgument: a row that is not a mapping, or whose columns differ from the first row's.
            NotSerializable: a value that cannot be stored, naming its row and column.
            JobCanceled: the job was canceled (its batch was not written).
        """
        if self.skipped:
            return
        self._buffer.append(row)
        self.rows += 1
        if len(self._buffer) >= self.batch_rows:
            self.flush()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add rows one by one (any iterable: a generator keeps memory flat); full batches are written at once."""
        for row in exports.as_rows(self.kind, rows):
            self.write(row)

    def flush(self) -> None:
        """Write the buffered rows now."""
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._owner.write_batch(self.kind, batch, stream=True)


class JobExports:
    """The exports of one running job: per kind, its file, its columns and how many rows it has."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._files: dict[str, exports.ExportFile] = {}
        self._input_columns: dict[str, list[str]] = {}  # the code's columns, before flatten_output
        self._columns: dict[str, list[str]] = {}  # the stored columns
        self._rows: dict[str, int] = {}

    def kinds(self) -> list[str]:
        """The kinds exported so far (an empty export counts: its file and view exist)."""
        return list(self._columns)

    def path(self, kind: str) -> Path | None:
        file = self._files.get(kind)
        return file.path if file is not None and kind in self._columns else None

    def _check(self, kind: str) -> bool:
        """Whether ``kind`` is exported (False: embeddings not asked for, skipped with a log line)."""
        ctx = self._ctx
        if kind not in exports.KINDS:
            raise InvalidArgument(f"export kind must be one of {', '.join(exports.KINDS)}, not {kind!r}.")
        if ctx.output_alias is None:
            raise InvalidArgument("export() needs an output_alias: only predict() and fit_predict() jobs export rows.")
        if kind == "embeddings" and not ctx.extract_embeddings:
            ctx.log("embeddings export skipped: the job was submitted without extract_embeddings=True")
            return False
        return True

    def export(self, kind: str, rows: Iterable[Mapping[str, Any]]) -> Path | None:
        """``ctx.export()``: one batch, appended to what this kind already holds; returns the file's path."""
        if not self._check(kind):
            return None
        return self.write_batch(kind, rows, stream=False)

    @contextmanager
    def exporter(self, kind: str, batch_rows: int) -> Iterator[Exporter]:
        """``ctx.exporter()``: a streaming exporter; the file and view are complete when the block ends."""
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise InvalidArgument(f"exporter(batch_rows=...) must be a positive integer, not {batch_rows!r}.")
        out = Exporter(self, kind, batch_rows, skipped=not self._check(kind))
        try:
            yield out
        except BaseException:
            file = self._files.get(kind)
            if file is not None:
                file.abort()  # a Parquet stream cannot be completed; CSV and JSON Lines keep the batches written
            raise
        if out.skipped:
            return
        out.flush()
        if kind not in self._columns:  # nothing written: an empty export, as export(kind, []) makes
            self.write_batch(kind, [], stream=False)
        self._files[kind].close()

    def write_batch(self, kind: str, rows: Iterable[Mapping[str, Any]], *, stream: bool) -> Path:
        ctx = self._ctx
        assert ctx.output_alias is not None
        done = self._rows.get(kind, 0)
        first = done == 0
        batch = exports.normalise_rows(kind, rows, columns=None if first else self._input_columns[kind],
                                       first_row=done)
        columns, values, rows_json = batch.columns, batch.values, batch.rows_json
        if kind == "predictions" and ctx.flatten_output:  # one row per label / candidate, no ground truth
            columns, values = flatten.flatten(ctx.dataset.task_type, columns, values)
            rows_json = [jsonutil.dumps(v, f"export({kind!r})") for v in values]
        if not first and columns != self._columns[kind]:
            raise InvalidArgument(f"export({kind!r}): this batch has columns {columns}, the first batch had "
                                  f"{self._columns[kind]}; every batch of an export needs the same columns.")
        file = self._files.get(kind)
        if file is None:
            directory = Path(ctx.output_config.get("directory") or ctx.job_dir)
            file = self._files[kind] = exports.ExportFile(directory, ctx.output_alias, kind,
                                                          ctx.output_config.get("format", "csv"))
        if stream:
            file.open_stream(columns, values, append=not first)
        with file.batch(columns, values, first=first) as path:
            ctx.record_export(kind, columns, rows_json, str(path), exports.view_name(kind, ctx.output_alias),
                              first_seq=done)
        if first:
            self._input_columns[kind], self._columns[kind] = batch.columns, columns
        self._rows[kind] = done + len(values)
        if batch.nonfinite:
            ctx.log(exports.describe_nonfinite(kind, batch.nonfinite))
        total = f" ({done + len(values)} in all)" if not first else ""
        ctx.log(f"exported {len(values)} {kind} rows to {path}{total}")
        return path
