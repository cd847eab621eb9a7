"""runner='worker' end to end: jobs queued here, run by `jobtrack worker --burst` in separate processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import jobfuncs
from jobtrack import Dataset, JobManager, ModelNotReady, Trainer, demo
from proc import child_env, wait_until


def _worker(db: str, *args: str, db_first: bool = False, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobtrack worker --burst --db DB`` to completion in a child process; ``code``: its exit code
    (1 when a job it ran failed)."""
    cmd = [sys.executable, "-m", "jobtrack"]
    cmd += ["--db", db, "worker", "--burst", *args] if db_first else ["worker", "--burst", "--db", db, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(), cwd=os.path.dirname(db))
    assert proc.returncode == code, f"worker exited ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _ran(proc: subprocess.CompletedProcess[str]) -> int:
    line = [ln for ln in proc.stdout.splitlines() if "ran " in ln][-1]
    return int(line.split("ran ")[1].split()[0])


def _worker_pid(proc: subprocess.CompletedProcess[str]) -> int:
    return int(proc.stdout.split("(pid ")[1].split(")")[0])


def _query(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _runner_pid(db: str, job_id: str) -> int:
    (runner,), = _query(db, "SELECT runner FROM jobs WHERE id = ?", job_id)
    return int(runner.split("|")[1])


def test_worker_process_runs_fit_predict_and_fit_predict(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, demo.predict, db=db_path, runner="worker", config={"epochs": 4})
    train = trainer.fit(dataset)
    both = trainer.fit_predict(dataset, "worker_both", extract_embeddings=True)
    for job in (train, both):
        status = job.get_status()
        assert status["status"] == "QUEUED" and status["model_run_id"] == job.model_run_id  # known at once
    with pytest.raises(ModelNotReady):
        trainer.predict("too_early", model_run_id=train.model_run_id)

    first = _worker(db_path)
    assert _ran(first) == 2
    pid = _worker_pid(first)
    assert pid != os.getpid()
    test_rows = dataset.table("test")
    for job, job_type in ((train, "train"), (both, "train_inference")):
        status = job.wait(timeout=5)
        assert status["status"] == "COMPLETED", status["result"].get("error")
        assert status["job_type"] == job_type and _runner_pid(db_path, job.job_id) == pid
        result = status["result"]
        assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4]
        aucs = [(e["epoch"], e["validation"]["roc_auc"]) for e in result["epochs"]]
        best = max(v for _, v in aucs)
        assert (result["best_epoch"], result["best_metric"]) == next((e, v) for e, v in aucs if v == best)
    jobfuncs.check_predictions(both, test_rows)
    assert set(both.get_status()["export_paths"]) == {"predictions", "embeddings"}
    assert both.model_run_id != train.model_run_id

    pred = trainer.predict("worker_pred", model_run_id=train.model_run_id)
    assert pred.get_status()["status"] == "QUEUED" and pred.model_run_id == train.model_run_id
    second = _worker(db_path)
    assert _ran(second) == 1 and _runner_pid(db_path, pred.job_id) == _worker_pid(second)
    pstatus = pred.wait(timeout=5)
    assert pstatus["status"] == "COMPLETED" and pstatus["job_type"] == "inference"
    assert pstatus["model_run_id"] == train.model_run_id
    jobfuncs.check_predictions(pred, test_rows)
    assert "embeddings" not in pstatus["export_paths"]

    key = train.register_model("churn", "w1")
    by_key = trainer.predict("worker_key", registered_model_key=key)
    assert _ran(_worker(db_path, db_first=True)) == 1  # --db before the subcommand works too
    assert by_key.wait(timeout=5)["status"] == "COMPLETED" and by_key.model_run_id == train.model_run_id
    assert {s["status"] for s in JobManager(db_path).show_jobs()} == {"COMPLETED"}


def test_worker_runs_importable_test_functions_and_the_regression_metric(db_path: str, tmp_path: Path) -> None:
    table = tmp_path / "house.csv"
    table.write_text("x,y\n1,2\n")
    test_table = tmp_path / "house_test.csv"
    test_table.write_text("id,x\n10,1\n11,2\n12,3\n")
    ds = Dataset("house", "regression", "price", tables={"train": table, "test": test_table})
    trainer = Trainer(jobfuncs.train_rmse, jobfuncs.predict_test_table, db=db_path, runner="worker")
    job = trainer.fit_predict(ds, "house_pred")
    assert _ran(_worker(db_path)) == 1
    status = job.wait(timeout=5)
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert (status["result"]["eval_metric"], status["result"]["best_epoch"], status["result"]["best_metric"]) == (
        "rmse", 10, 1.0)
    assert _query(db_path, f"SELECT * FROM {status['source_views']['predictions']}") == [
        (10, 0.5), (11, 0.5), (12, 0.5)]


def test_worker_records_a_raising_job_as_failed_and_goes_on(db_path: str, dataset: Dataset) -> None:
    bad = Trainer(jobfuncs.train_raise, db=db_path, runner="worker", config={"epochs_before": 2}).fit(dataset)
    good = Trainer(jobfuncs.train_noop, db=db_path, runner="worker").fit(dataset)
    proc = _worker(db_path, code=1)
    assert _ran(proc) == 2 and "ran 2 job(s): 1 completed, 1 failed, 0 canceled" in proc.stdout
    status = bad.get_status()
    assert status["status"] == "FAILED" and len(status["result"]["epochs"]) == 2
    assert status["result"]["error"]["type"] == "ValueError" and "jobfuncs.py" in status["result"]["error"]["traceback"]
    assert good.get_status()["status"] == "COMPLETED"


def test_a_worker_job_whose_code_raises_keyboard_interrupt_fails_without_a_thread_traceback(
        db_path: str, dataset: Dataset) -> None:
    bad = Trainer(jobfuncs.train_interrupt, db=db_path, runner="worker").fit(dataset)
    good = Trainer(jobfuncs.train_noop, db=db_path, runner="worker").fit(dataset)
    proc = _worker(db_path, code=1)
    assert "ran 2 job(s): 1 completed, 1 failed, 0 canceled" in proc.stdout
    assert bad.get_status()["status"] == "FAILED" and good.get_status()["status"] == "COMPLETED"
    assert "Exception in thread" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert f"job {bad.job_id}: its code raised KeyboardInterrupt" in proc.stderr


def test_worker_skips_a_job_canceled_while_queued(db_path: str, dataset: Dataset, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    trainer = Trainer(jobfuncs.train_noop, db=db_path, runner="worker", config={"marker_dir": str(markers)})
    canceled, kept = trainer.fit(dataset), trainer.fit(dataset)
    assert canceled.cancel() == "CANCELED"
    assert _ran(_worker(db_path)) == 1
    assert kept.get_status()["status"] == "COMPLETED" and canceled.get_status()["status"] == "CANCELED"
    assert [p.name for p in markers.iterdir()] == [kept.job_id]
    assert [e.to_status for e in canceled.events()] == ["QUEUED", "CANCELED"]


def test_worker_leaves_jobs_of_in_process_runners_alone(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(jobfuncs.train_slow, db=db_path, config={"pause_s": 0.01})  # runner="thread"
    running, queued = trainer.fit(dataset), trainer.fit(dataset)
    wait_until(lambda: running.get_status()["status"] == "RUNNING", timeout=20, message="first job running")
    assert _ran(_worker(db_path)) == 0
    assert queued.get_status()["status"] == "QUEUED"
    assert _runner_pid(db_path, running.job_id) == os.getpid()
    queued.cancel()
    running.cancel()
    assert running.wait(timeout=20)["status"] == "CANCELED"


def test_two_workers_run_each_job_exactly_once(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(jobfuncs.train_noop, db=db_path, runner="worker")
    jobs = [trainer.fit(dataset) for _ in range(6)]
    cmd = [sys.executable, "-m", "jobtrack", "worker", "--burst", "--db", db_path]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
             for _ in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    assert sum(_ran(o) for o in outs) == 6
    for job in jobs:
        assert job.get_status()["status"] == "COMPLETED"
        assert [e.to_status for e in job.events()] == ["QUEUED", "RUNNING", "COMPLETED"]
    assert {_runner_pid(db_path, j.job_id) for j in jobs} <= {_worker_pid(o) for o in outs}


def test_a_worker_job_whose_code_no_longer_imports_fails_saying_so(
    db_path: str, tmp_path: Path, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_dir = tmp_path / "usercode"
    code_dir.mkdir()
    module = code_dir / "jt_vanishing_model.py"
    module.write_text("def train(ctx):\n    ctx.log_epoch(1, train={'loss': 1.0})\n    return {'ok': True}\n")
    monkeypatch.syspath_prepend(str(code_dir))
    monkeypatch.delitem(sys.modules, "jt_vanishing_model", raising=False)
    import jt_vanishing_model  # type: ignore[import-not-found]

    job = Trainer(jt_vanishing_model.train, db=db_path, runner="worker").fit(dataset)
    other = Trainer(jobfuncs.train_noop, db=db_path, runner="worker").fit(dataset)
    assert job.get_status()["status"] == "QUEUED"
    module.unlink()
    monkeypatch.delitem(sys.modules, "jt_vanishing_model")
    assert _ran(_worker(db_path, code=1)) == 2  # the worker's sys.path does not have code_dir
    status = job.get_status()
    assert status["status"] == "FAILED" and status["finished_at"] is not None
    reason = job.events()[-1].reason or ""
    assert "cannot" in reason.lower() and "import" in reason.lower() and "jt_vanishing_model" in reason
    assert "jt_vanishing_model" in status["result"]["error"]["message"]
    assert other.get_status()["status"] == "COMPLETED"


def test_a_worker_job_whose_table_file_is_gone_fails_saying_so(db_path: str, tmp_path: Path) -> None:
    table = tmp_path / "gone.csv"
    table.write_text("x\n1\n")
    job = Trainer(jobfuncs.train_noop, db=db_path, runner="worker").fit(
        Dataset("g", "regression", "t", tables={"train": table}))
    table.unlink()
    assert _ran(_worker(db_path, code=1)) == 1
    assert job.get_status()["status"] == "FAILED"
    assert "does not exist" in (job.events()[-1].reason or "")
