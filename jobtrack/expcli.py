"""``jobtrack tag``, ``untag`` and ``compare``, and the experiment part of ``jobtrack show`` (#15)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobtrack import jsonutil


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the tag, untag and compare commands to the ``jobtrack`` parser's subcommands."""
    for name, text in (("tag", "add tags to a job (not a status change)"), ("untag", "remove tags from a job")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("job_id", metavar="JOB", help="job id or unique prefix")
        p.add_argument("names", nargs="+", metavar="NAME", help="tags: letters, digits, '-', '_' and '.'")
    p = sub.add_parser("compare", parents=[common], help="what differs between jobs: config, metric, code, data")
    p.add_argument("job_ids", nargs="+", metavar="JOB", help="two or more job ids or unique prefixes; the first "
                                                            "is the baseline")
    p.add_argument("--all", dest="show_all", action="store_true", help="show every field, not only what differs")
    p.add_argument("--json", action="store_true", help="print JobManager.compare(...).as_dict() as JSON")


def _manager(args: argparse.Namespace) -> Any:
    from jobtrack.manager import JobManager

    return JobManager(args.db, lock_timeout=args.lock_timeout)


def cmd_tag(args: argparse.Namespace) -> int:
    manager = _manager(args)
    monitor = manager.fetch_job(manager.resolve_job_id(args.job_id))
    tags = (monitor.tag if args.command == "tag" else monitor.untag)(*args.names)
    print(f"{monitor.job_id}: tags {', '.join(tags) or '(none)'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.job_ids) < 2:
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument(f"compare needs two or more jobs, not only {args.job_ids[0]!r}: "
                              "jobtrack compare JOB_A JOB_B [...] (the first is the baseline).")
    comparison = _manager(args).compare(args.job_ids, show_all=args.show_all)
    print(json.dumps(comparison.as_dict(), indent=2) if args.json else comparison.format())
    return 0


def print_show(args: argparse.Namespace, job_id: str) -> None:
    """Print a job's config (flattened, sorted), tags and provenance for ``jobtrack show``."""
    from jobtrack.store import Store

    facts = Store.open(args.db, create=False).experiment_facts(job_id)
    if facts["config"]:
        print("config:")
        for key, value in sorted(facts["config"].items()):  # as JSON: "4" (text) and 4 (number) look different
            print(f"  {jsonutil.one_line(key)} = {json.dumps(value, ensure_ascii=False)}")
    if facts["tags"]:
        print(f"tags: {', '.join(facts['tags'])}")
    prov = facts["provenance"]
    if prov is None:
        return
    print("provenance:")
    git = prov.get("git")
    if git is None:
        print("  git: none (not in a git checkout, or git not installed)")
    else:
        state = "dirty" if git["dirty"] else "clean"
        print(f"  git: {git['commit']} on {git['branch'] or '(detached HEAD)'}, {state}")
        if git.get("diff_file"):
            cut = ", cut: the job ran with more changes" if git.get("diff_truncated") else ""
            print(f"  uncommitted diff: {git['diff_file']} ({git['diff_bytes']} bytes{cut})")
    print(f"  python {prov.get('python')} on {prov.get('platform')}, host {prov.get('host')}")
    for split, digest in (prov.get("datasets") or {}).items():
        print(f"  dataset {split}: sha256 {digest}")
    packages = prov.get("packages") or {}
    print(f"  packages ({len(packages)}): {', '.join(f'{k} {v}' for k, v in packages.items()) or '-'}")


COMMANDS = {"tag": cmd_tag, "untag": cmd_tag, "compare": cmd_compare}
