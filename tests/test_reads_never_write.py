"""Reads never write (SPEC §6, #13): ``list``, ``status``, ``show``, ``logs``, ``wait``, ``plot`` and ``JobManager``
reads create nothing at a missing path (a typed error names it) and work on a read-only file in a read-only folder.
Only submitting, canceling, pruning and migrating create or change files."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from jobtrack import (
    Dataset,
    JobManager,
    JobStatus,
    ModelManager,
    StoreReadOnly,
    Trainer,
    cli,
    demo,
    runtime,
    testing,
)
from jobtrack.errors import DatabaseNotFound, NotAJobtrackDatabase
from jobtrack.store import Store
from jobtrack.store.schema import CREATION_WAIT_S
from proc import run_python, spawn

READS = [["list"], ["status", "job_x"], ["show", "job_x"], ["logs", "job_x"], ["wait", "job_x"],
         ["plot", "job_x", "-o", "curves.png"], ["models"]]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", READS, ids=lambda a: a[0])
def test_a_read_of_a_missing_database_is_an_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    missing = tmp_path / "typo" / "clii.db"
    code, out, err = _run(capsys, "--db", str(missing), *argv)
    assert code == 1 and out == ""
    assert err == f"jobtrack: error: No jobtrack database at {missing}; nothing was created. Check the path " \
                  "(--db or JOBTRACK_DB); submitting a job creates the database.\n"
    assert not missing.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_jobmanager_and_modelmanager_never_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "sub" / "jobs.db"
    for make in (JobManager, ModelManager):
        with pytest.raises(DatabaseNotFound) as info:
            make(str(missing))  # type: ignore[operator]
        assert info.value.path == str(missing) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatabaseNotFound):
        Store.open(missing, read_only=True)
    assert not missing.parent.exists()


def test_from_python_a_missing_database_names_the_python_setting(tmp_path: Path) -> None:
    """A Python caller passed db=, not --db: the message names the setting it can change."""
    with pytest.raises(DatabaseNotFound, match=r"\(db= or JOBTRACK_DB\)"):
        JobManager(str(tmp_path / "jobz.db"))


def test_migrating_from_a_missing_database_creates_neither_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    code, _, err = _run(capsys, "migrate", "--from", str(tmp_path / "nope.db"), "--to", str(tmp_path / "to.db"))
    assert code == 1 and "No jobtrack database at" in err
    assert "(--from)" in err and "--db" not in err  # the path came from --from: --db would change nothing
    assert list(tmp_path.iterdir()) == []


def test_merging_from_a_missing_database_names_the_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "merge", str(tmp_path / "nope.db"), "--into", str(tmp_path / "to.db"))
    assert code == 1 and f"No jobtrack database at {tmp_path / 'nope.db'}" in err
    assert "(SOURCE)" in err and "--db" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_read_as_not_yet_a_database_and_left_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    old = time.time() - 3600  # made long ago: no process is creating its tables now
    os.utime(empty, (old, old))
    with pytest.raises(NotAJobtrackDatabase, match="it is empty"):
        JobManager(str(empty))
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_young_empty_file_that_gets_no_tables_is_refused_once_old_enough(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    made = time.time() - (CREATION_WAIT_S - 0.3)  # 0.3 s left of the time its maker has to create the tables
    os.utime(empty, (made, made))
    with pytest.raises(NotAJobtrackDatabase, match="it is empty"):
        JobManager(str(empty))
    assert time.time() - made >= CREATION_WAIT_S - 0.05  # refused only once the file was that old
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


# argv: folder, rounds. Round N: wait for the file "goN", then create the database "roundN.db".
MAKER = r"""
import os, sys, time
from jobtrack.store import Store

folder, rounds = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
for n in range(rounds):
    while not os.path.exists(os.path.join(folder, f"go{n}")):
        if time.monotonic() > deadline:
            sys.exit(f"no go for round {n}")
        os.sched_yield()
    Store.open(os.path.join(folder, f"round{n}.db"))
"""


def test_a_read_while_another_process_creates_the_database_waits_for_its_tables(tmp_path: Path) -> None:
    """Reading a database as soon as its file appears (a dashboard or `jobtrack list` started next to the
    first training) found it empty and refused it, 60 of 60 times, before reads waited for the tables."""
    rounds = 12
    with spawn(MAKER, str(tmp_path), str(rounds)) as maker:
        for n in range(rounds):
            db = tmp_path / f"round{n}.db"
            (tmp_path / f"go{n}").touch()
            deadline = time.monotonic() + 60
            while not db.exists():  # the file appears first; its tables come a few milliseconds later
                assert maker.poll() is None and time.monotonic() < deadline, maker.communicate()
            if n % 2:  # a read-only store (the dashboard's) opened the empty file as immutable: it stayed empty
                assert Store.open(db, read_only=True).list_jobs() == []
            else:
                assert JobManager(str(db)).list_jobs() == []
        assert maker.wait(timeout=60) == 0, maker.communicate()



# argv: the new database's path. Prints, as the file is created, whether its tables' DDL was already built.
CREATION_ORDER = r"""
import os, sys
path = sys.argv[1]

def hook(event, args):
    if event == "open" and args[0] == path and isinstance(args[2], int) and args[2] & os.O_CREAT:
        print("built" if "jobtrack.store.models" in sys.modules else "not built", flush=True)

sys.addaudithook(hook)
from jobtrack.store import Store
Store.open(path)
"""


def test_a_new_database_file_appears_only_once_its_tables_are_moments_away(tmp_path: Path) -> None:
    """Building the DDL imports SQLAlchemy (a second, several under load): done after the file appeared, a reader
    waiting ``CREATION_WAIT_S`` for the tables was refused on a loaded machine (3 runs of 5 under load)."""
    db = tmp_path / "new.db"
    assert run_python(CREATION_ORDER, str(db)).stdout.split() == ["built"]


def test_a_read_only_store_reads_and_refuses_every_write(db_path: str) -> None:
    job = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 1}).fit(_dataset_files(db_path))
    runtime.close_all()
    reader = Store.open(db_path, read_only=True)
    assert reader.read_only and reader.get_job(job.job_id).status.value == "QUEUED"
    with pytest.raises(StoreReadOnly, match="reading only"):
        reader.request_cancel(job.job_id)
    assert not os.path.exists(db_path + "-wal")  # nothing opened the file for writing: SQLite made no log
    assert reader is not Store.open(db_path)  # the process's writable store is another


def test_a_read_only_store_sees_what_writers_wrote_after_it_opened_the_file(db_path: str) -> None:
    Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 1}).fit(_dataset_files(db_path))
    runtime.close_all()
    reader = Store.open(db_path, read_only=True)  # no writer has the file open: it is read as immutable
    assert len(reader.list_jobs()) == 1
    assert not os.path.exists(db_path + "-wal") and not os.path.exists(db_path + "-shm")  # it created no file
    code = ("import sys\nfrom jobtrack import Dataset, Trainer\n"
            "Trainer(lambda ctx: None, db=sys.argv[1], runner='eager').fit("
            "Dataset('later', 'regression', 't', tables={'train': [{'x': 1}]}))\n")
    run_python(code, db_path)  # a whole writer session between two reads
    assert len(reader.list_jobs()) == 2
    go = Path(db_path).with_name("go")
    hold = "import os, time\nprint('ready', flush=True)\nwhile not os.path.exists(sys.argv[2]):\n    time.sleep(0.01)\n"
    with spawn(code + hold, db_path, str(go)) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert len(reader.list_jobs()) == 3  # a writer has it open now
        go.touch()
        assert child.wait(timeout=60) == 0


def test_a_dead_runners_verdict_is_shown_unsaved_on_a_read_only_store(db_path: str) -> None:
    store = Store.open(db_path)
    store.create_job({"id": "job_dead", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    store.claim("job_dead")
    testing.kill_runner(JobManager(db_path).fetch_job("job_dead"))  # a runner process that no longer exists
    runtime.close_all()
    before = Path(db_path).read_bytes()
    rec = Store.open(db_path, read_only=True).get_job("job_dead")
    assert rec.status.value == "FAILED" and rec.reason == "runner lost"
    runtime.close_all()
    assert Path(db_path).read_bytes() == before
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT status FROM jobs WHERE id = 'job_dead'").fetchone() == ("RUNNING",)



def test_a_read_only_status_filter_finds_a_dead_runners_job_under_failed_not_running(db_path: str) -> None:
    # The dashboard's store is read-only: it cannot save the verdict, so its status filter must apply it.
    store = Store.open(db_path)
    for job_id in ("job_dead", "job_live", "job_done"):
        store.create_job({"id": job_id, "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    store.claim("job_dead")
    store.claim("job_live")  # this process runs it: alive
    store.request_cancel("job_done")
    testing.kill_runner(JobManager(db_path).fetch_job("job_dead"))
    runtime.close_all()
    before = Path(db_path).read_bytes()
    reader = Store.open(db_path, read_only=True)

    def page(*statuses: str) -> tuple[int, list[tuple[str, str]]]:
        total, recs = reader.dashboard_page(statuses=[JobStatus(s) for s in statuses])
        return total, [(r.id, r.status.value) for r in recs]

    assert page("RUNNING") == (1, [("job_live", "RUNNING")])
    assert page("FAILED") == (1, [("job_dead", "FAILED")])
    assert page("FAILED", "CANCELED") == (2, [("job_done", "CANCELED"), ("job_dead", "FAILED")])
    assert page("QUEUED") == (0, [])
    runtime.close_all()
    assert Path(db_path).read_bytes() == before  # nothing saved


def _dataset_files(db_path: str) -> Dataset:
    tables = demo.write_csv_tables(Path(db_path).parent / "data", n=30)
    return Dataset("ro", "binary_classification", "t", tables=tables)


# A whole process: the reads as another user (root ignores permission bits, so a root test run switches to
# uid 65534 after warming up every import while the interpreter's own files are still readable to it).
READ_ONLY_CHILD = r"""
import contextlib, io, os, sys
from jobtrack import Dataset, Trainer, cli, demo, runtime
base = sys.argv[1]
db = os.path.join(base, "d", "jobs.db")
trainer = Trainer(demo.train, demo.predict, db=db, runner="eager", config={"epochs": 2})
ds = Dataset("ro", "binary_classification", "t", tables=demo.write_csv_tables(os.path.join(base, "data"), n=30))
job = trainer.fit(ds)
trainer.predict("ro_out", model_run_id=job.model_run_id)
reads = [["list"], ["status", job.job_id], ["show", job.job_id[:-2]], ["logs", job.job_id], ["wait", job.job_id],
         ["plot", job.job_id, "-o", os.path.join(base, "curves.png")], ["models"]]
for argv in reads:  # warm up: every lazy import, while root can still read the interpreter's files
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["--db", db, *argv]) == 0, argv
runtime.close_all()
os.unlink(os.path.join(base, "curves.png"))
if os.geteuid() == 0:
    for root, dirs, files in os.walk(base):
        for name in dirs + files:
            os.chown(os.path.join(root, name), 65534, 65534)
    os.chown(base, 65534, 65534)
os.chmod(db, 0o444)
os.chmod(os.path.dirname(db), 0o555)
before = (sorted(os.listdir(os.path.dirname(db))), open(db, "rb").read())
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
for argv in reads + [["cancel", job.job_id]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--db", db, *argv])
    print(argv[0], code, len(out.getvalue()) > 0, repr(err.getvalue().splitlines()[-1:]), flush=True)
runtime.close_all()
print("unchanged", (sorted(os.listdir(os.path.dirname(db))), open(db, "rb").read()) == before, os.getuid())
os.chmod(os.path.dirname(db), 0o755)  # a read-only file in a folder its owner can write: still no -wal, no -shm
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(["--db", db, "list"])
runtime.close_all()
print("writable-folder", code, (sorted(os.listdir(os.path.dirname(db))), open(db, "rb").read()) == before)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_reads_work_on_a_read_only_database_in_a_read_only_folder(tmp_path: Path) -> None:
    import tempfile

    base = tempfile.mkdtemp(prefix="jobtrack-ro-")  # not under tmp_path: uid 65534 must reach it
    try:
        os.chmod(base, 0o755)
        out = run_python(READ_ONLY_CHILD, base, timeout=120)
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
        for name in ("list", "status", "show", "logs", "wait", "plot", "models"):
            assert lines[name].startswith("0 True"), (name, lines[name], out.stderr)
        code, printed, last_err = lines["cancel"].split(" ", 2)
        assert code == "1" and printed == "False" and "Cannot write the jobtrack database" in last_err
        assert lines["unchanged"].startswith("True"), out.stdout
        if os.geteuid() == 0:
            assert lines["unchanged"].endswith(" 65534")
        assert lines["writable-folder"] == "0 True"
    finally:
        _remove(base)


def _remove(base: str) -> None:
    import shutil

    for root, dirs, _files in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    os.chmod(base, 0o700)
    shutil.rmtree(base)



def test_a_write_to_a_read_only_mount_says_so_not_that_this_user_lacks_permission(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mnt"
    folder.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    class ReadOnlyMount:  # what statvfs says of a folder on a filesystem mounted read-only
        def __init__(self, real: os.statvfs_result) -> None:
            self.f_flag = real.f_flag | os.ST_RDONLY

    def access(path: str | os.PathLike[str], mode: int, **kw: object) -> bool:
        if os.fspath(path) == str(folder) and mode & os.W_OK:
            return False  # EROFS: the kernel refuses every writer, root included
        return real_access(path, mode, **kw)  # type: ignore[arg-type]

    def statvfs(path: str | os.PathLike[str]) -> object:
        return ReadOnlyMount(real_statvfs(path)) if os.fspath(path) == str(folder) else real_statvfs(path)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "statvfs", statvfs)
    ds = Dataset("ro", "regression", "t", tables={"train": [{"x": 1}]})
    with pytest.raises(StoreReadOnly, match="read-only file system") as info:
        Trainer(lambda ctx: None, db=str(folder / "jobs.db"), runner="eager").fit(ds)
    assert "not writable by this user" not in str(info.value)
