"""What every runner shares: claim a job, run the user's code with a RunContext, record how it ended."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil
from jobtrack.context import RunContext
from jobtrack.errors import InvalidArgument, InvalidTransition, JobCanceled, RunnerFenced
from jobtrack.states import JobStatus

if TYPE_CHECKING:
    from jobtrack.dataset import Dataset
    from jobtrack.store import Store

log = logging.getLogger(__name__)

UserFn = Callable[[RunContext], Any]


@dataclass
class JobPayload:
    """Everything needed to run one job, held in memory by in-process runners."""

    job_id: str
    job_type: str
    dataset: Dataset
    config: dict[str, Any]
    model_run_id: str | None
    train_fn: UserFn | None = None
    predict_fn: UserFn | None = None
    output_alias: str | None = None
    output_config: dict[str, Any] = field(default_factory=dict)
    extract_embeddings: bool = False
    model_dir: str | None = None  # where the model run's files live (kept across `jobtrack migrate`)


def error_info(exc: BaseException) -> dict[str, str]:
    """The ``error`` entry of a failed job's result: type, message, traceback."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def run_job(store: Store, payload: JobPayload, *, token: int | None = None) -> JobStatus | None:
    """Claim (unless already claimed with ``token``), run and finish one job; returns its final status.

    Returns None when the job could not be claimed (canceled or failed before it started) or the
    runner was fenced off. Errors in user code never escape: they become FAILED with the error.
    """
    if token is None:
        try:
            token = store.claim(payload.job_id)
        except InvalidTransition:
            return None  # canceled (or declared lost) before it started
    ctx = RunContext(
        store,
        job_id=payload.job_id,
        token=token,
        job_type=payload.job_type,
        dataset=payload.dataset,
        config=payload.config,
        model_run_id=payload.model_run_id,
        output_alias=payload.output_alias,
        output_config=payload.output_config,
        extract_embeddings=payload.extract_embeddings,
        model_dir=payload.model_dir,
    )
    HEARTBEATS.add(store, payload.job_id, token)
    try:
        return _execute(store, payload, ctx, token)
    finally:
        HEARTBEATS.remove(store, payload.job_id)


def _execute(store: Store, payload: JobPayload, ctx: RunContext, token: int) -> JobStatus | None:
    # No "started"/"completed" log lines: the event history records those, and a log file per
    # no-op job would cost more than the job's three transactions together.
    try:
        summary = _call_user_code(payload, ctx)
        summary_json = jsonutil.dumps(summary, "the returned summary") if summary is not None else None
    except JobCanceled:
        ctx.log("job canceled")
        return _finish(store, payload.job_id, token, JobStatus.CANCELED, reason="canceled by user")
    except RunnerFenced as exc:
        log.warning("%s", exc)
        return None
    except BaseException as exc:  # noqa: BLE001 - every failure of user code is recorded, then re-raised if fatal
        ctx.log(f"job failed: {type(exc).__name__}: {exc}")
        status = _finish(store, payload.job_id, token, JobStatus.FAILED, reason=f"error: {type(exc).__name__}",
                         error_json=jsonutil.dumps(error_info(exc), "error"))
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit still stop the process, after the job is recorded
        return status
    # A cancel requested while the code ran, which it never noticed, still wins over COMPLETED.
    return _finish(store, payload.job_id, token, JobStatus.COMPLETED, reason="completed", summary_json=summary_json)


def _call_user_code(payload: JobPayload, ctx: RunContext) -> Any:
    if payload.job_type == "train":
        assert payload.train_fn is not None
        return payload.train_fn(ctx)
    if payload.job_type == "inference":
        assert payload.predict_fn is not None
        return payload.predict_fn(ctx)
    assert payload.train_fn is not None and payload.predict_fn is not None
    train_summary = payload.train_fn(ctx)
    ctx.phase = "predict"
    ctx.check_canceled()
    return {"train": train_summary, "predict": payload.predict_fn(ctx)}


def _finish(store: Store, job_id: str, token: int, status: JobStatus, *, reason: str,
            summary_json: str | None = None, error_json: str | None = None) -> JobStatus | None:
    try:
        return store.finish(job_id, token, status, reason=reason, summary_json=summary_json, error_json=error_json)
    except (RunnerFenced, InvalidTransition) as exc:
        log.warning("job %s: could not record %s: %s", job_id, status, exc)
        return None


def import_function(ref: str) -> UserFn:
    """Import ``package.module:function`` (dots after the colon reach nested attributes).

    Raises:
        InvalidArgument: a malformed reference, or one that does not import to a callable.
    """
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise InvalidArgument(f"{ref!r} is not of the form 'package.module:function'.")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(f"Cannot import {ref!r}: {exc}.") from None
    if not callable(obj):
        raise InvalidArgument(f"{ref!r} is not callable.")
    return obj  # type: ignore[no-any-return]


def function_ref(fn: Callable[..., Any], what: str) -> str:
    """The importable reference of ``fn``, checked by importing it back.

    Raises:
        InvalidArgument: ``fn`` is a lambda, a nested function, or defined in ``__main__``.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        raise InvalidArgument(
            f"runner='worker' needs {what} importable as 'package.module:function'; {fn!r} is not "
            "(lambdas, nested functions and functions defined in __main__ cannot be imported by a worker). "
            "Move it into a module, or use runner='thread'."
        )
    ref = f"{module}:{qualname}"
    if import_function(ref) is not fn:
        raise InvalidArgument(f"{ref!r} does not import back to {fn!r}; use a module-level function.")
    return ref


class _Heartbeats:
    """One daemon thread per process renewing the leases of the jobs this process runs.

    Each job is renewed every third of its store's lease, so a live runner never loses a claim
    to lease expiry, and a dead one loses it within one lease.
    """

    def __init__(self) -> None:
        self._jobs: dict[tuple[int, str], tuple[Store, int, float]] = {}  # -> (store, token, last beat)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_beat = 0.0  # monotonic time the thread wakes up next

    def add(self, store: Store, job_id: str, token: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._jobs[(id(store), job_id)] = (store, token, now)
            if self._thread is None or not self._thread.is_alive():
                self._next_beat = now
                self._thread = threading.Thread(target=self._run, name="jobtrack-heartbeat", daemon=True)
                self._thread.start()
                return
            early = now + store.lease_s / 3 < self._next_beat
        if early:  # a shorter lease than the others needs an earlier beat; otherwise let the thread sleep
            self._wake.set()

    def remove(self, store: Store, job_id: str) -> None:
        with self._lock:
            self._jobs.pop((id(store), job_id), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                jobs = list(self._jobs.items())
            for key, (store, token, last) in jobs:
                if time.monotonic() - last >= store.lease_s / 3:
                    try:
                        store.heartbeat(key[1], token)
                    except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the thread
                        log.debug("heartbeat of %s failed: %s", key[1], exc)
                    with self._lock:
                        if key in self._jobs:
                            self._jobs[key] = (store, token, time.monotonic())
            with self._lock:  # jobs added meanwhile count too: add() only wakes us for beats due earlier
                now = time.monotonic()
                wait = min([10.0] + [max(0.01, last + store.lease_s / 3 - now)
                                     for store, _, last in self._jobs.values()])
                self._next_beat = now + wait
                self._wake.clear()
            self._wake.wait(wait)


HEARTBEATS = _Heartbeats()


def _reset_heartbeats_in_child() -> None:
    # A forked child inherits the parent's registry and lock state but not its threads.
    HEARTBEATS._jobs = {}
    HEARTBEATS._lock = threading.Lock()
    HEARTBEATS._wake = threading.Event()
    HEARTBEATS._thread = None
    HEARTBEATS._next_beat = 0.0


os.register_at_fork(after_in_child=_reset_heartbeats_in_child)
