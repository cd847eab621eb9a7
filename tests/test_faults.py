"""Faults with real processes: SIGKILLed runners, fencing, signals, a held lock, and bad input that changes nothing."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sqlite3
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from jobtrack import (
    Dataset,
    InvalidArgument,
    JobManager,
    NetworkFilesystem,
    NotAJobtrackDatabase,
    RunnerFenced,
    StoreBusy,
    Trainer,
    demo,
    liveness,
    runtime,
    testing,
)
from jobtrack.states import JobStatus, is_allowed
from jobtrack.store import Store
from jobtrack.store.db import check_local_filesystem
from proc import run_python, spawn, wait_until

# A child that trains slowly with the thread runner and prints its job id.
SLOW_TRAINER = """
import sys
from jobtrack import Dataset, Trainer, demo
db = sys.argv[1]
t = Trainer(demo.train, config={"epochs": 10000, "epoch_pause_s": 0.02}, db=db)
m = t.fit(Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(40, seed=1)}))
print(m.job_id, flush=True)
m.wait()
"""


def _raw_rows(db: str, job_id: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall()
        events = conn.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return job, events
    finally:
        conn.close()


def test_sigkilled_runner_reads_failed_at_the_next_read_and_keeps_its_epochs(db_path: str) -> None:
    with spawn(SLOW_TRAINER, db_path) as child:
        job_id = child.stdout.readline().strip()  # type: ignore[union-attr]
        manager = JobManager(db_path)
        wait_until(lambda: len(manager.fetch_job(job_id).get_status()["result"].get("epochs", [])) >= 3,
                   message="three epochs reported")
        assert manager.fetch_job(job_id).get_status()["status"] == "RUNNING"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        status = manager.fetch_job(job_id).get_status()  # the very next read, no sweeper, no lease wait
    assert status["status"] == "FAILED"
    assert len(status["result"]["epochs"]) >= 3
    assert status["finished_at"] is not None
    last = manager.fetch_job(job_id).events()[-1]
    assert (last.from_status, last.to_status, last.reason) == ("RUNNING", "FAILED", "runner lost")
    error = status["result"]["error"]  # a poller of get_status() learns why, as for any failed job
    assert error["type"] == "RunnerLost" and f"pid {child.pid}" in error["message"] and error["traceback"] == ""


def test_cancel_of_a_sigkilled_runners_job_returns_failed_not_running(db_path: str) -> None:
    with spawn(SLOW_TRAINER, db_path) as child:
        job_id = child.stdout.readline().strip()  # type: ignore[union-attr]
        manager = JobManager(db_path)
        wait_until(lambda: manager.fetch_job(job_id).get_status()["result"].get("epochs"),
                   message="first epoch reported")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        # nothing is left to ask to stop: the status after the call is what get_status() reads
        assert manager.cancel_job(job_id) == "FAILED"
    assert manager.fetch_job(job_id).cancel() == "FAILED"
    status = manager.fetch_job(job_id).get_status()
    assert status["status"] == "FAILED" and status["result"]["error"]["type"] == "RunnerLost"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_running_and_queued_jobs_before_exit(db_path: str, sig: signal.Signals) -> None:
    code = SLOW_TRAINER.replace("print(m.job_id, flush=True)",
                                "m2 = t.fit(Dataset('d', 'binary_classification', 't', "
                                "tables={'train': demo.make_rows(40, seed=2)}))\n"
                                "print(m.job_id, m2.job_id, flush=True)")
    with spawn(code, db_path) as child:
        running_id, queued_id = child.stdout.readline().split()  # type: ignore[union-attr]
        manager = JobManager(db_path)
        wait_until(lambda: manager.fetch_job(running_id).get_status()["result"].get("epochs"),
                   message="first epoch reported")
        child.send_signal(sig)
        code_ = child.wait(timeout=30)
        # SIGTERM kills as before; SIGINT raises KeyboardInterrupt, so Python exits with status 1 (or 130)
        assert code_ == -signal.SIGTERM if sig == signal.SIGTERM else code_ != 0
    for job_id in (running_id, queued_id):
        last = manager.fetch_job(job_id).events()[-1]
        assert last.to_status == "CANCELED" and last.reason == f"signal {sig.name}"


# A job whose code fails because of the signal itself: a terminal's Ctrl-C reaches the whole process group, so
# a torch DataLoader's worker processes die of it and the training loop raises RuntimeError.
KILLED_WORKERS = """
import sys, time
from jobtrack import Dataset, Trainer
def train(ctx):
    ctx.log_epoch(0, train={"loss": 1.0})
    while not ctx.stopped_by_signal:
        time.sleep(0.01)
    raise RuntimeError("DataLoader worker (pid(s) 123) exited unexpectedly")
m = Trainer(train, db=sys.argv[1], provenance=False).fit(Dataset("d", "regression", "t", tables={"train": [{"a": 1}]}))
print(m.job_id, flush=True)
m.wait()
"""


def test_an_error_the_signal_caused_in_the_code_is_a_cancel_not_a_failure(db_path: str) -> None:
    """It was recorded FAILED when the runner thread got there before the signal's recorder, else a warning said
    the FAILED end was refused because "the job was taken over or declared lost"."""
    with spawn(KILLED_WORKERS, db_path) as child:
        job_id = child.stdout.readline().strip()  # type: ignore[union-attr]
        manager = JobManager(db_path)
        wait_until(lambda: manager.fetch_job(job_id).get_status()["result"].get("epochs"),
                   message="first epoch reported")
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    job = manager.fetch_job(job_id)
    last = job.events()[-1]
    assert (last.to_status, last.reason) == ("CANCELED", "signal SIGINT")
    assert "error" not in job.get_status()["result"]
    assert "could not record" not in err and "taken over" not in err, err
    log = job.log_path.read_text()
    assert "job canceled by SIGINT; its code then raised RuntimeError: DataLoader worker" in log
    assert 'File "<string>", line 8, in train' in log  # with its traceback


IN_A_POOL_WORKER = """
import json, multiprocessing, sys, time
from jobtrack import Dataset, JobManager, Trainer, demo

def train_there(db, runner):  # a multiprocessing child (a Pool worker) running a job
    t = Trainer(demo.train, config={"epochs": 10000, "epoch_pause_s": 0.02}, db=db, runner=runner)
    t.fit(Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(40, seed=1)})).wait()

db, runner = sys.argv[1], sys.argv[2]
child = multiprocessing.get_context("fork").Process(target=train_there, args=(db, runner))
child.start()
deadline = time.monotonic() + 30
manager = JobManager(db, create=True)
while time.monotonic() < deadline and not any(j["result"].get("epochs") for j in manager.show_jobs()):
    time.sleep(0.01)
child.terminate()  # SIGTERM, as Pool.terminate() sends its workers
child.join(30)
last = manager.fetch_job(manager.show_jobs()[0]["job_id"]).events()[-1]
print(json.dumps([child.exitcode, last.to_status, last.reason]))
"""


@pytest.mark.parametrize("runner", ["eager", "thread"])
def test_sigterm_to_a_multiprocessing_child_cancels_its_jobs_and_kills_it(db_path: str, runner: str) -> None:
    # A forked multiprocessing child ends with os._exit, which runs no atexit handler: its eager job used to be
    # left to the signal's recorder thread, cut short, and read FAILED (runner lost).
    out = run_python(IN_A_POOL_WORKER, db_path, runner, timeout=90)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [-signal.SIGTERM, "CANCELED", "signal SIGTERM"], out


SECOND_SIGNAL_IN_A_POOL_WORKER = """
import json, multiprocessing, os, signal, sys, time
from jobtrack import Dataset, JobManager, Trainer

def train(ctx):
    ctx.log_epoch(1, validation={"rmse": 1.0})
    time.sleep(60)  # code that does not check for a cancel: the child's exit waits for it

def train_there(db):
    Trainer(train, db=db, provenance=False).fit(Dataset("d", "regression", "t", tables={"train": []})).wait()

def until(predicate):
    deadline = time.monotonic() + 30
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)

db = sys.argv[1]
child = multiprocessing.get_context("fork").Process(target=train_there, args=(db,))
child.start()
manager = JobManager(db, create=True)
until(lambda: any(j["result"].get("epochs") for j in manager.show_jobs()))
os.kill(child.pid, signal.SIGINT)  # Ctrl-C: the job is canceled, the child's exit waits for its code
until(lambda: manager.show_jobs()[0]["status"] == "CANCELED")
child.terminate()  # then Pool.terminate()'s SIGTERM stops that wait
child.join(30)
print(json.dumps([child.exitcode, manager.show_jobs()[0]["status"]]))
"""


def test_a_second_signal_to_a_multiprocessing_child_still_kills_it_by_the_signal(db_path: str) -> None:
    out = run_python(SECOND_SIGNAL_IN_A_POOL_WORKER, db_path, timeout=90)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [-signal.SIGTERM, "CANCELED"], out


def test_a_canceled_process_jobs_end_is_left_to_its_living_parent(store: Store, db_path: str) -> None:
    """The process runner's parent terminates a child that ignores a cancel and records CANCELED; a reader that
    sees the child gone first must not record FAILED (runner lost) in its place. Without a cancel it does."""
    me = liveness.current()
    for job_id in ("job_asked", "job_crashed"):
        store.create_job({"id": job_id, "job_type": "train", "experiment_name": "e", "runner_kind": "process",
                          "submitter": me.encode()})
        store.claim(job_id)
        with closing(sqlite3.connect(db_path)) as conn:  # its child: this pid's number, another process's start
            conn.execute("UPDATE jobs SET runner = ? WHERE id = ?", (f"{me.host}|{me.pid}|not-this-one", job_id))
            conn.commit()
    assert store.request_cancel("job_asked") is JobStatus.RUNNING
    assert store.get_job("job_asked").status is JobStatus.RUNNING  # the parent (this process) will record it
    assert store.get_job("job_crashed").status is JobStatus.FAILED  # no cancel: the child's death is the verdict


def test_fenced_runner_cannot_overwrite_a_lost_verdict(store: Store, db_path: str) -> None:
    store.create_job({"id": "job_f", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    token = store.claim("job_f")
    # Pretend the runner lives on another host (no pid check possible), then let its lease expire.
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE jobs SET runner = 'elsewhere|1|x' WHERE id = 'job_f'")
    conn.commit()
    conn.close()
    with testing.shift_clock(timedelta(hours=1)):
        assert store.get_job("job_f").status == "FAILED"
    assert runtime.clock_offset() == timedelta(0)
    before = _raw_rows(db_path, "job_f")
    with pytest.raises(RunnerFenced):
        store.add_epoch("job_f", token, 1, "{}", "{}")
    with pytest.raises(RunnerFenced):
        store.finish("job_f", token, JobStatus.COMPLETED, reason="late")
    with pytest.raises(RunnerFenced):
        store.heartbeat("job_f", token)
    assert _raw_rows(db_path, "job_f") == before
    assert store.events("job_f")[-1].reason == "runner lost (lease expired)"
    error = json.loads(sqlite3.connect(db_path).execute("SELECT result_json FROM jobs WHERE id = 'job_f'")
                       .fetchone()[0])["error"]
    assert error["type"] == "RunnerLost" and "pid 1 on elsewhere" in error["message"] and "lease" in error["message"]


def test_live_but_slow_runner_on_this_host_is_never_declared_dead(db_path: str) -> None:
    with spawn(SLOW_TRAINER, db_path) as child:
        job_id = child.stdout.readline().strip()  # type: ignore[union-attr]
        manager = JobManager(db_path)
        wait_until(lambda: manager.fetch_job(job_id).get_status()["status"] == "RUNNING", message="running")
        os.kill(child.pid, signal.SIGSTOP)  # frozen: no heartbeats, no epochs
        try:
            with testing.shift_clock(timedelta(hours=2)):  # far past any lease
                assert manager.fetch_job(job_id).get_status()["status"] == "RUNNING"
        finally:
            os.kill(child.pid, signal.SIGCONT)


def test_held_lock_gives_storebusy_naming_the_holder(db_path: str) -> None:
    Store.open(db_path)  # create the database first
    holder = ("import fcntl, sys, time\nfh = open(sys.argv[1], 'a')\nfcntl.flock(fh, fcntl.LOCK_EX)\n"
              "print('held', flush=True)\ntime.sleep(60)\n")
    with spawn(holder, db_path + ".lock") as child:
        assert child.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        store = Store(db_path, lock_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreBusy) as info:
            store.create_job({"id": "job_b", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
        assert time.monotonic() - started < 5
        assert f"pid {child.pid}" in str(info.value)
        assert isinstance(info.value, TimeoutError)
    assert JobManager(db_path).list_jobs() == []


def test_non_serializable_summary_completes_the_job_and_names_the_key(db_path: str) -> None:
    def train(ctx):  # type: ignore[no-untyped-def]
        ctx.log_epoch(1, train={"loss": 0.5})
        return {"ok": 1, "weights": object()}

    trainer = Trainer(train, db=db_path, runner="eager")
    status = trainer.fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})).get_status()
    assert status["status"] == "COMPLETED"  # the model was trained: a summary never throws that away (#13)
    assert status["result"]["summary"] == {"ok": 1, "weights": "<not stored: object>"}
    assert status["result"]["summary_error"]["type"] == "NotSerializable"
    assert "['weights']" in status["result"]["summary_error"]["message"]
    assert status["result"]["epochs"][0]["train"] == {"loss": 0.5}


def test_non_number_metric_fails_the_job_naming_the_metric(db_path: str) -> None:
    def train(ctx):  # type: ignore[no-untyped-def]
        ctx.log_epoch(1, validation={"rmse": "low"})

    trainer = Trainer(train, db=db_path, runner="eager")
    status = trainer.fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})).get_status()
    assert status["status"] == "FAILED"
    assert "validation metrics['rmse']" in status["result"]["error"]["message"]
    assert "epochs" not in status["result"]


def test_nan_and_infinite_metrics_are_stored_as_null_and_skipped_for_best(db_path: str) -> None:
    def train(ctx):  # type: ignore[no-untyped-def]
        ctx.log_epoch(1, train={"loss": math.nan}, validation={"rmse": 2.0})
        ctx.log_epoch(2, train={"loss": math.inf}, validation={"rmse": -math.inf})
        ctx.log_epoch(3, train={"loss": 1.0}, validation={"rmse": 1.5})

    trainer = Trainer(train, db=db_path, runner="eager")
    status = trainer.fit(Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})).get_status()
    assert status["status"] == "COMPLETED"
    epochs = status["result"]["epochs"]
    assert epochs[0]["train"] == {"loss": None} and epochs[1]["validation"] == {"rmse": None}
    assert (status["result"]["best_epoch"], status["result"]["best_metric"]) == (3, 1.5)
    json.loads(json.dumps(status, allow_nan=False))  # strict JSON all the way


@pytest.mark.parametrize("alias", ["../escape", "a/b", ".hidden", "x;DROP TABLE jobs", "sp ace", ""])
def test_output_alias_that_would_escape_or_break_sql_is_refused(db_path: str, alias: str) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager")
    ds = Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(30, seed=1),
                                                            "test": demo.make_rows(10, seed=2)})
    with pytest.raises(InvalidArgument, match="not allowed"):
        trainer.fit_predict(ds, alias)
    assert JobManager(db_path).list_jobs() == []


def test_truncated_database_is_refused_and_left_alone(db_path: str, tmp_path: Path) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 2})
    trainer.fit(Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(30, seed=1)}))
    runtime.close_all()  # every store of this process closed and forgotten
    data = Path(db_path).read_bytes()
    broken = tmp_path / "broken.db"
    broken.write_bytes(data[: len(data) // 3] + b"\x00garbage" * 100)
    before = broken.read_bytes()
    with pytest.raises(NotAJobtrackDatabase):
        JobManager(str(broken))
    assert broken.read_bytes() == before
    assert not Path(str(broken) + "-wal").exists()


def test_network_filesystem_is_refused_unless_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path}/nfs nfs4 rw 0 0\n")
    check_local_filesystem(str(tmp_path / "local.db"), str(mounts))
    with pytest.raises(NetworkFilesystem, match="nfs4"):
        check_local_filesystem(str(tmp_path / "nfs" / "jobs.db"), str(mounts))
    monkeypatch.setenv("JOBTRACK_ALLOW_NETWORK_FS", "1")
    check_local_filesystem(str(tmp_path / "nfs" / "jobs.db"), str(mounts))


def test_files_are_private_to_the_user(db_path: str) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
    ds = Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(30, seed=1),
                                                            "test": demo.make_rows(10, seed=2)})
    status = trainer.fit_predict(ds, "priv").get_status()
    log = Path(db_path + "-files") / "jobs" / status["job_id"] / "log.txt"
    files = Path(db_path + "-files")
    for path in (Path(db_path), Path(db_path + ".lock"), log, Path(status["export_paths"]["predictions"]),
                 files, files / "jobs", log.parent, files / "models"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def test_every_history_is_a_legal_path(db_path: str) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 2})
    ds = Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(30, seed=1)})
    m = trainer.fit(ds)
    history = m.events()
    assert history[0].from_status is None and history[0].to_status == "QUEUED"
    for prev, ev in itertools.pairwise(history):
        assert ev.from_status == prev.to_status and is_allowed(ev.from_status, ev.to_status)


FULL_DISK = """
import os, resource, signal, sys
from jobtrack import Dataset, JobManager, StoreError, Trainer
db = sys.argv[1]
ds = Dataset("d", "regression", "t", tables={"train": [{"x": 1}]})
first = Trainer(lambda ctx: None, db=db, runner="eager").fit(ds).job_id
# A file-size limit just above the database: the next big write fails as on a full disk.
limit = os.path.getsize(db) + os.path.getsize(db + "-wal") + 20000
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    Trainer(lambda ctx: None, db=db, runner="eager", config={"blob": "x" * 200000}).fit(ds)
except StoreError as exc:
    print("typed", type(exc).__name__, "|", str(exc).replace(chr(10), " "))
print([j.job_id for j in JobManager(db).list_jobs()] == [first])
"""


def test_a_full_disk_is_a_typed_error_and_loses_nothing(db_path: str) -> None:
    from proc import run_python

    out = run_python(FULL_DISK, db_path).stdout.splitlines()
    # StoreError itself, or its StoreUnavailable (disk full, I/O error, lost connection); not busy, not read-only
    assert out[0].startswith(("typed StoreError |", "typed StoreUnavailable |")), out
    assert "nothing was written" in out[0]
    assert out[1] == "True"
    assert [j.job_id for j in JobManager(db_path).list_jobs()] != []  # still readable afterwards


CANCELER = """
import sys
from jobtrack import JobManager
manager = JobManager(sys.argv[1])
for job_id in sys.argv[2:]:
    manager.cancel_job(job_id)
    manager.cancel_job(job_id)
"""


def test_cancels_from_two_processes_racing_completion_leave_one_legal_ending(db_path: str) -> None:
    import subprocess
    import sys

    from proc import child_env

    store = Store.open(db_path)
    tokens = {}
    for n in range(40):
        job_id = f"job_c{n:02d}"
        store.create_job({"id": job_id, "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
        tokens[job_id] = store.claim(job_id)
    cancelers = [subprocess.Popen([sys.executable, "-c", CANCELER, db_path, *tokens], env=child_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    endings = {}
    for job_id, token in tokens.items():  # the runner completes each job while the cancels arrive
        endings[job_id] = store.finish(job_id, token, JobStatus.COMPLETED, reason="completed")
    for c in cancelers:
        _, err = c.communicate(timeout=60)
        assert c.returncode == 0, err
    for job_id in tokens:
        events = store.events(job_id)
        assert [e.to_status for e in events][:2] == ["QUEUED", "RUNNING"] and len(events) == 3
        assert events[-1].to_status == endings[job_id] in (JobStatus.COMPLETED, JobStatus.CANCELED)
        assert store.get_job(job_id).status == endings[job_id]


LOST_SIGTERM = """
import os, signal, sys, time
from jobtrack import Dataset, JobManager, Trainer

def train(ctx):
    for epoch in range(100_000):
        ctx.log_epoch(epoch, train={"loss": 1.0})
        time.sleep(0.02)

ds = Dataset("d", "regression", "t", tables={"train": [{"a": 1}]})
job = Trainer(train, db=sys.argv[1], provenance=False).fit(ds)
while not JobManager(sys.argv[1]).fetch_job(job.job_id).get_status()["result"].get("epochs"):
    time.sleep(0.01)
print(job.job_id, flush=True)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
except KeyboardInterrupt:
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # Pool.terminate() after a Ctrl-C to the whole process group
        time.sleep(10)
    except SystemExit:
        pass  # lost, as threading.Condition.wait loses it while it restores its lock
    print("alive after SIGTERM", flush=True)
    time.sleep(60)
"""


def test_a_sigterm_soon_after_another_signal_ends_the_process_even_if_its_exception_was_lost(db_path: str) -> None:
    """A Pool worker hung: Ctrl-C's KeyboardInterrupt was unwinding a Condition.wait when the pool's SIGTERM came,
    and its SystemExit turned into "release unlocked lock", which the worker caught; it then waited forever for a
    task. A SIGTERM so soon after another signal is now sent again until the process exits, whatever became of
    its exception; the process dies of it with its jobs recorded."""
    with spawn(LOST_SIGTERM, db_path) as child:
        out, err = child.communicate(timeout=40)
    assert "alive after SIGTERM" in out and child.returncode == -signal.SIGTERM, err  # lost, sent again: dead
    job_id = out.split()[0]
    status = JobManager(db_path).fetch_job(job_id).get_status()["status"]
    assert status == "CANCELED", err
