"""The core on a SQLite file: the pure state machine, every (from, to) pair byte for byte, random
operation sequences (hypothesis), another process on the same file, and files that are not ours."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import stat
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jobtrack import (
    InvalidArgument,
    InvalidTransition,
    JobManager,
    JobNotFound,
    JobtrackError,
    NotAJobtrackDatabase,
    RunnerFenced,
    SchemaTooNew,
    StoreError,
    StoreReadOnly,
    WaitTimeout,
)
from jobtrack.states import TERMINAL, TRANSITIONS, JobStatus, check_transition, is_allowed, parse_status
from jobtrack.store import Store
from jobtrack.store.schema import SCHEMA_VERSION
from proc import run_python, spawn

ALLOWED = {("QUEUED", "RUNNING"), ("QUEUED", "CANCELED"), ("QUEUED", "FAILED"),
           ("RUNNING", "COMPLETED"), ("RUNNING", "FAILED"), ("RUNNING", "CANCELED")}


# -- the pure state machine ---------------------------------------------------------------------


def test_exactly_the_six_transitions_of_the_spec() -> None:
    assert [s.value for s in JobStatus] == ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED"]
    assert {(a.value, b.value) for a, nxt in TRANSITIONS.items() for b in nxt} == ALLOWED
    assert TERMINAL == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}
    assert all(not JobStatus(s).next_statuses() for s in ("COMPLETED", "FAILED", "CANCELED"))


def test_refused_transition_names_job_current_and_requested() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("RUNNING", "QUEUED", job_id="job_x")
    err = info.value
    assert (err.job_id, err.current, err.requested) == ("job_x", "RUNNING", "QUEUED")
    assert "job_x" in str(err) and "RUNNING" in str(err) and "QUEUED" in str(err)
    assert isinstance(err, JobtrackError)


def test_status_strings_parse_in_any_case_and_unknown_ones_are_refused() -> None:
    assert parse_status("completed") is JobStatus.COMPLETED
    with pytest.raises(InvalidArgument, match="QUEUED, RUNNING"):
        parse_status("done")


# -- every pair through the store, byte for byte ------------------------------------------------


def _raw(db: str, job_id: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return (conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall(),
                conn.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall())
    finally:
        conn.close()


def _make(store: Store, job_id: str, status: str) -> None:
    store.create_job({"id": job_id, "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    for step in {"QUEUED": [], "RUNNING": ["RUNNING"], "COMPLETED": ["RUNNING", "COMPLETED"],
                 "FAILED": ["RUNNING", "FAILED"], "CANCELED": ["CANCELED"]}[status]:
        store.transition(job_id, step)


@pytest.mark.parametrize(("src", "dst"), list(itertools.product([s.value for s in JobStatus], repeat=2)))
def test_pair_applies_with_one_event_or_changes_nothing(store: Store, db_path: str, src: str, dst: str) -> None:
    _make(store, "job_p", src)
    rows_before, events_before = _raw(db_path, "job_p")
    if (src, dst) in ALLOWED:
        store.transition("job_p", dst, reason="pair")
        rows_after, events_after = _raw(db_path, "job_p")
        assert len(events_after) == len(events_before) + 1
        assert events_after[-1][2:4] == (src, dst) and events_after[-1][5] == "pair"
        rec = store.get_job("job_p")
        assert rec.status == dst and (rec.finished_at is not None) == JobStatus(dst).is_terminal
    else:
        with pytest.raises(InvalidTransition):
            store.transition("job_p", dst)
        assert _raw(db_path, "job_p") == (rows_before, events_before)


# -- random operation sequences -----------------------------------------------------------------


class JobsMachine(RuleBasedStateMachine):
    """Random creates, transitions, claims, epochs, finishes and cancels; the invariants hold after each."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.store = Store(os.path.join(self.tmp.name, "h.db"))
        self.ids: list[str] = []
        self.tokens: dict[str, int] = {}
        self.terminal_rows: dict[str, object] = {}

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    @rule()
    def create(self) -> None:
        job_id = f"job_h{len(self.ids)}"
        self.store.create_job({"id": job_id, "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
        self.ids.append(job_id)

    @rule(pick=st.integers(0, 50), to=st.sampled_from(list(JobStatus)))
    def transition(self, pick: int, to: JobStatus) -> None:
        if self.ids:
            try:
                self.store.transition(self.ids[pick % len(self.ids)], to)
            except InvalidTransition:
                pass

    @rule(pick=st.integers(0, 50))
    def claim(self, pick: int) -> None:
        if self.ids:
            job_id = self.ids[pick % len(self.ids)]
            try:
                self.tokens[job_id] = self.store.claim(job_id)
            except InvalidTransition:
                pass

    @rule(pick=st.integers(0, 50), stale=st.booleans(), finish=st.sampled_from([None, *TERMINAL]))
    def report(self, pick: int, stale: bool, finish: JobStatus | None) -> None:
        if not self.ids:
            return
        job_id = self.ids[pick % len(self.ids)]
        token = self.tokens.get(job_id, 0) + (1 if stale else 0)
        try:
            if finish is None:
                self.store.add_epoch(job_id, token, 1, "{}", "{}")
            else:
                self.store.finish(job_id, token, finish, reason="random")
        except (RunnerFenced, InvalidTransition):
            pass

    @rule(pick=st.integers(0, 50))
    def cancel(self, pick: int) -> None:
        if self.ids:
            self.store.request_cancel(self.ids[pick % len(self.ids)])

    @invariant()
    def histories_are_legal_and_terminal_jobs_never_change(self) -> None:
        for job_id in self.ids:
            rec = self.store.get_job(job_id, check_liveness=False)
            events = self.store.events(job_id)
            assert (events[0].from_status, events[0].to_status) == (None, "QUEUED")
            for prev, ev in zip(events, events[1:]):
                assert ev.from_status == prev.to_status and is_allowed(ev.from_status, ev.to_status)
            assert rec.status == events[-1].to_status
            assert (rec.finished_at is not None) == JobStatus(rec.status).is_terminal
            if job_id in self.terminal_rows:
                assert (rec, events) == self.terminal_rows[job_id]
            elif JobStatus(rec.status).is_terminal:
                self.terminal_rows[job_id] = (rec, events)


TestJobsMachine = JobsMachine.TestCase
TestJobsMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


# -- another process, the same file -------------------------------------------------------------

CREATE_CHILD = """
import sys
from jobtrack.store import Store
Store.open().create_job({"id": "job_x1", "job_type": "train", "experiment_name": "shared_regression_t",
                         "runner_kind": "worker"})
print("job_x1")
"""

WAIT_CHILD = """
import sys
from jobtrack import JobManager
print("waiting", flush=True)
print(JobManager(sys.argv[1]).fetch_job(sys.argv[2]).wait(timeout=30)["status"], flush=True)
"""


def test_created_in_one_process_fetched_listed_waited_and_canceled_from_others(db_path: str) -> None:
    out = run_python(CREATE_CHILD, JOBTRACK_DB=db_path)  # the child uses JOBTRACK_DB, not db=
    job_id = out.stdout.strip()
    manager = JobManager(db_path)
    assert manager.fetch_job(job_id).get_status()["status"] == "QUEUED"
    assert [j.job_id for j in manager.list_jobs(experiment_name="shared_regression_t", since="1h")] == [job_id]
    with spawn(WAIT_CHILD, db_path, job_id) as waiter:
        assert waiter.stdout.readline().strip() == "waiting"  # type: ignore[union-attr]
        assert manager.cancel_job(job_id) is JobStatus.CANCELED
        assert waiter.wait(timeout=30) == 0
        assert waiter.stdout.readline().strip() == "CANCELED"  # type: ignore[union-attr]


def test_wait_times_out_with_a_typed_error_and_unknown_ids_are_typed(db_path: str) -> None:
    store = Store.open(db_path)
    _make(store, "job_w", "QUEUED")
    manager = JobManager(db_path)
    with pytest.raises(WaitTimeout) as info:
        manager.fetch_job("job_w").wait(timeout=0.05)
    assert isinstance(info.value, TimeoutError) and "still QUEUED" in str(info.value)
    with pytest.raises(JobNotFound) as missing:
        manager.fetch_job("job_nope")
    assert isinstance(missing.value, LookupError)


def test_list_jobs_filters_newest_first_with_limit(db_path: str) -> None:
    store = Store.open(db_path)
    for n, status in enumerate(["QUEUED", "COMPLETED", "FAILED", "COMPLETED"]):
        _make(store, f"job_l{n}", status)
    manager = JobManager(db_path)
    assert [j.job_id for j in manager.list_jobs()] == ["job_l3", "job_l2", "job_l1", "job_l0"]
    assert [j.job_id for j in manager.list_jobs(status="completed")] == ["job_l3", "job_l1"]
    assert [j.job_id for j in manager.list_jobs(status=["FAILED", "QUEUED"], limit=1)] == ["job_l2"]
    assert manager.list_jobs(job_type="inference") == []
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert manager.list_jobs(since=future) == [] and len(manager.list_jobs(until=future)) == 4
    assert len(manager.list_jobs(since="2020-01-01", until="2999-01-01T00:00:00+00:00")) == 4
    for bad in ({"status": "DONE"}, {"job_type": "training"}, {"since": "last tuesday-ish"}, {"limit": 0},
                {"since": datetime(2026, 1, 1)}):
        with pytest.raises(InvalidArgument):
            manager.list_jobs(**bad)  # type: ignore[arg-type]


def test_status_dict_timestamps_are_utc_in_any_local_time_zone(db_path: str) -> None:
    store = Store.open(db_path)
    _make(store, "job_tz", "COMPLETED")
    code = ("import json, sys\nfrom jobtrack import JobManager\n"
            "print(json.dumps(JobManager(sys.argv[1]).fetch_job('job_tz').get_status()))")
    status = json.loads(run_python(code, db_path, TZ="America/New_York").stdout)
    for key in ("started_at", "updated_at", "finished_at"):
        assert status[key].endswith("+00:00")


# -- files that are not (or not yet) ours --------------------------------------------------------


def _state(path: Path) -> tuple[bytes, float, list[str]]:
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name != path.name)
    return path.read_bytes(), path.stat().st_mtime, siblings


@pytest.mark.parametrize("kind", ["text", "foreign", "newer"])
def test_files_that_are_not_ours_are_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "sub" / "x.db"
    path.parent.mkdir()
    if kind == "text":
        path.write_text("these are my notes, not a database\n")
    else:
        conn = sqlite3.connect(path)
        if kind == "foreign":
            conn.execute("CREATE TABLE recipes (name TEXT)")
        else:
            conn.execute("CREATE TABLE jobtrack_meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.executemany("INSERT INTO jobtrack_meta VALUES (?, ?)",
                             [("application", "jobtrack"), ("schema_version", str(SCHEMA_VERSION + 5))])
        conn.commit()
        conn.close()
    before = _state(path)
    expected = SchemaTooNew if kind == "newer" else NotAJobtrackDatabase
    with pytest.raises(expected) as info:
        JobManager(str(path))
    assert isinstance(info.value, StoreError)
    if kind == "newer":
        assert (info.value.found, info.value.supported) == (SCHEMA_VERSION + 5, SCHEMA_VERSION)  # type: ignore[attr-defined]
        assert "Upgrade jobtrack" in str(info.value)
    assert _state(path) == before


def test_an_empty_file_and_a_missing_directory_just_work(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    assert JobManager(str(empty)).list_jobs() == []
    nested = tmp_path / "a" / "b" / "c.db"
    assert JobManager(str(nested)).list_jobs() == []
    assert stat.S_IMODE(nested.stat().st_mode) == 0o600
    assert stat.S_IMODE(nested.parent.stat().st_mode) == 0o700


def test_a_location_that_cannot_be_written_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(StoreReadOnly, match="cannot create the directory"):
        JobManager(str(blocker / "jobs.db"))
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(StoreReadOnly):
            JobManager(str(locked / "jobs.db"))


def test_default_location_and_its_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBTRACK_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert JobManager().db == str(tmp_path / "data" / "jobtrack" / "jobtrack.db")
    monkeypatch.setenv("JOBTRACK_DB", str(tmp_path / "env.db"))
    assert JobManager().db == str(tmp_path / "env.db")
    assert JobManager(tmp_path / "arg.db").db == str(tmp_path / "arg.db")
    assert Path(str(tmp_path / "arg.db") + "-files") == Store.open(tmp_path / "arg.db").files_dir


def test_readers_never_take_the_write_lock(db_path: str) -> None:
    store = Store.open(db_path)
    _make(store, "job_r", "COMPLETED")
    from jobtrack import testing

    with testing.hold_write_lock(db_path, lock_timeout=0.1):
        manager = JobManager(db_path)
        assert manager.fetch_job("job_r").get_status()["status"] == "COMPLETED"
        assert len(manager.list_jobs()) == 1

