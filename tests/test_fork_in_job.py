"""A job's code that forks (``os.fork``): a child that leaves the job's code (``sys.exit``, an exception, or a
plain return) instead of ending with ``os._exit`` exits there, recording nothing; the job stays the runner's.

Each case runs in its own Python process (``run_python``): the fork happens there, never in pytest.
"""

from __future__ import annotations

import json

import pytest

from proc import run_python

SCRIPT = '''
import json, os, sys, time
from jobtrack import Dataset, Trainer

def train(ctx):
    ctx.log_epoch(1, train={"loss": 1.0}, validation={"rmse": 1.0})
    pid = os.fork()
    if pid == 0:  # the child leaves the job's code as the case says
        how = ctx.config["how"]
        if how == "exit":
            sys.exit(3)
        if how == "raise":
            raise ValueError("raised in the forked child")
        return {"from": "child"}
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status) if status != -1 else "hung"
    ctx.log_epoch(2, train={"loss": 0.5}, validation={"rmse": 0.5})
    return {"from": "parent", "child_exit": code}

ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}], "validation": [{"id": 1}]})
tr = Trainer(train, db=sys.argv[1], runner=sys.argv[2], provenance=False, config={"how": sys.argv[3]})
st = tr.fit(ds).wait(timeout=30)
print(json.dumps({"status": st["status"], "epochs": len(st["result"].get("epochs", [])),
                  "summary": st["result"].get("summary"), "error": st["result"].get("error")}))
'''


@pytest.mark.parametrize("runner", ["thread", "eager", "process"])
@pytest.mark.parametrize(("how", "child_exit"), [("exit", 3), ("raise", 1), ("return", 0)])
def test_a_forked_child_leaving_the_job_code_does_not_end_the_job(db_path: str, runner: str, how: str,
                                                                   child_exit: int) -> None:
    out = run_python(SCRIPT, db_path, runner, how, timeout=60)
    st = json.loads(out.stdout.strip().splitlines()[-1])
    assert st == {"status": "COMPLETED", "epochs": 2, "summary": {"from": "parent", "child_exit": child_exit},
                  "error": None}, out.stderr


MP_SCRIPT = '''
import json, multiprocessing, sys
from jobtrack import Dataset, Trainer

def work():
    pass

def train(ctx):  # as torch.multiprocessing and Lightning's strategy="ddp_fork" start their ranks
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(30)
    return {"child_exit": child.exitcode}

ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})
st = Trainer(train, db=sys.argv[1], runner=sys.argv[2], provenance=False).fit(ds).wait(timeout=30)
print(json.dumps({"status": st["status"], "summary": st["result"].get("summary")}))
'''


@pytest.mark.parametrize("runner", ["thread", "eager", "process"])
def test_a_multiprocessing_child_forked_by_the_job_code_exits_zero(db_path: str, runner: str) -> None:
    # Forked from the thread runner's executor thread, the child's exit joined that very thread ("cannot join
    # current thread"), so every fork-started process of a job ended with code 1 (Lightning: ProcessExitedException)
    out = run_python(MP_SCRIPT, db_path, runner, timeout=60)
    st = json.loads(out.stdout.strip().splitlines()[-1])
    assert st == {"status": "COMPLETED", "summary": {"child_exit": 0}}, out.stderr
