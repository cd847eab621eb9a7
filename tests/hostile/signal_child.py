"""A child process for the signal tests: runs jobtrack calls in a loop until a signal stops it.

    python signal_child.py DB MODE [TAG]

Modes (every job uses the database ``DB``, experiment name ``TAG``):

- ``submit``: submit short thread-runner jobs in a loop;
- ``psubmit``: submit short process-runner jobs in a loop (each job forks a child);
- ``list``: submit two long thread-runner jobs, then list jobs and read statuses in a loop;
- ``eager``: run short eager jobs in a loop (the jobs run in the main thread);
- ``wait``: submit one long thread-runner job and wait for it (``JobMonitor.wait``);
- ``process``: submit one long process-runner job and wait for it;
- ``fork``: submit a thread-runner job (parked while the process forks), then fork; the forked child
  submits its own job and waits for it (the test signals the forked child only); the parent prints
  ``child EXITCODE STATUS`` (its own job's status) when the forked child is gone, then cancels its
  job and prints ``parent STATUS``.

It prints ``ready PID`` once it is inside its loop (after its first job was submitted), and
``stopped EXCEPTION MONOTONIC`` when the signal's effect (``KeyboardInterrupt``, ``SystemExit``)
reaches this main code, with ``time.monotonic()`` at that moment (the clock is system-wide, so the
test can measure how long the signal took to act). The exception is then re-raised, so the process
ends the way an unprepared script would.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time

from jobtrack import Dataset, JobManager, Trainer

faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks of a child that hangs

EXPERIMENT = sys.argv[3] if len(sys.argv) > 3 else "sig"
DATASET = Dataset(EXPERIMENT, "regression", "y", tables={"train": [{"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 4.0}]})


def short(ctx) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Three quick epochs."""
    for epoch in range(3):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)})
        time.sleep(0.002)
    return {"epochs": 3}


def long(ctx) -> None:  # type: ignore[no-untyped-def]
    """An epoch every ~50 ms, for minutes."""
    for epoch in range(100_000):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)})
        time.sleep(0.05)


def say(*words: object) -> None:
    print(*words, flush=True)


def main(db: str, mode: str) -> None:
    if mode == "submit":
        trainer = Trainer(short, db=db, runner="thread")
        trainer.fit(DATASET)
        say("ready", os.getpid())
        while True:
            trainer.fit(DATASET)
    elif mode == "psubmit":
        trainer = Trainer(short, db=db, runner="process")
        trainer.fit(DATASET)
        say("ready", os.getpid())
        while True:
            trainer.fit(DATASET)
    elif mode == "list":
        trainer = Trainer(long, db=db, runner="thread")
        monitors = [trainer.fit(DATASET), trainer.fit(DATASET)]
        manager = JobManager(db=db)
        say("ready", os.getpid())
        while True:
            manager.list_jobs()
            for m in monitors:
                m.get_status()
                _ = m.status
                manager.fetch_job(m.job_id).events()
    elif mode == "eager":
        trainer = Trainer(short, db=db, runner="eager")
        trainer.fit(DATASET)
        say("ready", os.getpid())
        while True:
            trainer.fit(DATASET)
    elif mode in ("wait", "process"):
        trainer = Trainer(long, db=db, runner="thread" if mode == "wait" else "process")
        monitor = trainer.fit(DATASET)
        say("ready", os.getpid(), monitor.job_id)
        monitor.wait()
    elif mode == "fork":
        # The parent's own job parks (no database access) while the parent forks: a fork while another
        # thread is inside SQLite can leave the child stuck on a mutex SQLite held at that moment.
        parked, go = threading.Event(), threading.Event()

        def parent_job(ctx) -> None:  # type: ignore[no-untyped-def]
            ctx.log_epoch(0)
            time.sleep(0.1)  # the heartbeat thread's first beat (at the job's start) is over; the next is 10 s away
            parked.set()
            go.wait()
            long(ctx)

        mine = Trainer(parent_job, db=db, runner="thread").fit(DATASET)  # installs the handlers
        parked.wait()
        pid = os.fork()
        if pid == 0:  # the forked child: its own job, its own wait; the test signals this process only
            monitor = Trainer(long, db=db, runner="thread").fit(DATASET)
            say("ready", os.getpid(), monitor.job_id, mine.job_id)
            monitor.wait()
            return
        go.set()
        _, status = os.waitpid(pid, 0)
        say("child", os.waitstatus_to_exitcode(status), mine.status.value)
        mine.cancel()
        say("parent", mine.wait(timeout=30)["status"])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except (KeyboardInterrupt, SystemExit) as exc:
        say("stopped", type(exc).__name__, repr(time.monotonic()))
        raise
