"""The ``jobtrack`` command line (also ``python -m jobtrack``)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from jobtrack import __version__, cliutil
from jobtrack.config import ENV_DB, check_lock_timeout, default_db_text

# Every command starts here: the errors, the states and typing load where used, not at start-up (#14).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

EXIT_CODES = {"COMPLETED": 0, "FAILED": 3, "CANCELED": 4}
"""Exit codes of ``jobtrack wait`` by final status (1: error, 2: usage)."""

_INT64_MAX = 2**63 - 1  # what SQLite stores in an INTEGER, so the most a count may be


_local = cliutil.local

_MODULE_COMMANDS = {"export": "bundlecli", "import": "bundlecli", "merge": "bundlecli", "tag": "expcli",
                    "untag": "expcli", "compare": "expcli", "ui": "uicli", "report": "uicli", "retry": "retrycli",
                    "sweep": "sweepcli"}
"""Subcommands defined in their own modules (in --help's order), imported only when named or all are needed (#14)."""


def _module(name: str) -> Any:
    return importlib.import_module(f"jobtrack.{name}")


def _named_command(argv: Sequence[str]) -> str | None:
    """The subcommand argv names, or None when the whole parser is needed (--help, --version, an error, ...)."""
    args = iter(argv)
    for arg in args:
        if arg in ("--db", "--lock-timeout"):
            next(args, None)  # its value
        elif arg != "--debug" and not arg.startswith(("--db=", "--lock-timeout=")):
            return arg if arg in _BUILTINS or arg in _MODULE_COMMANDS else None
    return None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``command``, only that subcommand's (argparse needs the others only to list them)."""

    def wanted(*names: str) -> bool:
        return command is None or command in names

    db_help = f"database path or URL (default: ${ENV_DB}, else {default_db_text()})"
    lock_help = "seconds a write (cancel, prune, a worker's) waits for the database's write lock (default 30)"
    common = cliutil.Parser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--lock-timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS", help=lock_help)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = cliutil.Parser(prog="jobtrack", description="An embedded, single-file ML job tracker.")
    parser.add_argument("--version", action="version", version=f"jobtrack {__version__}")
    parser.add_argument("--db", default=None, help=db_help)
    parser.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS", help=lock_help)
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    if wanted("list"):
        _list_parser(sub, common)
    for name, text in (("status", "print get_status() as JSON"), ("show", "a readable view of one job"),
                       ("cancel", "cancel a job")):
        if wanted(name):
            sub.add_parser(name, parents=[common], help=text).add_argument("job_id", help=cliutil.JOB_HELP)
    if wanted("logs", "wait", "prune", "models", "plot", "worker", "demo", "migrate"):
        _other_parsers(sub, common)
    # export, import, merge (#19); tag, untag, compare (#15); ui, report (#16); retry (#18); sweep (#17)
    for module in dict.fromkeys(_MODULE_COMMANDS.values()):
        if command is None or _MODULE_COMMANDS.get(command) == module:
            _module(module).add_parsers(sub, common)
    return parser


def _list_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from jobtrack import listcli

    p = sub.add_parser("list", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", action="append", help="filter by status (repeatable)")
    p.add_argument("--type", dest="job_type", help="filter by job type")
    p.add_argument("--experiment", help="filter by experiment name")
    p.add_argument("--since", help="created at or after: '2h', '3d', '2026-11-01', ...")
    p.add_argument("--until", help="created before (same forms as --since)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="show at most N jobs (default 50)")
    p.add_argument("--json", action="store_true", help="print get_status() dicts as JSON")
    listcli.add_arguments(p)  # --where, --sort, --offset, --columns (#15)


def _other_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="print a job's log")
    p.add_argument("job_id", help=cliutil.JOB_HELP)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p = sub.add_parser("wait", parents=[common], help="wait for a job; exit 0 COMPLETED, 3 FAILED, 4 CANCELED")
    p.add_argument("job_id", help=cliutil.JOB_HELP)
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up after SECONDS (exit 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")

    p = sub.add_parser("prune", parents=[common], help="remove finished jobs older than an age, with their files")
    p.add_argument("--older-than", required=True, help="age or time, e.g. '30d', '12h', '2026-11-01'")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")

    p = sub.add_parser("models", parents=[common], help="list model runs and registered models; delete a model run")
    p.add_argument("action", nargs="?", choices=("list", "delete"), default="list", help="default: list")
    p.add_argument("experiment_name", nargs="?", help="delete: the model run's experiment")
    p.add_argument("model_run_id", nargs="?", help="delete: the model run to delete")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p.add_argument("--json", action="store_true", help="list: print ModelManager.list_models() as JSON")

    p = sub.add_parser("plot", parents=[common], help="training and validation curves as a PNG (extra: plot)")
    p.add_argument("job_id", help=cliutil.JOB_HELP)
    p.add_argument("-o", "--output", required=True, help="PNG file to write")

    p = sub.add_parser("worker", parents=[common], help="run queued runner='worker' jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="exit after running N jobs")
    p.add_argument("--concurrency", "-c", type=int, default=1, help="jobs run at once, on threads (default 1)")
    p.add_argument("--app-dir", action="append", default=[], metavar="DIR",
                   help="also import job code from DIR (repeatable; the working directory always is, as python -m)")
    sub.add_parser("demo", parents=[common], help="train and use a small real model on the default database")
    p = sub.add_parser("migrate", parents=[common],
                       help="copy a database's jobs into another (e.g. a file to PostgreSQL)")
    p.add_argument("--from", dest="source", required=True, help="database to copy from (path or URL)")
    p.add_argument("--to", dest="target", required=True, help="database to copy into (path or URL)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Every failure prints one line, ``jobtrack: error: ...`` with a command-line hint, and no traceback
    unless ``--debug``: exit code 2 for a bad argument (usage errors too), 1 for everything else.
    """
    argv = cliutil.glue_ages(sys.argv[1:] if argv is None else argv)  # --since -2h
    args = _parser(_named_command(argv)).parse_args(argv)
    try:
        if args.lock_timeout is not None:
            from jobtrack.errors import InvalidArgument

            try:
                args.lock_timeout = check_lock_timeout(args.lock_timeout)
            except InvalidArgument:
                raise InvalidArgument(f"--lock-timeout must be a number of seconds >= 0, not {args.lock_timeout}; "
                                      "use e.g. --lock-timeout 60.") from None
        run = _BUILTINS.get(args.command) or _module(_MODULE_COMMANDS[args.command]).COMMANDS[args.command]
        return run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jobtrack list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"jobtrack: error: {cliutil.error_line(exc, args)}", file=sys.stderr)
        return cliutil.exit_code(exc)


def _manager(args: argparse.Namespace) -> Any:
    """The JobManager of ``--db``: it reads, and never creates a database (a missing one is an error, #13)."""
    from jobtrack.manager import JobManager

    return JobManager(args.db, lock_timeout=args.lock_timeout)


def _job(args: argparse.Namespace) -> Any:
    """The JobMonitor of ``JOB_ID``, which may be a unique prefix of a job's id."""
    manager = _manager(args)
    args.job_id = manager.resolve_job_id(args.job_id)
    return manager.fetch_job(args.job_id)


def _count(option: str, value: int | None, example: int = 50) -> int | None:
    """A count option checked before use: positive and within SQLite's 64-bit integers (#21).

    Raises:
        InvalidArgument: zero, negative, or more than 2**63 - 1.
    """
    if value is not None and not 1 <= value <= _INT64_MAX:
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument(f"{option} must be a positive integer no larger than {_INT64_MAX}, not {value}; "
                              f"use e.g. {option} {example}.")
    return value


def _cmd_list(args: argparse.Namespace) -> int:
    _count("--limit", args.limit)
    from jobtrack import listcli

    return listcli.run(args, _manager(args))


def _cmd_status(args: argparse.Namespace) -> int:
    from jobtrack.store import peek

    # A finished job of a SQLite file is read straight from the file (no Store, #14); anything else, and
    # anything the fast path is unsure of, takes the full path: the same output, or the same error, as ever.
    status = peek.finished_status(args.db, args.job_id)
    print(json.dumps(status if status is not None else _job(args).get_status(), indent=2))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    monitor = _job(args)
    s = monitor.get_status()
    print(f"{s['job_id']}  {s['status']}  {s['job_type']}  {s['experiment_name']}  model run {s['model_run_id']}")
    if s["status"] == "RUNNING" and monitor.snapshot_reason():
        print(f"{monitor.snapshot_reason()}: a copy from a bundle; it runs in its own database, a newer bundle "
              "replaces it")
    print("timeline:")
    links, result = _manager(args).retry_links(s["job_id"]), s["result"]
    for ev in monitor.events():  # a new attempt (#18) shows as RUNNING -> RUNNING with its reason
        print(f"  {_local(ev.at.isoformat())}  {ev.from_status or '-':>9} -> {ev.to_status:<9} {ev.reason or ''}")
    for line in _module("retrycli").show_lines(links, result):
        print(line)
    _module("expcli").print_show(args, monitor.job_id)  # config, tags, provenance (#15)
    if result.get("epochs"):
        at = result.get("best_epoch")
        best = (f"best epoch {at}: {result.get('best_metric')}" if at is not None
                else "no best epoch: the metric was never reported as a number" if result.get("eval_metric") else "")
        print(f"epochs (eval metric {result.get('eval_metric') or 'none'}{', ' + best if best else ''}):")
        for ep in result["epochs"]:
            mark = " *" if ep["epoch"] == result.get("best_epoch") else ""
            shown = [f"{part} {json.dumps(ep[part], ensure_ascii=False)}"  # as written: no \\u escapes
                     for part in ("train", "validation") if ep.get(part)]
            print(f"  {ep['epoch']:>4}  {'  '.join(shown) or 'no metrics'}{mark}")  # as the log: no empty part
    if "summary" in result:
        print(f"summary: {json.dumps(result['summary'], ensure_ascii=False)}")
    if "summary_error" in result:
        print(f"summary not stored as returned: {result['summary_error']['message']}")
    if "eval_metric_missing" in result:
        print(f"note: {result['eval_metric_missing']['note']}")
    tables = monitor.materialized_tables() if s["export_paths"] else {}
    for kind, path in s["export_paths"].items():
        table = f", table {tables[kind]}" if kind in tables else ""
        print(f"{kind}: {path}  (view {s['source_views'].get(kind)}{table})")
    if "error" in result:
        print(f"error: {result['error']['type']}: {result['error']['message']}")
        print(result["error"]["traceback"].rstrip())
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from jobtrack.states import JobStatus

    manager = _manager(args)
    args.job_id = manager.resolve_job_id(args.job_id)
    status = manager.cancel_job(args.job_id)
    note = " (stop requested; it ends CANCELED when its code next reports)" if status is JobStatus.RUNNING else ""
    print(f"{args.job_id}: {status}{note}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    out = cliutil.LocalTimes(sys.stdout)  # log lines are stamped in UTC; people read local time (#13)
    job = _job(args)
    try:
        job.stream_logs(follow=args.follow, file=out)
    finally:
        out.close()
    if not job.log_path.exists():
        print(f"jobtrack: job {job.job_id} has no log here: it wrote no line, or it came in a bundle without files",
              file=sys.stderr)
    return 0


def _cmd_wait(args: argparse.Namespace) -> int:
    from jobtrack.errors import InvalidArgument, WaitTimeout

    if args.timeout is not None and not 0 <= args.timeout < float("inf"):  # NaN too
        raise InvalidArgument(f"--timeout must be a number of seconds >= 0, not {args.timeout}; use e.g. --timeout 60.")
    job = _job(args)
    try:
        final = job.wait(timeout=args.timeout, progress=not args.quiet)
    except WaitTimeout as exc:
        if args.debug:
            raise
        print(f"jobtrack: error: {cliutil.error_line(exc, args)}", file=sys.stderr)  # names a missing worker
        return 1
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
    if report.left:
        print(f"{len(report.left)} path(s) outside this database's files folder {'would be' if args.dry_run else 'are'}"
              " left in place (another database's files: a bundle imported without files, a migrated or copied one):")
        for path in report.left:
            print(f"  {path}")
    if report.tables:
        print(f"{len(report.tables)} materialized table(s) {'would be' if args.dry_run else 'are'} left in place "
              f"(drop them with sqlite3 when no longer needed):")
        for table in report.tables:
            print(f"  {table}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from jobtrack.errors import InvalidArgument
    from jobtrack.model_manager import ModelManager

    manager = ModelManager(args.db, lock_timeout=args.lock_timeout)
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

    job = _job(args)
    print(f"wrote {plot_curves(dict(job.get_status()), args.output, db=job.db)}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from jobtrack.bundlecli import open_source
    from jobtrack.store import Store
    from jobtrack.store.migrate import migrate

    # the source is read (never created, #13); the target is written (created if new)
    source = open_source(args.source, "--from", args.lock_timeout)
    target = Store.open(args.target, lock_timeout=args.lock_timeout)
    report = migrate(source, target)
    print(f"copied {len(report.copied)} job(s) from {source.target} to {target.target}; "
          f"{len(report.skipped)} already there; {len(report.registered)} registered model(s)")
    if report.unfinished:
        print(f"{len(report.unfinished)} unfinished (QUEUED or RUNNING) job(s) not copied: they run where they are; "
              "migrate again once they ended")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from jobtrack.runners.worker import add_import_dirs, run_worker
    from jobtrack.store import Store

    _count("--max-jobs", args.max_jobs, 1)
    _count("--concurrency", args.concurrency, 4)
    import_path = sys.path[:]
    try:
        dirs = add_import_dirs(args.app_dir)  # imports like `python -m`: the working directory, then --app-dir (#13)
        store = Store.open(args.db, lock_timeout=args.lock_timeout)
        ready = (f"jobtrack worker on {store.target} (pid {os.getpid()}){' --burst' if args.burst else ''}, "
                 f"{args.concurrency} job(s) at a time, importing from {os.pathsep.join(dirs) or 'PYTHONPATH'}")
        report = run_worker(store, burst=args.burst, max_jobs=args.max_jobs, concurrency=args.concurrency,
                            ready=ready)
    finally:
        sys.path[:] = import_path  # as it was (main() may run in a test's process)
    stopped = f" (stopped by {report.stopped_by})" if report.stopped_by else ""
    print(f"jobtrack worker: {report.summary()}{stopped}", flush=True)
    return 1 if report.failed else 0  # a failed job is the worker's failure too; see README "Command line"


def _cmd_demo(args: argparse.Namespace) -> int:
    from jobtrack import Dataset, Trainer, demo

    trainer = Trainer(demo.train, demo.predict, config={"epochs": 8}, db=args.db, lock_timeout=args.lock_timeout)
    tables = demo.write_csv_tables(os.path.join(trainer._store.files_dir, "demo-data"))
    dataset = Dataset("demo", "binary_classification", "churn", tables=tables)
    print(f"database: {trainer.db}")
    job = trainer.fit(dataset)
    print(f"training job {job.job_id} submitted (model run {job.model_run_id})")
    final = job.wait(timeout=300)
    result = final["result"]
    print(f"  {final['status']}: {len(result.get('epochs', []))} epochs, best epoch {result.get('best_epoch')} "
          f"with {result.get('eval_metric')} = {result.get('best_metric'):.4f}")
    import secrets  # only the demo needs it: the status path starts without it (#14)

    alias = f"demo_{secrets.token_hex(3)}"
    pred = trainer.predict(alias, model_run_id=job.model_run_id, extract_embeddings=True).wait(timeout=300)
    print(f"prediction job {pred['job_id']} {pred['status']}: {pred['result'].get('summary')}")
    print(f"  predictions: {pred['export_paths'].get('predictions')}")
    print(f"  SQL view:    {pred['source_views'].get('predictions')}")
    db = f" --db {args.db}" if args.db else ""  # the hints work as printed: on the database just used (#13)
    print("next:")
    print(f"  jobtrack show {job.job_id}{db}")
    print(f"  jobtrack list{db}")
    print(f"  sqlite3 {trainer.db} 'SELECT * FROM {pred['source_views'].get('predictions')} LIMIT 5'")
    return 0 if final["status"] == "COMPLETED" and pred["status"] == "COMPLETED" else 1


_BUILTINS = {
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
