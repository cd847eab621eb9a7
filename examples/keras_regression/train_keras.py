"""A Keras 3 project (PyTorch backend) tracked by jobtrack: a small regressor on data it makes itself (#20).

Run it:  python examples/keras_regression/train_keras.py [DB]   (needs `pip install 'jobtrack[keras]' torch`)

The jobtrack lines are marked ``# jobtrack``. ``val_rmse`` reaches the job as ``validation.rmse``, the
regression task's metric; the model after each epoch is saved as ``last.keras`` in the job's checkpoints.
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras
import numpy as np

from jobtrack import Dataset, RunContext, Trainer
from jobtrack.integrations.keras import JobtrackCallback  # jobtrack


def make_data(n: int, seed: int) -> tuple[Any, Any]:
    """``y = x @ w + noise``, made here: no download."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([1.0, 2.0, -1.0, 0.5], dtype="float32") + 0.1 * rng.normal(size=n)).astype("float32")
    return x, y


def train(ctx: RunContext) -> dict[str, Any]:
    keras.utils.set_random_seed(0)
    x, y = make_data(512, 0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(float(ctx.config.get("lr", 0.05))), loss="mse",
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    history = model.fit(x, y, validation_data=make_data(128, 1), epochs=int(ctx.config.get("epochs", 5)),
                        batch_size=32, verbose=0, callbacks=[JobtrackCallback(ctx)])  # jobtrack
    return {"epochs": len(history.history["loss"])}


def main(db: str | None = None) -> str:
    dataset = Dataset("synthetic", "regression", "linear", tables={"train": [{"rows": 512}]})
    job = Trainer(train, config={"epochs": 5}, db=db, runner="eager").fit(dataset)  # jobtrack
    status = job.get_status()
    print(status["job_id"], status["status"], "best epoch", status["result"].get("best_epoch"),
          "rmse", status["result"].get("best_metric"))
    return status["status"]


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1] if len(sys.argv) > 1 else None) == "COMPLETED" else 1)
