"""What the ``jobtrack`` command line shows people: one-line errors with CLI hints, local times, durations (#13).

Errors raised by the library speak Python (``JobManager().list_jobs() shows them``, ``wait(timeout=...)``);
the command line says the same in its own terms (``jobtrack list``, ``--timeout``) and on one line.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime

# Every command imports this module: the errors (and typing) load only when a command fails (#14).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, TextIO

_PYTHON_HINTS = [
    (r"db= or JOBTRACK_DB", "--db or JOBTRACK_DB"),
    (r"lock_timeout= of Trainer or JobManager, --lock-timeout of the jobtrack command", "--lock-timeout SECONDS"),
    (r"\(monitor\.wait\(\)\)", "(jobtrack wait JOB_ID)"),
    (r"Look at get_status\(\)\['result'\]", "Look at jobtrack show JOB_ID"),
    (r"sampler='(\w+)' needs n_trials= ", r"--sampler \1 needs --trials N "),
    (r"with sampler='grid'", "with --sampler grid"),
]
"""Python-flavoured advice in library messages (patterns, compiled when an error is shown), and its command-line
wording."""


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` without importing shutil: ``$COLUMNS``, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # AttributeError: no stdout at all (None), as shutil allows
        return 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, given the width argparse would compute (``terminal_columns() - 2``).

    argparse builds a formatter for every ``add_argument``; left to find the width itself, each imports
    shutil (and with it bz2, lzma and zlib), which cost every command 2 ms before it did anything (#14).
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``jobtrack: error: ... (see 'jobtrack list --help')``, exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)  # subparsers are Parsers too: they get it as well
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("action", _SubParsers)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        self.exit(2, f"jobtrack: error: {message} (see '{self.prog} --help')\n")


class _SubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose own ``--help`` opens with the line ``jobtrack --help`` gives them."""

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("description", kwargs.get("help"))
        return super().add_parser(name, **kwargs)


JOB_HELP = "the job's id, or a unique prefix of it"
"""What a ``JOB_ID`` argument takes."""


def exit_code(exc: BaseException) -> int:
    """2 for a bad argument (a value the command cannot use), 1 for every other failure."""
    from jobtrack.errors import InvalidArgument

    return 2 if isinstance(exc, InvalidArgument) else 1


def error_line(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """The one line ``jobtrack: error: ...`` says for ``exc``, with a command-line hint where the library's speaks
    Python."""
    from jobtrack.errors import (
        AmbiguousJobId,
        InvalidQuery,
        JobNotFound,
        JobtrackError,
        ModelNotFound,
        StoreBusy,
        WaitTimeout,
    )

    db = f" --db {getattr(args, 'db', None)}" if getattr(args, "db", None) else ""
    if isinstance(exc, InvalidQuery):  # with its caret under the problem, as `jobtrack list` shows it
        problem = " ".join(f"invalid --where at position {exc.position}: {exc.problem}".split())
        return f"{problem}\n  {exc.query}\n  {' ' * exc.position}^"
    if isinstance(exc, AmbiguousJobId):
        text = str(exc)
    elif isinstance(exc, JobNotFound):
        where = f" in {exc.db}" if exc.db else ""
        text = f"No job with id {exc.job_id!r}{where}. `jobtrack list{db}` shows the jobs; check the id and --db."
    elif isinstance(exc, WaitTimeout):
        text = (f"Job {exc.job_id!r} is still {exc.status} after {exc.timeout:g} s. "
                + (exc.hint or f"Wait longer (--timeout SECONDS) or cancel it (jobtrack cancel {exc.job_id}{db})."))
    elif isinstance(exc, ModelNotFound):
        detail = f": {exc.detail}" if exc.detail else ""
        text = f"No model {exc.model_ref!r} in this database{detail}. `jobtrack models{db}` lists the model runs."
    elif isinstance(exc, StoreBusy):
        holder = f" (held by {exc.holder})" if exc.holder else ""
        text = (f"Could not take the write lock of {exc.path} within {exc.timeout:g} s{holder}. Stop what holds "
                "it, or wait longer with --lock-timeout SECONDS.")
    elif isinstance(exc, JobtrackError):
        text = str(exc)
        for pattern, replacement in _PYTHON_HINTS:
            text = re.sub(pattern, replacement, text)
    elif isinstance(exc, OSError):
        text = (f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
                else exc.strerror or f"{type(exc).__name__}: {exc}")
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
    return " ".join(text.split())  # one line, whatever the message held


def local(ts: str | None) -> str:
    """An ISO UTC timestamp shown in the user's local time zone (``-`` for None)."""
    if not ts:
        return "-"
    return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(claimed: str | None, finished: str | None, status: str) -> str:
    """Run time from the claim (the RUNNING event) to the end, or to now while it runs; ``-`` before a claim."""
    if claimed is None:
        return "-"
    start = datetime.fromisoformat(claimed)
    if finished is not None:
        end = datetime.fromisoformat(finished)
    elif status == "RUNNING":
        from jobtrack.timeutil import utcnow  # with the runtime it needs: not on every command's path (#14)

        end = utcnow()  # jobtrack's clock (the one tests may shift)
    else:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


_LOG_STAMP = r"(?m)^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d:\d\d) "
"""An ISO UTC timestamp opening a log line (compiled by ``re``'s cache at the first ``jobtrack logs`` line)."""


class LocalTimes:
    """A text stream that shows the ISO UTC timestamp opening each log line in local time (``jobtrack logs``)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._partial = ""

    def write(self, text: str) -> int:
        text = self._partial + text
        complete, _, self._partial = text.rpartition("\n")
        if complete or text.endswith("\n"):
            self.out.write(re.sub(_LOG_STAMP, _local_stamp, complete + "\n"))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        """Write a last line that had no newline."""
        if self._partial:
            self.out.write(re.sub(_LOG_STAMP, _local_stamp, self._partial))
            self._partial = ""
        self.out.flush()


def _local_stamp(match: re.Match[str]) -> str:
    try:
        when = datetime.fromisoformat(match.group(1)).astimezone()
    except ValueError:
        return match.group(0)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} "


_TIME_OPTIONS = ("--since", "--until", "--older-than")
"""Options whose value may be an age written as the query language writes it: ``-2h``."""


def glue_ages(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--since -2h`` written as ``--since=-2h``: argparse takes a value starting with ``-`` and a
    digit for an option of its own, and says "expected one argument"."""
    args, out, i = list(argv), list[str](), 0
    while i < len(args):
        if args[i] in _TIME_OPTIONS and i + 1 < len(args) and re.match(r"-\s*\d", args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out
