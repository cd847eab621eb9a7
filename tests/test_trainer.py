"""The process runner survives job code that ends its process; cancellation is not an Exception; helpers are bounded.

The Trainer's argument rules are in test_trainer_validation.py, real training under each runner in
test_trainer_runners.py, failure and cancel in test_cancel_fail.py, the worker in test_worker.py.
"""

from __future__ import annotations

import os
import signal

import pytest

from jobtrack import Dataset, JobCanceled, JobManager, RunContext, Trainer
from jobtrack.store import Store
from proc import spawn, wait_until


@pytest.mark.parametrize(("how", "expected"), [("exit", "exited with code 7"), ("kill", "SIGKILL")])
def test_process_runner_survives_a_crashing_job(db_path: str, how: str, expected: str) -> None:
    def crash(ctx: RunContext) -> None:
        ctx.log_epoch(1, train={"loss": 1.0})
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), signal.SIGKILL)

    job = Trainer(crash, db=db_path, runner="process").fit(Dataset("c", "regression", "t", tables={"train": []}))
    status = job.wait(timeout=60)
    assert status["status"] == "FAILED" and expected in job.events()[-1].reason
    assert status["result"]["error"]["type"] == "RunnerExited" and len(status["result"]["epochs"]) == 1
    assert status["result"]["error"]["message"] in ("The job's runner process was killed by signal SIGKILL.",
                                                    "The job's runner process exited with code 7.")


def test_a_reader_polling_in_the_parent_records_how_the_child_ended(db_path: str) -> None:
    # The parent stopped watching its child before recording its end: a get_status() in that moment
    # found the child gone, no probe to ask, and recorded "runner lost" (about half of the jobs before).
    def crash(ctx: RunContext) -> None:
        ctx.log_epoch(1, train={"loss": 1.0})
        os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(crash, db=db_path, runner="process")
    reasons = []
    for _ in range(20):
        job = trainer.fit(Dataset("c", "regression", "t", tables={"train": []}))
        wait_until(lambda job=job: job.get_status()["status"] == "FAILED", timeout=60, interval=0)
        reasons.append(job.events()[-1].reason)
    assert reasons == ["runner process killed by signal SIGKILL"] * 20


def test_job_canceled_is_not_an_exception() -> None:
    assert issubclass(JobCanceled, BaseException) and not issubclass(JobCanceled, Exception)


def test_wait_until_helper_is_bounded() -> None:
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, timeout=0.05, message="never")


_PARENT = """
import os, sys, time
from jobtrack import Dataset, Trainer

def train(ctx):
    print(os.getpid(), flush=True)  # to the job's log: the child's pid
    for e in range(100000):
        ctx.log_epoch(e, train={"loss": 1.0 / (e + 1)})
        time.sleep(0.01)

job = Trainer(train, db=sys.argv[1], runner="process").fit(Dataset("p", "regression", "t", tables={"train": []}))
print(job.job_id, flush=True)
job.wait()
"""


def _child_pid(db: str, job_id: str) -> int | None:
    """The pid the job's child printed first to its log."""
    log = Store.open(db).job_dir(job_id) / "log.txt"
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        words = line.split()
        if words and words[-1].isdigit():
            return int(words[-1])
    return None


def test_a_process_runner_child_ends_with_its_parent(db_path: str) -> None:
    """Killing the process that started a process-runner job ends the job's child too: it could write on with
    nobody to record its end, into a write-ahead log another process may delete meanwhile (its parent's SQLite
    locks were the ones that kept it)."""
    with spawn(_PARENT, db_path) as parent:
        job_id = parent.stdout.readline().strip()  # type: ignore[union-attr]
        job = JobManager(db_path).fetch_job(job_id)
        wait_until(lambda: len(job.get_status()["result"].get("epochs", [])) >= 3, timeout=30)
        child = wait_until(lambda: _child_pid(db_path, job_id), timeout=10)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not os.path.exists(f"/proc/{child}") or _zombie(child), timeout=10,
                   message="the job's child outlived its parent")
    status = wait_until(lambda: (s := job.get_status())["status"] != "RUNNING" and s, timeout=20)
    assert status["status"] == "FAILED" and "lost" in job.events()[-1].reason


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _sleep_long() -> None:
    import time

    time.sleep(60)


@pytest.mark.parametrize("runner", ["eager", "thread"])
def test_a_child_forked_by_job_code_dies_of_sigterm_as_without_jobtrack(db_path: str, runner: str) -> None:
    """``multiprocessing.Pool.terminate()`` sends its forked workers SIGTERM: they inherit jobtrack's handler, and
    unwinding through their exit hooks (SystemExit) instead of dying of it hung pools now and then."""
    import multiprocessing

    def train(ctx: RunContext) -> dict[str, object]:
        child = multiprocessing.get_context("fork").Process(target=_sleep_long)
        child.start()
        child.terminate()
        child.join(30)
        return {"exitcode": child.exitcode}

    job = Trainer(train, db=db_path, runner=runner).fit(Dataset("f", "regression", "t", tables={"train": []}))
    status = job.wait(timeout=60)
    assert status["status"] == "COMPLETED" and status["result"]["summary"] == {"exitcode": -signal.SIGTERM}
