"""Signals at any moment (issue 12, "Signals"; issue 21, defect 3): Ctrl-C returns control, jobs end CANCELED.

Every test runs real child processes (``signal_child.py``) on real SQLite files and signals them.
After a signal, every job of that process must end CANCELED (reason ``signal SIGINT``/``SIGTERM``)
or COMPLETED: none FAILED because of the signal (``runner lost``, ``submitter lost``, an error), none
left QUEUED or RUNNING; and the process must be gone within 5 s.

The random-signal loop draws its moments and signals from a seeded ``random.Random``: the seed is
printed, and ``JOBTRACK_HOSTILE_SEED=<seed>`` replays the same plan (the timing of the children
themselves cannot be replayed). It signals 50 processes (~55 signals) by default, and 250 processes
(~275 signals) in five batches with ``--hostile-long`` (see conftest.py).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobtrack import JobManager
from jobtrack.runners.signals import EXIT_HINT_S
from proc import child_env, spawn, wait_until

CHILD = str(Path(__file__).with_name("signal_child.py"))

EXIT_DEADLINE_S = 5.0
"""A signaled process must be gone this long after the signal (issue 21)."""

CONTROL_DEADLINE_S = 2.0
"""Ctrl-C must reach the user's code this fast, whatever the write lock is doing (issue 12)."""

LOOP_MODES = ("submit", "psubmit", "list", "eager", "wait")
"""What the children of the random-signal loop do when the signal comes (see signal_child.py)."""


class Child:
    """A running ``signal_child.py``: its output lines as they come, and a reaped end whatever happens."""

    def __init__(self, db: Path | str, mode: str, *, new_session: bool = False) -> None:
        self.mode = mode
        self.new_session = new_session  # its own process group: reaped with every process it forked
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, str(db), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(), start_new_session=new_session,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, False), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, into: list[str], queue_it: bool) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            into.append(line)
            if queue_it:
                self.lines.put(line.rstrip("\n"))

    def expect(self, word: str, timeout: float) -> list[str]:
        """The words of the next output line starting with ``word``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.dump_stacks()
                raise AssertionError(f"{self.mode} child {self.pid}: no {word!r} line within {timeout} s; "
                                     f"exit={self.proc.poll()}\n{self.output()}") from None
            if line.split()[:1] == [word]:
                return line.split()

    def dump_stacks(self) -> None:
        """Have the child, and every process it forked, print every thread's stack to stderr (faulthandler)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.new_session:
                os.killpg(self.proc.pid, signal.SIGUSR1)
            else:
                os.kill(self.proc.pid, signal.SIGUSR1)
        deadline, seen = time.monotonic() + 3.0, -1
        while time.monotonic() < deadline:  # until the stacks stop growing (a failure report only)
            size = len("".join(self.stderr))
            if size == seen and "most recent call first" in "".join(self.stderr):
                return
            seen = size
            time.sleep(0.2)

    def wait(self, timeout: float) -> int | None:
        """The exit status (negative: killed by that signal), or None if still running after ``timeout`` s."""
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> str:
        return f"stdout:\n{''.join(self.stdout)}\nstderr (last 12000 chars):\n{''.join(self.stderr)[-12000:]}"

    def reap(self) -> None:
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for t in self._readers:
            t.join(timeout=5)
        if not any(t.is_alive() for t in self._readers):  # else a forked grandchild keeps the pipe: leave it
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children started by the test; killed and reaped at its end, whatever happened."""
    started: list[Child] = []
    yield started
    for c in started:
        c.reap()


def jobs_by_pid(db: Path | str) -> dict[int, list[tuple[str, str, str]]]:
    """(job id, status, reason of its last event) of every job, by the pid of the process that submitted it."""
    conn = sqlite3.connect(str(db))
    try:
        rows = conn.execute(
            "SELECT j.id, j.status, j.submitter, (SELECT e.reason FROM job_events e WHERE e.job_id = j.id "
            "ORDER BY e.id DESC LIMIT 1) FROM jobs j"
        ).fetchall()
    finally:
        conn.close()
    out: dict[int, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for job_id, status, submitter, reason in rows:
        out[int(submitter.split("|")[1])].append((job_id, status, reason))
    return out


def wrong_ends(jobs: list[tuple[str, str, str]], sig: signal.Signals) -> list[tuple[str, str, str]]:
    """The jobs that did not end CANCELED by ``sig`` or COMPLETED."""
    return [j for j in jobs if not (j[1] == "COMPLETED" or (j[1] == "CANCELED" and j[2] == f"signal {sig.name}"))]


def stopped_after(child: Child, sent: float) -> float | None:
    """Seconds from ``sent`` until the signal's exception reached the child's main code (its ``stopped`` line)."""
    for line in child.stdout:
        if line.startswith("stopped "):
            return float(line.split()[2]) - sent
    return None


# -- issue 12: Ctrl-C while another process holds the write lock ------------------------------------

LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # until the test closes our stdin (or kills us)
"""


@pytest.mark.parametrize("mode", ["wait", "submit", "eager"])
def test_ctrl_c_returns_control_while_another_process_holds_the_write_lock(tmp_path: Path, children: list[Child],
                                                                          mode: str) -> None:
    # wait: a thread-runner job reports an epoch every 50 ms while the main thread waits for it (the
    # issue's case); submit, eager: the main thread itself is writing (a submission waits for the lock).
    db = tmp_path / "jobs.db"
    child = Child(db, mode)
    children.append(child)
    child.expect("ready", 30)
    if mode == "wait":
        wait_until(lambda: jobs_by_pid(db)[child.pid][0][1] == "RUNNING", message="the job runs")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, os.path.realpath(db) + ".lock"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Not a synchronisation: the child writes every few ms (an epoch every 50 ms in "wait"), so by
        # now its next write waits on the lock, as the reproduction had it.
        time.sleep(0.2)
        sent = time.monotonic()
        child.proc.send_signal(signal.SIGINT)
        child.expect("stopped", CONTROL_DEADLINE_S)  # KeyboardInterrupt reached the script's own code
        returned = time.monotonic() - sent
        latency = stopped_after(child, sent)
        assert latency is not None and latency < CONTROL_DEADLINE_S
        assert returned < CONTROL_DEADLINE_S
        if mode == "wait":
            assert jobs_by_pid(db)[child.pid][0][1] == "RUNNING"  # nothing can be written while the lock is held
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=10)
        holder.stdout.close()  # type: ignore[union-attr]
    code = child.wait(timeout=15)  # its runner thread gets the lock, sees the signal and ends
    assert code == -signal.SIGINT, child.output()
    jobs = jobs_by_pid(db)[child.pid]
    allowed = {("CANCELED", "signal SIGINT"), ("FAILED", "runner lost")} | ({("COMPLETED", "completed")}
                                                                          if mode != "wait" else set())
    assert jobs and {j[1:] for j in jobs} <= allowed, child.output()
    print(f"Ctrl-C under a held lock ({mode}): control back in {latency:.3f} s; jobs "
          f"{dict(collections.Counter(j[1:] for j in jobs))}")


# -- issue 21: signals at random moments -------------------------------------------------------------


@dataclass
class Trial:
    """One signaled child of the random loop and what became of it."""

    mode: str
    sig: signal.Signals
    delay: float  # after every child of its round was ready
    second: tuple[signal.Signals, float] | None  # a second signal this long after the first
    child: Child | None = None
    sent: float = 0.0
    code: int | None = None
    gone_after: float | None = None  # seconds from the signal until the process was gone
    latency: float | None = None  # seconds from the signal until its exception reached the main code
    jobs: list[tuple[str, str, str]] = field(default_factory=list)

    def problems(self) -> list[str]:
        assert self.child is not None
        out = []
        if self.code is None:
            out.append(f"still alive {EXIT_DEADLINE_S} s after the signal (killed)")
        elif self.second is None and self.code != -self.sig:
            out.append(f"exit status {self.code}, expected death by {self.sig.name}")
        elif self.second is not None and self.code not in (-self.sig, -self.second[0]):
            out.append(f"exit status {self.code}, expected death by {self.sig.name} or {self.second[0].name}")
        bad = wrong_ends(self.jobs, self.sig)
        if bad and self.second is not None:  # both pending at once: Python runs handlers in signal-number order,
            bad = [j for j in bad if j in wrong_ends(self.jobs, self.second[0])]  # so either may come first
        if bad:
            out.append(f"{len(bad)} of {len(self.jobs)} jobs ended wrong: {collections.Counter(j[1:] for j in bad)}")
        if not self.jobs:
            out.append("no jobs found")
        return out


def _plan(rng: random.Random, rounds: int) -> list[list[Trial]]:
    plan = []
    for _ in range(rounds):
        trials = []
        for mode in rng.sample(LOOP_MODES, len(LOOP_MODES)):
            sig = rng.choice((signal.SIGINT, signal.SIGTERM))
            second = None
            if rng.random() < 0.1:  # a second Ctrl-C (or a kill after it) while the first one acts
                second = (rng.choice((signal.SIGINT, signal.SIGTERM)), rng.uniform(0.0, 0.05))
            trials.append(Trial(mode, sig, rng.uniform(0.0, 0.4), second))
        plan.append(trials)
    return plan


def _run_round(db: Path, trials: list[Trial], children: list[Child]) -> None:
    for t in trials:
        t.child = Child(db, t.mode)
        children.append(t.child)
    for t in trials:
        assert t.child is not None
        t.child.expect("ready", 60)
    start = time.monotonic()
    sends = sorted([(t.delay, t, t.sig) for t in trials]
                   + [(t.delay + t.second[1], t, t.second[0]) for t in trials if t.second is not None],
                   key=lambda s: s[0])
    for at, t, sig in sends:  # the random moments: a schedule, not a synchronisation
        time.sleep(max(0.0, start + at - time.monotonic()))
        assert t.child is not None
        now = time.monotonic()
        t.child.proc.send_signal(sig)
        if sig is t.sig and not t.sent:
            t.sent = now
    for t in trials:
        assert t.child is not None
        t.code = t.child.wait(t.sent + EXIT_DEADLINE_S - time.monotonic())
        if t.code is None:
            t.child.reap()  # fails the trial: still alive at the deadline
        else:
            t.gone_after = time.monotonic() - t.sent
        t.latency = stopped_after(t.child, t.sent)
    by_pid = jobs_by_pid(db)
    for t in trials:
        assert t.child is not None
        t.jobs = by_pid.get(t.child.pid, [])


def test_signals_at_random_moments_cancel_every_job_and_end_the_process(
        tmp_path: Path, children: list[Child], signal_batch: int) -> None:
    seed = int(os.environ.get("JOBTRACK_HOSTILE_SEED") or random.randrange(2**32)) + signal_batch
    rounds = 10
    print(f"random-signal loop, batch {signal_batch}: seed {seed} (JOBTRACK_HOSTILE_SEED={seed - signal_batch} "
          f"replays the plan), {rounds} rounds of {len(LOOP_MODES)} children")
    plan = _plan(random.Random(seed), rounds)
    began = time.monotonic()
    failures = []
    for i, trials in enumerate(plan):
        _run_round(tmp_path / f"round{i}.db", trials, children)
        for t in trials:
            for problem in t.problems():
                assert t.child is not None
                failures.append(f"round {i} {t.mode} {t.sig.name}"
                                f"{f' + {t.second[0].name}' if t.second else ''} at +{t.delay:.3f} s: {problem}\n"
                                f"{t.child.output()}")
    trials = [t for ts in plan for t in ts]
    outcomes = collections.Counter(j[1] for t in trials for j in t.jobs)
    latencies = [t.latency for t in trials if t.latency is not None]
    gone = [t.gone_after for t in trials if t.gone_after is not None]
    print(f"{len(trials)} processes, {len(trials) + sum(t.second is not None for t in trials)} signals "
          f"({collections.Counter(t.sig.name for t in trials)}, {sum(t.second is not None for t in trials)} "
          f"seconds) in {time.monotonic() - began:.1f} s; jobs: {dict(outcomes)}; "
          f"signal to main code: max {max(latencies):.3f} s; to process gone: max {max(gone):.3f} s; "
          f"by mode: {dict(collections.Counter(t.mode for t in trials))}")
    assert not failures, f"seed {seed}: {len(failures)} of {len(trials)} trials failed:\n" + "\n".join(failures)


# -- forks, process groups, the end of a script ---------------------------------------------------------


def test_forked_child_that_submitted_its_own_job_dies_of_sigterm(tmp_path: Path, children: list[Child]) -> None:
    db = tmp_path / "jobs.db"
    parent = Child(db, "fork", new_session=True)
    children.append(parent)
    _, pid, child_job, parent_job = parent.expect("ready", 30)
    wait_until(lambda: {s for _, s, _ in jobs_by_pid(db)[int(pid)]} == {"RUNNING"}, message="the fork's job runs")
    os.kill(int(pid), signal.SIGTERM)
    _, code, parent_status = parent.expect("child", EXIT_DEADLINE_S)
    assert int(code) == -signal.SIGTERM, parent.output()  # died of the signal: not exit 1, no RecursionError
    assert parent_status == "RUNNING"  # the fork's signal is not the parent's
    assert parent.expect("parent", 30) == ["parent", "CANCELED"]
    assert parent.wait(10) == 0
    ((job, status, reason),) = jobs_by_pid(db)[int(pid)]
    assert (job, status, reason) == (child_job, "CANCELED", "signal SIGTERM")
    ((job, status, reason),) = jobs_by_pid(db)[parent.pid]
    assert (job, status, reason) == (parent_job, "CANCELED", "canceled by user")
    assert "Error" not in "".join(parent.stderr), parent.output()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_terminal_signal_to_the_process_group_of_a_process_runner_job(tmp_path: Path, children: list[Child],
                                                                     sig: signal.Signals) -> None:
    db = tmp_path / "jobs.db"
    parent = Child(db, "process", new_session=True)  # its own process group, as a terminal would make it
    children.append(parent)
    job_id = parent.expect("ready", 30)[2]
    wait_until(lambda: jobs_by_pid(db)[parent.pid][0][1] == "RUNNING", message="the job runs in its child")
    sent = time.monotonic()
    os.killpg(parent.pid, sig)  # Ctrl-C / a terminal's SIGTERM: the parent and the job's child both get it
    code = parent.wait(EXIT_DEADLINE_S)
    assert code == -sig, parent.output()
    wait_until(lambda: not _group_alive(parent.pid), timeout=EXIT_DEADLINE_S - (time.monotonic() - sent),
               message="the job's child is gone too")
    ((seen, status, reason),) = jobs_by_pid(db)[parent.pid]
    assert (seen, status, reason) == (job_id, "CANCELED", f"signal {sig.name}"), parent.output()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_script_ends_and_its_runner_threads_are_joined(tmp_path: Path, sig: signal.Signals) -> None:
    code = ("import sys, time\nfrom jobtrack import Dataset, Trainer\n"
            "def long(ctx):\n    for e in range(100000):\n        ctx.log_epoch(e)\n        time.sleep(0.05)\n"
            "m = Trainer(long, db=sys.argv[1]).fit(Dataset('e', 'regression', 'y', tables={'train': [{'y': 1}]}))\n"
            "print(m.job_id, flush=True)\n")  # the script ends here: Python joins the runner thread
    db = str(tmp_path / "jobs.db")
    with spawn(code, db) as child:
        assert child.stdout is not None
        job_id = child.stdout.readline().strip()
        wait_until(lambda: jobs_by_pid(db)[child.pid][0][1] == "RUNNING", message="the job runs")
        child.send_signal(sig)
        assert child.wait(timeout=EXIT_DEADLINE_S) == -sig  # the job stops at its next epoch; the process dies of it
    assert jobs_by_pid(db)[child.pid] == [(job_id, "CANCELED", f"signal {sig.name}")]


def test_a_job_whose_code_stops_gracefully_on_sigterm_ends_canceled_without_a_warning(tmp_path: Path) -> None:
    # A framework callback sees the cancel at a step boundary and stops training, so the code returns
    # normally: the job ends as a signal's cancel does, not with a COMPLETED the runner no longer may record.
    code = ("import sys, time\nfrom jobtrack import Dataset, Trainer\n"
            "def graceful(ctx):\n    ctx.log_epoch(0)\n"
            "    while not ctx.is_cancel_requested():\n        time.sleep(0.01)\n    return {'stopped': True}\n"
            "m = Trainer(graceful, db=sys.argv[1], runner='thread').fit("
            "Dataset('e', 'regression', 'y', tables={'train': [{'y': 1}]}))\n"
            "print(m.job_id, flush=True)\nm.wait()\n")
    db = str(tmp_path / "jobs.db")
    with spawn(code, db) as child:
        assert child.stdout is not None and child.stderr is not None
        job_id = child.stdout.readline().strip()
        wait_until(lambda: _epochs(db, job_id) == 1, message="the job reported its epoch")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=EXIT_DEADLINE_S) == -signal.SIGTERM
        stderr = child.stderr.read()
    assert "could not record" not in stderr, stderr
    assert jobs_by_pid(db)[child.pid] == [(job_id, "CANCELED", "signal SIGTERM")]
    log_text = JobManager(db).fetch_job(job_id).log_path.read_text(encoding="utf-8")
    assert "job canceled by SIGTERM" in log_text, log_text


def test_a_job_that_never_reports_keeps_the_process_until_a_second_signal(tmp_path: Path) -> None:
    # At exit, a first signal cancels the jobs and waits for their runner threads, which stop at their
    # next report; a job that never reports again holds the process until a second signal, which
    # stops the wait (as in plain Python) and the process dies of it.
    code = ("import sys, time\nfrom jobtrack import Dataset, Trainer\n"
            "def deaf(ctx):\n    ctx.log_epoch(0)\n    time.sleep(3600)\n"
            "m = Trainer(deaf, db=sys.argv[1]).fit(Dataset('e', 'regression', 'y', tables={'train': [{'y': 1}]}))\n"
            "print(m.job_id, flush=True)\n")
    db = str(tmp_path / "jobs.db")
    with spawn(code, db) as child:
        assert child.stdout is not None
        job_id = child.stdout.readline().strip()
        wait_until(lambda: _epochs(db, job_id) == 1, message="the job reported its only epoch")
        child.send_signal(signal.SIGINT)
        wait_until(lambda: jobs_by_pid(db)[child.pid] == [(job_id, "CANCELED", "signal SIGINT")],
                   timeout=EXIT_DEADLINE_S, message="the signal's recorder thread canceled the job")
        assert child.poll() is None  # its thread still sleeps: the process waits for it
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=EXIT_DEADLINE_S) == -signal.SIGINT


def test_a_second_signal_at_exit_ends_the_process_after_a_first_one_ended_the_script(tmp_path: Path) -> None:
    # Ctrl-C in wait() raises KeyboardInterrupt, the script ends and Python waits for the runner thread,
    # whose code never reports again (a multiprocessing pool whose workers the same Ctrl-C killed waits
    # forever). The next Ctrl-C must end the process, as in plain Python: it was taken for a first signal
    # at exit and only a third one did. After EXIT_HINT_S the process says how to stop it.
    code = ("import sys, threading, time\nfrom jobtrack import Dataset, Trainer\n"
            "def deaf(ctx):\n    ctx.log_epoch(0)\n    time.sleep(3600)\n"
            "m = Trainer(deaf, db=sys.argv[1]).fit(Dataset('e', 'regression', 'y', tables={'train': [{'y': 1}]}))\n"
            "print(m.job_id, flush=True)\n"
            "threading._register_atexit(lambda: print('script ended', flush=True))  # runs before jobtrack's join\n"
            "m.wait()\n")
    db = str(tmp_path / "jobs.db")
    with spawn(code, db) as child:
        assert child.stdout is not None and child.stderr is not None
        job_id = child.stdout.readline().strip()
        wait_until(lambda: _epochs(db, job_id) == 1, message="the job reported its only epoch")
        child.send_signal(signal.SIGINT)
        _read_until(child.stdout.fileno(), "script ended", EXIT_DEADLINE_S)
        wait_until(lambda: jobs_by_pid(db)[child.pid] == [(job_id, "CANCELED", "signal SIGINT")],
                   timeout=EXIT_DEADLINE_S, message="the signal's recorder thread canceled the job")
        _read_until(child.stderr.fileno(), "Press Ctrl-C again to exit now", EXIT_HINT_S + EXIT_DEADLINE_S)
        assert child.poll() is None  # its thread still sleeps: the process waits for it
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=EXIT_DEADLINE_S) == -signal.SIGINT


def _read_until(fd: int, text: str, timeout: float) -> str:
    """What a child wrote to ``fd`` (its raw pipe, no buffer that select cannot see) until ``text`` appeared."""
    deadline, out = time.monotonic() + timeout, b""
    while text.encode() not in out:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no {text!r} within {timeout} s: {out[-2000:]!r}"
        chunk = os.read(fd, 65536)
        assert chunk, f"the pipe closed before {text!r}: {out[-2000:]!r}"
        out += chunk
    return out.decode(errors="replace")


def _epochs(db: str, job_id: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM job_epochs WHERE job_id = ?", (job_id,)).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()
