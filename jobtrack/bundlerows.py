"""A bundle's rows made the target's (#19): carried paths rewritten, unfinished jobs made snapshot copies; the
paths the rows' jobs own, and the files under a path."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil, liveness
from jobtrack.store.bundles import job_tables
from jobtrack.store.materialize import RECORD_TABLE

if TYPE_CHECKING:
    from jobtrack.store import Store


class _Rewriter:
    """Rewrites carried paths: a string that is a carried source path, or lies under one, points into the target."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = {os.path.normpath(k): v for k, v in mapping.items()}
        self.marker = os.path.commonpath(list(self.mapping)) if self.mapping else None  # cheap pre-filter

    def path(self, value: str) -> str:
        probe = value.rstrip("/") or value
        while probe:  # the value, then each parent: a few dict lookups, whatever the number of carried paths
            if probe in self.mapping:
                return self.mapping[probe] + value[len(probe):]
            parent = os.path.dirname(probe)
            if parent == probe:
                return value
            probe = parent
        return value

    def tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.path(value) if self.marker and value.startswith(self.marker) else value
        if isinstance(value, dict):
            return {k: self.tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        return value

    def row(self, row: dict[str, Any], table: str) -> None:
        for col, value in row.items():
            if not (self.marker and isinstance(value, str) and self.marker in value):
                continue
            if not col.endswith("_json"):
                row[col] = self.path(value)
            elif (new := self.tree(doc := jsonutil.loads(value))) != doc:  # export paths, model_dir, provenance...
                row[col] = jsonutil.dumps(new, f"{table}.{col}")


def rewrite_paths(rows: dict[str, list[dict[str, Any]]], mapping: dict[str, str]) -> None:
    """Point every carried path into the target: any string of a job's rows (JSON columns included) that
    is a carried file or directory, or lies under one (export files, model directories, the provenance
    diff, checkpoints under the job's directory), whatever column holds it."""
    rewriter = _Rewriter(mapping)
    for table in job_tables():
        for row in rows[table]:
            rewriter.row(row, table)


def as_snapshots(manifest: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    """Make the jobs a bundle carried unfinished (``--include-running``) snapshot copies in the target.

    A snapshot copy keeps the status and progress it had when exported, but names no process and no lease
    (``liveness.snapshot_runner``), so nothing in the target declares it lost, claims or runs it; a later
    bundle with a newer state of the job (its end, or a newer snapshot) replaces it. A job that was still
    QUEUED (bundles of earlier versions carried those) has nothing to show yet and is left out.
    """
    ids = {str(i) for i in manifest.get("snapshot") or []}
    if not ids:
        return
    queued = {str(r["id"]) for r in rows["jobs"] if str(r["id"]) in ids and r.get("status") == "QUEUED"}
    for table in (*job_tables(), RECORD_TABLE):
        key = "id" if table == "jobs" else "job_id"
        rows[table] = [r for r in rows[table] if str(r[key]) not in queued]
    runner = liveness.snapshot_runner(str(manifest.get("source_database_id") or "unknown"))
    for row in rows["jobs"]:
        if str(row["id"]) in ids and row.get("status") == "RUNNING":
            row.update(runner=runner, lease_expires_at=None,
                       reason=f"snapshot (exported {manifest.get('created_at')}, still {row.get('status')})")


def job_paths(store: Store, rows: dict[str, list[dict[str, Any]]], only: Collection[str] | None = None) -> set[str]:
    """The files and directories of the jobs of ``rows`` (of those in ``only``, if given), as ``store`` places
    them: job directory, export files, model directories."""
    paths: list[str] = []
    for job in rows["jobs"]:
        if only is None or str(job["id"]) in only:
            paths.append(str(store.job_dir(job["id"])))
            paths += [str(p) for p in (jsonutil.loads(job["export_paths_json"]) or {}).values()]
            spec = jsonutil.loads(job["spec_json"]) or {}
            if spec.get("model_dir"):
                paths.append(store.model_dir_of(job.get("model_run_id"), str(spec["model_dir"])))
    paths += [store.model_dir(r["id"]) for r in rows["model_runs"] if only is None or str(r["job_id"]) in only]
    paths += [str(e["path"]) for e in rows["job_exports"] if only is None or str(e["job_id"]) in only]
    return {os.path.abspath(p) for p in paths}


def job_folders(store: Store, rows: dict[str, list[dict[str, Any]]], job_ids: Sequence[str]) -> tuple[str, ...]:
    """Path prefixes of the files of these jobs in the target: job directories and model run directories."""
    ids = set(job_ids)
    runs = [str(r["id"]) for r in rows["model_runs"] if str(r["job_id"]) in ids]
    return tuple(os.path.join(str(p), "") for p in [*(store.job_dir(i) for i in sorted(ids)),
                                                      *(store.model_dir(r) for r in runs)])


def regular_files(path: str) -> Iterator[tuple[str, str]]:
    """(file, its path relative to ``path``) of every regular file under ``path`` (symlinks skipped)."""
    if os.path.isfile(path) and not os.path.islink(path):
        yield path, ""
        return
    for top, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(top, name)
            if os.path.isfile(full) and not os.path.islink(full):
                yield full, Path(os.path.relpath(full, path)).as_posix()
