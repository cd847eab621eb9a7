"""JobMonitor: a handle on one job; thin, reads through the Store, changes state only via the Store."""

from __future__ import annotations

import sys
import time
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypedDict

from jobtrack import jsonutil, liveness, runtime
from jobtrack.config import DEFAULT_WAIT_POLL_S
from jobtrack.dataset import check_tags
from jobtrack.errors import InvalidArgument, ModelNotReady, SnapshotCopy, WaitTimeout
from jobtrack.states import JobStatus, JobType
from jobtrack.statusdoc import finished_status_document, status_document
from jobtrack.store.failures import shown

if TYPE_CHECKING:
    from pathlib import Path

    from jobtrack.store import EventRecord, JobRecord, Store
    from jobtrack.store.jobs import EpochCache


class JobStatusDict(TypedDict):
    """What ``get_status()`` returns: exactly the eleven keys of SPEC §2, all JSON-serializable."""

    job_id: str
    status: str
    started_at: str
    finished_at: str | None
    updated_at: str
    experiment_name: str
    job_type: str
    model_run_id: str | None
    result: dict[str, Any]
    export_paths: dict[str, str]
    source_views: dict[str, str]


def status_dict(store: Store, rec: JobRecord, cache: EpochCache | None = None) -> JobStatusDict:
    """Build the SPEC §2 dict from a job record (``started_at`` is the creation time, as the reference says).

    ``cache``: a monitor's decoded epochs of a running job, extended rather than re-read (#14).
    """
    return status_document(rec.id, rec.status.value, rec.created_iso, rec.finished_iso, rec.updated_iso,
                           rec.experiment_name, rec.job_type.value, rec.model_run_id, store.result(rec, cache),
                           rec.export_paths_json, rec.source_views_json, jsonutil.loads)


class StatusPage(list[JobStatusDict]):
    """What ``JobManager.show_jobs()`` returns: a list of status dicts, one page of them (#14).

    ``has_more`` says whether ``limit`` cut it short; ``next_offset`` is the ``offset=`` of the next page.
    """

    def __init__(self, items: list[JobStatusDict], *, has_more: bool = False, offset: int = 0) -> None:
        super().__init__(items)
        self.has_more = has_more
        self.next_offset: int | None = offset + len(items) if has_more else None


def status_html(status: JobStatusDict | dict[str, Any], tags: list[str] | None = None) -> str:
    """A job's status fields (and tags) as an HTML table with every value escaped (``JobMonitor._repr_html_``)."""
    import html  # not on `jobtrack status`'s path (#14)

    s: dict[str, Any] = dict(status)
    result = s.get("result") or {}
    rows: list[tuple[str, Any]] = [(k, s.get(k)) for k in ("job_id", "status", "job_type", "experiment_name",
                                                          "model_run_id", "started_at", "finished_at", "updated_at")]
    rows += [(k, result[k]) for k in ("eval_metric", "best_epoch", "best_metric") if k in result]
    rows.append(("epochs", len(result.get("epochs", []))))
    if "error" in result:
        rows.append(("error", f"{result['error'].get('type')}: {result['error'].get('message')}"))
    rows += [(f"export_paths.{k}", v) for k, v in (s.get("export_paths") or {}).items()]
    rows += [(f"source_views.{k}", v) for k, v in (s.get("source_views") or {}).items()]
    if tags is not None:
        rows.append(("tags", ", ".join(tags)))
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td style='text-align:left'>{html.escape('-' if v is None else str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table class='jobtrack-job'>{body}</table>"


def check_wait(timeout: object, poll_interval: object) -> None:
    """``wait()``'s arguments: a timeout of seconds >= 0 or None, a poll interval of seconds > 0.

    Raises:
        InvalidArgument: naming the argument, what it got, and an example.
    """
    # `not x >= 0` also refuses NaN, which every comparison would let through (#21)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout >= 0):
        raise InvalidArgument(f"timeout must be a number of seconds >= 0, or None to wait without end, not "
                              f"{type(timeout).__name__} {timeout!r}; use e.g. wait(timeout=60).")
    if (isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float))
            or not 0 < poll_interval < float("inf")):
        raise InvalidArgument(f"poll_interval must be a number of seconds > 0, not "
                              f"{type(poll_interval).__name__} {poll_interval!r}; use e.g. poll_interval=0.05.")


def request_cancel(store: Store, job_id: str) -> JobStatus:
    """Cancel a job (``JobMonitor.cancel``, ``JobManager.cancel_job``); its status right after the call.

    A RUNNING job whose runner is gone is not "asked to stop": it reads as ``get_status()`` reads it
    (FAILED, runner lost), never RUNNING (SPEC §2).
    """
    status = store.request_cancel(job_id)
    return store.get_job(job_id).status if status is JobStatus.RUNNING else status


def _no_worker_hint(store: Store, rec: JobRecord) -> str:
    """For a runner="worker" job still QUEUED while no worker runs a job of its database: say so (#13)."""
    if rec.runner_kind != "worker" or rec.status is not JobStatus.QUEUED:
        return ""
    if any(r.runner_kind == "worker" for r in store.list_jobs(statuses=[JobStatus.RUNNING], limit=None)):
        return ""
    return ("No worker is running a job of this database now, and only a worker runs this one: start one with "
            f"`jobtrack worker --db {shown(store.target)}`.")


class JobMonitor:
    """A job created by ``Trainer.fit()``/``predict()``/``fit_predict()`` or fetched by ``JobManager``."""

    def __init__(self, store: Store, job_id: str, job_type: str, experiment_name: str,
                 model_run_id: str | None) -> None:
        self._store = store
        self._epochs: EpochCache | None = None  # a running job's decoded epochs (#14)
        self._open = False  # last read saw it QUEUED or RUNNING: read the whole row first
        self.job_id = job_id
        self.job_type = job_type if type(job_type) is JobType else JobType(job_type)  # a record's: no Enum call
        self.experiment_name = experiment_name
        self.model_run_id = model_run_id

    @classmethod
    def from_record(cls, store: Store, record: JobRecord) -> JobMonitor:
        """The monitor of a job read from the store."""
        return cls(store, record.id, record.job_type, record.experiment_name, record.model_run_id)

    def __repr__(self) -> str:
        return f"JobMonitor(job_id={self.job_id!r}, job_type={self.job_type.value!r})"

    @property
    def db(self) -> str:
        """The database (path or URL) this job lives in."""
        return self._store.target

    def get_status(self) -> JobStatusDict:
        """The job's current status, metadata and results as a JSON-serializable dict (SPEC §2).

        Raises:
            JobNotFound: the job was removed from the database.
        """
        store = self._store
        if not self._open:
            row = store.finished_status_row(self.job_id)
            if row is not None:  # finished: nothing can change but removal, so one narrow read does
                return finished_status_document(row, jsonutil.loads)
        rec = store.get_job(self.job_id)  # one read of the row; epochs: only the new ones (EpochCache)
        self._open = not rec.is_terminal
        if rec.result_json is not None:
            self._epochs = None
            return status_dict(store, rec)
        if self._epochs is None:
            from jobtrack.store.jobs import EpochCache

            self._epochs = EpochCache()
        return status_dict(store, rec, self._epochs)

    @property
    def status(self) -> JobStatus:
        """Just the current status."""
        return self._store.get_job(self.job_id).status

    def wait(
        self,
        timeout: float | None = None,
        *,
        progress: bool = False,
        poll_interval: float = DEFAULT_WAIT_POLL_S,
        progress_stream: Any = None,
    ) -> JobStatusDict:
        """Block until the job is terminal and return its final status dict.

        ``progress=True`` shows a live line with the latest epoch and metrics (redrawn in a
        terminal, updated in a notebook, one line per epoch in a log).

        Raises:
            WaitTimeout: the job was not terminal after ``timeout`` seconds.
            InvalidArgument: a timeout that is not a number >= 0 (or None), a poll_interval that is not > 0.
            SnapshotCopy: the job was imported from a bundle unfinished; it ends in its own database.
        """
        check_wait(timeout, poll_interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.005, poll_interval)
        # A job this process runs on a thread: its end wakes this wait at once; the store is still read
        # every poll_interval (another process may have ended the job meanwhile).
        running_here = runtime.current().local_jobs.get(self.job_id)
        if running_here is not None and not running_here.done():  # Ctrl-C here cancels it, as in a script: also in
            from jobtrack.runners import signals  # a later notebook cell, whose kernel put its own SIGINT handler back

            signals.watch(self._store)
        bar = None
        if progress:
            from jobtrack.progress import Progress

            bar = Progress(progress_stream)
        try:
            while True:
                if running_here is not None and bar is None and not running_here.done():
                    # not the ramp below: reads while the job's own thread writes only slow it down (#14)
                    futures.wait([running_here], timeout=self._pause(poll_interval, deadline))
                rec = self._store.get_job(self.job_id)
                terminal = rec.is_terminal
                if bar is not None or terminal:
                    current = status_dict(self._store, rec)
                    if bar is not None:
                        bar.update(dict(current))
                    if terminal:
                        return current
                if rec.runner and liveness.is_snapshot(rec.runner):  # imported unfinished: it ends elsewhere (#19)
                    raise SnapshotCopy(self.job_id, rec.status, rec.runner.split("|", 2)[2])
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(self.job_id, timeout or 0.0, rec.status, _no_worker_hint(self._store, rec))
                if running_here is None or running_here.done():  # done, yet not ended here: someone else's now
                    time.sleep(self._pause(delay, deadline))
                elif bar is not None:  # (without a bar, the top of the loop waits on the job's thread)
                    futures.wait([running_here], timeout=self._pause(delay, deadline))
                delay = min(delay * 2, poll_interval if bar is None else max(poll_interval, 0.2))
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def _pause(delay: float, deadline: float | None) -> float:
        return delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))

    def cancel(self) -> JobStatus:
        """Cancel the job: QUEUED → CANCELED at once; RUNNING is asked to stop; terminal is left alone.

        Returns the status right after the call (FAILED for a RUNNING job whose runner is gone).
        """
        return request_cancel(self._store, self.job_id)

    def register_model(self, model_name: str, version_name: str, database_name: str | None = None,
                       schema_name: str | None = None, comment: str | None = None) -> str:
        """Register this job's trained model in the local registry; prints and returns its key.

        The key is ``"database_name.schema_name.model_name.version_name"`` when both namespace names are
        given (the reference SDK's form), else ``"model_name:version_name"``; ``predict(registered_model_key=...)``
        accepts both.

        Raises:
            InvalidArgument: an inference job (it trains no model), a bad name, or only one namespace name.
            ModelNotReady: the job has not completed.
            DuplicateName: this model name already has this version (in this namespace).
        """
        from jobtrack.model_manager import register, registry_key

        registry_key(model_name, version_name, database_name, schema_name)  # names first, as before
        if self.job_type is JobType.INFERENCE or self.model_run_id is None:
            raise InvalidArgument(
                f"Job {self.job_id!r} is an inference job and trained no model; register a train or "
                "train_inference job's model."
            )
        status = self._store.get_job(self.job_id).status
        if status is not JobStatus.COMPLETED:
            raise ModelNotReady(self.model_run_id, status)
        return register(self._store, self.model_run_id, model_name, version_name, database_name, schema_name,
                        comment)

    def materialize_results(self, timeout: float | None = None) -> dict[str, str]:
        """Wait for the job, then copy each of its source views into a permanent table; kind → table name.

        The table of view ``predictions_<alias>`` is ``materialized_predictions_<alias>``, in the job's
        database (plain ``sqlite3`` reads it); it survives ``prune`` of the job. Idempotent: a second call
        returns the same tables. A train job has no results: ``{}``.

        Raises:
            JobNotCompleted: the job ended FAILED or CANCELED (a ``JobMonitorError``).
            TableExists: a table of that name exists and was not made for this job.
            WaitTimeout: the job did not end within ``timeout`` seconds.
        """
        self.wait(timeout)
        return self._store.materialize(self.job_id)

    def materialized_tables(self) -> dict[str, str]:
        """kind → permanent table made by ``materialize_results()`` ({} before it ran)."""
        return self._store.materialized_tables(self.job_id)

    def snapshot_reason(self) -> str | None:
        """How this job came here if it is a snapshot copy (imported from a bundle unfinished, #19), else None."""
        rec = self._store.get_job(self.job_id, check_liveness=False)
        return rec.reason if liveness.is_snapshot(rec.runner) else None

    def events(self) -> list[EventRecord]:
        """The job's status history (job, from, to, when, reason), oldest first."""
        return self._store.events(self.job_id)

    # -- experiments (#15): tags and provenance; neither is a status change ----------------------------------

    def tag(self, *names: str) -> list[str]:
        """Add tags to the job (any status, terminal too; a tag it has already is kept); returns its tags.

        Raises:
            InvalidArgument: a tag that is not a valid name (nothing is written).
            JobNotFound: the job was removed from the database.
        """
        return self._store.change_tags(self.job_id, add=check_tags(list(names)))

    def untag(self, *names: str) -> list[str]:
        """Remove tags from the job (a tag it does not have is ignored); returns its tags.

        Raises:
            InvalidArgument: a tag that is not a valid name (nothing is written).
            JobNotFound: the job was removed from the database.
        """
        return self._store.change_tags(self.job_id, remove=check_tags(list(names)))

    def tags(self) -> list[str]:
        """The job's tags, sorted."""
        return self._store.job_tags(self.job_id)

    def provenance(self) -> dict[str, Any] | None:
        """The code, environment and data the job was submitted with (``jobtrack.provenance``); None if not
        recorded (``Trainer(provenance=False)``)."""
        return self._store.job_provenance(self.job_id)

    def _repr_html_(self) -> str:
        """Jupyter's view of a job: ``status_html`` of its status and tags."""
        return status_html(self.get_status(), self.tags())

    @property
    def log_path(self) -> Path:
        """The job's log file (its ``log()`` lines and captured output); it exists once a line was written."""
        return self._store.job_dir(self.job_id) / "log.txt"

    def stream_logs(self, *, file: Any = None, follow: bool = True, poll_interval: float = 0.2) -> None:
        """Print the job's log lines as they are written, until the job ends (or at once if ``follow=False``).

        Raises:
            InvalidArgument: a poll_interval that is not > 0, or a ``file`` without ``write()``.
            JobNotFound: the job was removed from the database.
        """
        check_wait(None, poll_interval)  # 0 would spin, a negative one fail inside time.sleep
        follow = jsonutil.as_flag(follow, "stream_logs(follow=...)")
        out = file if file is not None else sys.stdout
        if not callable(getattr(out, "write", None)):
            raise InvalidArgument(f"stream_logs(file=...) takes an open text file (anything with write()), not "
                                  f"{type(file).__name__} {file!r}; e.g. file=sys.stderr.")
        path = self.log_path
        pos = 0
        while True:
            terminal = self._store.get_job(self.job_id).is_terminal
            if path.exists():
                with open(path, encoding="utf-8") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
                if chunk:
                    out.write(chunk)
                    out.flush()
            if terminal or not follow:
                return
            time.sleep(poll_interval)
