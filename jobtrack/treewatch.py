"""Change notification for named entries of directories (Linux inotify), so provenance need not stat every
tracked file of a checkout at each submission (#14). OS calls only: no SQL, nothing else of jobtrack.

``Watch.start({directory: names})`` watches each directory for a change to one of its named entries: written,
truncated, touched, created, removed or renamed, and for the directory itself being removed or moved.
``changed()`` then says whether any such change happened since the watch started, however recent: the kernel
queues the event before the writing call returns. Entries not named (a database, a log, an editor's swap file
beside the code) are read from the queue and ignored.

``start`` returns None, and the caller falls back to comparing stat calls, wherever a change could go
unseen: not Linux, a directory on a file system not known to be local (NFS, SMB, FUSE, where another machine
may write), directories on more than one device, or no inotify instance or watch left. In a forked child a
watch always says changed: the queue is shared with the parent, whose reads would take its events.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import sys
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "bcachefs",
                                "overlay", "jfs", "reiserfs", "nilfs2"})
"""File system types on which every change is made by this machine's kernel, and so queued by inotify."""

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_UNMOUNT, _IN_Q_OVERFLOW, _IN_IGNORED = 0x400, 0x800, 0x2000, 0x4000, 0x8000
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
         | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR | _IN_DONT_FOLLOW)
_WHOLE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT | _IN_Q_OVERFLOW | _IN_IGNORED  # no name: it all changed
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len, then len bytes of name
_libc: list[ctypes.CDLL | None] = []
_fs_types: dict[int, str | None] = {}  # st_dev -> file system type from /proc/self/mountinfo


class Watch:
    """An inotify queue on some directories; ``changed()`` once one of their named entries changed."""

    def __init__(self, fd: int, names: dict[int, frozenset[bytes] | None]) -> None:
        self._fd, self._names, self._pid, self._changed = fd, names, os.getpid(), False

    @classmethod
    def start(cls, entries: Mapping[str, Iterable[str] | None]) -> Watch | None:
        """A watch on each directory (absolute path) for its named entries (None: any entry); None where a change
        could go unseen."""
        libc = _load()
        if libc is None or not entries:
            return None
        devices = set()
        for directory in entries:
            try:
                devices.add(os.stat(directory).st_dev)
            except OSError:
                return None
        if len(devices) != 1 or file_system_type(next(iter(devices))) not in LOCAL_FILE_SYSTEMS:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:  # EMFILE: the user's instances are taken (by editors, say); stat calls will do
            log.debug("provenance: no inotify instance: %s", os.strerror(ctypes.get_errno()))
            return None
        names: dict[int, frozenset[bytes] | None] = {}
        for directory, wanted in entries.items():
            wd = libc.inotify_add_watch(fd, os.fsencode(directory), _MASK)
            if wd < 0:  # ENOSPC (no watch left), or the directory went away
                log.debug("provenance: cannot watch %s: %s", directory, os.strerror(ctypes.get_errno()))
                os.close(fd)
                return None
            names[wd] = None if wanted is None else frozenset(map(os.fsencode, wanted))
        return cls(fd, names)

    def changed(self) -> bool:
        """Whether a watched entry changed since ``start`` (stays True); True in a forked child or once closed."""
        if self._changed or self._fd < 0 or os.getpid() != self._pid:
            return True
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return False
            except OSError:
                self._changed = True
                return True
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + size
                name = data[offset - size:offset].rstrip(b"\0")
                named = self._names.get(wd, frozenset())
                if mask & _WHOLE or not name or named is None or name in named:
                    self._changed = True
            if self._changed:
                return True

    def close(self) -> None:
        """Release the inotify descriptor (only in the process that made it: a child's copy is closed at exit)."""
        if self._fd >= 0 and os.getpid() == self._pid:
            os.close(self._fd)
        self._fd = -1


def file_system_type(device: int) -> str | None:
    """The type (``ext4``, ``nfs4``, ...) of the mounted file system with this ``st_dev``, from
    ``/proc/self/mountinfo``; None when it is not listed there (btrfs subvolumes, no /proc)."""
    if device not in _fs_types:
        found = None
        wanted = f"{os.major(device)}:{os.minor(device)}"
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    fields = line.split()
                    if len(fields) > 2 and fields[2] == wanted and " - " in line:
                        found = line.split(" - ", 1)[1].split()[0]
                        break
        except OSError:
            pass
        _fs_types[device] = found
    return _fs_types[device]


def _load() -> ctypes.CDLL | None:
    """libc's inotify calls, once per process; None off Linux."""
    if not _libc:
        libc = None
        if sys.platform.startswith("linux"):
            try:  # the running program's symbols include libc's (find_library would start ldconfig)
                libc = ctypes.CDLL(None, use_errno=True)
                libc.inotify_init1.argtypes = [ctypes.c_int]
                libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            except (OSError, AttributeError):
                libc = None
        _libc.append(libc)
    return _libc[0]
