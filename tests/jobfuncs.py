"""Importable job functions for the trainer, export, cancel and worker tests.

They live in a module (not in test files) so that every runner can use them: the process runner,
``jobtrack worker`` in a child process (children get ``tests/`` on PYTHONPATH), and ``function_ref``
checks that import them back. Behaviour is driven by ``ctx.config`` so one function serves many tests.
At the end: ``check_predictions``, the check of a ``demo.predict`` export shared by the runner tests.
"""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path
from typing import Any

from jobtrack import testing
from jobtrack.context import RunContext
from jobtrack.monitor import JobMonitor

RMSE_CURVE = ((5, 3.0), (10, 1.0), (15, 2.0))
"""(epoch, validation rmse) reported by ``train_rmse``: the best (smallest) is the reported epoch 10."""


def _mark(ctx: RunContext) -> None:
    """Leave a file named after the job in ``config["marker_dir"]``: proof that the code ran."""
    marker_dir = ctx.config.get("marker_dir")
    if marker_dir:
        Path(marker_dir, ctx.job_id).write_text(ctx.phase, encoding="utf-8")


def train_rmse(ctx: RunContext) -> dict[str, Any]:
    """Regression training that reports a fixed rmse curve (and a train loss that always falls)."""
    _mark(ctx)
    for epoch, rmse in RMSE_CURVE:
        ctx.log_epoch(epoch, train={"rmse": 10.0 - epoch}, validation={"rmse": rmse})
    return {"curve": [rmse for _, rmse in RMSE_CURVE]}


def train_curve(ctx: RunContext) -> dict[str, Any]:
    """Report ``config["curve"]`` ([[epoch, value], ...]) as the dataset's eval metric on validation."""
    metric = ctx.dataset.eval_metric
    for epoch, value in ctx.config["curve"]:
        ctx.log_epoch(int(epoch), train={metric: value, "loss": 1.0}, validation={metric: value})
    return {"metric": metric}


def train_noop(ctx: RunContext) -> dict[str, Any]:
    """Training that reports one epoch and saves a marker model file."""
    _mark(ctx)
    ctx.log_epoch(1, train={"loss": 1.0}, validation={"loss": 1.0})
    (ctx.model_dir / "model.txt").write_text("noop", encoding="utf-8")
    return {"ok": True}


def predict_rows(ctx: RunContext) -> dict[str, Any]:
    """Export ``config["rows"]`` as predictions (and embeddings from ``config["embeddings"]``)."""
    _mark(ctx)
    ctx.export("predictions", ctx.config["rows"])
    if "embeddings" in ctx.config:
        path = ctx.export("embeddings", ctx.config["embeddings"])
        ctx.log(f"embeddings export returned {path}")
    return {"exported": len(ctx.config["rows"])}


def predict_test_table(ctx: RunContext) -> dict[str, Any]:
    """Export the test table's ids with a constant score (the rows are then known to the test)."""
    rows = ctx.dataset.table("test")
    ctx.export("predictions", [{"id": r["id"], "score": 0.5} for r in rows])
    return {"rows": len(rows)}


def train_raise(ctx: RunContext) -> None:
    """Report ``config["epochs_before"]`` epochs (default 2), then raise ValueError."""
    n = int(ctx.config.get("epochs_before", 2))
    for epoch in range(1, n + 1):
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
    raise ValueError(f"broken after {n} epochs")


MAX_EPOCHS = 2000
"""Default bound of the looping functions (seconds at their pause), so a test that fails before it
cancels a job cannot keep pytest waiting for a runner thread at exit for long."""


def train_slow(ctx: RunContext) -> dict[str, Any]:
    """Leave a marker, then report epochs with a pause until canceled (or ``config["epochs"]`` run out)."""
    _mark(ctx)
    pause = float(ctx.config.get("pause_s", 0.01))
    for epoch in range(1, int(ctx.config.get("epochs", MAX_EPOCHS)) + 1):
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
        time.sleep(pause)
    return {"finished": True}


def train_swallow(ctx: RunContext) -> dict[str, Any]:
    """Training code that wraps reporting in ``except Exception`` (a cancel must still get through).

    On the way out, however it leaves, it writes ``swallowed=<n>`` to ``config["marker_dir"]/<job id>``.
    """
    swallowed = 0
    try:
        for epoch in range(1, MAX_EPOCHS + 1):
            try:
                ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
            except Exception:  # noqa: BLE001 - the point of the test: this must not swallow a cancel
                swallowed += 1
            time.sleep(0.005)
    finally:
        marker_dir = ctx.config.get("marker_dir")
        if marker_dir:  # written whole, then renamed: a reader never sees it half-written
            marker = Path(marker_dir, ctx.job_id)
            marker.with_suffix(".tmp").write_text(f"swallowed={swallowed}", encoding="utf-8")
            os.replace(marker.with_suffix(".tmp"), marker)
    return {"swallowed": swallowed}


def train_until_released(ctx: RunContext) -> dict[str, Any]:
    """Report epochs until the file ``config["release"]`` exists, then return (fails after 20 s)."""
    release = Path(ctx.config["release"])
    deadline = time.monotonic() + 20
    epoch = 0
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} was never created")
        epoch += 1
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
        time.sleep(0.01)
    return {"epochs": epoch}


def train_interrupt(ctx: RunContext) -> None:
    """Report one epoch, then raise ``KeyboardInterrupt`` from the code itself (no signal: a library's own raise)."""
    ctx.log_epoch(1, train={"loss": 1.0})
    raise KeyboardInterrupt


def train_exit(ctx: RunContext) -> None:
    """Report one epoch, then end the process with ``os._exit(config["code"])`` (default 7)."""
    ctx.log_epoch(1, train={"loss": 1.0})
    os._exit(int(ctx.config.get("code", 7)))


def train_sigkill(ctx: RunContext) -> None:
    """Report one epoch, then SIGKILL the process running the code."""
    ctx.log_epoch(1, train={"loss": 1.0})
    os.kill(os.getpid(), signal.SIGKILL)


def train_oom_at_512(ctx: RunContext) -> dict[str, Any]:
    """A sweep trial whose process the OOM killer ends (SIGKILL) when ``config["bs"] == 512``; others score bs/1000."""
    if ctx.config["bs"] == 512:
        os.kill(os.getpid(), signal.SIGKILL)
    ctx.log_epoch(0, validation={"roc_auc": ctx.config["bs"] / 1000})
    return {}


# -- checks ----------------------------------------------------------------------------------------


def check_predictions(monitor: JobMonitor, test_rows: list[dict[str, Any]]) -> list[float]:
    """Assert a completed ``demo.predict`` export and return its probabilities.

    The export is a CSV file at an absolute path with columns ``id, probability``: one probability in
    [0, 1] per test row, in the test table's order; the job's source view returns the same rows.
    """
    status = monitor.get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    path = Path(status["export_paths"]["predictions"])
    assert path.is_absolute() and path.suffix == ".csv"
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        from_file = [(int(r["id"]), float(r["probability"])) for r in reader]
        assert reader.fieldnames == ["id", "probability"]
    assert [i for i, _ in from_file] == [r["id"] for r in test_rows]
    assert all(0.0 <= p <= 1.0 for _, p in from_file)
    assert [(r["id"], r["probability"]) for r in testing.exported_rows(monitor)] == from_file
    return [p for _, p in from_file]
