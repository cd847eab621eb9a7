"""Bad input found by a documentation-versus-behaviour hunt: each is a typed error naming the problem and the fix
(or the OSError a helper documents), never a bare RecursionError, OverflowError or TypeError."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, InvalidArgument, JobManager, Trainer, cli, config, exports


def _removed_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in a folder that is then removed: mkdir of any relative path there is ENOENT, its parent '.' exists."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()


def test_make_private_dir_raises_when_a_folder_cannot_be_made_under_an_existing_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _removed_cwd(tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError):  # was: endless recursion, RecursionError
        config.make_private_dir(Path("a") / "b")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_export_directory_that_cannot_be_made_is_invalid_argument() -> None:
    # /proc exists, yet mkdir of a folder in it is ENOENT: was endless recursion, RecursionError
    with pytest.raises(InvalidArgument, match=r"Cannot create the export directory /proc/.*output_config"):
        exports.check_output_config({"directory": "/proc/jobtrack-no-such-folder"})


def _train(ctx: Any) -> None:
    ctx.log_epoch(0, validation={"roc_auc": 0.5})


def _one_job(db: str) -> str:
    rows = [{"id": i, "y": i % 2} for i in range(4)]
    return Trainer(_train, db=db, runner="eager").fit(Dataset("d", "binary_classification", "y",
                                                                tables={"train": rows})).job_id


@pytest.mark.parametrize("call", [
    lambda m: m.table(limit=2**64), lambda m: m.table(offset=2**64), lambda m: m.show_jobs(limit=2**64),
    lambda m: m.show_jobs(offset=2**64), lambda m: m.list_jobs(offset=2**63),
])
def test_a_limit_or_offset_past_what_sql_takes_is_invalid_argument(db_path: str, call: Any) -> None:
    _one_job(db_path)
    with pytest.raises(InvalidArgument, match=r"(limit|offset) must be .* up to|from 0 to"):  # was OverflowError
        call(JobManager(db_path))


def test_the_largest_limit_sql_takes_is_read(db_path: str) -> None:
    job = _one_job(db_path)
    page = JobManager(db_path).show_jobs(limit=2**63 - 1)  # was OverflowError (limit + 1 asked for)
    assert [s["job_id"] for s in page] == [job] and not page.has_more


def test_cli_list_offset_past_what_sql_takes_is_one_line_and_exit_2(db_path: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _one_job(db_path)
    capsys.readouterr()
    code = cli.main(["--db", db_path, "list", "--offset", str(2**64)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jobtrack: error: offset must be an integer from 0 to") and err.count("\n") == 1


def test_a_bundle_is_never_renamed_over_a_socket_or_pipe(db_path: str, tmp_path: Path) -> None:
    _one_job(db_path)
    sock_path = tmp_path / "s.jtb"
    with socket.socket(socket.AF_UNIX) as sock:  # as /dev/null: `jobtrack export -o /dev/null` replaced the device
        sock.bind(str(sock_path))
        with pytest.raises(InvalidArgument, match=r"not a regular file .*Choose a file path for -o"):
            JobManager(db_path).export_bundle(sock_path)
        assert stat.S_ISSOCK(sock_path.stat().st_mode)
    fifo = tmp_path / "p.jtb"
    os.mkfifo(fifo)  # not opened to read its header (that would block)
    with pytest.raises(InvalidArgument, match=r"not a regular file"):
        JobManager(db_path).export_bundle(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_bundle_in_a_folder_that_takes_no_file_is_invalid_argument(db_path: str) -> None:
    _one_job(db_path)
    with pytest.raises(InvalidArgument, match=r"Cannot write the bundle to '/proc/x.jtb' .*another -o path"):
        JobManager(db_path).export_bundle("/proc/x.jtb")  # was a bare FileNotFoundError


@pytest.mark.parametrize(("args", "match"), [
    ((None,), r"needs a file path"), (("",), r"needs a file path"),
    (("x.jtb", "job_"), r"job_ids must be a list"),
    (("x.jtb",), r"files must be True or False"),
])
def test_export_bundle_arguments_are_checked(db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             args: tuple[Any, ...], match: str) -> None:
    _one_job(db_path)
    monkeypatch.chdir(tmp_path)
    kwargs = {"files": "no"} if "files" in match else {}
    with pytest.raises(InvalidArgument, match=match):
        JobManager(db_path).export_bundle(*args, **kwargs)
    assert not (tmp_path / "x.jtb").exists()


@pytest.mark.parametrize("name", ["a" * 200, "a\x00b", "a\nb", "x\udcff"])
def test_a_checkpoint_name_the_file_system_cannot_take_is_invalid_argument(db_path: str, name: str) -> None:
    seen: list[BaseException] = []

    def train(ctx: Any) -> None:
        try:
            ctx.save_checkpoint(b"weights", name=name)  # was a bare OSError, ValueError or UnicodeEncodeError
        except (OSError, ValueError) as exc:  # InvalidArgument is a ValueError
            seen.append(exc)
        assert ctx.latest_checkpoint() is None and not list(ctx.checkpoint_dir.iterdir())

    rows = [{"id": 1, "y": 1}]
    job = Trainer(train, db=db_path, runner="eager").fit(Dataset("d", "binary_classification", "y",
                                                                   tables={"train": rows}))
    assert job.get_status()["status"] == "COMPLETED", job.get_status()["result"].get("error")
    assert len(seen) == 1 and isinstance(seen[0], InvalidArgument), seen
    assert "is not a plain file name" in str(seen[0]) and "name= sets it" in str(seen[0])


def test_list_jobs_and_compare_refuse_what_is_no_status_or_list_of_ids(db_path: str) -> None:
    job = _one_job(db_path)
    manager = JobManager(db_path)
    with pytest.raises(InvalidArgument, match=r"Unknown job status 5; use one of QUEUED"):  # was TypeError
        manager.list_jobs(status=5)
    assert [m.job_id for m in manager.list_jobs(status=(s for s in ["completed"]))] == [job]
    for ids in (None, 5):
        with pytest.raises(InvalidArgument, match=r"compare needs two or more job ids"):  # was TypeError
            manager.compare(ids)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"more than once"):  # a generator is read: was TypeError
        manager.compare(iter([job, job]))  # type: ignore[arg-type]


def test_stream_logs_to_no_file_is_invalid_argument(db_path: str) -> None:
    job_id = _one_job(db_path)
    job = JobManager(db_path).fetch_job(job_id)
    with pytest.raises(InvalidArgument, match=r"stream_logs\(file=\.\.\.\) takes an open text file"):
        job.stream_logs(file=5, follow=False)  # was AttributeError: 'int' object has no attribute 'write'


def test_batches_and_should_evaluate_refuse_what_is_no_table_or_epoch(db_path: str) -> None:
    seen: list[str] = []

    def train(ctx: Any) -> None:
        for call in (lambda: list(ctx.batches(5)), lambda: list(ctx.batches(None)),
                     lambda: list(ctx.batches({"id": 1})), lambda: ctx.should_evaluate(None),
                     lambda: ctx.should_evaluate("1")):
            with pytest.raises(InvalidArgument) as caught:  # were TypeErrors (or a dict's keys as rows)
                call()
            seen.append(str(caught.value))
        assert list(ctx.batches([{"id": 1}], size=1)) == [[{"id": 1}]] and ctx.should_evaluate(4)

    rows = [{"id": 1, "y": 1}]
    job = Trainer(train, db=db_path, runner="eager").fit(Dataset("d", "binary_classification", "y",
                                                                   tables={"train": rows}))
    assert job.get_status()["status"] == "COMPLETED", job.get_status()["result"].get("error")
    assert len(seen) == 5 and "split name such as 'test'" in seen[0] and "epoch's number" in seen[3]


def test_a_config_key_with_a_backtick_is_queried_with_the_backtick_written_twice(db_path: str) -> None:
    rows = [{"id": 1, "y": 1}]
    job = Trainer(_train, db=db_path, runner="eager", config={"a`b": 2, "c": 3}).fit(
        Dataset("d", "binary_classification", "y", tables={"train": rows})).job_id
    manager = JobManager(db_path)
    assert [m.job_id for m in manager.list_jobs(where="config.`a``b` = 2 and config.`c` = 3")] == [job]
    assert [m.job_id for m in manager.list_jobs(sort="-config.`a``b`")] == [job]  # was: no closing backtick
    assert manager.table(where="config.`a``b` > 1")[0]["config.a`b"] == 2


def test_cli_tables_show_a_config_texts_control_characters_escaped(db_path: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": 1, "y": 1}]
    data = Dataset("d", "binary_classification", "y", tables={"train": rows})
    first = Trainer(_train, db=db_path, runner="eager", config={"prompt": "Q:\nA:\x1b[2J", "k\x1b[1m": 1}).fit(data)
    second = Trainer(_train, db=db_path, runner="eager", config={"prompt": "plain", "k\x1b[1m": 2}).fit(data)
    capsys.readouterr()
    assert cli.main(["--db", db_path, "list", "--columns", "config.prompt"]) == 0
    listed = capsys.readouterr().out
    assert cli.main(["--db", db_path, "compare", first.job_id, second.job_id]) == 0
    compared = capsys.readouterr().out
    assert cli.main(["--db", db_path, "show", first.job_id]) == 0
    shown = capsys.readouterr().out
    for out in (listed, compared, shown):  # was: the newline split a row, the ESC reached the terminal
        assert "\x1b" not in out
    assert len(listed.splitlines()) == 3 and "Q:\\nA:\\x1b[2J" in listed
    assert "Q:\\nA:\\x1b[2J" in compared and "config.k\\x1b[1m" in compared and "  k\\x1b[1m = 1" in shown


def test_a_table_file_saved_by_excel_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbfid,y\n1,2\n")  # Excel's "CSV UTF-8"
    (tmp_path / "t.json").write_bytes(b'\xef\xbb\xbf[{"id": 1}]')
    data = Dataset("d", "regression", "y", tables={"train": tmp_path / "t.csv", "test": tmp_path / "t.json"})
    assert data.table("train") == [{"id": 1, "y": 2}]  # was {"\ufeffid": 1, ...}: row["id"] a KeyError
    assert data.table("test") == [{"id": 1}]  # was a bare JSONDecodeError


@pytest.mark.parametrize(("name", "content", "match"), [
    ("latin.csv", b"id,y\n\xe9,1\n", r"latin\.csv is not UTF-8 text"),
    ("bad.jsonl", b'{"a": 1}\nnot json\n', r"bad\.jsonl cannot be read: line 2: "),
    ("cut.json", b"[", r"cut\.json cannot be read: "),
    ("ints.json", b"[1, 2]", r"ints\.json must hold a JSON list of row objects"),
    ("ints.jsonl", b"1\n", r"ints\.jsonl must hold one JSON object per line"),
    ("ragged.csv", b"id,y\n1,2,3\n", r"ragged\.csv, line 2: 3 cells under a header of 2 columns"),
    ("twice.csv", b"id,id\n1,2\n", r"twice\.csv names the column\(s\) \['id'\] more than once"),
])
def test_a_table_file_that_is_no_rows_is_invalid_argument_naming_it(tmp_path: Path, name: str, content: bytes,
                                                                   match: str) -> None:
    (tmp_path / name).write_bytes(content)
    data = Dataset("d", "regression", "y", tables={"train": tmp_path / name})
    with pytest.raises(InvalidArgument, match=match):  # were bare UnicodeDecodeError / JSONDecodeError, or rows
        data.table("train")                            # of ints, a None column, a column silently lost


def test_a_csv_row_with_a_trailing_comma_reads_its_cells(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"id,y\n1,2,\n")
    assert Dataset("d", "regression", "y", tables={"train": tmp_path / "t.csv"}).table("train") == [{"id": 1, "y": 2}]


def test_sweep_run_naming_a_train_function_instead_of_a_trainer_is_one_line_and_exit_2(
        db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = cli.main(["--db", db_path, "sweep", "run", "jobtrack.demo:train", "--space", "lr=[0.1]"])
    err = capsys.readouterr().err  # was "unexpected TypeError: train() missing 1 required positional argument", 1
    assert code == 2 and err.startswith("jobtrack: error: 'jobtrack.demo:train' is a function taking arguments (ctx")
    assert "name the Trainer (or a function taking none that returns one)" in err and not Path(db_path).exists()


def test_a_flag_that_is_not_true_or_false_is_refused(tmp_path: Path) -> None:
    """``prune(dry_run="no")`` did a dry run, ``retry(resume="no")`` resumed and ``stream_logs(follow="no")``
    followed: any non-empty text counted as True."""
    db = str(tmp_path / "j.db")
    job = Trainer(_train, db=db, runner="eager").fit(Dataset("d", "binary_classification", "t",
                                                             tables={"train": [{"x": 1}]}))
    manager = JobManager(db)
    with pytest.raises(InvalidArgument, match=r"dry_run must be True or False, not str 'no'"):
        manager.prune("0s", dry_run="no")  # type: ignore[arg-type]
    assert manager.list_jobs(), "nothing was pruned"
    with pytest.raises(InvalidArgument, match=r"resume must be True or False"):
        manager.retry(job.job_id, resume="no")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"follow=\.\.\.\) must be True or False"):
        job.stream_logs(follow="no")  # type: ignore[arg-type]
    numpy = pytest.importorskip("numpy")
    assert manager.prune("0s", dry_run=numpy.bool_(True)).removed == [job.job_id]  # numpy's True is True
    assert manager.list_jobs(), "a dry run removes nothing"


def test_cli_compare_of_one_job_says_how_to_name_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "j.db")
    job = Trainer(_train, db=db, runner="eager").fit(Dataset("d", "binary_classification", "t",
                                                             tables={"train": [{"x": 1}]}))
    assert cli.main(["--db", db, "compare", job.job_id]) == 2
    err = capsys.readouterr().err
    assert "jobtrack compare JOB_A JOB_B" in err and "compare([" not in err, err


@pytest.mark.parametrize("directory", ["", "  "])
def test_an_empty_export_directory_is_refused_not_taken_as_the_current_folder(directory: str) -> None:
    with pytest.raises(InvalidArgument, match=r"is empty .*leave 'directory' out"):
        exports.check_output_config({"directory": directory})


def test_a_csv_with_empty_unnamed_trailing_columns_reads_as_without(tmp_path: Path) -> None:
    """Excel writes "id,x,," when cells right of the data were ever formatted: the empty names counted as a column
    named twice, and the file was refused. An unnamed column that holds values (pandas' index) is still read."""
    excel, indexed = tmp_path / "excel.csv", tmp_path / "indexed.csv"
    excel.write_text("id,x,,\n1,2,,\n3,4,,\n", encoding="utf-8")
    indexed.write_text(",x\n0,2\n1,4\n", encoding="utf-8")
    ds = Dataset("d", "regression", "t", tables={"train": str(excel), "test": str(indexed)})
    assert ds.table("train") == [{"id": 1, "x": 2}, {"id": 3, "x": 4}]
    assert ds.table("test") == [{"": 0, "x": 2}, {"": 1, "x": 4}]
