"""``jobtrack.track()``: a script, a notebook cell or a function as a ``train`` job of its own process (#20)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import jobtrack
from jobtrack import Dataset, InvalidArgument, JobCanceled, JobManager, RunContext, Trainer, cli, track
from jobtrack.errors import NestedRun
from jobtrack.tracking import active_run
from proc import child_env, spawn, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "track_script" / "train_loop.py"


def status_of(db: str, job_id: str) -> dict[str, Any]:
    return dict(JobManager(db).fetch_job(job_id).get_status())


def test_a_normal_exit_is_completed_with_its_epochs(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with track(experiment="loop", config={"lr": 0.5}, db=db_path, eval_metric="loss") as run:
        assert isinstance(run, RunContext) and active_run() is run
        assert status_of(db_path, run.job_id)["status"] == "RUNNING"  # claimed at once, in this process
        for epoch in range(3):
            run.log_epoch(epoch, train={"loss": [0.9, 0.4, 0.6][epoch]})
        print("hello from the block")
    assert active_run() is None
    status = status_of(db_path, run.job_id)
    assert status["status"] == "COMPLETED" and status["job_type"] == "train"
    assert status["experiment_name"] == "loop" and status["model_run_id"] == run.model_run_id
    assert status["result"]["best_epoch"] == 1 and status["result"]["eval_metric"] == "loss"
    assert run.config == {"lr": 0.5}
    assert "hello from the block" in run.log_path.read_text()  # output captured like any in-process job's
    assert "hello from the block" in capsys.readouterr().out  # and still printed
    # it appears wherever jobs appear: the CLI's list and show
    assert cli.main(["--db", db_path, "list"]) == 0
    assert run.job_id in capsys.readouterr().out
    assert cli.main(["--db", db_path, "show", run.job_id]) == 0
    assert "COMPLETED" in capsys.readouterr().out


def test_an_exception_is_failed_with_its_traceback_and_propagates(db_path: str) -> None:
    def deep() -> None:
        raise ValueError("the data is wrong")

    jobs: list[str] = []

    def script() -> None:
        with track(experiment="x", db=db_path) as run:
            jobs.append(run.job_id)
            run.log_epoch(0, train={"loss": 1.0})
            deep()

    with pytest.raises(ValueError, match="the data is wrong") as caught:
        script()
    status = status_of(db_path, jobs[0])
    assert status["status"] == "FAILED"
    error = status["result"]["error"]
    assert error["type"] == "ValueError" and error["message"] == "the data is wrong"
    assert "in deep" in error["traceback"] and __file__ in error["traceback"]
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0]
    # the traceback the caller sees is the block's own, without the frames that recorded it
    assert "tracking.py" not in "".join(str(f.path) for f in caught.traceback)


def test_a_cancel_from_elsewhere_ends_the_block_and_the_script_goes_on(db_path: str) -> None:
    after = []
    with track(experiment="x", db=db_path) as run:
        JobManager(db_path).cancel_job(run.job_id)  # as from another process or thread
        run.log_epoch(0, train={"loss": 1.0})  # raises JobCanceled: the block ends here
        after.append("not reached")
    assert after == []
    assert status_of(db_path, run.job_id)["status"] == "CANCELED"


def test_a_keyboard_interrupt_raised_in_the_block_is_canceled_and_propagates(db_path: str) -> None:
    # No signal here (jobtrack's handler never ran): a notebook's interrupt, say.
    with pytest.raises(KeyboardInterrupt), track(experiment="x", db=db_path) as run:
        raise KeyboardInterrupt
    assert status_of(db_path, run.job_id)["status"] == "CANCELED"


@pytest.mark.parametrize(("code", "expected"), [(0, "COMPLETED"), (None, "COMPLETED"), (3, "FAILED")])
def test_sys_exit_in_the_block(db_path: str, code: int | None, expected: str) -> None:
    with pytest.raises(SystemExit), track(experiment="x", db=db_path) as run:
        sys.exit(code)
    assert status_of(db_path, run.job_id)["status"] == expected


def test_nested_track_is_a_typed_error(db_path: str) -> None:
    with track(experiment="outer", db=db_path) as outer:
        with pytest.raises(NestedRun, match=outer.job_id) as caught, track(experiment="inner", db=db_path):
            pass  # never entered
        assert caught.value.outer_job_id == outer.job_id
        run_again = track(experiment="inner", db=db_path)
        with pytest.raises(NestedRun):
            run_again.__enter__()
        outer.log_epoch(0, train={"loss": 1.0})
    assert status_of(db_path, outer.job_id)["status"] == "COMPLETED"
    assert [j.job_id for j in JobManager(db_path).list_jobs()] == [outer.job_id]  # no inner job was written


def test_track_inside_a_running_job_is_nested(db_path: str, dataset: Dataset) -> None:
    def train(ctx: RunContext) -> None:
        with track(experiment="inner", db=db_path):
            pass

    status = Trainer(train, db=db_path, runner="eager").fit(dataset).get_status()
    assert status["status"] == "FAILED" and status["result"]["error"]["type"] == "NestedRun"


def test_other_threads_track_their_own_runs(db_path: str) -> None:
    seen: list[str] = []

    def worker() -> None:
        with track(experiment="thread", db=db_path) as run:
            seen.append(run.job_id)

    with track(experiment="main", db=db_path) as outer:
        t = threading.Thread(target=worker)
        t.start()
        t.join(30)
    assert len(seen) == 1 and seen[0] != outer.job_id
    assert {status_of(db_path, j)["status"] for j in (seen[0], outer.job_id)} == {"COMPLETED"}


def test_decorator_form_one_job_per_call_with_the_returned_dict_as_summary(db_path: str) -> None:
    @track(experiment="decorated", db=db_path, config={"depth": 2})
    def experiment(scale: float) -> dict[str, float]:
        run = active_run()
        assert run is not None and run.config == {"depth": 2}
        run.log_epoch(0, validation={"score": scale})
        return {"score": scale}

    assert experiment(1.0) == {"score": 1.0} and experiment(2.0) == {"score": 2.0}
    jobs = JobManager(db_path).list_jobs(experiment_name="decorated")
    summaries = sorted(job.get_status()["result"]["summary"]["score"] for job in jobs)
    assert summaries == [1.0, 2.0]

    @track(experiment="decorated", db=db_path)
    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        broken()
    statuses = sorted(job.get_status()["status"] for job in JobManager(db_path).list_jobs())
    assert statuses == ["COMPLETED", "COMPLETED", "FAILED"]


def test_a_dataset_gives_the_experiment_and_the_task_metric(db_path: str) -> None:
    ds = Dataset("churn", "binary_classification", "m1", tables={"train": [{"x": 1, "y": 0}]})
    with track(ds, db=db_path) as run:
        assert run.dataset.table("train") == [{"x": 1, "y": 0}]
        for epoch, auc in enumerate([0.6, 0.8, 0.7]):
            run.log_epoch(epoch, validation={"roc_auc": auc})
    status = status_of(db_path, run.job_id)
    assert status["experiment_name"] == "churn_binary_classification_m1"
    assert (status["result"]["eval_metric"], status["result"]["best_epoch"]) == ("roc_auc", 1)


def test_the_experiment_defaults_to_the_script_name(tmp_path: Path) -> None:
    script = tmp_path / "my train-script.py"
    script.write_text("import jobtrack, sys\nwith jobtrack.track(db=sys.argv[1]) as run:\n    print(run.job_id)\n")
    db = str(tmp_path / "s.db")
    out = subprocess.run([sys.executable, str(script), db], capture_output=True, text=True, timeout=60,
                         env=child_env(), check=True).stdout
    assert status_of(db, out.strip())["experiment_name"] == "my_train-script"


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    db = str(tmp_path / "never.db")
    ds = Dataset("churn", "regression", "m1")
    for kwargs, problem in [({"dataset": "churn"}, "must be a jobtrack.Dataset"),
                            ({"dataset": ds, "experiment": "other"}, "disagrees"),
                            ({"experiment": "no spaces"}, "not allowed"),
                            ({"config": [1, 2]}, "config must be a dict"),
                            ({"eval_metric": "f2"}, "eval_mode")]:
        with pytest.raises(InvalidArgument, match=problem):
            track(db=db, **kwargs)
    assert not os.path.exists(db)


def test_ctrl_c_in_a_real_script_is_canceled(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    # Python ignores SIGINT if its parent did (a background job of a script): restore what a terminal gives.
    code = ("import signal, sys, time, jobtrack\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "with jobtrack.track(experiment='ctrl_c', db=sys.argv[1]) as run:\n"
            "    print(run.job_id, flush=True)\n"
            "    for epoch in range(100000):\n"
            "        run.log_epoch(epoch, train={'loss': 1.0})\n"
            "        time.sleep(0.01)\n"
            "print('after the block', flush=True)\n")
    with spawn(code, db) as child:
        assert child.stdout is not None
        job_id = child.stdout.readline().strip()
        wait_until(lambda: status_of(db, job_id)["result"].get("epochs"), timeout=30, message="no epoch reported")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    assert child.returncode in (-signal.SIGINT, 130), err
    assert "KeyboardInterrupt" in err and "after the block" not in out
    status = status_of(db, job_id)
    assert status["status"] == "CANCELED"
    assert JobManager(db).fetch_job(job_id).events()[-1].reason == "signal SIGINT"


def test_the_example_script_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "example.db")
    proc = subprocess.run([sys.executable, str(EXAMPLE), db], capture_output=True, text=True, timeout=60,
                          env=child_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    [job] = JobManager(db).list_jobs()
    assert job.get_status()["status"] == "COMPLETED" and job.get_status()["result"]["best_epoch"] is not None


def test_import_jobtrack_loads_no_framework() -> None:
    code = ("import sys, jobtrack, jobtrack.integrations\n"
            "jobtrack.track\n"
            "loaded = sorted(m for m in ('torch', 'lightning', 'pytorch_lightning', 'transformers', 'keras')"
            " if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=child_env())


def test_a_missing_framework_names_its_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("lightning") or importlib.util.find_spec("pytorch_lightning"):
        pytest.skip("Lightning is installed here")
    from jobtrack import MissingExtra

    with pytest.raises(MissingExtra, match=r"pip install 'jobtrack\[lightning\]'"):
        import jobtrack.integrations.lightning  # noqa: F401


def test_track_is_public_and_typed() -> None:
    assert "track" in jobtrack.__all__ and jobtrack.track is track
    assert issubclass(NestedRun, jobtrack.JobtrackError) and not issubclass(JobCanceled, Exception)


@pytest.mark.parametrize("variables", [{"RANK": "1", "WORLD_SIZE": "2"}, {"LOCAL_RANK": "1", "WORLD_SIZE": "2"},
                                       {"NODE_RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}])
def test_a_further_rank_of_a_multi_process_run_creates_no_job(db_path: str, monkeypatch: pytest.MonkeyPatch,
                                                              variables: dict[str, str]) -> None:
    # torchrun starts every rank with RANK set; Lightning's strategy="ddp" runs the script again with LOCAL_RANK
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    Trainer(lambda ctx: None, db=db_path).fit(Dataset("e", "regression", "t", tables={"train": [{"x": 1}]})).wait()
    with track(experiment="ddp", config={"lr": 0.1}, db=db_path) as run:
        assert active_run() is run and run.job_id is None and run.config == {"lr": 0.1}
        assert run.log_epoch(0, train={"loss": 1.0}) is False and not run.is_cancel_requested()
        run.log("not written")
        scratch = run.checkpoint_dir
        assert scratch.is_dir() and run.latest_checkpoint() is None
    assert active_run() is None and not scratch.exists()  # the replica's scratch directory goes with the block
    assert len(JobManager(db_path).list_jobs()) == 1  # only the job submitted above: rank zero's is the run's


@pytest.mark.parametrize("variables", [{"LOCAL_RANK": "-1"}, {"NODE_RANK": "1"}, {"RANK": "1"},
                                       {"RANK": "1", "WORLD_SIZE": "1"}, {"LOCAL_RANK": "-1", "WORLD_SIZE": "2"}])
def test_rank_variables_outside_a_multi_process_run_still_track(db_path: str, monkeypatch: pytest.MonkeyPatch,
                                                                variables: dict[str, str]) -> None:
    """``LOCAL_RANK=-1`` (Transformers' "not distributed"), a ``NODE_RANK`` left in a shell, or a rank without a
    WORLD_SIZE above 1 made track() a replica that stored nothing: the run was lost without a word."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with track(experiment="solo", db=db_path) as run:
        run.log_epoch(0, train={"loss": 1.0})
    assert run.job_id is not None and status_of(db_path, run.job_id)["status"] == "COMPLETED"


def test_a_replica_has_what_a_run_context_has_and_says_it_records_nothing(
        db_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Rank 1's ``run.dataset.table("train")`` was an AttributeError: the rank crashed and rank zero hung."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    rows = [{"x": i} for i in range(5)]
    with track(Dataset("e", "regression", "t", tables={"train": rows}), config={"lr": 0.1}, patience=3,
               db=db_path) as run:
        assert run.dataset.table("train") == rows and list(run.batches("train", 2)) == [rows[:2], rows[2:4], rows[4:]]
        assert run.patience == 3 and run.eval_every == 1 and run.should_evaluate(4)
        assert run.export("predictions", rows) is None and run.exported_kinds() == []
        run.config["lr"] = 0.2  # its own copy
    assert "RANK=1 of a multi-process run: track() records nothing here" in caplog.text
    missing = {n for n in dir(RunContext) if not n.startswith("_")} - {n for n in dir(run) if not n.startswith("_")}
    assert missing <= {"spec", "exporter", "record_export", "log_file"}, missing


def test_rank_zero_is_tracked(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with track(experiment="ddp", db=db_path) as run:
        run.log_epoch(0, train={"loss": 1.0})
    assert status_of(db_path, run.job_id)["status"] == "COMPLETED"


def test_a_run_context_sent_to_another_process_is_a_typed_error_naming_the_fix(db_path: str) -> None:
    import copy
    import pickle

    with track(experiment="spawn", db=db_path) as run:
        with pytest.raises(InvalidArgument, match=r"cannot be pickled.*strategy='ddp' or 'ddp_fork'"):
            pickle.dumps(run)  # what Lightning's strategy="ddp_spawn" does to the callbacks, and so to the run
        assert copy.copy(run).job_id == run.job_id  # a shallow copy still shares the run
        run.log_epoch(0, train={"loss": 1.0})
    assert status_of(db_path, run.job_id)["status"] == "COMPLETED"
