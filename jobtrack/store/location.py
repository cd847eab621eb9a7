"""Where a database file lives: its identity, its permissions and its filesystem (nothing here opens it).

Closing any descriptor of a SQLite file drops every POSIX lock the process holds on it (#21), so these
checks use ``stat`` and ``access`` only.
"""

from __future__ import annotations

import errno
import os
import stat

from jobtrack.config import ENV_ALLOW_NETWORK_FS

FileIdentity = tuple[int, int]


def file_identity(path: str) -> FileIdentity | None:
    """``(st_dev, st_ino)`` of the file ``path`` names (symlinks followed), or None if there is none.

    A stat opens no descriptor, so it is safe to call on a file this process has open (#21).
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    return (st.st_dev, st.st_ino)


def permission_problem(path: str) -> str | None:
    """Which of the database's directory, file, ``-wal`` or ``-shm`` this user cannot write, or None.

    A ``-wal``/``-shm`` left behind by another user (root, say) is a permissions problem to name, not a
    foreign file (#21, defect 7).
    """
    parent = os.path.dirname(os.path.abspath(path))
    for candidate, need in ((parent, os.W_OK | os.X_OK), (path, os.R_OK | os.W_OK),
                            (path + "-wal", os.R_OK | os.W_OK), (path + "-shm", os.R_OK | os.W_OK)):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not os.access(candidate, need):
            what = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            if _on_read_only_fs(candidate):  # no user can write it, whatever its owner and mode say
                return f"the {what} {candidate} is on a read-only file system (mounted read-only)"
            return (f"the {what} {candidate} is not writable by this user (owner uid {st.st_uid}, "
                    f"mode {stat.S_IMODE(st.st_mode):o})")
    return None


def _on_read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smbfs", "smb3", "afs", "ncpfs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.glusterfs",
})
"""Filesystem types whose locks SQLite and flock cannot rely on."""


def filesystem_type(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` (longest matching mount point), or None if unknown."""
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for mount_point, fstype in mounts:
        mount_point = mount_point.replace("\\040", " ")
        prefix = mount_point.rstrip("/") + "/"
        if (real == mount_point or real.startswith(prefix)) and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fstype)
    return best[1] if best else None


def check_local_filesystem(path: str, mounts_file: str = "/proc/mounts") -> None:
    """Refuse a database on a network filesystem unless JOBTRACK_ALLOW_NETWORK_FS=1.

    Raises:
        NetworkFilesystem: the directory of ``path`` is on NFS, SMB, sshfs and the like.
    """
    if os.environ.get(ENV_ALLOW_NETWORK_FS) == "1":
        return
    fstype = filesystem_type(os.path.dirname(path) or ".", mounts_file)
    if fstype is not None and (fstype in NETWORK_FS_TYPES or fstype.split(".")[0] in NETWORK_FS_TYPES):
        from jobtrack.errors import NetworkFilesystem

        raise NetworkFilesystem(path, fstype)


def out_of_descriptors(error: OSError | None = None) -> str | None:
    """Why no file can be opened now if this process is at its limit of open files (``error``'s errno, else a probe:
    fewer than the 4 descriptors a SQLite connection may need are free), or None. SQLite says only "unable to open
    database file" then, and has closed what it had opened by the time it says so."""
    if error is None:
        probes: list[int] = []
        try:
            for _ in range(4):  # not database files: closing them drops no lock
                probes.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            return None
        except OSError as exc:
            error = exc
        finally:
            for fd in probes:
                os.close(fd)
    if error.errno not in (errno.EMFILE, errno.ENFILE):
        return None
    try:
        import resource

        limit = f" (its limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
    except (ImportError, OSError, ValueError):
        limit = ""
    whose = "this process" if error.errno == errno.EMFILE else "the system"
    return (f"{whose} has as many files open as it may{limit}; close files or databases it no longer needs, "
            "or raise the limit (`ulimit -n`)")
