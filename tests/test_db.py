"""The database layer (store/db.py, store/schema.py): one execution path, typed failures, retries, the clock.

Real SQLite files under tmp_path and the real PostgreSQL server; no mocks of the driver.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from jobtrack import timeutil
from jobtrack.errors import (
    DatabaseReplaced,
    InvalidArgument,
    JobtrackError,
    NestedWrite,
    NotAJobtrackDatabase,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
)
from jobtrack.store import models
from jobtrack.store.db import Database, Tx, file_identity
from jobtrack.store.schema import SCHEMA_VERSION, create_statements, prepare
from proc import run_python, spawn, wait_until
from rows import V4_TABLES, drop_schema_4

NOW = "2026-01-01T00:00:00.000000+00:00"


def _open(path: str | Path, **kwargs: float) -> Database:
    db = Database(str(path), **kwargs)
    prepare(db)
    return db


def _add_job(tx: Tx, job_id: str) -> None:
    tx.run("INSERT INTO jobs (id, job_type, status, experiment_name, created_at, updated_at, spec_json, runner_kind, "
           "submitter, claim_token, cancel_requested, epoch_seq, export_paths_json, source_views_json) "
           "VALUES (:id, 'train', 'QUEUED', 'e', :now, :now, '{}', 'thread', '', 0, :no, 0, '{}', '{}')",
           {"id": job_id, "now": NOW, "no": False})


def _job_ids(db: Database) -> list[str]:
    with db.read() as tx:
        return [r[0] for r in tx.all("SELECT id FROM jobs ORDER BY id")]


@pytest.fixture
def db(db_path: str) -> Iterator[Database]:
    database = _open(db_path)
    yield database
    database.dispose()


# -- one execution path -----------------------------------------------------------------------------


def _schema(path: str) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                            "ORDER BY type, name").fetchall()
        return [(t, n, " ".join(str(s).split())) for t, n, s in rows]
    finally:
        conn.close()


def test_the_schema_is_the_sqlmodel_metadata_created_through_sqlite3(db: Database, tmp_path: Path) -> None:
    reference = str(tmp_path / "reference.db")
    engine = create_engine(f"sqlite:///{reference}")
    models.METADATA.create_all(engine)
    engine.dispose()
    assert db.path is not None
    assert _schema(db.path) == _schema(reference)
    with db.read() as tx:
        assert tx.scalar("SELECT value FROM jobtrack_meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
    with pytest.raises(InvalidArgument):
        db.engine  # noqa: B018 - SQLite files have no SQLAlchemy engine


def test_a_sqlite_file_never_goes_through_a_sqlalchemy_engine(tmp_path: Path) -> None:
    code = """
import sys, threading
import sqlalchemy
def refuse(*a, **k):
    raise AssertionError("an engine was created for a SQLite file")
sqlalchemy.create_engine = refuse
from jobtrack.store.db import Database
from jobtrack.store.schema import prepare
db = Database(sys.argv[1])
prepare(db)  # creates the file: DDL compiled from the metadata, run on sqlite3
with db.write() as tx:
    tx.run("INSERT INTO jobtrack_meta (key, value) VALUES ('k', 'v')")
seen = []
def other_thread():
    with db.read() as tx:
        seen.append([tx.scalar(p) for p in ("PRAGMA journal_mode", "PRAGMA synchronous",
                                             "PRAGMA foreign_keys", "PRAGMA busy_timeout")])
t = threading.Thread(target=other_thread); t.start(); t.join()
print(seen[0])
"""
    out = run_python(code, str(tmp_path / "new.db")).stdout.strip()
    assert out == "['wal', 2, 1, 30000]"  # every connection, every thread: the same PRAGMAs
    # Opening an up-to-date file imports no SQLAlchemy at all.
    reopen = """
import sys
from jobtrack.store.db import Database
from jobtrack.store.schema import prepare
db = Database(sys.argv[1])
prepare(db)
print(db.read_one("SELECT value FROM jobtrack_meta WHERE key = :k", {"k": "k"})[0],
      any(m.startswith("sqlalchemy") for m in sys.modules))
"""
    assert run_python(reopen, str(tmp_path / "new.db")).stdout.split() == ["v", "False"]


def test_ddl_compiles_for_postgresql_too() -> None:
    from sqlalchemy.dialects import postgresql

    statements = create_statements(postgresql.dialect())
    assert any(s.startswith("CREATE TABLE jobs") for s in statements)
    assert any("ix_jobs_output_alias" in s and "WHERE output_alias IS NOT NULL" in s for s in statements)


# -- the same file under two spellings ------------------------------------------------------------


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_two_spellings_of_one_file_share_connections_lock_and_check(db: Database, tmp_path: Path, how: str) -> None:
    assert db.path is not None
    if how == "dotdot":
        (tmp_path / "sub").mkdir()
        other_path = str(tmp_path / "sub" / ".." / "jobs.db")
    else:
        other_path = str(tmp_path / "link.db")
        os.symlink(db.path, other_path)
    assert file_identity(other_path) == file_identity(db.path) is not None
    assert file_identity(str(tmp_path / "missing.db")) is None
    other = Database(other_path)
    assert other.ready  # checked once per process and file, whatever the spelling: no second probe
    prepare(other)
    assert other.lock_path == db.lock_path == os.path.realpath(db.path) + ".lock"
    with db.write() as tx:
        _add_job(tx, "a")
        assert other.read_one("SELECT id FROM jobs WHERE id = :id", {"id": "a"}) == ("a",)  # same connection
        start = time.monotonic()
        with pytest.raises(NestedWrite), other.write():
            pass  # pragma: no cover
        assert time.monotonic() - start < 1  # at once, not after lock_timeout
    assert _job_ids(other) == ["a"]


def _open_paths() -> set[str]:
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_a_database_no_longer_used_keeps_no_descriptor_open(db_path: str) -> None:
    db = _open(db_path)
    with db.write() as tx:
        _add_job(tx, "a")
    assert {db_path, db_path + ".lock"} <= _open_paths()  # kept open while in use: no reopen per write
    db.dispose()
    assert not any(p.startswith(db_path) for p in _open_paths())
    assert _job_ids(db) == ["a"]  # and it reopens on next use


def test_nested_write_is_a_typed_error_at_once(db: Database) -> None:
    with db.write():
        start = time.monotonic()
        with pytest.raises(NestedWrite) as info, db.write():
            pass  # pragma: no cover
        assert time.monotonic() - start < 1
    assert isinstance(info.value, JobtrackError) and "do not nest" in str(info.value)
    with db.write() as tx:  # the outer write committed and the state is clean again
        _add_job(tx, "after")
    assert _job_ids(db) == ["after"]


def _insert_raw(conn: sqlite3.Connection, job_id: str) -> str:
    """``_add_job`` on the raw connection ``write_call`` hands its function."""
    _add_job(Tx(conn, raw=True), job_id)
    return job_id


def test_write_call_is_a_write_transaction_in_one_call(db: Database) -> None:
    """The per-epoch path's transaction (#14): commits what its function wrote and returns its result; an error
    rolls everything back and is re-raised (a driver error as a typed StoreError); it does not nest either."""
    before = db.write_locks
    assert db.write_call(_insert_raw, "a") == "a"  # this thread's connection exists: the one-call path

    def half_then_fail(conn: sqlite3.Connection) -> None:
        _insert_raw(conn, "b")
        raise ValueError("the job's code failed")

    with pytest.raises(ValueError, match="failed"):
        db.write_call(half_then_fail)
    with pytest.raises(StoreError):
        db.write_call(lambda conn: conn.execute("INSERT INTO no_such_table VALUES (1)"))
    with db.write(), pytest.raises(NestedWrite):
        db.write_call(_insert_raw, "nested")
    assert _job_ids(db) == ["a"] and db.write_locks == before + 4
    db.dispose()  # no connection in this thread: write_call connects through write()
    assert db.write_call(_insert_raw, "c") == "c" and _job_ids(db) == ["a", "c"]


def test_write_call_waits_for_the_file_lock_and_says_storebusy_after_lock_timeout(db: Database) -> None:
    db.write_call(_insert_raw, "first")  # this thread's connection is open: the one-call path is taken below
    assert db.lock_path is not None
    fd = os.open(db.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer, as far as flock can tell
    db.lock_timeout = 0.2
    try:
        start = time.monotonic()
        with pytest.raises(StoreBusy, match="lock_timeout="):
            db.write_call(_insert_raw, "refused")
        assert time.monotonic() - start >= 0.15
        threading.Timer(0.1, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        db.lock_timeout = 10
        assert db.write_call(_insert_raw, "waited") == "waited"
    finally:
        os.close(fd)
    assert _job_ids(db) == ["first", "waited"]


# -- files that are not ours, or not usable -----------------------------------------------------------


def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "other_app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('hello')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NotAJobtrackDatabase, match="without jobtrack's tables"):
        _open(path)
    assert path.read_bytes() == before  # still in rollback-journal mode: no WAL switch, nothing written
    assert sorted(os.listdir(tmp_path)) == ["other_app.db"]  # no -wal, -shm or lock file left beside it


@pytest.mark.parametrize("content", [b"not a database at all, " * 300, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_file_that_is_not_sqlite_is_refused_by_its_error_code(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(content)
    with pytest.raises(NotAJobtrackDatabase) as info:
        _open(path)
    cause = info.value.__cause__
    assert isinstance(cause, sqlite3.DatabaseError)
    assert cause.sqlite_errorname in ("SQLITE_NOTADB", "SQLITE_CORRUPT")
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["garbage.db"]


def test_a_directory_or_a_device_is_refused_without_a_lock_file_beside_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.db")
    (tmp_path / "dir.db").mkdir()
    for name in ("fifo.db", "dir.db"):
        with pytest.raises(NotAJobtrackDatabase, match="not a regular file"):
            _open(tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == ["dir.db", "fifo.db"]


def test_a_newer_schema_is_refused(db: Database, db_path: str) -> None:
    with db.write() as tx:
        tx.run("UPDATE jobtrack_meta SET value = :v WHERE key = 'schema_version'", {"v": str(SCHEMA_VERSION + 1)})
    db.dispose()
    with pytest.raises(SchemaTooNew):
        _open(db_path)


def _as_nobody(fn: object) -> str:
    """Run ``fn()`` in a forked child with the uid of ``nobody``; return what it returned (or raised) as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            try:
                result = f"ok {fn()}"  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001
                result = f"{type(exc).__name__} {exc}"
            os.write(write_end, result.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    return out


def test_unwritable_wal_and_shm_files_are_a_permissions_problem_naming_the_file() -> None:
    """Issue 21, defect 7: root-owned -wal/-shm files read "not a jobtrack database" before."""
    base = Path(tempfile.mkdtemp(prefix="jt-perm-", dir="/tmp"))
    try:
        os.chmod(base, 0o777)
        path = base / "jobs.db"
        db = _open(path)
        db.dispose()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").write_bytes(b"")  # leftovers of a crashed run by another user
            os.chmod(f"{path}{suffix}", 0o644)
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)
            os.chown(base, 65534, 65534)
            out = _as_nobody(lambda: _open(path).read_one("SELECT 1", {}))
        else:
            for suffix in ("-wal", "-shm"):
                os.chmod(f"{path}{suffix}", 0o444)
            try:
                out = f"ok {_open(path).read_one('SELECT 1', {})}"
            except StoreError as exc:
                out = f"{type(exc).__name__} {exc}"
        assert out.startswith("StoreReadOnly "), out
        assert f"{path}-wal is not writable" in out and "owner uid" in out
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# -- failures classified by SQLite's error code ---------------------------------------------------


def test_a_message_that_mentions_locked_or_readonly_is_not_classified_by_its_text(db: Database) -> None:
    with pytest.raises(StoreError) as info, db.read() as tx:
        tx.all("SELECT * FROM database_is_locked_readonly_disk_full")
    assert type(info.value) is StoreError  # SQLITE_ERROR: neither busy, read-only nor unavailable
    assert "no such table" in str(info.value)


def test_a_readonly_connection_is_storereadonly(db: Database) -> None:
    with db.read(snapshot=False) as tx:
        tx.execute("PRAGMA query_only=ON")  # SQLite then refuses writes with SQLITE_READONLY
    try:
        with pytest.raises(StoreReadOnly) as info, db.write() as tx:
            _add_job(tx, "x")
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert info.value.__cause__.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY
    finally:
        db.dispose()
    assert _job_ids(db) == []


def test_sqlite_busy_is_storebusy_naming_the_setting(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import jobtrack.store.db as db_module

    monkeypatch.setattr(db_module, "DEFAULT_BUSY_TIMEOUT_MS", 100)
    db = _open(db_path)
    outsider = sqlite3.connect(db_path, isolation_level=None)  # a process that ignores jobtrack's lock file
    outsider.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy) as info, db.write() as tx:
            _add_job(tx, "x")
    finally:
        outsider.execute("ROLLBACK")
        outsider.close()
    assert "lock_timeout=" in str(info.value) and "--lock-timeout" in str(info.value)
    db.dispose()


def test_a_new_file_whose_write_lock_another_connection_holds_is_waited_for_not_database_is_locked(
        tmp_path: Path) -> None:
    """Switching a new (rollback-mode) file to WAL upgrades a read lock, where SQLite skips its busy handler."""
    path = str(tmp_path / "new.db")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process creating the same database holds the write lock
    outcome: list[object] = []
    opener = threading.Thread(target=lambda: outcome.append(_try(lambda: _open(path))))
    opener.start()
    opener.join(0.5)
    try:
        # Before the fix the opener failed at once with "database is locked"; now it cannot finish while
        # the other connection holds the lock, however slow this machine is.
        assert opener.is_alive() and not outcome, outcome
    finally:
        other.execute("COMMIT")
        other.close()
    opener.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Database), outcome
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _try(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the test reports it
        return exc


# argv: db directory, barrier directory, my name, all names (comma-separated), rounds. For each round
# every opener meets the others at a file barrier, then opens the same new database "round{N}.db".
OPENER = r"""
import os, sys, time
from jobtrack.store import Store
from proc import meet

folder, barrier, me, names, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","), int(sys.argv[5])
deadline = time.monotonic() + 60
for round_ in range(rounds):
    meet(barrier, me, names, round_, deadline)
    try:
        Store.open(os.path.join(folder, f"round{round_}.db"))
        print(round_, "ok", flush=True)
    except Exception as exc:
        print(round_, type(exc).__name__, exc, flush=True)
"""


def test_processes_that_open_one_new_database_together_all_open_it(tmp_path: Path) -> None:
    """The signal tests' children start together on a new file; one once failed with StoreBusy at once."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    names, rounds = ["a", "b", "c", "d"], 8
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(spawn(OPENER, str(tmp_path), str(barrier), n, ",".join(names), str(rounds)))
                 for n in names]
        outputs = [p.communicate(timeout=120) for p in procs]
    failures = [line for out, err in outputs for line in out.splitlines() + err.splitlines()[-3:]
                if not line.endswith(" ok")]
    assert not failures, failures
    assert sum(len(out.splitlines()) for out, _ in outputs) == len(names) * rounds


def test_the_write_lock_held_elsewhere_is_storebusy_and_transact_waits_it_out(db: Database) -> None:
    assert db.lock_path is not None
    fd = os.open(db.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer, as far as flock can tell
    db.lock_timeout = 0.1
    try:
        with pytest.raises(StoreBusy, match="lock_timeout="), db.write():
            pass  # pragma: no cover
        threading.Timer(0.3, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        start = time.monotonic()
        assert db.transact(lambda tx: _add_job(tx, "late") or "done", timeout=10) == "done"
        assert time.monotonic() - start >= 0.2
    finally:
        os.close(fd)
    assert _job_ids(db) == ["late"]


FULL_DISK = """
import os, resource, signal, sys
from jobtrack.errors import StoreUnavailable
from jobtrack.store.db import Database
from jobtrack.store.schema import prepare
db = Database(sys.argv[1])
prepare(db)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = os.path.getsize(sys.argv[1]) + os.path.getsize(sys.argv[1] + "-wal") + 20000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    with db.write() as tx:
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES ('blob', :v)", {"v": "x" * 200000})
except StoreUnavailable as exc:
    print(exc.__cause__.sqlite_errorname, "|", exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(db.transact(lambda tx: tx.run("INSERT INTO jobtrack_meta (key, value) VALUES ('small', 'ok')")))
print(db.read_one("SELECT count(*) FROM jobtrack_meta WHERE key = 'blob'", {})[0])
"""


def test_a_full_disk_is_storeunavailable_and_the_next_transaction_succeeds(db_path: str) -> None:
    _open(db_path).dispose()
    first, retried, blobs = run_python(FULL_DISK, db_path).stdout.splitlines()
    name, message = first.split(" | ")
    assert name in ("SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_IOERR")
    assert "nothing was written" in message and "free disk space" in message
    assert (retried, blobs) == ("1", "0")


def test_the_new_errors_survive_pickling() -> None:
    import pickle

    for error in (StoreUnavailable("x.db", "disk full", maybe_applied=True), DatabaseReplaced("x.db", "gone"),
                  NestedWrite("x.db"), StoreBusy("x.db", 2.0, "pid 1")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert pickle.loads(pickle.dumps(StoreUnavailable("x", maybe_applied=True))).maybe_applied


# -- a file deleted or replaced under a writer -----------------------------------------------------


@pytest.mark.parametrize("via", ["write", "write_call"])
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_writer_whose_file_is_gone_raises_instead_of_reporting_success(db: Database, tmp_path: Path,
                                                                         how: str, via: str) -> None:
    assert db.path is not None
    with db.write() as tx:
        _add_job(tx, "before")
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            os.unlink(db.path + suffix)
    else:
        other = _open(tmp_path / "other.db")
        other.dispose()
        os.replace(tmp_path / "other.db", db.path)
    with pytest.raises(DatabaseReplaced, match="deleted or replaced") as info:
        _write_one(db, via, "after")
    assert ("no file" if how == "deleted" else "another file") in str(info.value)
    wait_until(lambda: _raises(lambda: db.read_one("SELECT 1", {}), DatabaseReplaced), timeout=5,
               message="a status read notices the replaced file")
    if how == "replaced":  # nothing reached the file now at the path (it still has the old -wal beside it)
        assert "after" not in _job_ids(_open(db.path))


def _write_one(db: Database, via: str, job_id: str) -> None:
    if via == "write_call":  # the per-epoch path (#14)
        db.write_call(_insert_raw, job_id)
        return
    with db.write() as tx:
        _add_job(tx, job_id)


def _raises(fn: object, kind: type[BaseException]) -> bool:
    try:
        fn()  # type: ignore[operator]
    except kind:
        return True
    return False


# -- PostgreSQL: transient failures, retries, the server's clock --------------------------------------


def _terminate(pg_url: str, pid: int) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar() is True

        def gone() -> bool:
            with engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                                    {"p": pid}).scalar() == 0

        wait_until(gone, message=f"backend {pid} ended")
    finally:
        engine.dispose()


def _meta_keys(db: Database) -> list[str]:
    with db.read() as tx:
        return [r[0] for r in tx.all("SELECT key FROM jobtrack_meta WHERE key LIKE 'try%' ORDER BY key")]


def test_a_connection_terminated_mid_transaction_is_storeunavailable_and_writes_nothing(pg_url: str) -> None:
    db = _open(pg_url)
    # the whole transaction is the subject: the connection dies between two of its statements
    with pytest.raises(StoreUnavailable, match="connection to the server was lost") as info, db.write() as tx:  # noqa: PT012
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES ('try1', 'x')")
        _terminate(pg_url, tx.scalar("SELECT pg_backend_pid()"))
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES ('try1b', 'x')")
    assert not info.value.maybe_applied and "nothing was written" in str(info.value)
    assert _meta_keys(db) == []
    with db.write() as tx:  # the pool hands out a live connection again
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES ('try2', 'x')")
    assert _meta_keys(db) == ["try2"]
    db.dispose()


def test_transact_retries_the_whole_transaction_after_pg_terminate_backend(pg_url: str) -> None:
    db = _open(pg_url)
    pids: list[int] = []

    def work(tx: Tx) -> int:
        pids.append(tx.scalar("SELECT pg_backend_pid()"))
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES (:k, 'first')", {"k": f"try{len(pids)}a"})
        if len(pids) == 1:
            _terminate(pg_url, pids[0])  # between the two statements of the first attempt
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES (:k, 'second')", {"k": f"try{len(pids)}b"})
        return len(pids)

    assert db.transact(work, timeout=20) == 2
    assert pids[0] != pids[1]
    assert _meta_keys(db) == ["try2a", "try2b"]  # the first attempt left nothing behind
    with db.read() as tx:  # a connection that died idle in the pool is replaced at checkout
        idle = tx.scalar("SELECT pg_backend_pid()")
    _terminate(pg_url, idle)
    assert _meta_keys(db) == ["try2a", "try2b"]
    db.dispose()


def test_transact_gives_up_after_its_attempts(db: Database) -> None:
    calls: list[int] = []

    def always_busy(tx: Tx) -> None:
        calls.append(1)
        raise StoreUnavailable("somewhere", "simulated")

    with pytest.raises(StoreUnavailable):
        db.transact(always_busy, attempts=3, timeout=30)
    assert len(calls) == 3


def test_the_clock_is_the_servers_even_when_this_hosts_clock_runs_ahead(pg_url: str, db_path: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = timeutil.utcnow
    monkeypatch.setattr(timeutil, "utcnow", lambda: real() + timedelta(seconds=60))
    server_db = _open(pg_url)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        server_now = conn.execute(text("SELECT now()")).scalar()
    engine.dispose()
    seen = server_db.clock()
    assert seen.tzinfo is not None and seen.utcoffset() == timedelta(0)
    assert abs((seen - server_now).total_seconds()) < 5  # the server's time, not ours + 60 s
    monkeypatch.setattr(timeutil, "utcnow", lambda: real() + timedelta(seconds=120))
    assert abs((server_db.clock() - real()).total_seconds() - 60) < 5  # measured once, reused within a minute
    sqlite_db = _open(db_path)
    assert abs((sqlite_db.clock() - datetime.now(UTC)).total_seconds() - 120) < 5  # a file: this host
    server_db.dispose()
    sqlite_db.dispose()


def test_a_bad_url_or_path_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        Database(str(tmp_path / "a\x00b.db"))
    with pytest.raises(InvalidArgument, match="database URL"):
        _open("nosuchdialect://user:secret@host/db")
    with pytest.raises(StoreUnavailable) as info:  # nothing listens on port 1
        _open("postgresql+psycopg://user:secret@127.0.0.1:1/db")
    assert "secret" not in str(info.value) and "***" in str(info.value)  # no password in messages


# -- schema 3: the dead columns go -------------------------------------------------------------------


def _make_v2(target: str) -> None:
    """What jobtrack schema 2 left: ``jobs.summary_json`` and ``jobs.error_json`` (always NULL), version 2."""
    db = _open(target)
    with db.write() as tx:
        _add_job(tx, "old")
        tx.ddl("ALTER TABLE jobs ADD COLUMN summary_json VARCHAR")
        tx.ddl("ALTER TABLE jobs ADD COLUMN error_json VARCHAR")
        tx.run("UPDATE jobtrack_meta SET value = '2' WHERE key = 'schema_version'")
    db.dispose()


def _jobs_columns(db: Database) -> list[str]:
    with db.read() as tx:
        return db.column_names(tx, "jobs")


def test_schema_2_is_upgraded_by_dropping_the_dead_columns(any_db: str) -> None:
    _make_v2(any_db)
    if "://" not in any_db:
        from jobtrack.store import db as db_module

        db_module.close_all()  # forget this process's check of the file, as a new process would
    db = Database(any_db)
    assert "summary_json" in _jobs_columns(db)
    prepare(db)
    columns = _jobs_columns(db)
    assert "summary_json" not in columns and "error_json" not in columns
    assert columns == [c.name for c in models.jobs.columns]
    with db.read() as tx:
        assert tx.scalar("SELECT value FROM jobtrack_meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
    assert _job_ids(db) == ["old"]
    db.dispose()


def test_a_failed_upgrade_leaves_the_database_as_it_was(db_path: str) -> None:
    _make_v2(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE INDEX ix_jobs_error ON jobs (error_json)")  # SQLite refuses to drop an indexed column
    conn.commit()
    conn.close()
    from jobtrack.store import db as db_module

    db_module.close_all()
    with pytest.raises(StoreError, match="error_json"):
        _open(db_path)  # summary_json was dropped first, then error_json failed: all of it rolls back
    db_module.close_all()
    conn = sqlite3.connect(db_path)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        assert "summary_json" in columns and "error_json" in columns
        assert conn.execute("SELECT value FROM jobtrack_meta WHERE key = 'schema_version'").fetchone() == ("2",)
    finally:
        conn.close()


# -- schema 4: additive (config parameters, tags, metrics, sweeps, attempts) ---------------------------

def _make_v3(target: str) -> None:
    """What jobtrack schema 3 left: none of schema 4's tables, columns or indexes."""
    db = _open(target)
    with db.write() as tx:
        _add_job(tx, "old")
        drop_schema_4(tx.ddl)
    db.dispose()


def test_schema_3_is_upgraded_by_adding_what_schema_4_declares(any_db: str) -> None:
    _make_v3(any_db)
    if "://" not in any_db:
        from jobtrack.store import db as db_module

        db_module.close_all()
    db = Database(any_db)
    assert "best_metric" not in _jobs_columns(db)
    prepare(db)
    assert _jobs_columns(db) == [c.name for c in models.jobs.columns]
    with db.read() as tx:
        assert set(V4_TABLES) <= set(db.table_names(tx))
        assert tx.scalar("SELECT value FROM jobtrack_meta WHERE key = 'schema_version'") == "4" == str(SCHEMA_VERSION)
        assert tx.one("SELECT max_attempts, attempt, sweep_id FROM jobs WHERE id = 'old'") == (1, 0, None)
        tx.all("SELECT job_id FROM job_params WHERE key = 'lr' AND num_value < 1")  # the new tables are usable
    assert _job_ids(db) == ["old"]
    db.dispose()
