"""Errors of the database layer: missing, foreign, busy, unreachable or replaced databases, and bundles."""

from __future__ import annotations

from typing import Any

from jobtrack.errors.api import JobtrackError


class StoreError(JobtrackError):
    """A problem with the database file or its location."""


class DatabaseNotFound(StoreError, FileNotFoundError):
    """A read of a database path where there is no file: reads never create one (SPEC §6)."""

    def __init__(self, path: str, given_as: str = "db= or JOBTRACK_DB") -> None:
        self.path = path
        self.given_as = given_as  # where the path came from: the setting to check (--from of a migrate...)
        super().__init__(
            f"No jobtrack database at {path}; nothing was created. Check the path ({given_as}); "
            + ("submitting a job creates the database." if "JOBTRACK_DB" in given_as
               else "a database to copy from must exist.")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.given_as))


class NotAJobtrackDatabase(StoreError):
    """The file exists but is not a jobtrack database."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"{path} is not a jobtrack database{' (' + detail + ')' if detail else ''}. "
            "Nothing was changed. Point db= or JOBTRACK_DB at a jobtrack database or a new path."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.detail))


class SchemaTooNew(StoreError):
    """The database was written by a newer jobtrack than this one."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path} was written by jobtrack schema {found}; this version reads up to {supported}. "
            "Upgrade jobtrack (pip install -U jobtrack). Nothing was changed."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.found, self.supported))


class StoreReadOnly(StoreError):
    """The database or its directory cannot be created or written."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"Cannot write the jobtrack database at {path}{': ' + detail if detail else ''}. "
            "Choose a writable location with db= or JOBTRACK_DB, or fix the permissions."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.detail))


class NetworkFilesystem(StoreError):
    """The database sits on a network filesystem, where file locks are unreliable."""

    def __init__(self, path: str, fstype: str) -> None:
        self.path = path
        self.fstype = fstype
        super().__init__(
            f"{path} is on a {fstype} network filesystem, where file locks are unreliable and jobs could be "
            "corrupted. Use a local path, or a PostgreSQL URL for several machines; set "
            "JOBTRACK_ALLOW_NETWORK_FS=1 to override at your own risk."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.fstype))


class StoreBusy(StoreError, TimeoutError):
    """The write lock could not be taken within its bound."""

    def __init__(self, path: str, timeout: float, holder: str = "") -> None:
        self.path = path
        self.timeout = timeout
        self.holder = holder
        super().__init__(
            f"Could not take the write lock of {path} within {timeout:g} s"
            f"{' (held by ' + holder + ')' if holder else ''}. "
            "Stop what holds it, or wait longer: lock_timeout= of Trainer or JobManager, "
            "--lock-timeout of the jobtrack command."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.timeout, self.holder))


class StoreUnavailable(StoreError):
    """A transient failure (disk full, I/O error, lost server connection): the transaction was not applied.

    Catch it to retry the whole transaction (``Database.transact`` does so until a deadline).
    """

    def __init__(self, path: str, detail: str = "", *, maybe_applied: bool = False) -> None:
        self.path = path
        self.detail = detail
        self.maybe_applied = maybe_applied  # the server connection dropped during COMMIT
        outcome = ("The connection dropped during COMMIT, so the server may have applied it; re-read before "
                   "repeating anything that is not safe to repeat." if maybe_applied else
                   "The transaction was rolled back and nothing was written; free disk space, check the disk "
                   "or the server connection, and retry.")
        super().__init__(
            f"Cannot reach or write the jobtrack database at {path} now{': ' + detail if detail else ''}. {outcome}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unavailable, (self.path, self.detail, self.maybe_applied))


def _rebuild_unavailable(path: str, detail: str, maybe_applied: bool) -> StoreUnavailable:
    return StoreUnavailable(path, detail, maybe_applied=maybe_applied)


class DatabaseReplaced(StoreError):
    """The database file was deleted or replaced while this process had it open."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"The jobtrack database at {path} was deleted or replaced while this process had it open"
            f"{' (' + detail + ')' if detail else ''}; nothing more was written to it. "
            "Restore the file, or restart the process to use the file now at that path."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.detail))


class NestedWrite(JobtrackError, RuntimeError):
    """A write transaction was opened inside another one on the same thread (writes do not nest)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"A write to {path} was started inside another write on the same thread; jobtrack's writes do "
            "not nest. Pass the open transaction down instead of opening a new one."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path,))


class InvalidBundle(JobtrackError, ValueError):
    """A job bundle that is malformed, tampered with or unsafe; nothing was written (#19)."""

    def __init__(self, bundle: str, entry: str, detail: str) -> None:
        self.bundle, self.entry, self.detail = bundle, entry, detail
        where = f"entry {entry!r}: " if entry else ""  # no entry: the file itself could not be read
        super().__init__(f"Refused bundle {bundle}: {where}{detail}. Nothing was imported.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.bundle, self.entry, self.detail))


class BundleConflict(JobtrackError):
    """A bundle's job (registry entry, view, table, file) is in the target with other content; nothing of that bundle
    was written (#19). ``earlier``: what a merge imported from the databases before this one, if anything."""

    def __init__(self, what: str, name: str, detail: str, earlier: str = "") -> None:
        self.what, self.name, self.detail, self.earlier = what, name, detail, earlier
        done = f"Nothing of it was imported; {earlier}." if earlier else "Nothing was imported."
        super().__init__(f"Conflict importing {what} {name!r}: {detail}. {done}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.name, self.detail, self.earlier))
