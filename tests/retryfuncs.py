"""Importable job functions for the retry tests (#18): training that checkpoints and resumes.

Children (the process runner's, ``jobtrack worker``s) import them by name; tests/ is on their
PYTHONPATH. Each one leaves marker files in ``config["dir"]`` so a test can follow it from outside:
``a<attempt>-e<epoch>`` (holding the pid of the process that reports it) before each epoch is
reported, ``start-a<attempt>`` (holding ``resume_epoch`` and the checkpoint found), and
``fenced-a<attempt>`` when a report is refused because another runner holds the job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from jobtrack import RunnerFenced
from jobtrack.context import RunContext

HOLD_S = 30.0
"""Longest a held epoch waits for its release file (a failing test must not hang its worker for ever)."""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def train_resumable(ctx: RunContext) -> dict[str, Any]:
    """Train ``config["epochs"]`` epochs (default 10), resuming after the last stored one, checkpointing each.

    ``config["hold"]`` ({"<attempt>": epoch}): before reporting that epoch in that attempt, wait for the
    file ``release-a<attempt>`` in ``config["dir"]``. ``config["fail"]`` (a list of attempts): raise
    ValueError in those attempts after their first epoch; ``config["fail_fresh"]``: the same in an attempt
    that found no checkpoint. ``config["from_scratch"]``: every attempt starts at epoch 0 (reports again).
    """
    folder = Path(ctx.config["dir"])
    start = 0 if ctx.config.get("from_scratch") else ctx.resume_epoch or 0
    found = ctx.latest_checkpoint()
    restored = found.read_text(encoding="utf-8") if found else ""
    _write(folder / f"start-a{ctx.attempt}", f"{ctx.resume_epoch} {restored}")
    hold = {int(k): int(v) for k, v in (ctx.config.get("hold") or {}).items()}
    for epoch in range(start, int(ctx.config.get("epochs", 10))):
        _write(folder / f"a{ctx.attempt}-e{epoch}", str(os.getpid()))
        if hold.get(ctx.attempt) == epoch:
            deadline = time.monotonic() + HOLD_S
            while not (folder / f"release-a{ctx.attempt}").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        try:
            ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1), "attempt": ctx.attempt})
        except RunnerFenced:
            _write(folder / f"fenced-a{ctx.attempt}", str(epoch))
            raise
        ctx.save_checkpoint(str(epoch).encode())
        fails = ctx.attempt in (ctx.config.get("fail") or ()) or (ctx.config.get("fail_fresh") and not found)
        if fails and epoch == start:
            raise ValueError(f"attempt {ctx.attempt} failed at epoch {epoch}")
        time.sleep(float(ctx.config.get("pause_s", 0.0)))
    return {"attempt": ctx.attempt, "resume_epoch": ctx.resume_epoch, "restored": restored}


PATIENCE_RMSE = [1.0, 0.8, 0.6, 0.7, 0.75, 0.72, 0.71, 0.74, 0.73, 0.76, 0.77, 0.78]
"""Validation rmse per epoch: best at epoch 2, so ``patience=3`` says stop at epoch 5."""


def train_patience(ctx: RunContext) -> dict[str, Any]:
    """Report ``PATIENCE_RMSE`` from ``resume_epoch`` until ``log_epoch`` says stop; attempt 1 SIGKILLs its own
    process after epoch ``config["kill_after"]`` (None: never), so attempt 2 resumes with a fresh context."""
    import signal

    for epoch in range(ctx.resume_epoch or 0, len(PATIENCE_RMSE)):
        if ctx.log_epoch(epoch, validation={"rmse": PATIENCE_RMSE[epoch]}):
            return {"stopped_at": epoch, "attempt": ctx.attempt}
        if ctx.attempt == 1 and epoch == ctx.config.get("kill_after"):
            os.kill(os.getpid(), signal.SIGKILL)
    return {"stopped_at": None, "attempt": ctx.attempt}


def train_checking_should_stop_first(ctx: RunContext) -> dict[str, Any]:
    """As ``train_patience``, but the loop asks ``ctx.should_stop`` before each epoch and reports on regardless;
    attempt 1 SIGKILLs its own process after epoch ``config["kill_after"]``."""
    import signal

    for epoch in range(ctx.resume_epoch or 0, len(PATIENCE_RMSE)):
        if ctx.should_stop:
            return {"stopped_before": epoch, "attempt": ctx.attempt}
        ctx.log_epoch(epoch, validation={"rmse": PATIENCE_RMSE[epoch]})
        if ctx.attempt == 1 and epoch == ctx.config.get("kill_after"):
            os.kill(os.getpid(), signal.SIGKILL)
    return {"stopped_before": None, "attempt": ctx.attempt}


def train_saving_like_a_framework(ctx: RunContext) -> dict[str, Any]:
    """Save into ``ctx.checkpoint_dir`` as the framework callbacks do (no ``save_checkpoint()``, so no LATEST):
    an old ``last.ckpt``, a newer ``checkpoint-2`` folder, a hidden temp file and a logger's folder; fail in an
    attempt that found no checkpoint. Writes ``found-<job id>`` (what ``latest_checkpoint()`` found at the start) and
    ``saved-<job id>`` (what it finds after saving) in ``config["dir"]``."""
    folder = Path(ctx.config["dir"])
    found = ctx.latest_checkpoint()
    _write(folder / f"found-{ctx.job_id}", found.name if found else "")
    if found is not None:
        return {"resumed_from": found.name, "is_dir": found.is_dir()}
    target = ctx.checkpoint_dir
    (target / "last.ckpt").write_bytes(b"1")
    os.utime(target / "last.ckpt", ns=(10**18, 10**18))  # older than the folder below
    (target / "checkpoint-2").mkdir()
    (target / "checkpoint-2" / "model.bin").write_bytes(b"2")
    os.utime(target / "checkpoint-2", ns=(2 * 10**18, 2 * 10**18))
    (target / ".partial-1-last.keras").write_bytes(b"")  # a framework's temp file: never a checkpoint
    os.utime(target / ".partial-1-last.keras", ns=(3 * 10**18, 3 * 10**18))
    (target / "lightning_logs").mkdir()  # a logger's folder: never a checkpoint either
    os.utime(target / "lightning_logs", ns=(3 * 10**18, 3 * 10**18))
    saved = ctx.latest_checkpoint()
    _write(folder / f"saved-{ctx.job_id}", saved.name if saved else "")
    ctx.log_epoch(0, train={"loss": 1.0})
    raise ValueError("no checkpoint to start from")
