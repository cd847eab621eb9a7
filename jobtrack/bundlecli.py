"""``jobtrack export``, ``jobtrack import`` and ``jobtrack merge``: job bundles on the command line (#19)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the three bundle commands to the ``jobtrack`` parser's subcommands."""
    p = sub.add_parser("export", parents=[common], help="write finished jobs, their rows and files to one bundle file")
    p.add_argument("job_ids", nargs="*", metavar="JOB", help="jobs to export (ids or unique prefixes); default all")
    p.add_argument("-o", "--output", required=True, metavar="FILE.jtb", help="the bundle file to write")
    p.add_argument("--where", metavar="QUERY", help="only jobs matching a query, as `jobtrack list --where`: "
                                                    "\"tag = 'baseline' and best.roc_auc > 0.9\"")
    p.add_argument("--since", help="only jobs created at or after: '7d', '2026-11-01', ...")
    p.add_argument("--include-running", action="store_true", help="also jobs not finished yet (a snapshot)")
    p.add_argument("--no-files", action="store_true", help="rows only: no model, export or log files")
    p.add_argument("--no-deps", action="store_true", help="not the training jobs of the models predictions used")
    p = sub.add_parser("import", parents=[common], help="add a bundle's jobs to a database (created if new)")
    p.add_argument("bundle", metavar="FILE.jtb", help="the bundle to read (written by jobtrack export)")
    p = sub.add_parser("merge", parents=[common], help="add every finished job of databases to another one")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="databases to read (paths or URLs)")
    p.add_argument("--into", required=True, metavar="TARGET", help="database to add them to (created if new)")


def cmd_export(args: argparse.Namespace) -> int:
    from jobtrack.manager import JobManager

    manager = JobManager(args.db, lock_timeout=args.lock_timeout)
    report = manager.export_bundle(args.output, args.job_ids or None, where=args.where, since=args.since,
                                   include_running=args.include_running, files=not args.no_files,
                                   deps=not args.no_deps)
    if not report.jobs and args.where is not None:
        print(f"no finished job matches --where {args.where!r}; the bundle holds no job", file=sys.stderr)
    print(f"exported {len(report.jobs)} job(s) and {report.files} file(s) ({report.bytes} bytes) to {report.path}")
    if report.snapshot:
        print(f"  snapshot: {len(report.snapshot)} job(s) were not finished: {', '.join(report.snapshot[:10])}")
    return 0


def _print_import(report: Any, target: str) -> None:
    print(f"imported {len(report.imported)} job(s) into {target}; {len(report.skipped)} already there; "
          f"{report.files_written} file(s) written; {len(report.registered)} registered model(s)")
    if report.updated:
        print(f"  {len(report.updated)} snapshot(s) here updated to the bundle's newer state: "
              f"{', '.join(report.updated[:10])}")
    if report.tagged:
        print(f"  tags merged (union) into {len(report.tagged)} job(s) already there: {', '.join(report.tagged[:10])}")


def cmd_import(args: argparse.Namespace) -> int:
    from jobtrack.bundle import import_bundle, read_bundle
    from jobtrack.store import Store

    verified = read_bundle(args.bundle)  # first: a refused bundle leaves no new, empty database behind
    target = Store.open(args.db, lock_timeout=args.lock_timeout)  # the target is written (created if new)
    _print_import(import_bundle(target, verified), target.target)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from jobtrack.bundle import merge
    from jobtrack.store import Store

    sources = [open_source(s, "SOURCE", args.lock_timeout) for s in args.sources]  # read, never created
    target = Store.open(args.into, lock_timeout=args.lock_timeout)
    _print_import(merge(sources, target), target.target)
    return 0


def open_source(path: str, given_as: str, lock_timeout: float | None) -> Any:
    """The store a copy reads (never created); a missing one names the argument that gave it, not --db."""
    from jobtrack.errors import DatabaseNotFound
    from jobtrack.store import Store

    try:
        return Store.open(path, create=False, lock_timeout=lock_timeout)
    except DatabaseNotFound as exc:
        raise DatabaseNotFound(exc.path, given_as) from None


COMMANDS = {"export": cmd_export, "import": cmd_import, "merge": cmd_merge}
