"""The call of the user's training and prediction code, for every runner: the one place it runs.

A process that the code forks and that leaves the code (returns, raises, ``sys.exit``) instead of ending with
``os._exit`` exits right there: only the runner that claimed the job may record its end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from jobtrack.states import JobType

if TYPE_CHECKING:
    from jobtrack.context import RunContext
    from jobtrack.spec import JobSpec


def call_in_runner(spec: JobSpec, ctx: RunContext, runner_pid: int) -> Any:
    """``call_user_code`` in the runner process ``runner_pid``; a forked child that comes back here exits."""
    try:
        summary = call_user_code(spec, ctx)
    except BaseException as exc:
        if os.getpid() != runner_pid:
            _exit_forked_child(exc)
        raise
    if os.getpid() != runner_pid:
        _exit_forked_child(None)
    return summary


def _exit_forked_child(exc: BaseException | None) -> NoReturn:
    """End a child forked by the job's code as its interpreter would (exit code, traceback on stderr), but with
    ``os._exit``, as multiprocessing ends its forked children: the copy of the runner it holds (the claim, the
    executor, the recorder, exit handlers) must not act on the job, which the parent still runs."""
    code = 0
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    elif exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: exit anyway
            stream.flush()
    os._exit(code)


def call_user_code(spec: JobSpec, ctx: RunContext) -> Any:
    """Run the job's train and/or predict function; its summary (``{"train": ..., "predict": ...}`` for both)."""
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
