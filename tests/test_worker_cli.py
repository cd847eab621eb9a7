"""``jobtrack worker`` as a user meets it (#13): it imports from the folder it runs in (and ``--app-dir``),
says where it looked when it cannot, reports failed jobs in its summary and exit code, runs
``--concurrency N`` jobs at once, and stops on Ctrl-C: the first cancels its jobs, the second exits at once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from jobtrack import Dataset, Trainer, demo
from proc import spawn, wait_until

SCRIPT = shutil.which("jobtrack", path=os.path.dirname(sys.executable)) or "jobtrack"

MYTRAIN = '''
import os, time
from pathlib import Path

def train(ctx):
    print(f"training in {os.getcwd()}")
    ctx.log_epoch(1, validation={"roc_auc": 0.75})
    return {"trained_by": os.getpid()}

def reports_for_10s(ctx):
    for epoch in range(1, 201):  # 10 s, reporting every 50 ms
        ctx.log_epoch(epoch, train={"loss": 1.0 / epoch})
        time.sleep(0.05)
    return {"epochs": 200}

def sleeps_10s(ctx):
    print("sleeping without reporting", flush=True)
    for _ in range(100):
        time.sleep(0.1)
    return {}

def meets_the_other(ctx):
    # Both jobs must run at once: each leaves a marker and waits for the other's.
    folder = Path(ctx.config["folder"])
    (folder / ctx.job_id).touch()
    deadline = time.monotonic() + 20
    while len(list(folder.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other job never ran alongside")
        time.sleep(0.01)
    for i in range(50):
        print(f"{ctx.job_id} line {i}")
    return {}
'''

WORKER = "import sys\nfrom jobtrack import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
"""``jobtrack`` in a ``python -c`` child (for ``proc.spawn``)."""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, ModuleType]]:
    """A user's project folder holding ``mytrain.py``, importable here too (to submit its functions)."""
    folder = tmp_path / "myproject"
    folder.mkdir()
    (folder / "mytrain.py").write_text(MYTRAIN)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "mytrain", raising=False)
    import mytrain  # type: ignore[import-not-found]

    yield folder, mytrain
    sys.modules.pop("mytrain", None)


def _env_without_pythonpath() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=_env_without_pythonpath())


def test_a_worker_started_in_the_project_folder_imports_its_code(
    project: tuple[Path, ModuleType], db_path: str, dataset: Dataset
) -> None:
    folder, mytrain = project
    job = Trainer(mytrain.train, db=db_path, runner="worker").fit(dataset)
    assert job.get_status()["status"] == "QUEUED"
    run = _script("worker", "--burst", "--db", db_path, cwd=folder)  # the console script; no PYTHONPATH
    assert run.returncode == 0, run.stderr
    assert "ran 1 job(s): 1 completed, 0 failed, 0 canceled" in run.stdout
    status = job.wait(timeout=10)
    assert status["status"] == "COMPLETED" and status["result"]["summary"]["trained_by"] != os.getpid()
    assert f"training in {folder}" in run.stdout  # the terminal, and ...
    log = (Path(db_path + "-files") / "jobs" / job.job_id / "log.txt").read_text()
    assert f" training in {folder}\n" in log  # ... the job's log


def test_app_dir_adds_a_folder_and_a_job_that_does_not_import_says_where_the_worker_looked(
    project: tuple[Path, ModuleType], db_path: str, dataset: Dataset, tmp_path: Path
) -> None:
    folder, mytrain = project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    trainer = Trainer(mytrain.train, db=db_path, runner="worker")
    lost, found = trainer.fit(dataset), None
    run = _script("worker", "--burst", "--db", db_path, cwd=elsewhere)
    assert run.returncode == 1, run.stderr  # a job it ran failed
    assert "ran 1 job(s): 0 completed, 1 failed, 0 canceled" in run.stdout
    error = lost.get_status()["result"]["error"]["message"]
    assert "No module named 'mytrain'" in error and str(elsewhere) in error
    assert "--app-dir" in error and "PYTHONPATH" in error
    assert "--app-dir" in (lost.events()[-1].reason or "")

    found = trainer.fit(dataset)
    run = _script("worker", "--burst", "--app-dir", str(folder), "--db", db_path, cwd=elsewhere)
    assert run.returncode == 0, run.stderr
    assert found.wait(timeout=10)["status"] == "COMPLETED"

    bad = _script("worker", "--burst", "--app-dir", str(tmp_path / "missing"), "--db", db_path, cwd=elsewhere)
    assert bad.returncode == 2 and "--app-dir" in bad.stderr and "not a directory" in bad.stderr  # a bad argument
    assert "Traceback" not in bad.stderr


def test_concurrency_runs_jobs_at_once_each_with_its_own_log(
    project: tuple[Path, ModuleType], db_path: str, dataset: Dataset, tmp_path: Path
) -> None:
    folder, mytrain = project
    markers = tmp_path / "markers"
    markers.mkdir()
    trainer = Trainer(mytrain.meets_the_other, db=db_path, runner="worker", config={"folder": str(markers)})
    jobs = [trainer.fit(dataset), trainer.fit(dataset)]
    run = _script("worker", "--burst", "--concurrency", "2", "--db", db_path, cwd=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ran 2 job(s): 2 completed, 0 failed, 0 canceled" in run.stdout
    for job, other in (jobs, reversed(jobs)):
        assert job.get_status()["status"] == "COMPLETED"
        log = (Path(db_path + "-files") / "jobs" / job.job_id / "log.txt").read_text()
        assert log.count(f" {job.job_id} line ") == 50 and other.job_id not in log


def _lines(stream: object) -> tuple[list[str], threading.Thread]:
    """Read a child's output lines as they come, on a thread (for wait_until)."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_cancels_the_running_job_within_two_seconds(
    sig: signal.Signals, project: tuple[Path, ModuleType], db_path: str, dataset: Dataset
) -> None:
    folder, mytrain = project
    job = Trainer(mytrain.reports_for_10s, db=db_path, runner="worker").fit(dataset)
    queued = Trainer(mytrain.train, db=db_path, runner="worker").fit(dataset)
    with spawn(WORKER, "worker", "--db", db_path, "--app-dir", str(folder)) as worker:
        out, reader = _lines(worker.stdout)
        wait_until(lambda: len(job.get_status()["result"].get("epochs", [])) >= 2, timeout=30,
                   message="the job reports epochs")
        worker.send_signal(sig)
        signaled = time.monotonic()
        wait_until(lambda: job.get_status()["status"] == "CANCELED", timeout=2, interval=0.01,
                   message="the job reads CANCELED within 2 s of the signal")
        assert time.monotonic() - signaled < 2
        assert worker.wait(timeout=10) == 0
        reader.join(timeout=5)
    text = "".join(out)
    assert f"{sig.name}: not claiming more jobs" in text and f"waiting for job {job.job_id}" in text
    assert "ran 1 job(s): 0 completed, 0 failed, 1 canceled (stopped by " + sig.name + ")" in text
    assert queued.get_status()["status"] == "QUEUED"  # never claimed
    assert len(job.get_status()["result"]["epochs"]) < 200
    assert job.events()[-1].reason == f"signal {sig.name}"  # as the other runners' jobs stopped by a signal
    log = (Path(db_path + "-files") / "jobs" / job.job_id / "log.txt").read_text()
    assert f"jobtrack worker: {sig.name}: asked this job to cancel" in log


def test_a_second_ctrl_c_exits_at_once_and_the_job_reads_failed(
    project: tuple[Path, ModuleType], db_path: str, dataset: Dataset
) -> None:
    folder, mytrain = project
    job = Trainer(mytrain.sleeps_10s, db=db_path, runner="worker").fit(dataset)
    with spawn(WORKER, "worker", "--db", db_path, "--app-dir", str(folder)) as worker:
        out, reader = _lines(worker.stdout)
        wait_until(lambda: any("sleeping without reporting" in line for line in out), timeout=30,
                   message="the job runs")
        worker.send_signal(signal.SIGINT)
        wait_until(lambda: any(f"waiting for job {job.job_id}" in line for line in out), timeout=10,
                   message="the worker says what it waits for")
        assert job.get_status()["status"] == "RUNNING"  # it never checks: the worker waits
        worker.send_signal(signal.SIGINT)
        second = time.monotonic()
        assert worker.wait(timeout=5) == 128 + signal.SIGINT
        assert time.monotonic() - second < 1.0
        reader.join(timeout=5)
        assert worker.stderr is not None and "second SIGINT: exiting now" in worker.stderr.read()
    status = job.get_status()
    assert status["status"] == "FAILED" and "runner lost" in (job.events()[-1].reason or "")


def test_a_worker_without_jobs_stops_on_the_first_signal(db_path: str) -> None:
    Trainer(demo.train, db=db_path)  # creates the database
    with spawn(WORKER, "worker", "--db", db_path) as worker:
        out, reader = _lines(worker.stdout)
        wait_until(lambda: any("jobtrack worker on" in line for line in out), timeout=30, message="started")
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=5) == 0
        reader.join(timeout=5)
    assert any("ran 0 job(s)" in line for line in out)
