"""Training curves as a PNG (needs the ``plot`` extra: ``pip install 'jobtrack[plot]'``)."""

from __future__ import annotations

import math
import os
from typing import Any

from jobtrack.errors import MissingExtra


def plot_curves(status: dict[str, Any], path: str | os.PathLike[str], db: str | None = None) -> str:
    """Draw each metric's training and validation curve by epoch, with the best epoch marked; returns the path.

    ``db`` (the job's database) lets the error for an inference job name the job that trained its model.

    Raises:
        MissingExtra: matplotlib is not installed.
        InvalidArgument: the job has reported no epochs; ``path`` is a database, a folder or in a missing folder.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("plot", "matplotlib", "jobtrack plot") from None
    from jobtrack.errors import InvalidArgument
    from jobtrack.files import check_output

    path = os.fspath(path)
    kinds = plt.figure().canvas.get_supported_filetypes()  # {"png": "Portable Network Graphics", ...}
    plt.close("all")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    folder = os.path.isdir(path) or path.endswith(("/", os.sep))  # check_output below says so
    if not ext and not folder:
        path += ".png"  # matplotlib would add ".png" to the name itself: say so in the path returned
    elif ext not in kinds and not folder:
        raise InvalidArgument(f"Cannot draw a plot as {ext!r} ({path!r}); end the file name with one of "
                              f"{', '.join('.' + k for k in sorted(kinds))} (.png when unsure).")
    path = check_output(path, "plot")  # never over a database, into a folder, or a missing folder
    result = status["result"]
    epochs = result.get("epochs") or []
    if not epochs and status["job_type"] == "inference":  # it never will: its curves are its model's
        raise InvalidArgument(f"Job {status['job_id']} is an inference job: it trains nothing, so it has no epochs "
                              f"to plot. Plot the job that trained its model run {status['model_run_id']}"
                              f"{_trained_by(db, status['model_run_id'])}.")
    if not epochs:
        raise InvalidArgument(f"Job {status['job_id']} has reported no epochs yet; there is nothing to plot.")
    metrics = sorted({m for ep in epochs for part in ("train", "validation") for m in (ep.get(part) or {})})
    eval_metric = result.get("eval_metric")
    if eval_metric in metrics:  # the evaluation metric first
        metrics.remove(eval_metric)
        metrics.insert(0, eval_metric)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 2.8 * len(metrics)), squeeze=False)
    best = result.get("best_epoch")
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for part, style in (("train", "-o"), ("validation", "-s")):
            # an epoch that did not report the metric is skipped; one that reported NaN (stored as null) is a gap
            points = [(ep["epoch"], (ep.get(part) or {})[metric]) for ep in epochs if metric in (ep.get(part) or {})]
            if any(y is not None for _, y in points):
                ax.plot([x for x, _ in points], [math.nan if y is None else y for _, y in points], style,
                        markersize=3, label=part)
        if best is not None:
            ax.axvline(best, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch {best}")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    axes[0, 0].set_title(f"{status['experiment_name']} — {status['job_id']} ({status['status']})", fontsize="medium")
    fig.tight_layout()
    new = not os.path.exists(path)
    try:
        fig.savefig(os.fspath(path), dpi=100)
    finally:
        plt.close(fig)
    if new:
        os.chmod(path, 0o600)  # private to the user, as every file jobtrack creates (#13)
    return os.fspath(path)


def _trained_by(db: str | None, model_run_id: str | None) -> str:
    """``": jobtrack plot JOB"`` for the training job of a model run, or "" when it cannot be found (deleted)."""
    from jobtrack.errors import JobtrackError
    from jobtrack.store import Store

    if db is None or model_run_id is None:
        return ""
    try:
        return f": jobtrack plot {Store.open(db, create=False).get_model_run(model_run_id)[0]['job_id']}"
    except JobtrackError:
        return ""
