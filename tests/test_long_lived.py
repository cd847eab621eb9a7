"""A process that lives for hours (a notebook, a dashboard, a worker): what it holds does not grow with use."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobtrack import Dataset, JobManager, RunContext, Trainer, runtime
from proc import run_python, spawn


def _train(ctx: object) -> dict[str, int]:
    return {"ok": 1}


def _dataset() -> Dataset:
    return Dataset("d", "binary_classification", "t", tables={"train": [{"id": 1, "y": 0}]})


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _runner_threads() -> int:
    return sum(t.name.startswith(runtime.RUNNER_THREAD_PREFIX) for t in threading.enumerate())


def test_a_loop_over_many_databases_keeps_a_few_runner_threads(tmp_path: Path) -> None:
    before = _runner_threads()
    for i in range(3 * runtime.EXECUTORS_KEPT_IDLE):
        monitor = Trainer(_train, db=str(tmp_path / f"p{i}.db")).fit(_dataset())
        assert monitor.wait()["status"] == "COMPLETED"
    kept = runtime.EXECUTORS_KEPT_IDLE
    assert _eventually(lambda: _runner_threads() - before <= kept), _runner_threads()
    # the databases still run jobs, an old one on a new thread
    assert Trainer(_train, db=str(tmp_path / "p0.db")).fit(_dataset()).wait()["status"] == "COMPLETED"


def test_a_database_this_process_made_can_be_deleted_and_made_again(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    for _ in range(3):  # a notebook cell that starts afresh: rm jobs.db*, then new jobs at the same path
        monitor = Trainer(_train, db=str(db), runner="eager").fit(_dataset())
        assert monitor.get_status()["status"] == "COMPLETED"
        assert [j.job_id for j in JobManager(db=str(db)).list_jobs()] == [monitor.job_id]
        for path in tmp_path.glob("jobs.db*"):
            if path.is_file():
                path.unlink()


INTERRUPTED = '''
import os, signal, sys, threading
from jobtrack import Dataset, Trainer

gone, db = sys.argv[1], sys.argv[2]
ds = Dataset("d", "regression", "t", tables={"train": [{"id": 1}]})
Trainer(lambda ctx: None, db=gone, runner="eager", provenance=False).fit(ds)
for name in os.listdir(os.path.dirname(gone)):  # that database is deleted, its folder stays
    os.remove(os.path.join(os.path.dirname(gone), name))
started = threading.Event()

def held(ctx):
    started.set()
    while True:
        ctx.check_canceled()
        threading.Event().wait(0.01)

job = Trainer(held, db=db, provenance=False).fit(ds)
assert started.wait(30)
print(job.job_id, flush=True)
os.kill(os.getpid(), signal.SIGINT)
threading.Event().wait(60)
'''


def test_ctrl_c_after_a_database_was_deleted_cancels_the_jobs_without_an_error(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    gone, db = tmp_path / "old" / "gone.db", tmp_path / "jobs.db"
    with spawn(INTERRUPTED, str(gone), str(db)) as child:
        out, err = child.communicate(timeout=120)
    assert JobManager(db=str(db)).fetch_job(out.strip()).get_status()["status"] == "CANCELED"
    assert "could not record" not in err, err  # it said the jobs would read FAILED, after 10 s spent on the file
    assert os.listdir(tmp_path / "old") == []  # and no empty database is made where the deleted one was


OUT_OF_FILES = '''
import os, resource, sys
from jobtrack import JobManager, StoreReadOnly, StoreUnavailable, runtime

existing, new = sys.argv[1], sys.argv[2]
JobManager(existing, create=True)
runtime.close_all()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
os.close(held.pop())  # one free: SQLite opens the database file, then fails on its write-ahead log
for db in (existing, new):
    try:
        JobManager(db, create=True).list_jobs()
    except (StoreReadOnly, StoreUnavailable) as exc:
        print(type(exc).__name__, "ulimit -n" in str(exc), "permissions" in str(exc), flush=True)
'''


@pytest.mark.skipif(sys.platform == "win32", reason="needs the resource module")
def test_running_out_of_file_descriptors_is_not_called_a_permissions_problem(tmp_path: Path) -> None:
    out = run_python(OUT_OF_FILES, str(tmp_path / "old.db"), str(tmp_path / "new.db")).stdout
    # both said "Cannot write ...: unable to open database file ... fix the permissions" (StoreReadOnly)
    assert out.splitlines() == ["StoreUnavailable True False"] * 2, out


def test_an_epoch_written_as_the_file_is_closed_under_it_is_stored(db_path: str) -> None:
    # Closing the open files (runtime.close_all) between the epoch
    # write taking its connection and entering the fork gate left it on a closed connection: "Cannot operate on a
    # closed database" reached the training code.
    gate = runtime.current().fork_gate
    real = gate.enter

    def enter() -> None:
        if sys._getframe(1).f_code.co_name == "write_call":
            del gate.enter  # once
            runtime.close_all()
        real()

    def train(ctx: RunContext) -> None:
        ctx.log_epoch(0, train={"loss": 1.0}, validation={"roc_auc": 0.5})
        gate.enter = enter  # type: ignore[method-assign]
        ctx.log_epoch(1, train={"loss": 0.5}, validation={"roc_auc": 0.7})

    status = Trainer(train, db=db_path, runner="eager").fit(_dataset()).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1]


def test_the_write_ahead_log_shrinks_back_after_a_large_transaction(db_path: str) -> None:
    # A long-lived process (a worker, the dashboard, a notebook) kept the -wal as large as the largest transaction
    # it ever saw (an export, an import, a prune) for as long as it had the database open.
    def predict(ctx: RunContext) -> None:
        ctx.export("predictions", [{"id": i, "text": "x" * 200} for i in range(30_000)])  # ~10 MB in the -wal

    data = Dataset("d", "binary_classification", "t", tables={"train": [{"id": 1, "y": 0}], "test": [{"id": 1}]})
    trainer = Trainer(_train, predict, db=db_path, runner="eager")
    model = trainer.fit(data)
    assert trainer.predict("big", model_run_id=model.model_run_id).get_status()["status"] == "COMPLETED"
    trainer.fit(data)  # a small write afterwards: the log starts over, at most 4 MiB long
    assert os.path.getsize(db_path + "-wal") <= 4 * 1024 * 1024
