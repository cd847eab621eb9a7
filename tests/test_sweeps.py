"""Sweeps (#17): a real search on the demo model, resume, conflicts, pruning, cancel, every runner, the CLI."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import jobfuncs
import jobtrack
from jobtrack import Dataset, JobManager, JobStatus, RunContext, Trainer, cli, demo
from proc import spawn, wait_until

LRS = [0.01, 0.05, 0.2, 1.0]
L2S = [0.0, 0.01, 0.3]


def _best_metric(job: jobtrack.JobMonitor) -> float | None:
    return job.get_status()["result"].get("best_metric")


def _points(sweep: jobtrack.SweepMonitor, *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(t.config[k] for k in keys) for t in sweep.trials() if not t.void]


def test_a_grid_of_12_on_the_demo_model_runs_each_point_once_and_best_is_the_highest(
        db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 5}, provenance=False)
    sweep = trainer.sweep(dataset, {"lr": LRS, "l2": L2S}, sampler="grid", name="grid12")
    status = sweep.get_status()
    assert (status["done"], status["total"], status["counts"]["COMPLETED"]) == (12, 12, 12)
    assert sorted(_points(sweep, "lr", "l2")) == sorted((lr, l2) for lr in LRS for l2 in L2S)
    jobs = sweep.jobs()
    assert len(jobs) == 12 and all(j.job_type.value == "train" for j in jobs)
    values = {j.job_id: _best_metric(j) for j in jobs}
    best = sweep.best()
    assert best is not None and values[best.job_id] == max(values.values())
    assert status["best"]["job_id"] == best.job_id and status["best"]["metric"] == max(values.values())
    assert status["best"]["params"] == {k: status["best"]["config"][k] for k in ("l2", "lr")}
    assert len(set(values.values())) > 3  # the search is real: the configs train different models
    assert "grid12" in best.tags() and best.get_status()["status"] == "COMPLETED"
    json.dumps(status)
    # the same sweep again adds nothing: it is finished
    again = trainer.sweep(dataset, {"lr": LRS, "l2": L2S}, sampler="grid", name="grid12")
    assert again.sweep_id == sweep.sweep_id and len(again.jobs()) == 12


def test_a_random_search_of_20_is_reproducible_and_runs_in_parallel(tmp_path: Path, dataset: Dataset) -> None:
    space = {"lr": jobtrack.loguniform(1e-3, 1.0), "l2": jobtrack.uniform(0.0, 0.3), "epochs": 4}
    configs = []
    for db in ("a.db", "b.db"):
        trainer = Trainer(demo.train, db=str(tmp_path / db), runner="thread", provenance=False)
        sweep = trainer.sweep(dataset, space, n_trials=20, parallel=3, seed=11, name="rand20")
        status = sweep.wait(timeout=120)
        assert (status["done"], status["counts"]["COMPLETED"]) == (20, 20)
        trials = sweep.trials()
        assert [t.trial for t in trials] == list(range(20))
        configs.append([(t.config["lr"], t.config["l2"]) for t in trials])
        values = [(t.best_metric, t.job_id) for t in trials]
        best = sweep.best()
        assert best is not None and best.job_id == max(values)[1]
        assert _best_metric(best) == max(values)[0]
    assert configs[0] == configs[1]


def test_resume_rules_conflicts_and_bad_arguments(db_path: str, dataset: Dataset, tmp_path: Path) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 2}, provenance=False)
    trainer.sweep(dataset, {"lr": [0.1, 0.2]}, sampler="grid", name="s")
    with pytest.raises(jobtrack.SweepConflict, match="another space"):
        trainer.sweep(dataset, {"lr": [0.1, 0.3]}, sampler="grid", name="s")
    with pytest.raises(jobtrack.SweepConflict, match="another sampler"):
        trainer.sweep(dataset, {"lr": [0.1, 0.2]}, n_trials=2, name="s")
    other = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3}, provenance=False)
    with pytest.raises(jobtrack.SweepConflict, match=r"another Trainer config \({'epochs': 2}, not {'epochs': 3}\)"):
        other.sweep(dataset, {"lr": [0.1, 0.2]}, sampler="grid", name="s")  # its trials would not compare
    swept = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 2, "lr": 9.0}, provenance=False)
    swept.sweep(dataset, {"lr": [0.1, 0.2]}, sampler="grid", name="s")  # lr is the space's in every trial: no conflict
    renamed = Dataset("another", "binary_classification", "m1", tables=demo.write_csv_tables(tmp_path / "d2", n=30))
    with pytest.raises(jobtrack.SweepConflict, match="another experiment"):
        trainer.sweep(renamed, {"lr": [0.1, 0.2]}, sampler="grid", name="s")
    assert len(jobtrack.JobManager(db_path).fetch_sweep("s").trials()) == 2  # nothing was added
    bad: list[dict[str, Any]] = [
        {"space": {"lr": jobtrack.uniform(0, 1)}, "sampler": "grid"},  # ranges have no grid
        {"space": {"lr": [1, 2]}, "sampler": "grid", "n_trials": 3},  # a grid point never runs twice
        {"space": {"lr": [1, 2]}},  # random needs n_trials
        {"space": {"lr": [1, 2]}, "n_trials": 2, "sampler": "bayes"},
        {"space": {"lr": [1, 2]}, "n_trials": 2, "parallel": 2},  # eager runs one at a time
        {"space": {"lr": [1, 2]}, "n_trials": 0},
        {"space": {"lr": [1, 2]}, "n_trials": 2, "name": "../x"},
        {"space": {"lr": [1, 2]}, "n_trials": 2, "prune": "mean"},
        {"space": {"lr": [1, 2]}, "n_trials": 2, "seed": "x"},
    ]
    for kwargs in bad:
        with pytest.raises(jobtrack.InvalidArgument):
            trainer.sweep(dataset, **kwargs)
    manager = JobManager(db_path)
    assert [s.name for s in manager.list_sweeps()] == ["s"]  # nothing was written by the refused calls
    assert len(manager.list_jobs()) == 2
    assert manager.fetch_sweep("s").sweep_id == manager.fetch_sweep(manager.fetch_sweep("s").sweep_id).sweep_id
    with pytest.raises(jobtrack.SweepNotFound):
        manager.fetch_sweep("nope")
    odd = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 2, "obj": object()}, provenance=False)
    odd.sweep(dataset, {"lr": [0.1]}, sampler="grid", name="odd")  # unstorable values, stored as their repr
    trainer.sweep(dataset, {"lr": [0.1, 0.2, 0.3]}, sampler="grid", n_trials=1, name="part")
    with pytest.raises(jobtrack.SweepConflict, match=r"n_trials=1, not 3 \(the whole grid\)"):
        trainer.sweep(dataset, {"lr": [0.1, 0.2, 0.3]}, sampler="grid", name="part")  # it did nothing, silently
    assert len(trainer.sweep(dataset, {"lr": [0.1, 0.2, 0.3]}, sampler="grid", n_trials=1, name="part").trials()) == 1
    again = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 2, "obj": object()}, provenance=False)
    again.sweep(dataset, {"lr": [0.1]}, sampler="grid", name="odd")  # another object: compared by its type only



def _scripted(ctx: RunContext) -> dict[str, Any]:
    """A trial whose validation metric is ``config["score"]`` at every epoch (a deterministic bad config)."""
    for epoch in range(1, 5):
        ctx.log_epoch(epoch, validation={"roc_auc": float(ctx.config["score"])})
    return {"score": ctx.config["score"]}


def test_median_pruning_stops_a_clearly_worse_trial_with_the_reason(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(_scripted, db=db_path, runner="eager", provenance=False)
    sweep = trainer.sweep(dataset, {"score": [0.9, 0.8, 0.88, 0.1]}, sampler="grid", name="p", prune="median")
    by_score = {t.config["score"]: t for t in sweep.trials()}
    bad = by_score[0.1]
    assert (bad.status, bad.reason) == (JobStatus.CANCELED, "pruned at epoch 1")
    assert all(by_score[s].status is JobStatus.COMPLETED for s in (0.9, 0.8, 0.88))
    events = JobManager(db_path).fetch_job(bad.job_id).events()
    assert [(e.to_status, e.reason) for e in events][-1] == (JobStatus.CANCELED, "pruned at epoch 1")
    status = sweep.get_status()
    assert (status["done"], status["counts"]["CANCELED"], status["best"]["metric"]) == (4, 1, 0.9)


_HOLD = threading.Event()  # while set, a _held trial runs until it is canceled


def _held(ctx: RunContext) -> dict[str, Any]:
    """A trial that reports one epoch, then (while _HOLD is set) runs until a cancel is requested."""
    ctx.log_epoch(0, validation={"roc_auc": float(ctx.config["lr"])})
    while _HOLD.is_set() and not ctx.cancel_requested:
        time.sleep(0.02)
    return {"lr": ctx.config["lr"]}


def test_cancel_stops_the_sweep_and_the_same_name_resumes_it(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(_held, db=db_path, runner="thread", config={"epochs": 2}, provenance=False)
    space = {"lr": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
    _HOLD.set()
    try:
        sweep = trainer.sweep(dataset, space, sampler="grid", parallel=2, name="c")
        wait_until(lambda: sweep.get_status()["counts"]["RUNNING"] == 2, message="two trials running")
        sweep.cancel()
        for bad in ({"timeout": "x"}, {"timeout": -1}, {"poll_interval": 0}):
            with pytest.raises(jobtrack.InvalidArgument, match="must be a number of seconds"):
                sweep.wait(**bad)  # type: ignore[arg-type]
        status = sweep.wait(timeout=60)
    finally:
        _HOLD.clear()
    assert status["counts"]["CANCELED"] == 2 and len(sweep.trials()) == 2
    assert {t.reason for t in sweep.trials()} == {"sweep canceled"}
    status = trainer.sweep(dataset, space, sampler="grid", parallel=2, name="c").wait(timeout=60)
    # the canceled trials' points run again: canceled by the sweep is no verdict on their config
    assert (status["done"], status["counts"]["COMPLETED"], status["counts"]["CANCELED"]) == (6, 6, 2)
    assert status["replaced"] == 2 and sorted(_points(sweep, "lr")) == [(v,) for v in space["lr"]]


def _seen(ctx: RunContext) -> dict[str, Any]:
    """A trial that reports the config its code received, and scores the nested depth."""
    ctx.log_epoch(0, validation={"roc_auc": ctx.config["model"]["depth"] / 10})
    return {"seen": ctx.config}


def test_a_dotted_space_key_sets_the_nested_value_of_the_trainer_config(db_path: str, dataset: Dataset,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = {"model": {"depth": 3, "width": 8}, "lr": 0.1}
    trainer = Trainer(_seen, db=db_path, runner="eager", config=base, provenance=False)
    sweep = trainer.sweep(dataset, {"model.depth": [2, 4]}, sampler="grid", name="nested")
    seen = [t.config for t in sweep.trials()]
    assert seen == [{"model": {"depth": 2, "width": 8}, "lr": 0.1}, {"model": {"depth": 4, "width": 8}, "lr": 0.1}]
    assert [JobManager(db_path).fetch_job(t.job_id).get_status()["result"]["summary"]["seen"]
            for t in sweep.trials()] == seen  # what the code read is what is stored
    assert base == {"model": {"depth": 3, "width": 8}, "lr": 0.1}  # the Trainer's own config is untouched
    deep = JobManager(db_path).list_jobs(where="config.model.depth = 4")
    assert [j.job_id for j in deep] == [sweep.trials()[1].job_id]
    assert sweep.get_status()["best"]["params"] == {"model.depth": 4}
    assert cli.main(["sweep", "show", "nested", "--db", db_path]) == 0
    header, first = capsys.readouterr().out.splitlines()[1:3]  # after the sweep's line: ranked, best first
    assert header.split()[4] == "model.depth" and first.split()[4] == "4"


def test_trials_record_provenance_as_any_job_unless_the_trainer_opts_out(db_path: str, dataset: Dataset) -> None:
    recorded = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 1})
    plain = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 1}, provenance=False)
    with_it = recorded.sweep(dataset, {"lr": [0.1, 0.2]}, sampler="grid", name="prov")
    without = plain.sweep(dataset, {"lr": [0.1]}, sampler="grid", name="noprov")
    manager = JobManager(db_path)
    facts = [manager.fetch_job(t.job_id).provenance() for t in with_it.trials()]
    assert all(f and f.get("python") for f in facts), facts  # git too when the tests run in a checkout
    assert [manager.fetch_job(t.job_id).provenance() for t in without.trials()] == [None]
    rows = manager.compare([t.job_id for t in with_it.trials()], show_all=True).rows
    assert [r.key for r in rows if r.section == "provenance" and not all(r.present)] == []  # nothing "(absent)"


def test_parallel_4_with_the_process_runner_runs_no_trial_twice(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="process", config={"epochs": 3}, provenance=False)
    sweep = trainer.sweep(dataset, {"lr": LRS, "l2": L2S}, sampler="grid", parallel=4, name="proc")
    status = sweep.wait(timeout=120)
    assert (status["done"], status["counts"]["COMPLETED"]) == (12, 12)
    assert Counter(_points(sweep, "lr", "l2")).most_common(1)[0][1] == 1


def test_a_point_that_crashes_its_process_runner_child_fails_once_and_the_grid_goes_on(db_path: str,
                                                                                      dataset: Dataset) -> None:
    trainer = Trainer(jobfuncs.train_oom_at_512, db=db_path, runner="process", provenance=False)
    sweep = trainer.sweep(dataset, {"bs": [512, 32, 64, 128]}, sampler="grid", name="oom")
    status = sweep.wait(timeout=120)
    assert (status["done"], status["total"], status["replaced"]) == (4, 4, 0)
    assert status["counts"]["COMPLETED"] == 3 and status["counts"]["FAILED"] == 1
    assert status["best"]["params"] == {"bs": 128}
    crashed = [t for t in sweep.trials() if t.config["bs"] == 512]
    assert len(crashed) == 1 and crashed[0].reason == "runner process killed by signal SIGKILL"
    again = trainer.sweep(dataset, {"bs": [512, 32, 64, 128]}, sampler="grid", name="oom")
    assert again.wait(timeout=60)["done"] == 4 and len(again.trials()) == 4  # resuming does not run it again


WORKER = "import sys\nfrom jobtrack import cli\nsys.exit(cli.main(sys.argv[1:]))\n"


def test_two_workers_run_a_parallel_sweep_with_no_trial_twice_and_none_stuck(db_path: str, dataset: Dataset) -> None:
    trainer = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 3}, provenance=False)
    with spawn(WORKER, "worker", "--db", db_path, "--concurrency", "2") as w1, \
            spawn(WORKER, "worker", "--db", db_path, "--concurrency", "2") as w2:
        sweep = trainer.sweep(dataset, {"lr": LRS, "l2": L2S}, sampler="grid", parallel=4, name="workers")
        status = sweep.wait(timeout=120)
        assert w1.poll() is None and w2.poll() is None
    assert (status["done"], status["counts"]["COMPLETED"]) == (12, 12)
    assert Counter(_points(sweep, "lr", "l2")).most_common(1)[0][1] == 1
    assert JobManager(db_path).list_jobs(status=["QUEUED", "RUNNING"]) == []


def test_the_cli_runs_shows_and_lists_a_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "clisweep.py").write_text(
        "from jobtrack import Dataset, Trainer, demo\n"
        f"tables = demo.write_csv_tables({str(folder)!r}, n=60)\n"
        "dataset = Dataset('churn', 'binary_classification', 'm1', tables=tables)\n"
        "trainer = Trainer(demo.train, config={'epochs': 2}, provenance=False)\n")
    monkeypatch.syspath_prepend(str(folder))
    db = str(tmp_path / "cli.db")
    code = cli.main(["sweep", "run", "clisweep:trainer", "--db", db, "--space", "lr=[0.1, 0.5]; l2=[0, 0.1]",
                     "--sampler", "grid", "--parallel", "2", "--name", "clis"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sweep clis: 4/4 done" in out and "best: trial" in out
    assert cli.main(["sweep", "show", "clis", "--db", db]) == 0
    shown = capsys.readouterr().out
    assert shown.count("COMPLETED") == 4 and "rank" in shown
    assert cli.main(["sweep", "list", "--db", db]) == 0
    assert "clis: 4/4 done" in capsys.readouterr().out
    assert cli.main(["sweep", "show", "clis", "--json", "--db", db]) == 0
    assert len(json.loads(capsys.readouterr().out)["trials"]) == 4
    assert cli.main(["sweep", "run", "clisweep:trainer", "--db", db, "--space", "lr=evil()"]) == 2
    assert "not a number" in capsys.readouterr().err
    assert cli.main(["sweep", "run", "clisweep:trainer", "--db", db, "--space", "lr=[0.1, 0.5]"]) == 2
    assert capsys.readouterr().err == ("jobtrack: error: --sampler random needs --trials N (how many trials to run); "
                                       "or run every point of this space once with --sampler grid.\n")


def test_sweep_run_refuses_a_db_that_is_not_the_trainers_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    own = tmp_path / "own.db"
    (folder / "ownsweep.py").write_text(
        "from jobtrack import Dataset, Trainer, demo\n"
        f"tables = demo.write_csv_tables({str(folder)!r}, n=60)\n"
        "dataset = Dataset('churn', 'binary_classification', 'm1', tables=tables)\n"
        f"trainer = Trainer(demo.train, db={str(own)!r}, config={{'epochs': 2}}, provenance=False)\n")
    monkeypatch.syspath_prepend(str(folder))
    other = str(tmp_path / "other.db")
    code = cli.main(["sweep", "run", "ownsweep:trainer", "--db", other, "--space", "lr=[0.1, 0.5]",
                     "--sampler", "grid", "--name", "where"])
    err = capsys.readouterr().err
    assert code == 2 and str(own) in err and other in err, err
    assert JobManager(str(own)).list_sweeps() == []  # nothing ran where --db did not say
    assert cli.main(["sweep", "run", "ownsweep:trainer", "--db", str(own), "--space", "lr=[0.1, 0.5]",
                     "--sampler", "grid", "--name", "where"]) == 0  # the Trainer's own database is fine
    assert "sweep where: 2/2 done" in capsys.readouterr().out


def test_an_optuna_sampler_and_pruner_work_through_ask_and_tell(db_path: str, dataset: Dataset) -> None:
    optuna = pytest.importorskip("optuna")
    trainer = Trainer(demo.train, db=db_path, runner="eager", config={"epochs": 3}, provenance=False)
    space = {"lr": jobtrack.loguniform(1e-3, 1.0), "l2": [0.0, 0.1]}
    sweep = trainer.sweep(dataset, space, n_trials=6, sampler=optuna.samplers.TPESampler(seed=1), name="tpe")
    assert sweep.get_status()["done"] == 6 and sweep.spec["sampler"] == "optuna:TPESampler"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    scripted = Trainer(_scripted, db=db_path, runner="eager", provenance=False)
    pruned = scripted.sweep(dataset, {"score": [0.9, 0.8, 0.1]}, sampler="grid", name="op", prune=pruner)
    assert [t.reason for t in pruned.trials()][-1] == "pruned at epoch 1"


def test_import_jobtrack_does_not_import_optuna() -> None:
    from proc import run_python

    run_python("import sys, jobtrack\njobtrack.uniform(0, 1)\nassert 'optuna' not in sys.modules\n"
               "assert 'jobtrack.sweep' not in sys.modules\n")
    assert "jobtrack" in sys.modules


def test_grid_and_random_sweeps_on_sqlite_and_postgresql(any_db: str, dataset: Dataset) -> None:
    trainer = Trainer(_scripted, db=any_db, runner="thread", provenance=False)
    grid = trainer.sweep(dataset, {"score": [0.1, 0.2, 0.3, 0.4]}, sampler="grid", parallel=2, name="g")
    rand = trainer.sweep(dataset, {"score": jobtrack.uniform(0, 1)}, n_trials=5, parallel=2, seed=3, name="r")
    assert grid.wait(timeout=60)["done"] == 4 and rand.wait(timeout=60)["done"] == 5
    assert sorted(t.config["score"] for t in grid.trials()) == [0.1, 0.2, 0.3, 0.4]
    best = grid.best()
    assert best is not None and best.get_status()["result"]["summary"] == {"score": 0.4}
    assert [t.trial for t in rand.trials()] == list(range(5))


def test_a_worker_run_trial_is_pruned_by_the_sweeps_driver(db_path: str, dataset: Dataset) -> None:
    # lr < 0 climbs the loss: clearly worse than the others from the first epochs on, deterministically
    trainer = Trainer(demo.train, db=db_path, runner="worker", config={"epochs": 12, "epoch_pause_s": 0.05},
                      provenance=False)
    with spawn(WORKER, "worker", "--db", db_path):
        sweep = trainer.sweep(dataset, {"lr": [0.6, 0.8, 1.0, -1.0]}, sampler="grid", name="wp", prune="median")
        status = sweep.wait(timeout=120)
    bad = next(t for t in sweep.trials() if t.config["lr"] == -1.0)
    assert bad.status is JobStatus.CANCELED and (bad.reason or "").startswith("pruned at epoch "), bad
    assert status["done"] == 4 and status["counts"]["COMPLETED"] == 3


def _lr_trial(ctx: RunContext) -> dict[str, Any]:
    """A trial that scores its learning rate."""
    ctx.log_epoch(0, validation={"roc_auc": ctx.config["lr"]})
    return {}


def test_a_space_built_with_numpy_sweeps_as_its_plain_values(db_path: str, dataset: Dataset) -> None:
    np = pytest.importorskip("numpy")
    trainer = Trainer(_lr_trial, db=db_path, runner="eager", config={"epochs": np.int64(2)}, provenance=False)
    sweep = trainer.sweep(dataset, {"lr": np.logspace(-2, 0, 3), "depth": range(2, 6, 2), "act": np.str_("relu")},
                          sampler="grid", name="np-grid")
    assert sweep.wait()["done"] == 6
    points = sorted((t.config["lr"], t.config["depth"]) for t in sweep.trials())
    assert points == sorted((lr, d) for lr in (0.01, 0.1, 1.0) for d in (2, 4))
    assert all(type(t.config["lr"]) is float and type(t.config["depth"]) is int for t in sweep.trials())
    ranged = trainer.sweep(dataset, {"lr": jobtrack.uniform(np.float32(0.5), np.float64(1.0)),
                                     "depth": jobtrack.randint(np.int64(1), np.int64(3))},
                           n_trials=np.int64(3), seed=1, name="np-range")
    assert ranged.wait()["done"] == 3
    assert all(0.5 <= t.config["lr"] < 1.0 and t.config["depth"] in (1, 2, 3) for t in ranged.trials())
    with pytest.raises(jobtrack.InvalidArgument, match="2-d"):
        trainer.sweep(dataset, {"lr": np.ones((2, 2))}, sampler="grid", name="np-2d")


def _no_eval_metric(ctx: RunContext) -> None:
    ctx.log_epoch(0, train={"loss": 0.5})


def test_sweep_show_says_why_no_trial_is_best(db_path: str, dataset: Dataset,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(_no_eval_metric, db=db_path, runner="eager", provenance=False).sweep(
        dataset, {"lr": [0.1, 0.2]}, sampler="grid", name="unranked")
    assert cli.main(["sweep", "show", "unranked", "--db", db_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2/2 done" in lines[0] and "no best: no trial reported roc_auc" in lines[0] and "eval_metric" in lines[0]
    assert all(line == line.rstrip() for line in lines)  # no trailing blanks to trip a diff
