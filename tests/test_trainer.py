"""The process runner survives job code that ends its process; cancellation is not an Exception; helpers are bounded.

The Trainer's argument rules are in test_trainer_validation.py, real training under each runner in
test_trainer_runners.py, failure and cancel in test_cancel_fail.py, the worker in test_worker.py.
"""

from __future__ import annotations

import os
import signal

import pytest

from jobtrack import Dataset, JobCanceled, RunContext, Trainer
from proc import wait_until


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
