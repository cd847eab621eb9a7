"""``jobtrack ui`` (a local dashboard, extra ``ui``) and ``jobtrack report`` (one HTML file, core) (#16)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

LOCAL_HOST = "127.0.0.1"
"""Where the dashboard listens unless ``--host`` says otherwise."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ui`` and ``report`` to the ``jobtrack`` parser's subcommands."""
    p = sub.add_parser("ui", parents=[common], help="a local dashboard of the database with live curves (extra: ui)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    p.add_argument("--host", default=LOCAL_HOST, help=f"address to listen on (default {LOCAL_HOST}; others warn)")
    p.add_argument("--open", action="store_true", help="open the dashboard in the default web browser")
    p = sub.add_parser("report", parents=[common], help="write one self-contained HTML file of jobs and their curves")
    p.add_argument("job_ids", nargs="*", metavar="JOB", help="jobs to include (ids or unique prefixes)")
    p.add_argument("--where", metavar="QUERY", help="include the jobs this query selects")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the HTML file to write")
    p.add_argument("--title", default="jobtrack report", help="the report's title")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="the newest N jobs, or of --where's matches (default 200)")


def cmd_ui(args: argparse.Namespace) -> int:
    from jobtrack.errors import MissingExtra

    try:
        from jobtrack.ui.app import create_app
        from jobtrack.ui.server import base_url, bind, serve
    except ImportError:
        raise MissingExtra("ui", "starlette (with uvicorn)", "jobtrack ui") from None
    app = create_app(args.db)
    sock = bind(args.host, args.port)
    url = f"{base_url(sock)}/?token={app.state.token}"
    if args.host not in (LOCAL_HOST, "localhost", "::1"):
        print(f"jobtrack ui: warning: listening on {args.host}, not only this machine: anyone who can reach it "
              "and has the token can read every job and cancel jobs.", file=sys.stderr)
    print(f"jobtrack ui: serving {app.state.dashboard.db} (read-only; Cancel writes); Ctrl-C stops")
    print(f"  open {url}", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    serve(app, sock)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from jobtrack.report import DEFAULT_REPORT_JOBS, write_report

    if args.limit is not None and args.job_ids:
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument("--limit chooses among all jobs or --where's matches; with named jobs, leave it out.")
    info = write_report(args.output, args.db, args.job_ids, where=args.where, title=args.title,
                        limit=DEFAULT_REPORT_JOBS if args.limit is None else args.limit)
    shown = len(info.job_ids)
    count = (f"the newest {shown} of {info.total} jobs (--limit N for more, --where to choose)"
             if info.total > shown else f"{shown} job(s)")
    print(f"wrote {info.path}: {count}, {info.bytes} bytes")
    return 0


COMMANDS = {"ui": cmd_ui, "report": cmd_report}
