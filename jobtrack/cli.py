"""The ``jobtrack`` command line (also ``python -m jobtrack``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobtrack.config import ENV_DB, default_db_path
from jobtrack.errors import InvalidArgument, JobtrackError
from jobtrack.states import JobStatus

EXIT_CODES = {"COMPLETED": 0, "FAILED": 3, "CANCELED": 4}
"""Exit codes of ``jobtrack wait`` by final status (1: error, 2: usage)."""

_INT64_MAX = 2**63 - 1  # what SQLite stores in an INTEGER, so the most a count may be


def _local(ts: str | None) -> str:
    """An ISO UTC timestamp shown in the user's local time zone."""
    if not ts:
        return "-"
    return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(status: dict[str, Any]) -> str:
    start = datetime.fromisoformat(status["started_at"])
    end = datetime.fromisoformat(status["finished_at"] or status["updated_at"])
    seconds = max(0.0, (end - start).total_seconds())
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _parser() -> argparse.ArgumentParser:
    db_help = f"database path or URL (default: ${ENV_DB}, else {default_db_path()})"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = argparse.ArgumentParser(prog="jobtrack", description="An embedded, single-file ML job tracker.")
    parser.add_argument("--db", default=None, help=db_help)
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", action="append", help="filter by status (repeatable)")
    p.add_argument("--type", dest="job_type", help="filter by job type")
    p.add_argument("--experiment", help="filter by experiment name")
    p.add_argument("--since", help="created at or after: '2h', '3d', '2026-11-01', ...")
    p.add_argument("--until", help="created before (same forms as --since)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print get_status() dicts as JSON")

    for name, text in (("status", "print get_status() as JSON"), ("show", "a readable view of one job"),
                       ("cancel", "cancel a job")):
        sub.add_parser(name, parents=[common], help=text).add_argument("job_id")
    p = sub.add_parser("logs", parents=[common], help="print a job's log")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p = sub.add_parser("wait", parents=[common], help="wait for a job; exit 0 COMPLETED, 3 FAILED, 4 CANCELED")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")

    p = sub.add_parser("prune", parents=[common], help="remove finished jobs older than an age, with their files")
    p.add_argument("--older-than", required=True, help="age or time, e.g. '30d', '12h', '2026-11-01'")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")

    p = sub.add_parser("models", parents=[common], help="list model runs and registered models; delete a model run")
    p.add_argument("action", nargs="?", choices=("list", "delete"), default="list")
    p.add_argument("experiment_name", nargs="?", help="delete: the model run's experiment")
    p.add_argument("model_run_id", nargs="?", help="delete: the model run to delete")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p.add_argument("--json", action="store_true", help="list: print ModelManager.list_models() as JSON")

    p = sub.add_parser("plot", parents=[common], help="training and validation curves as a PNG (extra: plot)")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")

    p = sub.add_parser("worker", parents=[common], help="run queued runner='worker' jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--max-jobs", type=int, default=None)
    sub.add_parser("demo", parents=[common], help="train and use a small real model on the default database")
    p = sub.add_parser("migrate", parents=[common], help="copy a database's jobs into another (e.g. a file to PostgreSQL)")
    p.add_argument("--from", dest="source", required=True, help="database to copy from (path or URL)")
    p.add_argument("--to", dest="target", required=True, help="database to copy into (path or URL)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (errors print one line, no traceback unless --debug)."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except JobtrackError as exc:
        if args.debug:
            raise
        print(f"jobtrack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jobtrack list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _manager(args: argparse.Namespace) -> Any:
    from jobtrack.manager import JobManager

    return JobManager(args.db)


def _count(option: str, value: int | None) -> int | None:
    """A count option checked before use: positive and within SQLite's 64-bit integers (#21).

    Raises:
        InvalidArgument: zero, negative, or more than 2**63 - 1.
    """
    if value is not None and not 1 <= value <= _INT64_MAX:
        raise InvalidArgument(f"{option} must be a positive integer no larger than {_INT64_MAX}, not {value}; "
                              f"use e.g. {option} 50.")
    return value


def _cmd_list(args: argparse.Namespace) -> int:
    _count("--limit", args.limit)
    jobs = _manager(args).list_jobs(status=args.status, job_type=args.job_type, experiment_name=args.experiment,
                                    since=args.since, until=args.until, limit=args.limit)
    statuses = [j.get_status() for j in jobs]
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    header = ("JOB ID", "STATUS", "TYPE", "EXPERIMENT", "MODEL RUN", "CREATED", "DURATION")
    rows = [(s["job_id"], s["status"], s["job_type"], s["experiment_name"], s["model_run_id"] or "-",
             _local(s["started_at"]), _duration(s)) for s in statuses]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_manager(args).fetch_job(args.job_id).get_status(), indent=2))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    monitor = _manager(args).fetch_job(args.job_id)
    s = monitor.get_status()
    print(f"{s['job_id']}  {s['status']}  {s['job_type']}  {s['experiment_name']}  model run {s['model_run_id']}")
    print("timeline:")
    for ev in monitor.events():
        print(f"  {_local(ev.at.isoformat())}  {ev.from_status or '-':>9} -> {ev.to_status:<9} {ev.reason or ''}")
    result = s["result"]
    if result.get("epochs"):
        print(f"epochs (eval metric {result.get('eval_metric')}, best epoch {result.get('best_epoch')}: "
              f"{result.get('best_metric')}):")
        for ep in result["epochs"]:
            mark = " *" if ep["epoch"] == result.get("best_epoch") else ""
            print(f"  {ep['epoch']:>4}  train {json.dumps(ep['train'])}  validation {json.dumps(ep['validation'])}{mark}")
    if "summary" in result:
        print(f"summary: {json.dumps(result['summary'])}")
    tables = monitor.materialized_tables() if s["export_paths"] else {}
    for kind, path in s["export_paths"].items():
        table = f", table {tables[kind]}" if kind in tables else ""
        print(f"{kind}: {path}  (view {s['source_views'].get(kind)}{table})")
    if "error" in result:
        print(f"error: {result['error']['type']}: {result['error']['message']}")
        print(result["error"]["traceback"].rstrip())
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    status = _manager(args).cancel_job(args.job_id)
    note = " (stop requested; it ends CANCELED when its code next reports)" if status is JobStatus.RUNNING else ""
    print(f"{args.job_id}: {status}{note}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    _manager(args).fetch_job(args.job_id).stream_logs(follow=args.follow)
    return 0


def _cmd_wait(args: argparse.Namespace) -> int:
    final = _manager(args).fetch_job(args.job_id).wait(timeout=args.timeout, progress=not args.quiet)
    print(f"{args.job_id}: {final['status']}")
    return EXIT_CODES[final["status"]]


def _cmd_prune(args: argparse.Namespace) -> int:
    report = _manager(args).prune(args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(report.removed)} job(s), {len(report.views)} view(s), {len(report.files)} path(s)")
    for job_id in report.removed:
        print(f"  {job_id}")
    for path in report.files:
        print(f"  {path}")
    for job_id, why in report.kept.items():
        print(f"kept {job_id}: {why}")
    if report.tables:
        print(f"{len(report.tables)} materialized table(s) {'would be' if args.dry_run else 'are'} left in place "
              f"(drop them with sqlite3 when no longer needed):")
        for table in report.tables:
            print(f"  {table}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from jobtrack.model_manager import ModelManager

    manager = ModelManager(args.db)
    if args.action == "list":
        models = manager.list_models()
        if args.json:
            print(json.dumps(models, indent=2))
            return 0
        header = ("MODEL RUN", "EXPERIMENT", "STATUS", "CREATED", "REGISTERED AS")
        rows = [(m["model_run_id"], m["experiment_name"], m["status"], _local(m["created_at"]),
                 ", ".join(r["key"] for r in m["registered"]) or "-") for m in models]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        return 0
    if not args.experiment_name or not args.model_run_id:
        raise InvalidArgument("usage: jobtrack models delete EXPERIMENT_NAME MODEL_RUN_ID [--yes]")
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidArgument(f"Not deleting model run {args.model_run_id!r} without confirmation; "
                                  "pass --yes to delete it from a script.")
        answer = input(f"Delete model run {args.model_run_id} ({args.experiment_name}), its registry entries "
                       "and its model files? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    keys = manager.delete_model(args.experiment_name, args.model_run_id)
    print(f"deleted model run {args.model_run_id}" + (f" (registered as {', '.join(keys)})" if keys else ""))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from jobtrack.plot import plot_curves

    status = _manager(args).fetch_job(args.job_id).get_status()
    print(f"wrote {plot_curves(dict(status), args.output)}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from jobtrack.store import Store
    from jobtrack.store.migrate import migrate

    source, target = Store.open(args.source), Store.open(args.target)
    report = migrate(source, target)
    print(f"copied {len(report.copied)} job(s) from {source.target} to {target.target}; "
          f"{len(report.skipped)} already there; {len(report.registered)} registered model(s)")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from jobtrack.runners.worker import run_worker
    from jobtrack.store import Store

    _count("--max-jobs", args.max_jobs)
    store = Store.open(args.db)
    print(f"jobtrack worker on {store.target} (pid {os.getpid()}){' --burst' if args.burst else ''}", flush=True)
    done = run_worker(store, burst=args.burst, max_jobs=args.max_jobs)
    print(f"jobtrack worker: ran {done} job(s)", flush=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from jobtrack import Dataset, Trainer, demo

    trainer = Trainer(demo.train, demo.predict, config={"epochs": 8}, db=args.db)
    tables = demo.write_csv_tables(os.path.join(trainer._store.files_dir, "demo-data"))
    dataset = Dataset("demo", "binary_classification", "churn", tables=tables)
    print(f"database: {trainer.db}")
    job = trainer.fit(dataset)
    print(f"training job {job.job_id} submitted (model run {job.model_run_id})")
    final = job.wait(timeout=300)
    result = final["result"]
    print(f"  {final['status']}: {len(result.get('epochs', []))} epochs, best epoch {result.get('best_epoch')} "
          f"with {result.get('eval_metric')} = {result.get('best_metric'):.4f}")
    alias = f"demo_{secrets.token_hex(3)}"
    pred = trainer.predict(alias, model_run_id=job.model_run_id, extract_embeddings=True).wait(timeout=300)
    print(f"prediction job {pred['job_id']} {pred['status']}: {pred['result'].get('summary')}")
    print(f"  predictions: {pred['export_paths'].get('predictions')}")
    print(f"  SQL view:    {pred['source_views'].get('predictions')}")
    print("next:")
    print(f"  jobtrack show {job.job_id}")
    print("  jobtrack list")
    print(f"  sqlite3 {trainer.db} 'SELECT * FROM {pred['source_views'].get('predictions')} LIMIT 5'")
    return 0 if final["status"] == "COMPLETED" and pred["status"] == "COMPLETED" else 1


_COMMANDS = {
    "list": _cmd_list,
    "status": _cmd_status,
    "show": _cmd_show,
    "cancel": _cmd_cancel,
    "logs": _cmd_logs,
    "wait": _cmd_wait,
    "prune": _cmd_prune,
    "models": _cmd_models,
    "plot": _cmd_plot,
    "worker": _cmd_worker,
    "migrate": _cmd_migrate,
    "demo": _cmd_demo,
}
