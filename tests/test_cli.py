"""The `jobtrack` console script, run for real in subprocesses against real databases, and main(argv) in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobtrack import Dataset, JobManager, Trainer, cli, demo
from proc import child_env

SCRIPT = shutil.which("jobtrack", path=os.path.dirname(sys.executable)) or "jobtrack"


def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=child_env(**env))


@pytest.fixture
def jobs(db_path: str, tmp_path: Path) -> dict[str, str]:
    """A database with a completed train job, its inference job, a failed job and a queued worker job."""
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 4})
    tables = demo.write_csv_tables(tmp_path / "data", n=60)
    ds = Dataset("cli", "binary_classification", "t", tables=tables)
    train = trainer.fit(ds)
    pred = trainer.predict("cli_out", model_run_id=train.model_run_id)
    failed = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3, "fail_at_epoch": 2}).fit(ds)
    queued = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 2}).fit(ds)
    return {"train": train.job_id, "pred": pred.job_id, "failed": failed.job_id, "queued": queued.job_id}


def test_status_prints_exactly_get_status(db_path: str, jobs: dict[str, str]) -> None:
    out = run("status", jobs["train"], "--db", db_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == JobManager(db_path).fetch_job(jobs["train"]).get_status()


def test_db_option_works_before_or_after_the_subcommand_and_from_the_environment(db_path: str, jobs: dict[str, str]) -> None:
    before = run("--db", db_path, "list", "--json")
    after = run("list", "--json", "--db", db_path)
    env = run("list", "--json", JOBTRACK_DB=db_path)
    assert before.returncode == after.returncode == env.returncode == 0
    ids = [s["job_id"] for s in json.loads(before.stdout)]
    assert ids == [s["job_id"] for s in json.loads(after.stdout)] == [s["job_id"] for s in json.loads(env.stdout)]
    assert sorted(ids) == sorted(jobs.values())


def test_list_table_and_filters(db_path: str, jobs: dict[str, str]) -> None:
    out = run("list", "--db", db_path)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header[:4] == ["JOB", "ID", "STATUS", "TYPE"] and "DURATION" in header
    failed = json.loads(run("list", "--db", db_path, "--status", "failed", "--json").stdout)
    assert [s["job_id"] for s in failed] == [jobs["failed"]]
    inference = json.loads(run("list", "--db", db_path, "--type", "inference", "--json").stdout)
    assert [s["job_id"] for s in inference] == [jobs["pred"]]
    recent = json.loads(run("list", "--db", db_path, "--since", "2h", "--limit", "2", "--json").stdout)
    assert len(recent) == 2
    assert json.loads(run("list", "--db", db_path, "--since", "2999-01-01", "--json").stdout) == []
    exp = json.loads(run("list", "--db", db_path, "--experiment", "nope", "--json").stdout)
    assert exp == []


def test_show_has_timeline_epochs_exports_and_error(db_path: str, jobs: dict[str, str]) -> None:
    train = run("show", jobs["train"], "--db", db_path).stdout
    assert "QUEUED -> RUNNING" in train and "RUNNING -> COMPLETED" in train
    assert "best epoch" in train and train.count("train {") == 4
    pred = run("show", jobs["pred"], "--db", db_path).stdout
    assert "predictions:" in pred and "predictions_cli_out" in pred
    failed = run("show", jobs["failed"], "--db", db_path).stdout
    assert "error: RuntimeError: simulated failure at epoch 2" in failed and "Traceback" in failed


def test_logs_wait_cancel_and_worker(db_path: str, jobs: dict[str, str]) -> None:
    logs = run("logs", jobs["train"], "--db", db_path)
    assert "epoch 1: validation roc_auc=" in logs.stdout
    waited = run("wait", jobs["failed"], "--db", db_path)
    assert waited.returncode == 3 and "FAILED" in waited.stdout
    timed_out = run("wait", jobs["queued"], "--db", db_path, "--timeout", "0.2")
    assert timed_out.returncode == 1 and "still QUEUED" in timed_out.stderr
    worker = run("worker", "--burst", "--db", db_path)
    assert worker.returncode == 0 and "ran 1 job" in worker.stdout
    done = run("wait", jobs["queued"], "--db", db_path)
    assert done.returncode == 0 and "COMPLETED" in done.stdout
    assert "epoch 2 (2 reported)" in done.stderr  # the progress display
    canceled = run("cancel", jobs["train"], "--db", db_path)
    assert canceled.returncode == 0 and "COMPLETED" in canceled.stdout  # terminal: unchanged


def test_cancel_of_a_queued_job_and_wait_exit_code(db_path: str, jobs: dict[str, str]) -> None:
    assert "CANCELED" in run("cancel", jobs["queued"], "--db", db_path).stdout
    assert run("wait", jobs["queued"], "--db", db_path, "-q").returncode == 4


def test_prune_dry_run_then_for_real(db_path: str, jobs: dict[str, str]) -> None:
    dry = run("prune", "--older-than", "0s", "--dry-run", "--db", db_path)
    assert dry.returncode == 0 and "would remove 3 job(s)" in dry.stdout
    assert len(JobManager(db_path).list_jobs()) == 4
    job_dir = Path(db_path + "-files") / "jobs" / jobs["train"]
    assert job_dir.exists()
    real = run("prune", "--older-than", "0s", "--db", db_path)
    assert real.returncode == 0 and "removed 3 job(s), 1 view(s)" in real.stdout
    assert [j.job_id for j in JobManager(db_path).list_jobs()] == [jobs["queued"]]
    assert not job_dir.exists()
    import sqlite3

    conn = sqlite3.connect(db_path)
    views = conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall()
    counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("job_epochs", "export_rows")]
    conn.close()
    assert views == [] and counts == [0, 0]


def test_prune_keeps_jobs_whose_model_is_registered(db_path: str, jobs: dict[str, str]) -> None:
    JobManager(db_path).fetch_job(jobs["train"]).register_model("cli", "v1")
    out = run("prune", "--older-than", "0s", "--db", db_path)
    assert f"kept {jobs['train']}: its model is registered as 'cli:v1'" in out.stdout
    assert jobs["train"] in {j.job_id for j in JobManager(db_path).list_jobs()}


def test_plot_writes_a_png_with_both_curves(db_path: str, jobs: dict[str, str], tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    out = run("plot", jobs["train"], "-o", str(png), "--db", db_path)
    assert out.returncode == 0, out.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
        assert image.size[0] >= 400 and image.size[1] >= 300


def test_plot_without_the_extra_says_how_to_install_it(db_path: str, jobs: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    out = run("plot", jobs["train"], "-o", str(tmp_path / "x.png"), "--db", db_path,
              PYTHONPATH=str(tmp_path / "block"))
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "jobtrack: error: jobtrack plot needs matplotlib, which is not installed: pip install 'jobtrack[plot]'."
    )
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "job_nope"], "No job with id 'job_nope'"),
        (["show", "job_nope"], "No job with id 'job_nope'"),
        (["cancel", "job_nope"], "No job with id 'job_nope'"),
        (["list", "--status", "bogus"], "Unknown job status 'bogus'"),
        (["list", "--type", "bogus"], "Unknown job type 'bogus'"),
        (["list", "--since", "not a time"], "Cannot read 'not a time' as a time"),
        (["list", "--limit", "0"], "limit must be a positive integer"),
        (["prune", "--older-than", "yesterday-ish"], "Cannot read 'yesterday-ish' as a time"),
    ],
)
def test_errors_print_one_line_and_exit_1(db_path: str, jobs: dict[str, str], args: list[str], message: str) -> None:
    out = run(*args, "--db", db_path)
    assert out.returncode == 1
    assert out.stderr.startswith("jobtrack: error: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_debug_shows_the_traceback(db_path: str, jobs: dict[str, str]) -> None:
    out = run("--debug", "status", "job_nope", "--db", db_path)
    assert out.returncode == 1 and "Traceback" in out.stderr and "JobNotFound" in out.stderr


def test_usage_errors_exit_2(db_path: str) -> None:
    assert run("frobnicate").returncode == 2
    assert run("status").returncode == 2


def test_python_dash_m_and_in_process_main(db_path: str, jobs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "jobtrack", "status", jobs["pred"], "--db", db_path],
                         capture_output=True, text=True, timeout=60, env=child_env())
    assert out.returncode == 0 and json.loads(out.stdout)["job_type"] == "inference"
    assert cli.main(["status", jobs["pred"], "--db", db_path]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == jobs["pred"]
    assert cli.main(["status", "job_nope", "--db", db_path]) == 1


def test_demo_runs_on_the_default_database(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    out = subprocess.run([SCRIPT, "demo"], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in child_env(**env).items() if k != "JOBTRACK_DB"})
    assert out.returncode == 0, out.stderr
    default_db = tmp_path / "data" / "jobtrack" / "jobtrack.db"
    assert f"database: {default_db}" in out.stdout and "jobtrack show job_" in out.stdout
    statuses = [m.get_status() for m in JobManager(str(default_db)).list_jobs()]
    assert sorted(s["job_type"] for s in statuses) == ["inference", "train"]
    assert all(s["status"] == "COMPLETED" for s in statuses)


def test_times_for_people_are_local_and_json_stays_utc(db_path: str, jobs: dict[str, str]) -> None:
    utc = run("list", "--db", db_path, TZ="UTC").stdout
    tokyo = run("list", "--db", db_path, TZ="Asia/Tokyo").stdout
    assert utc != tokyo  # the CREATED column moved by nine hours
    as_json = json.loads(run("status", jobs["train"], "--db", db_path, TZ="Asia/Tokyo").stdout)
    assert as_json["started_at"].endswith("+00:00")
