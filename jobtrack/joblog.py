"""A job's log file (``<db>-files/jobs/<id>/log.txt``): timestamped lines, capped, never failing the job.

``RunContext.log()`` writes jobtrack's notes and the code's own lines here, and ``jobtrack.capture``
the code's output while it runs (#13). ``jobtrack logs`` and ``JobMonitor.stream_logs()`` read it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from jobtrack.config import DEFAULT_MAX_LOG_BYTES, make_private_dir
from jobtrack.timeutil import iso_ns, now_ns, to_iso, utcnow

log = logging.getLogger(__name__)


_COARSE_CLOCK = getattr(time, "CLOCK_REALTIME_COARSE", 5) if sys.platform.startswith("linux") else None


def _tick_ns() -> int:
    """How long a coarse file timestamp may stand still: the tick of Linux's coarse clock; 25 ms elsewhere."""
    if _COARSE_CLOCK is not None:
        try:
            return int(time.clock_getres(_COARSE_CLOCK) * 1e9) or 25_000_000
        except OSError:
            pass
    return 25_000_000


_TICK_NS = _tick_ns()
_SETTLE_NS = 2 * _TICK_NS  # a directory mtime younger than this may hide a change made in the same tick
FINE_GRAINED_DEVICES: set[int] = set()
"""File systems (``st_dev``) seen stamping a fine-grained mtime: on them a change after a ``stat`` always shows."""
_RECHECK_S = 1.0  # the file itself is stat-ed at least this often (a filesystem that keeps no directory mtimes)


class JobLog:
    """One job's log file: timestamped lines appended up to ``max_bytes``; writing never raises.

    The file and its directory are created on the first line (a job that writes nothing has no log),
    private to the user. Its descriptor is kept between lines (#14: an open and a close per epoch line
    cost more than the line). Each line first checks that the path still names that file, so a log
    replaced or removed meanwhile is noticed at once: it stats the log's *directory*, whose mtime changes
    when an entry in it is renamed, removed or created, and stats the file itself only when the directory
    changed, changed too recently to tell (coarse timestamps: see ``_checked``), or once a second.
    Stat-ing the file being appended to before every line added ~50 µs per line on ext4 with Linux 6.18
    (measured; none on tmpfs): most likely multigrain timestamps (6.13+), which give a queried file a
    fine-grained mtime at its next write, so each append dirtied its inode for the next journal commit.
    ``close()`` (the runner's, when the job ends) lets the descriptor go; a later line opens it again.
    """

    def __init__(self, path: Path, job_id: str, max_bytes: int | None = None) -> None:
        self.path = path
        self.job_id = job_id
        self.max_bytes = DEFAULT_MAX_LOG_BYTES if max_bytes is None else max_bytes
        self._lock = threading.Lock()
        self._size: int | None = None  # bytes in the file, read when it is first opened
        self._cut = False
        self._failed = False
        self._torn = False  # a write stopped inside a line (a full disk): the next one starts a new line
        self._fd: int | None = None
        self._file: tuple[int, int] = (-1, -1)  # (st_dev, st_ino) of the file the descriptor writes
        self._file_path, self._dir = os.fspath(path), os.fspath(path.parent)  # str: stat-ed per line
        self._seen: tuple[int, int, int] | None = None  # the directory (st_dev, st_ino, st_mtime_ns) last trusted
        self._recheck_at = 0.0  # monotonic time of the next stat of the file itself
        self._closer: weakref.finalize[..., JobLog] | None = None  # closes the descriptor if close() never runs

    def write(self, message: str) -> None:
        """Append one timestamped line (continuation lines indented); skipped once the log is full."""
        line = f"{iso_ns(now_ns())} {message}".replace("\n", "\n    ") + "\n"
        data = line.encode("utf-8", "backslashreplace")  # lone surrogates become \udcff, never an error
        problem: OSError | None = None
        with self._lock:
            if self._cut:
                return
            try:
                fd = self._descriptor()
                if self._size is None:
                    self._size = os.fstat(fd).st_size
                if self._size + len(data) > self.max_bytes:
                    self._cut = True
                    data = (f"{to_iso(utcnow())} [jobtrack] log cut here: it reached its cap of {self.max_bytes} "
                            "bytes (Trainer(max_log_bytes=...)); later output is not logged\n").encode()
                self._append(fd, data)
                if self._cut:
                    self._drop()
            except OSError as exc:
                self._drop()
                problem = exc
        if problem is not None and not self._failed:  # reported outside the lock, once
            self._failed = True
            log.warning("job %s: cannot write its log %s (%s); its log lines are skipped, the job goes on",
                        self.job_id, self.path, problem)

    def _append(self, fd: int, data: bytes) -> None:
        """Write all of ``data``; a disk that fills up may take part of it (a short write, then ENOSPC): the
        line so cut is ended by a newline before the next line, which would otherwise continue it."""
        if self._torn:
            data = b"\n" + data
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
        finally:
            self._size = (self._size or 0) + done
            self._torn = done < len(data) and (done > 0 or self._torn)

    def close(self) -> None:
        """Let the kept descriptor go (the job ended); a later line opens the file again."""
        with self._lock:
            self._drop()

    def _descriptor(self) -> int:
        """The kept descriptor while the path still names its file (its directory unchanged); else the file anew."""
        if self._fd is not None:
            try:
                st = os.stat(self._dir)
                where = (st.st_dev, st.st_ino, st.st_mtime_ns)
                if where == self._seen and time.monotonic() < self._recheck_at:
                    return self._fd  # nothing in the directory changed: the path still names our file
                st = os.stat(self._file_path)
                if (st.st_dev, st.st_ino) == self._file:
                    self._checked(where)
                    return self._fd
            except OSError:
                pass
            self._drop()  # replaced or removed: write where the path points now
        fd = self._open()
        st = os.fstat(fd)
        self._fd, self._file = fd, (st.st_dev, st.st_ino)
        self._closer = weakref.finalize(self, os.close, fd)
        self._seen = None  # the next line checks the file, with the directory stat-ed before it
        return fd

    def _checked(self, where: tuple[int, int, int]) -> None:
        """The path was seen naming our file after the directory was seen as ``where``: trust that state.

        A directory changed within the last ``_SETTLE_NS`` (two ticks of the coarse clock that stamps files)
        is not trusted, as a change in the same tick would not show: the file is stat-ed until it settles.
        Unless its file system stamps fine-grained times once a file was stat-ed (Linux 6.13+ multigrain
        timestamps on ext4, xfs, btrfs, tmpfs): then a change after our stat always shows. Such a file system
        is known by an mtime later than the coarse clock's "now", which a coarse stamp never is, by less than a
        tick (an mtime set into the future proves nothing).
        """
        dev, _, mtime = where
        if dev not in FINE_GRAINED_DEVICES and _COARSE_CLOCK is not None:
            try:
                coarse = time.clock_gettime_ns(_COARSE_CLOCK)
            except OSError:
                coarse = mtime
            if coarse < mtime <= coarse + _TICK_NS:
                FINE_GRAINED_DEVICES.add(dev)
        settled = dev in FINE_GRAINED_DEVICES or time.time_ns() - mtime > _SETTLE_NS
        self._seen = where if settled else None
        self._recheck_at = time.monotonic() + _RECHECK_S

    def _drop(self) -> None:
        if self._closer is not None:
            self._closer()  # closes the descriptor once
        self._fd, self._closer = None, None

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:  # a stat of the directory before the file is made in it: on a file system with multigrain
            os.stat(self._dir)  # timestamps the creation then stamps it fine-grained, which _checked recognises
        except FileNotFoundError:  # the job's first line: create its directory
            make_private_dir(self.path.parent)
            os.stat(self._dir)
        return os.open(self.path, flags, 0o600)  # private to the user


def epoch_line(epoch: int, train: dict[str, Any], validation: dict[str, Any]) -> str:
    """The log line of a reported epoch: ``epoch 3: train loss=0.412 | validation roc_auc=0.8123``."""
    parts = [f"{what} " + ", ".join([f"{name}={value:.6g}" if type(value) is float else
                                     f"{name}={'null' if value is None else value}" for name, value in metrics.items()])
             for what, metrics in (("train", train), ("validation", validation)) if metrics]
    return f"epoch {epoch}: " + (" | ".join(parts) or "no metrics")
