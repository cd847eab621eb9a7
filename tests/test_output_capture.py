"""Output capture (#13): what a job's code prints, logs and writes to fd 1/2 is in its log, for every runner.

Thread and eager jobs are captured by thread (``sys.stdout``/``sys.stderr`` writes and logging records
of the job's thread); process and worker jobs by file descriptor, so ``os.write(1, ...)`` from C code
is caught there too. The terminal still gets everything.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from jobtrack import Dataset, JobManager, Trainer, cli
from jobtrack.config import DEFAULT_MAX_LOG_BYTES
from proc import child_env, run_python, wait_until

JOB_CODE = '''
import logging, os, sys, threading, time

def noisy(ctx):
    print(f"print from {ctx.job_id}")
    print("no newline yet", end="")
    print(" ... now", flush=True)
    print(f"stderr from {ctx.job_id}", file=sys.stderr)
    logging.getLogger("x").warning("warning from %s", ctx.job_id)
    if ctx.config.get("fd"):
        os.write(1, f"fd write from {ctx.job_id}\\n".encode())
    ctx.log_epoch(1, train={"loss": 0.5})
    return {"ok": True}

def chatty(ctx):
    ctx.config["barrier"].wait(timeout=20)  # both jobs run at once from here
    for i in range(200):
        print(f"line {i} of {ctx.job_id}")
        logging.getLogger("chatty").warning("record %d of %s", i, ctx.job_id)
        if i % 50 == 0:
            time.sleep(0.001)
    return None

def flood(ctx):
    for i in range(ctx.config["lines"]):
        print(f"flood line {i:05d} " + "x" * 60)
    return None

def progress(ctx):
    for pct in (10, 50, 100):
        print(f"\\r{pct:3d}%", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print("windows line\\r", file=sys.stderr)  # the CR and the LF come in two writes
    return None

def nested_bars(ctx):
    # what tqdm writes for `for e in trange(2): for b in tqdm(range(3), leave=False)`: the inner bar is drawn on
    # the line below (a newline) and the cursor moved back up (ESC [A) at every refresh
    out = sys.stderr
    for epoch in range(2):
        out.write(f"\\r{epoch}/2 epochs")
        for step in range(4):
            out.write(f"\\n\\r{step}/3 steps\\x1b[A")
        out.write("\\n\\r" + " " * 9 + "\\x1b[A")
        out.write("\\r" + " " * 9 + "\\r\\x1b[A" + f"loss at {epoch}\\n")  # tqdm.write() above the bars
        out.flush()
    out.write("\\r2/2 epochs\\n")
    return None

def waits(ctx):
    print("first line", flush=True)
    ctx.config["release"].wait(timeout=20)
    print("last line", flush=True)
    return None
'''


@pytest.fixture
def jobs_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The jobs above as an importable module (``jt_capture_jobs``) in a project folder of the test's own."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "jt_capture_jobs.py").write_text(JOB_CODE)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, "jt_capture_jobs", raising=False)
    import jt_capture_jobs  # type: ignore[import-not-found]

    yield jt_capture_jobs
    sys.modules.pop("jt_capture_jobs", None)


def _logs(db: str, job_id: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``jobtrack logs JOB_ID`` prints."""
    capsys.readouterr()
    assert cli.main(["logs", job_id, "--db", db]) == 0
    return capsys.readouterr().out


def _stamped(text: str) -> list[str]:
    """The log's lines without their timestamps (each line starts with one: UTC in the file, local time printed)."""
    lines = text.splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(\+00:00)? ")
    assert all(stamp.match(line) or line.startswith("    ") for line in lines), text
    return [stamp.sub("", line) for line in lines]


@pytest.mark.parametrize("runner", ["eager", "thread", "process", "worker"])
def test_prints_logging_and_stderr_of_a_job_are_in_its_log_and_on_the_terminal(
    runner: str, jobs_module: ModuleType, db_path: str, dataset: Dataset, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    fd_level = runner in ("process", "worker")  # only these capture whole descriptors (see jobtrack.capture)
    trainer = Trainer(jobs_module.noisy, db=db_path, runner=runner, config={"fd": fd_level})
    job = trainer.fit(dataset)
    if runner == "worker":
        worker = subprocess.run([sys.executable, "-m", "jobtrack", "worker", "--burst", "--db", db_path],
                                capture_output=True, text=True, timeout=60, env=child_env(),
                                cwd=tmp_path / "project")
        assert worker.returncode == 0, worker.stderr
    assert job.wait(timeout=30)["status"] == "COMPLETED"
    terminal_out, terminal_err = (worker.stdout, worker.stderr) if runner == "worker" else capfd.readouterr()
    jid = job.job_id
    lines = _stamped(_logs(db_path, jid, capfd))
    expected = [f"print from {jid}", "no newline yet ... now", f"[stderr] stderr from {jid}"]
    # A real process's unconfigured logging prints to fd 2: a [stderr] line. Under pytest, whose capture replaces
    # sys.stderr (and whose handler takes the records), the record itself is logged, by thread.
    expected.append(f"[stderr] warning from {jid}" if runner == "worker" else f"[WARNING x] warning from {jid}")
    if fd_level:
        expected.append(f"fd write from {jid}")
    assert sorted(line for line in lines if jid in line or "newline" in line) == sorted(expected)
    # the terminal still shows all of it, once
    assert terminal_out.count(f"print from {jid}") == 1 and terminal_out.count("no newline yet ... now") == 1
    assert terminal_err.count(f"stderr from {jid}") == 1
    assert terminal_err.count(f"warning from {jid}") == int(runner == "worker")  # else pytest's handler has it
    assert terminal_out.count(f"fd write from {jid}") == int(fd_level)


def test_two_concurrent_thread_jobs_each_log_only_their_own_lines(
    jobs_module: ModuleType, db_path: str, dataset: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    barrier = threading.Barrier(2)
    trainer = Trainer(jobs_module.chatty, db=db_path, max_workers=2, config={"barrier": barrier})
    first, second = trainer.fit(dataset), trainer.fit(dataset)
    for job in (first, second):
        assert job.wait(timeout=30)["status"] == "COMPLETED"
    out = capsys.readouterr().out
    for job, other in ((first, second), (second, first)):
        lines = _stamped(_logs(db_path, job.job_id, capsys))
        assert lines == [entry for i in range(200) for entry in (
            f"line {i} of {job.job_id}", f"[WARNING chatty] record {i} of {job.job_id}")]
        assert other.job_id not in "\n".join(lines)
        assert out.count(f"of {job.job_id}\n") == 200  # the terminal got every print
    assert sys.stdout is capsys_stream(sys.stdout) and logging.getLogRecordFactory() is logging.LogRecord


def capsys_stream(stream: object) -> object:
    """``stream`` itself unless it is jobtrack's proxy (checked by its repr, the tests use no private names)."""
    assert "jobtrack capture" not in repr(stream)
    return stream


def test_capture_leaves_streams_logging_and_root_handlers_as_they_were(
    jobs_module: ModuleType, db_path: str, dataset: Dataset
) -> None:
    before = (sys.stdout, sys.stderr, logging.getLogRecordFactory(), list(logging.getLogger().handlers))
    for runner in ("eager", "thread"):
        Trainer(jobs_module.noisy, db=db_path, runner=runner).fit(dataset).wait(timeout=30)
    assert (sys.stdout, sys.stderr, logging.getLogRecordFactory(), list(logging.getLogger().handlers)) == before


def test_a_log_is_capped_with_a_note_and_the_terminal_still_gets_everything(
    jobs_module: ModuleType, db_path: str, dataset: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 1024 * 1024 <= DEFAULT_MAX_LOG_BYTES <= 16 * 1024 * 1024
    job = Trainer(jobs_module.flood, db=db_path, runner="eager", max_log_bytes=5000,
                  config={"lines": 1000}).fit(dataset)
    assert job.get_status()["status"] == "COMPLETED"
    assert capsys.readouterr().out.count("flood line") == 1000
    path = Path(db_path + "-files") / "jobs" / job.job_id / "log.txt"
    assert 4000 < path.stat().st_size < 5200
    lines = _stamped(path.read_text())
    assert lines[-1].startswith("[jobtrack] log cut here: it reached its cap of 5000 bytes")
    assert lines[:-1] == [f"flood line {i:05d} " + "x" * 60 for i in range(len(lines) - 1)]


def test_a_progress_bar_redrawn_with_carriage_returns_is_one_line(
    jobs_module: ModuleType, db_path: str, dataset: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Trainer(jobs_module.progress, db=db_path, runner="eager").fit(dataset)
    assert _stamped(_logs(db_path, job.job_id, capsys)) == ["[stderr] 100%", "[stderr] windows line"]


def test_nested_progress_bars_are_not_one_line_per_refresh(
    jobs_module: ModuleType, db_path: str, dataset: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    """tqdm's nested bars (an epoch bar, a step bar below it) wrote two log lines per refresh of the inner bar:
    a long training filled the log to its cap, and the lines after it were cut."""
    job = Trainer(jobs_module.nested_bars, db=db_path, runner="eager").fit(dataset)
    assert _stamped(_logs(db_path, job.job_id, capsys)) == [  # what tqdm.write() printed above the bars is kept
        "[stderr] 0/2 epochs", "[stderr] loss at 0", "[stderr] 1/2 epochs", "[stderr] loss at 1", "[stderr] 2/2 epochs"]


def test_output_of_a_job_whose_log_cannot_be_written_still_reaches_the_terminal(
    jobs_module: ModuleType, db_path: str, dataset: Dataset, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = Path(db_path + "-files") / "jobs"
    jobs.parent.mkdir(parents=True)
    jobs.write_text("a file where the jobs' folders belong: no log can be written")
    job = Trainer(jobs_module.noisy, db=db_path, runner="eager").fit(dataset)
    assert job.get_status()["status"] == "COMPLETED"
    out, err = capsys.readouterr()
    assert f"print from {job.job_id}" in out and f"stderr from {job.job_id}" in err
    assert [r.getMessage() for r in caplog.records].count(f"warning from {job.job_id}") == 1
    assert sum("cannot write its log" in r.getMessage() for r in caplog.records) == 1


def test_stream_logs_follows_a_running_job_and_stops_when_it_ends(
    jobs_module: ModuleType, db_path: str, dataset: Dataset
) -> None:
    release = threading.Event()
    job = Trainer(jobs_module.waits, db=db_path, config={"release": release}).fit(dataset)
    seen = io.StringIO()
    follower = threading.Thread(target=job.stream_logs, kwargs={"file": seen, "poll_interval": 0.02})
    follower.start()
    try:
        wait_until(lambda: "first line" in seen.getvalue(), timeout=20, message="the first line followed live")
        assert job.get_status()["status"] == "RUNNING" and "last line" not in seen.getvalue()
    finally:
        release.set()
    follower.join(timeout=10)
    assert not follower.is_alive(), "stream_logs() did not stop when the job ended"
    assert _stamped(seen.getvalue()) == ["first line", "last line"]


def test_jobtrack_logs_follow_in_another_process_stops_when_the_job_ends(
    jobs_module: ModuleType, db_path: str, dataset: Dataset
) -> None:
    release = threading.Event()
    job = Trainer(jobs_module.waits, db=db_path, config={"release": release}).fit(dataset)
    wait_until(lambda: JobManager(db_path).fetch_job(job.job_id).get_status()["status"] == "RUNNING", timeout=20)
    follower = subprocess.Popen([sys.executable, "-m", "jobtrack", "logs", job.job_id, "-f", "--db", db_path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # blocks until the follower printed the live line
        assert first.endswith(" first line\n")
        release.set()
        out, err = follower.communicate(timeout=20)
    finally:
        release.set()
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=5)
    assert follower.returncode == 0, err
    assert out.endswith(" last line\n") and job.get_status()["status"] == "COMPLETED"


def test_process_jobs_capture_subprocess_output_too(
    jobs_module: ModuleType, db_path: str, dataset: Dataset, tmp_path: Path
) -> None:
    script = tmp_path / "project" / "jt_capture_sub.py"
    script.write_text("import subprocess, sys\n"
                      "def train(ctx):\n"
                      "    subprocess.run([sys.executable, '-c', 'print(\"from a grandchild\")'], check=True)\n")
    sys.modules.pop("jt_capture_sub", None)
    import jt_capture_sub  # type: ignore[import-not-found]

    try:
        job = Trainer(jt_capture_sub.train, db=db_path, runner="process").fit(dataset)
        assert job.wait(timeout=30)["status"] == "COMPLETED"
    finally:
        sys.modules.pop("jt_capture_sub", None)
    log = (Path(db_path + "-files") / "jobs" / job.job_id / "log.txt").read_text()
    assert _stamped(log) == ["from a grandchild"]
    assert os.path.getsize(db_path) > 0


SWAP_WHILE_PRINTING = """
import sys, threading, time
from pathlib import Path
from jobtrack.capture import job_output
from jobtrack.joblog import JobLog

log = JobLog(Path(sys.argv[1]), "job_swap")
stop = time.monotonic() + 1.0

def jobs():  # a job starts and ends over and over: the proxies go in and out of sys.stdout
    while time.monotonic() < stop:
        with job_output(log):
            pass

thread = threading.Thread(target=jobs)
thread.start()
while time.monotonic() < stop:
    print("the main thread prints meanwhile")
thread.join()
"""


def test_printing_while_another_thread_starts_and_ends_jobs_never_crashes(tmp_path: Path) -> None:
    # print() holds sys.stdout as a borrowed reference (CPython 3.11): a proxy freed when the last job
    # ended crashed it with SIGSEGV within a second, before the proxies were kept for good.
    run_python(SWAP_WHILE_PRINTING, str(tmp_path / "log.txt"), timeout=60)


FULL_DISK_LOG = '''
import resource, signal, sys
from pathlib import Path
from jobtrack.joblog import JobLog

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is short, then fails (EFBIG): a full disk
log = JobLog(Path(sys.argv[1]), "job_full")
log.write("first " + "a" * 100)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (Path(sys.argv[1]).stat().st_size + 1000, hard))
log.write("cut " + "b" * 5000)  # 1000 bytes of it fit
log.write("lost " + "c" * 5000)  # nothing fits
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
log.write("after " + "d" * 100)
log.close()
'''


def test_a_log_line_cut_by_a_full_disk_does_not_swallow_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "job" / "log.txt"
    run_python(FULL_DISK_LOG, str(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    words = [line.split(" ", 2)[1] if " " in line else "" for line in lines]
    assert words[0] == "first" and words[-1] == "after", lines
    assert all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines[:1] + lines[-1:])
    assert lines[-1].endswith(" " + "d" * 100)
    assert not any("d" * 100 in line for line in lines[:-1])  # the line after the cut one starts a line of its own
