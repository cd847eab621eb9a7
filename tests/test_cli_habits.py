"""Command-line habits (#13): id prefixes, ``--version``, ``--lock-timeout``, a ``list`` that says what it left out,
DURATION from the claim, local times in ``logs``, hints that work as printed, one-line errors with CLI hints and the
right exit code (and an unchanged database), examples that run twice, and private files whatever the umask."""

from __future__ import annotations

import json
import os
import re
import runpy
import stat
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, Trainer, __version__, cli, demo, runtime, testing
from jobtrack.store import Store
from proc import local_time_zone

ROOT = Path(__file__).resolve().parent.parent


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: --version, usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(db_path: str) -> tuple[bytes, list[str]]:
    """The database's bytes (every write checkpointed into it) and the names beside it."""
    runtime.close_all()
    return Path(db_path).read_bytes(), sorted(os.listdir(os.path.dirname(db_path)))


@pytest.fixture
def jobs(db_path: str, dataset: Dataset) -> dict[str, str]:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 3})
    train = trainer.fit(dataset)
    pred = trainer.predict("habits_out", model_run_id=train.model_run_id)
    queued = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 1}).fit(dataset)
    return {"train": train.job_id, "pred": pred.job_id, "queued": queued.job_id}


# -- ids, version, lock timeout ----------------------------------------------------------------------------------


def test_a_unique_prefix_of_a_job_id_names_the_job(capsys: pytest.CaptureFixture[str], db_path: str,
                                                   jobs: dict[str, str]) -> None:
    full = jobs["train"]
    others = [j for j in jobs.values() if j != full]
    cut = next(n for n in range(5, len(full)) if not any(o.startswith(full[:n]) for o in others))
    for command in ("status", "show", "wait", "logs"):
        code, _, err = _run(capsys, command, full[:cut], "--db", db_path)
        assert code == 0, (command, err)
    assert f'"job_id": "{full}"' in _run(capsys, "status", full[:cut], "--db", db_path)[1]


def test_an_ambiguous_prefix_lists_the_matches(capsys: pytest.CaptureFixture[str], db_path: str,
                                               jobs: dict[str, str]) -> None:
    before = _snapshot(db_path)
    code, out, err = _run(capsys, "show", "job_", "--db", db_path)
    assert code == 1 and out == ""
    assert err.startswith("jobtrack: error: Job id prefix 'job_' matches 3 jobs: ") and err.count("\n") == 1
    assert all(job_id in err for job_id in jobs.values())
    assert _snapshot(db_path) == before


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "--version") == (0, f"jobtrack {__version__}\n", "")


@pytest.mark.parametrize("where", ["global", "subcommand"])
def test_lock_timeout_reaches_the_write(capsys: pytest.CaptureFixture[str], db_path: str, jobs: dict[str, str],
                                        where: str) -> None:
    args = ["--lock-timeout", "0.05", "cancel", jobs["queued"]] if where == "global" else \
        ["cancel", jobs["queued"], "--lock-timeout", "0.05"]
    with testing.hold_write_lock(db_path, lock_timeout=30):  # the store's own timeout stays long
        code, out, err = _run(capsys, *args, "--db", db_path)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "within 0.05 s" in err and "--lock-timeout SECONDS" in err and "lock_timeout=" not in err
    assert JobManager(db_path).fetch_job(jobs["queued"]).get_status()["status"] == "QUEUED"


# -- list ----------------------------------------------------------------------------------------------------------


def test_list_says_when_rows_were_left_out(capsys: pytest.CaptureFixture[str], db_path: str,
                                           jobs: dict[str, str]) -> None:
    code, out, err = _run(capsys, "list", "--limit", "2", "--db", db_path)
    assert code == 0 and len(out.splitlines()) == 3  # header and two jobs
    assert "showing the newest 2 matching jobs; older ones were left out" in err and "--limit 100" in err  # not 20
    code, out, err = _run(capsys, "list", "--limit", "3", "--db", db_path)
    assert code == 0 and err == ""  # nothing left out: nothing said
    code, out, err = _run(capsys, "list", "--json", "--limit", "1", "--db", db_path)
    assert code == 0 and out.startswith("[") and "left out" in err  # stdout stays JSON


def test_duration_counts_from_the_claim_and_grows_while_running(capsys: pytest.CaptureFixture[str],
                                                                 db_path: str) -> None:
    store = Store.open(db_path)
    with testing.shift_clock(timedelta(minutes=-10)):  # created ten minutes ago
        store.create_job({"id": "job_long", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"})
    with testing.shift_clock(timedelta(minutes=-5)):  # claimed (RUNNING) five minutes ago, by this process
        store.claim("job_long", lease_s=3600)

    def duration() -> str:
        code, out, _ = _run(capsys, "list", "--db", db_path)
        assert code == 0
        return out.splitlines()[1].split()[-1]

    assert duration() == "5.0m"
    with testing.shift_clock(timedelta(minutes=3)):
        assert duration() == "8.0m"
        code, out, _ = _run(capsys, "list", "--db", db_path, "--where", "duration > 7m and duration < 9m")
        assert code == 0 and "job_long" in out  # the query's duration is its time so far too
        assert [(r["id"], round(r["duration"])) for r in JobManager(db_path).table()] == [("job_long", 480)]
    queued = {"id": "job_wait", "job_type": "train", "experiment_name": "e", "runner_kind": "worker"}
    store.create_job(queued)
    _, out, _ = _run(capsys, "list", "--db", db_path)
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("job_wait")] == ["-"]
    code, out, err = _run(capsys, "compare", "job_long", "job_wait", "--db", db_path, "--json")
    assert code == 0 and [[None if d is None else round(d) for d in r["values"]] for r in json.loads(out)["rows"]
                          if r["key"] == "duration"] == [[300, None]], err  # compare's duration: the same


# -- local time, hints ---------------------------------------------------------------------------------------------


def test_logs_show_local_time(capsys: pytest.CaptureFixture[str], db_path: str, jobs: dict[str, str]) -> None:
    with local_time_zone("UTC"):
        utc = _run(capsys, "logs", jobs["train"], "--db", db_path)[1].splitlines()
    with local_time_zone("Asia/Tokyo"):
        tokyo = _run(capsys, "logs", jobs["train"], "--db", db_path)[1].splitlines()
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
    first_utc, first_tokyo = stamp.match(utc[0]), stamp.match(tokyo[0])
    assert first_utc and first_tokyo and "+00:00" not in utc[0]
    from datetime import datetime

    shift = datetime.fromisoformat(first_tokyo.group(1)) - datetime.fromisoformat(first_utc.group(1))
    assert shift == timedelta(hours=9)
    assert [stamp.sub("", line) for line in utc] == [stamp.sub("", line) for line in tokyo]


def test_the_demo_hints_repeat_db_and_every_file_it_makes_is_private(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    db = tmp_path / "new" / "demo.db"
    old = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        code, out, err = _run(capsys, "demo", "--db", str(db))
    finally:
        os.umask(old)
    assert code == 0, err
    assert re.search(rf"jobtrack show job_\w+ --db {re.escape(str(db))}\n", out)
    assert f"jobtrack list --db {db}\n" in out
    runtime.close_all()
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
             for p in [tmp_path / "new", *(tmp_path / "new").rglob("*")]}
    assert any(name.endswith(".csv") for name in modes) and any("weights.json" in name for name in modes)
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)}
    assert wrong == {}


def test_exports_logs_models_and_plots_are_private_whatever_the_umask(
    capsys: pytest.CaptureFixture[str], db_path: str, dataset: Dataset, tmp_path: Path
) -> None:
    old = os.umask(0)
    try:
        trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2})
        job = trainer.fit_predict(dataset, "private_out", output_config={"directory": str(tmp_path / "exports"),
                                                                          "format": "jsonl"})
        testing.assert_completed(job)
        code, _, err = _run(capsys, "plot", job.job_id, "-o", str(tmp_path / "curves.png"), "--db", db_path)
        assert code == 0, err
        code, _, err = _run(capsys, "report", job.job_id, "-o", str(tmp_path / "runs.html"), "--db", db_path)
        assert code == 0, err
        JobManager(db_path).export_bundle(tmp_path / "b.jtb", [job.job_id])
        copy = tmp_path / "copy" / "new.db"
        JobManager(str(copy), create=True).import_bundle(tmp_path / "b.jtb")  # folders made by the import
    finally:
        os.umask(old)
    runtime.close_all()
    paths = [tmp_path / "exports", *(tmp_path / "exports").iterdir(), tmp_path / "curves.png", Path(db_path),
             *Path(db_path + "-files").rglob("*"), tmp_path / "runs.html", tmp_path / "b.jtb",
             *(tmp_path / "copy").rglob("*")]
    assert len([p for p in paths if "copy" in p.parts and p.is_dir()]) >= 4  # new.db-files, jobs, models, ...
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert wrong == {}


def test_the_house_prices_example_runs_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JOBTRACK_DB", str(tmp_path / "houses.db"))
    for _ in range(2):
        runpy.run_path(str(ROOT / "examples" / "house_prices" / "house_model.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("COMPLETED") for line in lines)


# -- every failure: one line, no traceback, the right exit code, the database unchanged ----------------------------


def _no_worker(db_path: str, jobs: dict[str, str], tmp: Path) -> list[str]:
    return ["wait", jobs["queued"], "--timeout", "0.1", "-q"]


ERRORS: list[tuple[str, Any, int, str]] = [
    ("unknown-id", lambda db, jobs, tmp: ["show", "job_nope"], 1, "`jobtrack list"),
    ("ambiguous-id", lambda db, jobs, tmp: ["status", "job_"], 1, "matches 3 jobs"),
    ("postgres-without-extra", lambda db, jobs, tmp: ["list", "--db", "postgresql+psycopg://u@127.0.0.1:1/x"], 1,
     "pip install 'jobtrack[postgres]'"),
    ("mysql-url", lambda db, jobs, tmp: ["list", "--db", "mysql://u@127.0.0.1/x"], 2, "not mysql"),
    ("plot-to-a-missing-folder", lambda db, jobs, tmp: ["plot", jobs["train"], "-o", "/nonexistent/x.png"], 2,
     "The folder '/nonexistent' does not exist"),
    ("plot-no-epochs", lambda db, jobs, tmp: ["plot", jobs["pred"], "-o", str(tmp / "p.png")], 2, "no epochs"),
    ("wait-no-worker", _no_worker, 1, "No worker is running a job of this database"),
    ("bad-limit", lambda db, jobs, tmp: ["list", "--limit", "0"], 2, "--limit must be a positive integer"),
    ("bad-since", lambda db, jobs, tmp: ["list", "--since", "soonish"], 2, "Cannot read 'soonish' as a time"),
    ("bad-lock-timeout", lambda db, jobs, tmp: ["list", "--lock-timeout", "-1"], 2, "--lock-timeout must be"),
    ("unknown-command", lambda db, jobs, tmp: ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ("missing-argument", lambda db, jobs, tmp: ["status"], 2, "job_id"),
    ("not-a-number", lambda db, jobs, tmp: ["wait", jobs["queued"], "--timeout", "soon"], 2, "invalid float value"),
    ("missing-database", lambda db, jobs, tmp: ["list", "--db", str(tmp / "nope" / "x.db")], 1, "nothing was created"),
]

PYTHON_HINTS = ("JobManager()", "wait(timeout", "lock_timeout=", "db=", "monitor.", "get_status()", "Traceback")


@pytest.mark.parametrize(("name", "argv", "code", "fragment"), ERRORS, ids=[e[0] for e in ERRORS])
def test_every_cli_error_is_one_line_with_a_cli_hint_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db_path: str, jobs: dict[str, str],
    tmp_path: Path, name: str, argv: Any, code: int, fragment: str
) -> None:
    if name == "postgres-without-extra":
        monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails, as without the extra
    args = argv(db_path, jobs, tmp_path)
    before = _snapshot(db_path)
    got, out, err = _run(capsys, *([] if "--db" in args else ["--db", db_path]), *args)
    assert (got, out) == (code, "")
    assert err.startswith("jobtrack: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert fragment in err, err
    assert not any(hint in err for hint in PYTHON_HINTS), err
    assert _snapshot(db_path) == before
    assert not (tmp_path / "nope").exists()


def test_an_unexpected_failure_is_one_line_too_and_debug_shows_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db_path: str, jobs: dict[str, str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(JobManager, "list_jobs", broken)
    code, _, err = _run(capsys, "list", "--db", db_path)
    assert code == 1 and err == "jobtrack: error: unexpected RuntimeError: a bug (run again with --debug for the " \
                                "traceback)\n"
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["list", "--db", db_path, "--debug"])



def test_show_prints_unicode_metric_names_and_summary_keys_as_written(capsys: pytest.CaptureFixture[str],
                                                                        db_path: str, dataset: Dataset) -> None:
    def train(ctx: Any) -> dict[str, Any]:
        ctx.log_epoch(0, train={"précision": 0.5, "精度": 0.25}, validation={"roc_auc": 0.75})
        return {"modèle": "résumé", "层": [1, 2]}

    job = Trainer(train, db=db_path, runner="eager", provenance=False).fit(dataset)
    code, out, _ = _run(capsys, "--db", db_path, "show", job.job_id)
    assert code == 0
    assert '"précision": 0.5' in out and '"精度": 0.25' in out
    assert 'summary: {"modèle": "résumé", "层": [1, 2]}' in out
    assert "\\u" not in out
    other = Trainer(train, db=db_path, runner="eager", provenance=False, config={"layers": ["ü"]}).fit(dataset)
    code, out, _ = _run(capsys, "--db", db_path, "compare", job.job_id, other.job_id)
    assert code == 0 and '["ü"]' in out and "\\u" not in out
