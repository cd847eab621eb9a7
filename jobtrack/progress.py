"""A live progress line for ``wait(progress=True)``: redrawn in a terminal, updated in a notebook, else appended."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt(value: Any) -> str:
    """A metric as shown: 4 significant digits; NaN, stored as null, as the job's log writes it."""
    return f"{value:.4g}" if isinstance(value, float) else "null" if value is None else str(value)


def describe(status: dict[str, Any], elapsed_s: float) -> str:
    """One line: status, latest epoch and its metrics, best so far, elapsed time."""
    result = status["result"]
    parts = [f"{status['job_id']} {status['status']}"]
    epochs = result.get("epochs") or []
    if epochs:
        last = epochs[-1]
        parts.append(f"epoch {last['epoch']} ({len(epochs)} reported)")
        for section in ("train", "validation"):
            metrics = last.get(section) or {}
            if metrics:
                parts.append(f"{section} " + " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        if result.get("best_epoch") is not None:
            parts.append(f"best {result['eval_metric']}={_fmt(result['best_metric'])} @ {result['best_epoch']}")
    parts.append(f"{elapsed_s:.1f}s")
    return " | ".join(parts)


class Progress:
    """Shows successive status dicts of one job; call ``update`` per poll and ``close`` at the end."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._last = ""
        self._last_epochs = -1
        self._width = 0
        self._handle: Any = None
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if _in_notebook():
            from IPython.display import display

            self._handle = display("", display_id=True)

    def update(self, status: dict[str, Any]) -> None:
        line = describe(status, time.monotonic() - self.started)
        if self._handle is not None:
            self._handle.update(line)
        elif self._tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
        else:  # a log file or pipe: one line per change of epoch or status
            epochs = len(status["result"].get("epochs") or [])
            key = f"{status['status']}/{epochs}"
            if key != self._last:
                self.stream.write(line + "\n")
                self.stream.flush()
                self._last = key

    def close(self) -> None:
        if self._tty and self._handle is None:
            self.stream.write("\n")
            self.stream.flush()


def _in_notebook() -> bool:
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # noqa: BLE001 - no usable IPython: plain text
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
