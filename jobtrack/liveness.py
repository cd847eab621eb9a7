"""Who a process is and whether it still lives: host, pid and process start time; no SQL.

A pid alone is not an identity (pids are reused), so a process is named by ``host|pid|start``
where ``start`` is the kernel's boot id plus the process start tick from ``/proc`` on Linux.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class ProcessIdentity:
    """A process on a host, distinguishable from a later process that reuses its pid."""

    host: str
    pid: int
    start: str

    def encode(self) -> str:
        return f"{self.host}|{self.pid}|{self.start}"

    @classmethod
    def decode(cls, text: str | None) -> ProcessIdentity | None:
        if not text:
            return None
        host, pid, start = text.split("|", 2)
        return cls(host, int(pid), start)


@lru_cache(maxsize=1)
def _hostname() -> str:
    # JOBTRACK_HOST names the machine where hostnames repeat (containers, cloned VMs).
    return os.environ.get("JOBTRACK_HOST") or socket.gethostname()


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _start_tick(pid: int) -> str | None:
    """The process start time in clock ticks since boot, or None if the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    state = fields[0]
    if state in (b"Z", b"X"):  # a zombie has exited; only its exit status remains
        return None
    return fields[19].decode()


_cache: dict[int, ProcessIdentity] = {}


def current() -> ProcessIdentity:
    """The identity of the calling process (recomputed after fork)."""
    pid = os.getpid()
    ident = _cache.get(pid)
    if ident is None:
        tick = _start_tick(pid) or ""
        ident = ProcessIdentity(_hostname(), pid, f"{_boot_id()}:{tick}" if tick else "")
        _cache.clear()
        _cache[pid] = ident
    return ident


_HAS_PROC = os.path.isdir("/proc/self")


def is_alive(ident: ProcessIdentity) -> bool | None:
    """True if the process still runs, False if provably gone, None if it cannot be checked here.

    Only processes on this host can be checked; another host's process is None (use its lease).
    """
    if ident.host != _hostname():
        return None
    if not _HAS_PROC:
        return _kill_probe(ident.pid)
    boot, _, tick = ident.start.partition(":")
    if boot and _boot_id() and boot != _boot_id():
        return False  # this host rebooted since that process started
    now_tick = _start_tick(ident.pid)
    if now_tick is None:
        return False
    if tick and now_tick and now_tick != tick:
        return False  # the pid now belongs to a different process
    return True


def _kill_probe(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


# Children this process started to run jobs (the "process" runner). When one dies, this process can
# say how (exit code or signal) instead of only "runner lost", whichever thread reads first.
_children: dict[int, Callable[[], int | None]] = {}


def watch_child(pid: int, exitcode: Callable[[], int | None]) -> None:
    """Register a runner child and a non-blocking way to ask for its exit code."""
    _children[pid] = exitcode


def forget_child(pid: int) -> None:
    _children.pop(pid, None)


def describe_exit(exitcode: int) -> str:
    """"exited with code N" or "killed by signal NAME" (multiprocessing's negative exit codes)."""
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def child_exit(pid: int) -> str | None:
    """How a runner child of this process ended, if it was ours and has ended; else None.

    Called once the child is known dead: its exit code is a moment away even when another thread
    is reaping it at the same instant (that thread's waitpid wins and ours sees ECHILD).
    """
    probe = _children.get(pid)
    if probe is None:
        return None
    deadline = time.monotonic() + 0.2
    while (code := probe()) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return None if code is None else describe_exit(code)
