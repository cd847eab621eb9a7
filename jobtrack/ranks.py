"""Runs of several processes (DDP): which process is rank zero, and what ``track()`` gives the others (#20).

A launcher (``torchrun``, Lightning's ``strategy="ddp"``, which runs the script again for each further rank)
tells each process its rank in environment variables. The job belongs to rank zero, as the frameworks' own
loggers do: ``jobtrack.track()`` in another rank creates no job and returns a ``RankReplica``, whose reports go
nowhere, so one run is one job and each epoch is stored once. The framework callbacks make every rank stop
at the same step when rank zero's job is canceled or its patience rule says stop.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")
"""The global rank (``torchrun``), else the process's rank on its machine and the machine's rank (Lightning)."""

log = logging.getLogger(__name__)


def process_rank() -> str | None:
    """``"RANK=1"`` (the variable that says so) in a process that is not rank zero of a multi-process run (one whose
    ``WORLD_SIZE``, which ``torchrun`` and Lightning set, is above 1); None in rank zero and in any other process,
    whatever it has in these variables (``LOCAL_RANK=-1``: not distributed; a ``NODE_RANK`` left in a shell)."""
    world = os.environ.get("WORLD_SIZE", "").strip()
    if not (world.isdigit() and int(world) > 1):
        return None
    names = ("RANK",) if os.environ.get("RANK", "").strip() else RANK_VARIABLES[1:]
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return f"{name}={value}"
    return None


class RankReplica:
    """What ``jobtrack.track()`` gives a process that is not rank zero: the same calls as a RunContext, and
    no job: ``log_epoch`` stores nothing and returns False, ``log`` writes nothing, a cancel is never seen
    here (the framework callbacks hear it from rank zero). Checkpoints it is asked for go to a private
    temporary directory, removed when the block ends: rank zero saves the job's.

    ``job_id`` is None; ``rank`` names the variable that made this process a replica (``"RANK=1"``).
    """

    job_id = model_run_id = output_alias = resume_epoch = stopped_by_signal = n_epochs = None
    job_type, phase, attempt, eval_every, test_batch_size = "train", "train", 1, 1, 128
    cancel_requested = should_stop = extract_embeddings = flatten_output = False

    def __init__(self, rank: str, dataset: Any, config: Mapping[str, Any] | None, patience: int | None) -> None:
        from jobtrack.config import max_result_bytes
        from jobtrack.context import RunContext

        self.rank = rank
        self.dataset, self.patience, self.max_result_bytes = dataset, patience, max_result_bytes()
        self.config = copy.deepcopy(dict(config or {}))  # the code may change it, as a RunContext's own copy
        self.output_config: dict[str, Any] = {}
        self._dir: Path | None = None
        self._batches: Callable[..., Any] = RunContext.batches  # the same rows, in the same batches, as rank zero reads
        log.warning("jobtrack: this process is %s of a multi-process run: track() records nothing here; "
                    "rank zero's block is the job", rank)

    def batches(self, table: Any = "test", size: int | None = None) -> Any:
        """The rows of ``table`` in lists of ``size`` rows, as ``RunContext.batches``."""
        return self._batches(self, table, size)

    def should_evaluate(self, epoch: int) -> bool:
        return epoch % self.eval_every == 0

    def export(self, kind: str, rows: Any) -> None:
        """Nothing is exported: rank zero exports the job's rows."""

    def exported_kinds(self) -> list[str]:
        return []

    def result_extras(self) -> dict[str, Any]:
        return {}

    @property
    def log_path(self) -> Path:
        return self.job_dir / "log.txt"

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
