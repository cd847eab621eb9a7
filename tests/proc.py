"""Helpers for tests about processes: run Python in real children and always reap them with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
