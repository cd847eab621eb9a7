"""``jobtrack worker``: a process that claims queued ``runner="worker"`` jobs and runs their importable code.

Jobs run on threads (``concurrency`` at once, each claimed with ``claim_next``); the main thread
claims, watches and handles signals. The first SIGINT/SIGTERM stops claiming and asks the running
jobs to cancel (they end CANCELED at their next ``log_epoch``/``check_canceled``); the worker waits for
them, saying which. A second one ends the process at once: its jobs then read FAILED (runner lost).
The signal handler only appends to a list (#12); the second one also exits, which takes no lock.

With one job at a time, the job's whole file descriptors 1 and 2 go to its log (C extensions and
subprocesses included); with more, each job's ``sys.stdout``/``sys.stderr`` writes and logging records
do (``jobtrack.capture``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from jobtrack import capture
from jobtrack.errors import InvalidArgument, StoreError
from jobtrack.joblog import JobLog
from jobtrack.runners.base import error_json, finish, retrying, run_job
from jobtrack.spec import JobSpec
from jobtrack.states import JobStatus
from jobtrack.store.watch import ChangeWatcher

if TYPE_CHECKING:
    from jobtrack.store import JobRecord, Store

log = logging.getLogger(__name__)

WORKER_KINDS = ("worker",)
"""The runner kinds a worker claims."""

TICK_S = 0.05
"""Seconds between the main loop's looks at signals and finished jobs."""

WAITING_NOTE_EVERY_S = 10.0
"""How often a stopping worker repeats which jobs it still waits for."""


@dataclass
class WorkerReport:
    """What a worker did: the jobs it ran, by how they ended (``RUNNING``: its end is still being recorded)."""

    ran: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None  # "SIGINT"/"SIGTERM" when a signal stopped it

    @property
    def failed(self) -> int:
        return self.ended.get(JobStatus.FAILED, 0)

    def summary(self) -> str:
        """``ran 3 job(s): 2 completed, 1 failed, 0 canceled``."""
        parts = [f"{self.ended.get(s, 0)} {s.lower()}" for s in (JobStatus.COMPLETED, JobStatus.FAILED,
                                                                 JobStatus.CANCELED)]
        if self.ended.get(JobStatus.RUNNING):
            parts.append(f"{self.ended[JobStatus.RUNNING]} still being recorded")
        return f"ran {self.ran} job(s): {', '.join(parts)}"


def add_import_dirs(app_dirs: Sequence[str] = ()) -> list[str]:
    """Put the working directory (as ``python -m`` does) and ``app_dirs`` first on ``sys.path``; returns them.

    The working directory is left out under ``PYTHONSAFEPATH`` / ``python -P``, as ``python -m`` does.

    Raises:
        InvalidArgument: an app dir that is not a directory.
    """
    dirs = []
    for raw in app_dirs:
        path = os.path.abspath(raw)
        if not os.path.isdir(path):
            raise InvalidArgument(f"--app-dir {raw!r} is not a directory; pass the folder that holds your modules.")
        dirs.append(path)
    if not sys.flags.safe_path:
        dirs.append(os.getcwd())
    for path in reversed(dirs):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    return dirs


def run_worker(store: Store, *, burst: bool = False, poll_s: float = 0.2, max_jobs: int | None = None,
               stop: threading.Event | None = None, concurrency: int = 1,
               say: Callable[[str], None] | None = None, ready: str | None = None) -> WorkerReport:
    """Run queued worker jobs until stopped (SIGTERM/SIGINT or ``stop``), or until the queue is empty if ``burst``.

    ``concurrency`` jobs run at once, on threads. ``say`` prints the worker's notes (default: stdout).
    A job whose code cannot be imported ends FAILED, saying where the worker looked.
    """
    stop = stop or threading.Event()
    say = say or _print
    signaled: list[int] = []  # the handler only appends here (a handler never takes a lock, #12)
    restore = _install_stop_handlers(signaled)
    if ready:  # said once the handlers are in place: a signal from now on stops the worker cleanly
        say(ready)
    report = WorkerReport()
    running: dict[str, threading.Thread] = {}
    ended: list[tuple[str, JobStatus | None]] = []  # appended by job threads (list.append is atomic)
    watcher = ChangeWatcher(store, WORKER_KINDS, recheck_s=poll_s)  # idle: no write lock until there is work (#14)
    stopping_since: float | None = None
    noted = 0.0
    try:
        while True:
            while ended:
                job_id, status = ended.pop()
                running.pop(job_id).join()
                _count(store, report, job_id, status)
            if signaled and stopping_since is None:
                stopping_since = noted = time.monotonic()
                report.stopped_by = signal.Signals(signaled[0]).name
                _stop_jobs(store, running, report.stopped_by, say)
            limit = max_jobs is not None and report.ran >= max_jobs
            if stopping_since is not None or stop.is_set() or limit:
                if not running:
                    break
                if stopping_since is not None and time.monotonic() - noted >= WAITING_NOTE_EVERY_S:
                    noted = time.monotonic()
                    say(f"jobtrack worker: still waiting for {_names(running)} to end "
                        f"({noted - stopping_since:.0f} s; Ctrl-C again to exit at once)")
                time.sleep(TICK_S)
                continue
            if len(running) < concurrency and watcher.due():
                # The next attempt of a job whose runner is lost (#18) first: it is older than the queued jobs,
                # and a queue of them would keep it RUNNING, run by nobody, until the queue is empty.
                claimed = retrying(lambda: store.take_over_next(WORKER_KINDS) or watcher.claim(),
                                   "worker: claim a job")
                if claimed is not None:
                    job_id, token = claimed
                    report.ran += 1
                    thread = threading.Thread(target=_job_thread, name=f"jobtrack-worker-{job_id}", daemon=True,
                                              args=(store, job_id, token, concurrency == 1, ended))
                    running[job_id] = thread
                    thread.start()
                    continue
                if burst and not running:
                    break
            if len(running) < concurrency:
                watcher.pause(TICK_S)  # wakes within milliseconds of a commit by anyone else
            else:  # wakes when (the first) running job ends, so the next one is claimed at once (#14)
                next(iter(running.values())).join(TICK_S)  # a signal's handler runs meanwhile; the loop sees its flag
    finally:
        restore()
        watcher.close()  # PostgreSQL: its listening connection
    return report


def _print(text: str) -> None:
    print(text, flush=True)


def _names(running: dict[str, threading.Thread]) -> str:
    return ", ".join(f"job {job_id}" for job_id in running)


def _stop_jobs(store: Store, running: dict[str, threading.Thread], signal_name: str,
               say: Callable[[str], None]) -> None:
    """First SIGINT/SIGTERM: ask every running job to cancel (from the main loop, never the handler)."""
    if not running:
        say(f"jobtrack worker: {signal_name}: stopping (no job running)")
        return
    for job_id in running:
        try:
            store.request_cancel(job_id, reason=f"signal {signal_name}")  # as the other runners' stopped jobs read
        except StoreError as exc:  # busy or gone: the job still ends when its thread does
            log.warning("job %s: cannot ask it to cancel: %s", job_id, exc)
        JobLog(store.job_dir(job_id) / "log.txt", job_id).write(
            f"jobtrack worker: {signal_name}: asked this job to cancel; it ends CANCELED at its next "
            "log_epoch() or check_canceled()")
    say(f"jobtrack worker: {signal_name}: not claiming more jobs; asked {len(running)} running job(s) to cancel; "
        f"waiting for {_names(running)} to record CANCELED (Ctrl-C again to exit at once: "
        "they then read FAILED, runner lost)")


def _job_thread(store: Store, job_id: str, token: int, capture_fds: bool,
                ended: list[tuple[str, JobStatus | None]]) -> None:
    status: JobStatus | None = None
    try:
        status = _run_claimed(store, job_id, token, capture_fds)
    except Exception:  # run_job records user errors; this is jobtrack's own: logged, and the worker goes on
        log.exception("job %s: the worker could not run it", job_id)
    except (KeyboardInterrupt, SystemExit) as exc:  # raised by the job's code itself: signals reach the main thread
        log.warning("job %s: its code raised %s; its end is recorded, and the worker goes on", job_id,
                    type(exc).__name__)
    finally:
        ended.append((job_id, status))


def _run_claimed(store: Store, job_id: str, token: int, capture_fds: bool) -> JobStatus | None:
    rec = retrying(lambda: store.get_job(job_id, check_liveness=False), f"job {job_id}: read it")
    try:
        spec = JobSpec.from_record(rec)
    except InvalidArgument as exc:
        message = _cannot_run(rec, exc)
        reason = f"cannot run: {message}"
        JobLog(store.job_dir(job_id) / "log.txt", job_id).write(f"job failed: {reason}")
        return finish(store, job_id, token, JobStatus.FAILED, reason=reason,
                      error_json=error_json(InvalidArgument(message)))
    return run_job(store, spec, token=token, capture_fds=capture_fds, attempt=max(rec.attempt, 1))


def _count(store: Store, report: WorkerReport, job_id: str, status: JobStatus | None) -> None:
    if status is None:  # fenced, or its end still waits in the recorder: what the store says
        try:
            status = store.get_job(job_id).status
        except StoreError:
            status = JobStatus.RUNNING
    report.ended[status] = report.ended.get(status, 0) + 1


def _cannot_run(rec: JobRecord, exc: InvalidArgument) -> str:
    """The error of a job that cannot be run; for code that does not import, where the worker looked and what to do."""
    refs = [ref for ref in (rec.spec.get("train_fn"), rec.spec.get("predict_fn")) if isinstance(ref, str)]
    if not any(_module_missing(ref.partition(":")[0]) for ref in refs):
        return str(exc)
    searched = _searched_dirs()
    return (f"{exc} The worker searched {', '.join(searched) or 'no folder'} and the installed packages. "
            "Start `jobtrack worker` in the folder that holds the module, pass `--app-dir DIR`, or set "
            "PYTHONPATH=DIR.")


def _module_missing(module: str) -> bool:
    try:
        return not module or importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _searched_dirs() -> list[str]:
    """The folders on ``sys.path`` that are not Python's own or its installed packages."""
    paths = sysconfig.get_paths()
    installed = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    shown = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if os.path.isdir(path) and path not in installed and not path.endswith(("lib-dynload", "site-packages")):
            shown.append(path)
    return list(dict.fromkeys(shown))


def _install_stop_handlers(signaled: list[int]) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _handler(signum: int, _frame: FrameType | None) -> None:
        signaled.append(signum)
        if len(signaled) >= 2:  # the second: exit at once; takes no lock (a raw write, then _exit)
            note = f"jobtrack worker: second {signal.Signals(signum).name}: exiting now; its running jobs will read " \
                   "FAILED (runner lost)\n"
            with suppress(OSError):
                os.write(capture.original_fd(2), note.encode())
            os._exit(128 + signum)

    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore
