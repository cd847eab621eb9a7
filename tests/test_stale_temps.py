"""Temp files a killed process left half-written (a checkpoint, a bundle, an import's file) are removed by the next
writer on the same host, and only when their writer is provably gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobtrack import Dataset, JobManager, Trainer, checkpoints, demo
from jobtrack.files import temp_prefix
from proc import killed_mid_write


def test_a_checkpoint_half_written_by_a_killed_attempt_goes_at_the_next_save(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (stale,) = killed_mid_write((folder, checkpoints.TEMP_KIND))
    live = folder / f"{temp_prefix(checkpoints.TEMP_KIND)}x.tmp"  # this process's: it may be writing it now
    elsewhere = folder / f".{checkpoints.TEMP_KIND}.0123abcd.{os.getpid()}.1:1.y.tmp"  # another host's
    for p in (live, elsewhere):
        p.write_bytes(b"partial")
    saved = checkpoints.save(folder, b"weights", "model.pt")
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()
    assert saved.read_bytes() == b"weights" and checkpoints.latest(folder) == saved


def test_an_import_and_an_export_remove_what_killed_ones_left(tmp_path: Path, dataset: Dataset) -> None:
    src, dst = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    job = Trainer(demo.train, db=src, runner="eager", config={"epochs": 2}).fit(dataset)
    out = tmp_path / "out"
    out.mkdir()
    JobManager(src).export_bundle(out / "b.jtb")
    JobManager(dst, create=True).import_bundle(out / "b.jtb")
    job_dir = Path(JobManager(dst).fetch_job(job.job_id).log_path).parent
    stale_import, stale_export = killed_mid_write((job_dir, "import"), (out, "bundle"))
    JobManager(src).export_bundle(out / "c.jtb")
    assert not stale_export.exists()
    os.remove(job_dir / "log.txt")  # so the import writes into that folder again
    JobManager(dst).import_bundle(out / "c.jtb")
    assert not stale_import.exists() and (job_dir / "log.txt").exists()


def test_a_parquet_export_half_written_by_a_killed_job_goes_at_the_next_one(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from jobtrack.exports import ExportFile

    (stale,) = killed_mid_write((tmp_path, "export"))
    export = ExportFile(tmp_path, "nov", "predictions", "parquet")
    with export.batch(["id", "score"], [[1, 0.5]], first=True) as path:
        pass
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
