"""A small real model for the demo and the tests: logistic regression by gradient descent, pure Python.

The functions are importable (``jobtrack.demo:train``), so every runner, ``jobtrack worker`` included, can run them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from pathlib import Path
from typing import Any

from jobtrack.config import make_private_dir
from jobtrack.context import RunContext

FEATURES = ("x1", "x2", "x3")


def make_rows(n: int, *, seed: int) -> list[dict[str, Any]]:
    """Generated binary-classification rows: three features, a noisy linear label, an id."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        x = [rng.gauss(0, 1) for _ in FEATURES]
        logit = 1.0 * x[0] - 0.8 * x[1] + 0.3 * x[2] + rng.gauss(0, 1.2)
        rows.append({"id": i, **dict(zip(FEATURES, x, strict=True)), "label": int(logit > 0)})
    return rows


def write_csv_tables(directory: str | Path, *, seed: int = 7, n: int = 300) -> dict[str, str]:
    """Write train/validation/test CSV files for the demo dataset; returns split → path.

    The files are private to the user (0600) and so is every folder created for them (0700), whatever
    the umask (#13).
    """
    directory = make_private_dir(Path(directory))
    paths = {}
    for k, split in enumerate(("train", "validation", "test")):
        rows = make_rows(n if split == "train" else n // 3, seed=seed + k)
        path = directory / f"{split}.csv"
        with open(_private(path), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        paths[split] = str(path)
    return paths


def _private(path: Path) -> int:
    """A descriptor of ``path`` opened for writing from scratch, private to the user (0600) whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def roc_auc(labels: list[int], scores: list[float]) -> float:
    """Area under the ROC curve by the rank statistic (ties count half)."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    if not pos or not neg:
        return 0.5
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def _score(w: list[float], row: dict[str, Any]) -> float:
    return _sigmoid(w[-1] + sum(wi * float(row[f]) for wi, f in zip(w, FEATURES, strict=False)))  # w[-1]: the bias


def _log_loss(w: list[float], rows: list[dict[str, Any]]) -> float:
    eps = 1e-12
    return -sum(
        int(r["label"]) * math.log(_score(w, r) + eps) + (1 - int(r["label"])) * math.log(1 - _score(w, r) + eps)
        for r in rows
    ) / len(rows)


def train(ctx: RunContext) -> dict[str, Any]:
    """Fit the model (``config["lr"]``, ``config["l2"]``) for ``Trainer(n_epochs=)`` or ``config["epochs"]``
    epochs, reporting loss and roc_auc (validation every ``eval_every`` epochs); stop early when ``patience``
    says so; save the weights."""
    rows = ctx.dataset.table("train")
    val = ctx.dataset.table("validation") if ctx.dataset.has_table("validation") else rows
    epochs = ctx.n_epochs or int(ctx.config.get("epochs", 8))
    lr = float(ctx.config.get("lr", 0.3))
    l2 = float(ctx.config.get("l2", 0.0))  # L2 regularisation of the weights (not the bias), for sweeps (#17)
    if ctx.config.get("fail_at_epoch") is not None and epochs <= int(ctx.config["fail_at_epoch"]):
        raise ValueError("fail_at_epoch must be below epochs")
    init = random.Random(int(ctx.config.get("seed", 0)))
    w = [init.uniform(-1, 1) for _ in range(len(FEATURES) + 1)]  # a random start, so the curves move
    for epoch in range(1, epochs + 1):
        if ctx.config.get("fail_at_epoch") == epoch:
            raise RuntimeError(f"simulated failure at epoch {epoch}")
        grad = [0.0] * len(w)
        for r in rows:
            err = _score(w, r) - int(r["label"])
            for j, f in enumerate(FEATURES):
                grad[j] += err * float(r[f])
            grad[-1] += err
        w = [wi - lr * (g / len(rows) + (l2 * wi if j < len(FEATURES) else 0.0))
             for j, (wi, g) in enumerate(zip(w, grad, strict=True))]
        auc = roc_auc([int(r["label"]) for r in val], [_score(w, r) for r in val])
        train_auc = roc_auc([int(r["label"]) for r in rows], [_score(w, r) for r in rows])
        validation = {"loss": _log_loss(w, val), "roc_auc": auc} if ctx.should_evaluate(epoch) else None
        stop = ctx.log_epoch(epoch, train={"loss": _log_loss(w, rows), "roc_auc": train_auc}, validation=validation)
        ctx.log(f"epoch {epoch}: validation roc_auc={auc:.4f}")
        if ctx.config.get("epoch_pause_s"):
            import time

            time.sleep(float(ctx.config["epoch_pause_s"]))  # lets tests and the demo cancel mid-training
        if stop:  # early stopping (Trainer(patience=...)): the loop decides, and it ends here
            break
    with open(_private(ctx.model_dir / "weights.json"), "w", encoding="utf-8") as fh:
        fh.write(json.dumps(w))
    return {"weights": w, "train_rows": len(rows)}


def predict(ctx: RunContext) -> dict[str, Any]:
    """Score the test table with the saved weights; export probabilities (and embeddings if asked)."""
    w = json.loads((ctx.model_dir / "weights.json").read_text(encoding="utf-8"))
    rows = ctx.dataset.table("test")
    predictions: list[dict[str, Any]] = []
    for batch in ctx.batches(rows):  # test_batch_size rows at a time, as a real model would score them
        predictions.extend({"id": r["id"], "probability": _score(w, r)} for r in batch)
    ctx.export("predictions", predictions)
    ctx.export("embeddings", [{"id": r["id"],
                               "embedding": [wi * float(r[f]) for wi, f in zip(w, FEATURES, strict=False)]}
                              for r in rows])
    labels = [int(r["label"]) for r in rows if "label" in r]
    summary: dict[str, Any] = {"rows": len(rows)}
    if len(labels) == len(rows):
        summary["test_roc_auc"] = roc_auc(labels, [_score(w, r) for r in rows])
    return summary
