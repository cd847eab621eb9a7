"""What every runner shares: claim a job, run the user's code with a RunContext, record how it ended.

Recording the end cannot fail for good while the process lives (issue #21): a summary or error that
cannot be encoded is replaced by what can be, and a store that is busy, full or unreachable is
retried with backoff until the write goes through (``Recorder``), fenced by the claim token so a
retry can never overwrite another verdict. An end the database refuses for good (a summary too big
for it) is recorded as FAILED with a minimal error instead. A claim is retried the same way while
the store is busy or unreachable, so a transient failure never leaves a job QUEUED for good.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from jobtrack import capture, jsonutil, liveness, runtime
from jobtrack.errors import (
    DatabaseReplaced,
    InvalidTransition,
    JobCanceled,
    JobNotFound,
    NotSerializable,
    ResultTooLarge,
    RunnerFenced,
    StoreBusy,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
)
from jobtrack.runners import usercode
from jobtrack.states import JobStatus, JobType

if TYPE_CHECKING:
    from jobtrack.context import RunContext
    from jobtrack.spec import JobSpec
    from jobtrack.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")


MAX_ERROR_CHARS = 64 * 1024
"""Longest error message, and traceback, that a failed job's result and log keep (characters). A longer one (an
exception holding a whole tensor or table in its text) keeps its start and its end, with a note of what was cut."""


def cut_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text``, or its start and end with ``[... N characters cut ...]`` between when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


def error_info(exc: BaseException) -> dict[str, str]:
    """The ``error`` entry of a failed job's result: type, message, traceback (each cut to ``MAX_ERROR_CHARS``)."""
    return {
        "type": type(exc).__name__,
        "message": _message(exc),
        "traceback": cut_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))),
    }


def error_json(exc: BaseException) -> str:
    """``error_info`` as JSON; a minimal error if even that cannot be encoded (never raises)."""
    try:
        return jsonutil.dumps(error_info(exc), "error")
    except Exception as bad:  # noqa: BLE001 - the end must be recorded whatever the exception holds
        return jsonutil.dumps({"type": type(exc).__name__, "message": f"(the error could not be stored: {bad})",
                               "traceback": ""}, "error")


@dataclass(frozen=True)
class _Again:
    """The next attempt of a job started in place (#18): its token and number."""

    token: int
    attempt: int


def run_job(store: Store, spec: JobSpec, *, token: int | None = None, capture_fds: bool = False,
            attempt: int = 1) -> JobStatus | None:
    """Claim (unless already claimed with ``token``), run and finish one job; returns its final status.

    Returns None when the job could not be claimed (canceled or failed before it started) or the
    runner was fenced off. Errors in user code never escape: they become FAILED with the error, or
    start the next attempt in place when the job's ``retry_on`` names them (#18; ``attempt``: the
    number of the attempt ``token`` holds). The code's output goes to the job's log
    (``jobtrack.capture``), by thread, or with ``capture_fds`` (one job at a time) by fds 1 and 2.
    """
    if token is None:
        token = _claim(store, spec.job_id)
        if token is None:
            return None  # canceled (or declared lost) before it started
    held = [token]  # the heartbeat renews the lease of the current attempt's token
    beats = runtime.current().heartbeats
    key = (id(store), spec.job_id)
    beats.add(key, lambda: store.heartbeat(spec.job_id, held[0]), store.lease_s / 3)
    try:
        taken_over = attempt > 1  # by a new process runner child or a worker: say so in the job's log
        while True:
            token = held[0]
            ctx = spec.context(store, token, attempt)
            if taken_over:
                ctx.log(f"attempt {attempt} of {spec.max_attempts}, resuming at epoch {ctx.resume_epoch}")
                taken_over = False
            try:
                outcome = _execute(store, spec, ctx, token, capture_fds)
            finally:
                ctx.log_file.close()  # its kept descriptor (#14); a line written later opens the file again
            if not isinstance(outcome, _Again):
                return outcome
            held[0], attempt = outcome.token, outcome.attempt
    except Exception as exc:  # noqa: BLE001 - e.g. MemoryError encoding a huge summary: the job still ends (#21)
        log.error("job %s: recording its end failed (%s: %s); recording FAILED", spec.job_id, type(exc).__name__,
                  _message(exc))
        return finish(store, spec.job_id, token, JobStatus.FAILED, reason=f"error: {type(exc).__name__}",
                      error_json=error_json(exc))
    finally:
        beats.remove(key)


def retrying(fn: Callable[[], T], what: str, *, signals_seen: int | None = None) -> T:
    """``fn()``, retried with backoff while the store is busy or unreachable (#21).

    For a runner's reads and writes that nothing else would repeat (a claim, a child's exit). Gives
    up, raising the last error, only when the interpreter is shutting down (its main thread ended),
    or, given ``signals_seen`` (the signal count when the job was submitted), once a signal came since:
    the process is stopping, and its exit would wait on the store.

    Raises:
        StoreBusy, StoreUnavailable: still failing as the interpreter shuts down (or a signal came).
    """
    delay = 0.01
    while True:
        try:
            return fn()
        except (StoreBusy, StoreUnavailable) as exc:
            stopping = signals_seen is not None and runtime.signal_state().count != signals_seen
            if stopping or not threading.main_thread().is_alive():
                raise
            log.debug("%s: not yet, retrying: %s", what, exc)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, runtime.RECORD_RETRY_MAX_S)


def _claim(store: Store, job_id: str) -> int | None:
    """Claim a QUEUED job (``retrying``); its fencing token, or None if it is no longer QUEUED.

    Also None when the store refuses for good, or the interpreter shuts down or a signal stops this
    process first (the job then reads FAILED, submitter lost, once this process is gone). A claim whose
    COMMIT was lost with the server connection may have been applied: a job found RUNNING under this
    process is then ours (a process runs each job of its own once), and its token is adopted.
    """
    lost_commit = False

    def attempt() -> int | None:
        nonlocal lost_commit
        if lost_commit:
            rec = store.get_job(job_id, check_liveness=False)
            if rec.status is not JobStatus.QUEUED:
                mine = rec.status is JobStatus.RUNNING and rec.runner == liveness.current().encode()
                return rec.claim_token if mine else None
        try:
            return store.claim(job_id)
        except StoreUnavailable as exc:
            lost_commit = lost_commit or exc.maybe_applied
            raise

    try:  # a process stopping by a signal starts no job: its exit never waits for a store that refuses a claim
        # a signal since this process queued the job: the process is stopping, a claim the store refuses gives up
        return retrying(attempt, f"job {job_id}: claim", signals_seen=runtime.submitted_count(job_id))
    except InvalidTransition:
        return None  # canceled (or declared lost) before it started
    except StoreError as exc:
        log.error("job %s: not started, the store cannot take its claim: %s", job_id, exc)
        return None


def _next_attempt(store: Store, spec: JobSpec, ctx: RunContext, token: int, exc: BaseException) -> _Again | None:
    """Start the next attempt in place if the job's ``retry_on`` names ``exc`` and attempts are left (#18)."""
    if not spec.retry_policy.retries(exc, ctx.attempt):
        return None
    why = f"error: {type(exc).__name__}"
    try:
        nxt = retrying(lambda: store.next_attempt(spec.job_id, token, why), f"job {spec.job_id}: next attempt")
    except (RunnerFenced, StoreError) as err:
        log.warning("job %s: cannot start its next attempt: %s", spec.job_id, err)
        return None
    if nxt is None:  # a cancel was requested meanwhile
        return None
    ctx.log(f"attempt {ctx.attempt} failed: {type(exc).__name__}: {_message(exc)}; "
            f"starting attempt {nxt[1]} of {spec.max_attempts}")
    return _Again(*nxt)


def _execute(store: Store, spec: JobSpec, ctx: RunContext, token: int,
             capture_fds: bool = False) -> JobStatus | _Again | None:
    # No "started"/"completed" log lines: the event history records those, and a log file per
    # no-op job would cost more than the job's three transactions together.
    try:
        # Output capture (#13): its prints, logging and (capture_fds) fds 1/2 reach the log before the end is recorded.
        with capture.job_output(ctx.log_file, fds=capture_fds):
            summary = usercode.call_in_runner(spec, ctx, os.getpid())
    except JobCanceled:
        signal_name = ctx.stopped_by_signal
        ctx.log("job canceled" + (f" by {signal_name}" if signal_name else ""))
        if signal_name and _on_main_thread():
            return None  # recorded by the signal's recorder thread (below)
        reason = f"signal {signal_name}" if signal_name else "canceled by user"
        return finish(store, spec.job_id, token, JobStatus.CANCELED, reason=reason)
    except RunnerFenced as exc:
        log.warning("%s", exc)
        return None
    except BaseException as exc:  # every failure of user code is recorded, then re-raised if fatal
        signal_name = ctx.stopped_by_signal
        if signal_name:  # our own signal raised in the code, or an error it caused (Ctrl-C killed its DataLoader
            # workers): the job was stopped, not failed. An eager job in the main thread is recorded CANCELED by
            # the signal's recorder thread, which retries while the store is busy: Ctrl-C never waits here for
            # the write lock (#12).
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                ctx.log(f"job canceled by {signal_name}; its code then raised {type(exc).__name__}: {_message(exc)}\n"
                        + error_info(exc)["traceback"].rstrip())  # where, for whoever reads the log
            status = None if _on_main_thread() else finish(store, spec.job_id, token, JobStatus.CANCELED,
                                                            reason=f"signal {signal_name}")
        elif isinstance(exc, SystemExit) and exc.code in (None, 0):  # sys.exit() / sys.exit(0): a normal end
            status = _complete(store, spec, ctx, token, None)
        else:
            again = _next_attempt(store, spec, ctx, token, exc) if isinstance(exc, Exception) else None
            if again is not None:
                return again
            ctx.log(f"job failed: {type(exc).__name__}: {_message(exc)}")
            status = finish(store, spec.job_id, token, JobStatus.FAILED, reason=f"error: {type(exc).__name__}",
                            error_json=error_json(exc))
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit still stop the process, after the job is recorded
        return status
    signal_name = ctx.stopped_by_signal
    if signal_name:  # the code returned after a signal (a framework callback stopped training): canceled, as above
        ctx.log(f"job canceled by {signal_name}")
        if _on_main_thread():
            return None  # recorded by the signal's recorder thread
        return finish(store, spec.job_id, token, JobStatus.CANCELED, reason=f"signal {signal_name}")
    return _complete(store, spec, ctx, token, summary)


def _complete(store: Store, spec: JobSpec, ctx: RunContext, token: int, summary: Any) -> JobStatus | None:
    """Record COMPLETED with what the code returned (or None: it called ``sys.exit(0)``)."""
    returned: Any = summary.get("predict") if spec.job_type is JobType.TRAIN_INFERENCE and isinstance(summary, dict) \
        else summary
    if ctx.output_alias is not None and not ctx.exported_kinds() and _looks_like_rows(returned):
        ctx.log(f"predict returned {len(returned)} row(s) and exported none: a returned value is the job's "
                "summary; call ctx.export('predictions', rows) to write rows to a file and a SQL view")
    # A summary that cannot be stored as it is never fails the finished job (#13): what can be stored is,
    # and result["summary_error"] and the log say what was not.
    summary_json, summary_error = _summary_json(ctx, summary)
    extras = ctx.result_extras()  # stopped_early, when the job has a patience rule (#22)
    reason = "completed (stopped early)" if extras.get("stopped_early") else "completed"
    extra_json = {k: jsonutil.dumps(v, k) for k, v in extras.items()}
    if summary_error is not None:
        extra_json["summary_error"] = summary_error
    # A cancel requested while the code ran, which it never noticed, still wins over COMPLETED.
    return finish(store, spec.job_id, token, JobStatus.COMPLETED, reason=reason, summary_json=summary_json,
                  extra_json=extra_json or None)


def _looks_like_rows(value: Any) -> bool:
    """A list of dicts, a DataFrame, or an array or tensor of predictions (``return model(x)``): what a predict
    function meant to export."""
    from jobtrack.exports import is_dataframe

    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and len(shape) >= 1 and shape[0] > 0:  # numpy, torch (torch.Size is a tuple)
        return True
    return is_dataframe(value) or (isinstance(value, list) and bool(value)
                                   and all(isinstance(r, Mapping) for r in value[:10]))


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _message(exc: BaseException) -> str:
    """``str(exc)`` (cut to ``MAX_ERROR_CHARS``), or a placeholder when the exception's own ``__str__`` fails."""
    try:
        return cut_text(str(exc))
    except Exception:  # noqa: BLE001 - user code's exception; its end must still be recorded
        return f"<{type(exc).__name__}: str() failed>"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _holds_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` (keys included) holds a lone surrogate."""
    if isinstance(value, str):
        return _LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_surrogate(k) or _holds_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_surrogate(v) for v in value)
    return False


def _summary_json(ctx: RunContext, summary: Any) -> tuple[str | None, str | None]:
    """The summary as JSON, and the ``summary_error`` entry of the result (JSON) if it could not be stored as is.

    Never raises for what the summary holds (#13): NaN and infinities are stored as null; a value that
    cannot be stored (an object, a large array) is replaced by the text ``"<not stored: TypeName>"``; a
    summary over ``max_result_bytes`` is not stored. The job's log says which, and ``summary_error``
    holds the typed error (``NotSerializable``, ``ResultTooLarge``) that says so. Text that is not valid
    Unicode (lone surrogates, as ``os.fsdecode`` makes of a file name that is not UTF-8) is stored
    escaped as ``\\udcff`` by ``jsonutil.dumps``; the job's log says so.
    """
    if summary is None:
        return None, None
    field = "the returned summary"
    nonfinite: list[str] = []
    problem: Exception | None = None
    try:
        text: str | None = jsonutil.dumps(summary, field, nonfinite=nonfinite)
    except NotSerializable as exc:
        clean, problems = jsonutil.storable(summary, field, nonfinite=nonfinite)
        text = None if clean is None else jsonutil.dumps(clean, field)
        problem = NotSerializable(field, "; ".join(problems) or exc.detail)
    if nonfinite:
        ctx.log(f"{field}: non-finite values (NaN or infinite) stored as null at {', '.join(nonfinite[:20])}"
                + (f" and {len(nonfinite) - 20} more" if len(nonfinite) > 20 else ""))
    if text is not None and jsonutil.stored_size(text) > ctx.max_result_bytes:
        problem, text = ResultTooLarge(field, jsonutil.stored_size(text), ctx.max_result_bytes), None
    error = None
    if problem is not None:
        ctx.log(f"{field} was {'stored in part' if text is not None else 'not stored'}: {problem}")
        error = jsonutil.dumps({"type": type(problem).__name__, "message": str(problem)}, "summary_error")
    if text is None:
        return None, error
    try:
        escaped = "\\\\u" in text and _holds_surrogate(summary)  # the text \\udcff only where escaped
    except RecursionError:
        escaped = False
    if escaped:
        ctx.log("the returned summary holds text that is not valid Unicode (lone surrogates, as os.fsdecode makes "
                "of bytes that are not UTF-8); each is stored as a backslash escape such as \\udcff")
    return text, error


def finish(store: Store, job_id: str, token: int, status: JobStatus, *, reason: str,
           summary_json: str | None = None, error_json: str | None = None,
           extra_json: dict[str, str] | None = None) -> JobStatus | None:
    """Record the end of a job this runner holds; returns the status recorded, None if not (yet) recorded.

    A store that cannot take the write now (locked past ``lock_timeout``, full, unreachable) does
    not lose the end: the write goes to this process's recorder thread, which retries it until it
    lands, and the job reads RUNNING meanwhile (its runner lives and keeps trying). Fenced by the
    claim token, so a late retry can never overwrite another verdict. An end the database refuses
    for good (a summary too big for it) is replaced by FAILED with a minimal error, retried the same way.
    """
    outcome: list[JobStatus | None] = []
    end: dict[str, Any] = {"status": status, "reason": reason, "summary_json": summary_json,
                           "error_json": error_json, "extra_json": extra_json}
    maybe_applied = False  # a server connection dropped during a COMMIT of ours

    def write() -> bool:
        nonlocal maybe_applied
        try:
            outcome.append(store.finish(job_id, token, end["status"], reason=end["reason"],
                                        summary_json=end["summary_json"], error_json=end["error_json"],
                                        extra_json=end["extra_json"]))
        except (StoreBusy, StoreUnavailable, StoreReadOnly) as exc:  # may clear: try again later
            maybe_applied = maybe_applied or getattr(exc, "maybe_applied", False)
            log.debug("job %s: cannot record %s yet: %s", job_id, end["status"], exc)
            return False
        except DatabaseReplaced as exc:
            log.error("job %s: its end (%s) cannot be recorded: %s", job_id, end["status"], exc)
            outcome.append(None)
        except StoreError as exc:  # refused for good (too big, ...): the last resort is a minimal FAILED
            if not _minimal(end, exc):
                log.debug("job %s: cannot record %s yet: %s", job_id, end["status"], exc)
                return False
            log.warning("job %s: the database refuses its end (%s): %s; recording FAILED with a minimal error",
                        job_id, status, exc)
            return write()
        except RunnerFenced as exc:
            if maybe_applied and JobStatus(exc.status).is_terminal:  # our COMMIT whose answer was lost, most likely
                log.debug("job %s: found %s after a lost COMMIT of its end", job_id, exc.status)
                outcome.append(JobStatus(exc.status))
            elif exc.status == end["status"]:  # the same end, recorded first (a signal's cancel): nothing lost
                log.debug("job %s: already %s", job_id, exc.status)
                outcome.append(JobStatus(exc.status))
            else:
                log.warning("job %s: could not record %s: %s", job_id, end["status"], exc)
                outcome.append(None)
        except (InvalidTransition, JobNotFound) as exc:
            log.warning("job %s: could not record %s: %s", job_id, end["status"], exc)
            outcome.append(None)
        return True

    if not write():
        log.warning("job %s: the store cannot take its end (%s) now; retrying in the background", job_id, status)
        runtime.current().recorder.add(write)
    return outcome[0] if outcome else None


def _minimal(end: dict[str, Any], exc: StoreError) -> bool:
    """Replace the end in place by FAILED with a minimal error; False if it already is that."""
    if end.get("minimal"):
        return False
    was = end["status"]
    message = f"The job's end ({was}) could not be stored: {str(exc)[:500]}"
    end.update(status=JobStatus.FAILED, reason="error: its end could not be stored", summary_json=None,
               extra_json=None, minimal=True,
               error_json=jsonutil.dumps({"type": type(exc).__name__, "message": message, "traceback": ""}, "error"))
    return True
