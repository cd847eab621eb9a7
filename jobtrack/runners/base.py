"""What every runner shares: claim a job, run the user's code with a RunContext, record how it ended.

Recording the end cannot fail for good while the process lives (issue #21): a summary or error that
cannot be encoded is replaced by what can be, and a store that is busy, full or unreachable is
retried with backoff until the write goes through (``Recorder``), fenced by the claim token so a
retry can never overwrite another verdict.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil, runtime
from jobtrack.errors import (
    InvalidTransition,
    JobCanceled,
    JobNotFound,
    NotSerializable,
    RunnerFenced,
    StoreError,
)
from jobtrack.states import JobStatus, JobType

if TYPE_CHECKING:
    from jobtrack.context import RunContext
    from jobtrack.spec import JobSpec
    from jobtrack.store import Store

log = logging.getLogger(__name__)


def error_info(exc: BaseException) -> dict[str, str]:
    """The ``error`` entry of a failed job's result: type, message, traceback."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def error_json(exc: BaseException) -> str:
    """``error_info`` as JSON; a minimal error if even that cannot be encoded (never raises)."""
    try:
        return jsonutil.dumps(error_info(exc), "error")
    except Exception as bad:  # noqa: BLE001 - the end must be recorded whatever the exception holds
        return jsonutil.dumps({"type": type(exc).__name__, "message": f"(the error could not be stored: {bad})",
                               "traceback": ""}, "error")


def run_job(store: Store, spec: JobSpec, *, token: int | None = None) -> JobStatus | None:
    """Claim (unless already claimed with ``token``), run and finish one job; returns its final status.

    Returns None when the job could not be claimed (canceled or failed before it started) or the
    runner was fenced off. Errors in user code never escape: they become FAILED with the error.
    """
    if token is None:
        try:
            token = store.claim(spec.job_id)
        except InvalidTransition:
            return None  # canceled (or declared lost) before it started
    ctx = spec.context(store, token)
    beats = runtime.current().heartbeats
    key = (id(store), spec.job_id)
    beats.add(key, lambda: store.heartbeat(spec.job_id, token), store.lease_s / 3)
    try:
        return _execute(store, spec, ctx, token)
    finally:
        beats.remove(key)


def _execute(store: Store, spec: JobSpec, ctx: RunContext, token: int) -> JobStatus | None:
    # No "started"/"completed" log lines: the event history records those, and a log file per
    # no-op job would cost more than the job's three transactions together.
    try:
        summary = _call_user_code(spec, ctx)
    except JobCanceled:
        signal_name = ctx.stopped_by_signal
        ctx.log("job canceled" + (f" by {signal_name}" if signal_name else ""))
        reason = f"signal {signal_name}" if signal_name else "canceled by user"
        return finish(store, spec.job_id, token, JobStatus.CANCELED, reason=reason)
    except RunnerFenced as exc:
        log.warning("%s", exc)
        return None
    except BaseException as exc:  # noqa: BLE001 - every failure of user code is recorded, then re-raised if fatal
        signal_name = ctx.stopped_by_signal
        if signal_name and isinstance(exc, (KeyboardInterrupt, SystemExit)):  # our own signal, raised in the code
            status = finish(store, spec.job_id, token, JobStatus.CANCELED, reason=f"signal {signal_name}")
        else:
            ctx.log(f"job failed: {type(exc).__name__}: {exc}")
            status = finish(store, spec.job_id, token, JobStatus.FAILED, reason=f"error: {type(exc).__name__}",
                            error_json=error_json(exc))
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit still stop the process, after the job is recorded
        return status
    summary_json = _summary_json(ctx, summary)
    extras = ctx.result_extras()  # stopped_early, when the job has a patience rule (#22)
    reason = "completed (stopped early)" if extras.get("stopped_early") else "completed"
    # A cancel requested while the code ran, which it never noticed, still wins over COMPLETED.
    return finish(store, spec.job_id, token, JobStatus.COMPLETED, reason=reason, summary_json=summary_json,
                  extra_json={k: jsonutil.dumps(v, k) for k, v in extras.items()} or None)


def _summary_json(ctx: RunContext, summary: Any) -> str | None:
    """The summary as JSON; a job that finished its work never fails only because of its summary."""
    if summary is None:
        return None
    try:
        return jsonutil.dumps(summary, "the returned summary")
    except NotSerializable as exc:
        ctx.log(f"the returned summary could not be stored: {exc}")
        return jsonutil.dumps({"unstored": str(exc)}, "the returned summary")


def _call_user_code(spec: JobSpec, ctx: RunContext) -> Any:
    if spec.job_type is JobType.TRAIN:
        assert spec.train_fn is not None
        return spec.train_fn(ctx)
    if spec.job_type is JobType.INFERENCE:
        assert spec.predict_fn is not None
        return spec.predict_fn(ctx)
    assert spec.train_fn is not None and spec.predict_fn is not None
    train_summary = spec.train_fn(ctx)
    ctx.phase = "predict"
    ctx.check_canceled()
    return {"train": train_summary, "predict": spec.predict_fn(ctx)}


def finish(store: Store, job_id: str, token: int, status: JobStatus, *, reason: str,
           summary_json: str | None = None, error_json: str | None = None,
           extra_json: dict[str, str] | None = None) -> JobStatus | None:
    """Record the end of a job this runner holds; returns the status recorded, None if not (yet) recorded.

    A store that cannot take the write now (locked past ``lock_timeout``, full, unreachable) does
    not lose the end: the write goes to this process's recorder thread, which retries it until it
    lands, and the job reads RUNNING meanwhile (its runner lives and keeps trying). Fenced by the
    claim token, so a late retry can never overwrite another verdict.
    """
    outcome: list[JobStatus | None] = []

    def write() -> bool:
        try:
            outcome.append(store.finish(job_id, token, status, reason=reason, summary_json=summary_json,
                                        error_json=error_json, extra_json=extra_json))
        except StoreError as exc:
            log.debug("job %s: cannot record %s yet: %s", job_id, status, exc)
            return False
        except (RunnerFenced, InvalidTransition, JobNotFound) as exc:
            log.warning("job %s: could not record %s: %s", job_id, status, exc)
            outcome.append(None)
        return True

    if not write():
        log.warning("job %s: the store cannot take its end (%s) now; retrying in the background", job_id, status)
        runtime.current().recorder.add(write)
    return outcome[0] if outcome else None
