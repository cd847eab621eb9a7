"""Snapshots (#19): a job carried unfinished (``--include-running``) is a copy in the target that nothing there
declares lost or runs; a later bundle of the same job (its end, or a newer snapshot) replaces it, and an older
one changes nothing."""

from __future__ import annotations

import io
import pickle
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from jobtrack import Dataset, JobManager, Trainer
from jobtrack.cli import main
from jobtrack.errors import InvalidArgument, SnapshotCopy
from proc import spawn, wait_until

# A training in its own process: an epoch every 20 ms until the file named by argv[2] exists.
SOURCE = """
import os, sys, time
from jobtrack import Dataset, Trainer

def train(ctx):
    epoch = 0
    while not os.path.exists(sys.argv[2]):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)}, validation={"roc_auc": 0.5 + epoch / 1000})
        epoch += 1
        time.sleep(0.02)
    return {"epochs": epoch}

job = Trainer(train, db=sys.argv[1]).fit(Dataset("d", "binary_classification", "t", tables={"train": [{"x": 1}]}))
print(job.job_id, flush=True)
job.wait()
"""


def test_a_snapshot_stays_a_copy_and_the_final_bundle_replaces_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src, dst, stop = str(tmp_path / "a.db"), str(tmp_path / "b.db"), str(tmp_path / "stop")
    with spawn(SOURCE, src, stop) as child:
        job_id = child.stdout.readline().strip()
        wait_until(lambda: _epochs(src, job_id) >= 3)
        first = JobManager(src).export_bundle(tmp_path / "snap1.jtb", include_running=True)
        seen = _epochs(src, job_id)  # at least what the first snapshot holds
        wait_until(lambda: _epochs(src, job_id) > seen)
        second = JobManager(src).export_bundle(tmp_path / "snap2.jtb", include_running=True)
        assert first.snapshot == second.snapshot == [job_id]
        assert main(["import", str(tmp_path / "snap1.jtb"), "--db", dst]) == 0  # the CLI creates the target
        assert JobManager(dst).import_bundle(tmp_path / "snap1.jtb").skipped == [job_id]  # twice: nothing changes
        Path(stop).touch()
        assert child.wait(timeout=60) == 0
    copy = JobManager(dst).fetch_job(job_id)
    # the runner process has ended on this very host: the copy is not declared lost (it ran elsewhere)
    assert copy.get_status()["status"] == "RUNNING"
    assert copy.snapshot_reason() is not None and "snapshot" in copy.snapshot_reason()
    with pytest.raises(SnapshotCopy, match="runs there and never ends here"):
        copy.wait(timeout=5)
    before = copy.get_status()
    with pytest.raises(SnapshotCopy, match="Cancel it in that database") as refused:  # nothing here could stop it
        JobManager(dst).cancel_job(job_id)
    assert str(pickle.loads(pickle.dumps(refused.value))) == str(refused.value)  # crosses processes intact
    assert main(["cancel", job_id, "--db", dst]) == 1
    assert copy.get_status() == before and "Cancel it in that database" in capsys.readouterr().err
    frozen = JobManager(dst).table(f"id = '{job_id}'")[0]["duration"]  # run time as exported, not growing
    assert frozen is not None and frozen >= 0 and frozen == JobManager(dst).table(f"id = '{job_id}'")[0]["duration"]
    assert main(["list", "--db", dst]) == 0 and f"{frozen:.1f}s" in capsys.readouterr().out
    early = _epochs(dst, job_id)
    newer = JobManager(dst).import_bundle(tmp_path / "snap2.jtb")  # a newer snapshot
    assert (newer.imported, newer.updated) == ([], [job_id])
    assert _epochs(dst, job_id) > early

    JobManager(src).export_bundle(tmp_path / "final.jtb")
    assert main(["import", str(tmp_path / "final.jtb"), "--db", dst]) == 0
    printed = capsys.readouterr().out
    assert "imported 0 job(s)" in printed
    assert f"1 snapshot(s) here updated to the bundle's newer state: {job_id}" in printed
    final = JobManager(src).fetch_job(job_id)
    assert copy.get_status() == final.get_status() and copy.get_status()["status"] == "COMPLETED"
    assert copy.snapshot_reason() is None and copy.wait()["status"] == "COMPLETED"
    assert _log(dst, job_id) == _log(src, job_id) and "epoch 2:" in _log(dst, job_id)
    for old in ("snap1.jtb", "snap2.jtb", "final.jtb"):  # an older state never replaces a newer one
        again = JobManager(dst).import_bundle(tmp_path / old)
        assert again.imported == [] and again.skipped == [job_id]
    assert copy.get_status() == final.get_status()


def test_a_snapshot_carries_no_queued_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "a.db")
    worker_job = Trainer(_never_run, db=db, runner="worker").fit(
        Dataset("d", "binary_classification", "t", tables={"train": str(_csv(tmp_path))}))
    report = JobManager(db).export_bundle(tmp_path / "all.jtb", include_running=True)
    assert report.jobs == [] and report.snapshot == []  # queued: nothing to carry, and it must not run twice
    with pytest.raises(InvalidArgument, match="QUEUED: it has nothing to carry yet"):
        JobManager(db).export_bundle(tmp_path / "one.jtb", [worker_job.job_id], include_running=True)
    assert main(["export", worker_job.job_id, "--include-running", "-o", str(tmp_path / "x.jtb"), "--db", db]) == 2
    assert "nothing to carry yet" in capsys.readouterr().err


def test_a_job_whose_runner_was_killed_is_exported_as_failed(tmp_path: Path) -> None:
    """Export applies liveness verdicts first (as migrate does): a job whose process was SIGKILLed ends FAILED and
    is carried as such, not left out as unfinished nor carried as a RUNNING snapshot that never ends elsewhere."""
    src, dst, stop = str(tmp_path / "a.db"), str(tmp_path / "b.db"), str(tmp_path / "stop")
    with spawn(SOURCE, src, stop) as child:
        job_id = child.stdout.readline().strip()
        wait_until(lambda: _epochs(src, job_id) >= 2)
        child.kill()
        child.wait(timeout=10)
    with closing(sqlite3.connect(src)) as conn:  # nothing read the job since: its row still says RUNNING
        assert conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone() == ("RUNNING",)
    for name, include_running in (("plain.jtb", False), ("running.jtb", True)):
        report = JobManager(src).export_bundle(tmp_path / name, include_running=include_running)
        assert (report.jobs, report.snapshot) == ([job_id], []), name
        copy = JobManager(dst, create=True).import_bundle(tmp_path / name)
        assert copy.imported + copy.skipped == [job_id]
        status = JobManager(dst).fetch_job(job_id).get_status()
        assert status["status"] == "FAILED" and status == JobManager(src).fetch_job(job_id).get_status()


def _epochs(db: str, job_id: str) -> int:
    return len((JobManager(db).fetch_job(job_id).get_status()["result"] or {}).get("epochs") or [])


def _log(db: str, job_id: str) -> str:
    out = io.StringIO()
    JobManager(db).fetch_job(job_id).stream_logs(file=out, follow=False)
    return out.getvalue()


def _never_run(ctx: object) -> None:
    raise AssertionError("a queued job of this test is never run")


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("x,y\n1,0\n2,1\n")
    return path


def test_migrate_copies_a_snapshot_as_the_copy_it_is(tmp_path: Path) -> None:
    """A snapshot copy runs in no database here, so it is no "unfinished job to migrate again once it ended": it is
    copied, stays a copy in the target, and the job's final bundle replaces it there."""
    from jobtrack.store import Store
    from jobtrack.store.migrate import migrate

    src, mid, dst, stop = (str(tmp_path / n) for n in ("a.db", "h.db", "h2.db", "stop"))
    with spawn(SOURCE, src, stop) as child:
        job_id = child.stdout.readline().strip()
        wait_until(lambda: _epochs(src, job_id) >= 2)
        JobManager(src).export_bundle(tmp_path / "snap.jtb", include_running=True)
        Path(stop).touch()
        assert child.wait(timeout=60) == 0
    JobManager(mid, create=True).import_bundle(tmp_path / "snap.jtb")
    report = migrate(Store.open(mid, create=False), Store.open(dst))
    assert report.copied == [job_id] and report.unfinished == []
    copy = JobManager(dst).fetch_job(job_id)
    assert copy.get_status()["status"] == "RUNNING" and copy.snapshot_reason() is not None
    JobManager(src).export_bundle(tmp_path / "final.jtb", [job_id])
    assert JobManager(dst).import_bundle(tmp_path / "final.jtb").updated == [job_id]
    assert copy.get_status()["status"] == "COMPLETED" and copy.snapshot_reason() is None
