"""Real training with PyTorch Lightning, Hugging Face Transformers and Keras 3 (torch backend) on the CPU (#20).

They run only when asked for (``pytest tests/frameworks``, the framework step of ``.ci/run``, in a virtual
environment with the ``lightning``, ``transformers`` and ``keras`` extras): a plain ``pytest`` leaves them out,
so the core suite needs no framework. Nothing is downloaded: models are built from configs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent

FRAMEWORK_WARNINGS = ("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning",
                      "ignore::PendingDeprecationWarning")
"""The frameworks' own advice (few dataloader workers, no GPU, renamed options) is not an error of jobtrack's."""


def _asked_for(config: pytest.Config) -> bool:
    return any(Path(str(a).split("::")[0]).resolve().is_relative_to(HERE) for a in config.args)


def pytest_configure(config: pytest.Config) -> None:
    if _asked_for(config):  # before any framework is imported: Keras picks its backend then; no model hub
        os.environ.setdefault("KERAS_BACKEND", "torch")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix == ".py" and collection_path.name != "conftest.py" and not _asked_for(config):
        return True
    return None


TIMEOUT_S = 600
"""Per test: real training and a framework's first import take longer than the suite's default on a busy CPU."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))
            for rule in FRAMEWORK_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(rule))


class StepGate:
    """Holds training at the end of step ``at`` until the test has canceled the job: then exactly one
    more step may run before the callback sees the cancel (it asks at every step boundary)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps = 0
        self.reached = threading.Event()
        self.released = threading.Event()

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == self.at:
            self.reached.set()
            assert self.released.wait(60), "the test never released the gate"

    def cancel_at_gate(self, cancel: Callable[[], Any]) -> int:
        """Wait for step ``at``, cancel, let training go on; returns the steps done when the cancel landed."""
        assert self.reached.wait(120), f"training never reached step {self.at}"
        cancel()
        done = self.steps
        self.released.set()
        return done


@pytest.fixture
def step_gate() -> Callable[[int], StepGate]:
    """``step_gate(n)``: a StepGate that holds training after step n."""
    return StepGate


@pytest.fixture
def best_by() -> Callable[[list[dict[str, Any]], str, str], tuple[int, float]]:
    """``best_by(epochs, metric, mode)``: (epoch, value) of the best validation ``metric``, computed in the test."""

    def pick(epochs: list[dict[str, Any]], metric: str, mode: str) -> tuple[int, float]:
        best = (min if mode == "min" else max)(epochs, key=lambda e: e["validation"][metric])
        return best["epoch"], best["validation"][metric]

    return pick
