"""The SPEC §2 status dict of a job, built from its stored fields: one pure function for every reader (#14).

``JobMonitor.get_status()`` (through the Store) and ``jobtrack status``'s read-only fast path
(``jobtrack.store.peek``) both build the dict here, so the two cannot drift apart. Nothing here does I/O,
and nothing heavier than the caller's JSON decoder is imported: the CLI's fast path loads this module.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time (the CLI's start-up, #14)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from jobtrack.monitor import JobStatusDict

    Loads = Callable[[str], Any]

STATUS_COLUMNS = ("id", "status", "created_at", "finished_at", "updated_at", "experiment_name", "job_type",
                  "model_run_id", "result_json", "export_paths_json", "source_views_json")
"""The ``jobs`` columns a finished job's status dict needs, in the order of the dict (SPEC §2), and no more."""


def status_document(job_id: str, status: str, created: str, finished: str | None, updated: str, experiment: str,
                    job_type: str, model_run_id: str | None, result: dict[str, Any], paths_json: str,
                    views_json: str, loads: Loads) -> JobStatusDict:
    """The status dict from a job's fields; ``paths_json``/``views_json`` are decoded with ``loads``.

    ``started_at`` is the creation time, as the reference documents. Timestamps are stored as fixed-width
    ISO 8601 UTC text already, and are returned as they are.
    """
    return {
        "job_id": job_id,
        "status": status,
        "started_at": created,
        "finished_at": finished,
        "updated_at": updated,
        "experiment_name": experiment,
        "job_type": job_type,
        "model_run_id": model_run_id,
        "result": result,
        "export_paths": {} if paths_json == "{}" else loads(paths_json),
        "source_views": {} if views_json == "{}" else loads(views_json),
    }


def finished_status_document(row: tuple[Any, ...], loads: Loads) -> JobStatusDict:
    """The status dict of a finished job from its ``STATUS_COLUMNS`` (its frozen ``result_json``).

    ``loads``: the JSON decoder, which must return for any text jobtrack stores exactly what
    ``json.loads`` returns (``jobtrack.jsonutil.loads`` does, faster).
    """
    job_id, status, created, finished, updated, experiment, job_type, model_run_id, result, paths, views = row
    return status_document(job_id, status, created, finished, updated, experiment, job_type, model_run_id,
                           loads(result), paths, views, loads)
