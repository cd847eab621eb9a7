"""The ``result`` dict of SPEC §6, composed from stored pieces; pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def best_epoch(
    epochs: Iterable[Mapping[str, Any]], metric: str | None, mode: str | None
) -> tuple[Any, Any]:
    """(epoch number, value) of the best reported value of metric, validation first, else training.

    Epochs without the metric (or with None for a non-finite value) are skipped; ties keep the earliest.
    """
    if not metric:
        return None, None
    best: tuple[Any, Any] = (None, None)
    for section in ("validation", "train"):
        for ep in epochs:
            value = (ep.get(section) or {}).get(metric)
            if value is None:
                continue
            if best[1] is None or (value > best[1] if mode != "min" else value < best[1]):
                best = (ep["epoch"], value)
        if best[0] is not None:
            return best
    return best


VALIDATION_PREFIXES = ("val_", "val/", "valid_", "valid/", "validation_", "validation/", "eval_", "eval/")
"""Metric names that start with one of these are validation metrics (the prefix is dropped): Keras's and
Lightning's ``val_``, Transformers' ``eval_``, and the ``split/name`` style."""


def prefixed_metric_hint(metric: str, validation_names: Iterable[str]) -> str | None:
    """The fix when ``metric`` is a framework's name (``val_loss``) of a validation metric reported without its
    prefix (``loss``), as the framework callbacks report them; else None."""
    names = set(validation_names)
    for prefix in VALIDATION_PREFIXES:
        bare = metric[len(prefix):]
        if metric.startswith(prefix) and bare in names:
            return (f"{metric!r} is reported as the validation metric {bare!r} (the framework callbacks drop the "
                    f"{prefix!r} prefix): choose Trainer(eval_metric={bare!r})")
    return None


def missing_metric(epochs: Iterable[Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
    """``{"reported": [names], "note": ...}`` when no epoch reported ``metric`` at all, else None (#13).

    Without it ``best_epoch`` stays None with no word why: a binary classifier reporting ``auc`` where
    its task type's metric is ``roc_auc``, say, or ``Trainer(eval_metric="val_loss")`` where a framework
    callback reports Keras's ``val_loss`` as ``validation.loss``.
    """
    names: set[str] = set()
    validation: set[str] = set()
    for ep in epochs:
        for section in ("train", "validation"):
            part = ep.get(section) or {}
            if metric in part:
                return None
            names.update(part)
        validation.update(ep.get("validation") or {})
    fix = prefixed_metric_hint(metric, validation) or ("report it with ctx.log_epoch, or choose one of the reported "
                                                       "metrics with Trainer(eval_metric=..., eval_mode='max'|'min')")
    return {"reported": sorted(names),
            "note": f"no epoch reported {metric!r}, the evaluation metric of this job, so it has no best epoch; {fix}"}


def compose(
    *,
    eval_metric: str | None,
    metric_mode: str | None,
    epochs: list[dict[str, Any]],
    summary: Any = None,
    error: Any = None,
    best: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """The result dict: epochs, eval_metric, best_epoch, best_metric, summary, error; ``{}`` if nothing is known.

    Epochs that never report the evaluation metric add ``eval_metric_missing`` (see ``missing_metric``).
    ``best``: ``best_epoch(epochs, eval_metric, metric_mode)`` when the caller already has it.
    """
    result: dict[str, Any] = {}
    if epochs:
        result["epochs"] = epochs
    if eval_metric:
        result["eval_metric"] = eval_metric
        if epochs:
            result["best_epoch"], result["best_metric"] = (
                best if best is not None else best_epoch(epochs, eval_metric, metric_mode))
            if result["best_epoch"] is None:  # never reported, or only as null (NaN)
                missing = missing_metric(epochs, eval_metric)
                if missing is not None:
                    result["eval_metric_missing"] = missing
    if summary is not None:
        result["summary"] = summary
    if error is not None:
        result["error"] = error
    return result


class EarlyStopping:
    """The reference's ``patience`` rule: stop after ``patience`` evaluations without improvement.

    An evaluation is an epoch that reports the evaluation metric in its validation metrics (or, for a
    job that has reported none there yet, in its training metrics: ``best_epoch`` reads them alike); it
    improves when it beats the best value so far by the metric's direction. A value stored as None
    (NaN, infinite) never improves. Pure: the RunContext feeds it each reported epoch; the user's loop
    decides what to do once ``should_stop`` is true.
    """

    def __init__(self, metric: str | None, mode: str | None, patience: int | None) -> None:
        self.metric = metric
        self.mode = mode
        self.patience = patience
        self.best: Any = None
        self.best_epoch: Any = None
        self.bad = 0  # evaluations since the last improvement
        self.stop_epoch: Any = None  # the epoch after which the rule said stop
        self.last_epoch: Any = None
        self.section: str | None = None  # "validation" once the metric was reported there, else "train"
        self.seen = False  # the metric was reported in some epoch (train or validation), patience or not

    @property
    def active(self) -> bool:
        return self.patience is not None and bool(self.metric)

    @property
    def should_stop(self) -> bool:
        return self.stop_epoch is not None

    def update(self, epoch: Any, train: Mapping[str, Any], validation: Mapping[str, Any]) -> bool:
        """Feed one reported epoch; returns ``should_stop``."""
        self.last_epoch = epoch
        if not self.seen and self.metric and (self.metric in validation or self.metric in train):
            self.seen = True
        if not self.active:
            return False
        metric = self.metric or ""
        if metric in validation:
            if self.section != "validation":  # validation values replace training values from here on
                self.section, self.best, self.best_epoch, self.bad = "validation", None, None, 0
            value = validation[metric]
        elif metric in train and self.section != "validation":
            self.section = "train"
            value = train[metric]
        else:  # not an evaluation epoch
            return self.should_stop
        if self._improves(value):
            self.best, self.best_epoch, self.bad = value, epoch, 0
        else:
            self.bad += 1
        assert self.patience is not None
        if self.stop_epoch is None and self.bad >= self.patience:
            self.stop_epoch = epoch
        return self.should_stop

    def _improves(self, value: Any) -> bool:
        if value is None:
            return False
        return self.best is None or (value < self.best if self.mode == "min" else value > self.best)

    @property
    def stopped_early(self) -> bool | None:
        """None without a patience rule; True if the loop stopped at the epoch the rule said stop."""
        if not self.active:
            return None
        return self.stop_epoch is not None and self.last_epoch == self.stop_epoch
