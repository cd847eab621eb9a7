"""What the ``jobtrack`` command line shows people: one-line errors with CLI hints, local times, durations (#13).

Errors raised by the library speak Python (``JobManager().list_jobs() shows them``, ``wait(timeout=...)``);
the command line says the same in its own terms (``jobtrack list``, ``--timeout``) and on one line.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from typing import Any, TextIO

from jobtrack.errors import (
    AmbiguousJobId,
    InvalidArgument,
    JobNotFound,
    JobtrackError,
    ModelNotFound,
    StoreBusy,
    WaitTimeout,
)

_PYTHON_HINTS = [
    (re.compile(r"db= or JOBTRACK_DB"), "--db or JOBTRACK_DB"),
    (re.compile(r"lock_timeout= of Trainer or JobManager, --lock-timeout of the jobtrack command"),
     "--lock-timeout SECONDS"),
    (re.compile(r"\(monitor\.wait\(\)\)"), "(jobtrack wait JOB_ID)"),
    (re.compile(r"Look at get_status\(\)\['result'\]"), "Look at jobtrack show JOB_ID"),
]
"""Python-flavoured advice in library messages, and its command-line wording."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``jobtrack: error: ... (see 'jobtrack list --help')``, exit 2."""

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        self.exit(2, f"jobtrack: error: {message} (see '{self.prog} --help')\n")


def exit_code(exc: BaseException) -> int:
    """2 for a bad argument (a value the command cannot use), 1 for every other failure."""
    return 2 if isinstance(exc, InvalidArgument) else 1


def error_line(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """The one line ``jobtrack: error: ...`` says for ``exc``, with a command-line hint where the library's speaks
    Python."""
    db = f" --db {getattr(args, 'db', None)}" if getattr(args, "db", None) else ""
    if isinstance(exc, AmbiguousJobId):
        text = str(exc)
    elif isinstance(exc, JobNotFound):
        where = f" in {exc.db}" if exc.db else ""
        text = f"No job with id {exc.job_id!r}{where}. `jobtrack list{db}` shows the jobs; check the id and --db."
    elif isinstance(exc, WaitTimeout):
        text = (f"Job {exc.job_id!r} is still {exc.status} after {exc.timeout:g} s. Wait longer (--timeout SECONDS) "
                f"or cancel it (jobtrack cancel {exc.job_id}{db}).")
    elif isinstance(exc, ModelNotFound):
        text = f"No model {exc.model_ref!r} in this database. `jobtrack models{db}` lists the model runs."
    elif isinstance(exc, StoreBusy):
        holder = f" (held by {exc.holder})" if exc.holder else ""
        text = (f"Could not take the write lock of {exc.path} within {exc.timeout:g} s{holder}. Stop what holds "
                "it, or wait longer with --lock-timeout SECONDS.")
    elif isinstance(exc, JobtrackError):
        text = str(exc)
        for pattern, replacement in _PYTHON_HINTS:
            text = pattern.sub(replacement, text)
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


_LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d:\d\d) ", re.M)


class LocalTimes:
    """A text stream that shows the ISO UTC timestamp opening each log line in local time (``jobtrack logs``)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._partial = ""

    def write(self, text: str) -> int:
        text = self._partial + text
        complete, _, self._partial = text.rpartition("\n")
        if complete or text.endswith("\n"):
            self.out.write(_LOG_STAMP.sub(_local_stamp, complete + "\n"))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        """Write a last line that had no newline."""
        if self._partial:
            self.out.write(_LOG_STAMP.sub(_local_stamp, self._partial))
            self._partial = ""
        self.out.flush()


def _local_stamp(match: re.Match[str]) -> str:
    try:
        when = datetime.fromisoformat(match.group(1)).astimezone()
    except ValueError:
        return match.group(0)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} "
