"""SIGTERM while the store cannot take writes (its lock held elsewhere, a full disk): the process still ends.

A thread-runner job queued behind another is claimed by a runner thread that retries while the store refuses;
after a signal that thread must give up the claim (the process is stopping: it starts no job), or the exit
waits on it for as long as the store refuses. The job then reads FAILED (submitter lost) once the process is gone.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from jobtrack import JobManager, testing
from proc import spawn, wait_until

CHILD = '''
import sys, time
from pathlib import Path
from jobtrack import Dataset, Trainer, runtime

runtime.EXIT_DRAIN_S = 0.5  # what is left to record at exit cannot be (the lock is held): do not wait long for it
db, go = sys.argv[1], Path(sys.argv[2])

def first(ctx):
    while not go.exists():
        time.sleep(0.01)
    return {"ok": True}

def second(ctx):
    return {"ok": True}

ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})
a = Trainer(first, db=db, provenance=False, lock_timeout=0.3).fit(ds)
b = Trainer(second, db=db, provenance=False, lock_timeout=0.3).fit(ds)
print(a.job_id, b.job_id, flush=True)
a.wait(timeout=60)
'''


def test_sigterm_ends_a_process_whose_queued_job_cannot_be_claimed(db_path: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    with spawn(CHILD, db_path, str(go)) as child:
        assert child.stdout is not None and child.stderr is not None
        first, second = child.stdout.readline().split()
        manager = JobManager(db_path)  # the first job's claim is its thread's, maybe still to come: not behind the lock
        wait_until(lambda: manager.fetch_job(first).get_status()["status"] == "RUNNING", timeout=30,
                   message="the first job runs")
        with testing.hold_write_lock(db_path):
            go.touch()  # the first job returns; its end and the second job's claim now wait for the lock
            stderr: list[str] = []
            threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True).start()  # type: ignore[arg-type]
            wait_until(lambda: "retrying in the background" in "".join(stderr), timeout=20,
                       message="the first job's end waits for the lock")
            child.send_signal(signal.SIGTERM)  # the runner thread is on (or moves on to) the second job's claim
            wait_until(lambda: child.poll() is not None, timeout=10,
                       message="the process ends after SIGTERM while the store is locked")
    ended = {job: manager.fetch_job(job).get_status()["status"] for job in (first, second)}
    assert ended == {first: "FAILED", second: "FAILED"}  # runner lost, submitter lost: nothing left RUNNING/QUEUED


CAUGHT = '''
import logging, os, signal, sys, threading, time
from jobtrack import Dataset, Trainer, testing

db = sys.argv[1]
ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})
release, retried = threading.Event(), threading.Event()

class Retries(logging.Handler):
    def emit(self, record):
        if "claim: not yet, retrying" in record.getMessage():
            retried.set()

logging.getLogger("jobtrack.runners.base").addHandler(Retries())
logging.getLogger("jobtrack.runners.base").setLevel(logging.DEBUG)

def first(ctx):
    release.wait(30)
    return {"ok": True}

def second(ctx):
    return {"ok": True}

Trainer(second, db=db, provenance=False).fit(ds).wait(timeout=30)  # jobtrack's handlers are in place
try:  # Ctrl-C in a notebook cell: the kernel catches it and the session goes on
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
except KeyboardInterrupt:
    print("caught", flush=True)
a = Trainer(first, db=db, provenance=False, lock_timeout=0.3).fit(ds)
b = Trainer(second, db=db, provenance=False, lock_timeout=0.3).fit(ds)  # queued behind a
with testing.hold_write_lock(db, lock_timeout=0.3):
    release.set()  # a ends; b's claim meets the held lock
    retried.wait(5)  # it waits its turn (the old code gave up at once: no retry)
print(b.wait(timeout=30)["status"], flush=True)
'''


def test_a_caught_ctrl_c_does_not_make_later_claims_give_up(db_path: str) -> None:
    """A signal long caught (a notebook's Ctrl-C) is not a reason for a later job's claim to give up at a busy store."""
    with spawn(CAUGHT, db_path) as child:
        out, err = child.communicate(timeout=60)
    assert out.split() == ["caught", "COMPLETED"], err
