"""Issue 21, defect 2: no job stays QUEUED or RUNNING for good while its process lives.

Each scenario once left a job non-terminal for ever (``wait()`` never returned, ``cancel()`` said
RUNNING and did nothing): a summary or an error message holding a lone surrogate, another process
holding the write lock past ``lock_timeout``, a full disk, an unwritable log directory, PostgreSQL
connections terminated under running jobs. Each test ends with the job terminal within seconds of
the condition clearing, with ``wait()`` and ``cancel()`` answering meanwhile.

What a reader sees while the store cannot take a job's end: RUNNING while the runner's process
lives (it retries the write in the background); FAILED (runner lost) once that process is gone,
even when that verdict cannot be written yet (it is written by the first read that can).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, StoreBusy, StoreError, Trainer, WaitTimeout, jsonutil
from jobtrack.store import Store
from proc import child_env, spawn, wait_until

HERE = Path(__file__).resolve().parent
RUNNER = (HERE / "stuck_runner.py").read_text(encoding="utf-8")
SURROGATE_NAME = os.fsdecode(b"data_\xff.csv")
"""What Python makes of a file name that is not UTF-8: 'data_\\udcff.csv'."""

SETTLE_S = 3.0
"""Longest time from a condition clearing to the job reading terminal (the recorder retries at least every 1 s)."""


def _dataset() -> Dataset:
    return Dataset("d", "regression", "t", tables={"train": [{"x": 1.0, "y": 2.0}]})


def _log_text(job: Any) -> str:
    buf = io.StringIO()
    job.stream_logs(file=buf, follow=False)
    return buf.getvalue()


def _raw(db: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A read through a plain sqlite3 connection (text as bytes: stored text must be valid UTF-8)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.text_factory = bytes
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _integrity_ok(db: str) -> bool:
    return _raw(db, "PRAGMA integrity_check") == [(b"ok",)]


class Lines:
    """A child's stdout read line by line on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, needle: str, timeout: float = 20) -> str:
        """The next line containing ``needle`` (lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {needle!r} within {timeout} s; seen: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the child ended without a line with {needle!r}; seen: {self.seen}")
            self.seen.append(line)
            if needle in line:
                return line


def _stays_open(job: Any, for_s: float = 0.3) -> None:
    """``wait()`` answers on time while the job cannot end: WaitTimeout, the job RUNNING."""
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        job.wait(timeout=for_s)
    assert time.monotonic() - started < for_s + 2
    assert job.get_status()["status"] == "RUNNING"


def _cancel_answers(job: Any) -> bool:
    """``cancel()`` answers within seconds while the store cannot be written: a typed StoreError, or
    RUNNING (the stop was recorded). Returns whether the stop was recorded."""
    started = time.monotonic()
    try:
        recorded = str(job.cancel()) == "RUNNING"
    except StoreError:
        recorded = False
    assert time.monotonic() - started < 5
    return recorded


# -- 1 and 2: text that is not valid Unicode -------------------------------------------------------


def _train_surrogate_summary(ctx: Any) -> dict[str, Any]:
    ctx.log_epoch(1, train={"loss": 0.5})
    return {"name": "bad \udc80 byte", SURROGATE_NAME: [SURROGATE_NAME]}


def _train_surrogate_error(ctx: Any) -> None:
    ctx.log_epoch(1, train={"loss": 0.5})
    name = os.fsdecode(b"data_\xff.csv")
    raise ValueError(f"cannot parse {name}")


@pytest.mark.parametrize("runner", ["thread", "process", "eager"])
def test_a_summary_holding_a_lone_surrogate_completes_stored_escaped_with_a_note(db_path: str, runner: str) -> None:
    job = Trainer(_train_surrogate_summary, db=db_path, runner=runner).fit(_dataset())
    status = job.wait(timeout=10)
    assert status["status"] == "COMPLETED"
    assert status["result"]["summary"] == {"name": "bad \\udc80 byte", "data_\\udcff.csv": ["data_\\udcff.csv"]}
    assert status["result"]["epochs"][0]["train"] == {"loss": 0.5}
    assert str(job.cancel()) == "COMPLETED"
    ((stored,),) = _raw(db_path, "SELECT result_json FROM jobs WHERE id = ?", job.job_id)
    assert "bad \\\\udc80 byte" in stored.decode("utf-8")  # valid UTF-8 on disk, the byte visible
    assert "not valid Unicode" in _log_text(job) and "\\udcff" in _log_text(job)


@pytest.mark.parametrize("runner", ["thread", "process", "eager"])
def test_an_error_message_holding_a_lone_surrogate_fails_the_job_with_the_error(db_path: str, runner: str) -> None:
    job = Trainer(_train_surrogate_error, db=db_path, runner=runner).fit(_dataset())
    status = job.wait(timeout=10)
    assert status["status"] == "FAILED"
    error = status["result"]["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "cannot parse data_\\udcff.csv"
    assert "cannot parse data_\\udcff.csv" in error["traceback"]
    assert str(job.cancel()) == "FAILED"
    assert "job failed: ValueError: cannot parse data_\\udcff.csv" in _log_text(job)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


def _train_unprintable_error(ctx: Any) -> None:
    raise _Unprintable()


def test_an_exception_whose_str_fails_still_fails_the_job(db_path: str) -> None:
    job = Trainer(_train_unprintable_error, db=db_path).fit(_dataset())
    status = job.wait(timeout=10)
    assert status["status"] == "FAILED"
    assert status["result"]["error"]["type"] == "_Unprintable"


def _train_huge_summary(ctx: Any) -> dict[str, Any]:
    ctx.log_epoch(1, train={"loss": 0.5})
    return {"blob": "x" * 200_000}


def test_a_summary_the_database_refuses_for_good_fails_the_job_with_a_minimal_error(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite refuses a value longer than SQLITE_LIMIT_LENGTH (1e9 bytes by default) for good; a lower
    # limit on every connection this process opens stands in for a summary of more than 1 GB.
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100_000)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    trainer = Trainer(_train_huge_summary, db=db_path)
    job = trainer.fit(_dataset())
    status = job.wait(timeout=10)
    assert status["status"] == "FAILED"
    assert "could not be stored" in status["result"]["error"]["message"]
    assert "summary" not in status["result"]
    assert status["result"]["epochs"][0]["train"] == {"loss": 0.5}  # the epochs are kept


def test_a_summary_whose_encoding_runs_out_of_memory_fails_the_job(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_dumps = jsonutil.dumps

    def dumps(value: Any, field: str, **options: Any) -> str:
        if field == "the returned summary":
            raise MemoryError()  # what encoding a summary of many gigabytes ends with
        return real_dumps(value, field, **options)

    monkeypatch.setattr(jsonutil, "dumps", dumps)
    job = Trainer(_train_surrogate_summary, db=db_path).fit(_dataset())
    status = job.wait(timeout=10)
    assert status["status"] == "FAILED"
    assert status["result"]["error"]["type"] == "MemoryError"


def _train_quickly(ctx: Any) -> dict[str, Any]:
    ctx.log_epoch(1, train={"loss": 0.5})
    return {"ok": True}


def test_a_process_runner_child_forked_while_another_thread_is_inside_sqlite_still_runs_its_job(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child forked while a thread of its parent holds SQLite's allocator lock waits on it for ever
    (no thread of the child releases it): it used to keep its job QUEUED and the runner's queue stuck."""
    from jobtrack.runners import process

    # A real hang lasts for ever; 2 s covers a slow start under coverage on a loaded machine.
    monkeypatch.setattr(process, "START_TIMEOUT_S", 2.0, raising=False)
    stop = threading.Event()

    def other_sqlite_work() -> None:  # the script's own SQLite use (pandas.read_sql, a status poller, ...)
        conn = sqlite3.connect(":memory:")
        try:
            while not stop.is_set():
                conn.execute("SELECT randomblob(64)").fetchall()
        finally:
            conn.close()

    worker = threading.Thread(target=other_sqlite_work, name="other-sqlite-work")
    worker.start()
    try:
        trainer = Trainer(_train_quickly, db=db_path, runner="process")
        jobs = [trainer.fit(_dataset()) for _ in range(20)]
        deadline = time.monotonic() + 30
        statuses = [job.wait(timeout=max(0.1, deadline - time.monotonic()))["status"] for job in jobs]
    finally:
        stop.set()
        worker.join()
    # Nearly always COMPLETED; FAILED (runner killed before starting) only after three stuck children in a row.
    assert statuses.count("COMPLETED") >= 15, statuses
    for job, status in zip(jobs, statuses, strict=True):
        if status == "FAILED":
            assert "before starting" in (job.events()[-1].reason or "")


# -- 3: another process holds the write lock past lock_timeout ---------------------------------------

LOCK_HOLDER = """
import fcntl, sys
fh = open(sys.argv[1], "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_write_lock_held_past_lock_timeout_keeps_the_job_running_until_released(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobtrack")
    code_started, code_may_return = threading.Event(), threading.Event()

    def train(ctx: Any) -> dict[str, Any]:
        ctx.log_epoch(1, train={"loss": 0.5})
        code_started.set()
        code_may_return.wait(30)
        return {"ok": True}

    job = Trainer(train, db=db_path, lock_timeout=0.2).fit(_dataset())
    assert code_started.wait(10)
    with subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, db_path + ".lock"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=child_env()) as holder:
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "held"
            code_may_return.set()  # the job's code ends while another process holds the lock
            wait_until(lambda: any("retrying in the background" in r.getMessage() for r in caplog.records),
                       timeout=10, message="the runner tried to record the end and handed it to the recorder")
            _stays_open(job)
            started = time.monotonic()
            with pytest.raises(StoreBusy):  # a typed answer within lock_timeout, not a hang
                job.cancel()
            assert time.monotonic() - started < 3
            _stays_open(job)
            holder.stdin.write("release\n")
            holder.stdin.flush()
            assert holder.wait(timeout=10) == 0
        finally:
            holder.kill()
    released = time.monotonic()
    status = job.wait(timeout=SETTLE_S)
    assert status["status"] == "COMPLETED" and status["result"]["summary"] == {"ok": True}
    assert time.monotonic() - released < SETTLE_S
    assert str(job.cancel()) == "COMPLETED"


# -- 4: a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root (mount -t tmpfs); run the suite as root to test a full disk")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); a full disk needs CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        _close_everything()
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def _close_everything() -> None:
    """Close this process's connections (they hold the tmpfs busy)."""
    try:
        from jobtrack import runtime
    except ImportError:  # the code before the runtime module
        return
    runtime.close_all()


def _fill_and_wait_for_retry(mnt: Path, child: subprocess.Popen[str]) -> tuple[Lines, str]:
    lines = Lines(child)
    job_id = lines.expect("job ").split()[1]
    lines.expect("filled")
    lines.expect("retrying in the background")  # the end hit the full disk and went to the recorder
    return lines, job_id


def test_a_full_disk_keeps_the_job_running_and_it_ends_once_space_is_freed(small_disk: Path) -> None:
    db, filler = str(small_disk / "jobs.db"), str(small_disk / "filler")
    with spawn(RUNNER, "full", db, filler) as child:
        lines, job_id = _fill_and_wait_for_retry(small_disk, child)
        job = JobManager(db).fetch_job(job_id)
        _stays_open(job)
        stop_recorded = _cancel_answers(job)
        _stays_open(job)
        os.remove(filler)
        freed = time.monotonic()
        status = job.wait(timeout=SETTLE_S)
        assert time.monotonic() - freed < SETTLE_S
        assert status["status"] == ("CANCELED" if stop_recorded else "COMPLETED")
        assert status["result"]["summary"] == {"blob": "x" * 40_000}
        assert lines.expect("final ") == f"final {status['status']}"
        assert child.wait(timeout=10) == 0
    assert _integrity_ok(db)


def test_a_full_disk_reader_sees_running_while_the_runner_lives_and_failed_once_it_is_gone(small_disk: Path) -> None:
    db, filler = str(small_disk / "jobs.db"), str(small_disk / "filler")
    with spawn(RUNNER, "full", db, filler) as child:
        _, job_id = _fill_and_wait_for_retry(small_disk, child)
        store = Store.open(db)
        assert store.get_job(job_id).status.value == "RUNNING"  # its runner lives and retries
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    # The runner is gone and the disk still full: the verdict cannot be written, the reader sees it anyway.
    rec = store.get_job(job_id)
    assert (rec.status.value, rec.reason) == ("FAILED", "runner lost")
    assert JobManager(db).fetch_job(job_id).get_status()["status"] == "FAILED"
    assert _raw(db, "SELECT status FROM jobs WHERE id = ?", job_id) == [(b"RUNNING",)]  # not written yet
    os.remove(filler)
    assert store.get_job(job_id).status.value == "FAILED"  # the first read that can write records it
    assert _raw(db, "SELECT status, reason FROM jobs WHERE id = ?", job_id) == [(b"FAILED", b"runner lost")]
    assert _integrity_ok(db)


# -- 5: an unwritable log directory -------------------------------------------------------------------


@pytest.fixture
def unprivileged_dir() -> Iterator[tuple[Path, list[str]]]:
    """A directory the job's process may write, and the arguments that make that process unprivileged.

    Root ignores file permissions, so as root the runner drops to uid 65534 (nobody), in a directory
    under /tmp that it owns (the test's own tmp_path is private to root).
    """
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="jobtrack-stuck-", dir="/tmp"))
    args: list[str] = []
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        args = ["--uid", "65534"]
    try:
        yield path, args
    finally:
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o700)
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(("how", "ends"), [
    ("jobs-0500", "COMPLETED"),  # <db>-files/jobs not writable: no job's directory (or log) can be created
    ("jobs-is-a-file", "COMPLETED"),  # a file where <db>-files/jobs should be
    ("jobs-0500-raise", "FAILED"),  # ... and the code fails: its error is still recorded
    ("job-0500", "COMPLETED"),  # the job's own directory made read-only by its code while it runs
])
def test_an_unwritable_log_directory_never_keeps_the_job_from_ending(
    unprivileged_dir: tuple[Path, list[str]], how: str, ends: str
) -> None:
    directory, args = unprivileged_dir
    db = str(directory / "jobs.db")
    with spawn(RUNNER, *args, "log-dir", db, how) as child:
        lines = Lines(child)
        job_id = lines.expect("job ").split()[1]
        assert lines.expect("final ", timeout=SETTLE_S + 2) == f"final {ends}"
        assert lines.expect("cancel ") == f"cancel {ends}"
        assert child.wait(timeout=10) == 0
    if how.startswith("jobs-"):  # reported once through logging, not raised
        assert any("cannot write its log" in line for line in lines.seen), lines.seen
    status = JobManager(db).fetch_job(job_id).get_status()
    assert status["status"] == ends
    if ends == "FAILED":
        assert status["result"]["error"]["message"] == "the job's own error"


# -- 6: PostgreSQL connections terminated under running jobs ------------------------------------------

KILL_EVERY_S = 0.15
KILL_FOR_S = 3.0
JOBS = 50


def _train_briefly(ctx: Any) -> dict[str, Any]:
    for epoch in range(5):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)})
        time.sleep(0.02)
    return {"ok": True}


@pytest.mark.parametrize("runner", ["thread", "process"])
def test_terminated_postgresql_backends_leave_no_job_open_for_good(pg_url: str, runner: str) -> None:
    import secrets

    import sqlalchemy
    from conftest import PG_URL

    app = f"jt_victim_{secrets.token_hex(4)}"
    url = f"{pg_url}&application_name={app}"
    killed, stop = [0], threading.Event()

    def killer() -> None:
        engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                while not stop.wait(KILL_EVERY_S):
                    killed[0] += conn.exec_driver_sql(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = %(app)s AND pid <> pg_backend_pid()", {"app": app}).scalar() or 0
        finally:
            engine.dispose()

    trainer = Trainer(_train_briefly, db=url, max_workers=8, runner=runner)
    thread = threading.Thread(target=killer, name="backend-killer")
    thread.start()
    submitted: list[Any] = []
    refused = 0
    try:
        started = time.monotonic()
        while len(submitted) + refused < JOBS:
            try:
                submitted.append(trainer.fit(_dataset()))
            except StoreError:  # a typed refusal of the submit: the caller knows it may not exist
                refused += 1
        for job in submitted[::10]:  # cancel() answers meanwhile: the stop, the status, or a typed error
            with contextlib.suppress(StoreError):
                assert str(job.cancel()) in ("RUNNING", "CANCELED", "COMPLETED", "FAILED")
        stop.wait(max(0.0, KILL_FOR_S - (time.monotonic() - started)))
    finally:
        stop.set()
        thread.join()
    assert killed[0] >= 5, "the killer must have terminated connections while the jobs ran"
    stopped = time.monotonic()
    manager = JobManager(url)

    def none_open() -> bool:
        return not manager.list_jobs(status=["QUEUED", "RUNNING"], limit=None)

    # Jobs still QUEUED when the killer stops wait their turn (8 at a time; a process-runner child under
    # CI's coverage takes a good part of a second to start), so the bound is for the queue to drain, not
    # "within seconds": what this proves is that no job is left open for good.
    drain_s = SETTLE_S + 2 + 0.5 * JOBS
    try:
        wait_until(none_open, timeout=drain_s, interval=0.05,
                   message="every job terminal once the runners worked through the queue")
    except AssertionError:
        left = manager.list_jobs(status=["QUEUED", "RUNNING"], limit=None)
        raise AssertionError(f"left open: {[(j.job_id, str(j.status)) for j in left]}") from None
    assert time.monotonic() - stopped < drain_s
    assert len(manager.list_jobs(limit=None)) >= len(submitted)  # every accepted submit exists
    for job in submitted:
        assert job.wait(timeout=1)["status"] in ("COMPLETED", "FAILED", "CANCELED")


def test_a_claim_or_end_whose_connection_drops_is_retried_and_a_lost_commit_adopted(
    db_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The deterministic core of the test above: a claim refused twice, then one applied whose answer
    was lost (the server connection dropped during COMMIT), and an end likewise; the job completes."""
    from jobtrack.errors import StoreUnavailable

    caplog.set_level(logging.WARNING, logger="jobtrack")
    real_claim, real_finish = Store.claim, Store.finish
    calls = {"claim": 0, "finish": 0}

    def claim(self: Store, job_id: str, **kw: Any) -> int:
        calls["claim"] += 1
        if calls["claim"] <= 2:
            raise StoreUnavailable(self.target, "the connection to the server was lost (test)")
        token = real_claim(self, job_id, **kw)
        if calls["claim"] == 3:
            raise StoreUnavailable(self.target, "the connection dropped during COMMIT (test)", maybe_applied=True)
        return token

    def finish(self: Store, *args: Any, **kw: Any) -> Any:
        calls["finish"] += 1
        status = real_finish(self, *args, **kw)
        if calls["finish"] == 1:
            raise StoreUnavailable(self.target, "the connection dropped during COMMIT (test)", maybe_applied=True)
        return status

    monkeypatch.setattr(Store, "claim", claim)
    monkeypatch.setattr(Store, "finish", finish)
    job = Trainer(_train_surrogate_summary, db=db_path).fit(_dataset())
    status = job.wait(timeout=SETTLE_S + 2)
    assert status["status"] == "COMPLETED"  # the first end was applied: a reader may see it before the retry ran
    wait_until(lambda: calls["finish"] == 2, timeout=SETTLE_S + 2, message="the lost end retried in the background")
    assert calls == {"claim": 3, "finish": 2}
    assert [str(e.to_status) for e in job.events()] == ["QUEUED", "RUNNING", "COMPLETED"]
    assert not [r for r in caplog.records if "could not record" in r.getMessage()]
