"""``jobtrack sweep run|show|list``: hyperparameter sweeps on the command line (#17)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from jobtrack import jsonutil
from jobtrack.config import ENV_DB, is_url, resolve_db
from jobtrack.errors import InvalidArgument
from jobtrack.space import param_of

PROGRESS_EVERY_S = 2.0
"""How often ``jobtrack sweep run`` prints a progress line while trials run."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``jobtrack sweep`` and its three actions to the ``jobtrack`` parser's subcommands."""
    p = sub.add_parser("sweep", parents=[common], help="hyperparameter sweeps: run, show, list")
    actions = p.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    r = actions.add_parser("run", parents=[common], help="run (or resume) a sweep of an importable trainer")
    r.add_argument("trainer", metavar="MODULE:TRAINER", help="a jobtrack.Trainer (or a function returning one)")
    r.add_argument("--dataset", metavar="MODULE:DATASET", help="the dataset (default: MODULE:dataset)")
    r.add_argument("--space", required=True, help="e.g. \"lr=loguniform(1e-4,1e-1); depth=[2,4,8]\"")
    r.add_argument("--trials", type=int, default=None, help="how many trials (default for grid: every point)")
    r.add_argument("--parallel", type=int, default=1, help="trials at once (default 1)")
    r.add_argument("--name", help="the sweep's name; the same name resumes it")
    r.add_argument("--sampler", choices=("grid", "random"), default="random",
                   help="grid: every point once; random (default): --trials draws")
    r.add_argument("--seed", type=int, default=None, help="seed of the random sampler")
    r.add_argument("--prune", choices=("median",), default=None, help="stop trials worse than the median")
    r.add_argument("--app-dir", action="append", default=[], metavar="DIR", help="also import from DIR")
    s = actions.add_parser("show", parents=[common], help="a sweep's trials ranked by metric, and the best config")
    s.add_argument("sweep", metavar="NAME", help="the sweep's name or id")
    s.add_argument("--json", action="store_true", help="print get_status() and the ranked trials as JSON")
    actions.add_parser("list", parents=[common], help="every sweep with its counts and best metric")


def _load(ref: str, what: str) -> Any:
    from jobtrack.spec import import_object

    return import_object(ref, what)


def _instance(ref: str, what: str, cls: type) -> Any:
    import inspect

    obj = _load(ref, what)
    if not isinstance(obj, cls) and callable(obj):
        try:
            signature: inspect.Signature | None = inspect.signature(obj)
        except (TypeError, ValueError):  # no signature to read (a builtin): called as it is
            signature = None
        try:
            if signature is not None:
                signature.bind()
        except TypeError:  # a train(ctx) function, say: calling it would fail as an "unexpected TypeError"
            raise InvalidArgument(f"{ref!r} is a function taking arguments {signature}, not a jobtrack.{cls.__name__}; "
                                  f"name the {cls.__name__} (or a function taking none that returns one).") from None
        obj = obj()
    if not isinstance(obj, cls):
        raise InvalidArgument(f"{ref!r} is a {type(obj).__name__}, not a jobtrack.{cls.__name__} (or a function "
                              f"returning one).")
    return obj


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else jsonutil.one_line(str(value))


def _line(status: dict[str, Any]) -> str:
    counts, best = status["counts"], status["best"]
    text = (f"sweep {status['name']}: {status['done']}/{status['total']} done "
            f"({counts['RUNNING']} running, {counts['FAILED']} failed, {counts['CANCELED']} canceled")
    text += f", {status['replaced']} replaced)" if status["replaced"] else ")"
    if best is not None:
        text += f"; best {status['metric']}={_fmt(best['metric'])} (trial {best['trial']})"
    elif status["done"]:  # trials ended, none ranked: say why rather than leave the ranks blank
        text += (f"; no best: no trial reported {status['metric']} (report it with ctx.log_epoch, or choose one "
                 "they report with Trainer(eval_metric=...))")
    return text


def _same_db(a: str, b: str) -> bool:
    """Whether two resolved databases are one: the same URL, or paths of the same file."""
    return a == b or (not is_url(a) and not is_url(b) and os.path.realpath(a) == os.path.realpath(b))


def cmd_run(args: argparse.Namespace) -> int:
    from jobtrack.dataset import Dataset
    from jobtrack.runners.worker import add_import_dirs
    from jobtrack.space import parse_space
    from jobtrack.trainer import Trainer

    space = parse_space(args.space)  # checked before any code is imported or row written
    if args.db:
        os.environ[ENV_DB] = args.db  # a Trainer built at import without db= writes here
    add_import_dirs(args.app_dir)
    trainer = _instance(args.trainer, "trainer", Trainer)
    if args.db and not _same_db(resolve_db(args.db), trainer.db):  # its db= wins: the sweep would run elsewhere
        raise InvalidArgument(f"--db {args.db} is not the database of {args.trainer} ({trainer.db}, its db=...); "
                              f"the sweep would run there. Pass --db {trainer.db}, or leave db= out of the Trainer.")
    dataset_ref = args.dataset or f"{args.trainer.partition(':')[0]}:dataset"
    dataset = _instance(dataset_ref, "dataset", Dataset)
    monitor = trainer.sweep(dataset, space, n_trials=args.trials, parallel=args.parallel, sampler=args.sampler,
                            name=args.name, seed=args.seed, prune=args.prune)
    print(f"sweep {monitor.name} ({monitor.sweep_id}) on {trainer.db}: {space.describe()}", flush=True)
    while True:
        try:
            status = monitor.wait(timeout=PROGRESS_EVERY_S)
            break
        except TimeoutError:
            print(_line(monitor.get_status()), flush=True)
    print(_line(status))
    _show(monitor, limit=10)
    return 0 if status["done"] >= (status["total"] or 0) else 3


def _show(monitor: Any, *, limit: int | None = None) -> None:
    status = monitor.get_status()
    ranked = monitor.ranked()
    keys = list(monitor.spec.get("space") or {})
    header = ["rank", "trial", "status", status["metric"] or "metric", *keys, "job"]
    rows = []
    for rank, t in enumerate(ranked, 1):
        scored = t.best_metric is not None and t.status.value == "COMPLETED"
        state = t.status.value + (f" ({t.reason})" if t.void or (t.reason or "").startswith("pruned") else "")
        rows.append([str(rank) if scored else "-", str(t.trial), state, _fmt(t.best_metric) if scored else "-",
                     *[_fmt(param_of(t.config, k)) for k in keys], t.job_id])
    shown = rows if limit is None else rows[:limit]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for r in shown:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if limit is not None and len(rows) > limit:
        print(f"... {len(rows) - limit} more (jobtrack sweep show {monitor.name})")
    best = status["best"]
    if best is not None:
        print(f"best: trial {best['trial']} {status['metric']}={_fmt(best['metric'])} "
              f"config {json.dumps(best['config'], sort_keys=True)}")


def cmd_show(args: argparse.Namespace) -> int:
    from jobtrack.manager import JobManager

    monitor = JobManager(args.db, lock_timeout=args.lock_timeout).fetch_sweep(args.sweep)
    if args.json:
        trials = [{"trial": t.trial, "job_id": t.job_id, "status": t.status.value, "reason": t.reason,
                   "metric": t.best_metric, "config": t.config} for t in monitor.ranked()]
        print(json.dumps({"status": monitor.get_status(), "trials": trials}, indent=2, sort_keys=True))
        return 0
    print(_line(monitor.get_status()) + f"  [{monitor.spec.get('sampler')}]")
    _show(monitor)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from jobtrack.manager import JobManager

    sweeps = JobManager(args.db, lock_timeout=args.lock_timeout).list_sweeps()
    if not sweeps:
        print("no sweeps (jobtrack sweep run MODULE:TRAINER --space ... starts one)")
    for monitor in sweeps:
        print(_line(monitor.get_status()) + f"  [{monitor.spec.get('sampler')}]")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    return {"run": cmd_run, "show": cmd_show, "list": cmd_list}[args.sweep_command](args)


COMMANDS = {"sweep": cmd_sweep}
