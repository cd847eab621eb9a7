"""Issue 21, defect 1: a second open of the same file in one process must not lose another process's data.

Closing any descriptor of a SQLite file drops every POSIX lock the process holds on it, so a second
open that read the header with ``open()``/``close()`` let another process believe it was the last
user and delete the write-ahead log under the first. Also: a writer whose file was deleted or
replaced under it must say so instead of reporting success.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from proc import child_env, run_python, spawn

EPOCHS = 30

# Process P: a thread-runner job writing EPOCHS epochs; after the first epoch P opens the same file
# again under another spelling, says so on stdout, and waits for the go-ahead file to appear.
RUNNER = """
import os, sys, time
from jobtrack import Dataset, JobManager, Trainer, demo
db, other, go = sys.argv[1], sys.argv[2], sys.argv[3]
t = Trainer(demo.train, config={"epochs": %d, "epoch_pause_s": 0.05}, db=db)
m = t.fit(Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(40, seed=1)}))
while len(m.get_status()["result"].get("epochs", [])) < 2:
    time.sleep(0.01)
print(len(JobManager(db=other).list_jobs()), m.job_id, flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
print(m.wait(timeout=60)["status"], flush=True)
""" % EPOCHS

FRESH_READ = """
import json, sys
from jobtrack import JobManager
s = JobManager(db=sys.argv[1]).fetch_job(sys.argv[2]).get_status()
print(json.dumps([s["status"], len(s["result"].get("epochs", []))]))
"""


def _second_spelling(tmp_path: Path, how: str) -> tuple[str, str]:
    db = tmp_path / "x.db"
    if how == "dotdot":
        (tmp_path / "sub").mkdir()
        return str(db), str(tmp_path / "sub" / ".." / "x.db")
    link = tmp_path / "link.db"
    link.symlink_to(db)
    return str(db), str(link)


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_a_second_open_under_another_spelling_loses_nothing(tmp_path: Path, how: str) -> None:
    db, other = _second_spelling(tmp_path, how)
    go = tmp_path / "go"
    with spawn(RUNNER, db, other, str(go)) as p:
        assert p.stdout is not None and p.stderr is not None
        line = p.stdout.readline().split()
        assert len(line) == 2, p.stderr.read()
        job_id = line[1]
        # Another process opens the file, lists, and exits: the last-user check of its SQLite runs now.
        listing = subprocess.run([sys.executable, "-m", "jobtrack", "--db", db, "list"], capture_output=True,
                                 text=True, timeout=60, env=child_env())
        assert listing.returncode == 0, listing.stderr
        assert job_id in listing.stdout
        go.touch()
        out, err = p.communicate(timeout=90)
        assert (p.returncode, out.strip()) == (0, "COMPLETED"), err
    status, epochs = json.loads(run_python(FRESH_READ, db, job_id).stdout)
    assert (status, epochs) == ("COMPLETED", EPOCHS)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(*) FROM job_epochs WHERE job_id = ?", (job_id,)).fetchone() == (EPOCHS,)
    finally:
        conn.close()


# The same at the database layer, without any Store registry in between: process P writes through one
# Database, opens and checks a second Database under another spelling, and writes again after another
# process opened the file and closed it.
LAYER = """
import sys
from jobtrack.store.db import Database
from jobtrack.store.schema import prepare
first = Database(sys.argv[1])
prepare(first)
def put(n):
    with first.write() as tx:
        tx.run("INSERT INTO jobtrack_meta (key, value) VALUES (:k, 'x')", {"k": f"row{n}"})
for n in range(10):
    put(n)
prepare(Database(sys.argv[2]))
print("opened twice", flush=True)
sys.stdin.readline()
for n in range(10, 20):
    put(n)
print("done", flush=True)
sys.stdin.readline()
"""

OUTSIDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(conn.execute("SELECT count(*) FROM jobtrack_meta WHERE key LIKE 'row%'").fetchone()[0])
conn.close()  # the last-user check of SQLite: it would delete the -wal if P held no lock on the file
"""


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_a_second_database_object_on_the_same_file_drops_no_lock(tmp_path: Path, how: str) -> None:
    db, other = _second_spelling(tmp_path, how)
    p = subprocess.Popen([sys.executable, "-c", LAYER, db, other], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline().strip() == "opened twice"
        assert run_python(OUTSIDER, db).stdout.strip() == "10"
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "done"
        # While P still lives (its exit would checkpoint whatever it wrote), a fresh process sees every row.
        assert run_python(OUTSIDER, db).stdout.strip() == "20"
        p.communicate("exit\n", timeout=60)
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM jobtrack_meta WHERE key LIKE 'row%'").fetchone() == (20,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


DELETED_UNDER_A_RUNNER = """
import os, sys, time
from jobtrack import Dataset, Trainer, demo
db = sys.argv[1]
t = Trainer(demo.train, config={"epochs": %d, "epoch_pause_s": 0.02}, db=db)
m = t.fit(Dataset("d", "binary_classification", "t", tables={"train": demo.make_rows(40, seed=1)}))
while len(m.get_status()["result"].get("epochs", [])) < 2:
    time.sleep(0.01)
for suffix in ("", "-wal", "-shm"):
    os.unlink(db + suffix)
try:
    print("reported", m.wait(timeout=60)["status"])
except Exception as exc:
    print("raised", type(exc).__name__)
""" % EPOCHS


def test_a_file_deleted_under_a_running_job_is_never_reported_completed(tmp_path: Path) -> None:
    """Issue 21, defect 7: the process reported COMPLETED although the path held no jobs any more."""
    out = run_python(DELETED_UNDER_A_RUNNER, str(tmp_path / "x.db")).stdout.strip()
    assert out == "raised DatabaseReplaced"
