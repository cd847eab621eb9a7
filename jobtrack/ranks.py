"""Runs of several processes (DDP): which process is rank zero, and what ``track()`` gives the others (#20).

A launcher (``torchrun``, Lightning's ``strategy="ddp"``, which runs the script again for each further rank)
tells each process its rank in environment variables. The job belongs to rank zero, as the frameworks' own
loggers do: ``jobtrack.track()`` in another rank creates no job and returns a ``RankReplica``, whose reports go
nowhere, so one run is one job and each epoch is stored once. The framework callbacks make every rank stop
at the same step when rank zero's job is canceled or its patience rule says stop.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
"""The global rank (``torchrun``), else the process's rank on its machine and the machine's rank (Lightning)."""


def process_rank() -> str | None:
    """``"RANK=1"`` (the variable that says so) in a process that is not rank zero of a multi-process run;
    None in rank zero and in a process no launcher started."""
    names = ("RANK",) if os.environ.get("RANK", "").strip() else RANK_VARIABLES[1:]
    for name in names:
        value = os.environ.get(name, "").strip()
        if value and value != "0" and value.lstrip("-").isdigit():
            return f"{name}={value}"
    return None


class RankReplica:
    """What ``jobtrack.track()`` gives a process that is not rank zero: the same calls as a RunContext, and
    no job: ``log_epoch`` stores nothing and returns False, ``log`` writes nothing, a cancel is never seen
    here (the framework callbacks hear it from rank zero). Checkpoints it is asked for go to a private
    temporary directory, removed when the block ends: rank zero saves the job's.

    ``job_id`` is None; ``rank`` names the variable that made this process a replica (``"RANK=1"``).
    """

    job_id = None
    attempt = 1
    resume_epoch = None
    cancel_requested = False
    should_stop = False
    stopped_by_signal = None

    def __init__(self, rank: str, config: Mapping[str, Any] | None) -> None:
        self.rank = rank
        self.config = dict(config or {})
        self._dir: Path | None = None

    def __repr__(self) -> str:
        return f"RankReplica({self.rank}: rank zero's process reports the job)"

    def log_epoch(self, epoch: int, train: Mapping[str, Any] | None = None,
                  validation: Mapping[str, Any] | None = None) -> bool:
        """Nothing is stored (rank zero reports the epoch); returns False."""
        return False

    def log(self, message: str) -> None:
        """Nothing is written: the job's log is rank zero's."""

    def is_cancel_requested(self) -> bool:
        return False

    def check_canceled(self) -> None:
        """Never raises: a cancel reaches the other ranks through rank zero."""

    def should_evaluate(self, epoch: int) -> bool:
        return True

    @property
    def job_dir(self) -> Path:
        """A private temporary directory of this process (the job's files are rank zero's)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"jobtrack-{self.rank.replace('=', '')}-"))
        return self._dir

    @property
    def checkpoint_dir(self) -> Path:
        path = self.job_dir / "checkpoints"
        path.mkdir(exist_ok=True)
        return path

    @property
    def model_dir(self) -> Path:
        path = self.job_dir / "model"
        path.mkdir(exist_ok=True)
        return path

    def save_checkpoint(self, data: Any, name: str | None = None) -> Path:
        """Nothing is saved (rank zero saves the job's checkpoints); returns where it would have gone here."""
        return self.checkpoint_dir / (name or (Path(os.fspath(data)).name if not isinstance(data, bytes)
                                               else "checkpoint"))

    def latest_checkpoint(self) -> Path | None:
        return None

    def close(self) -> None:
        """Remove the temporary directory (the block ended)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
