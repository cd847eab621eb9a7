"""``jobtrack retry JOB``: run an ended job's spec again as a new, linked job (#18)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``retry`` to the ``jobtrack`` parser's subcommands."""
    p = sub.add_parser("retry", parents=[common],
                       help="queue a new job that runs a FAILED or CANCELED worker job again, from its checkpoint")
    p.add_argument("job_id", metavar="JOB", help="the ended job (its id or a unique prefix)")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch: do not copy the old job's epochs and checkpoints")


def cmd_retry(args: argparse.Namespace) -> int:
    from jobtrack.manager import JobManager

    manager = JobManager(args.db, lock_timeout=args.lock_timeout)
    old = manager.resolve_job_id(args.job_id)
    new = manager.retry(old, resume=not args.no_resume)
    how = "from scratch" if args.no_resume else _resumed(manager.fetch_job(old), new)
    db = f" --db {args.db}" if args.db else ""
    print(f"{new.job_id}: QUEUED, retry of {old} ({how}); `jobtrack worker{db}` runs it")
    return 0


def show_lines(links: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """What ``jobtrack show`` adds for retries (``JobManager.retry_links``): links between jobs, attempts (#18)."""
    from jobtrack.cliutil import local

    lines = []
    if links["retry_of"]:
        lines.append(f"retry of: {links['retry_of']}")
    if links["retried_by"]:
        lines.append(f"retried by: {', '.join(links['retried_by'])}")
    attempts = result.get("attempts") or []
    if attempts:
        lines.append(f"attempts ({links['attempt']} of {links['max_attempts']}):")
        for a in attempts:
            ended = f"ended {local(a['ended_at'])}: {a['why']}" if a.get("ended_at") else "running"
            lines.append(f"  {a['number']:>3}  started {local(a['started_at'])}  {ended}")
    return lines


COMMANDS = {"retry": cmd_retry}


def _resumed(old: Any, new: Any) -> str:
    """What a resumed retry starts from: the epochs it copied, and the checkpoint, if one was found here."""
    from jobtrack import checkpoints

    if new.job_type == "inference":
        return "predicting again"
    epochs = len(new.get_status()["result"].get("epochs") or [])
    found = checkpoints.latest(new.log_path.parent / checkpoints.DIR_NAME)
    if found is not None:
        return f"resuming after its {epochs} epoch(s) from checkpoint {found.name}"
    why = ("it saved none" if old.log_path.parent.is_dir() else
           "its folder is not here: a migrated or imported job's files stay where it ran")
    return f"resuming after its {epochs} epoch(s) with no checkpoint ({why}); --no-resume starts over"
