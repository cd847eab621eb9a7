"""What the framework callbacks share (#20): the run they report to, metric names sorted into training and
validation, values as plain numbers, cancel checks at step boundaries, and where checkpoints go.

No framework is imported here; each callback module adapts its framework's hooks to ``Reporter``.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrack.errors import InvalidArgument, JobCanceled, MissingExtra, StoreError
from jobtrack.results import VALIDATION_PREFIXES as VALIDATION_PREFIXES  # re-exported: the callbacks use it

if TYPE_CHECKING:
    from jobtrack.context import RunContext

log = logging.getLogger(__name__)

TRAIN_PREFIXES = ("train_", "train/")
"""Metric names that start with one of these are training metrics (the prefix is dropped); so are names
without any known prefix."""

MetricMapping = Mapping[str, "tuple[str, str] | None"]
"""``{framework name: (section, name)}`` with section ``"train"`` or ``"validation"``; None drops the metric."""

SECTIONS = ("train", "validation")


def require(module: str, extra: str, feature: str) -> Any:
    """Import ``module`` or raise ``MissingExtra`` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(extra, module.split(".")[0], feature) from exc


def resolve_run(ctx: RunContext | None, who: str) -> RunContext:
    """``ctx``, or the run of the ``jobtrack.track()`` block open in this thread.

    Raises:
        InvalidArgument: no ctx and no tracked run.
    """
    if ctx is not None:
        if not hasattr(ctx, "log_epoch") or not hasattr(ctx, "is_cancel_requested"):
            raise InvalidArgument(f"{who}(ctx) needs the RunContext your train function receives (or the run of "
                                  f"`with jobtrack.track() as run`), not {type(ctx).__name__}.")
        return ctx
    from jobtrack.tracking import active_run

    run = active_run()
    if run is None:
        raise InvalidArgument(f"{who}() needs a run: pass the RunContext of your train function, "
                              f"{who}(ctx), or create it inside `with jobtrack.track(...):`.")
    return run


def checkpoint_dir(ctx: RunContext) -> Path:
    """Where the job's checkpoints go: ``ctx.checkpoint_dir`` (kept across retries), else the model directory."""
    where = getattr(ctx, "checkpoint_dir", None)
    path = Path(where if where is not None else ctx.model_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def number(value: Any) -> float | int | None:
    """A metric value as a plain number: Python, NumPy and torch scalars and one-element tensors; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    item = getattr(value, "item", None)
    if not callable(item):
        return None
    try:
        got = item()  # a one-element tensor or array; raises for more elements
    except (TypeError, ValueError, RuntimeError):
        return None
    return got if isinstance(got, (int, float)) and not isinstance(got, bool) else None


class MetricRouter:
    """Sorts a framework's logged metrics into (train, validation) by name.

    Args:
        validation_prefixes: names starting with one of these are validation metrics (prefix dropped).
        train_prefixes: names starting with one of these are training metrics (prefix dropped).
        mapping: explicit ``{framework name: (section, name)}``, or None to drop a metric; wins over prefixes.
        skip: names never reported (run times, throughput, step counters).
        drop_suffixes: names ending with one of these are dropped; ``strip_suffixes`` are cut off names.
    """

    def __init__(self, *, validation_prefixes: Iterable[str] = VALIDATION_PREFIXES,
                 train_prefixes: Iterable[str] = TRAIN_PREFIXES, mapping: MetricMapping | None = None,
                 skip: Iterable[str] = (), drop_suffixes: Iterable[str] = (),
                 strip_suffixes: Iterable[str] = ()) -> None:
        self.validation_prefixes = _strings(validation_prefixes, "validation_prefixes")
        self.train_prefixes = _strings(train_prefixes, "train_prefixes")
        self.mapping = _check_mapping(mapping)
        self.skip = frozenset(skip)
        self.drop_suffixes = tuple(drop_suffixes)
        self.strip_suffixes = tuple(strip_suffixes)

    def route(self, name: str) -> tuple[str, str] | None:
        """(section, jobtrack name) of a framework metric name, or None to leave it out."""
        if name in self.mapping:
            return self.mapping[name]
        if name in self.skip or name.endswith(self.drop_suffixes):
            return None
        for suffix in self.strip_suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
        for section, prefixes in (("validation", self.validation_prefixes), ("train", self.train_prefixes)):
            for prefix in prefixes:
                if name.startswith(prefix) and len(name) > len(prefix):
                    return section, name[len(prefix):]
        return "train", name

    def split(self, metrics: Mapping[str, Any]) -> tuple[dict[str, float | int], dict[str, float | int]]:
        """(train, validation) metrics with plain-number values; what is no number is left out."""
        out: dict[str, dict[str, float | int]] = {"train": {}, "validation": {}}
        for name, value in metrics.items():
            target = self.route(str(name))
            value = number(value)
            if target is None or value is None:
                continue
            out[target[0]][target[1]] = value
        return out["train"], out["validation"]


_LAST_REPORTED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""The largest epoch the callbacks reported to each RunContext (one per job attempt)."""


AGREE_EVERY = 16
"""Steps between the ranks' agreements on a cancel in a multi-process run: an agreement is a collective and a
host sync, which at every step would stall a GPU's run-ahead; a cancel so stops every rank within 16 steps."""


class Reporter:
    """One callback's link to its run: reports epochs, notices a cancel (or a patience rule's stop) at step
    boundaries. It never ends the job itself: the framework stops, the training code returns, and the runner
    records CANCELED (a cancel requested while the code ran wins over COMPLETED, SPEC §5).

    In a run of several processes (DDP), the callback sets ``zero`` (whether this is the global rank zero) and
    ``agree`` (a function every rank calls with its flag at the same point, returning whether any rank's is
    True): only rank zero reads the job and reports epochs, and every rank stops at the same step.
    """

    def __init__(self, ctx: RunContext, router: MetricRouter) -> None:
        self.ctx = ctx
        self.router = router
        self.canceled = False
        self.should_stop = False  # the job's patience rule (Trainer(patience=N)) says stop
        self.offset = 0  # added to the framework's epoch numbers (see report)
        self.zero = True
        self.agree: Callable[[bool], bool] | None = None
        self._polls = 0

    def poll(self) -> bool:
        """Whether training should stop now (canceled, or early stopping said so); one cheap read. With several
        ranks, they agree every ``AGREE_EVERY`` steps (each counts its own, in step with the others)."""
        if not self.canceled:
            if self.agree is None:
                self.canceled = self._read_cancel()
            else:
                self._polls += 1
                if self._polls % AGREE_EVERY == 0:
                    self.canceled = self.agree(self.zero and self._read_cancel())
        return self.canceled or self.should_stop

    def _read_cancel(self) -> bool:
        try:
            return self.ctx.is_cancel_requested()
        except StoreError as exc:  # a read that failed now (a busy server): the next step asks again
            log.debug("job %s: cancel check failed: %s", self.ctx.job_id, exc)
            return False

    def report(self, epoch: int, train: Mapping[str, Any], validation: Mapping[str, Any]) -> bool:
        """``ctx.log_epoch`` once per epoch (on rank zero); returns whether training should stop. Nothing is
        reported after a cancel (the partial epoch a stop ends is not an epoch).

        A framework run that counts its epochs from 0 again after this attempt reported some (a second ``fit``
        to fine-tune, in the same job) continues the job's numbering rather than replacing the stored epochs.
        """
        if self.canceled:  # the same in every rank: agreed
            return True
        stop = canceled = False
        if self.zero:
            if train or validation:
                stop, canceled = self._log_epoch(int(epoch), train, validation)
            else:
                canceled = self._read_cancel()
        if self.agree is not None:  # the same calls in every rank, whatever each rank's metrics (rank_zero_only)
            stop, canceled = self.agree(stop), self.agree(canceled)
        self.should_stop = self.should_stop or stop
        self.canceled = self.canceled or canceled
        return self.canceled or self.should_stop

    def _log_epoch(self, epoch: int, train: Mapping[str, Any], validation: Mapping[str, Any]) -> tuple[bool, bool]:
        """(should stop, canceled) after reporting the epoch."""
        number = epoch + self.offset
        last = _LAST_REPORTED.get(self.ctx)
        if last is not None and number <= last:
            self.offset += last + 1 - number
            self.ctx.log(f"a new training run started at its epoch {epoch} after epoch {last} was reported: its "
                         f"epochs are reported as {last + 1}, {last + 2}, ... (the earlier ones are kept)")
            number = last + 1
        try:
            stop = self.ctx.log_epoch(number, train=dict(train), validation=dict(validation))
        except JobCanceled:
            return False, True
        _LAST_REPORTED[self.ctx] = number
        return bool(stop), False


def save_atomically(path: Path, write: Any) -> Path:
    """Call ``write(temp_path)``, then rename the file over ``path`` (a reader never sees half a checkpoint).

    A ``write`` that fails leaves no temp file behind: the error propagates, the previous checkpoint stays.
    """
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _strings(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise InvalidArgument(f"{what} must be a list of prefixes, not the string {values!r}; write ({values!r},).")
    out = tuple(values)
    if not all(isinstance(v, str) and v for v in out):
        raise InvalidArgument(f"{what} must hold non-empty strings, not {out!r}.")
    return out


def _check_mapping(mapping: MetricMapping | None) -> dict[str, tuple[str, str] | None]:
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise InvalidArgument(f"mapping must be a dict of metric name to (section, name) or None, "
                              f"not {type(mapping).__name__}.")
    out: dict[str, tuple[str, str] | None] = {}
    for key, target in mapping.items():
        if target is not None and not (isinstance(target, tuple) and len(target) == 2 and target[0] in SECTIONS
                                       and isinstance(target[1], str) and target[1]):
            raise InvalidArgument(f"mapping[{key!r}] must be ('train', name), ('validation', name) or None "
                                  f"(to leave the metric out), not {target!r}.")
        out[str(key)] = target
    return out
