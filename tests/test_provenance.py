"""Provenance recorded at submission (#15), in temporary git repositories: clean and dirty trees, the saved
diff, no git at all, and a table file that changed between two jobs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, DuplicateName, JobManager, Trainer, cli, provenance, treewatch
from jobtrack.store import Store

MODULE = '''
import filelock  # a distribution the code comes from: its version is recorded

def train(ctx):
    for epoch in range(2):
        ctx.log_epoch(epoch, train={"loss": 1.0 / (epoch + 1)}, validation={"roc_auc": 0.5 + 0.1 * epoch})
    return {"lr": ctx.config.get("lr")}

def predict(ctx):
    ctx.export("predictions", [{"id": 1, "probability": 0.5}])
'''
_names = itertools.count()


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def load_module(path: Path) -> Any:
    """A module file loaded from ``path`` (its functions' source file, and so their git checkout)."""
    spec = importlib.util.spec_from_file_location(f"prov_module_{next(_names)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_train(path: Path) -> Any:
    return load_module(path).train


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout with one commit holding ``train_code.py``; its data in ``data/`` (ignored, as data is)."""
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "train_code.py").write_text(MODULE)
    (root / ".gitignore").write_text("data/\n")
    (root / "data" / "train.csv").write_text("x,label\n1,0\n2,1\n3,0\n4,1\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def fit(root: Path, db: str, **kw: Any) -> Any:
    ds = Dataset("prov", "binary_classification", "t", tables={"train": str(root / "data" / "train.csv")})
    return Trainer(load_train(root / "train_code.py"), db=db, runner="eager", **kw).fit(ds)


def test_a_clean_checkout(repo: Path, db_path: str) -> None:
    job = fit(repo, db_path, config={"lr": 0.1})
    prov = job.provenance()
    assert set(prov) == {"git", "python", "platform", "host", "packages", "datasets"}
    assert prov["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "branch": "main", "dirty": False,
                           "diff_file": None, "diff_bytes": 0, "diff_truncated": False}
    assert prov["packages"]["filelock"] == importlib.metadata.version("filelock")
    assert "jobtrack" in prov["packages"]
    digest = hashlib.sha256((repo / "data" / "train.csv").read_bytes()).hexdigest()
    assert prov["datasets"] == {"train": digest}
    assert prov["python"].count(".") == 2 and prov["host"] and prov["platform"]
    assert "provenance" not in job.get_status() and len(job.get_status()) == 11


def test_a_dirty_checkout_saves_its_diff_in_the_job_directory(repo: Path, db_path: str) -> None:
    (repo / "untracked.txt").write_text("not part of the code")  # untracked files alone do not make it dirty
    assert fit(repo, db_path).provenance()["git"]["dirty"] is False
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# tuned\n")
    job = fit(repo, db_path)
    info = job.provenance()["git"]
    assert info["dirty"] is True and info["diff_truncated"] is False
    diff = Path(info["diff_file"])
    assert diff == Store.open(db_path).job_dir(job.job_id) / provenance.DIFF_FILE
    assert "+# tuned" in diff.read_text() and info["diff_bytes"] == diff.stat().st_size
    assert diff.stat().st_mode & 0o777 == 0o600  # private, as every file of a job


def test_a_long_diff_is_cut_with_a_note(repo: Path, db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "MAX_DIFF_BYTES", 200)
    with open(repo / "train_code.py", "a") as fh:
        fh.write("".join(f"# line {i}\n" for i in range(100)))
    info = fit(repo, db_path).provenance()["git"]
    text = Path(info["diff_file"]).read_bytes()
    assert info["diff_truncated"] is True and info["diff_bytes"] == len(text)
    assert text.startswith(b"diff --git") and b"diff cut at 200 bytes" in text


def test_a_detached_head_has_no_branch(repo: Path, db_path: str) -> None:
    git(repo, "checkout", "-q", "--detach")
    info = fit(repo, db_path).provenance()["git"]
    assert info["branch"] is None and info["commit"] == git(repo, "rev-parse", "HEAD")


def test_no_git_binary_records_git_as_absent(repo: Path, db_path: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    job = fit(repo, db_path)
    assert job.get_status()["status"] == "COMPLETED"
    assert job.provenance()["git"] is None and job.provenance()["datasets"]


def test_code_outside_a_repository_and_a_repository_without_commits(tmp_path: Path, db_path: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    (plain / "data").mkdir(parents=True)
    (plain / "train_code.py").write_text(MODULE)
    (plain / "data" / "train.csv").write_text("x,label\n1,0\n2,1\n")
    monkeypatch.chdir(plain)  # the fallback directory is not a checkout either
    assert fit(plain, db_path).provenance()["git"] is None
    git(plain, "init", "-q")
    assert fit(plain, db_path).provenance()["git"] is None  # a repository, but no commit to name


def test_provenance_false_records_nothing(repo: Path, db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# dirty\n")
    job = fit(repo, db_path, provenance=False)
    assert job.provenance() is None
    assert not (Store.open(db_path).job_dir(job.job_id) / provenance.DIFF_FILE).exists()
    assert cli.main(["show", job.job_id, "--db", db_path]) == 0
    assert "provenance:" not in capsys.readouterr().out


def test_show_prints_the_provenance(repo: Path, db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# dirty\n")
    job = fit(repo, db_path)
    info = job.provenance()
    assert cli.main(["show", job.job_id, "--db", db_path]) == 0
    out = capsys.readouterr().out
    assert f"  git: {info['git']['commit']} on main, dirty\n" in out
    assert f"  uncommitted diff: {info['git']['diff_file']} ({info['git']['diff_bytes']} bytes)\n" in out
    assert f"  dataset train: sha256 {info['datasets']['train']}\n" in out
    assert f"filelock {importlib.metadata.version('filelock')}" in out


def test_a_changed_table_file_shows_in_compare(repo: Path, db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = fit(repo, db_path, config={"lr": 0.1})
    same = fit(repo, db_path, config={"lr": 0.1})
    assert JobManager(db_path).compare([first.job_id, same.job_id]).identical
    with open(repo / "data" / "train.csv", "a") as fh:
        fh.write("5,0\n")
    changed = fit(repo, db_path, config={"lr": 0.1})
    comparison = JobManager(db_path).compare([first.job_id, changed.job_id])
    assert not comparison.identical
    assert [r.key for r in comparison.shown() if r.section == "provenance"] == ["datasets.train"]
    assert cli.main(["compare", first.job_id, changed.job_id, "--db", db_path]) == 0
    out = capsys.readouterr().out
    assert "datasets.train" in out and "identical" not in out


def test_equal_diffs_are_the_same_code_and_different_ones_are_not(repo: Path, db_path: str) -> None:
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# change A\n")
    a1, a2 = fit(repo, db_path), fit(repo, db_path)
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# change B\n")
    b = fit(repo, db_path)
    manager = JobManager(db_path)
    assert manager.compare([a1.job_id, a2.job_id]).identical
    differ = {r.key for r in manager.compare([a1.job_id, b.job_id]).shown()}
    assert "git.diff" in differ and "git.commit" not in differ


def test_file_hashes_are_sha256_and_follow_changes(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a\n1\n")
    assert provenance.file_sha256(path) == hashlib.sha256(b"a\n1\n").hexdigest()
    path.write_text("a\n1\n2\n")
    assert provenance.file_sha256(path) == hashlib.sha256(b"a\n1\n2\n").hexdigest()
    assert provenance.file_sha256(tmp_path / "missing.csv") is None


def _age(root: Path) -> None:
    """Date the checkout's files a minute back (edited before the runs, not within git's racy window)."""
    past = time.time() - 60
    for path in root.rglob("*"):
        if ".git" not in path.parts:
            os.utime(path, (past, past))


def _count_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Put a git on PATH that records each call; returns a function listing the calls so far."""
    calls = tmp_path / "git-calls"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$1 $2 $3" >> "{calls}"\nexec "{shutil.which("git")}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    return lambda: calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("watch", [True, False], ids=["inotify", "stat"])
def test_an_unchanged_checkout_is_not_asked_again(repo: Path, db_path: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, watch: bool) -> None:
    monkeypatch.setattr(provenance, "WATCH_CHECKOUTS", watch)
    asked = _count_git(tmp_path, monkeypatch)
    _age(repo)
    first = fit(repo, db_path).provenance()["git"]
    n = len(asked())
    assert n >= 1 and fit(repo, db_path).provenance()["git"] == first
    assert len(asked()) == n  # a few stat calls, no git process
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")  # only a ref changes
    second = fit(repo, db_path).provenance()["git"]
    assert second["commit"] == git(repo, "rev-parse", "HEAD") != first["commit"] and len(asked()) > n
    git(repo, "checkout", "-q", "-b", "other")
    assert fit(repo, db_path).provenance()["git"]["branch"] == "other"
    with open(repo / "train_code.py", "a") as fh:  # an edit, seen however recent
        fh.write("# edited\n")
    assert fit(repo, db_path).provenance()["git"]["dirty"] is True
    _age(repo)
    (repo / "train_code.py").write_text(MODULE)  # back as committed: clean again
    _age(repo)
    assert fit(repo, db_path).provenance()["git"]["dirty"] is False


def test_a_refused_submission_leaves_no_diff_file(repo: Path, db_path: str) -> None:
    module = load_module(repo / "train_code.py")
    trainer = Trainer(module.train, module.predict, db=db_path, runner="eager")
    ds = Dataset("prov", "binary_classification", "t",
                 tables={"train": str(repo / "data" / "train.csv"), "test": str(repo / "data" / "train.csv")})
    model = trainer.fit(ds).model_run_id
    assert trainer.predict("taken", model_run_id=model).get_status()["status"] == "COMPLETED"
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# dirty\n")
    jobs_dir = Store.open(db_path).files_dir / "jobs"
    before = sorted(os.listdir(jobs_dir))
    with pytest.raises(DuplicateName):
        trainer.predict("taken", model_run_id=model)
    assert sorted(os.listdir(jobs_dir)) == before
    assert trainer.predict("fresh", model_run_id=model).provenance()["git"]["dirty"] is True


def test_a_git_that_hangs_is_given_up(repo: Path, db_path: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text("#!/bin/sh\nexec sleep 60\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", 0.2)
    job = fit(repo, db_path)
    assert job.get_status()["status"] == "COMPLETED" and job.provenance()["git"] is None


def _lstats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every os.lstat path from here on (provenance fingerprints tracked files with lstat)."""
    seen: list[str] = []
    real = os.lstat

    def counting(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        seen.append(os.fspath(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "lstat", counting)
    return seen


def test_a_watched_checkout_costs_no_stat_per_file_and_sees_every_change(
        repo: Path, db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "pkg" / "sub").mkdir(parents=True)
    (repo / "pkg" / "sub" / "util.py").write_text("X = 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a package")
    asked = _count_git(tmp_path, monkeypatch)
    first = fit(repo, db_path).provenance()["git"]
    assert fit(repo, db_path).provenance()["git"] == first  # the second submission arms the watch
    stats, n = _lstats(monkeypatch), len(asked())
    (repo / "jobs.db-wal").write_bytes(b"x" * 100)  # untracked writes beside the code (a database, logs)
    (repo / "pkg" / ".util.py.swp").write_text("editor")
    assert fit(repo, db_path).provenance()["git"] == first
    assert len(asked()) == n  # one read of the watch's queue: no git process,
    tracked = {str(repo / name) for name in git(repo, "ls-files").splitlines()}
    assert tracked and not tracked & set(stats)  # and no stat of a tracked file
    (repo / "pkg" / "sub" / "util.py").write_text("X = 2\n")  # an edit two directories down, at once
    edited = fit(repo, db_path).provenance()["git"]
    assert edited["dirty"] is True and "+X = 2" in Path(edited["diff_file"]).read_text()
    git(repo, "checkout", "-q", "--", ".")
    assert fit(repo, db_path).provenance()["git"]["dirty"] is False
    (repo / "pkg" / "sub").rename(repo / "pkg" / "moved")  # a directory renamed: its files are gone
    assert fit(repo, db_path).provenance()["git"]["dirty"] is True
    (repo / "pkg" / "moved").rename(repo / "pkg" / "sub")
    assert fit(repo, db_path).provenance()["git"]["dirty"] is False
    git(repo, "commit", "-q", "--allow-empty", "-m", "third")
    assert fit(repo, db_path).provenance()["git"]["commit"] == git(repo, "rev-parse", "HEAD") != first["commit"]
    (repo / "new.py").write_text("Y = 1\n")
    git(repo, "add", "new.py")  # staged: the index changed, and the new file is watched from then on
    assert fit(repo, db_path).provenance()["git"]["dirty"] is True
    git(repo, "commit", "-q", "-m", "new")
    assert fit(repo, db_path).provenance()["git"]["dirty"] is False
    (repo / "new.py").write_text("Y = 2\n")
    assert fit(repo, db_path).provenance()["git"]["dirty"] is True


def test_a_forked_child_takes_no_change_from_its_parents_watch(repo: Path, db_path: str) -> None:
    fit(repo, db_path)
    fit(repo, db_path)  # armed
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child edits, and asks: it must not read (and so take) the parent's queue
        try:
            with open(repo / "train_code.py", "a") as fh:
                fh.write("# child\n")
            info = provenance.git_info(repo)
            os.write(write, b"dirty" if info and info["dirty"] else b"clean")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 16) == b"dirty"
    os.waitpid(pid, 0)
    os.close(read)
    assert fit(repo, db_path).provenance()["git"]["dirty"] is True  # the parent sees the child's edit too


def test_a_checkout_on_a_file_system_not_known_to_be_local_is_stat_ed(
        repo: Path, db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(treewatch, "LOCAL_FILE_SYSTEMS", frozenset())  # as NFS would be: no watch
    asked = _count_git(tmp_path, monkeypatch)
    _age(repo)
    fit(repo, db_path)
    fit(repo, db_path)
    stats, n = _lstats(monkeypatch), len(asked())
    assert fit(repo, db_path).provenance()["git"]["dirty"] is False and len(asked()) == n
    assert str(repo / "train_code.py") in stats  # fingerprinted by stat, as without a watch
    with open(repo / "train_code.py", "a") as fh:
        fh.write("# edited\n")
    assert fit(repo, db_path).provenance()["git"]["dirty"] is True


@pytest.mark.parametrize("watch", [True, False], ids=["inotify", "stat"])
def test_a_reftable_change_asks_git_again(repo: Path, db_path: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, watch: bool) -> None:
    """git >= 2.45's reftable backend records a commit in .git/reftable/tables.list, not in a ref file."""
    monkeypatch.setattr(provenance, "WATCH_CHECKOUTS", watch)
    tables = repo / ".git" / "reftable" / "tables.list"
    tables.parent.mkdir()
    tables.write_text("0x000000000001-0x000000000001-aaaa.ref\n")  # read by no git here (2.39): only watched
    asked = _count_git(tmp_path, monkeypatch)
    _age(repo)
    os.utime(tables, (time.time() - 60, time.time() - 60))
    fit(repo, db_path)
    fit(repo, db_path)
    n = len(asked())
    fit(repo, db_path)
    assert len(asked()) == n
    new = tables.with_suffix(".lock")
    new.write_text("0x000000000001-0x000000000002-bbbb.ref\n")
    new.rename(tables)  # as git commits to a reftable: a new list renamed over the old
    fit(repo, db_path)
    assert len(asked()) > n


def test_a_module_that_imports_more_later_shows_its_new_distribution(repo: Path, db_path: str) -> None:
    module = load_module(repo / "train_code.py")
    ds = Dataset("prov", "binary_classification", "t", tables={"train": str(repo / "data" / "train.csv")})
    trainer = Trainer(module.train, db=db_path, runner="eager")
    first = trainer.fit(ds).provenance()["packages"]
    assert "filelock" in first and "python-dateutil" not in first
    assert trainer.fit(ds).provenance()["packages"] == first  # the module's globals scanned once, kept
    module.dateutil_parser = importlib.import_module("dateutil.parser")  # the module gains a name: scanned again
    assert trainer.fit(ds).provenance()["packages"]["python-dateutil"] == importlib.metadata.version("python-dateutil")
