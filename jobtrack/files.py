"""Job files on disk: removing what a pruned job leaves behind (never under the write lock)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable

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
