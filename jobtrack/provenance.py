"""Provenance of a job: the code, environment and data it was submitted with (#15). Collection only, no SQL.

``collect()`` returns the dict stored as ``jobs.provenance_json``, in exactly this layout (the query
language compiles ``git.commit`` and ``git.dirty`` against it)::

    {"git": None | {"commit": str, "branch": str | None, "dirty": bool, "diff_file": str | None,
                    "diff_bytes": int, "diff_truncated": bool},
     "python": "3.11.9", "platform": str, "host": str,
     "packages": {distribution: version}, "datasets": {split: sha256 hex}}

It is cheap enough to run at every submission: what cannot change in a process (Python, platform,
host, the distribution of a module) is cached per process, a table file's hash by (path, size, mtime),
and git costs one ``git status --porcelain=v2 --branch`` plus, only when the tree is dirty, one
``git diff HEAD`` saved as ``git.diff`` in the job's directory, asked again only when the checkout changed
(a stat per tracked file, or from the second submission on one read of an inotify queue: ``_Snapshot``).
Untracked files do not make a tree dirty (the database itself often sits untracked in the checkout).
No git binary, no repository, or a repository without a commit: ``"git": None``, never an error.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrack import environment, jsonutil, runtime, treewatch
from jobtrack.config import make_private_dir
from jobtrack.environment import (
    dataset_hashes,
    file_sha256 as file_sha256,  # (compare and bundle use it from here)
    packages,
)

if TYPE_CHECKING:
    from jobtrack.spec import JobSpec

log = logging.getLogger(__name__)

MAX_DIFF_BYTES = 1024 * 1024
"""Largest uncommitted diff kept in ``git.diff`` (bytes); a longer one is cut, with a note and ``diff_truncated``."""

DIFF_FILE = "git.diff"
"""Name of the uncommitted diff's file in the job's directory."""

GIT_TIMEOUT_S = 10.0
"""Seconds a git command may take before provenance gives up on git (recorded as ``"git": None``)."""

_TRUNCATION_NOTE = b"\n# jobtrack: diff cut at %d bytes (MAX_DIFF_BYTES); the job ran with more changes than shown\n"


def collect(functions: Iterable[Callable[..., Any] | None], tables: dict[str, Path], job_dir: Path) -> dict[str, Any]:
    """The provenance of a job whose code is ``functions`` and whose file-backed tables are ``tables`` (split → path).

    The uncommitted diff, if any, is written to ``job_dir / DIFF_FILE`` (the directory is created).
    A table file that cannot be read is left out of ``datasets`` (logged), never an error.
    """
    found = _gather(functions, tables, job_dir)
    found.save()
    return found.provenance


@dataclass
class Recorded:
    """A job's provenance, and its uncommitted diff still to be saved (``save()``: once the job row exists, so a
    submission that is refused leaves no file behind)."""

    provenance: dict[str, Any]
    diff_path: Path | None = None
    diff: bytes | None = None

    @property
    def json(self) -> str:
        return jsonutil.dumps(self.provenance, "provenance")

    def save(self) -> None:
        """Write the diff file (if the tree was dirty); a failure is logged, never raised: the job is submitted."""
        if self.diff_path is None or self.diff is None:
            return
        try:
            make_private_dir(self.diff_path.parent)
            fd = os.open(self.diff_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)  # private whatever the umask, as the job's other files (#21)
                fh.write(self.diff)
        except OSError as exc:
            log.warning("provenance: could not save the uncommitted diff to %s: %s", self.diff_path, exc)


def record(spec: JobSpec, job_dir: Path) -> Recorded:
    """The provenance of a job about to be submitted: ``.json`` for ``jobs.provenance_json``, then ``.save()``."""
    tables = {s: p for s in spec.dataset.splits if (p := spec.dataset.table_path(s)) is not None}
    return _gather([spec.train_fn, spec.predict_fn], tables, job_dir)


def _gather(functions: Iterable[Callable[..., Any] | None], tables: dict[str, Path], job_dir: Path) -> Recorded:
    fns = [f for f in functions if f is not None]
    git, diff = _git_state(_code_root(fns), job_dir)
    prov = {"git": git, "python": platform.python_version(), "platform": environment.platform_name(),
            "host": environment.host(), "packages": packages(fns), "datasets": dataset_hashes(tables)}
    return Recorded(prov, job_dir / DIFF_FILE if diff is not None else None, diff)


# -- git -----------------------------------------------------------------------------------------------


def git_info(directory: Path, job_dir: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirtiness of the checkout holding ``directory``; the diff saved into ``job_dir``.

    None when git is not installed, ``directory`` is in no repository, or the repository has no commit.
    A checkout whose HEAD, refs, index and tracked files (by stat) are unchanged since the last call in this
    process is not asked again (see ``_Snapshot``): repeated submissions cost a few stat calls.
    """
    info, diff = _git_state(_repository_root(directory), job_dir)
    if info is not None and diff is not None:
        Recorded(info, Path(info["diff_file"]), diff).save()
    return info


def _git_state(root: Path | None, job_dir: Path | None) -> tuple[dict[str, Any] | None, bytes | None]:
    """``git_info``'s dict for the checkout at ``root`` (naming the diff file in ``job_dir``) and the diff's bytes to
    save there (None if clean)."""
    git = _git_binary()
    if git is None or root is None:
        return None, None
    with runtime.current().provenance_lock:  # one thread reads the watch's queue and replaces the snapshot
        snap = _snapshots.get(str(root))
        if snap is None or not snap.reusable or not _unchanged(root, snap):
            snap = _take_snapshot(git, root, snap)
    if snap.info is None:
        return None, None
    info: dict[str, Any] = {**snap.info, "diff_file": None, "diff_bytes": 0, "diff_truncated": False}
    if not (snap.info["dirty"] and job_dir is not None and snap.diff is not None):
        return info, None
    truncated = len(snap.diff) > MAX_DIFF_BYTES
    body = snap.diff[:MAX_DIFF_BYTES] + (_TRUNCATION_NOTE % MAX_DIFF_BYTES if truncated else b"")
    info.update(diff_file=str(job_dir / DIFF_FILE), diff_bytes=len(body), diff_truncated=truncated)
    return info, body


@dataclass
class _Snapshot:
    """What git said about a checkout, and the stat fingerprint it was said for.

    Reused while the fingerprint holds (HEAD's content, the branch ref, packed refs, the index and every
    tracked file's mtime, size and inode): any edit, commit, checkout or ``git add`` changes it. Not reused
    (git is asked every time) for a repository with submodules, more than MAX_CACHED_FILES tracked files, a
    ``.git`` file (worktrees) or ``GIT_DIR``, or files modified within RACY_S of the snapshot, whose next
    change a coarse file system clock might not show (git's own "racy" rule).

    From a process's second submission on, an inotify watch on the same entries (``treewatch``) stands in for
    the fingerprint where it can: one read of its queue instead of a stat per tracked file (#14). It is armed
    before the fingerprint is compared or taken, so a change is seen by one or the other, and then the racy
    rule is not needed.
    """

    stamp: tuple[Any, ...]
    files: tuple[str, ...] | None
    index: Any
    info: dict[str, Any] | None
    diff: bytes | None
    reusable: bool
    watch: treewatch.Watch | None = None
    watched: bool = False  # a watch was tried for this snapshot (None: the file system cannot have one)


WATCH_CHECKOUTS = True
"""Watch a checkout with inotify (Linux, local file systems) instead of a stat per tracked file per submission."""

MAX_CACHED_FILES = 5000
"""Largest number of tracked files whose checkout is fingerprinted by stat calls instead of asking git again."""

RACY_S = 2.0
"""A snapshot taken within this many seconds of a tracked file's change is not reused."""

_snapshots: dict[str, _Snapshot] = {}  # repository root -> the last snapshot taken in this process
_SNAPSHOTS_KEPT = 32


def _take_snapshot(git: str, root: Path, previous: _Snapshot | None) -> _Snapshot:
    """Ask git (status, then the diff only if dirty) and fingerprint the checkout first, so a change made
    while git runs shows up at the next call."""
    cacheable = (root / ".git").is_dir() and not os.environ.get("GIT_DIR")
    index = _stat(root / ".git" / "index")
    files = None
    if cacheable:
        files = previous.files if previous is not None and previous.index == index else _tracked(git, root)
    if previous is not None and previous.watch is not None:
        previous.watch.close()
    watch = _watch(root, files) if previous is not None and files is not None else None  # not for one submission
    if watch is not None and _stat(root / ".git" / "index") != index:  # staged while listed: not watched for
        watch.close()
        watch = None
    started = time.time_ns()
    stamp = _stamp(root, files)
    info, diff = _ask_git(git, root)
    racy = any(entry is not None and entry[0] >= started - int(RACY_S * 1e9) for entry in stamp[5:])
    snap = _Snapshot(stamp, files, index, info, diff, reusable=files is not None and (watch is not None or not racy),
                     watch=watch, watched=previous is not None)
    if len(_snapshots) >= _SNAPSHOTS_KEPT and str(root) not in _snapshots:
        for old in _snapshots.values():
            if old.watch is not None:
                old.watch.close()
        _snapshots.clear()
    _snapshots[str(root)] = snap
    return snap


def _unchanged(root: Path, snap: _Snapshot) -> bool:
    """Whether the checkout is as ``snap`` saw it: its watch's queue, else (arming a watch first, from the second
    submission on) its fingerprint."""
    if snap.watch is not None:
        return not snap.watch.changed()
    if not snap.watched:
        snap.watched = True
        snap.watch = _watch(root, snap.files) if snap.files is not None else None
    return _stamp(root, snap.files) == snap.stamp


def _watch(root: Path, files: tuple[str, ...]) -> treewatch.Watch | None:
    """A watch on every entry the fingerprint covers: each tracked file and the directories leading to it, and
    in ``.git`` HEAD, the branch ref, packed refs, the index and a reftable's files."""
    if not WATCH_CHECKOUTS:
        return None
    top, gitdir = str(root), os.path.join(root, ".git")
    entries: dict[str, set[str] | None] = {gitdir: {"HEAD", "index", "packed-refs", "refs", "reftable"}}
    reftable = os.path.join(gitdir, "reftable")
    if os.path.isdir(reftable):
        entries[reftable] = None
    try:
        head = Path(gitdir, "HEAD").read_bytes()
    except OSError:
        head = b""
    paths = list(files)
    if head.startswith(b"ref: "):
        paths.append(os.path.join(gitdir, head[5:].strip().decode("utf-8", "replace")))
    for path in paths:
        directory, name = os.path.split(path)
        while True:
            known = directory in entries
            wanted = entries.setdefault(directory, set())
            if wanted is not None:
                wanted.add(name)
            if known or directory in (top, gitdir) or not directory.startswith(top):
                break
            directory, name = os.path.split(directory)
    present = {d: n for d, n in entries.items() if os.path.isdir(d)}  # a ref's missing directory: its parent
    return treewatch.Watch.start(present)  # watches for the name


def _ask_git(git: str, root: Path) -> tuple[dict[str, Any] | None, bytes | None]:
    status = _git(git, root, "status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return None, None
    commit = branch = None
    dirty = False
    for line in status.decode("utf-8", "replace").splitlines():
        if line.startswith("# branch.oid "):
            commit = line[len("# branch.oid "):].strip()
        elif line.startswith("# branch.head "):
            branch = line[len("# branch.head "):].strip()
        elif line and not line.startswith("#"):
            dirty = True
    if not commit or commit == "(initial)":
        return None, None
    info = {"commit": commit, "branch": None if branch in (None, "(detached)") else branch, "dirty": dirty}
    diff = _git(git, root, "diff", "HEAD", "--no-color", "--no-ext-diff", limit=MAX_DIFF_BYTES + 1) if dirty else None
    return info, diff


def _tracked(git: str, root: Path) -> tuple[str, ...] | None:
    """The tracked files of a checkout (absolute paths); None (do not fingerprint) with submodules or too many."""
    out = _git(git, root, "ls-files", "-s", "-z")
    if out is None:
        return None
    files = []
    for entry in out.split(b"\0"):
        if entry:
            meta, _, path = entry.partition(b"\t")
            if meta.startswith(b"160000"):  # a submodule: its changes are not visible by stat here
                return None
            files.append(os.path.join(root, os.fsdecode(path)))  # absolute: stat'ed as is at every call
    return tuple(files) if len(files) <= MAX_CACHED_FILES else None


def _stat(path: Path | str) -> tuple[int, int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _stamp(root: Path, files: tuple[str, ...] | None) -> tuple[Any, ...]:
    """The fingerprint of a checkout: HEAD, its branch ref, packed refs, the index, a reftable's list of tables,
    then each tracked file."""
    gitdir = root / ".git"
    try:
        head = (gitdir / "HEAD").read_bytes()
    except OSError:
        head = b""
    ref = head[5:].strip().decode("utf-8", "replace") if head.startswith(b"ref: ") else None
    parts: list[Any] = [head, _stat(gitdir / ref) if ref else None, _stat(gitdir / "packed-refs"),
                        _stat(gitdir / "index"), _stat(gitdir / "reftable" / "tables.list")]
    parts += map(_stat, files or ())
    return tuple(parts)


def _git(git: str, directory: Path, *args: str, limit: int | None = None) -> bytes | None:
    """Output of one git command (at most ``limit`` bytes read), or None if it fails or takes too long."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # status must not take the index lock
    try:
        with subprocess.Popen([git, "-C", str(directory), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env) as proc:
            assert proc.stdout is not None
            try:
                if limit is None:
                    out = proc.communicate(timeout=GIT_TIMEOUT_S)[0]
                else:
                    out = proc.stdout.read(limit)
                    if len(out) >= limit:
                        proc.kill()  # the rest is not kept: do not wait for git to write it
                        return out
                code = proc.wait(timeout=GIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()  # leaving the block waits for the process: it must end first
                raise
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("provenance: git %s in %s failed: %s", args[0], directory, exc)
        return None
    return out if code == 0 else None


_which: list[Any] = [None, None]  # (PATH, git's path) of the last lookup


def _git_binary() -> str | None:
    """git's path on ``PATH``: looked up again when ``PATH`` changed or the file found last is gone (#14: a
    lookup per job cost more than the rest of the provenance outside a repository)."""
    path_var, found = os.environ.get("PATH"), _which[1]
    if path_var != _which[0] or found is None or not os.access(found, os.X_OK):
        _which[:] = [path_var, shutil.which("git")]
    return _which[1]  # type: ignore[no-any-return]


def _repository_root(directory: Path) -> Path | None:
    """The nearest of ``directory`` and its parents holding ``.git`` (found with stat calls, so no process is
    started for code outside a repository); with ``GIT_DIR`` set, ``directory`` itself."""
    if os.environ.get("GIT_DIR"):
        return directory
    probe = _real(str(directory))  # plain strings: pathlib's objects cost more than the stat calls
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            return Path(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent


_reals: dict[str, tuple[str, tuple[int, int]]] = {}  # directory -> (its real path, that path's (st_dev, st_ino))


def _real(directory: str) -> str:
    """``os.path.realpath``, kept per directory while the directory still is the same inode: one stat instead
    of one per path component (#14); a symlink pointed elsewhere gives another inode, and a fresh look."""
    try:
        st = os.stat(directory)
    except OSError:
        return os.path.realpath(directory)
    known = _reals.get(directory)
    if known is not None and known[1] == (st.st_dev, st.st_ino):
        return known[0]
    real = os.path.realpath(directory)
    if len(_reals) >= 256:
        _reals.clear()
    _reals[directory] = (real, (st.st_dev, st.st_ino))
    return real


def _code_root(functions: list[Callable[..., Any]]) -> Path | None:
    """The checkout holding the first function's source file that is in one, else the working directory's
    (notebooks, builtins); None outside any. Found once per submission (#14: it was twice)."""
    for fn in functions:
        fn = getattr(fn, "func", fn)  # functools.partial
        code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None) or getattr(fn, "__code__", None)
        filename = getattr(code, "co_filename", None)
        if filename and os.path.isfile(filename):
            root = _repository_root(Path(filename).parent)
            if root is not None:
                return root
    try:
        return _repository_root(Path.cwd())
    except OSError:  # the working directory was removed
        return None
