"""An example user project: a linear house-price model trained by gradient descent, tracked by jobtrack.

Run it:  python house_model.py      (trains, predicts, prints where the predictions went)
Test it: pytest examples/           (see test_house_model.py: the jobtrack pytest plugin at work)
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from jobtrack import Dataset, RunContext, Trainer

FEATURES = ("rooms", "area", "age")


def make_houses(n: int, seed: int) -> list[dict[str, Any]]:
    """Generated houses: price is linear in the features plus noise."""
    rng = random.Random(seed)
    houses = []
    for i in range(n):
        rooms, area, age = rng.randint(1, 6), rng.uniform(0.3, 2.5), rng.uniform(0, 1)
        price = 0.5 * rooms + 2.0 * area - 1.0 * age + rng.gauss(0, 0.2)
        houses.append({"id": i, "rooms": rooms, "area": area, "age": age, "price": price})
    return houses


def make_dataset(seed: int = 0) -> Dataset:
    return Dataset("houses", "regression", "price", tables={
        "train": make_houses(200, seed), "validation": make_houses(60, seed + 1), "test": make_houses(40, seed + 2),
    })


def _predict_one(w: list[float], row: dict[str, Any]) -> float:
    return w[-1] + sum(wi * float(row[f]) for wi, f in zip(w[:-1], FEATURES, strict=True))  # w[-1]: the bias


def _rmse(w: list[float], rows: list[dict[str, Any]]) -> float:
    return math.sqrt(sum((_predict_one(w, r) - r["price"]) ** 2 for r in rows) / len(rows))


def train(ctx: RunContext) -> dict[str, Any]:
    """Gradient descent for ``epochs`` epochs; reports train and validation rmse each epoch."""
    lr = float(ctx.config.get("lr", 0.05))
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    rows, val = ctx.dataset.table("train"), ctx.dataset.table("validation")
    w = [0.0] * (len(FEATURES) + 1)
    for epoch in range(1, int(ctx.config.get("epochs", 20)) + 1):
        for r in rows:
            err = _predict_one(w, r) - r["price"]
            w = [wi - lr * err * float(r[f]) for wi, f in zip(w[:-1], FEATURES, strict=True)] + [w[-1] - lr * err]
        ctx.log_epoch(epoch, train={"rmse": _rmse(w, rows)}, validation={"rmse": _rmse(w, val)})
    (ctx.model_dir / "weights.json").write_text(json.dumps(w))
    return {"weights": w}


def predict(ctx: RunContext) -> dict[str, Any]:
    """Price every test house with the saved weights and export the predictions."""
    w = json.loads((ctx.model_dir / "weights.json").read_text())
    rows = ctx.dataset.table("test")
    ctx.export("predictions", [{"id": r["id"], "price": _predict_one(w, r)} for r in rows])
    return {"rows": len(rows)}


if __name__ == "__main__":
    trainer = Trainer(train, predict, config={"epochs": 15})
    job = trainer.fit(make_dataset())
    final = job.wait()
    print(final["status"], "best epoch", final["result"]["best_epoch"], "rmse", final["result"]["best_metric"])
    # an output alias names one job's exports for good: each run gets its own (a fixed one would be refused
    # the second time with DuplicateName)
    pred = trainer.predict(f"house_prices_{job.model_run_id}", model_run_id=job.model_run_id).wait()
    print(pred["status"], pred["export_paths"])
