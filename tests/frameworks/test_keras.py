"""Keras 3 on the PyTorch backend with ``jobtrack.integrations.keras.JobtrackCallback``: real training (#20)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from jobtrack import Dataset, RunContext, Trainer
from jobtrack.integrations.keras import JobtrackCallback

DATASET = Dataset("synthetic", "regression", "linear", tables={"train": [{"rows": 256}]})


def test_the_backend_is_torch() -> None:
    assert os.environ["KERAS_BACKEND"] == "torch" and keras.backend.backend() == "torch"


def data(n: int, seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x @ np.array([1.0, 2.0, -1.0, 0.5], dtype="float32") + 0.1).astype("float32")


class Gate(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, gate: Any) -> None:
        super().__init__()
        self.gate = gate

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.gate.step_done()


def fit(ctx: RunContext, *, epochs: int = 4, gate: Any = None) -> dict[str, Any]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse",
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    callbacks = [JobtrackCallback(ctx)] + ([Gate(gate)] if gate is not None else [])
    history = model.fit(*data(256, 0), validation_data=data(64, 1), epochs=epochs, batch_size=32, verbose=0,
                        callbacks=callbacks)
    return {"epochs": len(history.history["loss"])}


def test_epochs_reach_the_result_and_the_task_metric_picks_the_best(db_path: str, best_by: Any) -> None:
    job = Trainer(fit, db=db_path, runner="eager").fit(DATASET)
    status = job.get_status()
    result = status["result"]
    assert status["status"] == "COMPLETED", result.get("error")
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert all(set(e["validation"]) == {"loss", "rmse"} and {"loss", "rmse"} <= set(e["train"]) for e in epochs)
    assert result["eval_metric"] == "rmse"
    assert (result["best_epoch"], result["best_metric"]) == best_by(epochs, "rmse", "min")
    [checkpoint] = Path(db_path + "-files").rglob("last.keras")  # saved after each epoch, under the job
    assert status["job_id"] in checkpoint.parts
    assert keras.saving.load_model(checkpoint).count_params() == 4 * 8 + 8 + 8 + 1


def test_a_cancel_from_another_thread_stops_training_within_one_step(db_path: str, step_gate: Any) -> None:
    gate = step_gate(11)  # epoch 1 (8 steps an epoch), its third step
    job = Trainer(lambda ctx: fit(ctx, epochs=50, gate=gate), db=db_path).fit(DATASET)
    at_cancel = gate.cancel_at_gate(job.cancel)
    status = job.wait(timeout=120)
    assert status["status"] == "CANCELED"
    assert gate.steps - at_cancel <= 1, f"{gate.steps - at_cancel} steps ran after the cancel"
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0]
    assert status["result"]["summary"]["epochs"] == 2  # Keras ended the cut epoch, which jobtrack did not report


class Scaled(keras.Model):  # type: ignore[misc]
    """A subclassed model built from an object Keras cannot serialize, and no get_config(): it cannot be saved."""

    def __init__(self, options: Any) -> None:
        super().__init__()
        self.options = options
        self.dense = keras.layers.Dense(1)

    def call(self, x: Any) -> Any:
        return self.dense(x) * self.options.scale


def test_a_model_keras_cannot_save_trains_on_with_checkpoints_off(db_path: str) -> None:
    class Options:
        scale = 1.0

    def train(ctx: RunContext) -> dict[str, Any]:
        model = Scaled(Options())
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        callback = JobtrackCallback(ctx)
        history = model.fit(*data(64, 0), validation_data=data(16, 1), epochs=3, batch_size=32, verbose=0,
                            callbacks=[callback])
        return {"epochs": len(history.history["loss"]), "checkpoints": callback.checkpoints,
                "files": sorted(p.name for p in ctx.checkpoint_dir.iterdir())}

    job = Trainer(train, db=db_path, runner="eager").fit(DATASET)
    status = job.get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1, 2]
    assert status["result"]["summary"] == {"epochs": 3, "checkpoints": False, "files": []}  # no .partial-* left
    said = [line for line in job.log_path.read_text(encoding="utf-8").splitlines() if "not saved" in line]
    assert len(said) == 1 and "last.keras not saved, checkpoints off for this run: NotImplementedError" in said[0]


def test_eval_metric_val_loss_says_the_callback_reports_it_as_validation_loss(db_path: str) -> None:
    """Keras names it ``val_loss``; the callback reports it as ``validation.loss``, so ``eval_metric="val_loss"``
    found no best epoch, and the note did not say which name to choose instead."""
    job = Trainer(fit, db=db_path, runner="eager", eval_metric="val_loss", eval_mode="min").fit(DATASET)
    result = job.get_status()["result"]
    assert result["best_epoch"] is None
    assert "choose Trainer(eval_metric='loss')" in result["eval_metric_missing"]["note"]
    assert "choose Trainer(eval_metric='loss')" in job.log_path.read_text()


def test_a_second_fit_in_the_same_job_continues_the_epoch_numbers(db_path: str) -> None:
    """A second ``model.fit`` (fine-tuning after a frozen stage) counts from epoch 0 again: its epochs silently
    replaced the first fit's, leaving a mix of both runs."""
    def two_fits(ctx: RunContext) -> None:
        fit(ctx, epochs=3)
        fit(ctx, epochs=2)

    job = Trainer(two_fits, db=db_path, runner="eager").fit(DATASET)
    result = job.get_status()["result"]
    assert job.get_status()["status"] == "COMPLETED", result.get("error")
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3, 4]
    assert epochs[3]["train"] == epochs[0]["train"]  # the same seeded model again: its first epoch, kept apart
    assert "its epochs are reported as 3, 4, ..." in job.log_path.read_text()
