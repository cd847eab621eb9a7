"""Files on disk: removing what a pruned job leaves behind (never under the write lock), undoing the files of an
import that failed, temp files a killed process left, and checking where a new file (a bundle, a report, a plot)
may be written."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from jobtrack import liveness
from jobtrack.config import make_private_dir
from jobtrack.errors import InvalidArgument

log = logging.getLogger(__name__)


def remove_paths(paths: Iterable[str]) -> list[str]:
    """Delete each file or directory tree; returns the paths that could not be removed (logged)."""
    failed = []
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
            failed.append(path)
    return failed


def _host_tag(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


def temp_prefix(kind: str) -> str:
    """The name prefix of a temp file this process writes before renaming it into place: ``.{kind}.`` then
    its host (a digest), pid and start time, so ``remove_stale_temps`` can tell when its writer is gone."""
    me = liveness.current()
    return f".{kind}.{_host_tag(me.host)}.{me.pid}.{me.start}."


def temp_beside(target: str, kind: str) -> str:
    """A new, empty private temp file in ``target``'s folder, to be written and then renamed over ``target``.

    Raises:
        InvalidArgument: ``target`` exists and is not a regular file (a device such as /dev/null, a pipe: the
            rename would replace it), or its folder takes no new file (read-only, /proc, no permission).
    """
    if os.path.exists(target) and not os.path.isfile(target):
        raise InvalidArgument(f"{target!r} is not a regular file (a device, a pipe or a socket): writing the {kind} "
                              "would replace it. Choose a file path for -o.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(kind), dir=os.path.dirname(target))
    except OSError as exc:
        raise InvalidArgument(f"Cannot write the {kind} to {target!r} ({exc.strerror}); choose another -o path."
                              ) from None
    os.close(fd)
    return tmp


def remove_stale_temps(folder: str | os.PathLike[str], kind: str) -> list[str]:
    """Remove the temp files of ``kind`` in ``folder`` whose writer, a process of this host, is gone (killed
    mid-write: a partial checkpoint or bundle entry, never renamed into place); returns the paths removed.

    Another host's temp files are left: its processes cannot be checked from here.
    """
    here, removed = _host_tag(liveness.current().host), list[str]()
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, or not a folder: nothing to tidy
        return removed
    for entry in entries:
        parts = entry.name.split(".", 5)  # "", kind, host, pid, start, the rest
        if len(parts) < 6 or parts[1] != kind or parts[2] != here or not parts[3].isdigit():
            continue
        writer = liveness.ProcessIdentity(liveness.current().host, int(parts[3]), parts[4])
        if liveness.is_alive(writer) is False and not remove_paths([entry.path]):
            removed.append(entry.path)
    return removed


class NewFiles:
    """The files and folders an operation creates, removed again by ``undo()`` if it fails before it is done."""

    def __init__(self, *, tidy: str | None = None) -> None:
        self.files: list[str] = []
        self.folders: list[str] = []
        self.tidy = tidy  # the kind of temp file written: stale ones (a killed run's) are removed from each folder
        self._tidied: set[str] = set()

    def folder(self, path: str) -> None:
        """``os.makedirs(path)`` (private to the user), remembering the outermost folder it made; an existing one
        first loses the ``tidy`` temp files a killed run left there."""
        if self.tidy is not None and path not in self._tidied:
            self._tidied.add(path)
            remove_stale_temps(path, self.tidy)
        top, parent = None, path
        while not os.path.lexists(parent):
            top, parent = parent, os.path.dirname(parent)
        make_private_dir(Path(path))  # 0700 every folder made, not only the last (as os.makedirs's mode)
        if top is not None:
            self.folders.append(top)

    def undo(self) -> None:
        """Remove the files made, then the folders made that hold nothing else (logged, never raised)."""
        failed = remove_paths(self.files)
        for top in reversed(self.folders):
            if not failed and all(not names for _, _, names in os.walk(top)):
                remove_paths([top])


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_output(out: str | os.PathLike[str], what: str, database: str | None = None) -> str:
    """The absolute path of ``out``, where a new ``what`` (a bundle, a report) may be written, replacing any file.

    Refuses what writing there would destroy or cannot work: no path, the database ``database`` (a SQLite path) or its
    ``-wal``, ``-shm`` or lock file, any other SQLite database, a directory, a path in a missing folder.

    Raises:
        InvalidArgument: naming the path, why, and to choose another ``-o`` path.
    """
    from jobtrack.store.location import file_identity
    from jobtrack.store.readonly import open_here

    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise InvalidArgument(f"The {what} needs a file path (-o FILE), not {out!r}; e.g. 'runs.jtb'.")
    target = os.path.abspath(os.fspath(out))
    if os.path.isdir(target):
        raise InvalidArgument(f"{os.fspath(out)!r} is a folder; give a file path for the {what} (-o FILE).")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise InvalidArgument(f"The folder {folder!r} does not exist; create it, or choose another -o path "
                              f"for the {what}.")
    found = file_identity(target)
    if found is None:
        return target
    ours = [] if database is None else [database + s for s in ("", "-wal", "-shm", ".lock")]
    if any(file_identity(p) == found for p in ours):
        raise InvalidArgument(f"{os.fspath(out)!r} is the database {database} or one of its files: writing the "
                              f"{what} there would destroy its jobs. Choose another -o path.")
    if open_here(found):
        raise InvalidArgument(f"{os.fspath(out)!r} is a database this process has open: writing the {what} there "
                              "would destroy its jobs. Choose another -o path.")
    if not os.path.isfile(target):  # a device or a pipe holds no database (and opening a pipe would block)
        return target
    try:  # not a database this process has open: reading it drops no lock of ours
        with open(target, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError:
        return target  # unreadable: writing it says why
    if header == _SQLITE_HEADER:
        raise InvalidArgument(f"{os.fspath(out)!r} is a SQLite database: writing the {what} over it would destroy "
                              "it. Choose another -o path.")
    return target
