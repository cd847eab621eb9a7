"""Job bundles (#19): one zip file carrying finished jobs, their rows and their files between machines.

Layout: ``manifest.json`` (format and version, jobtrack's version, the source database's id, the jobs,
the files' original paths, and the sha256 and size of every other entry), ``rows/<table>.jsonl`` (one
JSON object a row) and ``files/<path under the files directory>``. The tables and columns are derived
from the schema (``store.bundles.bundle_tables``): every per-job table, the sweeps of trials, registry
entries. Format 2 carries schema 4's tables and columns; a format-1 bundle (without them) still imports,
the columns it lacks taking their defaults.

Reading verifies everything before anything is written: entry names (no absolute path, no ``..``, no
backslash), no symlink or device entry, no duplicate, counts and sizes within limits, every listed
entry present and no other, every size and checksum. An import then checks the rows against the target
(``BundleConflict``), writes the files (only inside the target's files directory), and adds the rows,
rewriting each carried path into the target's files directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from jobtrack import __version__, jsonutil, liveness
from jobtrack.bundlerows import as_snapshots, job_folders, job_paths, regular_files, rewrite_paths
from jobtrack.errors import BundleConflict, InvalidArgument, InvalidBundle
from jobtrack.files import NewFiles, check_output, remove_stale_temps, temp_beside, temp_prefix
from jobtrack.states import JobStatus
from jobtrack.store import Store
from jobtrack.store.bundles import NAME, bundle_tables, job_tables, required_columns, table_columns
from jobtrack.store.materialize import PREFIX, RECORD_TABLE
from jobtrack.timeutil import to_iso, utcnow

FORMAT = "jobtrack-bundle"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before schema 4 (no tags, config, metrics, sweeps, attempts)
MANIFEST = "manifest.json"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What a bundle may hold; beyond it the bundle is refused (``InvalidBundle``) before anything is written."""

    max_entries: int = 1_000_000
    max_entry_bytes: int = 16 << 30
    max_total_bytes: int = 64 << 30


@dataclass
class ExportReport:
    """What ``export_bundle`` wrote."""

    path: str
    jobs: list[str] = field(default_factory=list)
    snapshot: list[str] = field(default_factory=list)  # jobs exported while not yet finished
    files: int = 0
    bytes: int = 0


@dataclass
class ImportReport:
    """What ``import_bundle`` (or ``merge``) added and what the target already had."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)  # jobs already there that got tags they lacked (a union)
    updated: list[str] = field(default_factory=list)  # snapshot copies here replaced by the bundle's newer state
    files_written: int = 0


@dataclass
class Verified:
    """A bundle whose every entry passed the checks; its rows parsed, its files still in the zip."""

    path: str
    manifest: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]
    files: list[tuple[str, str, str]]  # (entry name, path under the files directory, sha256)


# -- export ----------------------------------------------------------------------------------------------


def _sources(store: Store, rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The files and directories of the carried jobs that exist (``bundlerows.job_paths``)."""
    found = sorted(p for p in job_paths(store, rows) if os.path.lexists(p))
    return [p for p in found if not any(p.startswith(q + os.sep) for q in found)]  # a parent carries its children


def _relative(root: str, path: str) -> str:
    """Where a source path goes under the target's files directory."""
    if path == root or path.startswith(root + os.sep):
        return PurePosixPath(*Path(os.path.relpath(path, root)).parts).as_posix()
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return f"external/{digest}/{os.path.basename(path)}"


def export_bundle(store: Store, out: str | os.PathLike[str], job_ids: Sequence[str] | None = None, *,
                  where: str | None = None, since: datetime | None = None, include_running: bool = False,
                  files: bool = True, deps: bool = True) -> ExportReport:
    """Write the selected jobs (see ``Store.bundle_job_ids``; ``where``: a query of ``jobtrack.query``
    selects them) to the bundle ``out``, replacing it atomically.

    Raises:
        InvalidQuery: ``where`` does not parse; nothing was written.
        InvalidArgument: both ``job_ids`` and ``where``; ``out`` is this database (or another), a folder, a device,
            in a missing or unwritable folder (``files.check_output``, ``files.temp_beside``).
    """
    if where is not None and job_ids is not None:
        raise InvalidArgument("Give job ids or a query (--where), not both; put the ids in the query instead.")
    if since is not None and job_ids is not None:  # named jobs are carried whenever they were created
        raise InvalidArgument("Give job ids or --since, not both: named jobs are exported whenever they were "
                              "created; leave out the ids to export every finished job since that time.")
    target = check_output(out, "bundle", store.db.path)
    among = None if where is None else store.search_ids(where)
    ids, _ = store.bundle_job_ids(job_ids, since=since, among=among, include_running=include_running,
                                        deps=deps)
    rows = store.bundle_rows(ids)
    running = [str(r["id"]) for r in rows["jobs"] if not JobStatus(r["status"]).is_terminal]  # as the rows say
    root = os.path.abspath(store.files_dir)
    paths = {p: _relative(root, p) for p in _sources(store, rows)} if files else {}
    report = ExportReport(str(out), jobs=ids, snapshot=running)
    entries: dict[str, dict[str, Any]] = {}
    remove_stale_temps(os.path.dirname(target), "bundle")  # what an export killed midway left
    tmp = temp_beside(target, "bundle")  # a device or unwritable folder: InvalidArgument, nothing written
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for table in bundle_tables():
                data = "".join(jsonutil.dumps(r, table) + "\n" for r in rows[table]).encode()
                _add(zf, entries, f"rows/{table}.jsonl", data)
            for source, rel in paths.items():
                for full, sub in regular_files(source):
                    report.bytes += _add_file(zf, entries, f"files/{rel}/{sub}".rstrip("/"), full)
                    report.files += 1
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "jobtrack_version": __version__,
                        "source_database_id": store.database_id(), "created_at": to_iso(utcnow()),
                        "jobs": ids, "snapshot": running, "paths": paths, "entries": entries}
            zf.writestr(MANIFEST, jsonutil.dumps(manifest, "bundle manifest"))
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return report


def _add(zf: zipfile.ZipFile, entries: dict[str, dict[str, Any]], name: str, data: bytes) -> None:
    zf.writestr(name, data)
    entries[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _add_file(zf: zipfile.ZipFile, entries: dict[str, dict[str, Any]], name: str, path: str) -> int:
    """Copy the file at ``path`` into the entry ``name`` block by block, hashing as it goes (a checkpoint of any
    size is never held in memory); its size. Zip64 always: the file may pass 4 GiB, or grow while read."""
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type, info.external_attr = zf.compression, 0o600 << 16
    info._compresslevel = zf.compresslevel  # type: ignore[attr-defined]  # as ``writestr`` sets it (zlib: 6 else)
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(_BLOCK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    entries[name] = {"sha256": digest.hexdigest(), "size": size}
    return size


# -- verify ------------------------------------------------------------------------------------------------


def _check_name(bundle: str, name: str) -> None:
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise InvalidBundle(bundle, name, "unsafe entry name (absolute, '..', empty part or backslash)")


def _check_member(bundle: str, info: zipfile.ZipInfo, limits: Limits) -> None:
    _check_name(bundle, info.filename)
    mode = info.external_attr >> 16
    if info.is_dir() or (stat.S_IFMT(mode) and not stat.S_ISREG(mode)):
        kind = "symlink" if stat.S_ISLNK(mode) else "directory" if info.is_dir() else "special file"
        raise InvalidBundle(bundle, info.filename, f"a {kind} entry; only regular files are accepted")
    if info.file_size > limits.max_entry_bytes:
        raise InvalidBundle(bundle, info.filename,
                            f"{info.file_size} bytes, over the limit of {limits.max_entry_bytes}")


def _scan(bundle: str, zf: zipfile.ZipFile, name: str, limit: int, keep: io.BytesIO | None = None) -> tuple[int, str]:
    """The size and sha256 of the entry's bytes, read block by block no further than ``limit`` and kept in ``keep``
    if given (a file entry is only checked: never held in memory); a damaged entry is InvalidBundle."""
    digest, size = hashlib.sha256(), 0
    try:
        with zf.open(name) as fh:
            while chunk := fh.read(_BLOCK):
                size += len(chunk)
                if size > limit:
                    raise InvalidBundle(bundle, name, f"more than {limit} bytes")
                digest.update(chunk)
                if keep is not None:
                    keep.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, InvalidBundle):
            raise
        raise InvalidBundle(bundle, name, f"unreadable ({exc})") from exc
    return size, digest.hexdigest()


def _read(bundle: str, zf: zipfile.ZipFile, name: str, limit: int) -> tuple[bytes, str]:
    """The entry's bytes (read no further than ``limit``) and their sha256 (``_scan``)."""
    buf = io.BytesIO()
    digest = _scan(bundle, zf, name, limit, buf)[1]
    return buf.getvalue(), digest


def read_bundle(path: str | os.PathLike[str], limits: Limits | None = None) -> Verified:
    """Open and verify a bundle completely (nothing is written).

    Raises:
        InvalidBundle: the first check that fails, naming the entry.
    """
    limits = limits or Limits()
    bundle = str(path)
    try:
        zf = zipfile.ZipFile(bundle)
    except OSError as exc:  # no such file, a directory, not readable: the file, not an entry, is the problem
        raise InvalidBundle(bundle, "", f"cannot read it: {exc.strerror or exc}") from exc
    except zipfile.BadZipFile as exc:
        raise InvalidBundle(bundle, MANIFEST, f"not a readable zip file ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise InvalidBundle(bundle, MANIFEST, f"{len(infos)} entries, over the limit of {limits.max_entries}")
        seen: set[str] = set()
        total = 0
        for info in infos:
            _check_member(bundle, info, limits)
            if info.filename in seen:
                raise InvalidBundle(bundle, info.filename, "duplicate entry")
            seen.add(info.filename)
            total += info.file_size
            if total > limits.max_total_bytes:
                raise InvalidBundle(bundle, info.filename, f"the bundle exceeds {limits.max_total_bytes} bytes")
        if MANIFEST not in seen:
            raise InvalidBundle(bundle, MANIFEST, "missing")
        manifest = _manifest(bundle, _read(bundle, zf, MANIFEST, limits.max_entry_bytes)[0])
        entries: dict[str, Any] = manifest["entries"]
        extra = sorted(seen - set(entries) - {MANIFEST})
        missing = sorted(set(entries) - seen)
        if extra or missing:
            raise InvalidBundle(bundle, (extra or missing)[0], "not listed in the manifest" if extra else "missing")
        rows: dict[str, list[dict[str, Any]]] = {}
        files: list[tuple[str, str, str]] = []
        tables = bundle_tables()
        for name, meta in entries.items():
            _check_name(bundle, name)
            data = io.BytesIO()  # rows are kept to be parsed; a file is only checked (of any size)
            size, digest = _scan(bundle, zf, name, limits.max_entry_bytes, None if name.startswith("files/") else data)
            if not isinstance(meta, dict) or size != meta.get("size") or digest != meta.get("sha256"):
                raise InvalidBundle(bundle, name, "its size or sha256 differs from the manifest (truncated or changed)")
            if name.startswith("files/"):
                files.append((name, name[len("files/"):], digest))
            elif name.startswith("rows/") and name.endswith(".jsonl") and name[5:-6] in tables:
                rows[name[5:-6]] = _rows(bundle, name, data.getvalue())
            else:
                raise InvalidBundle(bundle, name, f"neither files/ nor rows/ of a table jobtrack {__version__} knows")
    for table in bundle_tables():
        rows.setdefault(table, [])
    _check_rows(bundle, manifest, rows)
    return Verified(bundle, manifest, rows, files)


def _manifest(bundle: str, data: bytes) -> dict[str, Any]:
    try:
        doc = jsonutil.loads(data.decode("utf-8"))
    except Exception as exc:  # any unreadable manifest is one error
        raise InvalidBundle(bundle, MANIFEST, f"not JSON ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidBundle(bundle, MANIFEST, "not a jobtrack bundle manifest")
    if doc.get("format_version") not in READABLE_VERSIONS:
        raise InvalidBundle(bundle, MANIFEST, f"format version {doc.get('format_version')!r}; this jobtrack "
                                              f"({__version__}) reads version {FORMAT_VERSION}")
    if not isinstance(doc.get("entries"), dict) or not isinstance(doc.get("paths"), dict) \
            or not isinstance(doc.get("jobs"), list):
        raise InvalidBundle(bundle, MANIFEST, "entries, paths or jobs missing")
    for source, rel in doc["paths"].items():
        _check_name(bundle, str(rel))
        if not os.path.isabs(source):
            raise InvalidBundle(bundle, MANIFEST, f"the carried path {source!r} is not absolute")
    return doc


def _rows(bundle: str, name: str, data: bytes) -> list[dict[str, Any]]:
    """The rows of one table: all with the same columns, known to this jobtrack, the required ones present."""
    table = name[5:-6]
    known, required = set(table_columns(table)), required_columns(table)
    out: list[dict[str, Any]] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            row = jsonutil.loads(line)
        except Exception as exc:
            raise InvalidBundle(bundle, name, f"line {n} is not JSON") from exc
        if not isinstance(row, dict) or (row.keys() != out[0].keys() if out else not required <= row.keys()):
            raise InvalidBundle(bundle, name, f"line {n} does not have the columns of {table}")
        if not out and not row.keys() <= known:  # every later row has the first one's columns
            raise InvalidBundle(bundle, name, f"line {n} has columns this jobtrack ({__version__}) does not know: "
                                              f"{sorted(row.keys() - known)}; import it with a newer jobtrack")
        out.append(row)
    return out


def _check_rows(bundle: str, manifest: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    """Rows belong to the manifest's jobs; names that become SQL identifiers are plain."""
    jobs = {str(r["id"]) for r in rows["jobs"]}
    if jobs != {str(j) for j in manifest["jobs"]}:
        raise InvalidBundle(bundle, "rows/jobs.jsonl", "its jobs are not the manifest's")
    runs = {str(r["id"]) for r in rows["model_runs"]}
    for table in (*job_tables()[1:], RECORD_TABLE):
        if any(str(r["job_id"]) not in jobs for r in rows[table]):
            raise InvalidBundle(bundle, f"rows/{table}.jsonl", "a row of a job the bundle does not carry")
    if {str(s["id"]) for s in rows["sweeps"]} - {str(j.get("sweep_id")) for j in rows["jobs"]}:
        raise InvalidBundle(bundle, "rows/sweeps.jsonl", "a sweep none of the bundle's jobs is a trial of")
    if any(str(r["model_run_id"]) not in runs for r in rows["registered_models"]):
        raise InvalidBundle(bundle, "rows/registered_models.jsonl", "an entry of a model run the bundle does not carry")
    for r in [*rows["job_exports"], *rows[RECORD_TABLE]]:
        view = str(r["view_name"])
        if not (NAME.match(str(r["kind"])) and NAME.match(view) and view.startswith(f"{r['kind']}_")
                and r.get("table_name", PREFIX + view) == PREFIX + view):
            raise InvalidBundle(bundle, "rows/job_exports.jsonl", f"unsafe view or table name {r['view_name']!r}")


# -- import ------------------------------------------------------------------------------------------------


def _destination(bundle: str, root: str, rel: str) -> str:
    dest = os.path.join(root, *rel.split("/"))
    real_root = os.path.realpath(root)
    if os.path.commonpath([os.path.realpath(dest), real_root]) != real_root:
        raise InvalidBundle(bundle, "files/" + rel, "would be written outside the target's files directory")
    return dest


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def import_bundle(store: Store, path: str | os.PathLike[str] | Verified, *, limits: Limits | None = None,
                  batch: int = 500) -> ImportReport:
    """Verify the bundle, check it against ``store``, then write its files and rows (see the module doc).

    ``path`` may be what ``read_bundle`` returned, so a caller can refuse a bad bundle before it opens
    (and so creates) the target database. Stopped midway (Ctrl-C, a lost connection), the batches of jobs already
    written stay, each job with its files, and only the others' files go again: importing again completes it.

    Raises:
        InvalidBundle: a malformed, tampered or unsafe bundle; nothing was written.
        BundleConflict: a job, registry entry, view, table or file exists with other content; nothing was written.
    """
    verified = path if isinstance(path, Verified) else read_bundle(path, limits)
    as_snapshots(verified.manifest, verified.rows)
    root = os.path.abspath(store.files_dir)
    mapping = {str(src): os.path.join(root, *str(rel).split("/")) for src, rel in verified.manifest["paths"].items()}
    rewrite_paths(verified.rows, mapping)
    kept, replace = store.check_bundle_rows(verified.rows)
    snapshots = {str(r["id"]) for r in verified.rows["jobs"] if liveness.is_snapshot(r.get("runner"))}
    replaced = job_folders(store, verified.rows, replace)  # the target's snapshot copies: their files are replaced
    older = job_folders(store, verified.rows, [i for i in kept if i in snapshots])  # the target has newer: kept
    plan: list[tuple[str, str]] = []
    for name, rel, digest in verified.files:
        dest = _destination(verified.path, root, rel)
        if os.path.lexists(dest):
            if os.path.islink(dest) or not os.path.isfile(dest) or _sha256(dest) != digest:
                regular = os.path.isfile(dest) and not os.path.islink(dest)
                if regular and dest.startswith(replaced):
                    plan.append((name, dest))  # a snapshot copy's file (its log, say): the newer one replaces it
                elif not (regular and dest.startswith(older)):
                    raise BundleConflict("file", dest, "the target has another file there: to keep it, move it "
                                                       "aside; import again to write the bundle's in its place")
            continue
        plan.append((name, dest))
    report, made, committed = ImportReport(), NewFiles(tidy="import"), list[str]()
    try:  # the files first (no row names a missing file); if the rows cannot be written, they go again
        with zipfile.ZipFile(verified.path) as zf:
            for name, dest in plan:
                made.folder(os.path.dirname(dest))
                _destination(verified.path, root, name[len("files/"):])  # again, with the directories made
                fd, tmp = tempfile.mkstemp(prefix=temp_prefix("import"), dir=os.path.dirname(dest))
                made.files.append(tmp)
                with os.fdopen(fd, "wb") as out, zf.open(name) as src:
                    while chunk := src.read(_BLOCK):
                        out.write(chunk)
                made.files[-1] = dest if not os.path.lexists(dest) else tmp  # a replaced file stays replaced
                os.replace(tmp, dest)
                report.files_written += 1
        report.imported, report.skipped, report.tagged = store.import_bundle_rows(
            verified.rows, batch=batch, committed=committed, replaced=report.updated)
        updated = set(report.updated)
        report.imported = [i for i in report.imported if i not in updated]
    except BaseException:  # the jobs of batches already written are in the target: their files stay
        mine = job_paths(store, verified.rows, set(committed)) if committed else set()
        made.files = [f for f in made.files if not any(p == f or f.startswith(p + os.sep) for p in mine)]
        made.undo()
        raise
    report.registered = store.import_registry_rows(verified.rows["registered_models"])
    return report


def merge(sources: Sequence[Store], target: Store, *, include_running: bool = False) -> ImportReport:
    """Import every finished job of each source database into ``target``, by way of a bundle (same rules).

    Each source is imported whole or not at all, in turn; a conflict in one names what the ones before it imported.
    """
    total = ImportReport()
    with tempfile.TemporaryDirectory(prefix="jobtrack-merge-") as tmp:
        for n, source in enumerate(sources):
            out = os.path.join(tmp, f"{n}.jtb")
            export_bundle(source, out, include_running=include_running)
            try:
                report = import_bundle(target, out)
            except BundleConflict as exc:
                if not n:
                    raise
                raise BundleConflict(exc.what, exc.name, f"{exc.detail} (from {source.target})",
                                     f"the {n} database(s) before it were merged ({len(total.imported)} job(s) "
                                     "imported); merge again once it is resolved: what is there is skipped") from exc
            total.imported += report.imported
            total.skipped += report.skipped
            total.registered += report.registered
            total.tagged += report.tagged
            total.updated += report.updated
            total.files_written += report.files_written
            os.unlink(out)
    return total
