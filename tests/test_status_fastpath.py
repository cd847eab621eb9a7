"""`jobtrack status` of a finished job reads its SQLite file directly, read-only (``jobtrack.store.peek``, #14).

The fast path must answer exactly as the full path (``JobManager(...).fetch_job(id).get_status()``) for every
finished job, create no file, and hand every other case back (None) so that the command line behaves as it
did before: the same output for a running job, the same error text and exit code for a bad id or database.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from jobtrack import Dataset, JobManager, RunContext, Trainer, cli, cliutil, demo, runtime
from jobtrack.config import absolute_path, default_db_path, default_db_text
from jobtrack.errors import JobtrackError
from jobtrack.statusdoc import STATUS_COLUMNS
from jobtrack.store import Store, peek
from jobtrack.store.records import STATUS_COLUMNS as RECORD_STATUS_COLUMNS
from jobtrack.store.version import SCHEMA_VERSION
from rows import create

BIG = 2**70
TEXT = "héllo ✓ 日本 \U0001f600 \\ \" \x7f"


def train_odd_values(ctx: RunContext) -> dict[str, Any]:
    """Epochs with a NaN (stored as null) and a summary with integers beyond 64 bits and unicode."""
    ctx.log_epoch(1, train={"loss": float("nan"), "n": BIG}, validation={"auc": 0.5})
    ctx.log_epoch(2, train={"loss": 0.25, "n": -BIG}, validation={"auc": float("inf")})
    return {"big": BIG, "negative": -(2**65), "text": TEXT, "nested": [{"x": None, "y": [1.5, -0.0]}]}


def train_fail(ctx: RunContext) -> None:
    ctx.log_epoch(1, train={"loss": 1.0})
    raise ValueError(f"bööm ✗ {BIG}")


def full_status(db: str, job_id: str) -> dict[str, Any]:
    """What the full path says: the Store's get_status() (closed again, so the file is as a new process finds it)."""
    try:
        return dict(JobManager(db).fetch_job(job_id).get_status())
    finally:
        runtime.close_all()


def cli_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listing(directory: str) -> dict[str, tuple[int, int]]:
    """Every file of a folder with its size and modification time: what "nothing created or changed" compares."""
    return {name: (os.stat(os.path.join(directory, name)).st_size, os.stat(os.path.join(directory, name)).st_mtime_ns)
            for name in os.listdir(directory)}


@pytest.fixture
def finished(db_path: str, tmp_path: Path) -> dict[str, str]:
    """A database with COMPLETED (odd values), FAILED, CANCELED, train and inference (exports) jobs, closed."""
    ds = Dataset("fast", "binary_classification", "t", tables=demo.write_csv_tables(tmp_path / "data", n=40))
    odd = Trainer(train_odd_values, db=db_path, runner="eager").fit(ds)
    failed = Trainer(train_fail, db=db_path, runner="eager").fit(ds)
    canceled = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 2}).fit(ds)
    canceled.cancel()
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    train = trainer.fit(ds)
    pred = trainer.predict("fast_out", model_run_id=train.model_run_id)
    runtime.close_all()  # as a new `jobtrack status` process finds the file: no -wal, no -shm
    return {"odd": odd.job_id, "failed": failed.job_id, "canceled": canceled.job_id, "train": train.job_id,
            "pred": pred.job_id}


def test_the_fast_path_says_what_get_status_says(db_path: str, finished: dict[str, str]) -> None:
    for job_id in finished.values():
        fast = peek.finished_status(db_path, job_id)
        assert fast is not None, job_id
        assert fast == full_status(db_path, job_id)
        assert json.dumps(fast, indent=2) == json.dumps(full_status(db_path, job_id), indent=2)  # order too
    odd = peek.finished_status(db_path, finished["odd"])
    assert odd is not None and odd["status"] == "COMPLETED"
    assert odd["result"]["summary"]["big"] == BIG and odd["result"]["summary"]["text"] == TEXT
    assert odd["result"]["epochs"][0]["train"]["loss"] is None  # NaN is stored as null
    failed = peek.finished_status(db_path, finished["failed"])
    assert failed is not None and failed["status"] == "FAILED" and "bööm" in failed["result"]["error"]["message"]
    canceled = peek.finished_status(db_path, finished["canceled"])
    assert canceled is not None and canceled["status"] == "CANCELED"
    pred = peek.finished_status(db_path, finished["pred"])
    assert pred is not None and pred["export_paths"] and pred["source_views"]


def test_the_command_prints_the_same_through_either_path(
    db_path: str, finished: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for job_id in finished.values():
        code, out, err = cli_run(capsys, "status", job_id, "--db", db_path)
        assert (code, err) == (0, "")
        assert out == json.dumps(full_status(db_path, job_id), indent=2) + "\n"


def test_a_unique_prefix_is_resolved_as_the_manager_does(
    db_path: str, finished: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = finished["failed"]
    prefix = next(job_id[:n] for n in range(len("job_") + 1, len(job_id))
                  if sum(j.startswith(job_id[:n]) for j in finished.values()) == 1)
    assert peek.finished_status(db_path, prefix) == full_status(db_path, job_id)
    code, out, _ = cli_run(capsys, "status", prefix, "--db", db_path)
    assert code == 0 and json.loads(out)["job_id"] == job_id


def test_the_database_is_found_where_the_full_path_finds_it(
    db_path: str, finished: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job_id = finished["odd"]
    want = full_status(db_path, job_id)
    monkeypatch.setenv("JOBTRACK_DB", db_path)
    assert peek.finished_status(None, job_id) == want  # $JOBTRACK_DB
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert peek.finished_status("./sub/..//jobs.db", job_id) == want  # a relative spelling
    assert peek.finished_status(f"sqlite:///{db_path}", job_id) == want
    monkeypatch.delenv("JOBTRACK_DB")
    assert default_db_text() == str(default_db_path()) == str(tmp_path / "xdg" / "jobtrack" / "jobtrack.db")
    assert peek.finished_status(None, job_id) is None  # the default database: not there


@pytest.mark.parametrize("raw", ["jobs.db", "./a//b/./c.db", "../x.db", "a/b/", "~", "~/x//y/", "/", "//a/b",
                                 "///a", "./~/x", "a/~/b", "~root/x", "%41?x#y"])
def test_paths_are_spelled_as_pathlib_spells_them(raw: str) -> None:
    assert absolute_path(raw) == str(Path(raw).expanduser().absolute())


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.lists(st.sampled_from(["", ".", "..", "a", "b c", "x.db", "~", "~root", "~nobody-xyz"]),
                                   max_size=6))
def test_any_path_is_spelled_as_pathlib_spells_it(slashes: int, parts: list[str]) -> None:
    raw = "/" * slashes + "/".join(parts)
    try:
        expected: str | type[RuntimeError] = str(Path(raw).expanduser().absolute())
    except RuntimeError:  # "~nobody-xyz": no such user, no home directory
        expected = RuntimeError
    if expected is RuntimeError:
        with pytest.raises(RuntimeError):
            absolute_path(raw)
    else:
        assert absolute_path(raw) == expected


def test_the_column_lists_agree() -> None:
    assert STATUS_COLUMNS == RECORD_STATUS_COLUMNS


# -- every other case goes to the full path, which behaves as before -----------------------------------------


def test_a_running_or_queued_job_takes_the_full_path(
    db_path: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    create(store, "job_running")
    store.claim("job_running")  # claimed by this (living) process
    create(store, "job_queued")
    for job_id, status in (("job_running", "RUNNING"), ("job_queued", "QUEUED")):
        assert peek.finished_status(db_path, job_id) is None
        code, out, _ = cli_run(capsys, "status", job_id, "--db", db_path)
        assert code == 0 and json.loads(out) == dict(JobManager(db_path).fetch_job(job_id).get_status())
        assert json.loads(out)["status"] == status


def test_no_match_or_an_ambiguous_prefix_reports_as_before(
    db_path: str, finished: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for job_id in ("job_", "job_nope", ""):
        assert peek.finished_status(db_path, job_id) is None
        try:
            JobManager(db_path).resolve_job_id(job_id)
        except JobtrackError as exc:
            expected = f"jobtrack: error: {cliutil.error_line(exc, argparse.Namespace(db=db_path))}\n"
        else:
            raise AssertionError(f"{job_id!r} names one job")
        code, out, err = cli_run(capsys, "status", job_id, "--db", db_path)
        assert (code, out, err) == (2 if job_id == "" else 1, "", expected)  # an empty id is a usage error
    assert "matches 5 jobs" in cli_run(capsys, "status", "job_", "--db", db_path)[2]


def test_a_missing_database_is_the_same_error_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none" / "jobs.db"
    assert peek.finished_status(str(missing), "job_x") is None
    code, out, err = cli_run(capsys, "status", "job_x", "--db", str(missing))
    assert (code, out) == (1, "")
    assert err == f"jobtrack: error: No jobtrack database at {missing}; nothing was created. Check the path (--db " \
                  "or JOBTRACK_DB); submitting a job creates the database.\n"
    assert not (tmp_path / "none").exists()


def test_a_server_url_is_not_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: calls.append(a))
    assert peek.finished_status("postgresql+psycopg://someone@127.0.0.1:1/nothing", "job_x") is None
    assert calls == []


@pytest.mark.parametrize("change", ["newer", "older", "foreign", "not sqlite", "directory"])
def test_another_schema_or_file_takes_the_full_path(
    db_path: str, finished: dict[str, str], change: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = finished["odd"]
    if change in ("newer", "older", "foreign"):
        key, value = {"newer": ("schema_version", str(SCHEMA_VERSION + 1)),
                      "older": ("schema_version", str(SCHEMA_VERSION - 1)),
                      "foreign": ("application", "something else")}[change]
        with closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute("UPDATE jobtrack_meta SET value = ? WHERE key = ?", (value, key))
    elif change == "not sqlite":
        Path(db_path).write_bytes(b"not a database at all" * 100)
    else:
        os.remove(db_path)
        os.mkdir(db_path)
    assert peek.finished_status(db_path, job_id) is None
    try:
        expected: tuple[int, str, str] = (0, json.dumps(full_status(db_path, job_id), indent=2) + "\n", "")
    except JobtrackError as exc:
        expected = (1, "", f"jobtrack: error: {cliutil.error_line(exc, argparse.Namespace(db=db_path))}\n")
    assert cli_run(capsys, "status", job_id, "--db", db_path) == expected
    assert expected[0] == (0 if change == "older" else 1)  # an older schema is upgraded by the full path


def test_half_a_writers_files_takes_the_full_path(db_path: str, finished: dict[str, str]) -> None:
    Path(db_path + "-wal").write_bytes(b"")  # a -wal without its -shm: not the fast path's to judge
    assert peek.finished_status(db_path, finished["odd"]) is None


# -- nothing is created or changed ---------------------------------------------------------------------------


def test_the_fast_path_creates_no_file(db_path: str, finished: dict[str, str]) -> None:
    folder = os.path.dirname(db_path)
    before = listing(folder)
    for job_id in [*finished.values(), "job_", "job_nope"]:
        peek.finished_status(db_path, job_id)
    assert listing(folder) == before
    assert not any(name.endswith(("-wal", "-shm", "-journal")) for name in before)


def test_a_read_only_folder_and_file_are_read_and_left_alone(
    db_path: str, finished: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = os.path.dirname(db_path)
    want = {job_id: full_status(db_path, job_id) for job_id in finished.values()}
    os.chmod(db_path, 0o444)
    os.chmod(folder, 0o555)
    try:
        before = listing(folder)
        for job_id in finished.values():
            assert peek.finished_status(db_path, job_id) == want[job_id]
            assert listing(folder) == before
            code, out, _ = cli_run(capsys, "status", job_id, "--db", db_path)
            assert code == 0 and json.loads(out) == want[job_id]
    finally:
        os.chmod(folder, 0o755)
        os.chmod(db_path, 0o644)


@pytest.fixture
def reader_elsewhere(db_path: str, finished: dict[str, str]) -> Iterator[Callable[[], None]]:
    """Another process holding the database open (its -wal and -shm exist, and stay: the WAL is not checkpointed
    into the file while it reads) until the test ends; calling it checks they are there."""
    code = ("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute('SELECT 1 FROM jobs').fetchall()\n"
            "print('ready', flush=True)\nsys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, db_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        def wal_in_use() -> None:
            assert os.path.exists(db_path + "-wal") and os.path.exists(db_path + "-shm")

        yield wal_in_use
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # its readline() returns: it exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def test_with_a_writer_active_the_wal_is_read_through(
    db_path: str, finished: dict[str, str], reader_elsewhere: Callable[[], None], tmp_path: Path
) -> None:
    reader_elsewhere()
    ds = Dataset("fast", "binary_classification", "t", tables=demo.write_csv_tables(tmp_path / "more", n=40))
    late = Trainer(train_odd_values, db=db_path, runner="eager").fit(ds).job_id  # in the WAL only, so far
    runtime.close_all()
    reader_elsewhere()
    folder = os.path.dirname(db_path)
    before = listing(folder)
    assert peek.finished_status(db_path, late) == full_status(db_path, late)
    assert peek.finished_status(db_path, finished["failed"]) == full_status(db_path, finished["failed"])
    after = listing(folder)
    assert sorted(after) == sorted(before)
    JobManager(db_path).prune("0s")  # gone for every reader at once, the fast path too
    runtime.close_all()
    assert peek.finished_status(db_path, late) is None

