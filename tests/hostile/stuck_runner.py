"""A child process for test_stuck_jobs.py: run one thread-runner job whose end meets a hostile condition.

    python stuck_runner.py full DB FILLER      the job fills the disk (a file FILLER next to the database),
                                               logs a line and returns a summary bigger than the free space
    python stuck_runner.py log-dir DB HOW      the job's log directory is not writable, then it logs and
                                               returns (HOW: jobs-0500 | jobs-is-a-file, set before the
                                               job is submitted, or job-0500, by the job's code; with
                                               "-raise" appended: it raises instead of returning)

Options before the mode: ``--uid N`` drops root privileges to uid and gid N before the job runs
(root bypasses file permissions), after a warm-up job in a throwaway database has imported
everything lazily (the interpreter's own files may not be readable by uid N).

It prints one line per step: ``job ID``, ``filled``, ``log LOGGER: MESSAGE`` for every warning
jobtrack logs, then ``final STATUS`` once ``wait()`` returns or ``stuck STATUS`` after WAIT_S, and
``cancel STATUS`` (what ``cancel()`` returned afterwards).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from jobtrack import Dataset, Trainer, WaitTimeout

WAIT_S = 20.0
SUMMARY_BLOB = 40_000
"""Characters of the full-disk job's summary: more than the tmpfs has left once the filler is written."""


class _Lines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"log {record.name}: {record.getMessage()}", flush=True)


def _fill(path: str) -> None:
    # Unbuffered: a buffered file keeps what a short write left over and raises ENOSPC again when it closes
    # (whether it does depends on the free space, which the job's saved git diff changes).
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:  # ENOSPC: the disk is full now
            print(f"filled {exc.errno}", flush=True)
    try:  # the last partial block may still fit: fill it too
        with open(path, "ab", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 512)
    except OSError:
        pass


def _train(mode: str, arg: str):  # type: ignore[no-untyped-def]
    def train(ctx: Any) -> dict[str, Any]:
        ctx.log_epoch(1, train={"loss": 0.5}, validation={"loss": 0.6})
        if mode == "full":
            _fill(arg)
            ctx.log("the disk is full now")  # never fails the job
            return {"blob": "x" * SUMMARY_BLOB}
        how = arg.removesuffix("-raise")
        if how == "job-0500":  # the job's own directory (it may exist already: its log is open)
            ctx.job_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(ctx.job_dir, 0o500)
        ctx.log("a line that cannot be written")
        if arg.endswith("-raise"):
            raise RuntimeError("the job's own error")
        return {"ok": True}

    return train


def run(mode: str, db: str, arg: str) -> None:
    dataset = Dataset("d", "regression", "t", tables={"train": [{"x": 1.0, "y": 2.0}]})
    jobs = Path(db + "-files", "jobs")  # where every job's directory (and log) goes
    if mode == "log-dir" and arg.startswith("jobs-0500"):
        jobs.mkdir(parents=True, exist_ok=True)
        os.chmod(jobs, 0o500)
    elif mode == "log-dir" and arg.startswith("jobs-is-a-file"):
        jobs.parent.mkdir(parents=True, exist_ok=True)
        jobs.write_text("not a directory", encoding="utf-8")
    job = Trainer(_train(mode, arg), db=db).fit(dataset)
    print(f"job {job.job_id}", flush=True)
    try:
        print(f"final {job.wait(timeout=WAIT_S)['status']}", flush=True)
    except WaitTimeout:
        print(f"stuck {job.get_status()['status']}", flush=True)
    print(f"cancel {job.cancel()}", flush=True)


def _warm_up(mode: str, arg: str) -> None:
    """Run the same kind of job once as root, so every module jobtrack imports lazily is loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        job = Trainer(_train(mode, arg), db=os.path.join(tmp, "warm.db")).fit(
            Dataset("d", "regression", "t", tables={"train": [{"x": 1.0, "y": 2.0}]}))
        job.wait(timeout=WAIT_S)
        job.cancel()
        job.get_status()
        try:
            from jobtrack import runtime
        except ImportError:  # the code before the runtime module (checking that the tests fail there)
            return
        runtime.close_all()


def main(argv: list[str]) -> None:
    uid = None
    if argv[0] == "--uid":
        uid, argv = int(argv[1]), argv[2:]
    mode, db, arg = argv
    handler = _Lines(logging.WARNING)
    logging.getLogger("jobtrack").addHandler(handler)
    if uid is not None:
        logging.getLogger("jobtrack").removeHandler(handler)
        _warm_up(mode, arg)
        logging.getLogger("jobtrack").addHandler(handler)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    run(mode, db, arg)


if __name__ == "__main__":
    main(sys.argv[1:])
