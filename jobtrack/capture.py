"""Output capture (#13): what a job's code prints and logs goes to the job's log, and still to the terminal.

A job's log (``<db>-files/jobs/<id>/log.txt``) holds timestamped lines: jobtrack's notes and
``ctx.log()`` lines as written, standard output as is, standard error marked ``[stderr]``, logging
records as ``[LEVEL logger] message``. It is capped at ``max_log_bytes`` (``Trainer(max_log_bytes=...)``,
default ``config.DEFAULT_MAX_LOG_BYTES``) with a note where it was cut. A log that cannot be written
never fails the job and never hides the output: the terminal gets everything first.

The runner chooses one of two ways (``run_job(..., capture_fds=...)``):

- by thread (thread and eager runners, ``jobtrack worker --concurrency N`` with N > 1): while jobs
  run, ``sys.stdout`` and ``sys.stderr`` are proxies that pass every write to the real stream and also
  send the writes of a thread running a job to that job's log; a log record factory sends the
  records created on that thread to the log. Several jobs in one process each get their own lines.
  Writes of other threads (the job's own helper threads too) and writes straight to file descriptor
  1 or 2 (C extensions, subprocesses, ``sys.stdout.buffer``) cannot be told apart by job: they reach
  the terminal only. A record factory rather than a root handler, so the code's own
  ``logging.basicConfig()`` still works and unconfigured warnings still print.
- by file descriptor (process runner, ``jobtrack worker`` with one job at a time): fd 1 and 2 are
  pipes while the job runs; a thread per pipe copies what arrives to the original descriptor and to
  the log, so output of C extensions and subprocesses is caught too.

Everything is put back when the job ends: the proxies and the factory when the last job captured by
thread ends (or, if something replaced them meanwhile, they stay and pass everything through), the
descriptors at once. The registry lives in ``runtime.current().capture``.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import selectors
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from jobtrack import runtime
from jobtrack.joblog import JobLog

log = logging.getLogger(__name__)

MAX_LINE_CHARS = 64 * 1024
"""A line longer than this (output without newlines) is written in pieces of this size."""

FD_DRAIN_S = 2.0
"""Seconds the end of a job waits for its captured descriptors' last output (a subprocess may hold them)."""

STREAMS = ("stdout", "stderr")

_CURSOR_UP = re.compile(r"\x1b\[[0-9]*A")
"""The terminal escape that moves the cursor up: what a line holding it drew (tqdm's nested bars, drawn on the
line below, then the cursor moved back) is overwritten by the next redraw, so it is no line of the log."""


class Lines:
    """Text written to one stream of one job, cut into lines for its log."""

    def __init__(self, joblog: JobLog, tag: str) -> None:
        self._log = joblog
        self._tag = tag
        self._rest = ""
        self.detached = False  # the job ended: nothing more goes to its log

    def feed(self, text: str) -> None:
        if self.detached or not text:
            return
        *lines, rest = (self._rest + text).split("\n")
        redraw = rest.rfind("\r", 0, len(rest) - 1)  # a progress bar redrawing its line: keep its latest state
        if redraw >= 0:
            rest = rest[redraw:]
        while len(rest) > MAX_LINE_CHARS:
            lines.append(rest[:MAX_LINE_CHARS])
            rest = rest[MAX_LINE_CHARS:]
        self._rest = rest
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        """Write a last line that has no newline yet."""
        rest, self._rest = self._rest, ""
        if rest and not self.detached:
            self._emit(rest)

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if "\r" in line:
            line = line[line.rindex("\r") + 1:]
        if "\x1b" in line and _CURSOR_UP.search(line):
            line = _CURSOR_UP.split(line)[-1]  # text after the cursor moved up: tqdm.write() printing above the bars
            if not line.strip():
                return  # a progress bar's redraw below the current line (one per refresh): not kept
        self._log.write(self._tag + line)


class JobOutput:
    """Where the output of one job goes: its log, line by line, per stream."""

    def __init__(self, joblog: JobLog) -> None:
        self.log = joblog
        self.streams = {"stdout": Lines(joblog, ""), "stderr": Lines(joblog, "[stderr] ")}
        self.busy = False  # by thread: set while its thread writes (what that writes is not captured again)
        self.routed: set[str] = set()  # by thread: the streams whose writes go to the log ...
        self.records = False  # ... and whether logging records do
        self.previous: JobOutput | None = None  # by thread: the job this thread ran before (eager job in a job)
        self.fds: _FdCapture | None = None  # by descriptor
        self.buffering: dict[str, bool] = {}

    def record(self, record: logging.LogRecord) -> None:
        """Write a logging record (created on the job's thread) as ``[LEVEL logger] message``."""
        try:
            message = record.getMessage()
        except Exception as exc:  # noqa: BLE001 - a bad format string in user code; logging reports it too
            message = f"{record.msg!r} (could not be formatted: {exc})"
        if record.exc_info and record.exc_info[0] is not None:
            message += "\n" + _FORMATTER.formatException(record.exc_info)
        if record.stack_info:
            message += "\n" + record.stack_info
        self.log.write(f"[{record.levelname} {record.name}] {message}")

    def flush(self) -> None:
        for lines in self.streams.values():
            lines.flush()


_FORMATTER = logging.Formatter()


@contextmanager
def job_output(joblog: JobLog, *, fds: bool = False) -> Iterator[None]:
    """Send the output of the code run meanwhile to ``joblog``: by file descriptor if ``fds``, else by thread.

    Only one job of a process holds the descriptors at a time; another one asking is captured by thread.
    """
    out = JobOutput(joblog)
    took = fds and _take_fds(out)
    if not took:
        out.routed, out.records = set(STREAMS), True
    if out.routed:  # by descriptor too when sys.stdout/stderr write elsewhere (pytest's capture, a notebook)
        _route_thread(out)
    try:
        yield
    finally:
        if out.routed:
            _unroute_thread(out)
        if took:
            _release_fds(out)
        out.flush()


def original_fd(fd: int) -> int:
    """The descriptor that reaches what ``fd`` (1 or 2) reached before a job took it; ``fd`` itself if none did.

    For a message that must reach the terminal at once, past a job's capture (takes no lock).
    """
    return runtime.current().capture.saved_fds.get(fd, fd)


# -- by thread -------------------------------------------------------------------------------------------


class StreamProxy:
    """``sys.stdout`` / ``sys.stderr`` while jobs are captured by thread: every write goes to the real
    stream, and those of a thread running a job also to its log."""

    def __init__(self, real: Any, name: str) -> None:
        self._real = real
        self._name = name

    def write(self, text: str) -> int:
        out = runtime.current().capture.routes.get(threading.get_ident())
        if out is None or out.busy:
            return self._real.write(text)  # type: ignore[no-any-return]
        out.busy = True  # what the writing writes (a proxy wrapped twice, a warning) is not captured again
        try:
            written = self._real.write(text)  # an error of the real stream is the caller's
            # a record's own output is not logged again: the record factory logged the record
            if self._name in out.routed and not (out.records and _from_logging_handler(sys._getframe(1))):
                try:
                    out.streams[self._name].feed(text)
                except Exception as exc:  # noqa: BLE001 - printing never fails because of the log
                    log.debug("capture of %s failed: %s", self._name, exc)
        finally:
            out.busy = False
        return written  # type: ignore[no-any-return]

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __repr__(self) -> str:
        return f"<jobtrack capture of {self._real!r}>"


def _from_logging_handler(frame: Any) -> bool:
    """Whether the write comes from a logging handler's ``emit`` (``StreamHandler``, logging's last resort)."""
    return frame is not None and frame.f_code.co_name == "emit" and isinstance(
        frame.f_locals.get("self"), logging.Handler)


def _make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """The log record factory while jobs are captured by thread: the factory it replaced, then the job's log."""
    state = runtime.current().capture
    record: logging.LogRecord = state.replaced.get("factory", (None, logging.LogRecord))[1](*args, **kwargs)
    out = state.routes.get(threading.get_ident())
    if out is not None and out.records and not out.busy and not record.__dict__.get("_jobtrack_logged"):
        record.__dict__["_jobtrack_logged"] = True
        out.busy = True  # a record the job's log writes about itself (cannot write) is not logged into it
        try:
            out.record(record)
        except Exception as exc:  # noqa: BLE001 - logging never fails because of the log
            log.debug("capture of a log record failed: %s", exc)
        finally:
            out.busy = False
    return record


def _route_thread(out: JobOutput) -> None:
    state = runtime.current().capture
    with state.lock:
        if state.users == 0:
            _install(state)
        state.users += 1
        tid = threading.get_ident()
        out.previous = state.routes.get(tid)
        state.routes[tid] = out


def _unroute_thread(out: JobOutput) -> None:
    state = runtime.current().capture
    with state.lock:
        tid = threading.get_ident()
        if out.previous is None:
            state.routes.pop(tid, None)
        else:  # a job run inside another job's code on the same thread (eager): the outer one again
            state.routes[tid] = out.previous
        state.users -= 1
        if state.users == 0:
            _uninstall(state)


def _install(state: runtime.CaptureState) -> None:
    # Every proxy is kept for good and reused: print() holds sys.stdout as a borrowed reference (CPython
    # 3.11), so a proxy freed when another thread puts the real stream back would crash it.
    kept = state.replaced.setdefault("kept", {})
    for name in STREAMS:
        current = getattr(sys, name)
        if current is not None and not isinstance(current, StreamProxy):
            proxy = kept.setdefault((name, id(current)), StreamProxy(current, name))
            setattr(sys, name, proxy)
            state.replaced[name] = (proxy, current)
    if "factory" not in state.replaced:  # still there: ours is still in the chain (wrapped by another)
        state.replaced["factory"] = (_make_record, logging.getLogRecordFactory())
        logging.setLogRecordFactory(_make_record)


def _uninstall(state: runtime.CaptureState) -> None:
    for name in STREAMS:
        proxy, real = state.replaced.pop(name, (None, None))
        if proxy is not None and getattr(sys, name) is proxy:  # else it was replaced since: ours passes through
            setattr(sys, name, real)
    if logging.getLogRecordFactory() is _make_record:  # else wrapped since: ours stays and passes through
        logging.setLogRecordFactory(state.replaced.pop("factory")[1])


# -- by file descriptor ----------------------------------------------------------------------------------


class _FdCapture:
    """Descriptors 1 and 2 replaced by pipes; one thread copies what arrives to the originals and to the log.

    One thread watching both pipes keeps stdout and stderr lines mostly in the order they were written.
    """

    def __init__(self, out: JobOutput) -> None:
        self.saved: dict[int, int] = {}  # fd -> a copy of the original
        self._pipes: dict[int, tuple[int, Lines]] = {}  # read end -> (fd, lines)
        self._lock = threading.Lock()
        self._done = self._left = False
        try:
            for fd, name in ((1, "stdout"), (2, "stderr")):
                self.saved[fd] = os.dup(fd)
                read_end, write_end = os.pipe()
                self._pipes[read_end] = (fd, out.streams[name])
                try:
                    os.dup2(write_end, fd)
                finally:
                    os.close(write_end)
        except OSError:
            self._restore()
            for fd in [*self.saved.values(), *self._pipes]:
                os.close(fd)
            raise
        self.thread = threading.Thread(target=self._pump, name="jobtrack-capture-fds", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        decoders = {r: codecs.getincrementaldecoder("utf-8")("replace") for r in self._pipes}
        terminal = dict.fromkeys(self.saved, True)
        with selectors.DefaultSelector() as selector:
            for read_end in self._pipes:
                selector.register(read_end, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    read_end = int(key.fd)
                    fd, lines = self._pipes[read_end]
                    try:
                        chunk = os.read(read_end, 65536)
                    except OSError:
                        chunk = b""
                    if chunk and terminal[fd]:  # the terminal first: output is never lost because of the log
                        terminal[fd] = _write_all(self.saved[fd], chunk)
                    lines.feed(decoders[read_end].decode(chunk, final=not chunk))
                    if not chunk:  # every writer closed it: the job ended (and its subprocesses did)
                        selector.unregister(read_end)
                        os.close(read_end)
        with self._lock:
            self._done = True
            left = self._left
        if left:
            for saved in self.saved.values():
                os.close(saved)

    def _restore(self) -> None:
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)

    def stop(self) -> None:
        """Put the original descriptors back and wait (up to ``FD_DRAIN_S``) for the pipes' last bytes."""
        self._restore()
        self.thread.join(FD_DRAIN_S)
        with self._lock:
            done = self._done
            self._left = not done
        if done:
            for saved in self.saved.values():
                os.close(saved)
        else:  # a subprocess of the job still holds a pipe: the rest reaches the terminal only
            for _, lines in self._pipes.values():
                lines.detached = True


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to ``fd``; False once it cannot be written (the terminal went away)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:
            return False
    return True


def _flush_python_streams() -> None:
    for name in STREAMS:
        stream = getattr(sys, name)
        with suppress(OSError, ValueError):
            if stream is not None:
                stream.flush()


def _take_fds(out: JobOutput) -> bool:
    state = runtime.current().capture
    with state.lock:
        if state.saved_fds:
            return False
        state.saved_fds[-1] = -1  # taken; the copies of 1 and 2 replace this once the pipes are in place
    _flush_python_streams()
    try:
        out.fds = _FdCapture(out)
    except OSError as exc:  # a closed descriptor (a daemon's): capture by thread instead
        log.debug("cannot capture fds 1 and 2: %s", exc)
        with state.lock:
            state.saved_fds.clear()
        return False
    out.buffering = _line_buffered(True)
    # sys.stdout/stderr replaced by a stream that does not write to fd 1/2 (pytest's capture, a notebook's):
    # their writes are captured by thread as well, and logging records with stderr's.
    out.routed = {name for fd, name in ((1, "stdout"), (2, "stderr")) if not _writes_to(getattr(sys, name), fd)}
    out.records = "stderr" in out.routed
    with state.lock:
        state.saved_fds.clear()
        state.saved_fds.update(out.fds.saved)
    return True


def _writes_to(stream: Any, fd: int) -> bool:
    try:
        return stream is None or stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False


def _release_fds(out: JobOutput) -> None:
    state = runtime.current().capture
    _flush_python_streams()
    _line_buffered(out.buffering)
    with state.lock:
        state.saved_fds.clear()
    if out.fds is not None:
        out.fds.stop()


def _line_buffered(value: bool | dict[str, bool]) -> dict[str, bool]:
    """Make ``sys.stdout``/``sys.stderr`` line buffered (so the log follows prints live); returns what they were.

    ``value`` is True, or what an earlier call returned (to put that back).
    """
    before: dict[str, bool] = {}
    for name in STREAMS:
        stream = getattr(sys, name)
        if isinstance(stream, StreamProxy):
            stream = stream._real
        want = value if isinstance(value, bool) else value.get(name)
        if not isinstance(stream, io.TextIOWrapper) or want is None:
            continue
        before[name] = stream.line_buffering
        with suppress(OSError, ValueError):
            stream.reconfigure(line_buffering=want)
    return before
