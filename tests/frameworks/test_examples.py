"""The framework examples in examples/ run as scripts, as a user runs them: offline, on the CPU (#20)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobtrack import JobManager

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", ["lightning_regression/train_lightning.py", "keras_regression/train_keras.py",
                                    "transformers_classifier/train_transformers.py"])
def test_example_runs_to_completed(script: str, tmp_path: Path) -> None:
    db = tmp_path / "examples.db"
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), str(db)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    [status] = [job.get_status() for job in JobManager(str(db)).list_jobs()]
    assert status["status"] == "COMPLETED" and status["result"]["best_epoch"] is not None
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "trainer_output").exists()
