"""Issue #18: retries and resuming from checkpoints, with the five statuses and six transitions unchanged.

A retried job stays RUNNING; each attempt is a new fenced claim listed in ``result["attempts"]``; its
code sees ``ctx.attempt``, ``ctx.resume_epoch`` and its checkpoints; an epoch reported again is stored
once. ``jobtrack retry`` queues a new job, linked both ways, for a FAILED or CANCELED one.
(Two workers and kills of them: tests/hostile/test_retry_kill.py.)
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import retryfuncs

from jobtrack import Dataset, InvalidArgument, JobCanceled, JobManager, JobStatus, Trainer, checkpoints, cli
from jobtrack.errors import RetryNotAllowed
from proc import child_env, killed_mid_write, run_python, wait_until

Q, R, C, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED


def _ds() -> Dataset:
    return Dataset("d", "regression", "t", tables={"train": [{"x": 1.0, "y": 2.0}]})


def _marks(tmp_path: Path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir(exist_ok=True)
    return folder


def _marker(folder: Path, name: str, timeout: float = 30) -> str:
    wait_until((folder / name).exists, timeout=timeout, message=f"marker {name}")
    return (folder / name).read_text(encoding="utf-8")


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _worker_burst(db: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "jobtrack", "worker", "--burst", "--db", db], capture_output=True,
                          text=True, timeout=60, env=child_env(), cwd=os.path.dirname(db))
    assert "ran " in proc.stdout, proc.stderr


# -- attempts in place and by the process runner's parent ------------------------------------------------


def test_process_runner_child_killed_at_epoch_5_resumes_and_completes(db_path: str, tmp_path: Path) -> None:
    folder = _marks(tmp_path)
    job = Trainer(retryfuncs.train_resumable, db=db_path, runner="process", retries=1,
                  config={"dir": str(folder), "hold": {"1": 5}}).fit(_ds())
    child = int(_marker(folder, "a1-e5"))  # attempt 1 stored epochs 0..4 and waits before epoch 5
    assert child != os.getpid()
    os.kill(child, signal.SIGKILL)
    final = job.wait(timeout=60)
    assert final["status"] == "COMPLETED", final["result"].get("error")
    result = final["result"]
    assert [e["epoch"] for e in result["epochs"]] == list(range(10))
    assert [e["train"]["attempt"] for e in result["epochs"]] == [1] * 5 + [2] * 5
    assert [(a["number"], a["why"]) for a in result["attempts"]] == [
        (1, "runner process killed by signal SIGKILL"), (2, "completed")]
    assert result["summary"] == {"attempt": 2, "resume_epoch": 5, "restored": "4"}
    events = job.events()  # no new status: attempt 2 is a RUNNING -> RUNNING event with its reason
    assert [(e.from_status, e.to_status) for e in events] == [(None, Q), (Q, R), (R, R), (R, C)]
    assert events[2].reason == "attempt 2 of 2 after runner process killed by signal SIGKILL"


def test_a_resumed_attempt_stops_early_at_the_epoch_an_uninterrupted_run_does(db_path: str) -> None:
    def run(kill_after: int | None) -> dict[str, Any]:
        job = Trainer(retryfuncs.train_patience, db=db_path, runner="process", retries=1, patience=3,
                      config={"kill_after": kill_after}).fit(_ds())
        final = job.wait(timeout=60)
        assert final["status"] == "COMPLETED", final["result"].get("error")
        return final["result"]

    whole, resumed = run(None), run(3)  # best rmse at epoch 2; the kill falls between it and the stop
    assert whole["summary"] == {"stopped_at": 5, "attempt": 1} and whole["stopped_early"] is True
    assert resumed["summary"] == {"stopped_at": 5, "attempt": 2}  # epochs 0..3 replayed into early stopping
    assert resumed["stopped_early"] is True
    assert [e["epoch"] for e in resumed["epochs"]] == [e["epoch"] for e in whole["epochs"]] == list(range(6))


def test_should_stop_asked_before_a_resumed_attempt_reports_knows_the_earlier_epochs(db_path: str) -> None:
    job = Trainer(retryfuncs.train_checking_should_stop_first, db=db_path, runner="process", retries=1, patience=3,
                  config={"kill_after": 5}).fit(_ds())  # epoch 5 made should_stop true; then the process died
    final = job.wait(timeout=60)
    assert final["status"] == "COMPLETED", final["result"].get("error")
    assert final["result"]["summary"] == {"stopped_before": 6, "attempt": 2}
    assert [e["epoch"] for e in final["result"]["epochs"]] == list(range(6)) and final["result"]["stopped_early"]


def test_retry_on_value_error_makes_three_attempts_then_fails_with_the_last_error(db_path: str,
                                                                                  tmp_path: Path) -> None:
    job = Trainer(retryfuncs.train_resumable, db=db_path, retries=2, retry_on=(ValueError,),
                  config={"dir": str(_marks(tmp_path)), "fail": [1, 2, 3]}).fit(_ds())
    final = job.wait(timeout=30)
    assert final["status"] == "FAILED"
    result = final["result"]
    assert result["error"]["type"] == "ValueError"
    assert result["error"]["message"] == "attempt 3 failed at epoch 2"  # the last attempt's
    assert [(a["number"], a["why"]) for a in result["attempts"]] == [(n, "error: ValueError") for n in (1, 2, 3)]
    assert all(a["started_at"] <= a["ended_at"] for a in result["attempts"])
    assert [e["epoch"] for e in result["epochs"]] == [0, 1, 2]
    assert [e.to_status for e in job.events()] == [Q, R, R, R, F]
    assert "starting attempt 3 of 3" in (Path(db_path + "-files") / "jobs" / job.job_id / "log.txt").read_text()


def test_a_retried_error_can_recover_and_an_unlisted_one_fails_at_once(db_path: str, tmp_path: Path) -> None:
    config = {"dir": str(_marks(tmp_path)), "fail": [1]}
    ok = Trainer(retryfuncs.train_resumable, db=db_path, retries=1, retry_on=(ValueError,), config=config).fit(_ds())
    final = ok.wait(timeout=30)
    assert final["status"] == "COMPLETED"
    assert [e["epoch"] for e in final["result"]["epochs"]] == list(range(10))
    assert final["result"]["summary"]["resume_epoch"] == 1
    again = Trainer(retryfuncs.train_resumable, db=db_path, retries=1, retry_on=(ValueError,),
                    config={**config, "from_scratch": True}).fit(_ds()).wait(timeout=30)
    assert again["status"] == "COMPLETED"  # attempt 2 reported epoch 0 again: stored once, its own values
    assert [(e["epoch"], e["train"]["attempt"]) for e in again["result"]["epochs"]] == [(n, 2) for n in range(10)]
    other = Trainer(retryfuncs.train_resumable, db=db_path, retries=2, retry_on=(KeyError,), config=config).fit(_ds())
    final = other.wait(timeout=30)
    assert final["status"] == "FAILED"
    assert [a["number"] for a in final["result"]["attempts"]] == [1]


def test_retries_zero_is_todays_behaviour(db_path: str) -> None:
    job = Trainer(retryfuncs.train_resumable, db=db_path, runner="process",
                  config={"dir": "/nonexistent-so-it-raises"}).fit(_ds())
    final = job.wait(timeout=30)
    assert final["status"] == "FAILED" and "attempts" not in final["result"]
    assert JobManager(db_path).retry_links(job.job_id) == {"retry_of": None, "retried_by": [], "attempt": 1,
                                                            "max_attempts": 1}


def test_a_cancel_is_never_retried(db_path: str, tmp_path: Path) -> None:
    folder = _marks(tmp_path)
    job = Trainer(retryfuncs.train_resumable, db=db_path, retries=2, retry_on=(Exception,),
                  config={"dir": str(folder), "hold": {"1": 2}}).fit(_ds())
    _marker(folder, "a1-e2")
    assert job.cancel() is R  # asked to stop
    (folder / "release-a1").touch()
    final = job.wait(timeout=30)
    assert final["status"] == "CANCELED"
    assert [(a["number"], a["why"]) for a in final["result"]["attempts"]] == [(1, "canceled by user")]


def test_a_thread_job_whose_process_died_reads_failed_despite_attempts_left(db_path: str, tmp_path: Path) -> None:
    folder = _marks(tmp_path)
    code = ("import os, signal, sys, retryfuncs\nfrom jobtrack import Dataset, Trainer\n"
            "ds = Dataset('d', 'regression', 't', tables={'train': [{'x': 1.0, 'y': 2.0}]})\n"
            "job = Trainer(retryfuncs.train_resumable, db=sys.argv[1], retries=3, "
            "config={'dir': sys.argv[2], 'hold': {'1': 1}}).fit(ds)\n"
            "print(job.job_id, flush=True)\n"
            "import pathlib, time\nwhile not pathlib.Path(sys.argv[2], 'a1-e1').exists(): time.sleep(0.01)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = run_python(code, db_path, str(folder), check=False)
    assert proc.returncode == -signal.SIGKILL
    status = JobManager(db_path).fetch_job(proc.stdout.split()[0]).get_status()
    assert status["status"] == "FAILED"  # nobody can run its next attempt: never RUNNING for ever
    assert [a["why"] for a in status["result"]["attempts"]] == ["runner lost"]


# -- options, epochs, checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(("retries", "retry_on"), [
    (-1, ()), (True, ()), ("2", ()), (101, ()), (0, (ValueError,)), (1, (JobCanceled,)), (1, (KeyboardInterrupt,)),
    (1, ("ValueError",)), (1, "ValueError"), (1, (ValueError, 3)),
])
def test_bad_retry_options_are_refused_at_call_time(db_path: str, retries: Any, retry_on: Any) -> None:
    with pytest.raises(InvalidArgument):
        Trainer(retryfuncs.train_resumable, db=db_path, retries=retries, retry_on=retry_on)
    assert not os.path.exists(db_path)


def test_log_epoch_of_an_epoch_already_stored_replaces_it(db_path: str) -> None:
    def train(ctx: Any) -> None:
        for epoch, loss in ((1, 5.0), (2, 4.0), (1, 3.0)):
            ctx.log_epoch(epoch, train={"loss": loss})

    final = Trainer(train, db=db_path).fit(_ds()).wait(timeout=30)
    assert [(e["epoch"], e["train"]["loss"]) for e in final["result"]["epochs"]] == [(1, 3.0), (2, 4.0)]


def test_checkpoints_are_saved_atomically_and_the_latest_is_found(db_path: str, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 3_000_000)
    seen: dict[str, Any] = {}

    def train(ctx: Any) -> None:
        seen["before"] = ctx.latest_checkpoint()
        seen["attempt"], seen["resume"] = ctx.attempt, ctx.resume_epoch
        first = ctx.save_checkpoint(b"one")
        seen["first"] = (first.name, ctx.latest_checkpoint() == first, first.read_bytes())
        second = ctx.save_checkpoint(source)
        seen["second"] = (second.name, ctx.latest_checkpoint() == second, second.read_bytes() == source.read_bytes())
        seen["dir"] = sorted(p.name for p in ctx.checkpoint_dir.iterdir())  # no temp file left behind
        for bad in ("../x", ".hidden", "LATEST"):
            with pytest.raises(InvalidArgument):
                ctx.save_checkpoint(b"x", name=bad)
        with pytest.raises(InvalidArgument):
            ctx.save_checkpoint(tmp_path)  # a folder
        ctx.save_checkpoint(b"two", name="checkpoint")
        seen["replaced"] = ctx.latest_checkpoint().read_bytes()  # type: ignore[union-attr]

    assert Trainer(train, db=db_path).fit(_ds()).wait(timeout=30)["status"] == "COMPLETED"
    assert seen["before"] is None and seen["attempt"] == 1 and seen["resume"] is None
    assert seen["first"] == ("checkpoint", True, b"one")
    assert seen["second"] == ("weights.bin", True, True)
    assert seen["dir"] == ["LATEST", "checkpoint", "weights.bin"]
    assert seen["replaced"] == b"two"


def test_a_checkpoint_that_is_no_bytes_is_refused_saying_how_to_pass_it(db_path: str) -> None:
    """A state dict or an io.BytesIO (what torch.save writes to) was refused without a word on what to pass."""
    messages: list[str] = []

    def train(ctx: Any) -> None:
        for data in ({"weights": [1.0]}, io.BytesIO(b"state")):
            with pytest.raises(InvalidArgument) as info:
                ctx.save_checkpoint(data)
            messages.append(str(info.value))

    assert Trainer(train, db=db_path, runner="eager").fit(_ds()).get_status()["status"] == "COMPLETED"
    assert "not dict" in messages[0] and "save it to a file first" in messages[0]
    assert "not BytesIO" in messages[1] and "buffer.getvalue()" in messages[1]


# -- jobtrack retry ----------------------------------------------------------------------------------


def test_jobtrack_retry_of_a_failed_job_resumes_from_its_checkpoint(db_path: str, tmp_path: Path) -> None:
    folder = _marks(tmp_path)
    old = Trainer(retryfuncs.train_resumable, db=db_path, runner="worker",
                  config={"dir": str(folder), "fail_fresh": True}).fit(Dataset(
                      "d", "regression", "t", tables={"train": str(_csv(tmp_path))}))
    _worker_burst(db_path)
    assert old.get_status()["status"] == "FAILED"
    kept = old.log_path.parent / "checkpoints"
    (stale,) = killed_mid_write((kept, checkpoints.TEMP_KIND))  # the job was killed writing a checkpoint
    code, out, err = _cli("retry", old.job_id[:-2], "--db", db_path)  # a unique prefix names it
    assert code == 0, err
    new_id = out.split(":")[0]
    copied = JobManager(db_path).fetch_job(new_id).log_path.parent / "checkpoints"
    assert not stale.exists() and not [p for p in copied.iterdir() if p.name.startswith(".")]  # neither kept nor copied
    assert f"retry of {old.job_id}" in out and new_id != old.job_id
    assert "resuming after its 1 epoch(s) from checkpoint checkpoint" in out  # what it starts from, checked
    _worker_burst(db_path)
    manager = JobManager(db_path)
    final = manager.fetch_job(new_id).get_status()
    assert final["status"] == "COMPLETED", final["result"].get("error")
    assert final["result"]["summary"] == {"attempt": 1, "resume_epoch": 1, "restored": "0"}
    assert [e["epoch"] for e in final["result"]["epochs"]] == list(range(10))  # epoch 0 carried over, once
    assert final["model_run_id"] != old.model_run_id  # a new model run
    assert old.get_status()["status"] == "FAILED"  # the ended job stays ended
    assert manager.retry_links(new_id)["retry_of"] == old.job_id
    assert manager.retry_links(old.job_id)["retried_by"] == [new_id]
    code, shown, _ = _cli("show", old.job_id, "--db", db_path)
    assert code == 0 and f"retried by: {new_id}" in shown
    assert f"retry of: {old.job_id}" in _cli("show", new_id, "--db", db_path)[1]
    shutil.rmtree(old.log_path.parent / "checkpoints")  # a job that saved none
    code, out, err = _cli("retry", old.job_id, "--db", db_path)
    assert code == 0 and "with no checkpoint (it saved none)" in out, err
    shutil.rmtree(old.log_path.parent)  # as after a migrate: the job's folder stayed where it ran
    code, out, err = _cli("retry", old.job_id, "--db", db_path)
    assert code == 0 and "its folder is not here: a migrated or imported job's files stay where it ran" in out, err
    fresh = manager.retry(old.job_id, resume=False)  # from scratch: no epochs, no checkpoint, so it fails again
    _worker_burst(db_path)
    again = fresh.get_status()
    assert again["status"] == "FAILED" and again["result"]["error"]["message"] == "attempt 1 failed at epoch 0"
    assert [e["epoch"] for e in again["result"]["epochs"]] == [0]


def test_checkpoints_a_framework_saved_without_save_checkpoint_are_found_and_resumed_from(
    db_path: str, tmp_path: Path
) -> None:
    folder = _marks(tmp_path)
    old = Trainer(retryfuncs.train_saving_like_a_framework, db=db_path, runner="worker",
                  config={"dir": str(folder)}).fit(Dataset(
                      "d", "regression", "t", tables={"train": str(_csv(tmp_path))}))
    _worker_burst(db_path)
    assert old.get_status()["status"] == "FAILED"
    assert _marker(folder, f"found-{old.job_id}") == ""
    assert _marker(folder, f"saved-{old.job_id}") == "checkpoint-2"  # newest by mtime; hidden files skipped
    code, out, err = _cli("retry", old.job_id, "--db", db_path)
    assert code == 0, err
    assert "resuming after its 1 epoch(s) from checkpoint checkpoint-2" in out
    new_id = out.split(":")[0]
    _worker_burst(db_path)
    final = JobManager(db_path).fetch_job(new_id).get_status()
    assert final["status"] == "COMPLETED", final["result"].get("error")
    assert final["result"]["summary"] == {"resumed_from": "checkpoint-2", "is_dir": True}


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("x,y\n1.0,2.0\n", encoding="utf-8")
    return path


def _counts(db_path: str) -> tuple[int, int]:
    manager = JobManager(db_path)
    return len(manager.list_jobs(limit=None)), sum(len(j.events()) for j in manager.list_jobs(limit=None))


def test_retry_of_a_completed_running_or_in_process_job_is_a_typed_error_that_changes_nothing(
    db_path: str, tmp_path: Path
) -> None:
    folder = _marks(tmp_path)
    done = Trainer(retryfuncs.train_resumable, db=db_path, config={"dir": str(folder), "epochs": 1}).fit(_ds())
    assert done.wait(timeout=30)["status"] == "COMPLETED"
    failed = Trainer(retryfuncs.train_resumable, db=db_path, config={"dir": "/nonexistent"}).fit(_ds())
    assert failed.wait(timeout=30)["status"] == "FAILED"
    held = folder / "held"  # a folder of its own: `done` left an a1-e0 marker in `folder`
    held.mkdir()
    running = Trainer(retryfuncs.train_resumable, db=db_path, retries=1,
                      config={"dir": str(held), "hold": {"1": 0}}).fit(_ds())
    _marker(held, "a1-e0")
    before = _counts(db_path)
    manager = JobManager(db_path)
    for job, status in ((done, "COMPLETED"), (running, "RUNNING")):
        with pytest.raises(RetryNotAllowed) as info:
            manager.retry(job.job_id)
        assert info.value.status == status
        code, _, err = _cli("retry", job.job_id, "--db", db_path)
        assert code == 1 and f"is {status}; only a FAILED or CANCELED job can be retried" in err
    with pytest.raises(InvalidArgument, match="runner='thread'"):
        manager.retry(failed.job_id)  # its code lived in this process only
    assert _counts(db_path) == before
    assert not any(p.name not in (done.job_id, failed.job_id, running.job_id)
                   for p in (Path(db_path + "-files") / "jobs").iterdir())
    (held / "release-a1").touch()
    assert running.wait(timeout=30)["status"] == "COMPLETED"
