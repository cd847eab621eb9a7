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


def compose(
    *,
    eval_metric: str | None,
    metric_mode: str | None,
    epochs: list[dict[str, Any]],
    summary: Any = None,
    error: Any = None,
) -> dict[str, Any]:
    """The result dict: epochs, eval_metric, best_epoch, best_metric, summary, error; ``{}`` if nothing is known."""
    result: dict[str, Any] = {}
    if epochs:
        result["epochs"] = epochs
    if eval_metric:
        result["eval_metric"] = eval_metric
        if epochs:
            result["best_epoch"], result["best_metric"] = best_epoch(epochs, eval_metric, metric_mode)
    if summary is not None:
        result["summary"] = summary
    if error is not None:
        result["error"] = error
    return result
