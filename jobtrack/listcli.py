"""``jobtrack list``: the listing with ``--where``, ``--sort``, ``--offset`` and ``--columns`` (#13, #15)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from typing import Any

from jobtrack import cliutil, jsonutil
from jobtrack.errors import InvalidQuery
from jobtrack.query import field
from jobtrack.querylex import tokenize
from jobtrack.runtable import FIXED_KEYS

_INT64_MAX = 2**63 - 1
_HEADER = ("JOB ID", "STATUS", "TYPE", "EXPERIMENT", "MODEL RUN", "CREATED", "DURATION")
_IN_HEADER = frozenset({"id", "status", "job_type", "experiment", "model_run_id", "created", "duration"})
"""The run table's keys the table always shows: asked for with ``--columns``, they are not shown twice."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The query options of ``jobtrack list``."""
    # `--sort -best_metric`: argparse takes any word starting with '-' for an option unless it looks like a
    # negative number; this parser (which has no option spelt that way) reads "-name" as a value, so the
    # documented form works without `--sort=-best_metric`.
    p._negative_number_matcher = re.compile(r"^-(?!-)\S")  # argparse offers no public switch
    p.add_argument("--where", help="""a query, e.g. "config.lr < 0.01 and (tag = 'baseline' or best.roc_auc > 0.9)" """
                                   "(README: Finding and comparing runs)")
    p.add_argument("--sort", help="sort by fields, '-' for descending: -best_metric, config.lr,-created")
    p.add_argument("--offset", type=int, default=0, help="skip this many matching jobs (the next page)")
    p.add_argument("--columns", help="more columns: config.<key>, best.<metric>, last.<metric>, tags, ... "
                                     "(comma-separated)")


def columns(text: str | None) -> list[str]:
    """The names of ``--columns``: fields a run table holds (config.*, best.*, last.*, and its fixed keys).

    Raises:
        InvalidQuery: an unknown or empty name, with its position in ``text``.
    """
    names: list[str] = []
    tokens = tokenize(text) if text else []  # the query language's names: a key in backticks may hold a comma
    for i, tok in enumerate(tokens[:-1]):
        if tok.kind == ",":
            if tokens[i + 1].kind in (",", "end") or i == 0:
                raise InvalidQuery(text or "", tok.pos, "empty column name; write e.g. config.lr,best.roc_auc")
            continue
        if tok.kind != "ident" or tokens[i + 1].kind not in (",", "end"):
            where = tok if tok.kind != "ident" else tokens[i + 1]
            raise InvalidQuery(text or "", where.pos, "column names are separated by commas; write e.g. "
                                                      "config.lr,best.roc_auc")
        name, at = tok.value, tok.pos
        if name in FIXED_KEYS:
            names.append(name)
            continue
        f = field(text or "", name, at)
        if f.kind not in ("config", "best", "last"):
            raise InvalidQuery(text or "", at, f"{name} is not a column; columns are config.<key>, best.<metric>, "
                                               f"last.<metric> and {', '.join(FIXED_KEYS)}")
        names.append(name)
    return names


def _duration(row: dict[str, Any]) -> str:
    """A row's run time: to its end, to now while it runs, or (a snapshot copy) to when it was exported."""
    started, end = row["started"], row["finished"]
    if end is None and started is not None and row["duration"] is not None:  # a snapshot copy's frozen time
        end = started + timedelta(seconds=row["duration"])
    return cliutil.duration(started and started.isoformat(), end and end.isoformat(), row["status"])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return cliutil.local(value.isoformat())
    if isinstance(value, list):
        return jsonutil.one_line(",".join(map(str, value))) or "-"
    return jsonutil.one_line(str(value))  # a config text's newline or escape sequence must not break the table


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def run(args: argparse.Namespace, manager: Any) -> int:
    """Print the matching jobs (a table, or get_status() dicts with ``--json``); an invalid query exits 2."""
    try:
        extra = columns(args.columns)
        jobs = manager.list_jobs(status=args.status, job_type=args.job_type, experiment_name=args.experiment,
                                 since=args.since, until=args.until, limit=args.limit, where=args.where,
                                 sort=args.sort, offset=args.offset)
    except InvalidQuery as exc:
        if args.debug:
            raise
        option = "--columns" if exc.query == args.columns else "--sort" if exc.query == args.sort else "--where"
        caret = " " * exc.position + "^"
        print(f"jobtrack: error: invalid {option} at position {exc.position}: {exc.problem}\n"
              f"  {exc.query}\n  {caret}", file=sys.stderr)
        return 2
    rows = jobs.table(extra)
    if args.json:
        statuses = [j.get_status() for j in jobs]
        for status, row in zip(statuses, rows, strict=True):
            status.update({name: _json(row.get(name)) for name in extra})
        print(json.dumps(statuses, indent=2))
    else:
        extra = [name for name in extra if name not in _IN_HEADER]
        header = (*_HEADER, *(jsonutil.one_line(name.upper()) for name in extra))
        lines = [(r["id"], r["status"], r["job_type"], r["experiment"], r["model_run_id"] or "-",
                  _cell(r["created"]), _duration(r),
                  *(_cell(r.get(name)) for name in extra)) for r in rows]
        widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
        for r in [header, *lines]:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if not rows and args.experiment and not args.offset:
        _unknown_experiment(args.experiment, manager)
    if jobs.has_more:  # on stderr: the table (or the JSON) on stdout stays what it was
        shown = f"first {args.limit} matching jobs in --sort order; the rest" if args.sort else \
            f"newest {args.limit} matching jobs; older ones"
        more = min(max(args.limit * 10, 100), _INT64_MAX)
        print(f"jobtrack: showing the {shown} were left out. See more with "
              f"--limit {more} or --offset {jobs.next_offset}, or narrow with --where, "
              "--status, --type, --experiment or --since.", file=sys.stderr)
    return 0


def _unknown_experiment(name: str, manager: Any) -> None:
    """On stderr, for an --experiment no job has: the experiments there (a dataset's name alone matches none)."""
    from jobtrack.store import Store

    if manager.list_jobs(experiment_name=name, limit=1):  # it has jobs: another filter left them out
        return
    known = Store.open(manager.db, create=False).dashboard_choices(limit=11)["experiments"]
    listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "") if known else "none yet"
    print(f"jobtrack: no job has experiment {name!r}; an experiment's name is <dataset>_<task_type>_<task_name>, "
          f"and this database has: {listed}. A prefix: --where \"experiment like '{name}*'\".", file=sys.stderr)
