"""Listing many jobs cheaply (#14): one liveness probe per distinct runner per call, records built fast but
equal to the plain ones, and verdicts still recorded (SPEC §5)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from jobtrack import JobManager, liveness
from jobtrack.liveness import RUNNER_LOST, ProcessIdentity
from jobtrack.states import JobStatus, JobType
from jobtrack.store import JobRecord, Store
from jobtrack.store.records import FIELDS, SELECT_JOB, job_record
from proc import child_env, run_python
from rows import create

_CLAIMER = """
import sys
from jobtrack.store import Store
store = Store.open(sys.argv[1])
for job_id in sys.argv[2:]:
    store.claim(job_id)
store.close()
print("claimed", flush=True)
sys.stdin.readline()  # alive until the test closes our stdin
"""

LIVE, DEAD = 100, 7


def _claim_in_child(db: str, ids: list[str]) -> subprocess.Popen[str]:
    """A real process that claims ``ids`` (it becomes their runner) and stays alive until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", _CLAIMER, db, *ids], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "claimed", "the claiming child failed"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    proc.wait(timeout=30)
    proc.stdout.close()


def _raw_rows(db: str, clause: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(f"{SELECT_JOB} {clause}", params).fetchall()


def _plain(row: tuple[Any, ...]) -> JobRecord:
    """The record the plain constructor builds from a row: what ``job_record`` must equal."""
    return JobRecord(row[0], JobType(row[1]), JobStatus(row[2]), *row[3:])


def _same(a: JobRecord, b: JobRecord) -> None:
    """Every field equal, and of the same type (an enum member stays a member)."""
    assert type(a) is type(b) is JobRecord
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x, type(x)) == (y, type(y)), name


@pytest.fixture
def runners(store: Store, db_path: str) -> Iterator[tuple[str, list[str], list[str], Counter[str]]]:
    """LIVE RUNNING jobs of one live process and DEAD ones of a process that has exited, plus finished and
    queued jobs; ``is_alive`` counted per process identity (the dict is cleared by the test as it goes)."""
    live_ids = [f"live_{i:03d}" for i in range(LIVE)]
    dead_ids = [f"dead_{i:03d}" for i in range(DEAD)]
    for job_id in ["done_0", "queued_0", *dead_ids, *live_ids, "done_1"]:
        create(store, job_id)
    store.finish("done_0", store.claim("done_0"), JobStatus.COMPLETED, reason="completed")
    store.finish("done_1", store.claim("done_1"), JobStatus.COMPLETED, reason="completed")
    _end(_claim_in_child(db_path, dead_ids))  # its runner has exited: its jobs can never finish
    live = _claim_in_child(db_path, live_ids)
    live_runner = store.get_job(live_ids[0], check_liveness=False).runner
    assert live_runner and all(store.get_job(j, check_liveness=False).status is JobStatus.RUNNING
                               for j in dead_ids)
    probes: Counter[str] = Counter()
    real = liveness.is_alive

    def counted(ident: ProcessIdentity) -> bool | None:
        probes[ident.encode()] += 1
        return real(ident)

    mp = pytest.MonkeyPatch()
    mp.setattr(liveness, "is_alive", counted)
    try:
        yield live_runner, live_ids, dead_ids, probes
    finally:
        mp.undo()
        _end(live)


def test_one_probe_per_distinct_runner_and_dead_runners_jobs_failed(runners: Any, store: Store, db_path: str
                                                                    ) -> None:
    live_runner, live_ids, dead_ids, probes = runners
    manager = JobManager(db_path)
    dead_runner = _raw_rows(db_path, "WHERE id = ?", (dead_ids[0],))[0][15]

    # The first read sees the dead runner's jobs RUNNING, records each FAILED, and reads the page again.
    listed = manager.list_jobs(status=["RUNNING", "FAILED"], limit=None)
    table = listed.table(columns=[])  # the listed records' fields, read without any probe
    assert [row["id"] for row in table] == [m.job_id for m in listed]
    assert {row["id"]: row["status"] for row in table} == {**dict.fromkeys(live_ids, "RUNNING"),
                                                           **dict.fromkeys(dead_ids, "FAILED")}
    assert probes[live_runner] == 1  # 100 jobs, both reads of the page: one probe
    # the dead runner: one probe for the page, plus liveness.verdict's own check before each job is recorded
    assert 1 <= probes[dead_runner] <= 1 + DEAD
    for row in _raw_rows(db_path, "WHERE id LIKE 'dead_%'"):
        assert (row[2], row[9]) == ("FAILED", RUNNER_LOST)  # recorded, not only shown
    for rec in store.search_jobs(statuses=[JobStatus.FAILED], limit=None):
        _same(rec, _plain(_raw_rows(db_path, "WHERE id = ?", (rec.id,))[0]))

    for _ in range(3):  # every later call: one probe of the one live runner, none for the finished jobs
        probes.clear()
        page = manager.list_jobs(status="RUNNING", limit=100)
        assert [m.job_id for m in page] == live_ids[::-1] and not page.has_more
        assert dict(probes) == {live_runner: 1}
    probes.clear()
    everything = manager.list_jobs(limit=None)  # a worker's QUEUED job has no process to probe
    assert len(everything) == LIVE + DEAD + 3 and dict(probes) == {live_runner: 1}
    none = manager.list_jobs(status=[], limit=None)  # no status asked for: no job, not every job
    assert list(none) == [] and not none.has_more


def test_listed_records_equal_get_job_and_plain_records(runners: Any, store: Store, db_path: str) -> None:
    _, live_ids, _, _ = runners
    listed = store.search_jobs(limit=None)
    assert len(listed) == LIVE + DEAD + 3
    for rec in listed:
        _same(rec, store.get_job(rec.id))
    page = JobManager(db_path).list_jobs(status="RUNNING", limit=10)
    assert page.has_more and page.next_offset == 10
    assert [m.job_id for m in page] == live_ids[::-1][:10]
    records = store.search_jobs(statuses=[JobStatus.RUNNING], limit=10)
    for monitor, rec in zip(page, records, strict=True):
        assert (monitor.job_id, monitor.job_type, monitor.experiment_name, monitor.model_run_id) == (
            rec.id, JobType.TRAIN, rec.experiment_name, rec.model_run_id)
        assert type(monitor.job_type) is JobType
        _same(rec, store.get_job(rec.id))
    assert "live_099" in page.to_html() and "offset=10" in page.to_html()


def test_job_record_equals_the_plain_constructor(store: Store, db_path: str) -> None:
    create(store, "a")
    create(store, "b")
    store.finish("b", store.claim("b"), JobStatus.FAILED, reason="boom")
    rows = _raw_rows(db_path)
    assert len(rows) == 2
    for row in rows:
        rec = job_record(row)
        _same(rec, _plain(row))
        assert hash(rec) == hash(_plain(row)) and repr(rec) == repr(_plain(row))
        with pytest.raises(AttributeError):
            rec.status = JobStatus.QUEUED  # type: ignore[misc]
        assert rec.replace(reason="x").reason == "x"
    with pytest.raises(ValueError, match="not a valid JobStatus"):
        job_record((*rows[0][:2], "LOST", *rows[0][3:]))


def test_list_with_where_and_sort_equals_a_plain_read(store: Store, db_path: str) -> None:
    for i in range(12):
        create(store, f"j{i:02d}", experiment="x_y_z" if i % 3 else "a_b_c")
        if i % 2:
            store.finish(f"j{i:02d}", store.claim(f"j{i:02d}"), JobStatus.COMPLETED, reason="completed")
    manager = JobManager(db_path)
    page = manager.list_jobs(where="experiment = 'x_y_z' and status = 'COMPLETED'", sort="id", limit=3)
    expected = [_plain(r) for r in _raw_rows(
        db_path, "WHERE experiment_name = ? AND status = ? ORDER BY id", ("x_y_z", "COMPLETED"))]
    assert len(expected) == 4 and page.has_more
    assert [m.job_id for m in page] == [r.id for r in expected[:3]]
    got = store.search_jobs("experiment = 'x_y_z' and status = 'COMPLETED'", sort="id", limit=3)
    for rec, want in zip(got, expected[:3], strict=True):
        _same(rec, want)
    assert [row["status"] for row in page.table(columns=[])] == ["COMPLETED"] * 3
    rest = manager.list_jobs(where="experiment = 'x_y_z' and status = 'COMPLETED'", sort="id", limit=3,
                             offset=page.next_offset or 0)
    assert [m.job_id for m in rest] == [expected[3].id] and not rest.has_more
    assert [m.job_id for m in manager.list_jobs(sort="-id", status="QUEUED")] == [
        f"j{i:02d}" for i in range(10, -1, -2)]
    assert store.count_jobs("experiment = 'a_b_c'") == 4


_LAZY_QUERY = """
import sys
from jobtrack import JobManager
from jobtrack.store import Store
Store.open(sys.argv[1]).close()
manager = JobManager(sys.argv[1])
manager.list_jobs(status="RUNNING")
manager.show_jobs()
print("jobtrack.query" in sys.modules)
manager.list_jobs(where="status = 'RUNNING'")
print("jobtrack.query" in sys.modules)
"""


def test_a_plain_listing_does_not_import_the_query_language(db_path: str) -> None:
    assert run_python(_LAZY_QUERY, db_path).stdout.split() == ["False", "True"]
