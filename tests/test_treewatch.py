"""treewatch (#14): an inotify queue that says when a named entry of a watched directory changed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from jobtrack import treewatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def _watch(entries: dict[str, list[str] | None]) -> treewatch.Watch:
    watch = treewatch.Watch.start(entries)
    assert watch is not None, f"no watch on {treewatch.file_system_type(os.stat(next(iter(entries))).st_dev)}"
    return watch


def test_only_named_entries_count(tmp_path: Path) -> None:
    (tmp_path / "code.py").write_text("a = 1\n")
    watch = _watch({str(tmp_path): ["code.py"]})
    (tmp_path / "other.txt").write_text("unnamed")
    (tmp_path / "other.txt").rename(tmp_path / "other2.txt")
    assert watch.changed() is False
    (tmp_path / "code.py").write_text("a = 2\n")
    assert watch.changed() is True
    assert watch.changed() is True  # stays changed
    watch.close()
    assert watch.changed() is True  # a closed watch proves nothing


@pytest.mark.parametrize("change", ["touch", "replace", "remove", "create", "directory removed"])
def test_each_kind_of_change_is_seen(tmp_path: Path, change: str) -> None:
    watched = tmp_path / "d"
    watched.mkdir()
    (watched / "code.py").write_text("a = 1\n")
    watch = _watch({str(watched): ["code.py", "later.py"]})
    if change == "touch":
        os.utime(watched / "code.py", (1, 1))
    elif change == "replace":
        (watched / "tmp").write_text("a = 3\n")
        os.replace(watched / "tmp", watched / "code.py")
    elif change == "remove":
        (watched / "code.py").unlink()
    elif change == "create":
        (watched / "later.py").write_text("")
    else:
        shutil.rmtree(watched)
    assert watch.changed() is True
    watch.close()


def test_any_entry_counts_when_no_names_are_given(tmp_path: Path) -> None:
    watch = _watch({str(tmp_path): None})
    assert watch.changed() is False
    (tmp_path / "anything").write_text("")
    assert watch.changed() is True
    watch.close()


def test_no_watch_where_a_change_could_go_unseen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert treewatch.Watch.start({str(tmp_path / "missing"): ["x"]}) is None
    assert treewatch.Watch.start({}) is None
    monkeypatch.setattr(treewatch, "LOCAL_FILE_SYSTEMS", frozenset())  # NFS, SMB, FUSE: other machines write
    assert treewatch.Watch.start({str(tmp_path): ["x"]}) is None


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="needs /dev/shm mounted")
def test_the_file_system_type_comes_from_mountinfo() -> None:
    assert treewatch.file_system_type(os.stat("/dev/shm").st_dev) == "tmpfs"
    assert treewatch.file_system_type(os.makedev(4095, 1048575)) is None  # no such device
