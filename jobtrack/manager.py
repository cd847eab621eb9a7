"""JobManager: find and cancel any job of a database by id; thin over the Store."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobtrack import files, runtable
from jobtrack.config import check_lock_timeout
from jobtrack.errors import AmbiguousJobId, InvalidArgument, JobNotFound
from jobtrack.jsonutil import as_flag
from jobtrack.monitor import JobMonitor, StatusPage, request_cancel, status_dict
from jobtrack.runtable import JobList
from jobtrack.states import JobStatus, JobType
from jobtrack.store import PruneReport, Store
from jobtrack.store.search import DEFAULT_LIMIT
from jobtrack.timeutil import parse_when, to_iso, utcnow

if TYPE_CHECKING:
    from jobtrack import bundle
    from jobtrack.compare import Comparison
    from jobtrack.sweep import SweepMonitor


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


_INT64_MAX = 2**63 - 1  # the largest LIMIT SQLite and PostgreSQL take


def _check_page(limit: object, offset: object) -> None:
    """``limit``: a positive integer or None; ``offset``: an integer >= 0; neither past what SQL takes (2**63 - 1)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _INT64_MAX):
        raise InvalidArgument(f"limit must be a positive integer up to {_INT64_MAX} or None (every job), "
                              f"not {limit!r}.")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _INT64_MAX:
        raise InvalidArgument(f"offset must be an integer from 0 to {_INT64_MAX}, not {offset!r}.")


def _job_id(job_id: object) -> str:
    """A job id as given: a non-empty string, else InvalidArgument (an int or None names no job: a caller's slip)."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgument(f"A job id is a non-empty string such as 'job_8f3a...', not {job_id!r}; "
                              "JobManager().list_jobs() shows them.")
    return job_id


def _experiment_name(value: object) -> str:
    """An experiment to filter by: a non-empty string, ``name/task_type/task_name`` read as ``predict()`` reads it."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"experiment_name must be a non-empty string such as "
                              f"'churn_binary_classification_next_month', not {value!r}.")
    return value.replace("/", "_")


class JobManager:
    """Jobs of one database (``db`` argument, else ``$JOBTRACK_DB``, else the default path).

    A JobManager creates no database unless asked (#13): a path with no file is ``DatabaseNotFound``, and a
    file or folder this user cannot write is read read-only (canceling and pruning then raise
    ``StoreReadOnly``). ``create=True`` makes a new, empty database at the path (the target of
    ``import_bundle`` on a new machine, say). ``lock_timeout``: seconds a write (cancel, prune, a liveness
    verdict) waits for the write lock.

    Raises:
        DatabaseNotFound: no database at the path and ``create`` is false; nothing was created.
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *,
                 lock_timeout: float | None = None, create: bool = False) -> None:
        if not isinstance(create, bool):
            raise InvalidArgument(f"create must be True or False, not {create!r}.")
        self._store = Store.open(db, lock_timeout=None if lock_timeout is None else check_lock_timeout(lock_timeout),
                                 create=create)

    @property
    def db(self) -> str:
        """The database this manager reads."""
        return self._store.target

    def fetch_job(self, job_id: str) -> JobMonitor:
        """The monitor of job ``job_id``.

        Raises:
            JobNotFound: no job has this id.
            InvalidArgument: ``job_id`` is not a string.
        """
        return JobMonitor.from_record(self._store, self._store.get_job(_job_id(job_id)))

    def resolve_job_id(self, job_id: str) -> str:
        """The id of the one job ``job_id`` names: the id itself, or a unique prefix of one (*local*).

        Raises:
            JobNotFound: no job's id is or starts with ``job_id``.
            AmbiguousJobId: several jobs' ids start with it (the first ten are named).
            InvalidArgument: ``job_id`` is not a non-empty string.
        """
        ids = self._store.job_ids_starting(_job_id(job_id))
        if job_id in ids:
            return job_id
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise JobNotFound(job_id, self.db)
        raise AmbiguousJobId(job_id, ids, self.db)

    def retry(self, job_id: str, *, resume: bool = True) -> JobMonitor:
        """A new job that runs an ended (FAILED or CANCELED) worker job's spec again; its monitor (#18).

        The new job carries ``retry_of`` (the old one is left as it ended); with ``resume`` it starts after
        the old job's stored epochs, with its checkpoints (``ctx.latest_checkpoint()``). ``jobtrack worker``
        runs it.

        Raises:
            RetryNotAllowed: the job is QUEUED, RUNNING or COMPLETED; nothing is written.
            InvalidArgument: the job ran in-process (its code is not stored).
            JobNotFound: no such job.
        """
        from jobtrack import retrying

        return self.fetch_job(retrying.resubmit(self._store, job_id, resume=as_flag(resume, "resume")))

    def retry_links(self, job_id: str) -> dict[str, Any]:
        """``retry_of`` (the job this one retries, or None), ``retried_by`` (ids), ``attempt`` and ``max_attempts``.

        Raises:
            JobNotFound: no such job.
        """
        rec = self._store.get_job(job_id, check_liveness=False)
        return {"retry_of": rec.retry_of, "retried_by": self._store.retried_by(job_id), "attempt": rec.attempt,
                "max_attempts": rec.max_attempts}

    def cancel_job(self, job_id: str) -> JobStatus:
        """Cancel job ``job_id`` (see ``JobMonitor.cancel``) and return its status after the call.

        Raises:
            JobNotFound: no job has this id.
            InvalidArgument: ``job_id`` is not a string.
        """
        return request_cancel(self._store, _job_id(job_id))

    def list_jobs(
        self,
        *,
        status: str | JobStatus | Sequence[str | JobStatus] | None = None,
        job_type: str | JobType | None = None,
        experiment_name: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = DEFAULT_LIMIT,
        where: str | None = None,
        sort: str | None = None,
        offset: int = 0,
    ) -> JobList:
        """Jobs matching every given filter and the query ``where``, newest first unless ``sort`` says otherwise.

        ``since``/``until`` bound the creation time: an aware datetime, a date or time string
        (read by dateutil; no zone means local time), or an age such as ``"2h"`` or ``"3d"``.
        ``where`` is a query such as ``"config.lr < 0.01 and tag = 'baseline'"`` and ``sort`` a field,
        ``-`` first for descending (``"-best_metric"``, ``"config.lr,-created"``); README "Finding and
        comparing runs" has the grammar. At most ``limit`` jobs (default 100) are returned: the
        result's ``has_more`` says whether more match, ``offset=result.next_offset`` gives the next page
        and ``limit=None`` all of them. In Jupyter the result shows as an HTML table.

        Raises:
            InvalidQuery: ``where`` or ``sort`` does not parse (the message points at the problem).
            InvalidArgument: an unknown status or job type, an experiment name that is not a string, an unreadable
                time, or a bad limit or offset.
        """
        statuses = None
        if status is not None:
            items = [status] if isinstance(status, str) or not isinstance(status, Iterable) else list(status)
            statuses = [parse_status(s) for s in items]
        if job_type is not None:
            job_type = parse_job_type(job_type).value
        if experiment_name is not None:
            experiment_name = _experiment_name(experiment_name)
        _check_page(limit, offset)
        if statuses == []:  # none of the statuses: no job (as ``status IN ()``), not every job
            return JobList(self._store, [], has_more=False, offset=offset)
        recs = self._store.search_jobs(
            where, sort=sort, limit=None if limit is None else min(limit + 1, _INT64_MAX), offset=offset,
            statuses=statuses,
            job_type=job_type,
            experiment_name=experiment_name,
            since=parse_when(since) if since is not None else None,
            until=parse_when(until) if until is not None else None,
        )
        more = limit is not None and len(recs) > limit  # one more was asked for, to tell
        recs = recs[:limit] if limit is not None else recs
        return JobList(self._store, recs, has_more=more, offset=offset)

    def table(self, where: str | None = None, *, sort: str | None = None, limit: int | None = None,
              offset: int = 0) -> list[dict[str, Any]]:
        """The matching jobs as plain rows for analysis (all of them unless ``limit``), in ``sort`` order.

        Each row: id, status, job_type, experiment, created, started, finished (aware UTC datetimes),
        duration (seconds from the claim to the end), eval_metric, best_metric, model_run_id, sweep,
        tags, then ``config.<key>`` (the flattened config) and ``best.<metric>`` (each metric at the
        best epoch); every row has every key, None where a job has no value.

        Raises:
            InvalidQuery: ``where`` or ``sort`` does not parse.
            InvalidArgument: a bad limit or offset.
        """
        _check_page(limit, offset)
        return runtable.rows(self._store, self._store.search_jobs(where, sort=sort, limit=limit, offset=offset))

    def frame(self, where: str | None = None, *, sort: str | None = None, limit: int | None = None) -> Any:
        """``table(...)`` as a pandas DataFrame, one column per key.

        Raises:
            MissingExtra: pandas is not installed (``pip install 'jobtrack[pandas]'``).
            InvalidQuery: ``where`` or ``sort`` does not parse.
        """
        return runtable.frame(self.table(where, sort=sort, limit=limit))

    def prune(self, older_than: str | datetime, *, dry_run: bool = False) -> PruneReport:
        """Remove finished jobs that ended before ``older_than`` (an age like ``"30d"`` or a time), with their files.

        Jobs whose model is registered are kept. ``dry_run`` reports without removing anything.

        Raises:
            InvalidArgument: an unreadable age or time, a bare number, or a time in the future (nothing is removed).
        """
        cutoff = parse_when(older_than)
        if cutoff > utcnow():  # every finished job ended before a future time: a typo must not remove them all
            raise InvalidArgument(f"prune(older_than={older_than!r}) names a time in the future ({to_iso(cutoff)}), "
                                  "before which every finished job ended; nothing was removed. Give an age such "
                                  "as '30d' or a past date.")
        report = self._store.prune(cutoff, dry_run=as_flag(dry_run, "dry_run"))
        if not dry_run:
            files.remove_paths(report.files)
        return report

    def export_bundle(self, out: str | os.PathLike[str], job_ids: Sequence[str] | None = None, *,
                      where: str | None = None, since: str | datetime | None = None, include_running: bool = False,
                      files: bool = True, deps: bool = True) -> bundle.ExportReport:
        """Write a bundle of finished jobs (``job_ids``, else those matching the query ``where`` and created
        since ``since``, else all), with the jobs they depend on unless ``deps=False``, to ``out`` (#19).

        Raises:
            JobNotFound: a named job does not exist.
            InvalidQuery: ``where`` does not parse; nothing was written.
            InvalidArgument: a named job is not finished and ``include_running`` is false; an unreadable time;
                ``job_ids`` a string; a flag not True or False; ``out`` no path, a folder, a device or unwritable.
        """
        from jobtrack import bundle

        if isinstance(job_ids, str):  # each character would be read as a job id prefix
            raise InvalidArgument(f"job_ids must be a list of job ids, not the string {job_ids!r}; "
                                  f"e.g. export_bundle(out, [{job_ids!r}]).")
        include_running, files, deps = (as_flag(v, w) for v, w in ((include_running, "include_running"),
                                                                    (files, "files"), (deps, "deps")))
        ids = None if job_ids is None else [self.resolve_job_id(j) for j in job_ids]
        return bundle.export_bundle(self._store, out, ids, where=where,
                                    since=None if since is None else parse_when(since),
                                    include_running=include_running, files=files, deps=deps)

    def import_bundle(self, path: str | os.PathLike[str], *,
                      limits: bundle.Limits | None = None) -> bundle.ImportReport:
        """Add a bundle's jobs (and files) to this database; importing it again changes nothing (#19).

        A new machine's database: ``JobManager(path, create=True).import_bundle(bundle)``.

        Raises:
            InvalidBundle: a malformed, tampered or unsafe bundle; nothing was written.
            BundleConflict: something exists here with other content; nothing was written.
        """
        from jobtrack import bundle

        return bundle.import_bundle(self._store, path, limits=limits)

    def compare(self, job_ids: Sequence[str], *, show_all: bool = False) -> Comparison:
        """Compare two or more jobs (ids or unique prefixes; the first is the baseline) field by field (#15).

        The result's ``shown()`` rows are what differs (``show_all``: everything), ``identical`` says
        whether config, code, data and metrics agree, ``as_dict()`` is JSON for scripts.

        Raises:
            InvalidArgument: fewer than two jobs (or not a list of ids), or one named twice.
            JobNotFound, AmbiguousJobId: an id that names no job, or several.
        """
        if isinstance(job_ids, (str, bytes)) or not isinstance(job_ids, Iterable) or len(job_ids := list(job_ids)) < 2:
            raise InvalidArgument(f"compare needs two or more job ids, not {job_ids!r}; "
                                  "e.g. compare(['job_a', 'job_b']).")
        ids = [self.resolve_job_id(j) for j in job_ids]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise InvalidArgument(f"compare names {', '.join(twice)} more than once; a job compared with itself "
                                  "always agrees. Give two or more different jobs.")
        return compare_in(self._store, ids, show_all=show_all)

    def fetch_sweep(self, id_or_name: str) -> SweepMonitor:
        """The monitor of the sweep with this id or name (#17).

        Raises:
            SweepNotFound: no sweep has this id or name.
        """
        from jobtrack.sweep import SweepMonitor

        rec = self._store.get_sweep(id_or_name)
        return SweepMonitor(self._store, rec.id, rec.name)

    def list_sweeps(self) -> list[SweepMonitor]:
        """Every sweep of the database, newest first (#17)."""
        from jobtrack.sweep import SweepMonitor

        return [SweepMonitor(self._store, r.id, r.name) for r in self._store.list_sweeps()]

    def show_jobs(self, *, limit: int | None = DEFAULT_LIMIT, offset: int = 0) -> StatusPage:
        """Jobs' status dicts, newest first (the reference's ``show_jobs``), at most ``limit`` (default 100).

        A million jobs are not read by accident (#14): the page's ``has_more`` says whether more match,
        ``show_jobs(offset=page.next_offset)`` gives the next page and ``limit=None`` every job.

        Raises:
            InvalidArgument: a limit that is not a positive integer or None, an offset below 0.
        """
        _check_page(limit, offset)
        recs = self._store.search_jobs(limit=None if limit is None else min(limit + 1, _INT64_MAX), offset=offset)
        more = limit is not None and len(recs) > limit
        return StatusPage([status_dict(self._store, r) for r in recs[:limit]], has_more=more, offset=offset)


def compare_in(store: Store, job_ids: Sequence[str], *, show_all: bool = False) -> Comparison:
    """``JobManager.compare`` of these jobs (full ids) as ``store`` reads them: through a read-only store (the
    dashboard's) nothing is written, not even a liveness verdict the reads reach."""
    from jobtrack import compare as comparing

    runs = []
    for job_id in job_ids:
        rec = store.get_job(job_id)
        runs.append(comparing.run_facts(rec, store.experiment_facts(job_id), store.result(rec)))
    return comparing.compare(runs, show_all=show_all)
