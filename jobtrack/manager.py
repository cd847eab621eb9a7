"""JobManager: find and cancel any job of a database by id; thin over the Store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from jobtrack import files
from jobtrack.config import check_lock_timeout
from jobtrack.errors import AmbiguousJobId, InvalidArgument, JobNotFound
from jobtrack.monitor import JobMonitor, JobStatusDict, status_dict
from jobtrack.states import JobStatus, JobType
from jobtrack.store import PruneReport, Store
from jobtrack.timeutil import parse_when

if TYPE_CHECKING:
    from jobtrack import bundle


def parse_status(value: object) -> JobStatus:
    """A status named in any case, or InvalidArgument naming the five choices."""
    status = JobStatus.parse(value)
    if status is None:
        choices = ", ".join(s.value for s in JobStatus)
        raise InvalidArgument(f"Unknown job status {value!r}; use one of {choices}.")
    return status


def parse_job_type(value: object) -> JobType:
    """A job type named in any case, or InvalidArgument naming the three choices."""
    job_type = JobType.parse(value)
    if job_type is None:
        raise InvalidArgument(f"Unknown job type {value!r}; use one of {', '.join(t.value for t in JobType)}.")
    return job_type


class JobManager:
    """Jobs of one database (``db`` argument, else ``$JOBTRACK_DB``, else the default path).

    A JobManager never creates a database (#13): a path with no file is ``DatabaseNotFound``, and a
    file or folder this user cannot write is read read-only (canceling and pruning then raise
    ``StoreReadOnly``). ``lock_timeout``: seconds a write (cancel, prune, a liveness verdict) waits for
    the write lock.

    Raises:
        DatabaseNotFound: no database at the path; nothing was created.
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *,
                 lock_timeout: float | None = None) -> None:
        self._store = Store.open(db, lock_timeout=None if lock_timeout is None else check_lock_timeout(lock_timeout),
                                 create=False)

    @property
    def db(self) -> str:
        """The database this manager reads."""
        return self._store.target

    def fetch_job(self, job_id: str) -> JobMonitor:
        """The monitor of job ``job_id``.

        Raises:
            JobNotFound: no job has this id.
        """
        return JobMonitor.from_record(self._store, self._store.get_job(job_id))

    def resolve_job_id(self, job_id: str) -> str:
        """The id of the one job ``job_id`` names: the id itself, or a unique prefix of one (*local*).

        Raises:
            JobNotFound: no job's id is or starts with ``job_id``.
            AmbiguousJobId: several jobs' ids start with it (the first ten are named).
        """
        ids = self._store.job_ids_starting(job_id)
        if job_id in ids:
            return job_id
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise JobNotFound(job_id, self.db)
        raise AmbiguousJobId(job_id, ids, self.db)

    def cancel_job(self, job_id: str) -> JobStatus:
        """Cancel job ``job_id`` (see ``JobMonitor.cancel``) and return its status after the call."""
        return self._store.request_cancel(job_id)

    def list_jobs(
        self,
        *,
        status: str | JobStatus | Sequence[str | JobStatus] | None = None,
        job_type: str | JobType | None = None,
        experiment_name: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = 100,
    ) -> list[JobMonitor]:
        """Jobs matching every given filter, newest first.

        ``since``/``until`` bound the creation time: an aware datetime, a date or time string
        (read by dateutil; no zone means local time), or an age such as ``"2h"`` or ``"3d"``.

        Raises:
            InvalidArgument: an unknown status or job type, an unreadable time, or a bad limit.
        """
        statuses = None
        if status is not None:
            items = [status] if isinstance(status, str) else list(status)
            statuses = [parse_status(s) for s in items]
        if job_type is not None:
            job_type = parse_job_type(job_type).value
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidArgument(f"limit must be a positive integer or None, not {limit!r}.")
        recs = self._store.list_jobs(
            statuses=statuses,
            job_type=job_type,
            experiment_name=experiment_name,
            since=parse_when(since) if since is not None else None,
            until=parse_when(until) if until is not None else None,
            limit=limit,
        )
        return [JobMonitor.from_record(self._store, r) for r in recs]

    def prune(self, older_than: str | datetime, *, dry_run: bool = False) -> PruneReport:
        """Remove finished jobs that ended before ``older_than`` (an age like ``"30d"`` or a time), with their files.

        Jobs whose model is registered are kept. ``dry_run`` reports without removing anything.

        Raises:
            InvalidArgument: an unreadable age or time.
        """
        report = self._store.prune(parse_when(older_than), dry_run=dry_run)
        if not dry_run:
            files.remove_paths(report.files)
        return report

    def export_bundle(self, out: str | os.PathLike[str], job_ids: Sequence[str] | None = None, *,
                      since: str | datetime | None = None, include_running: bool = False, files: bool = True,
                      deps: bool = True) -> bundle.ExportReport:
        """Write a bundle of finished jobs (``job_ids``, else those created since ``since``, else all) to ``out`` (#19).

        Raises:
            JobNotFound: a named job does not exist.
            InvalidArgument: a named job is not finished and ``include_running`` is false; an unreadable time.
        """
        from jobtrack import bundle

        ids = None if job_ids is None else [self.resolve_job_id(j) for j in job_ids]
        return bundle.export_bundle(self._store, out, ids, since=None if since is None else parse_when(since),
                                    include_running=include_running, files=files, deps=deps)

    def import_bundle(self, path: str | os.PathLike[str], *,
                      limits: bundle.Limits | None = None) -> bundle.ImportReport:
        """Add a bundle's jobs (and files) to this database; importing it again changes nothing (#19).

        Raises:
            InvalidBundle: a malformed, tampered or unsafe bundle; nothing was written.
            BundleConflict: something exists here with other content; nothing was written.
        """
        from jobtrack import bundle

        return bundle.import_bundle(self._store, path, limits=limits)

    def show_jobs(self, *, limit: int | None = None) -> list[JobStatusDict]:
        """Every job's status dict, newest first (the reference's ``show_jobs``)."""
        return [status_dict(self._store, r) for r in self._store.list_jobs(limit=limit)]
