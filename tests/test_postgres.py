"""Beyond one machine: workers on several "hosts" sharing one PostgreSQL database, migration, schema upgrades."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from jobtrack import Dataset, JobManager, JobNotFound, Trainer, demo, runtime
from jobtrack.store import Store
from jobtrack.store.schema import SCHEMA_VERSION
from proc import child_env, wait_until


def _worker(db: str, host: str, *extra: str, lease: str = "30") -> subprocess.Popen[str]:
    """A `jobtrack worker` process that believes it runs on ``host``."""
    return subprocess.Popen([sys.executable, "-m", "jobtrack", "worker", "--db", db, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=child_env(JOBTRACK_HOST=host, JOBTRACK_LEASE_S=lease))


def _table(tmp_path: Path) -> str:
    path = tmp_path / "train.csv"
    path.write_text("x\n1\n")
    return str(path)


def test_several_workers_run_each_job_exactly_once(pg_url: str, tmp_path: Path) -> None:
    trainer = Trainer(__import__("stress_child").quick_train, db=pg_url, runner="worker", config={"epochs": 1})
    ds = Dataset("pg", "regression", "many", tables={"train": _table(tmp_path)})
    jobs = [trainer.fit(ds).job_id for _ in range(240)]
    workers = [_worker(pg_url, f"host{i}", "--burst") for i in range(4)]
    outs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1] for o in outs]
    ran = [int(o[0].split("ran ")[1].split(" ")[0]) for o in outs]
    assert sum(ran) == len(jobs) and sum(1 for r in ran if r) >= 2  # shared out, none twice
    store = Store.open(pg_url)
    claims: Counter[str] = Counter()
    for job_id in jobs:
        events = store.events(job_id)
        assert [e.to_status for e in events] == ["QUEUED", "RUNNING", "COMPLETED"]
        claims[store.get_job(job_id).runner.split("|")[0]] += 1  # type: ignore[union-attr]
    assert sum(claims.values()) == len(jobs) and len(claims) >= 2


def test_a_killed_worker_loses_its_job_when_the_lease_expires(pg_url: str, tmp_path: Path) -> None:
    slow = Trainer(__import__("stress_child").slow_train, db=pg_url, runner="worker", config={"epochs": 10_000})
    quick = Trainer(__import__("stress_child").quick_train, db=pg_url, runner="worker", config={"epochs": 1})
    ds = Dataset("pg", "regression", "kill", tables={"train": _table(tmp_path)})
    victim = slow.fit(ds)
    doomed = _worker(pg_url, "host-doomed", lease="2")
    try:
        wait_until(lambda: victim.get_status()["result"].get("epochs"), timeout=60, message="victim running")
        others = [quick.fit(ds) for _ in range(10)]
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        killed_at = time.monotonic()
        survivor = _worker(pg_url, "host-survivor", "--burst", lease="2")
        _, err = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, err
        assert [j.get_status()["status"] for j in others] == ["COMPLETED"] * 10
        # The reader is on another "host" than the dead worker: only the lease can tell it is gone.
        wait_until(lambda: victim.get_status()["status"] == "FAILED", timeout=30, message="lease expiry")
        assert time.monotonic() - killed_at >= 0.5
        assert victim.events()[-1].reason == "runner lost (lease expired)"
        assert len(victim.get_status()["result"]["epochs"]) >= 1
    finally:
        if doomed.poll() is None:
            doomed.kill()
        doomed.communicate(timeout=10)  # reap it and close its pipes


def test_migrate_a_file_to_postgres_twice(pg_url: str, db_path: str, tmp_path: Path) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 3})
    ds = Dataset("mig", "binary_classification", "t", tables=demo.write_csv_tables(tmp_path / "data", n=60))
    train = trainer.fit(ds)
    trainer.predict("mig_out", model_run_id=train.model_run_id, extract_embeddings=True)
    Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3, "fail_at_epoch": 2}).fit(ds)
    queued = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 2}).fit(ds)  # still queued
    train.register_model("mig", "v1")
    out = subprocess.run([sys.executable, "-m", "jobtrack", "migrate", "--from", db_path, "--to", pg_url],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert out.returncode == 0, out.stderr
    assert "copied 3 job(s)" in out.stdout and "1 registered model(s)" in out.stdout
    assert "1 unfinished (QUEUED or RUNNING) job(s) not copied" in out.stdout  # it would run in both
    local, server = JobManager(db_path), JobManager(pg_url)
    with pytest.raises(JobNotFound):
        server.fetch_job(queued.job_id)
    for job in local.list_jobs(status=["COMPLETED", "FAILED"], limit=None):
        assert server.fetch_job(job.job_id).get_status() == job.get_status()
    pred = local.list_jobs(job_type="inference")[0].get_status()
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(text(f'SELECT * FROM "{pred["source_views"]["predictions"]}"')).all()
    engine.dispose()
    assert len(rows) == 20
    again = subprocess.run([sys.executable, "-m", "jobtrack", "migrate", "--from", db_path, "--to", pg_url],
                           capture_output=True, text=True, timeout=120, env=child_env())
    assert "copied 0 job(s)" in again.stdout and "3 already there" in again.stdout
    worker = subprocess.run([sys.executable, "-m", "jobtrack", "worker", "--burst", "--db", db_path],
                            capture_output=True, text=True, timeout=120, env=child_env())
    assert worker.returncode == 0 and queued.get_status()["status"] == "COMPLETED", worker.stderr
    last = subprocess.run([sys.executable, "-m", "jobtrack", "migrate", "--from", db_path, "--to", pg_url],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert "copied 1 job(s)" in last.stdout and "unfinished" not in last.stdout  # once it ended
    assert server.fetch_job(queued.job_id).get_status() == queued.get_status()
    assert Trainer(demo.train, demo.predict, db=pg_url, runner="eager").predict(
        "mig_again", registered_model_key="mig:v1").get_status()["status"] == "COMPLETED"


V1_JOBS_DROP = "ALTER TABLE jobs DROP COLUMN epoch_seq"


def _make_v1(db: str) -> None:
    """Turn a fresh database into what jobtrack schema 1 wrote: no epoch counter, no job_exports table."""
    store = Store(db)
    store.create_job({"id": "job_old", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    token = store.claim("job_old")
    for epoch in range(3):
        store.add_epoch("job_old", token, epoch, "{}", '{"rmse": 1}')
    store.close()
    url = db if "://" in db else f"sqlite:///{db}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE job_exports"))
        conn.execute(text(V1_JOBS_DROP))
        conn.execute(text("UPDATE jobtrack_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    runtime.close_all()  # the next Store.open(db) opens the downgraded database afresh


def _nothing(ctx: Any) -> None:
    pass


def _typed_export(ctx: Any) -> None:
    ctx.export("predictions", [{"id": "a", "score": 0.25, "ok": True, "n": None, "note": "x"},
                               {"id": "b", "score": 0.75, "ok": False, "n": None, "note": 1}])
    ctx.export("predictions", [{"id": "c", "score": 0.5, "ok": True, "n": 12345678901234567890, "note": None}])
    ctx.export("embeddings", [{"v": 1.5}])
    ctx.export("embeddings", [{"v": "high"}])  # no longer a number column: text, and the view still reads


def test_an_export_view_on_postgresql_compares_numbers_as_numbers(pg_url: str, db_path: str) -> None:
    ds = Dataset("typed", "binary_classification", "t", tables={"train": [{"x": 1}], "test": [{"x": 1}]})
    trainer = Trainer(_nothing, _typed_export, db=pg_url, runner="eager")
    job = trainer.fit_predict(ds, "typed_pg", extract_embeddings=True)
    assert job.wait()["status"] == "COMPLETED", job.get_status()["result"]["error"]
    view = job.get_status()["source_views"]["predictions"]
    Trainer(_nothing, _typed_export, db=db_path, runner="eager").fit_predict(ds, "typed_file", extract_embeddings=True)
    JobManager(db_path).export_bundle(Path(db_path).with_suffix(".jtb"))  # and a view an import makes
    imported = JobManager(pg_url).import_bundle(Path(db_path).with_suffix(".jtb")).imported
    other = JobManager(pg_url).fetch_job(imported[0]).get_status()["source_views"]["predictions"]
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            for name in (view, other):
                high = conn.execute(text(f'SELECT id, score, ok, n, note FROM "{name}" WHERE score > 0.5')).all()
                assert [tuple(r) for r in high] == [("b", 0.75, False, None, "1")]  # numbers, not text
                rows = conn.execute(text(f'SELECT id, score, n FROM "{name}" WHERE ok ORDER BY id')).all()
                assert [tuple(r) for r in rows] == [("a", 0.25, None), ("c", 0.5, 12345678901234567890)]
    finally:
        engine.dispose()
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            mixed = job.get_status()["source_views"]["embeddings"]
            assert [r[0] for r in conn.execute(text(f'SELECT v FROM "{mixed}"'))] == ["1.5", "high"]
    finally:
        engine.dispose()


def _export_retried(ctx: Any) -> None:
    from jobtrack.errors import StoreUnavailable

    ctx.export("predictions", [{"id": "a", "v": 1.5}])
    try:
        ctx.export("predictions", [{"id": "b", "v": "high"}])  # its transaction fails (see the test)
    except StoreUnavailable:
        ctx.export("predictions", [{"id": "b", "v": "high"}])


def test_an_export_view_batch_whose_transaction_failed_is_typed_again(pg_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from jobtrack.errors import StoreUnavailable
    from jobtrack.store.db import Database

    made = Database.export_view_sql
    calls = []

    def fail_the_second(self: Any, *args: Any, **kwargs: Any) -> str:
        calls.append(1)
        if len(calls) == 2:
            raise StoreUnavailable("test", "connection lost")
        return made(self, *args, **kwargs)

    monkeypatch.setattr(Database, "export_view_sql", fail_the_second)
    ds = Dataset("retyped", "binary_classification", "t", tables={"train": [{"x": 1}], "test": [{"x": 1}]})
    job = Trainer(_nothing, _export_retried, db=pg_url, runner="eager").fit_predict(ds, "retyped_pg")
    assert job.wait()["status"] == "COMPLETED", job.get_status()["result"]["error"]
    assert len(calls) == 3  # the first batch, the failed retype, the retype that landed
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f'SELECT id, v FROM "{job.get_status()["source_views"]["predictions"]}"'))
            assert [tuple(r) for r in rows] == [("a", "1.5"), ("b", "high")]  # text now: nothing reads NULL
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_database_from_schema_1_opens_after_the_upgrade(backend: str, db_path: str,
                                                          request: pytest.FixtureRequest) -> None:
    db = db_path if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    _make_v1(db)
    store = Store.open(db)
    rec = store.get_job("job_old")
    assert rec.epoch_seq == 3 and len(store.epochs("job_old")) == 3
    token = rec.claim_token
    store.add_epoch("job_old", token, 3, "{}", '{"rmse": 0.5}')
    assert [e["epoch"] for e in store.epochs("job_old")] == [0, 1, 2, 3]
    with store.db.read() as tx:
        assert tx.scalar("SELECT value FROM jobtrack_meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
    if backend == "sqlite":
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT count(*) FROM job_exports").fetchone() == (0,)
        conn.close()


class _Outage:
    """A TCP forwarder to the PostgreSQL server that a test takes down (every connection cut, new ones refused)
    and brings back on the same port: what a server restart or a failover looks like to its clients."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._serve(self._listener)

    def url(self, url: str) -> str:
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def down(self) -> None:
        with contextlib.suppress(OSError):  # already down
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; connects are refused from now
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._socks.clear()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._serve(self._listener)

    def _serve(self, listener: socket.socket) -> None:
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # taken down
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        """Forward ``src`` to ``dst`` until either side ends; then end both, and close ``src`` (the other pump
        reads ``dst`` and closes it)."""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        src.close()


def test_a_running_job_and_a_reader_ride_out_a_server_outage(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A server restart (every connection cut, connects refused for seconds) failed the running job at its next
    log_epoch and the waiting script at its next read: both now wait for the server, up to lock_timeout."""
    caplog.set_level(logging.INFO, logger="jobtrack")
    target = make_url(pg_url)
    outage = _Outage(target.host or "127.0.0.1", target.port or 5432)
    url = outage.url(pg_url)
    reported, go_on = threading.Event(), threading.Event()

    def train(ctx: Any) -> dict[str, Any]:
        for epoch in range(8):
            ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)})
            if epoch == 3:
                reported.set()
                go_on.wait(30)
        return {"ok": True}

    job = Trainer(train, db=url).fit(Dataset("outage", "regression", "t", tables={"train": [{"x": 1}]}))
    assert reported.wait(30)
    outage.down()
    go_on.set()  # the next log_epoch meets the outage: its pooled connection is cut, a new one refused
    read: list[Any] = []
    reader = threading.Thread(target=lambda: read.append(JobManager(url).fetch_job(job.job_id).get_status()))
    reader.start()
    wait_until(lambda: any("connecting again" in r.getMessage() for r in caplog.records), timeout=20,
               interval=0.02, message="a write or read waits for the server")
    assert reader.is_alive() and not read  # no read can succeed while the server is away: it waits
    outage.up()
    reader.join(timeout=30)
    assert read and read[0]["job_id"] == job.job_id
    status = job.wait(timeout=30)
    assert status["status"] == "COMPLETED" and [e["epoch"] for e in status["result"]["epochs"]] == list(range(8))
    runtime.close_all()
    outage.down()


def test_the_server_clock_holds_a_fork_back_while_it_may_connect(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Database.clock()`` may open a server connection (libpq takes process-wide locks): a process runner must not
    fork meanwhile, as with every other database call."""
    from jobtrack.store.server import Server

    store = Store.open(pg_url)
    inside, release = threading.Event(), threading.Event()
    real = Server.clock

    def slow_clock(self: Server) -> Any:
        inside.set()
        release.wait(10)
        return real(self)

    monkeypatch.setattr(Server, "clock", slow_clock)
    reader = threading.Thread(target=store.db.clock)
    reader.start()
    assert inside.wait(10)
    forked = threading.Event()

    def fork() -> None:
        with runtime.current().fork_gate.fork():
            forked.set()

    forker = threading.Thread(target=fork)
    forker.start()
    assert not forked.wait(0.3)  # held back while the clock may be connecting
    release.set()
    assert forked.wait(10)
    reader.join(10)
    forker.join(10)
