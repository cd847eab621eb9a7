"""What the dashboard's pages and the report show, read from a Store: plain dicts, no HTML (#16).

Optional parts of the API (tags, provenance, config parameters, the query language, ``compare``) are
used when this version of jobtrack has them and left out otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil
from jobtrack.errors import JobtrackError
from jobtrack.monitor import status_dict
from jobtrack.states import TERMINAL

if TYPE_CHECKING:
    from jobtrack.store import JobRecord, Store

LOG_TAIL_BYTES = 64 * 1024
"""How much of a log's end a page shows at first; it then follows the file from there."""

EXPORT_HEAD_ROWS = 10
"""Rows of each export shown on a job page."""


_DECODE_BEST_MAX = 64 * 1024
"""A jobs table row decodes a result (for the best epoch's number) only up to this size, or a running job's
epochs up to ``_DECODE_EPOCHS_MAX``; beyond, the stored ``best_metric`` column is shown alone."""
_DECODE_EPOCHS_MAX = 1000


def best_of(store: Store, rec: JobRecord) -> tuple[Any, Any]:
    """(best epoch, best value) of a job for its table row: cheap for any size of job."""
    if rec.result_json is not None:
        if len(rec.result_json) > _DECODE_BEST_MAX:
            return None, rec.best_metric
        result = jsonutil.loads(rec.result_json) or {}
        return result.get("best_epoch"), result.get("best_metric", rec.best_metric)
    if rec.epoch_seq and rec.epoch_seq <= _DECODE_EPOCHS_MAX:
        result = store.result(rec)
        return result.get("best_epoch"), result.get("best_metric")
    return None, rec.best_metric


def row(store: Store, rec: JobRecord, tags: Sequence[str] = (), epochs: int | None = None) -> dict[str, Any]:
    """One line of the jobs table (``epochs``: how many it stored, when known; else its count of reports)."""
    best_epoch, best_value = best_of(store, rec)
    return {"id": rec.id, "status": rec.status.value, "type": rec.job_type.value,
            "experiment": rec.experiment_name, "created": rec.created_iso, "updated": rec.updated_iso,
            "finished": rec.finished_iso, "epochs": rec.epoch_seq if epochs is None else epochs,
            "eval_metric": rec.eval_metric,
            "best": best_value, "best_epoch": best_epoch, "tags": list(tags), "terminal": rec.status in TERMINAL}


def rows(store: Store, recs: Sequence[JobRecord]) -> list[dict[str, Any]]:
    """The jobs table's lines for these records, with their tags."""
    tags = store.tags_of([r.id for r in recs])
    # an epoch reported again counts once; a count costs a read of each epoch row, so a long job shows its reports
    counts = store.epoch_counts([r.id for r in recs if 0 < r.epoch_seq <= _DECODE_EPOCHS_MAX])
    return [row(store, r, tags.get(r.id, ()), counts.get(r.id)) for r in recs]


def job_detail(store: Store, job_id: str) -> dict[str, Any]:
    """Everything the job page shows.

    Raises:
        JobNotFound: no job has this id.
    """
    rec = store.get_job(job_id)
    status, epochs = status_and_epochs(store, rec)
    spec = rec.spec
    tags = store.tags_of([rec.id]).get(rec.id, [])
    provenance = jsonutil.loads(rec.provenance_json) if rec.provenance_json else None
    config = spec.get("config") or {}
    return {
        "record": rec, "status": status, "events": store.events(rec.id), "epochs": epochs,
        "config": config, "tags": list(tags), "provenance": provenance,
        "dataset": spec.get("dataset"), "exports": store.export_head(rec.id, rows=EXPORT_HEAD_ROWS),
        "best_epoch": status["result"].get("best_epoch"), "eval_metric": rec.eval_metric,
        "terminal": rec.status in TERMINAL, "seq": rec.epoch_seq,
    }


def status_and_epochs(store: Store, rec: JobRecord) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job's ``get_status()`` dict with its epochs list taken out (the page draws them), and the epochs.

    One read and decode serves both: the result already holds the epochs (frozen, or composed for a
    running job), which matters for a job with 10 k of them.
    """
    status: dict[str, Any] = dict(status_dict(store, rec))
    result: dict[str, Any] = dict(status["result"])
    epochs = result.get("epochs")
    if not isinstance(epochs, list):
        epochs = store.epochs_after(rec.id) if rec.epoch_seq else []
    else:
        result["epochs"] = f"{len(epochs)} epoch(s): see the charts"
    status["result"] = result
    return status, epochs


def log_path(store: Store, job_id: str) -> Path | None:
    """The job's log file if it exists and lies inside the database's files directory, else None.

    ``job_id`` must already name a job of this store: an id never becomes a path without that check,
    and the resolved path is checked to stay under ``files_dir`` (no ``..`` or link leads out).
    """
    root = store.files_dir.resolve()
    path = (store.job_dir(job_id) / "log.txt").resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def read_log(store: Store, job_id: str, position: int | None = None) -> tuple[str, int]:
    """(text, next position) of a job's log: its last ``LOG_TAIL_BYTES`` when ``position`` is None, else what
    follows ``position`` (from the start again if the file shrank: a new log)."""
    path = log_path(store, job_id)
    if path is None:
        return "", 0
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if position is None or position > size:
            position = max(0, size - LOG_TAIL_BYTES) if position is None else 0
        fh.seek(position)
        data = fh.read(LOG_TAIL_BYTES * 4)
    return data.decode("utf-8", "replace"), position + len(data)


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``model.depth``); lists stay values."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value} if prefix else {}


def compare(store: Store, job_ids: Sequence[str]) -> dict[str, Any]:
    """Jobs side by side: their records, epochs, and the rows (config keys, final metrics, facts) that differ.

    Raises:
        JobNotFound: a job does not exist.
    """
    recs = [store.get_job(j) for j in job_ids]
    epochs = {r.id: store.epochs_after(r.id) if r.epoch_seq else [] for r in recs}
    table: dict[str, list[Any]] = {}

    def put(key: str, i: int, value: Any) -> None:
        table.setdefault(key, [None] * len(recs))[i] = value

    for i, rec in enumerate(recs):
        best_epoch, best_value = best_of(store, rec)
        for key, value in (("status", rec.status.value), ("job type", rec.job_type.value),
                           ("experiment", rec.experiment_name), ("eval metric", rec.eval_metric),
                           ("best epoch", best_epoch), ("best value", best_value), ("epochs", len(epochs[rec.id]))):
            put(key, i, value)
        for key, value in flat(rec.spec.get("config") or {}).items():
            put(f"config.{key}", i, value)
        if epochs[rec.id]:
            last = epochs[rec.id][-1]
            for split in ("train", "validation"):
                for name, value in (last.get(split) or {}).items():
                    put(f"last {split}.{name}", i, value)
    differ = {k: v for k, v in table.items() if any(x != v[0] for x in v[1:])}
    same = {k: v[0] for k, v in table.items() if k not in differ}
    found = {"records": recs, "epochs": epochs, "differ": differ, "same": same, "identical": None}
    found.update(_api_compare(store, [r.id for r in recs]) or {})
    return found


def _api_compare(store: Store, ids: list[str]) -> dict[str, Any] | None:
    """``JobManager.compare`` (config, metrics, provenance, durations) read through the dashboard's read-only
    store (#15): the page writes nothing, not even a liveness verdict."""
    from jobtrack.manager import compare_in

    try:
        result = compare_in(store, ids, show_all=True)
    except JobtrackError:
        return None

    def label(row: Any) -> str:
        return str(row.key) if str(row.key).startswith(str(row.section)) else f"{row.section}: {row.key}"

    differ = {label(r): r.cells() for r in result.rows if r.differs}  # shown as `jobtrack compare` shows them
    same = {label(r): r.cells()[0] for r in result.rows if not r.differs}
    return {"differ": differ, "same": same, "identical": result.identical}


def json_text(value: Any) -> str:
    """Readable JSON for a panel (sorted keys, indented); anything JSON cannot hold is shown as text."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
