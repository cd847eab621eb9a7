"""The per-epoch write path of #14, tested without timing: the job log's kept descriptor and the
best-metric bookkeeping that decodes nothing and survives a failed epoch transaction."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, RunContext, StoreError, Trainer, joblog, testing
from jobtrack.config import make_private_dir
from jobtrack.joblog import JobLog
from jobtrack.store import Store
from jobtrack.store.tx import Tx

DS = Dataset("write", "binary_classification", "path", tables={"train": [{"x": 1}]})


def _open_descriptors_to(path: Path) -> list[str]:
    """This process's descriptors open on ``path`` (read from /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return found


def test_a_job_log_is_opened_once_for_all_its_lines_and_let_go_when_the_job_ends(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)  # a first try before the job's directory exists does not count
        if str(path).endswith("log.txt"):
            opened.append(str(path))
        return fd

    monkeypatch.setattr("jobtrack.joblog.os.open", counting_open)
    held: list[list[str]] = []

    def train(ctx: RunContext) -> None:
        for e in range(20):
            ctx.log_epoch(e, train={"loss": 1 / (e + 1)}, validation={"roc_auc": 0.5 + e / 100})
        held.append(_open_descriptors_to(ctx.log_path))

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    testing.assert_completed(job)
    log_path = Path(Store.open(db_path).job_dir(job.job_id), "log.txt")
    assert len(opened) == 1 and held == [held[0]] and len(held[0]) == 1  # one descriptor, kept for 20 lines
    assert _open_descriptors_to(log_path) == []  # let go when the job ended
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in lines] == [f"epoch {e}" for e in range(20)]


def test_a_log_moved_away_between_two_lines_gets_the_next_line_at_its_path(db_path: str) -> None:
    def train(ctx: RunContext) -> None:
        ctx.log("before the move")
        os.replace(ctx.log_path, ctx.log_path.with_name("moved.txt"))
        ctx.log("after the move")

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    testing.assert_completed(job)
    job_dir = Store.open(db_path).job_dir(job.job_id)
    assert "before the move" in (job_dir / "moved.txt").read_text(encoding="utf-8")
    now = (job_dir / "log.txt").read_text(encoding="utf-8")
    assert "after the move" in now and "before the move" not in now


def test_the_best_metric_is_right_after_an_epoch_transaction_failed(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The failed epoch (0.9) never committed: the next epoch (0.7) is the best, as a fresh recount says.
    real_run_rows = Tx.run_rows
    failing: list[bool] = []
    caught: list[BaseException] = []

    def run_rows(self: Tx, sql: str, names: tuple[str, ...], rows: Any) -> None:
        if failing and "job_metrics" in sql:  # the epoch's last statement: everything before it rolls back
            failing.clear()
            raise sqlite3.OperationalError("disk I/O error")
        real_run_rows(self, sql, names, rows)

    monkeypatch.setattr(Tx, "run_rows", run_rows)

    def train(ctx: RunContext) -> None:
        ctx.log_epoch(0, train={"loss": 1.0}, validation={"roc_auc": 0.5})
        failing.append(True)
        try:
            ctx.log_epoch(1, train={"loss": 0.5}, validation={"roc_auc": 0.9})
        except StoreError as exc:
            caught.append(exc)
        ctx.log_epoch(1, train={"loss": 0.6}, validation={"roc_auc": 0.7})
        ctx.log_epoch(2, train={"loss": 0.7}, validation={"roc_auc": 0.6})

    job = Trainer(train, db=db_path, runner="eager").fit(DS)
    status = testing.assert_completed(job)
    assert len(caught) == 1
    assert [e["validation"]["roc_auc"] for e in status["result"]["epochs"]] == [0.5, 0.7, 0.6]
    assert status["result"]["best_metric"] == 0.7
    manager = JobManager(db_path)
    for query in ("best_metric = 0.7", "best.roc_auc = 0.7 and best.loss = 0.6",  # the committed best epoch
                  "last.roc_auc = 0.6 and last.loss = 0.7"):
        assert [j.job_id for j in manager.list_jobs(where=query)] == [job.job_id], query


# -- the log's identity check: the directory's stat, not the appended file's (#14) ---------------------------


def _settled_log(tmp_path: Path) -> tuple[JobLog, Path]:
    """A job log with a line written and its directory's mtime far in the past, as a long job's is."""
    log = JobLog(tmp_path / "job" / "log.txt", "job_x")
    log.write("first")
    os.utime(log.path.parent, ns=(10**18, 10**18))  # 2001: long settled, whatever the clock's tick
    log.write("second")  # sees the directory changed since the first line: checks the file, then trusts it
    return log, log.path


def _stats_of(monkeypatch: pytest.MonkeyPatch, log: JobLog) -> list[str]:
    """The paths ``os.stat`` is asked for that are the log or its directory (``fstat`` of its descriptor: "fd")."""
    seen: list[str] = []
    real_stat, real_fstat = os.stat, os.fstat
    mine = {str(log.path), str(log.path.parent)}
    kept = {int(fd) for fd in _open_descriptors_to(log.path)}

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) in mine:
            seen.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def counting_fstat(fd: int) -> os.stat_result:
        if fd in kept:
            seen.append("fd")
        return real_fstat(fd)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os, "fstat", counting_fstat)
    return seen


def test_lines_of_a_settled_log_stat_its_directory_not_the_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Stat-ing the file being appended to made each append dirty its inode for the next journal commit on
    # ext4 (fine-grained timestamps of a queried file): ~50 µs per epoch line on disk.
    log, path = _settled_log(tmp_path)
    seen = _stats_of(monkeypatch, log)
    for i in range(20):
        log.write(f"line {i}")
    assert seen == [str(path.parent)] * 20
    assert path.read_text(encoding="utf-8").count("\n") == 22


@pytest.mark.parametrize("change", ["moved", "removed", "replaced", "directory replaced"])
def test_a_settled_log_changed_on_disk_gets_the_next_line_at_its_path(tmp_path: Path, change: str) -> None:
    log, path = _settled_log(tmp_path)
    if change == "moved":
        os.replace(path, path.with_name("moved.txt"))
    elif change == "removed":
        path.unlink()
    elif change == "replaced":
        path.with_name("new.txt").write_text("someone else's\n", encoding="utf-8")
        os.replace(path.with_name("new.txt"), path)
    else:
        os.rename(path.parent, tmp_path / "old-job")
        path.parent.mkdir()
        os.utime(path.parent, ns=(10**18, 10**18))  # the same mtime as the old one: its identity tells them apart
    log.write("after")
    assert path.read_text(encoding="utf-8").splitlines()[-1].endswith(" after")
    assert "first" not in path.read_text(encoding="utf-8")


class _Clock:
    """jobtrack.joblog's clock, moved on by the test."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    def time_ns(self) -> int:
        return time.time_ns()

    def clock_gettime_ns(self, clock: int) -> int:
        return time.clock_gettime_ns(clock)


def test_a_log_replaced_behind_an_unchanged_directory_mtime_is_found_within_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file system that keeps no directory mtimes: the file itself is still stat-ed once a second.
    clock = _Clock()
    monkeypatch.setattr(joblog, "time", clock)
    log, path = _settled_log(tmp_path)
    os.replace(path, path.with_name("moved.txt"))
    os.utime(path.parent, ns=(10**18, 10**18))  # the change hidden
    log.write("hidden")
    assert not path.exists()  # within the second, the line went to the file the descriptor holds
    clock.ahead = 1.5  # a second and a half later
    log.write("found")
    now = path.read_text(encoding="utf-8").splitlines()
    assert len(now) == 1 and now[0].endswith(" found")
    assert path.with_name("moved.txt").read_text(encoding="utf-8").splitlines()[-1].endswith(" hidden")


class _CoarseClock(_Clock):
    """A clock whose coarse "now" makes ``directory``'s mtime look coarse (far ahead of it) or fine-grained (just
    behind it), whatever this machine's file systems stamp."""

    def __init__(self, directory: Path, fine: bool) -> None:
        super().__init__()
        self.directory, self.fine = directory, fine

    def clock_gettime_ns(self, clock: int) -> int:
        return os.stat(self.directory).st_mtime_ns - 1 if self.fine else 2**62


@pytest.mark.parametrize("stamps", ["coarse", "fine"])
def test_a_directory_changed_within_the_clock_tick_is_trusted_only_on_fine_grained_stamps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stamps: str) -> None:
    # Coarse stamps: a change in the same tick as the directory's last one would not show, so a directory changed
    # just now (the log's creation) is not trusted and each line stats the file. Fine-grained stamps (an mtime
    # later than the coarse clock's now) show any change made after a stat: trusted at once.
    monkeypatch.setattr(joblog, "FINE_GRAINED_DEVICES", set())
    monkeypatch.setattr(joblog, "time", _CoarseClock(tmp_path / "job", fine=stamps == "fine"))
    log = JobLog(tmp_path / "job" / "log.txt", "job_x")
    log.write("first")
    log.write("second")  # the first check after opening always stats the file
    seen = _stats_of(monkeypatch, log)
    log.write("third")
    log.write("fourth")
    if stamps == "coarse":
        assert seen.count(str(log.path)) == 2 and log.path.stat().st_dev not in joblog.FINE_GRAINED_DEVICES
    else:
        assert seen == [str(log.path.parent)] * 2 and log.path.stat().st_dev in joblog.FINE_GRAINED_DEVICES


def test_private_directories_are_made_0700_whatever_the_umask_and_a_file_in_the_way_is_an_error(
        tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        one = make_private_dir(tmp_path / "one")  # one new directory: the fast path
        deep = make_private_dir(tmp_path / "a" / "b" / "c")  # missing parents too
        again = make_private_dir(tmp_path / "one")  # already there: left alone
    finally:
        os.umask(old)
    assert one == again == tmp_path / "one" and deep.is_dir()
    for made in (one, tmp_path / "a", tmp_path / "a" / "b", deep):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        make_private_dir(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        make_private_dir(tmp_path / "file" / "below")


def test_a_directory_mtime_set_into_the_future_proves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(joblog, "FINE_GRAINED_DEVICES", set())
    log = JobLog(tmp_path / "job" / "log.txt", "job_x")
    log.write("first")
    future = time.time_ns() + 3600 * 10**9
    os.utime(log.path.parent, ns=(future, future))  # as an archive from a machine whose clock runs ahead
    log.write("second")
    log.write("third")
    assert log.path.stat().st_dev not in joblog.FINE_GRAINED_DEVICES
    assert log.path.read_text(encoding="utf-8").count("\n") == 3
