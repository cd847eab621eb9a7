"""Issue 21, defects 4-6 (and `--db /dev/null` of 7): every hostile input is exact or refused with a typed error.

Values are stored exactly (integers beyond 64 bits) or made storable (lone surrogates); bad arguments
raise a typed ``JobtrackError`` naming the value and the fix, and change nothing on disk; the CLI
prints one line; directories jobtrack creates for exports are private whatever the umask.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobtrack import (
    Dataset,
    InvalidArgument,
    JobManager,
    NotAJobtrackDatabase,
    NotSerializable,
    Trainer,
    cli,
    config,
    jsonutil,
    testing,
)
from jobtrack.context import RunContext
from jobtrack.store import Store
from proc import child_env, run_python
from rows import job_in

BIG = {"n": -(2**63) - 1, "m": 2**64, "k": 10**30, "edge": [2**63 - 1, -(2**63), 2**64 - 1]}
"""Integers just outside (and at the edges of) what orjson reads as integers."""

SURROGATE_NAME = os.fsdecode(b"data_\xff.csv")
"""What a file name that is not UTF-8 becomes in Python: 'data_\\udcff.csv'."""


# -- defect 4: numbers exact ------------------------------------------------------------------------


def check_integers_beyond_64_bits_round_trip_exactly() -> None:
    text = jsonutil.dumps(BIG, "summary")
    back = jsonutil.loads(text)
    assert back == BIG
    assert all(type(v) is int for v in [back["n"], back["m"], back["k"], *back["edge"]])


def test_ordinary_values_stay_on_the_fast_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    # long fractions (0.00123...: 19 digits in a row) and 64-bit integers are not integers beyond 64 bits:
    # their text must not be sent to the slow exact decoder (nor digits inside a word of a string; after a
    # space or a colon they are treated as a possible integer, which costs only speed)
    value = {"loss": 0.0012345678901234567, "n": [2**63 - 1, -(2**63), 2**64 - 1], "s": "run_12345678901234567890",
             "none": None}  # None: encoded by the standard path, which is the one that marks long integers
    text = jsonutil.dumps(value, "v")
    assert "orjson" in sys.modules, "the dev environment installs the fast extra; its path must be tested"

    class NoStandardDecoder:
        @staticmethod
        def loads(text: str) -> Any:
            raise AssertionError(f"the standard decoder read {text[:40]!r}")

    monkeypatch.setattr(jsonutil, "json", NoStandardDecoder)
    assert jsonutil.loads(text) == value


def test_a_big_integer_summary_reads_back_exactly_in_a_fresh_read(db_path: str) -> None:
    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(1, train={"count": 2**70}, validation={"rmse": 1.0})
        return dict(BIG)

    job = Trainer(train, db=db_path, runner="eager").fit(_dataset())
    testing.assert_completed(job)
    assert job.get_status()["result"]["summary"] == BIG
    fresh = run_python(  # another process, with orjson: prints the status as exact JSON
        "import json, sys; from jobtrack import JobManager; assert 'orjson' in sys.modules; "
        "print(json.dumps(JobManager(sys.argv[1]).fetch_job(sys.argv[2]).get_status()))", db_path, job.job_id)
    status = json.loads(fresh.stdout)
    assert status["result"]["summary"] == BIG
    assert status["result"]["epochs"][0]["train"] == {"count": 2**70}


# -- defect 5: values that cannot be stored as they are -----------------------------------------------


def check_a_value_that_contains_itself_is_refused_naming_the_field() -> None:
    loop: dict[str, Any] = {"lr": 0.1}
    loop["self"] = {"inner": [1, loop]}
    chain: list[Any] = [1]
    chain.append(chain)
    for value, where in ((loop, "config['self']['inner'][1]"), (chain, "config[1]")):
        with pytest.raises(NotSerializable) as info:
            jsonutil.dumps(value, "config")
        assert info.value.field == "config"
        assert where in str(info.value) and "contains itself" in str(info.value)


def check_a_value_nested_beyond_the_recursion_limit_is_refused() -> None:
    deep: list[Any] = []
    tip = deep
    for _ in range(5000):
        tip.append([])
        tip = tip[0]
    with pytest.raises(NotSerializable, match="nested deeper"):
        jsonutil.dumps(deep, "summary")


def check_a_shared_but_acyclic_value_is_still_encoded() -> None:
    shared = [1, 2]
    assert jsonutil.loads(jsonutil.dumps({"a": shared, "b": [shared, None]}, "v")) == {"a": [1, 2], "b": [[1, 2], None]}


def check_lone_surrogates_are_stored_as_utf8_backslash_text() -> None:
    value = {"name": f"bad {SURROGATE_NAME} byte", SURROGATE_NAME: ["é", None, "ok"]}
    text = jsonutil.dumps(value, "summary")
    text.encode("utf-8")  # what the database layer does: it must not raise
    back = jsonutil.loads(text)
    assert back == {"name": "bad data_\\udcff.csv byte", "data_\\udcff.csv": ["é", None, "ok"]}


JSON_CHECKS = [
    check_integers_beyond_64_bits_round_trip_exactly,
    check_a_value_that_contains_itself_is_refused_naming_the_field,
    check_a_value_nested_beyond_the_recursion_limit_is_refused,
    check_a_shared_but_acyclic_value_is_still_encoded,
    check_lone_surrogates_are_stored_as_utf8_backslash_text,
]
"""Checks of jsonutil run on both of its paths: with orjson (here) and with the standard library only (a child)."""


@pytest.mark.parametrize("check", JSON_CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_json_with_the_fast_extra(check: Callable[[], None]) -> None:
    assert "orjson" in sys.modules, "the dev environment installs the fast extra; its path must be tested"
    check()


def test_json_without_the_fast_extra(tmp_path: Path) -> None:
    (tmp_path / "orjson.py").write_text("raise ImportError('fast extra not installed')\n", encoding="utf-8")
    code = (
        "import importlib.util, sys\n"
        "import jobtrack.jsonutil\n"
        "assert 'orjson' not in sys.modules  # the blocker's import failed: only the standard path is left\n"
        "spec = importlib.util.spec_from_file_location('inputs_child', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "for check in module.JSON_CHECKS:\n"
        "    check()\n"
        "    print(check.__name__)\n"
    )
    out = run_python(code, __file__, PYTHONPATH=os.pathsep.join((str(tmp_path), child_env()["PYTHONPATH"])))
    assert out.stdout.split() == [check.__name__ for check in JSON_CHECKS]


def test_log_and_export_with_surrogates_complete_the_job(db_path: str, tmp_path: Path) -> None:
    def predict(ctx: RunContext) -> dict[str, Any]:
        ctx.log(f"reading {SURROGATE_NAME}")
        ctx.export("predictions", [{"file": SURROGATE_NAME, f"p_{SURROGATE_NAME}": 0.5}])
        return {"name": SURROGATE_NAME}

    out = tmp_path / "out"
    job = Trainer(_train_one_epoch, predict, db=db_path, runner="eager").fit_predict(
        _dataset(), "surrogates", output_config={"directory": str(out)})
    status = testing.assert_completed(job)
    assert status["result"]["summary"]["predict"] == {"name": "data_\\udcff.csv"}
    assert testing.exported_rows(job) == [{"file": "data_\\udcff.csv", "p_data_\\udcff.csv": 0.5}]
    assert "data_\\udcff.csv" in (out / "surrogates_predictions.csv").read_text(encoding="utf-8")
    log_text = Path(Store.open(db_path).job_dir(job.job_id), "log.txt").read_text(encoding="utf-8")
    assert "reading data_\\udcff.csv" in log_text


def test_an_unwritable_log_never_fails_the_job(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[BaseException] = []

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log("first line")
        ctx.log_path.unlink()
        ctx.log_path.mkdir()  # EISDIR from now on: unwritable even for root, unlike a chmod
        for i in range(3):
            try:
                ctx.log(f"line {i}")
            except BaseException as exc:  # noqa: BLE001 - the point: nothing may reach the job's code
                seen.append(exc)
        ctx.log_epoch(1, train={"loss": 1.0}, validation={"rmse": math.nan})  # logs the NaN: must not fail
        return {"ok": True}

    with caplog.at_level(logging.WARNING, logger="jobtrack.joblog"):
        job = Trainer(train, db=db_path, runner="eager").fit(_dataset())
    testing.assert_completed(job)
    assert seen == []
    warnings = [r for r in caplog.records if r.name == "jobtrack.joblog" and "cannot write its log" in r.message]
    assert len(warnings) == 1 and job.job_id in warnings[0].message


@pytest.mark.parametrize("epoch", [2**63, -(2**63) - 1, 10**30])
def test_an_epoch_beyond_64_bits_is_refused_and_nothing_is_stored(db_path: str, epoch: int) -> None:
    caught: list[BaseException] = []

    def train(ctx: RunContext) -> dict[str, Any]:
        ctx.log_epoch(2**63 - 1, train={"loss": 1.0})  # the largest that fits is fine
        try:
            ctx.log_epoch(epoch, train={"loss": 1.0})
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions below
            caught.append(exc)
        return {}

    job = Trainer(train, db=db_path, runner="eager").fit(_dataset())
    status = testing.assert_completed(job)
    assert len(caught) == 1 and isinstance(caught[0], InvalidArgument)
    assert str(epoch) in str(caught[0]) and "64-bit" in str(caught[0])
    assert [e["epoch"] for e in status["result"]["epochs"]] == [2**63 - 1]


# -- defect 5: typed errors for bad arguments, nothing changed ------------------------------------------


@pytest.mark.parametrize("db", [5, 2.5, b"jobs.db", ["jobs.db"]])
def test_a_db_that_is_not_a_path_is_refused(db: Any, tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    for make in (lambda: JobManager(db=db), lambda: Trainer(_train_one_epoch, db=db)):
        with pytest.raises(InvalidArgument, match=r"not a database path or URL|bytes path") as info:
            make()
        assert "str or pathlib.Path" in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_nul_byte_in_the_database_path_is_refused(tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidArgument, match="NUL byte"):
        Trainer(_train_one_epoch, db=str(tmp_path / "a\x00b.db")).fit(_dataset())
    assert sorted(tmp_path.rglob("*")) == before


def test_a_nul_byte_in_the_export_directory_is_refused_before_anything_is_written(db_path: str,
                                                                                  tmp_path: Path) -> None:
    trainer = Trainer(_train_one_epoch, _predict_nothing, db=db_path, runner="eager")
    model = trainer.fit(_dataset())
    before = [j.job_id for j in JobManager(db_path).list_jobs()]
    for directory in (str(tmp_path / "ex\x00ports"), 5, os.fsdecode(str(tmp_path / "ex").encode() + b"\xff")):
        with pytest.raises(InvalidArgument, match=r"export directory|output_config\['directory'\]"):
            trainer.predict("nul_alias", output_config={"directory": directory}, model_run_id=model.model_run_id)
    assert [j.job_id for j in JobManager(db_path).list_jobs()] == before
    assert not any(p.name.startswith("ex") for p in tmp_path.iterdir())


@pytest.mark.parametrize("timeout", ["5", float("nan"), -1, True, [1]])
def test_wait_refuses_a_timeout_that_is_not_a_number_of_seconds(db_path: str, timeout: Any) -> None:
    job = Trainer(_train_one_epoch, db=db_path, runner="eager").fit(_dataset())
    with pytest.raises(InvalidArgument, match="timeout must be a number of seconds") as info:
        job.wait(timeout=timeout)
    assert repr(timeout) in str(info.value)


def test_wait_refuses_a_poll_interval_that_is_not_positive(db_path: str) -> None:
    job = Trainer(_train_one_epoch, db=db_path, runner="eager").fit(_dataset())
    for bad in (0, -1.0, float("nan"), "0.1"):
        with pytest.raises(InvalidArgument, match="poll_interval"):
            job.wait(timeout=1, poll_interval=bad)  # type: ignore[arg-type]
    assert job.wait(timeout=float("inf"))["status"] == "COMPLETED"  # no deadline is allowed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tables": "x.csv"}, "tables must map split names"),
        ({"tables": ["train.csv"]}, "tables must map split names"),
        ({"task_type": ["regression"]}, "Unknown task_type"),
        ({"task_type": None}, "Unknown task_type"),
        ({"tables": {"train": "a\x00.csv"}}, "not a usable file name"),
        ({"tables": {("train",): [{"x": 1}]}}, "Unknown table"),
    ],
)
def test_dataset_arguments_of_the_wrong_kind_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "d", "task_type": "regression", "task_name": "t", **kwargs}
    with pytest.raises(InvalidArgument, match=message):
        Dataset(**args)


def test_a_file_path_containing_a_scheme_separator_is_a_path(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    odd = str(tmp_path / "x://y.db")
    assert not config.is_url(odd)
    job = Trainer(_train_one_epoch, db=odd, runner="eager").fit(_dataset())
    testing.assert_completed(job)
    assert (tmp_path / "x:" / "y.db").is_file()
    assert cli.main(["list", "--json", "--db", odd]) == 0
    assert job.job_id in capsys.readouterr().out
    assert config.is_url("postgresql+psycopg://u@h/db") and config.is_url("sqlite:///x.db")
    assert not config.is_url("x.db") and not config.is_url("./a://b")


def test_a_url_of_an_unknown_database_is_refused_without_its_password() -> None:
    with pytest.raises(InvalidArgument, match="Cannot use the database URL") as info:
        JobManager(db="nosuchdb+driver://me:s3cret@host/db")
    assert "s3cret" not in str(info.value) and "me:***@host" in str(info.value)


# -- defect 7: a path that exists and is not a regular file ---------------------------------------------


def test_dev_null_and_other_special_files_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    for special in ("/dev/null", str(tmp_path), str(fifo)):
        with pytest.raises(NotAJobtrackDatabase, match="not a regular file"):
            config.resolve_db(special)
        with pytest.raises(NotAJobtrackDatabase, match="not a regular file"):
            config.resolve_db(f"sqlite:///{special}")
    lock_existed = os.path.exists("/dev/null.lock")
    with pytest.raises(NotAJobtrackDatabase, match="character device"):
        Trainer(_train_one_epoch, db="/dev/null", runner="eager").fit(_dataset())
    assert os.path.exists("/dev/null.lock") == lock_existed
    with pytest.raises(NotAJobtrackDatabase, match="directory"):
        JobManager(db=str(tmp_path)).list_jobs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.db"]


# -- the CLI: one line, exit 1, the database byte-identical ---------------------------------------------


@pytest.fixture
def done_db(db_path: str) -> str:
    """A database holding one COMPLETED job ``j_done``, closed so its main file holds everything."""
    store = Store.open(db_path)
    job_in(store, "j_done", "COMPLETED")
    store.close()
    return db_path


def _snapshot(folder: Path) -> dict[str, bytes]:
    # SQLite's own -wal/-shm files may appear when a reader opens the file; everything else must not change
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--since", "99999999d"], "reaches back before the year 1"),
        (["list", "--since", "9" * 400 + "d"], "reaches back before the year 1"),
        (["list", "--until", "0001-01-01"], "outside the years 1-9999"),
        (["list", "--since", "0001-01-01"], "outside the years 1-9999"),
        (["list", "--limit", "100000000000000000000"], "--limit must be a positive integer no larger than"),
        (["prune", "--older-than", "99999999999d"], "reaches back before the year 1"),
        (["prune", "--older-than", "99999999999d", "--dry-run"], "reaches back before the year 1"),
        (["wait", "j_done", "--timeout", "nan"], "--timeout must be a number of seconds"),
    ],
)
def test_cli_hostile_arguments_print_one_line_and_change_nothing(
    done_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = _snapshot(tmp_path)
    code = cli.main([*argv, "--db", done_db])
    err = capsys.readouterr().err
    assert code == 2, err  # a bad argument (#13)
    assert err.startswith("jobtrack: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("{tmp}/a\x00b.db", "NUL byte"),
        ("{tmp}/adir", "not a regular file"),
        ("nosuchdb://h/db", "Cannot use the database URL"),
    ],
)
def test_cli_hostile_db_paths_print_one_line_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db: str, message: str
) -> None:
    (tmp_path / "adir").mkdir()
    before = sorted(tmp_path.rglob("*"))
    code = cli.main(["list", "--db", db.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert code == (1 if message == "not a regular file" else 2), err  # 2: a bad argument (#13)
    assert err.startswith("jobtrack: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


# -- defect 6: private directories and files whatever the umask -----------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_export_directories_are_0700_and_files_0600_whatever_the_umask(db_path: str, tmp_path: Path,
                                                                      umask: int) -> None:
    def predict(ctx: RunContext) -> dict[str, Any]:
        ctx.export("predictions", [{"id": 1, "p": 0.5}])
        return {}

    Store.open(db_path)  # the database exists before the umask changes: only export paths are under test
    target = tmp_path / "exports" / "deep" / "er"
    old = os.umask(umask)
    try:
        job = Trainer(_train_one_epoch, predict, db=db_path, runner="eager").fit_predict(
            _dataset(), f"private_{umask:o}", output_config={"directory": str(target)})
    finally:
        os.umask(old)
    testing.assert_completed(job)
    for made in (tmp_path / "exports", tmp_path / "exports" / "deep", target):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    exported = Path(job.get_status()["export_paths"]["predictions"])
    assert exported.parent == target and stat.S_IMODE(exported.stat().st_mode) == 0o600


def test_make_private_dir_ignores_the_umask_and_leaves_existing_directories_alone(tmp_path: Path) -> None:
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    old = os.umask(0o777)  # mkdir alone would create d---------
    try:
        config.make_private_dir(existing / "a" / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    assert stat.S_IMODE((existing / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((existing / "a" / "b").stat().st_mode) == 0o700


# -- helpers -------------------------------------------------------------------------------------------


def _dataset() -> Dataset:
    rows = [{"x": float(i), "y": float(i % 3)} for i in range(6)]
    return Dataset("hostile", "regression", "inputs", tables={"train": rows, "validation": rows, "test": rows})


def _train_one_epoch(ctx: RunContext) -> dict[str, Any]:
    ctx.log_epoch(1, train={"rmse": 1.0}, validation={"rmse": 1.0})
    return {}


def _predict_nothing(ctx: RunContext) -> dict[str, Any]:
    return {}
