"""A job's checkpoints (#18): one directory per job, kept across its attempts, written atomically.

``ctx.save_checkpoint(data)`` writes a file as temp + fsync + rename (+ fsync of the directory), so a
runner killed mid-write leaves the previous checkpoint whole; a small ``LATEST`` file, replaced the
same way, names the newest one for ``ctx.latest_checkpoint()`` (without it, the newest entry a framework
callback saved there: ``last.ckpt``, ``last.keras``, ``checkpoint-N/``). ``jobtrack retry`` copies the
directory into the new job's, so a retried job finds the old job's checkpoint as its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jobtrack.config import make_private_dir
from jobtrack.errors import InvalidArgument
from jobtrack.files import remove_stale_temps, temp_prefix

DIR_NAME = "checkpoints"
"""The checkpoint directory's name under the job's own directory (``ctx.job_dir``)."""

LATEST = "LATEST"
"""The file in the checkpoint directory that names the newest checkpoint."""

DEFAULT_NAME = "checkpoint"
"""The file name of a checkpoint saved from bytes without a name."""

TEMP_KIND = "checkpoint"
"""The temp files of checkpoints being written are named ``.checkpoint.…`` (``files.temp_prefix``)."""

_CHUNK = 1 << 20


def directory(job_dir: Path) -> Path:
    """The job's checkpoint directory (created, private to the user)."""
    return make_private_dir(job_dir / DIR_NAME)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _write_atomic(target: Path, chunks: list[bytes] | None = None, source: Path | None = None) -> None:
    tmp = target.with_name(f"{temp_prefix(TEMP_KIND)}{target.name}.tmp")
    try:
        with open(tmp, "wb") as out:
            if source is not None:
                with open(source, "rb") as src:
                    while block := src.read(_CHUNK):
                        out.write(block)
            for chunk in chunks or ():
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


MAX_NAME_BYTES = 150
"""The longest checkpoint name, in UTF-8 bytes: its temp file's name adds about 80 to it, and file systems take 255."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or name == LATEST \
            or os.sep in name or (os.altsep and os.altsep in name) \
            or not name.isprintable() or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidArgument(f"checkpoint name {name!r} is not a plain file name; use e.g. 'model.pt' (printable "
                              f"characters, at most {MAX_NAME_BYTES} bytes, no folders, not starting with '.', "
                              f"not {LATEST!r}); name= sets it.")
    return name


def save(folder: Path, data: bytes | bytearray | memoryview | str | os.PathLike[str], name: str | None = None) -> Path:
    """Store ``data`` (bytes, or the path of a file to copy) as checkpoint ``name``; returns its path.

    Raises:
        InvalidArgument: data that is neither bytes nor a file's path, or a name that is not a plain file name.
    """
    remove_stale_temps(folder, TEMP_KIND)  # the partial checkpoint of an attempt killed mid-write
    if isinstance(data, (bytes, bytearray, memoryview)):
        target = folder / _check_name(name or DEFAULT_NAME)
        _write_atomic(target, [bytes(data)])
    elif isinstance(data, (str, os.PathLike)):
        source = Path(data)
        if not source.is_file():
            raise InvalidArgument(f"save_checkpoint({str(source)!r}): not a file; pass bytes or the path of a file "
                                  "(archive a folder first, e.g. with shutil.make_archive).")
        target = folder / _check_name(name or source.name)
        if source.resolve() != target.resolve():
            _write_atomic(target, source=source)
    else:
        fix = ("pass its bytes, buffer.getvalue()" if hasattr(data, "getvalue") else
               "save it to a file first (torch.save(state, path), say) and pass the path, or pass its bytes")
        raise InvalidArgument(f"save_checkpoint() takes bytes or a file's path, not {type(data).__name__}; {fix}.")
    _write_atomic(folder / LATEST, [target.name.encode("utf-8")])
    return target


def latest(folder: Path) -> Path | None:
    """The newest checkpoint saved in ``folder`` (by any attempt, or copied by ``jobtrack retry``), or None."""
    try:
        name = (folder / LATEST).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return _newest_entry(folder)
    path = folder / name
    return path if name and path.is_file() else None


def _newest_entry(folder: Path) -> Path | None:
    """The most recently modified file or ``checkpoint-N`` folder in ``folder``, hidden ones (temp files) left out:
    what the framework callbacks save there themselves, without ``save_checkpoint()``'s LATEST file."""
    newest: tuple[int, str] | None = None
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for entry in entries:  # folders only as Transformers names them: not a logger's lightning_logs/ or runs/
        if entry.name.startswith(".") or (not entry.name.startswith("checkpoint-") and entry.is_dir()):
            continue
        try:
            when = entry.stat().st_mtime_ns
        except FileNotFoundError:  # removed meanwhile (a framework rotating its checkpoints)
            continue
        newest = max(newest or (when, entry.name), (when, entry.name))
    return None if newest is None else folder / newest[1]


def copy_all(source: Path, target: Path) -> bool:
    """Copy one job's checkpoint directory to another's (``jobtrack retry``); False if it had none."""
    if latest(source) is None:
        return False
    remove_stale_temps(source, TEMP_KIND)  # a checkpoint the killed job was writing: neither kept nor copied
    make_private_dir(target.parent)
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=_temps)
    return True


def _temps(folder: str, names: list[str]) -> set[str]:
    """Checkpoints being written (a live writer's temp files): not copied."""
    return {n for n in names if n.startswith(f".{TEMP_KIND}.")}
