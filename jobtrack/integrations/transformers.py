"""Hugging Face Transformers: ``Trainer(..., callbacks=[JobtrackCallback(ctx)])`` reports each epoch (#20).

Needs ``pip install 'jobtrack[transformers]'``. The training losses the Trainer logs (``on_log``: ``loss``,
``grad_norm``, ``learning_rate``) are the epoch's training metrics, the latest values of the epoch; what
evaluation returns (``on_evaluate``: ``eval_*``) its validation metrics without the prefix, run times and
throughput left out. An epoch is reported once its evaluation ran (``eval_strategy="epoch"``), else when the
next epoch starts or training ends. A cancel (or the job's patience rule) sets
``control.should_training_stop`` at the next step. With no ``output_dir`` of its own (the library's
default), checkpoints go to the job's checkpoint directory, unless several processes run (``torchrun``): every
rank then writes its part where the library chose. Rank zero reports, and all ranks stop at the same step.
"""

from __future__ import annotations

import contextlib
import os
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
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from jobtrack.context import RunContext

_transformers = require("transformers", "transformers", "jobtrack.integrations.transformers")

SKIP = ("epoch", "step", "total_flos", "num_input_tokens_seen")
"""Counters the Trainer logs that are not metrics."""

DROP_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_tokens_per_second")
"""Timings and throughput (``eval_runtime``, ``train_samples_per_second``, ...): not metrics of the model."""

DEFAULT_OUTPUT_DIRS = ("trainer_output", "tmp_trainer")
"""``output_dir`` values the library picks when none is given: checkpoints then go to the job's directory."""


_Callback: Any = _transformers.TrainerCallback  # the framework is untyped here: it is an optional extra


class JobtrackCallback(_Callback):  # type: ignore[misc]
    """Report a Transformers ``Trainer`` run to its jobtrack job: epochs, cancel, checkpoint location.

    Args:
        ctx: the RunContext of the train function (or of ``jobtrack.track()``; default: the open one).
        mapping: ``{logged name: ("train" | "validation", name)}`` or None to drop it; wins over prefixes.
        validation_prefixes, train_prefixes: how names are sorted when ``mapping`` does not say.
        checkpoints: with the library's default ``output_dir``, save checkpoints under the job instead.
    """

    def __init__(self, ctx: RunContext | None = None, *, mapping: MetricMapping | None = None,
                 validation_prefixes: Iterable[str] = VALIDATION_PREFIXES,
                 train_prefixes: Iterable[str] = TRAIN_PREFIXES, checkpoints: bool = True) -> None:
        router = MetricRouter(validation_prefixes=validation_prefixes, train_prefixes=train_prefixes,
                              mapping=mapping, skip=SKIP, drop_suffixes=DROP_SUFFIXES)
        self.reporter = Reporter(resolve_run(ctx, "JobtrackCallback"), router)
        self.checkpoints = checkpoints
        self._epoch = 0
        self._pending: int | None = None  # an epoch that ended and is not reported yet
        self._train: dict[str, float | int] = {}
        self._validation: dict[str, float | int] = {}

    @property
    def checkpoint_dir(self) -> Path:
        """Where this job's checkpoints go."""
        return checkpoint_dir(self.reporter.ctx)

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # not with several ranks: each writes its part of a checkpoint (rng states, shards) where the others do
        if self.checkpoints and args.output_dir in DEFAULT_OUTPUT_DIRS and args.world_size <= 1:
            default = args.output_dir
            args.output_dir = str(self.checkpoint_dir)
            with contextlib.suppress(OSError):  # the Trainer made the default folder already; empty, it goes
                os.rmdir(default)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # What an evaluate() before train() measured (a baseline of the untrained model) is no epoch's validation.
        self._pending = None
        self._train, self._validation = {}, {}
        # In each rank's process (torchrun): rank zero reports, and every rank stops at the same step
        self.reporter.zero = bool(state.is_world_process_zero)
        self.reporter.agree = _any_rank(args.device) if args.world_size > 1 else None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush(control)
        self._epoch = int(state.epoch or 0)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reporter.poll():
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not logs or any(k.endswith("_runtime") for k in logs):  # the end-of-training summary, or an evaluation's
            return
        train, validation = self.reporter.router.split(logs)
        self._train.update(train)
        self._validation.update(validation)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> None:
        self._validation.update(self.reporter.router.split(metrics or {})[1])
        if self._pending is not None:
            self._flush(control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pending = self._epoch
        if self.reporter.canceled:  # stop now: no evaluation or checkpoint of the cut epoch
            control.should_evaluate = control.should_save = False
        elif not control.should_evaluate:
            return  # reported when the next epoch starts (after this one's last training log) or training ends
        # else: reported by on_evaluate, which follows

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush(control)

    def _flush(self, control: Any) -> None:
        if self._pending is None:
            return
        epoch, self._pending = self._pending, None
        train, validation = self._train, self._validation
        self._train, self._validation = {}, {}
        if self.reporter.report(epoch, train, validation):
            control.should_training_stop = True


def _any_rank(device: Any) -> Any:
    """A function every rank calls with its flag at the same point: whether any rank's flag is True."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None

    def agree(flag: bool) -> bool:
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    return agree
