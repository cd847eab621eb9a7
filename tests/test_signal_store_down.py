"""SIGTERM while the store cannot take writes (its lock held elsewhere, a full disk): the process still ends.

A thread-runner job queued behind another is claimed by a runner thread that retries while the store refuses;
after a signal that thread must give up the claim (the process is stopping: it starts no job), or the exit
waits on it for as long as the store refuses. The job then reads FAILED (submitter lost) once the process is gone.
"""

from __future__ import annotations

import signal
import threading
import time
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
        with testing.hold_write_lock(db_path):
            go.touch()  # the first job returns; its end and the second job's claim now wait for the lock
            stderr: list[str] = []
            threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True).start()  # type: ignore[arg-type]
            wait_until(lambda: "retrying in the background" in "".join(stderr), timeout=20,
                       message="the first job's end waits for the lock")
            child.send_signal(signal.SIGTERM)  # the runner thread is on (or moves on to) the second job's claim
            started = time.monotonic()
            wait_until(lambda: child.poll() is not None, timeout=10,
                       message="the process ends after SIGTERM while the store is locked")
            assert time.monotonic() - started < 5
    manager = JobManager(db_path)
    ended = {job: manager.fetch_job(job).get_status()["status"] for job in (first, second)}
    assert ended == {first: "FAILED", second: "FAILED"}  # runner lost, submitter lost: nothing left RUNNING/QUEUED
