"""The environment a job was submitted from, for its provenance (#15): Python, platform, host, the versions of
the distributions its code comes from, and the sha256 of its table files. Cached per process; no SQL."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import socket
import sys
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("jobtrack.provenance")

_HASH_CHUNK = 1024 * 1024
_hashes: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> sha256: values, valid in any process
_versions: dict[str, dict[str, str]] = {}  # top-level module name -> {distribution: version} ({}: none)
_scanned: weakref.WeakKeyDictionary[Any, tuple[int, frozenset[str]]] = weakref.WeakKeyDictionary()


# -- the environment -------------------------------------------------------------------------------------


@functools.cache
def platform_name() -> str:
    """``platform.platform()``, once per process."""
    return platform.platform()


@functools.cache
def host() -> str:
    """This machine's host name, once per process."""
    return socket.gethostname()


def packages(functions: Iterable[Callable[..., Any]]) -> dict[str, str]:
    """Versions of the installed distributions the code's modules come from: the functions' own modules and
    every module (or object from one) in their module globals, plus jobtrack; sorted by name."""
    names = {"jobtrack"}
    for fn in functions:
        names |= _module_names(getattr(fn, "func", fn))
    found: dict[str, str] = {}
    for name in names:
        found.update(_distributions_of(name))
    return dict(sorted(found.items()))


def _module_names(fn: Any) -> frozenset[str]:
    """The top-level modules of ``fn`` and of every module (or object from one) in its module's globals; kept per
    function until its globals gain or lose a name (#14: the scan cost 80 µs per submission)."""
    scope = getattr(fn, "__globals__", {})
    try:
        size, names = _scanned[fn]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable, so not kept
        size, names = -1, frozenset()
    if size != len(scope):
        found = {str(getattr(fn, "__module__", "") or "").split(".")[0]}
        for value in list(scope.values()):
            module = value.__name__ if isinstance(value, type(sys)) else getattr(value, "__module__", None)
            if isinstance(module, str):
                found.add(module.split(".")[0])
        names = frozenset(found)
        with contextlib.suppress(TypeError):
            _scanned[fn] = (len(scope), names)
    return names


def _distributions_of(module: str) -> dict[str, str]:
    """Distribution → version of those installing top-level module ``module`` (cached per process).

    A distribution of the module's own name is taken at once (``numpy``, an editable ``jobtrack``); only a
    module installed under another name (``sklearn``, ``yaml``) needs the map of every installed
    distribution, read once per process; the code's own modules outside site-packages need neither.
    """
    if module not in _versions:
        found: dict[str, str] = {}
        if module and module not in sys.stdlib_module_names:
            found = _versions_of([module])
            if not found and _installed(module):  # a namespace package may come from several
                found = _versions_of(_module_distributions().get(module, []))
        _versions[module] = found
    return _versions[module]


def _versions_of(dist_names: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for dist_name in dist_names:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
        found[dist.metadata["Name"] or dist_name] = dist.version
    return found


def _installed(module: str) -> bool:
    """Whether an imported top-level module lives in a site-packages (or dist-packages) directory."""
    loaded = sys.modules.get(module)
    paths = [getattr(loaded, "__file__", None), *list(getattr(loaded, "__path__", None) or [])]
    return any(p and ("site-packages" in p or "dist-packages" in p) for p in paths)


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    """Top-level module → distributions installing it: all installed metadata, read once per process."""
    return dict(importlib.metadata.packages_distributions())


# -- data ----------------------------------------------------------------------------------------------


def dataset_hashes(tables: dict[str, Path]) -> dict[str, str]:
    """sha256 of each table file, by split; cached by (path, size, mtime) so an unchanged file is read once."""
    out: dict[str, str] = {}
    for split, path in sorted(tables.items()):
        digest = file_sha256(path)
        if digest is not None:
            out[split] = digest
    return out


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The sha256 hex digest of a file (cached by path, size and mtime), or None if it cannot be read."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        key = (real, st.st_size, st.st_mtime_ns)
        if key in _hashes:
            return _hashes[key]
        digest = hashlib.sha256()
        with open(real, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        log.warning("provenance: cannot hash %s: %s", path, exc)
        return None
    _hashes[key] = digest.hexdigest()
    return _hashes[key]
