"""A script (or a notebook) that catches Ctrl-C and goes on: the jobs it submits afterwards are not the signal's
to cancel, while those it ran or had queued when the signal came still end CANCELED."""

from __future__ import annotations

import signal

from jobtrack import JobManager
from proc import spawn

SCRIPT = '''
import os, signal, sys, threading, time
from jobtrack import Dataset, Trainer

db = sys.argv[1]
ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})
hold = threading.Event()

def quick(ctx):
    for e in range(3):
        ctx.log_epoch(e, train={"loss": 1.0})
    return {"ok": True}

def held(ctx):
    while not hold.wait(0.01):
        ctx.check_canceled()

trainer = Trainer(quick, db=db, provenance=False)
trainer.fit(ds).wait(timeout=30)  # jobtrack's handlers are in place
for round_ in range(5):
    running = Trainer(held, db=db, provenance=False).fit(ds)
    queued = trainer.fit(ds)  # behind it, on the same runner thread
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)
    except KeyboardInterrupt:
        after = trainer.fit(ds)  # at once, while the signal's cancels may still be on their way
    print(running.wait(timeout=30)["status"], queued.wait(timeout=30)["status"], after.wait(timeout=30)["status"],
          flush=True)
'''


def test_jobs_submitted_after_a_caught_ctrl_c_run_and_earlier_ones_are_canceled(db_path: str) -> None:
    with spawn(SCRIPT, db_path) as child:
        out, err = child.communicate(timeout=120)
    assert out.splitlines() == ["CANCELED CANCELED COMPLETED"] * 5, err


KERNEL = '''
import os, signal, sys, threading, time
from jobtrack import Dataset, Trainer, WaitTimeout

db = sys.argv[1]
ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})

def interrupted(ctx):
    ctx.log_epoch(0, train={"loss": 1.0})
    os.kill(os.getpid(), signal.SIGINT)  # the kernel's interrupt button, while the cell runs the job
    ctx.log_epoch(1, train={"loss": 0.5})

Trainer(lambda ctx: None, db=db, runner="eager", provenance=False).fit(ds)  # a first cell: jobtrack's handlers
for cell in range(3):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what ipykernel does before each cell runs
    try:
        Trainer(interrupted, db=db, runner="eager", provenance=False).fit(ds)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # and after it

def held(ctx):
    while True:
        ctx.log_epoch(0, train={"loss": 1.0})
        time.sleep(0.01)

job = Trainer(held, db=db, provenance=False).fit(ds)  # a thread job of one cell ...
signal.signal(signal.SIGINT, signal.default_int_handler)
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    job.wait(timeout=60)  # ... waited for in the next one, and interrupted there
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
try:
    print(job.wait(timeout=10)["status"], flush=True)
except WaitTimeout:
    print("still", job.cancel(), flush=True)
'''


def test_an_interrupt_in_a_later_notebook_cell_cancels_the_job_it_runs_or_waits_for(db_path: str) -> None:
    """A notebook kernel puts its own SIGINT handler back around every cell: an interrupt in a later cell is still
    jobtrack's, so an eager job it stops reads CANCELED (it read FAILED, KeyboardInterrupt), as does a thread job
    whose wait() it stops (it went on running), and the cell gets the KeyboardInterrupt."""
    with spawn(KERNEL, db_path) as child:
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and out.splitlines() == ["KeyboardInterrupt"] * 4 + ["CANCELED"], (out, err)
    jobs = JobManager(db_path).list_jobs(limit=10)
    statuses = sorted(job.wait(timeout=30)["status"] for job in jobs)
    assert statuses == ["CANCELED"] * 4 + ["COMPLETED"], statuses
    for job in jobs:
        status = job.get_status()
        if status["status"] == "CANCELED":
            assert [e["epoch"] for e in status["result"]["epochs"]] == [0] and status["result"].get("error") is None


CHAINED = '''
import os, signal, sys, threading, time
from jobtrack import Dataset, Trainer

db = sys.argv[1]
ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})

def held(ctx):
    while True:
        ctx.log_epoch(0, train={"loss": 1.0})
        time.sleep(0.01)

Trainer(lambda ctx: None, db=db, runner="eager", provenance=False).fit(ds)  # jobtrack's handlers are in place
old = signal.getsignal(signal.SIGTERM)
calls = []
def preempt(signum, frame):  # a handler of the code's own that chains to the one it replaced
    calls.append(signum)
    old(signum, frame)
signal.signal(signal.SIGTERM, preempt)

class DelayedKeyboardInterrupt:  # the well-known recipe: Ctrl-C held back during a critical section
    def __enter__(self):
        self.received = None
        self.old = signal.signal(signal.SIGINT, self.handler)
    def handler(self, signum, frame):
        self.received = (signum, frame)
    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.old)
        if self.received:
            self.old(*self.received)

with DelayedKeyboardInterrupt():
    Trainer(lambda ctx: None, db=db, runner="eager", provenance=False).fit(ds)
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    time.sleep(30)
    print("Ctrl-C lost", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
job = Trainer(held, db=db, provenance=False).fit(ds)
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
try:
    job.wait(timeout=60)
except SystemExit as exc:
    print("SystemExit", exc.code, "calls", len(calls), flush=True)
    raise
'''


def test_handlers_the_code_installs_after_jobtracks_are_left_alone(db_path: str) -> None:
    """fit() and wait() take back only Python's default handler (a notebook kernel's): a handler of the code's own
    that chains to jobtrack's recursed into it (RecursionError, or an eager job's process exiting 0), and a handler
    held only during a critical section became jobtrack's "previous" for good, so Ctrl-C was lost after it."""
    with spawn(CHAINED, db_path) as child:
        out, err = child.communicate(timeout=120)
    assert out.splitlines() == ["KeyboardInterrupt", "SystemExit 143 calls 1"], (out, err)
    assert child.returncode in (143, -signal.SIGTERM), err  # death by SIGTERM, as without a handler
    assert [j.wait(timeout=30)["status"] for j in JobManager(db_path).list_jobs(limit=1)] == ["CANCELED"]
