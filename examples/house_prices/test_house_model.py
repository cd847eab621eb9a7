"""How a user tests training code with jobtrack's pytest plugin (fixtures: jobtrack_trainer, jobtrack_faults, ...)."""

from __future__ import annotations

from datetime import timedelta

import house_model
from jobtrack.testing import (
    assert_completed,
    assert_status,
    epochs,
    exported_rows,
    wait_for_epochs,
    wait_for_status,
)


def test_training_converges_and_predictions_are_exported(jobtrack_trainer):
    trainer = jobtrack_trainer(house_model.train, house_model.predict, config={"epochs": 12})
    job = trainer.fit(house_model.make_dataset())
    status = assert_completed(job)
    rmse = [e["validation"]["rmse"] for e in epochs(job)]
    assert len(rmse) == 12 and rmse[-1] < rmse[0]
    assert status["result"]["best_metric"] == min(rmse)  # rmse: smaller is better

    pred = trainer.predict("houses_test", model_run_id=job.model_run_id)
    assert_completed(pred)
    rows = exported_rows(pred)
    assert [r["id"] for r in rows] == list(range(40))


def test_a_bad_learning_rate_fails_with_the_error(jobtrack_trainer):
    job = jobtrack_trainer(house_model.train, config={"lr": -1}).fit(house_model.make_dataset())
    status = assert_status(job, "FAILED")
    assert status["result"]["error"]["type"] == "ValueError"
    assert "learning rate must be positive" in status["result"]["error"]["message"]


def test_canceling_mid_training_keeps_the_epochs_so_far(jobtrack_trainer):
    trainer = jobtrack_trainer(house_model.train, config={"epochs": 100_000}, runner="thread")
    job = trainer.fit(house_model.make_dataset())
    wait_for_epochs(job, 2)
    job.cancel()
    final = job.wait(timeout=30)
    assert final["status"] == "CANCELED"
    assert len(final["result"]["epochs"]) >= 2


def test_recovery_code_sees_a_dead_runner_as_failed(jobtrack_trainer, jobtrack_faults):
    trainer = jobtrack_trainer(house_model.train, config={"epochs": 100_000}, runner="thread")
    job = trainer.fit(house_model.make_dataset())
    wait_for_status(job, "RUNNING")
    jobtrack_faults.kill_runner(job)
    status = assert_status(job, "FAILED")
    assert job.events()[-1].reason == "runner lost"
    assert status["finished_at"] is not None


def test_a_silent_remote_runner_fails_when_its_lease_expires(jobtrack_trainer, jobtrack_faults):
    trainer = jobtrack_trainer(house_model.train, config={"epochs": 100_000}, runner="thread")
    job = trainer.fit(house_model.make_dataset())
    wait_for_status(job, "RUNNING")
    jobtrack_faults.detach_runner(job)
    assert job.get_status()["status"] == "RUNNING"  # within its lease
    jobtrack_faults.shift_clock(timedelta(minutes=5))
    assert_status(job, "FAILED")
