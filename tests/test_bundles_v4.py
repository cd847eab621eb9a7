"""Bundles, merge and migrate carry schema 4 (#19): config parameters, tags, metrics, provenance (and its
diff file), checkpoints, attempts and retry links, sweeps; tags merge by union; format-1 bundles still
import; ``--where`` selects by the query language."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from jobtrack import Dataset, JobManager, Trainer, demo
from jobtrack.bundle import merge
from jobtrack.errors import BundleConflict, InvalidBundle, InvalidQuery
from jobtrack.store import Store
from jobtrack.store.migrate import migrate

SCHEMA4_JOB_COLUMNS = ("best_metric", "provenance_json", "sweep_id", "trial", "max_attempts", "attempt", "retry_of")
SCHEMA4_TABLES = ("job_params", "job_tags", "job_metrics", "job_attempts", "sweeps")
AT = "2026-11-30T01:00:00.000000+00:00"


def _train(db: str, dataset: Dataset, n: int = 1, **config: Any) -> list[str]:
    trainer = Trainer(demo.train, demo.predict, db=db, runner="eager", config={"epochs": 2, **config})
    ids = []
    for _ in range(n):
        job = trainer.fit(dataset)
        assert job.wait(timeout=60)["status"] == "COMPLETED"
        ids.append(job.job_id)
    return ids


def _sql(db: str, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        for sql, params in statements:
            conn.execute(sql, params)


def _enrich(db: str, first: str, retry: str, *, sweep: str = "sw1", sweep_name: str = "search") -> Path:
    """What experiments, retries and sweeps write for two jobs: ``retry`` retried ``first`` as trial 0 of a
    sweep, with config, tags, metrics, provenance naming a diff file and a checkpoint in its directory."""
    job_dir = Store.open(db).job_dir(retry)
    (job_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (job_dir / "checkpoints" / "ckpt-1.bin").write_bytes(os.urandom(256))
    (job_dir / "checkpoints" / "LATEST").write_text("ckpt-1.bin")
    diff = job_dir / "git.diff"
    diff.write_text("diff --git a/train.py b/train.py\n+lr = 0.1\n")
    provenance = {"git": {"commit": "abc123", "branch": "main", "dirty": True, "diff_file": str(diff),
                          "diff_bytes": diff.stat().st_size, "diff_truncated": False},
                  "python": "3.11.9", "packages": {"jobtrack": "0.1.0"}, "datasets": {"train": "00" * 32}}
    _sql(db, [
        ("INSERT INTO sweeps (id, name, created_at, spec_json) VALUES (?, ?, ?, ?)",
         (sweep, sweep_name, AT, json.dumps({"space": {"lr": [0.1, 0.01]}, "n_trials": 2}))),
        ("UPDATE jobs SET best_metric = 0.91, provenance_json = ?, sweep_id = ?, trial = 0, max_attempts = 3, "
         "attempt = 2, retry_of = ? WHERE id = ?",
         (json.dumps(provenance, separators=(",", ":")), sweep, first, retry)),
        ("UPDATE jobs SET best_metric = 0.5, max_attempts = 1, attempt = 1 WHERE id = ?", (first,)),
        *[("INSERT OR IGNORE INTO job_params (job_id, key, kind, num_value, text_value) VALUES (?, ?, ?, ?, ?)", p)
          for p in ((retry, "lr", "number", 0.1, None), (retry, "opt", "string", None, "adam"),
                    (retry, "model.deep", "bool", 1.0, None), (first, "lr", "number", 0.01, None))],
        *[("INSERT OR IGNORE INTO job_tags (job_id, tag) VALUES (?, ?)", t)
          for t in ((retry, "baseline"), (retry, "v1"), (first, "v1"))],
        ("INSERT OR IGNORE INTO job_metrics (job_id, name, best_value, last_value) "
         "VALUES (?, 'roc_auc', 0.91, 0.88)", (retry,)),
        *[("INSERT INTO job_attempts (job_id, number, started_at, ended_at, ended_why) VALUES (?, ?, ?, ?, ?)", a)
          for a in ((retry, 1, AT, AT, "runner lost"), (retry, 2, AT, AT, "completed"))],
    ])
    return diff


def _engine(db: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(db if "://" in db else f"sqlite:///{db}")


def _rows(db: str, files: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every per-job table (any table with a ``job_id``, but the target's ``jobtrack_carried``), ``jobs`` and
    ``sweeps``: sorted rows, the files directory spelled ``<files>``, booleans as integers, events without their
    local numbering."""
    engine = _engine(db)
    try:
        inspector = sqlalchemy.inspect(engine)
        out = {}
        with engine.connect() as conn:
            for table in inspector.get_table_names():
                cols = [c["name"] for c in inspector.get_columns(table)
                        if not (table == "job_events" and c["name"] == "id")]
                if (table not in ("jobs", "sweeps") and "job_id" not in cols) or table == "jobtrack_carried":
                    continue  # jobtrack_carried: the target's note of which jobs came in, not a job's content
                rows = conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
                out[table] = sorted((tuple(_plain(v, files) for v in r) for r in rows), key=repr)
        return out
    finally:
        engine.dispose()


def _plain(value: Any, files: Path) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return value.replace(str(files), "<files>")
    return value


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _dump(db: str) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.iterdump())


@pytest.fixture
def source(tmp_path: Path, dataset: Dataset) -> tuple[str, list[str]]:
    """A database with two trained jobs, the second a retry of the first, enriched with schema 4's rows."""
    db = str(tmp_path / "src" / "src.db")
    os.makedirs(os.path.dirname(db))
    ids = _train(db, dataset, 2)
    _enrich(db, *ids)
    return db, ids


def _difference(table: str, a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> str:
    """The first differing cells of two tables' rows, for a readable failure."""
    cells = [(n, x, y) for ra, rb in zip(a, b, strict=False)
             for n, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y]
    return f"{table}: {len(a)} vs {len(b)} rows; first differing cells (column, source, target): {cells[:3]}"


def _check_same(src: str, dst: str) -> None:
    a, b = _rows(src, Store.open(src).files_dir), _rows(dst, Store.open(dst).files_dir)
    for table in SCHEMA4_TABLES:
        assert a[table], f"the source has no {table} rows: the test would prove nothing"
    for table in sorted(set(a) | set(b)):
        assert a.get(table) == b.get(table), _difference(table, a.get(table) or [], b.get(table) or [])
    manager_a, manager_b = JobManager(src), JobManager(dst)
    for job in manager_a.list_jobs(limit=None):
        status = dict(job.get_status())
        assert dict(manager_b.fetch_job(job.job_id).get_status()) == status


def test_schema4_rows_and_files_survive_export_and_import(tmp_path: Path, source: tuple[str, list[str]]) -> None:
    src, (first, retry) = source
    dst = str(tmp_path / "dst" / "dst.db")
    report = JobManager(src).export_bundle(tmp_path / "b.jtb", [retry])  # the job it retries comes along
    assert report.jobs == [first, retry]
    Store.open(dst)
    imported = JobManager(dst).import_bundle(tmp_path / "b.jtb")
    assert imported.imported == [first, retry]
    _check_same(src, dst)
    # The diff file and the checkpoint travelled, and the provenance names the target's copy.
    target_dir = Store.open(dst).job_dir(retry)
    provenance = json.loads(sqlite3.connect(dst).execute("SELECT provenance_json FROM jobs WHERE id = ?",
                                                         (retry,)).fetchone()[0])
    assert provenance["git"]["diff_file"] == str(target_dir / "git.diff")
    assert Path(provenance["git"]["diff_file"]).read_text().endswith("+lr = 0.1\n")
    assert _tree(Store.open(src).job_dir(retry)) == _tree(target_dir)
    assert (target_dir / "checkpoints" / "LATEST").read_text() == "ckpt-1.bin"
    # A second import changes nothing at all.
    before, files = _dump(dst), _tree(Store.open(dst).files_dir)
    again = JobManager(dst).import_bundle(tmp_path / "b.jtb")
    assert again.imported == [] and again.tagged == [] and again.files_written == 0
    assert _dump(dst) == before and _tree(Store.open(dst).files_dir) == files


def test_tags_merge_by_union_and_a_second_import_is_a_no_op(tmp_path: Path, source: tuple[str, list[str]]) -> None:
    src, (first, retry) = source
    dst = str(tmp_path / "dst" / "dst.db")
    JobManager(src).export_bundle(tmp_path / "a.jtb")
    Store.open(dst)
    JobManager(dst).import_bundle(tmp_path / "a.jtb")
    # Both sides tag the job after the export; neither side's tag is lost, nothing is removed.
    JobManager(src).fetch_job(retry).tag("from-laptop")
    JobManager(dst).fetch_job(retry).tag("from-team")
    JobManager(dst).fetch_job(first).untag("v1")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    report = JobManager(dst).import_bundle(tmp_path / "b.jtb")
    assert report.imported == [] and sorted(report.skipped) == sorted([first, retry])
    assert report.tagged == sorted([first, retry])  # first's 'v1' comes back: a union never removes
    assert JobManager(dst).fetch_job(retry).tags() == ["baseline", "from-laptop", "from-team", "v1"]
    assert JobManager(dst).fetch_job(first).tags() == ["v1"]
    before = _dump(dst)
    assert JobManager(dst).import_bundle(tmp_path / "b.jtb").tagged == []
    assert _dump(dst) == before


def _with_a_trial(db: Path, dataset: Dataset, sweep_id: str, trial: int) -> tuple[str, str]:
    """A new database at ``db`` whose one trained job is trial ``trial`` of a sweep named 'search' (id ``sweep_id``)."""
    os.makedirs(db.parent)
    job = _train(str(db), dataset, 1)[0]
    _sql(str(db), [("INSERT INTO sweeps (id, name, created_at, spec_json) VALUES (?, 'search', ?, '{}')",
                    (sweep_id, AT)),
                   ("UPDATE jobs SET sweep_id = ?, trial = ? WHERE id = ?", (sweep_id, trial, job))])
    return str(db), job


def test_a_sweep_name_taken_by_another_sweep_is_a_conflict(tmp_path: Path, source: tuple[str, list[str]],
                                                            dataset: Dataset) -> None:
    src, _ = source
    dst, _ = _with_a_trial(tmp_path / "dst" / "dst.db", dataset, "sw-other", 0)
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    before, files = _dump(dst), _tree(tmp_path / "dst")
    with pytest.raises(BundleConflict) as err:
        JobManager(dst).import_bundle(tmp_path / "b.jtb")
    assert err.value.what == "sweep" and err.value.name == "search" and "sw-other" in str(err.value)
    assert _dump(dst) == before and _tree(tmp_path / "dst") == files
    with pytest.raises(BundleConflict):
        merge([Store.open(src)], Store.open(dst))
    with pytest.raises(BundleConflict):
        migrate(Store.open(src), Store.open(dst))
    assert _dump(dst) == before


def test_a_sweep_the_target_has_is_kept_by_id(tmp_path: Path, source: tuple[str, list[str]], dataset: Dataset) -> None:
    src, _ = source
    laptop, _ = _with_a_trial(tmp_path / "laptop" / "l.db", dataset, "sw1", 1)
    target = Store.open(str(tmp_path / "team" / "team.db"))
    merge([Store.open(src), Store.open(laptop)], target)  # one sweep, trials from two machines
    with closing(sqlite3.connect(target.target)) as conn:
        assert conn.execute("SELECT id, name FROM sweeps").fetchall() == [("sw1", "search")]
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE sweep_id = 'sw1'").fetchone() == (2,)


def test_a_sweep_trial_run_in_both_databases_is_a_conflict(tmp_path: Path, source: tuple[str, list[str]],
                                                           dataset: Dataset) -> None:
    """A sweep resumed in two databases ran its trial numbers in both: importing one side's runs into the other
    would count each trial twice ("4/2 done"). Refused, naming both jobs; the way out the message gives works."""
    import re

    src, (first, retry) = source
    dst, other = _with_a_trial(tmp_path / "dst" / "dst.db", dataset, "sw1", 0)
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    before = _dump(dst)
    with pytest.raises(BundleConflict) as err:
        JobManager(dst).import_bundle(tmp_path / "b.jtb")
    text = str(err.value)
    assert err.value.what == "sweep trial" and other in text and retry in text and "'search'" in text, text
    with pytest.raises(BundleConflict, match="sweep trial"):
        migrate(Store.open(src), Store.open(dst))
    assert _dump(dst) == before
    where = re.search(r'--where "([^"]+)"', text)
    assert where is not None, text
    JobManager(src).export_bundle(tmp_path / "rest.jtb", where=where.group(1))
    assert JobManager(dst).import_bundle(tmp_path / "rest.jtb").imported == [first]


def _to_format_1(good: Path, out: Path) -> Path:
    """The bundle as jobtrack wrote it before schema 4: no new tables, no new ``jobs`` columns, format 1."""
    with zipfile.ZipFile(good) as zf:
        doc = json.loads(zf.read("manifest.json"))
        items = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != "manifest.json"}
    for table in SCHEMA4_TABLES:
        items.pop(f"rows/{table}.jsonl")
        doc["entries"].pop(f"rows/{table}.jsonl")
    rows = [json.loads(line) for line in items["rows/jobs.jsonl"].decode().splitlines()]
    items["rows/jobs.jsonl"] = "".join(json.dumps({k: v for k, v in r.items() if k not in SCHEMA4_JOB_COLUMNS}) + "\n"
                                       for r in rows).encode()
    doc["format_version"] = 1
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in items.items():
            zf.writestr(name, data)
            doc["entries"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        zf.writestr("manifest.json", json.dumps(doc))
    return out


def test_a_format_1_bundle_still_imports_twice(tmp_path: Path, source: tuple[str, list[str]]) -> None:
    src, (first, retry) = source
    dst = str(tmp_path / "dst" / "dst.db")
    JobManager(src).export_bundle(tmp_path / "new.jtb")
    old = _to_format_1(tmp_path / "new.jtb", tmp_path / "old.jtb")
    Store.open(dst)
    assert sorted(JobManager(dst).import_bundle(old).imported) == sorted([first, retry])
    with closing(sqlite3.connect(dst)) as conn:
        row = conn.execute("SELECT best_metric, sweep_id, max_attempts, attempt, retry_of FROM jobs WHERE id = ?",
                           (retry,)).fetchone()
        assert row == (None, None, 1, 0, None)  # the schema's defaults, as the schema 3 → 4 upgrade gives
        assert conn.execute("SELECT COUNT(*) FROM job_tags").fetchone() == (0,)
    before = _dump(dst)
    assert JobManager(dst).import_bundle(old).imported == []
    assert _dump(dst) == before


def test_unknown_columns_or_tables_are_refused(tmp_path: Path, source: tuple[str, list[str]]) -> None:
    src, _ = source
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    with zipfile.ZipFile(tmp_path / "b.jtb") as zf:
        doc = json.loads(zf.read("manifest.json"))
        items = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != "manifest.json"}
    dst = str(tmp_path / "dst" / "dst.db")
    Store.open(dst)
    for name, data, expected in (
            ("rows/job_tags.jsonl", b'{"job_id": "x", "tag": "a", "colour": "red"}\n', "colour"),
            ("rows/job_secrets.jsonl", b'{"job_id": "x"}\n', "rows/job_secrets.jsonl")):
        entries = {**doc["entries"], name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
        with zipfile.ZipFile(tmp_path / "bad.jtb", "w") as zf:
            for n, d in {**items, name: data}.items():
                zf.writestr(n, d)
            zf.writestr("manifest.json", json.dumps({**doc, "entries": entries}))
        before = _dump(dst)
        with pytest.raises(InvalidBundle) as err:
            JobManager(dst).import_bundle(tmp_path / "bad.jtb")
        assert expected in str(err.value) and _dump(dst) == before


def test_migrate_carries_schema4_and_merges_tags(tmp_path: Path, source: tuple[str, list[str]]) -> None:
    src, (_, retry) = source
    dst = str(tmp_path / "dst" / "dst.db")
    report = migrate(Store.open(src), Store.open(dst))
    assert len(report.copied) == 2
    a, b = _rows(src, Store.open(src).files_dir), _rows(dst, Store.open(src).files_dir)  # migrate keeps paths
    assert a == b
    _sql(src, [("INSERT INTO job_tags (job_id, tag) VALUES (?, 'later')", (retry,))])
    again = migrate(Store.open(src), Store.open(dst))
    assert again.copied == [] and again.tagged == [retry]
    assert _rows(dst, Store.open(src).files_dir)["job_tags"] == _rows(src, Store.open(src).files_dir)["job_tags"]


def test_schema4_rows_merge_into_postgresql(tmp_path: Path, source: tuple[str, list[str]], pg_url: str) -> None:
    src, (first, retry) = source
    target = Store.open(pg_url)
    report = merge([Store.open(src)], target)
    assert sorted(report.imported) == sorted([first, retry])
    _check_same(src, pg_url)
    engine = _engine(pg_url)
    try:
        with engine.connect() as conn:
            provenance = conn.exec_driver_sql(f"SELECT provenance_json FROM jobs WHERE id = '{retry}'").scalar()
    finally:
        engine.dispose()
    diff = Path(json.loads(provenance)["git"]["diff_file"])
    assert diff.is_relative_to(target.files_dir) and diff.read_text().startswith("diff --git")
    assert merge([Store.open(src)], target).imported == []
    _check_same(src, pg_url)


def test_carry_a_bundle_between_two_databases_with_the_cli(tmp_path: Path, source: tuple[str, list[str]]) -> None:
    src, _ = source
    dst = str(tmp_path / "elsewhere" / "team.db")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jobtrack", *argv], capture_output=True, text=True, env=env,
                              timeout=120, check=False)

    out = run("export", "-o", str(tmp_path / "usb.jtb"), "--db", src)
    assert out.returncode == 0, out.stderr
    assert "exported 2 job(s)" in out.stdout
    out = run("import", str(tmp_path / "usb.jtb"), "--db", dst)
    assert out.returncode == 0 and "imported 2 job(s)" in out.stdout, out.stderr
    _check_same(src, dst)
    out = run("import", str(tmp_path / "usb.jtb"), "--db", dst)
    assert out.returncode == 0 and "imported 0 job(s)" in out.stdout and "2 already there" in out.stdout


# -- export --where ---------------------------------------------------------------------------------


def _matching(db: str, where: str) -> list[str]:
    return sorted(j.job_id for j in JobManager(db).list_jobs(where=where, limit=None))


@pytest.mark.parametrize(("where", "deps", "expected"), [
    ("tag = 'baseline'", False, ["retry"]),
    ("tag = 'baseline'", True, ["first", "retry"]),  # with the job it retries
    ("tag = 'v1' and config.lr < 0.05", False, ["first"]),
    ("config.opt = 'adam' or sweep is null", False, ["first", "retry"]),
    ("git.dirty = true and best_metric > 0.9", False, ["retry"]),
    ("tag = 'nothing'", False, []),
])
def test_export_where_selects_exactly_the_matching_jobs(tmp_path: Path, source: tuple[str, list[str]],
                                                        where: str, deps: bool, expected: list[str]) -> None:
    src, (first, retry) = source
    names = {"first": first, "retry": retry}
    wanted = sorted(names[e] for e in expected)
    if not deps:
        assert _matching(src, where) == wanted  # the query engine's own answer
    report = JobManager(src).export_bundle(tmp_path / "b.jtb", where=where, deps=deps)
    assert sorted(report.jobs) == wanted
    dst = str(tmp_path / "dst" / "dst.db")
    Store.open(dst)
    assert sorted(JobManager(dst).import_bundle(tmp_path / "b.jtb").imported) == wanted
    assert _matching(dst, where) == _matching(src, where)  # every match was carried: the same answer there


def test_queries_and_compare_agree_on_both_sides(tmp_path: Path, source: tuple[str, list[str]], pg_url: str) -> None:
    src, (first, retry) = source
    dst = str(tmp_path / "dst" / "dst.db")
    JobManager(src).export_bundle(tmp_path / "b.jtb")
    Store.open(dst)
    JobManager(dst).import_bundle(tmp_path / "b.jtb")
    merge([Store.open(src)], Store.open(pg_url))
    queries = ["tag = 'baseline'", "tag = 'v1'", "config.lr < 0.05", "config.model.deep = true", "sweep = 'search'",
               "git.commit = 'abc123'", "best_metric > 0.9",
               "status = 'COMPLETED' and job_type = 'train'", "not tag like 'base*'"]
    for where in queries:
        expected = _matching(src, where)
        assert _matching(dst, where) == expected and _matching(pg_url, where) == expected, where
    comparison = JobManager(src).compare([first, retry]).as_dict()
    assert JobManager(dst).compare([first, retry]).as_dict() == comparison
    assert JobManager(pg_url).compare([first, retry]).as_dict() == comparison


def test_an_invalid_query_or_ids_and_a_query_write_nothing(tmp_path: Path, source: tuple[str, list[str]],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from jobtrack.cli import main
    from jobtrack.errors import InvalidArgument

    src, (first, _) = source
    out = tmp_path / "b.jtb"
    with pytest.raises(InvalidQuery) as err:
        JobManager(src).export_bundle(out, where="tag = ")
    assert err.value.position == 6
    with pytest.raises(InvalidArgument):
        JobManager(src).export_bundle(out, [first], where="tag = 'v1'")
    assert main(["export", first, "-o", str(out), "--since", "2099-01-01", "--db", src]) == 2  # not silently ignored
    assert "not both" in capsys.readouterr().err
    assert main(["export", "-o", str(out), "--where", "colour = 'red'", "--db", src]) == 2
    err_lines = capsys.readouterr().err.splitlines()  # the caret under the problem, as `jobtrack list` shows it
    assert err_lines[0].startswith("jobtrack: error: invalid --where at position 0: ")
    assert err_lines[1:] == ["  colour = 'red'", "  ^"]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]
    assert main(["export", "-o", str(out), "--where", "tag = 'baseline'", "--no-deps", "--db", src]) == 0
    assert "exported 1 job(s)" in capsys.readouterr().out


# -- as a user makes them -----------------------------------------------------------------------------


def _flaky_train(ctx: Any) -> Any:
    """Fails its first attempt after saving a checkpoint; the retry trains for real."""
    if ctx.attempt == 1:
        ctx.save_checkpoint(b"half-trained", "ckpt.bin")
        raise ValueError("flaky data loader")
    return demo.train(ctx)


def test_jobs_made_through_the_public_api_survive_a_trip(tmp_path: Path, dataset: Dataset, pg_url: str) -> None:
    src = str(tmp_path / "laptop" / "jobs.db")
    os.makedirs(os.path.dirname(src))
    trainer = Trainer(_flaky_train, db=src, runner="eager", config={"epochs": 2, "lr": 0.1}, retries=1,
                      retry_on=(ValueError,), tags=["baseline"])
    job = trainer.fit(dataset)
    assert job.wait(timeout=60)["status"] == "COMPLETED"
    job.tag("keeper")
    sweep = Trainer(demo.train, db=src, runner="eager", config={"epochs": 2}).sweep(
        dataset, {"lr": [0.1, 0.01]}, sampler="grid", name="grid1")
    sweep.wait(timeout=120)
    trials = [t.job_id for t in sweep.trials()]
    assert len(trials) == 2

    JobManager(src).export_bundle(tmp_path / "usb.jtb")
    dst = str(tmp_path / "team" / "team.db")
    Store.open(dst)
    JobManager(dst).import_bundle(tmp_path / "usb.jtb")
    merge([Store.open(src)], Store.open(pg_url))
    for target in (dst, pg_url):
        _check_same(src, target)
        for where in ("tag = 'keeper'", "sweep = 'grid1'", "config.lr < 0.05", "best_metric > 0", "tag is null"):
            assert _matching(target, where) == _matching(src, where), where
        assert JobManager(target).compare(trials).as_dict() == JobManager(src).compare(trials).as_dict()
        assert JobManager(target).retry_links(job.job_id) == JobManager(src).retry_links(job.job_id)
        moved = JobManager(target).fetch_job(job.job_id)
        assert moved.tags() == ["baseline", "keeper"]
        git = (moved.provenance() or {}).get("git") or {}
        if git.get("diff_file"):  # a dirty checkout: the diff travelled and is named in the target
            assert Path(git["diff_file"]).is_relative_to(Store.open(target).files_dir)
            assert Path(git["diff_file"]).is_file()
    files_dir = Store.open(dst).files_dir
    assert (files_dir / "jobs" / job.job_id / "checkpoints" / "ckpt.bin").read_bytes() == b"half-trained"


def test_migrate_brings_a_job_whose_runner_died_as_failed_and_leaves_a_live_one(tmp_path: Path) -> None:
    """A RUNNING row whose runner is gone ends at migrate's read (its liveness verdict) and is copied; one that
    still runs is left where it runs."""
    from jobtrack import liveness

    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    store = Store.open(src)
    me = liveness.current()
    for job_id in ("job_dead", "job_live"):
        store.create_job({"id": job_id, "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
        store.claim(job_id)
    with closing(sqlite3.connect(src)) as conn:  # job_dead's runner: this pid's number, another process's start
        conn.execute("UPDATE jobs SET runner = ? WHERE id = 'job_dead'", (f"{me.host}|{me.pid}|gone",))
        conn.commit()
    report = migrate(store, Store.open(dst))
    assert (report.copied, report.unfinished) == (["job_dead"], ["job_live"])
    assert JobManager(dst).fetch_job("job_dead").get_status()["status"] == "FAILED"
