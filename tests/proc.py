"""Helpers for tests about processes: run Python in real children and always reap them with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours plus the tests directory on PYTHONPATH (for tests/jobfuncs.py)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_python(
    code: str, *args: str, timeout: float = 60, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...`` to completion and return its result (fails the test on timeout)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@contextmanager
def local_time_zone(name: str) -> Iterator[None]:
    """Run with ``TZ=name`` in this process (``time.tzset()``), then restore the previous zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@contextmanager
def spawn(code: str, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``python -c code`` in the background; on exit terminate, then kill, and reap it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(**env),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20, interval: float = 0.01, message: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {message or predicate}")
        time.sleep(interval)


def meet(barrier: str, me: str, names: Iterable[str], round_: int, deadline: float) -> None:
    """A file barrier for children started with ``spawn``/``run_python``: mark ``me`` as at ``round_``, then
    spin until every one of ``names`` is there too (exit with a message after ``deadline``, monotonic)."""
    open(os.path.join(barrier, f"{me}_{round_}"), "w").close()
    while not all(os.path.exists(os.path.join(barrier, f"{n}_{round_}")) for n in names):
        if time.monotonic() > deadline:
            sys.exit(f"{me}: the others never reached round {round_}")
        os.sched_yield()


_WRITE_AND_WAIT = """
import sys
from jobtrack.files import temp_prefix
for folder, kind in zip(sys.argv[1::2], sys.argv[2::2]):
    with open(f"{folder}/{temp_prefix(kind)}partial", "wb") as fh:  # as a writer does, before its rename
        fh.write(b"half of it")
print("ready", flush=True)
sys.stdin.read()  # until killed
"""


def killed_mid_write(*where: tuple[Path, str]) -> list[Path]:
    """Start a process that writes a temp file of each (folder, kind), SIGKILL it, and return the files it left."""
    args = [str(a) for pair in where for a in pair]
    with subprocess.Popen([sys.executable, "-c", _WRITE_AND_WAIT, *args], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=child_env()) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().split() == ["ready"]
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
    left = [p for folder, kind in where for p in folder.iterdir() if p.name.startswith(f".{kind}.")]
    assert len(left) == len(where)
    return left
