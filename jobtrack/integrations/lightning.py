"""PyTorch Lightning: ``pl.Trainer(callbacks=[JobtrackCallback(ctx)])`` reports each epoch to the job (#20).

Needs ``pip install 'jobtrack[lightning]'`` (the ``lightning`` package; the older ``pytorch_lightning`` works
too). At each training epoch's end, what the module logged with ``self.log`` (``trainer.callback_metrics``)
goes to ``ctx.log_epoch``: names starting with ``val_`` (or ``val/``, ``valid_``, ...) as validation metrics
without the prefix, the others as training metrics (``train_`` dropped, ``*_step`` values left out,
``*_epoch`` cut). A cancel (or the job's patience rule) sets ``trainer.should_stop`` at the next batch;
``ModelCheckpoint`` callbacks without a ``dirpath`` save under the job's checkpoint directory. With several
processes (``strategy="ddp"``, ``"ddp_fork"``), rank zero reports and all ranks stop at the same step.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobtrack.errors import MissingExtra
from jobtrack.integrations._common import (
    TRAIN_PREFIXES,
    VALIDATION_PREFIXES,
    MetricMapping,
    MetricRouter,
    Reporter,
    checkpoint_dir,
    resolve_run,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from jobtrack.context import RunContext


def _lightning() -> Any:
    """``lightning.pytorch``, else the standalone ``pytorch_lightning``."""
    try:
        return importlib.import_module("lightning.pytorch")
    except ImportError:
        pass
    try:
        return importlib.import_module("pytorch_lightning")
    except ImportError:
        raise MissingExtra("lightning", "lightning", "jobtrack.integrations.lightning") from None


pl = _lightning()

SKIP = ("epoch", "step")
"""Lightning's own counters, which are not metrics."""


_Callback: Any = pl.Callback  # the framework is untyped here: it is an optional extra


class JobtrackCallback(_Callback):  # type: ignore[misc]
    """Report a Lightning run to its jobtrack job: epochs, cancel, checkpoint location.

    Args:
        ctx: the RunContext of the train function (or of ``jobtrack.track()``; default: the open one).
        mapping: ``{logged name: ("train" | "validation", name)}`` or None to drop it; wins over prefixes.
        validation_prefixes, train_prefixes: how names are sorted when ``mapping`` does not say.
        checkpoints: point ``ModelCheckpoint`` callbacks that have no ``dirpath`` at the job's checkpoint directory.
    """

    def __init__(self, ctx: RunContext | None = None, *, mapping: MetricMapping | None = None,
                 validation_prefixes: Iterable[str] = VALIDATION_PREFIXES,
                 train_prefixes: Iterable[str] = TRAIN_PREFIXES, checkpoints: bool = True) -> None:
        super().__init__()
        router = MetricRouter(validation_prefixes=validation_prefixes, train_prefixes=train_prefixes,
                              mapping=mapping, skip=SKIP, drop_suffixes=("_step",), strip_suffixes=("_epoch",))
        self.reporter = Reporter(resolve_run(ctx, "JobtrackCallback"), router)
        self.checkpoints = checkpoints
        self._validation: dict[str, float | int] = {}

    @property
    def checkpoint_dir(self) -> Path:
        """Where this job's checkpoints go."""
        return checkpoint_dir(self.reporter.ctx)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # In each rank's process (DDP): rank zero reports, and every rank stops at the same step
        self.reporter.zero = bool(trainer.is_global_zero)
        self.reporter.agree = (lambda flag: bool(trainer.strategy.reduce_boolean_decision(flag, all=False))) \
            if trainer.world_size > 1 else None
        # ModelCheckpoint callbacks run after the others (Lightning moves them last), so their setup,
        # which resolves a missing dirpath from the loggers or default_root_dir, sees this one.
        if self.checkpoints and stage == "fit":
            for cb in trainer.checkpoint_callbacks:
                if getattr(cb, "dirpath", "set") is None:
                    cb.dirpath = str(self.checkpoint_dir)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.reporter.poll():
            trainer.should_stop = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # After the loop, when its epoch values are computed; kept for this training epoch's report
        # (validation runs before on_train_epoch_end). The sanity check before training is no epoch.
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not trainer.validate()
            return
        self._validation = self.reporter.router.split(trainer.callback_metrics)[1]

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        train, _stale = self.reporter.router.split(trainer.callback_metrics)  # validation: this epoch's only
        validation, self._validation = self._validation, {}
        if self.reporter.report(trainer.current_epoch, train, validation):
            trainer.should_stop = True
