"""The `jobtrack` command line: ``cli.main(argv)`` in-process against real databases, checking stdout, stderr
and the exit code; the installed console script and ``python -m jobtrack`` run once for real in subprocesses."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobtrack import Dataset, JobManager, JobNotFound, RunContext, Trainer, cli, demo
from jobtrack.store import Store
from proc import child_env, local_time_zone

SCRIPT = shutil.which("jobtrack", path=os.path.dirname(sys.executable)) or "jobtrack"


@dataclass(frozen=True)
class Run:
    """What one ``jobtrack`` invocation did: its exit code and everything it printed."""

    code: int
    out: str
    err: str


Cli = Callable[..., Run]


@pytest.fixture
def jobtrack(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``jobtrack(*argv)`` runs ``cli.main(argv)`` in this process and returns its exit code, stdout and stderr."""

    def run(*argv: str) -> Run:
        capsys.readouterr()  # drop whatever the test printed before
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: usage errors (2)
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


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


def test_status_prints_exactly_get_status(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    out = jobtrack("status", jobs["train"], "--db", db_path)
    assert out.code == 0, out.err
    assert json.loads(out.out) == JobManager(db_path).fetch_job(jobs["train"]).get_status()


def test_db_option_works_before_or_after_the_subcommand_and_from_the_environment(
    jobtrack: Cli, db_path: str, jobs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = jobtrack("--db", db_path, "list", "--json")
    after = jobtrack("list", "--json", "--db", db_path)
    monkeypatch.setenv("JOBTRACK_DB", db_path)
    env = jobtrack("list", "--json")
    assert before.code == after.code == env.code == 0
    ids = [s["job_id"] for s in json.loads(before.out)]
    assert ids == [s["job_id"] for s in json.loads(after.out)] == [s["job_id"] for s in json.loads(env.out)]
    assert sorted(ids) == sorted(jobs.values())


def test_list_table_and_filters(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    out = jobtrack("list", "--db", db_path)
    assert out.code == 0, out.err
    header = out.out.splitlines()[0].split()
    assert header[:4] == ["JOB", "ID", "STATUS", "TYPE"] and "DURATION" in header
    failed = json.loads(jobtrack("list", "--db", db_path, "--status", "failed", "--json").out)
    assert [s["job_id"] for s in failed] == [jobs["failed"]]
    inference = json.loads(jobtrack("list", "--db", db_path, "--type", "inference", "--json").out)
    assert [s["job_id"] for s in inference] == [jobs["pred"]]
    recent = json.loads(jobtrack("list", "--db", db_path, "--since", "2h", "--limit", "2", "--json").out)
    assert len(recent) == 2
    signed = jobtrack("list", "--db", db_path, "--since", "-2h", "--limit", "2", "--json")  # as --where writes ages
    assert signed.code == 0 and len(json.loads(signed.out)) == 2, signed.err
    kept = jobtrack("prune", "--db", db_path, "--older-than", "-1h", "--dry-run")
    assert kept.code == 0 and "would remove 0 job(s)" in kept.out, kept.err
    assert json.loads(jobtrack("list", "--db", db_path, "--since", "2999-01-01", "--json").out) == []
    exp = json.loads(jobtrack("list", "--db", db_path, "--experiment", "nope", "--json").out)
    assert exp == []


def test_show_has_timeline_epochs_exports_and_error(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    train = jobtrack("show", jobs["train"], "--db", db_path).out
    assert "QUEUED -> RUNNING" in train and "RUNNING -> COMPLETED" in train
    assert "best epoch" in train and train.count("train {") == 4
    pred = jobtrack("show", jobs["pred"], "--db", db_path).out
    assert "predictions:" in pred and "predictions_cli_out" in pred
    failed = jobtrack("show", jobs["failed"], "--db", db_path).out
    assert "error: RuntimeError: simulated failure at epoch 2" in failed and "Traceback" in failed


def test_logs_wait_cancel_and_worker(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    logs = jobtrack("logs", jobs["train"], "--db", db_path)
    assert "epoch 1: validation roc_auc=" in logs.out
    waited = jobtrack("wait", jobs["failed"], "--db", db_path)
    assert waited.code == 3 and "FAILED" in waited.out
    timed_out = jobtrack("wait", jobs["queued"], "--db", db_path, "--timeout", "0.2")
    assert timed_out.code == 1 and "still QUEUED" in timed_out.err
    worker = jobtrack("worker", "--burst", "--db", db_path)
    assert worker.code == 0 and "ran 1 job" in worker.out
    done = jobtrack("wait", jobs["queued"], "--db", db_path)
    assert done.code == 0 and "COMPLETED" in done.out
    assert "epoch 2 (2 reported)" in done.err  # the progress display
    canceled = jobtrack("cancel", jobs["train"], "--db", db_path)
    assert canceled.code == 0 and "COMPLETED" in canceled.out  # terminal: unchanged


def test_cancel_of_a_queued_job_and_wait_exit_code(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    assert "CANCELED" in jobtrack("cancel", jobs["queued"], "--db", db_path).out
    assert jobtrack("wait", jobs["queued"], "--db", db_path, "-q").code == 4


def test_prune_dry_run_then_for_real(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    for typo, says in (("2030", "a bare number"), ("30", "a bare number"), ("2099-01-01", "in the future")):
        refused = jobtrack("prune", "--older-than", typo, "--db", db_path)  # each would have removed every job
        assert refused.code == 2 and says in refused.err, refused.err
    dry = jobtrack("prune", "--older-than", "0s", "--dry-run", "--db", db_path)
    assert dry.code == 0 and "would remove 3 job(s)" in dry.out
    assert len(JobManager(db_path).list_jobs()) == 4
    job_dir = Path(db_path + "-files") / "jobs" / jobs["train"]
    assert job_dir.exists()
    real = jobtrack("prune", "--older-than", "0s", "--db", db_path)
    assert real.code == 0 and "removed 3 job(s), 1 view(s)" in real.out
    assert [j.job_id for j in JobManager(db_path).list_jobs()] == [jobs["queued"]]
    assert not job_dir.exists()
    with closing(sqlite3.connect(db_path)) as conn:
        views = conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall()
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("job_epochs", "export_rows")]
    assert views == [] and counts == [0, 0]


def test_prune_keeps_jobs_whose_model_is_registered(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    JobManager(db_path).fetch_job(jobs["train"]).register_model("cli", "v1")
    out = jobtrack("prune", "--older-than", "0s", "--db", db_path)
    assert f"kept {jobs['train']}: its model is registered as 'cli:v1'" in out.out
    assert jobs["train"] in {j.job_id for j in JobManager(db_path).list_jobs()}


def test_prune_leaves_paths_outside_its_files_folder(jobtrack: Cli, db_path: str, jobs: dict[str, str],
                                                      tmp_path: Path) -> None:
    """A bundle imported without files names the source database's files: pruning the copy never deletes them."""
    source = JobManager(db_path)
    files = Path(db_path + "-files")
    before = sorted(p for p in files.rglob("*") if p.is_file())
    assert any("models" in p.parts for p in before) and any(p.suffix == ".csv" for p in before)
    bundle = tmp_path / "meta.jtb"
    source.export_bundle(bundle, [jobs["train"], jobs["pred"]], files=False)
    copy = str(tmp_path / "copy.db")
    JobManager(copy, create=True).import_bundle(bundle)
    out = jobtrack("prune", "--older-than", "0s", "--db", copy)
    assert out.code == 0 and "removed 2 job(s)" in out.out, out.out
    assert "outside this database's files folder are left in place" in out.out
    assert str(files / "models") in out.out  # named, not removed
    assert sorted(p for p in files.rglob("*") if p.is_file()) == before  # the source's files are all there
    assert JobManager(copy).list_jobs() == []


def test_prune_removes_exports_the_job_wrote_to_a_folder_of_its_config(jobtrack: Cli, db_path: str,
                                                                        tmp_path: Path) -> None:
    data = Dataset("out", "binary_classification", "t", tables=demo.write_csv_tables(tmp_path / "data", n=30))
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="eager", config={"epochs": 2}, provenance=False)
    job = trainer.fit_predict(data, "mine", output_config={"directory": str(tmp_path / "results")})
    written = [Path(p) for p in job.get_status()["export_paths"].values()]
    assert written and all(p.is_file() and p.parent == tmp_path / "results" for p in written)
    out = jobtrack("prune", "--older-than", "0s", "--db", db_path)
    assert out.code == 0 and "left in place" not in out.out, out.out
    assert not any(p.exists() for p in written)  # the job's own files, wherever its config put them


def test_deleting_a_model_in_a_copied_database_leaves_the_originals_files(db_path: str, tmp_path: Path) -> None:
    from jobtrack import ModelManager, runtime

    train = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 1}, provenance=False).fit(
        Dataset("cp", "binary_classification", "t", tables=demo.write_csv_tables(tmp_path / "data", n=30)))
    original = Path(db_path + "-files") / "models" / str(train.model_run_id)
    assert original.is_dir()
    copy = tmp_path / "copy.db"
    runtime.close_all()  # the last connection's close folds the write-ahead log into the file
    shutil.copy(db_path, copy)  # the database without its folder: its rows name the original's model
    ModelManager(str(copy)).delete_model(train.get_status()["experiment_name"], str(train.model_run_id))
    assert original.is_dir() and any(original.iterdir())  # the original project's model is untouched


def test_prune_keeps_a_training_job_whose_model_a_queued_job_uses(jobtrack: Cli, db_path: str,
                                                                 jobs: dict[str, str], tmp_path: Path) -> None:
    train = JobManager(db_path).fetch_job(jobs["train"])
    later = Trainer(demo.train, demo.predict, db=db_path, runner="worker").predict(
        "later", model_run_id=train.model_run_id, test_table=demo.write_csv_tables(tmp_path / "new", n=20)["test"])
    out = jobtrack("prune", "--older-than", "0s", "--db", db_path)
    assert f"kept {jobs['train']}: its model is used by {later.job_id}, which has not ended" in out.out
    assert (Path(db_path + "-files") / "models" / str(train.model_run_id)).is_dir()  # a worker can still run it


def test_show_and_wait_of_a_metric_only_reported_as_nan_print_no_none(jobtrack: Cli, db_path: str) -> None:
    def nan_only(ctx: RunContext) -> None:
        ctx.log_epoch(0, validation={"rmse": math.nan})

    job = Trainer(nan_only, db=db_path, runner="eager", provenance=False).fit(
        Dataset("nan", "regression", "t", tables={"train": [{"x": 1}]}))
    shown = jobtrack("show", job.job_id, "--db", db_path)
    assert "eval metric rmse, no best epoch: the metric was never reported as a number" in shown.out
    assert "     0  validation {\"rmse\": null}\n" in shown.out  # no "train {}": the part not reported is left out
    waited = jobtrack("wait", job.job_id, "--db", db_path)
    assert "validation rmse=null" in waited.err and "None" not in shown.out + waited.out + waited.err


def test_logs_of_a_job_without_a_log_says_so(jobtrack: Cli, db_path: str) -> None:
    def silent(ctx: RunContext) -> None:
        pass

    job = Trainer(silent, db=db_path, runner="eager", provenance=False).fit(
        Dataset("quiet", "regression", "t", tables={"train": [{"x": 1}]}))
    assert not job.log_path.exists()
    out = jobtrack("logs", job.job_id, "--db", db_path)
    assert out.code == 0 and out.out == "" and f"job {job.job_id} has no log here" in out.err


def test_list_columns_take_backticked_keys_as_where_does(jobtrack: Cli, db_path: str) -> None:
    def odd(ctx: RunContext) -> None:
        ctx.log_epoch(0, validation={"val loss": 0.5})

    job = Trainer(odd, db=db_path, runner="eager", provenance=False, config={"learning rate": 0.01, "a,b": 1}).fit(
        Dataset("odd", "regression", "t", tables={"train": [{"x": 1}]}))
    out = jobtrack("list", "--db", db_path, "--where", "config.`learning rate` = 0.01", "--json",
                   "--columns", "config.`learning rate`,config.`a,b`, last.`val loss`")
    assert out.code == 0, out.err
    row = json.loads(out.out)[0]
    assert row["job_id"] == job.job_id
    assert (row["config.learning rate"], row["config.a,b"], row["last.val loss"]) == (0.01, 1, 0.5)
    bad = jobtrack("list", "--db", db_path, "--columns", "config.`a,b")
    assert bad.code == 2 and "no closing backtick" in bad.err
    table = jobtrack("list", "--db", db_path, "--columns", "duration,status,last.`val loss`").out.splitlines()
    assert table[0].split() == ["JOB", "ID", "STATUS", "TYPE", "EXPERIMENT", "MODEL", "RUN", "CREATED", "DURATION",
                                "LAST.VAL", "LOSS"]  # a column the table shows already is not shown twice


def test_plot_writes_a_png_with_both_curves(jobtrack: Cli, db_path: str, jobs: dict[str, str], tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    out = jobtrack("plot", jobs["train"], "-o", str(png), "--db", db_path)
    assert out.code == 0, out.err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
        assert image.size[0] >= 400 and image.size[1] >= 300


def test_list_of_an_unknown_experiment_names_the_experiments_there(jobtrack: Cli, db_path: str,
                                                                    jobs: dict[str, str]) -> None:
    """`--experiment cli` (the dataset's name) matched nothing, silently: the name is dataset_task_type_task."""
    out = jobtrack("list", "--experiment", "cli", "--db", db_path)
    assert out.code == 0 and out.out.splitlines()[1:] == [], out.out
    assert "no job has experiment 'cli'" in out.err and "cli_binary_classification_t" in out.err, out.err
    assert "experiment like 'cli*'" in out.err
    store = Store.open(db_path)
    for k in range(12):  # experiments that sort before it: it is found however many there are
        store.create_job({"id": f"job_early_{k}", "job_type": "train", "experiment_name": f"a{k:02d}_x_y",
                          "runner_kind": "worker"})
    known = jobtrack("list", "--experiment", "cli_binary_classification_t", "--status", "CANCELED", "--db", db_path)
    assert known.code == 0 and known.err == ""  # a known experiment that no job of the filters has: nothing to say


def test_plot_of_a_job_without_epochs_says_why_and_what_to_plot(jobtrack: Cli, db_path: str, jobs: dict[str, str],
                                                                 tmp_path: Path) -> None:
    """An inference job never reports epochs: "no epochs yet" suggested waiting; the error names the model run."""
    model_run_id = JobManager(db_path).fetch_job(jobs["pred"]).model_run_id
    pred = jobtrack("plot", jobs["pred"], "-o", str(tmp_path / "pred.png"), "--db", db_path)
    assert pred.code == 2 and "inference job" in pred.err and "yet" not in pred.err, pred.err
    assert f"jobtrack plot {jobs['train']}" in pred.err and str(model_run_id) in pred.err
    queued = jobtrack("plot", jobs["queued"], "-o", str(tmp_path / "queued.png"), "--db", db_path)
    assert queued.code == 2 and "no epochs yet" in queued.err, queued.err  # it may still report some
    assert not list(tmp_path.glob("*.png"))


def test_plot_output_names_without_or_with_an_unknown_extension(jobtrack: Cli, db_path: str, jobs: dict[str, str],
                                                                 tmp_path: Path) -> None:
    bare = jobtrack("plot", jobs["train"], "-o", str(tmp_path / "curves"), "--db", db_path)
    assert bare.code == 0 and f"wrote {tmp_path / 'curves.png'}" in bare.out, bare.err  # the file written
    assert (tmp_path / "curves.png").stat().st_mode & 0o777 == 0o600
    odd = jobtrack("plot", jobs["train"], "-o", str(tmp_path / "curves.txt"), "--db", db_path)
    assert odd.code == 2 and "Cannot draw a plot as 'txt'" in odd.err and ".svg" in odd.err, odd.err
    assert not (tmp_path / "curves.txt").exists()
    (tmp_path / "plots").mkdir()
    for folder in (str(tmp_path / "plots"), str(tmp_path / "plots") + "/"):  # a folder stays a usage error
        refused = jobtrack("plot", jobs["train"], "-o", folder, "--db", db_path)
        assert refused.code == 2 and "is a folder" in refused.err, refused.err
    assert list((tmp_path / "plots").iterdir()) == [] and not (tmp_path / "plots.png").exists()


def test_plot_without_the_extra_says_how_to_install_it(
    jobtrack: Cli, db_path: str, jobs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = jobtrack("plot", jobs["train"], "-o", str(tmp_path / "x.png"), "--db", db_path)
    assert out.code == 1
    assert out.err.strip() == (
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
def test_errors_print_one_line_and_exit_1(
    jobtrack: Cli, db_path: str, jobs: dict[str, str], args: list[str], message: str
) -> None:
    out = jobtrack(*args, "--db", db_path)
    assert out.code == (1 if "No job" in message else 2)  # 2: a bad argument value (#13)
    assert out.err.startswith("jobtrack: error: ") and message in out.err
    assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err


def test_debug_lets_the_typed_error_through(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    with pytest.raises(JobNotFound, match="job_nope"):
        cli.main(["--debug", "status", "job_nope", "--db", db_path])
    # and placed after the subcommand, as --db may be
    with pytest.raises(JobNotFound, match="job_nope"):
        cli.main(["status", "job_nope", "--db", db_path, "--debug"])


def test_usage_errors_exit_2(jobtrack: Cli, db_path: str) -> None:
    unknown = jobtrack("frobnicate")
    assert unknown.code == 2 and unknown.err.startswith("jobtrack: error: ") and "frobnicate" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1 and "jobtrack --help" in unknown.err  # one line (#13)
    missing = jobtrack("status")
    assert missing.code == 2 and "job_id" in missing.err and missing.out == ""


def test_demo_runs_on_the_default_database(jobtrack: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("JOBTRACK_DB")
    out = jobtrack("demo")
    assert out.code == 0, out.err
    default_db = tmp_path / "data" / "jobtrack" / "jobtrack.db"
    assert f"database: {default_db}" in out.out and "jobtrack show job_" in out.out
    statuses = [m.get_status() for m in JobManager(str(default_db)).list_jobs()]
    assert sorted(s["job_type"] for s in statuses) == ["inference", "train"]
    assert all(s["status"] == "COMPLETED" for s in statuses)


def test_times_for_people_are_local_and_json_stays_utc(jobtrack: Cli, db_path: str, jobs: dict[str, str]) -> None:
    with local_time_zone("UTC"):
        utc = jobtrack("list", "--db", db_path).out
    with local_time_zone("Asia/Tokyo"):
        tokyo = jobtrack("list", "--db", db_path).out
        as_json = json.loads(jobtrack("status", jobs["train"], "--db", db_path).out)
    assert utc != tokyo  # the CREATED column moved by nine hours
    assert as_json["started_at"].endswith("+00:00")


# -- whole processes: the installed console script and `python -m jobtrack` ------------------------


def test_the_installed_script_runs_main_with_its_exit_codes(db_path: str, jobs: dict[str, str]) -> None:
    def script(*args: str) -> subprocess.CompletedProcess[str]:
        env = child_env(TZ="Asia/Tokyo")
        return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60, env=env)

    status = script("status", jobs["train"], "--db", db_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == JobManager(db_path).fetch_job(jobs["train"]).get_status()
    assert json.loads(status.stdout)["started_at"].endswith("+00:00")  # a non-UTC process still writes UTC
    missing = script("status", "job_nope", "--db", db_path)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("jobtrack: error: No job with id 'job_nope'")
    assert len(missing.stderr.strip().splitlines()) == 1
    debug = script("--debug", "status", "job_nope", "--db", db_path)  # the interpreter prints the traceback
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "JobNotFound" in debug.stderr
    assert script("frobnicate").returncode == 2


def test_python_dash_m_jobtrack(db_path: str, jobs: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "jobtrack", "status", jobs["pred"], "--db", db_path],
                         capture_output=True, text=True, timeout=60, env=child_env())
    assert out.returncode == 0 and json.loads(out.stdout)["job_type"] == "inference"
    assert json.loads(out.stdout)["job_id"] == jobs["pred"]
