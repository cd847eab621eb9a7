"""Who a process is, whether it still lives, and what that means for a job: no SQL.

A pid alone is not an identity (pids are reused), so a process is named by ``host|pid|start``
where ``start`` is the kernel's boot id plus the process start tick from ``/proc`` on Linux.
``verdict()`` decides whether a QUEUED or RUNNING job can still finish; the store records it.

Known limit: a runner that dies and whose pid is reused by a new process within the same clock
tick (10 ms on Linux) of the old one's start is indistinguishable from it, so its job reads
RUNNING until the new process exits or the lease of a remote reader expires.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jobtrack import runtime
from jobtrack.config import ENV_HOST
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.store.records import JobRecord

RUNNER_LOST = "runner lost"
"""Event reason of a RUNNING job whose runner process is gone."""

SUBMITTER_LOST = "submitter lost"
"""Event reason of a QUEUED job whose in-process runner's process is gone."""

IN_PROCESS_RUNNERS = ("thread", "eager", "process")
"""Runner kinds whose jobs live and die with the process that submitted them."""


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


SNAPSHOT_HOST = "bundle snapshot"
"""The host of a snapshot copy's runner: no hostname has a space, so no process here is ever it."""


def snapshot_runner(source: str) -> str:
    """The runner of a job imported from a bundle while unfinished (a copy: it runs in database ``source``)."""
    return ProcessIdentity(SNAPSHOT_HOST, 0, source).encode()


def is_snapshot(runner: str | None) -> bool:
    """Whether ``runner`` is a snapshot copy's (``snapshot_runner``)."""
    return bool(runner) and str(runner).startswith(SNAPSHOT_HOST + "|")


@dataclass(frozen=True)
class Verdict:
    """Why a job can never finish: the event reason, and the ``error`` of its result if there is one."""

    reason: str
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class ChildExit:
    """How a runner child of this process ended, as its runner describes it."""

    how: str
    error: dict[str, str]


@lru_cache(maxsize=1)
def _hostname() -> str:
    # JOBTRACK_HOST names the machine where hostnames repeat (containers, cloned VMs).
    import socket  # not needed to read a finished job: `jobtrack status` starts without it (#14)

    return os.environ.get(ENV_HOST) or socket.gethostname()


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _start_tick(pid: int) -> str | None:
    """The process start time in clock ticks since boot, or None if the process does not exist."""
    try:  # os.open/os.read: no buffered file object for one short read (a status poll makes one, #14)
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)  # the line is well under a page; procfs returns it whole
        finally:
            os.close(fd)
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


def current() -> ProcessIdentity:
    """The identity of the calling process (recomputed in a forked child)."""
    rt = runtime.current()
    ident: ProcessIdentity | None = rt.identity
    if ident is None:
        pid = os.getpid()
        tick = _start_tick(pid) or ""
        ident = rt.identity = ProcessIdentity(_hostname(), pid, f"{_boot_id()}:{tick}" if tick else "")
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
    # False when the pid now belongs to a different process
    return not (tick and now_tick and now_tick != tick)


def _kill_probe(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def describe_exit(exitcode: int) -> str:
    """ "exited with code N" or "killed by signal NAME" (multiprocessing's negative exit codes)."""
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def child_exit(pid: int) -> ChildExit | None:
    """How a runner child of this process ended, if it was ours and has ended; else None.

    Called once the child is known dead: its exit code is a moment away even when another thread
    is reaping it at the same instant (that thread's waitpid wins and ours sees ECHILD).
    """
    probe = runtime.child_probe(pid)
    if probe is None:
        return None
    deadline = time.monotonic() + 0.2
    found: Any
    while (found := probe()) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return found if isinstance(found, ChildExit) else None


def next_attempt_will_run(rec: JobRecord) -> bool:
    """Whether a RUNNING job whose runner is gone gets another attempt (#18): attempts are left, no cancel
    was asked, and someone runs it: ``jobtrack worker``s (the next one to see its lease expired), or the
    process runner's parent, if it lives on this host. A thread or eager job dies with its process."""
    if max(rec.attempt, 1) >= rec.max_attempts or rec.cancel_requested:
        return False
    return rec.runner_kind == "worker" or _parent_lives(rec)


def _parent_lives(rec: JobRecord) -> bool:
    """Whether a process-runner job's parent (its submitter, which records how its child ended) lives here."""
    parent = ProcessIdentity.decode(rec.submitter) if rec.runner_kind == "process" else None
    return parent is not None and is_alive(parent) is True


def verdict(rec: JobRecord, now: datetime) -> Verdict | None:
    """Why a RUNNING or QUEUED job can never finish, or None if it still can (SPEC §5, §6).

    A RUNNING job's runner on this host is checked by its process identity (a live one is never
    declared dead, however slow); elsewhere its lease decides. A QUEUED job that only an in-process
    runner could run is lost with its submitting process.
    """
    if rec.status is JobStatus.RUNNING:
        ident = ProcessIdentity.decode(rec.runner)
        alive = is_alive(ident) if ident else None
        if alive is False:
            if next_attempt_will_run(rec):  # the process runner's parent or a worker runs it again (#18)
                return None
            if rec.cancel_requested and _parent_lives(rec):  # a child stopped after a cancel: its parent records
                return None  # CANCELED (a reader's FAILED would win the race against it)
            ended = child_exit(ident.pid) if ident else None  # a process-runner child of ours?
            if ended:
                return Verdict(f"runner process {ended.how}", ended.error)
            return Verdict(RUNNER_LOST, _lost("RunnerLost", f"The job's runner process ({_who(ident)}) ended without "
                                              "recording the job's end: it was killed, crashed, or its machine "
                                              "restarted."))
        lease = rec.lease_expires_at
        if alive is None and lease is not None and lease < now and not next_attempt_will_run(rec):
            return Verdict(f"{RUNNER_LOST} (lease expired)", _lost(
                "RunnerLost", f"The job's runner ({_who(ident)}) stopped renewing its lease, which expired at "
                f"{lease.isoformat()}: its process or machine is gone, or cut off from the database."))
        return None
    if rec.status is JobStatus.QUEUED and rec.runner_kind in IN_PROCESS_RUNNERS:
        ident = ProcessIdentity.decode(rec.submitter)
        if ident and is_alive(ident) is False:
            return Verdict(SUBMITTER_LOST, _lost(
                "SubmitterLost", f"The process that submitted this job ({_who(ident)}) ended before its "
                f"{rec.runner_kind} runner started it: nothing ran. Submit it again."))
    return None


def _lost(kind: str, message: str) -> dict[str, str]:
    """The ``error`` of a job declared lost: a type, what happened, and no traceback (none was raised)."""
    return {"type": kind, "message": message, "traceback": ""}


def _who(ident: ProcessIdentity | None) -> str:
    return "unknown" if ident is None else f"pid {ident.pid} on {ident.host}"
