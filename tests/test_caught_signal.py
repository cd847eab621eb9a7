"""A script (or a notebook) that catches Ctrl-C and goes on: the jobs it submits afterwards are not the signal's
to cancel, while those it ran or had queued when the signal came still end CANCELED."""

from __future__ import annotations

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
