"""Keras 3: ``model.fit(..., callbacks=[JobtrackCallback(ctx)])`` reports each epoch to the job (#20).

Needs ``pip install 'jobtrack[keras]'`` and a backend (``KERAS_BACKEND=torch`` with PyTorch installed, or
JAX or TensorFlow). The ``logs`` of each epoch go to ``ctx.log_epoch``: ``val_*`` as validation metrics
without the prefix, the others as training metrics. A cancel (or the job's patience rule) sets
``model.stop_training`` at the next batch. After each reported epoch the model is saved as
``last.keras`` in the job's checkpoint directory (``checkpoints=False`` turns that off; a model Keras
cannot save, e.g. a subclassed one without ``get_config()``, turns it off with a line in the job's log).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrack.integrations._common import (
    TRAIN_PREFIXES,
    VALIDATION_PREFIXES,
    MetricMapping,
    MetricRouter,
    Reporter,
    checkpoint_dir,
    require,
    resolve_run,
    save_atomically,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from jobtrack.context import RunContext

_keras = require("keras", "keras", "jobtrack.integrations.keras")

CHECKPOINT_NAME = "last.keras"
"""The file the callback saves the model to after each epoch, in the job's checkpoint directory."""


_Callback: Any = _keras.callbacks.Callback  # the framework is untyped here: it is an optional extra


class JobtrackCallback(_Callback):  # type: ignore[misc]
    """Report a Keras ``fit`` to its jobtrack job: epochs, cancel, the last model as a checkpoint.

    Args:
        ctx: the RunContext of the train function (or of ``jobtrack.track()``; default: the open one).
        mapping: ``{logged name: ("train" | "validation", name)}`` or None to drop it; wins over prefixes.
        validation_prefixes, train_prefixes: how names are sorted when ``mapping`` does not say.
        checkpoints: save the model as ``last.keras`` in the job's checkpoint directory after each epoch.
    """

    def __init__(self, ctx: RunContext | None = None, *, mapping: MetricMapping | None = None,
                 validation_prefixes: Iterable[str] = VALIDATION_PREFIXES,
                 train_prefixes: Iterable[str] = TRAIN_PREFIXES, checkpoints: bool = True) -> None:
        super().__init__()
        router = MetricRouter(validation_prefixes=validation_prefixes, train_prefixes=train_prefixes,
                              mapping=mapping)
        self.reporter = Reporter(resolve_run(ctx, "JobtrackCallback"), router)
        self.checkpoints = checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        """Where this job's checkpoints go."""
        return checkpoint_dir(self.reporter.ctx)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.reporter.poll():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.reporter.canceled:
            return  # the epoch a cancel cut short is not reported, nor saved
        train, validation = self.reporter.router.split(logs or {})
        stop = self.reporter.report(epoch, train, validation)
        if self.checkpoints and not self.reporter.canceled:
            self._save_checkpoint()
        if stop:
            self.model.stop_training = True

    def _save_checkpoint(self) -> None:
        """Save ``last.keras``; a model Keras cannot save (a subclassed one without ``get_config()``) turns the
        checkpoints off for the run, with one log line, rather than failing a job whose training is fine."""
        try:
            save_atomically(self.checkpoint_dir / CHECKPOINT_NAME, self.model.save)
        except Exception as exc:  # noqa: BLE001 - Keras raises NotImplementedError, TypeError, ValueError, ...
            self.checkpoints = False
            why = " ".join(str(exc).split())  # Keras spreads its messages over several lines
            self.reporter.ctx.log(f"keras: {CHECKPOINT_NAME} not saved, checkpoints off for this run: "
                                  f"{type(exc).__name__}: {why[:300]}")
