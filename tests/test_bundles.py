"""Job bundles (#19): export, import and merge; idempotent; malicious bundles refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import warnings
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, Trainer, demo, runtime
from jobtrack.bundle import Limits, merge
from jobtrack.errors import BundleConflict, DatabaseNotFound, InvalidArgument, InvalidBundle
from jobtrack.store import Store
from proc import run_python

PATH_KEYS = ("export_paths",)


def _make_jobs(db: str, dataset: Dataset, alias: str, *, register: str | None = None) -> list[str]:
    trainer = Trainer(demo.train, demo.predict, db=db, runner="eager", config={"epochs": 3})
    train = trainer.fit(dataset)
    assert train.wait(timeout=60)["status"] == "COMPLETED"
    if register:
        train.register_model(register, "v1")
    pred = trainer.predict(alias, model_run_id=train.model_run_id, materialize_results=True)
    assert pred.wait(timeout=60)["status"] == "COMPLETED"
    return [train.job_id, pred.job_id]


def _tree(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _counts(db: str, *tables: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables]
    finally:
        conn.close()


def _folders(root: Path) -> list[str]:
    return sorted(str(p) for p in Path(root).rglob("*") if p.is_dir())


def _dump(db: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _status(db: str, job_id: str) -> dict[str, Any]:
    return dict(JobManager(db).fetch_job(job_id).get_status())


def test_round_trip_into_a_new_sqlite_file(tmp_path: Path, dataset: Dataset) -> None:
    src, dst = str(tmp_path / "a" / "src.db"), str(tmp_path / "b" / "dst.db")
    os.makedirs(os.path.dirname(src))
    os.makedirs(os.path.dirname(dst))
    ids = _make_jobs(src, dataset, "bundled", register="churn")
    report = JobManager(src).export_bundle(tmp_path / "out.jtb")
    assert sorted(report.jobs) == sorted(ids) and report.files > 0 and report.snapshot == []
    Store.open(dst)
    imported = JobManager(dst).import_bundle(tmp_path / "out.jtb")
    assert sorted(imported.imported) == sorted(ids) and imported.registered == ["churn:v1"]

    src_files, dst_files = Store.open(src).files_dir, Store.open(dst).files_dir
    for job_id in ids:
        a, b = _status(src, job_id), _status(dst, job_id)
        for kind, path in b["export_paths"].items():
            assert path.startswith(str(dst_files))
            assert Path(path).read_bytes() == Path(a["export_paths"][kind]).read_bytes()
        assert {k: v for k, v in a.items() if k not in PATH_KEYS} == {k: v for k, v in b.items() if k not in PATH_KEYS}
    assert _tree(src_files) == _tree(dst_files)
    assert _counts(dst, "predictions_bundled", "materialized_predictions_bundled") == [30, 30]
    # The model files came along: a prediction by registered key in the target reads them.
    again = Trainer(demo.train, demo.predict, db=dst, runner="eager").predict("again", registered_model_key="churn:v1")
    final = again.wait(timeout=60)
    assert final["status"] == "COMPLETED", final["result"].get("error")
    assert final["export_paths"]["predictions"].startswith(str(dst_files))


def test_import_twice_changes_nothing(tmp_path: Path, dataset: Dataset) -> None:
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst" / "dst.db")
    os.makedirs(os.path.dirname(dst))
    _make_jobs(src, dataset, "twice", register="m")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    with pytest.raises(DatabaseNotFound):  # a JobManager creates no database unless asked
        JobManager(dst)
    with pytest.raises(InvalidArgument, match="create must be True or False"):
        JobManager(dst, create="yes")  # type: ignore[arg-type]
    assert not os.path.exists(dst)
    JobManager(dst, create=True).import_bundle(tmp_path / "b.jtb")  # a new machine's database
    before, files = _dump(dst), _tree(Store.open(dst).files_dir)
    second = JobManager(dst).import_bundle(tmp_path / "b.jtb")
    assert second.imported == [] and len(second.skipped) == 2 and second.files_written == 0
    assert _dump(dst) == before and _tree(Store.open(dst).files_dir) == files


def test_two_databases_merged_into_one(tmp_path: Path, dataset: Dataset) -> None:
    laptops = [str(tmp_path / f"l{n}" / "jobs.db") for n in range(2)]
    ids = []
    for n, db in enumerate(laptops):
        os.makedirs(os.path.dirname(db))
        ids += _make_jobs(db, dataset, f"laptop{n}")
    target = Store.open(str(tmp_path / "team" / "team.db"))
    report = merge([Store.open(db) for db in laptops], target)
    assert sorted(report.imported) == sorted(ids)
    assert merge([Store.open(db) for db in laptops], target).imported == []
    assert sorted(j.job_id for j in JobManager(target.target).list_jobs(limit=None)) == sorted(ids)


def test_a_job_with_other_content_is_a_conflict(tmp_path: Path, dataset: Dataset) -> None:
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst" / "dst.db")
    os.makedirs(os.path.dirname(dst))
    _make_jobs(src, dataset, "conf")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    bad = _rebuild(tmp_path / "b.jtb", tmp_path / "c.jtb", _edit("rows/jobs.jsonl", "reason", "changed"))
    Store.open(dst)
    JobManager(dst).import_bundle(tmp_path / "b.jtb")
    before, files = _dump(dst), _tree(Store.open(dst).files_dir)
    with pytest.raises(BundleConflict) as err:
        JobManager(dst).import_bundle(bad)
    assert err.value.what == "job"
    assert _dump(dst) == before and _tree(Store.open(dst).files_dir) == files


def test_a_conflict_says_what_differs_and_how_to_resolve_it(tmp_path: Path, dataset: Dataset) -> None:
    """A job conflict names the differing columns and the export that leaves the job out; a registered model name
    taken names the `jobtrack models delete` that frees it. Both ways out work as written."""
    import re
    import shlex

    from jobtrack.cli import main

    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    train, pred = _make_jobs(src, dataset, "why")
    JobManager(src).export_bundle(tmp_path / "b.jtb", [pred], deps=False)
    JobManager(dst, create=True).import_bundle(tmp_path / "b.jtb")
    with closing(sqlite3.connect(dst)) as conn, conn:
        conn.execute("UPDATE jobs SET reason = 'edited here', output_alias = 'elsewhere' WHERE id = ?", (pred,))
    with pytest.raises(BundleConflict) as err:
        JobManager(dst).import_bundle(tmp_path / "b.jtb")
    text = str(err.value)
    assert "(it differs in output_alias, reason)" in text, text
    where = re.search(r'jobtrack export --where "([^"]+)"', text)
    assert where is not None, text
    JobManager(src).export_bundle(tmp_path / "rest.jtb", where=where.group(1))
    assert JobManager(dst).import_bundle(tmp_path / "rest.jtb").imported == [train]

    other = str(tmp_path / "other.db")  # another model registered as churn:v1
    _make_jobs(other, dataset, "mine", register="churn")
    _make_jobs(src, dataset, "theirs", register="churn")
    JobManager(src).export_bundle(tmp_path / "reg.jtb")
    with pytest.raises(BundleConflict) as err:
        JobManager(other).import_bundle(tmp_path / "reg.jtb")
    command = re.search(r"(jobtrack models delete \S+ \S+)", str(err.value))
    assert err.value.what == "registered model" and command is not None, str(err.value)
    assert main([*shlex.split(command.group(1))[1:], "--yes", "--db", other]) == 0
    assert JobManager(other).import_bundle(tmp_path / "reg.jtb").registered == ["churn:v1"]


# -- malicious bundles -------------------------------------------------------------------------------


def _rebuild(good: Path, out: Path, change: Any, *, extra: list[tuple[zipfile.ZipInfo, bytes]] | None = None,
             manifest: Any = None, resign: bool = True) -> Path:
    """A copy of ``good`` with each entry's bytes passed through ``change`` (re-signed in the manifest unless not)."""
    with zipfile.ZipFile(good) as zf:
        doc = json.loads(zf.read("manifest.json"))
        items = [(i.filename, change(i.filename, zf.read(i))) for i in zf.infolist() if i.filename != "manifest.json"]
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in items:
            zf.writestr(name, data)
            if resign:
                doc["entries"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for info, data in extra or []:
            zf.writestr(info, data)
            doc["entries"][info.filename] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        if manifest:
            manifest(doc)
        zf.writestr("manifest.json", json.dumps(doc))
    return out


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _flip(name: str, data: bytes) -> bytes:
    if name.startswith("files/") and name.endswith(".csv"):
        return bytes([data[0] ^ 1]) + data[1:]
    return data


def _edit(entry: str, column: str, value: Any) -> Any:
    """A change of ``_rebuild`` setting one column of every row of one table."""
    def change(name: str, data: bytes) -> bytes:
        if name != entry:
            return data
        rows = [{**json.loads(line), column: value} for line in data.decode().splitlines()]
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    return change


def _duplicate(good: Path, out: Path) -> Path:
    with zipfile.ZipFile(good) as zf, zipfile.ZipFile(out, "w") as new:
        for info in zf.infolist():
            new.writestr(info.filename, zf.read(info))
        first = zf.infolist()[0].filename
        with warnings.catch_warnings():  # zipfile warns of the duplicate name it writes
            warnings.simplefilter("ignore")
            new.writestr(first, zf.read(first))
    return out


MALICIOUS = {
    "traversal": lambda good, out: _rebuild(good, out, lambda n, d: d,
                                            extra=[(zipfile.ZipInfo("files/../../evil"), b"x")]),
    "absolute": lambda good, out: _rebuild(good, out, lambda n, d: d, extra=[(zipfile.ZipInfo("/tmp/evil"), b"x")]),
    "symlink": lambda good, out: _rebuild(good, out, lambda n, d: d, extra=[(_symlink("files/link"), b"/etc/passwd")]),
    "flipped byte": lambda good, out: _rebuild(good, out, _flip, resign=False),
    "wrong version": lambda good, out: _rebuild(good, out, lambda n, d: d,
                                                manifest=lambda doc: doc.update(format_version=99)),
    "duplicate": _duplicate,
    "path escape in manifest": lambda good, out: _rebuild(
        good, out, lambda n, d: d, manifest=lambda doc: doc["paths"].update({"/x": "../../outside"})),
    "relative source path in manifest": lambda good, out: _rebuild(
        good, out, lambda n, d: d, manifest=lambda doc: doc["paths"].update({"relative/x": "jobs/x"})),
    "unsafe view name": lambda good, out: _rebuild(good, out, _edit("rows/job_exports.jsonl", "view_name", 'x"; --')),
    "row of another job": lambda good, out: _rebuild(good, out, _edit("rows/job_epochs.jsonl", "job_id", "other")),
}


@pytest.mark.parametrize("case", [*MALICIOUS, "oversize", "too many entries"])
def test_malicious_bundles_are_refused_and_nothing_is_written(tmp_path: Path, dataset: Dataset, case: str) -> None:
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst" / "dst.db")
    os.makedirs(os.path.dirname(dst))
    _make_jobs(src, dataset, "mal")
    good = tmp_path / "good.jtb"
    JobManager(src).export_bundle(good)
    Store.open(dst)
    manager = JobManager(dst)
    before, files = _dump(dst), _tree(tmp_path / "dst")
    limits = None
    if case == "oversize":
        bad, limits = good, Limits(max_entry_bytes=100)
    elif case == "too many entries":
        bad, limits = good, Limits(max_entries=3)
    else:
        bad = MALICIOUS[case](good, tmp_path / "bad.jtb")
    with pytest.raises(InvalidBundle) as err:
        manager.import_bundle(bad, limits=limits)
    assert err.value.entry and err.value.entry in str(err.value)
    assert _dump(dst) == before and _tree(tmp_path / "dst") == files
    assert not (tmp_path / "evil").exists()


# -- command line ------------------------------------------------------------------------------------


def test_cli_export_import_merge(tmp_path: Path, dataset: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    from jobtrack.cli import main

    src, dst, other = str(tmp_path / "src.db"), str(tmp_path / "dst" / "new.db"), str(tmp_path / "o" / "o.db")
    os.makedirs(os.path.dirname(other))
    _, pred = _make_jobs(src, dataset, "cli")
    _make_jobs(other, dataset, "other")
    out = str(tmp_path / "one.jtb")
    assert main(["export", pred[:-2], "-o", out, "--db", src]) == 0  # a prefix; its training job comes along
    assert "exported 2 job(s)" in capsys.readouterr().out
    assert main(["import", out, "--db", dst]) == 0  # a new file is created
    assert "imported 2 job(s)" in capsys.readouterr().out
    assert main(["import", out, "--db", dst]) == 0
    assert "imported 0 job(s)" in capsys.readouterr().out
    assert main(["merge", src, other, "--into", dst]) == 0
    assert "imported 2 job(s)" in capsys.readouterr().out  # the other laptop's two; src's are there already
    assert len(JobManager(dst).list_jobs(limit=None)) == 4
    assert main(["export", "-o", str(tmp_path / "meta.jtb"), "--no-files", "--db", src]) == 0
    with zipfile.ZipFile(tmp_path / "meta.jtb") as zf:
        assert not [n for n in zf.namelist() if n.startswith("files/")]
    (tmp_path / "bad.jtb").write_bytes(b"not a zip")
    assert main(["import", str(tmp_path / "bad.jtb"), "--db", dst]) == 1
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("bundle", ["missing.jtb", "bad.jtb", "folder"])
def test_cli_refused_bundle_creates_no_database(tmp_path: Path, bundle: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A bundle that cannot be imported leaves no new, empty database behind, and a missing file says so."""
    from jobtrack.cli import main

    (tmp_path / "bad.jtb").write_bytes(b"not a zip")
    (tmp_path / "folder").mkdir()
    new = tmp_path / "new" / "target.db"
    assert main(["import", str(tmp_path / bundle), "--db", str(new)]) == 1
    err = capsys.readouterr().err
    assert not new.exists() and not new.parent.exists()
    assert f"Refused bundle {tmp_path / bundle}" in err and "Nothing was imported" in err
    if bundle == "missing.jtb":
        assert "cannot read it: No such file or directory" in err and "manifest.json" not in err


@pytest.mark.parametrize("command", ["export", "report"])
def test_an_output_over_a_database_is_refused_and_the_database_kept(tmp_path: Path, dataset: Dataset, command: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``-o`` naming the database being read (or one of its files, or another database) would destroy its jobs."""
    from jobtrack.cli import main

    db, other = str(tmp_path / "z.db"), str(tmp_path / "other.db")
    ids = _make_jobs(db, dataset, "kept")
    _make_jobs(other, dataset, "other")
    plain = str(tmp_path / "plain.sqlite")  # a database this process never opened: known by its header
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before, other_before = _dump(db), _dump(other)
    for out, says in ((db, "is the database"), (db + "-wal", "is the database"), (db + ".lock", "is the database"),
                      (other, "a database this process has open"), (plain, "is a SQLite database"),
                      (str(tmp_path), "is a folder"),
                      (str(tmp_path / "no" / "x.out"), "does not exist")):
        assert main([command, "-o", out, "--db", db]) == 2, out
        err = capsys.readouterr().err
        assert says in err and "-o" in err, err
    assert _dump(db) == before and _dump(other) == other_before and _dump(plain) == ["BEGIN TRANSACTION;",
                                                                                     "CREATE TABLE t (x);", "COMMIT;"]
    assert sorted(j.job_id for j in JobManager(db).list_jobs(limit=None)) == sorted(ids)
    with pytest.raises(InvalidArgument, match="is the database"):  # from Python too
        JobManager(db).export_bundle(db)
    assert main([command, "-o", str(tmp_path / "fine.out"), "--db", db]) == 0


def test_an_import_that_cannot_write_its_rows_leaves_no_file_behind(tmp_path: Path, dataset: Dataset,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Files are written before the rows (no row names a missing file); rows that cannot be written take the
    files they came with away again, so a refused import changes nothing."""
    import fcntl

    from jobtrack.cli import main

    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    _make_jobs(src, dataset, "busy", register="m")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    JobManager(dst, create=True)
    files_dir = Store.open(dst).files_dir
    before, rows, folders = _tree(files_dir), _dump(dst), _folders(files_dir)
    fd = os.open(dst + ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer, as far as flock can tell
    try:
        assert main(["import", str(tmp_path / "b.jtb"), "--db", dst, "--lock-timeout", "0.2"]) == 1
        assert "write lock" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert _tree(files_dir) == before and _dump(dst) == rows and _folders(files_dir) == folders  # folders too
    assert main(["import", str(tmp_path / "b.jtb"), "--db", dst]) == 0  # once the lock is free, all of it
    assert len(JobManager(dst).list_jobs(limit=None)) == 2 and _tree(files_dir) != before


def test_a_merge_stopped_by_a_conflict_says_what_the_sources_before_it_imported(tmp_path: Path,
                                                                                    dataset: Dataset) -> None:
    a, b, into = str(tmp_path / "a.db"), str(tmp_path / "b.db"), str(tmp_path / "into.db")
    first = _make_jobs(a, dataset, "x", register="churn")
    _make_jobs(b, dataset, "y", register="churn")  # the same name and version for another model
    with pytest.raises(BundleConflict) as info:
        merge([Store.open(a, create=False), Store.open(b, create=False)], Store.open(into))
    text = str(info.value)
    assert "Nothing was imported" not in text and f"(from {b})" in text
    assert "Nothing of it was imported; the 1 database(s) before it were merged (2 job(s) imported)" in text
    assert sorted(j.job_id for j in JobManager(into).list_jobs(limit=None)) == sorted(first)


def test_migrate_follows_the_import_rules_and_carries_materialized_tables(tmp_path: Path, dataset: Dataset) -> None:
    """``jobtrack migrate`` refuses what import and merge refuse (another job's view, a registered name for another
    model), writing nothing, and carries materialized tables as they do."""
    from jobtrack.store.migrate import migrate

    a, b, c = str(tmp_path / "a.db"), str(tmp_path / "b.db"), str(tmp_path / "c.db")
    ids = _make_jobs(a, dataset, "nov", register="churn")
    _make_jobs(b, dataset, "nov", register="churn")  # the same view name and registered name, other jobs
    before = _dump(b)
    with pytest.raises(BundleConflict, match="Nothing was imported"):
        migrate(Store.open(a, create=False), Store.open(b))
    assert _dump(b) == before
    report = migrate(Store.open(a, create=False), Store.open(c))
    assert sorted(report.copied) == sorted(ids) and report.registered == ["churn:v1"]
    assert _counts(c, "materialized_predictions_nov", "predictions_nov") == [30, 30]
    for job_id in ids:
        assert _status(c, job_id) == _status(a, job_id)  # paths kept: the files stay where they are
    again = migrate(Store.open(a, create=False), Store.open(c))
    assert again.copied == [] and sorted(again.skipped) == sorted(ids)


# -- PostgreSQL --------------------------------------------------------------------------------------


def test_round_trip_into_postgresql(tmp_path: Path, dataset: Dataset, pg_url: str) -> None:
    import sqlalchemy

    src = str(tmp_path / "src.db")
    ids = _make_jobs(src, dataset, "to_pg", register="pgmodel")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    target = Store.open(pg_url)
    first = JobManager(pg_url).import_bundle(tmp_path / "b.jtb")
    assert sorted(first.imported) == sorted(ids) and first.registered == ["pgmodel:v1"]
    for job_id in ids:
        a, b = _status(src, job_id), _status(pg_url, job_id)
        for kind, path in b["export_paths"].items():
            assert path.startswith(str(target.files_dir))
            assert Path(path).read_bytes() == Path(a["export_paths"][kind]).read_bytes()
        assert {k: v for k, v in a.items() if k not in PATH_KEYS} == {k: v for k, v in b.items() if k not in PATH_KEYS}
    second = JobManager(pg_url).import_bundle(tmp_path / "b.jtb")
    assert second.imported == [] and sorted(second.skipped) == sorted(ids)
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql('SELECT COUNT(*) FROM "predictions_to_pg"').scalar() == 30
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM jobs").scalar() == 2
    finally:
        engine.dispose()
    again = Trainer(demo.train, demo.predict, db=pg_url, runner="eager").predict("pg_again",
                                                                                  registered_model_key="pgmodel:v1")
    assert again.wait(timeout=60)["status"] == "COMPLETED"


def test_a_moved_project_folder_keeps_its_models_and_carries_them_in_a_bundle(tmp_path: Path) -> None:
    """Jobs record their model directory as an absolute path: after the folder holding the database moved,
    prediction finds the model where the database's files are now, and a bundle carries it from there."""
    data = Dataset("moved", "binary_classification", "m", tables=demo.write_csv_tables(tmp_path / "data", n=40))
    (tmp_path / "proj").mkdir()
    train = Trainer(demo.train, demo.predict, db=str(tmp_path / "proj" / "runs.db"), runner="eager",
                    config={"epochs": 2}, provenance=False).fit(data)
    run = train.model_run_id
    assert train.get_status()["status"] == "COMPLETED" and run is not None
    runtime.close_all()  # as the process that trained would have ended before its folder moved
    (tmp_path / "proj").rename(tmp_path / "moved")
    db = str(tmp_path / "moved" / "runs.db")
    trainer = Trainer(demo.train, demo.predict, db=db, runner="eager", provenance=False)
    after = trainer.predict("after_move", model_run_id=run).get_status()
    assert after["status"] == "COMPLETED", after["result"].get("error")
    JobManager(db).export_bundle(tmp_path / "b.jtb", [train.job_id])
    other = str(tmp_path / "moved" / "other.db")
    JobManager(other, create=True).import_bundle(tmp_path / "b.jtb")
    assert (Path(other + "-files") / "models" / run / "weights.json").is_file()
    imported = Trainer(demo.train, demo.predict, db=other, runner="eager", provenance=False)
    status = imported.predict("after_import", model_run_id=run).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert not (tmp_path / "proj").exists()  # nothing was made at the old place


TRAIN_ELSEWHERE = """
import sys
from jobtrack import Dataset, Trainer, demo
data = Dataset("churn", "binary_classification", "m1", tables=demo.write_csv_tables(sys.argv[2], n=40))
job = Trainer(demo.train, demo.predict, db=sys.argv[1], runner="eager", config={"epochs": 2}).fit(data)
print(job.model_run_id)
"""


def test_predict_with_a_test_table_needs_no_training_files(tmp_path: Path) -> None:
    """On the machine a bundle was imported to, the training CSVs are not there: a prediction given its own
    test table runs anyway (only the dataset's names are needed from the training job)."""
    source, data = str(tmp_path / "src.db"), tmp_path / "data"
    run = run_python(TRAIN_ELSEWHERE, source, str(data)).stdout.strip()
    JobManager(source).export_bundle(tmp_path / "b.jtb")
    team = str(tmp_path / "team.db")
    JobManager(team, create=True).import_bundle(tmp_path / "b.jtb")
    for path in data.iterdir():
        path.unlink()  # not on this machine
    rows = [{"id": 1, "x1": 0.1, "x2": 0.2, "x3": 0.3, "label": 1}]
    trainer = Trainer(demo.train, demo.predict, db=team, runner="eager", provenance=False)
    status = trainer.predict("new_rows", model_run_id=run, test_table=rows).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    with pytest.raises(InvalidArgument, match="not available here"):
        trainer.predict("no_table", model_run_id=run)  # without a test table the training files are needed


# -- carried jobs and prune ------------------------------------------------------------------------------


def test_prune_never_deletes_a_path_a_carried_job_names_outside_its_files_folder(tmp_path: Path,
                                                                                 dataset: Dataset) -> None:
    """A bundle's rows may name any path (a crafted one, or a --no-files export of another machine): pruning the
    imported jobs deletes only what lies in the target's files folder, and names the rest."""
    source = str(tmp_path / "a.db")
    train, pred = _make_jobs(source, dataset, "carried_out")
    good = tmp_path / "good.jtb"
    JobManager(source).export_bundle(good, [train, pred])
    victim = tmp_path / "victim"
    (victim / "dir").mkdir(parents=True)
    (victim / "dir" / "weights.bin").write_bytes(b"not yours")
    (victim / "important.txt").write_text("keep me")

    def change(name: str, data: bytes) -> bytes:
        if name != "rows/jobs.jsonl":
            return data
        rows = [json.loads(line) for line in data.decode().splitlines()]
        for row in rows:
            spec = json.loads(row["spec_json"])
            if row["id"] == train:
                spec["model_dir"] = str(victim / "dir")
            else:
                row["export_paths_json"] = json.dumps({"predictions": str(victim / "important.txt")})
            row["spec_json"] = json.dumps(spec)
        return "".join(json.dumps(r) + "\n" for r in rows).encode()

    evil = _rebuild(good, tmp_path / "evil.jtb", change)
    target = str(tmp_path / "d.db")
    JobManager(target, create=True).import_bundle(evil)
    report = JobManager(target).prune("0s")
    assert sorted(report.removed) == sorted([train, pred])
    assert (victim / "dir" / "weights.bin").read_bytes() == b"not yours"
    assert (victim / "important.txt").read_text() == "keep me"
    assert str(victim / "important.txt") in report.left
    assert not any(str(victim) in f for f in report.files)


def test_prune_of_a_migrated_copy_leaves_the_sources_exports_and_the_source_still_prunes_them(
        tmp_path: Path, dataset: Dataset) -> None:
    from jobtrack.store.migrate import migrate

    source = str(tmp_path / "a.db")
    trainer = Trainer(demo.train, demo.predict, db=source, runner="eager", config={"epochs": 2}, provenance=False)
    job = trainer.fit_predict(dataset, "mine", output_config={"directory": str(tmp_path / "results")})
    written = [Path(p) for p in job.get_status()["export_paths"].values()]
    assert written and all(p.is_file() and tmp_path / "results" in p.parents for p in written)
    copy = str(tmp_path / "c.db")
    migrate(Store.open(source, create=False), Store.open(copy))
    report = JobManager(copy).prune("0s")
    assert job.job_id in report.removed and all(str(p) in report.left for p in written)
    assert all(p.is_file() for p in written)  # the source's exports: still there for the source
    assert all(str(p) in JobManager(source).prune("0s").files for p in written)  # the source's own: removed
    assert not any(p.exists() for p in written)


# -- an import stopped midway ------------------------------------------------------------------------------


def test_an_import_stopped_after_a_batch_keeps_the_files_of_the_jobs_it_wrote(tmp_path: Path, dataset: Dataset,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the second batch: the first batch's jobs are in the target and keep their files (model, log);
    only the files of the jobs not written go again, and importing once more completes it."""
    from jobtrack.bundle import import_bundle
    from jobtrack.store import migrate

    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    train, pred = _make_jobs(src, dataset, "stopped")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    target = Store.open(dst)
    insert = migrate.insert_rows

    def interrupted(tx: Any, table: str, rows: list[dict[str, Any]]) -> None:
        if table == "jobs" and any(r["id"] == pred for r in rows):
            raise KeyboardInterrupt
        insert(tx, table, rows)

    monkeypatch.setattr(migrate, "insert_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_bundle(target, tmp_path / "b.jtb", batch=1)  # the training job first (a dependency), alone
    monkeypatch.undo()
    assert [j.job_id for j in JobManager(dst).list_jobs(limit=None)] == [train]
    run = str(JobManager(dst).fetch_job(train).model_run_id)
    assert _tree(Path(target.model_dir(run))) == _tree(Path(Store.open(src).model_dir(run))) != {}
    assert _tree(target.job_dir(train)) == _tree(Store.open(src).job_dir(train)) != {}
    assert not target.job_dir(pred).exists()
    assert not any(pred in p for p in _tree(target.files_dir))
    again = import_bundle(target, tmp_path / "b.jtb")
    assert again.imported == [pred] and again.skipped == [train]
    assert _tree(target.files_dir) == _tree(Store.open(src).files_dir)


# -- large files ---------------------------------------------------------------------------------------------


def test_a_large_file_is_streamed_through_export_and_import(tmp_path: Path, dataset: Dataset) -> None:
    """A checkpoint is copied into the bundle and verified out of it block by block, never held whole in memory:
    multi-GB models export and import in the memory of a small one. Checked by the peak of Python's allocations."""
    import tracemalloc

    from jobtrack.bundle import export_bundle, import_bundle

    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    train, _ = _make_jobs(src, dataset, "large")
    big = Store.open(src).job_dir(train) / "checkpoints" / "big.bin"
    big.parent.mkdir(exist_ok=True)
    size = 30 << 20
    with open(big, "wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))  # incompressible: the entry is as large as the file
    source, target = Store.open(src), Store.open(dst)
    peaks = []
    for step in (lambda: export_bundle(source, tmp_path / "b.jtb"), lambda: import_bundle(target, tmp_path / "b.jtb")):
        tracemalloc.start()
        try:
            step()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert all(peak < size // 4 for peak in peaks), peaks
    copy = target.job_dir(train) / "checkpoints" / "big.bin"
    assert copy.stat().st_size == size and _tree(copy.parent) == _tree(big.parent)
