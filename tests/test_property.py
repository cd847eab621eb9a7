"""Random operation sequences on a few jobs (hypothesis stateful testing), checking the store against a
model and the invariants of SPEC §1 after every step.

Each example gets a fresh database in its own temporary directory: function-scoped fixtures are not
reset between hypothesis examples.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import tempfile
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from jobtrack import liveness, runtime, timeutil
from jobtrack.errors import InvalidTransition, RunnerFenced
from jobtrack.states import TERMINAL, JobStatus, is_allowed
from jobtrack.store import Store
from jobtrack.store.core import check_transition
from jobtrack.timeutil import from_iso, to_iso
from rows import create

STATUSES = [s.value for s in JobStatus]
TERMINAL_VALUES = sorted(s.value for s in TERMINAL)
MAX_JOBS = 3


def _raw(path: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, list[tuple[Any, ...]]], list[str]]:
    """Every job row and every job's event rows, read with plain sqlite3."""
    with closing(sqlite3.connect(path)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        rows = {r[0]: tuple(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")}
        events: dict[str, list[tuple[Any, ...]]] = {}
        for r in conn.execute("SELECT job_id, from_status, to_status, at, reason FROM job_events ORDER BY id"):
            events.setdefault(r[0], []).append(tuple(r))
    return rows, events, cols


def check_invariants(path: str, model_status: dict[str, str], frozen: dict[str, Any]) -> None:
    """The invariants of SPEC §1 over the raw database; ``frozen`` keeps terminal jobs' rows to compare."""
    rows, events, cols = _raw(path)
    assert set(rows) == set(model_status)
    assert set(events) == set(model_status)
    status_i, finished_i = cols.index("status"), cols.index("finished_at")
    for job_id, row in rows.items():
        status = row[status_i]
        assert status in STATUSES
        assert status == model_status[job_id]
        history = events[job_id]
        assert (history[0][1], history[0][2]) == (None, "QUEUED")
        for prev, nxt in itertools.pairwise(history):
            assert nxt[1] == prev[2], f"{job_id}: event chain broken {history}"
            assert is_allowed(JobStatus(nxt[1]), JobStatus(nxt[2])), f"{job_id}: disallowed step {nxt[1]} -> {nxt[2]}"
            assert nxt[3] >= prev[3]  # fixed-width ISO text sorts by instant
        assert history[-1][2] == status
        assert (row[finished_i] is not None) == (status in TERMINAL_VALUES)
        if status in TERMINAL_VALUES:
            if job_id in frozen:
                assert (row, history) == frozen[job_id], f"terminal job {job_id} changed"
            else:
                frozen[job_id] = (row, history)


class JobStoreMachine(RuleBasedStateMachine):
    """Model: each job's status, claim token and cancel flag; the real store must agree after every step."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self._tmp.name, "prop.db")
        self.store = Store(self.path)
        self.jobs: list[str] = []
        self.status: dict[str, str] = {}
        self.token: dict[str, int] = {}
        self.cancel: dict[str, bool] = {}
        self.frozen: dict[str, Any] = {}

    def teardown(self) -> None:
        self.store.close()
        self._tmp.cleanup()

    def _pick(self, i: int) -> str:
        return self.jobs[i % len(self.jobs)]

    @initialize()
    def first_job(self) -> None:
        self.create()

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule()
    def create(self) -> None:
        job_id = f"job_{len(self.jobs)}"
        create(self.store, job_id)
        self.jobs.append(job_id)
        self.status[job_id] = "QUEUED"
        self.token[job_id] = 0
        self.cancel[job_id] = False

    @rule(i=st.integers(0, MAX_JOBS - 1), new=st.sampled_from(STATUSES))
    def check(self, i: int, new: str) -> None:
        # The store's check before any write agrees with the table (no write: nothing moves a job back to QUEUED).
        job_id = self._pick(i)
        current = JobStatus(self.status[job_id])
        if is_allowed(current, JobStatus(new)):
            check_transition(job_id, current, JobStatus(new))
        else:
            with pytest.raises(InvalidTransition) as refused:
                check_transition(job_id, current, JobStatus(new))
            assert (refused.value.job_id, refused.value.current, refused.value.requested) == (job_id, current, new)

    @rule(i=st.integers(0, MAX_JOBS - 1))
    def fail_unclaimed(self, i: int) -> None:
        job_id = self._pick(i)
        applied = self.store.fail_unclaimed(job_id, "prop unclaimed")
        assert applied == (self.status[job_id] == "QUEUED")
        if applied:
            self.status[job_id] = "FAILED"

    @rule(i=st.integers(0, MAX_JOBS - 1), seen=st.sampled_from(["QUEUED", "RUNNING"]), stale=st.integers(-1, 1))
    def record_verdict(self, i: int, seen: str, stale: int) -> None:
        # A reader's verdict on the job as it saw it (status and token), possibly out of date by now.
        job_id = self._pick(i)
        token = self.token[job_id] + stale
        applied = self.store.record_verdict(job_id, JobStatus(seen), token, "prop verdict", None)
        assert applied == (seen == self.status[job_id] and stale == 0)
        if applied:
            self.status[job_id] = "FAILED"
            self.cancel[job_id] = False

    @rule()
    def cancel_process_jobs(self) -> None:
        # A signal in this process: every job it runs (it claimed them all) is canceled; worker jobs it
        # only submitted stay queued for their worker.
        running = [j for j in self.jobs if self.status[j] == "RUNNING"]
        assert self.store.cancel_process_jobs(liveness.current().encode(), reason="signal SIGTERM") == len(running)
        for job_id in running:
            self.status[job_id] = "CANCELED"
            self.cancel[job_id] = False

    @rule(i=st.integers(0, MAX_JOBS - 1))
    def request_cancel(self, i: int) -> None:
        job_id = self._pick(i)
        current = self.status[job_id]
        after = self.store.request_cancel(job_id)
        if current == "QUEUED":
            assert after is JobStatus.CANCELED
            self.status[job_id] = "CANCELED"
        else:
            assert after.value == current
            if current == "RUNNING":
                self.cancel[job_id] = True
                assert self.store.get_job(job_id).cancel_requested

    @rule(i=st.integers(0, MAX_JOBS - 1))
    def claim(self, i: int) -> None:
        job_id = self._pick(i)
        if self.status[job_id] == "QUEUED":
            token = self.store.claim(job_id)
            assert token == self.token[job_id] + 1
            self.token[job_id] = token
            self.status[job_id] = "RUNNING"
        else:
            try:
                self.store.claim(job_id)
            except InvalidTransition:
                pass
            else:
                raise AssertionError(f"claimed a {self.status[job_id]} job")

    @rule(i=st.integers(0, MAX_JOBS - 1), valid=st.booleans(), epoch=st.integers(0, 5))
    def add_epoch(self, i: int, valid: bool, epoch: int) -> None:
        job_id = self._pick(i)
        token = self.token[job_id] if valid else self.token[job_id] + 7
        if valid and self.status[job_id] == "RUNNING":
            cancel = self.store.add_epoch(job_id, token, epoch, '{"loss": 1.0}', '{"rmse": 2.0}')
            assert cancel == self.cancel[job_id]
        else:
            with pytest.raises(RunnerFenced) as fenced:  # an epoch from a runner that does not own the job
                self.store.add_epoch(job_id, token, epoch, '{"loss": 1.0}', '{"rmse": 2.0}')
            assert fenced.value.status == self.status[job_id]

    @rule(i=st.integers(0, MAX_JOBS - 1), valid=st.booleans(), new=st.sampled_from(TERMINAL_VALUES))
    def finish(self, i: int, valid: bool, new: str) -> None:
        job_id = self._pick(i)
        token = self.token[job_id] if valid else self.token[job_id] + 7
        if valid and self.status[job_id] == "RUNNING":
            applied = self.store.finish(job_id, token, JobStatus(new), reason="prop finish")
            expected = "CANCELED" if (new == "COMPLETED" and self.cancel[job_id]) else new
            assert applied.value == expected
            self.status[job_id] = expected
            self.cancel[job_id] = False
        else:
            try:
                self.store.finish(job_id, token, JobStatus(new), reason="prop finish")
            except (RunnerFenced, InvalidTransition):
                pass
            else:
                raise AssertionError("a runner that does not own the job finished it")

    @invariant()
    def store_matches_model(self) -> None:
        check_invariants(self.path, self.status, self.frozen)
        for job_id in self.jobs:
            rec = self.store.get_job(job_id)
            assert rec.status == self.status[job_id]
            assert (rec.finished_at is not None) == JobStatus(rec.status).is_terminal


JobStoreMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobStoreMachine = JobStoreMachine.TestCase



_UTC_INSTANTS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
                             timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(st.lists(_UTC_INSTANTS, min_size=2, max_size=5))
def test_iso_text_is_fixed_width_sorts_as_the_instants_and_reads_back(instants: list[datetime]) -> None:
    # to_iso (iso_ns underneath, #14) must write what isoformat(timespec="microseconds") does, and a whole second
    # (microsecond 0) must still get its six-digit fraction.
    instants.append(instants[0].replace(microsecond=0))
    texts = [to_iso(i) for i in instants]
    assert texts == [i.isoformat(timespec="microseconds") for i in instants]
    assert {len(t) for t in texts} == {32}
    assert sorted(texts) == [to_iso(i) for i in sorted(instants)]
    assert [from_iso(t) for t in texts] == instants


@settings(max_examples=300, deadline=None)
@given(st.lists(_UTC_INSTANTS, min_size=1, max_size=5), st.integers(min_value=0, max_value=999))
def test_iso_from_nanoseconds_is_to_iso_of_the_same_instant(instants: list[datetime], extra_ns: int) -> None:
    # the per-epoch path formats nanosecond clocks without a datetime (#14): isoformat's text, the
    # nanoseconds below a microsecond dropped as datetime.now() drops them, whatever second was formatted before
    for instant in instants:
        ns = timeutil.ns_of(instant)
        assert ns % 1000 == 0 and timeutil.iso_ns(ns + extra_ns) == instant.isoformat(timespec="microseconds")


def test_the_nanosecond_clock_is_shifted_as_utcnow_is() -> None:
    for shift in (timedelta(0), timedelta(days=-3, seconds=5, microseconds=7), timedelta(hours=30)):
        runtime.set_clock_offset(shift)
        try:
            before, ns, after = timeutil.utcnow(), timeutil.now_ns(), timeutil.utcnow()
        finally:
            runtime.set_clock_offset(timedelta(0))
        assert timeutil.ns_of(before) <= ns // 1000 * 1000 <= timeutil.ns_of(after)
