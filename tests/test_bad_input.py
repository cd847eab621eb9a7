"""Bad input found by a documentation-versus-behaviour hunt: each is a typed error naming the problem and the fix
(or the OSError a helper documents), never a bare RecursionError, OverflowError or TypeError."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobtrack import InvalidArgument, config, exports


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
