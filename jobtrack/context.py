"""RunContext: what the user's training and prediction code receives while its job runs."""

from __future__ import annotations

import copy
import logging
import operator
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from jobtrack import checkpoints, exports, jsonutil, runtime
from jobtrack.config import make_private_dir, max_result_bytes
from jobtrack.errors import InvalidArgument, JobCanceled, ResultTooLarge, RunnerFenced, StoreError
from jobtrack.exporting import Exporter, JobExports
from jobtrack.joblog import JobLog, epoch_line
from jobtrack.results import EarlyStopping, prefixed_metric_hint
from jobtrack.states import JobStatus, JobType

if TYPE_CHECKING:
    from jobtrack.spec import JobSpec
    from jobtrack.store import Store

log = logging.getLogger(__name__)


class RunContext:
    """The job's dataset, config and model directory, and the way to report back.

    Training code calls ``log_epoch()`` once per epoch (which also raises ``JobCanceled`` once a
    cancel was requested), ``log()`` for free-form lines, and prediction code ``export()``.
    """

    def __init__(self, store: Store, spec: JobSpec, token: int, *, attempt: int = 1) -> None:
        self._store = store
        self._token = token
        self.attempt = attempt
        """This attempt's number: 1, then 2, ... when the job is retried (``Trainer(retries=N)``, #18)."""
        self._resume_epoch: tuple[int | None] | None = None
        # The largest epoch stored for this job, once known: a first attempt of a new job starts with none,
        # so its epochs (reported in increasing order) are stored without looking for a copy to replace.
        self._top: tuple[int | None] | None = (None,) if attempt == 1 and not spec.retry_of else None
        self.spec = spec
        self.job_id = spec.job_id
        self.job_type = spec.job_type.value
        self.dataset = spec.dataset
        self.config = _own_copy(spec.config)  # the code may change it: never the caller's, nor the next job's
        self.model_run_id = spec.model_run_id
        self.output_alias = spec.output_alias
        self.output_config = dict(spec.output_config)
        self.extract_embeddings = spec.extract_embeddings
        # the reference SDK's options (#22): inference batches, flattened exports, early stopping
        self.test_batch_size = spec.test_batch_size
        self.flatten_output = spec.flatten_output
        self.n_epochs = spec.n_epochs
        self.patience = spec.patience
        self.eval_every = spec.eval_every
        self._early = EarlyStopping(*spec.evaluation(), spec.patience)  # Trainer(eval_metric=) or the task's
        self._early_fed = self._top is not None  # a resumed attempt first replays its stored epochs into it
        sweeps = sys.modules.get("jobtrack.sweep")  # a sweep's trial may have a pruner (#17); no sweep, no cost
        self._pruner = sweeps.pruner_for(spec.job_id) if sweeps is not None else None
        self.max_result_bytes = spec.max_result_bytes or max_result_bytes()
        """The cap of this job's reported epochs and of its summary, in bytes of stored JSON (#13)."""
        self._epoch_bytes = 0  # stored JSON of the epochs reported so far
        self._metric_names: set[str] = set()  # every metric reported, for eval_metric_missing (#13)
        self._validation_names: set[str] = set()  # the validation ones
        self.phase = "predict" if spec.job_type is JobType.INFERENCE else "train"
        self._cancel_seen = False
        self._model_dir = store.model_dir_of(spec.model_run_id or spec.job_id, spec.model_dir)
        # A signal to this process cancels the jobs it runs at that moment (SPEC §5); the handler only
        # bumps a counter, which this job's checks compare with the value it started under.
        self._signals_seen = runtime.signal_state().count
        self._exports = JobExports(self)  # export() batches and exporter() streams (#13)
        self.log_file = JobLog(store.job_dir(spec.job_id) / "log.txt", spec.job_id, spec.max_log_bytes)
        """The job's log file: ``log()`` lines, and the code's output while it runs (``jobtrack.capture``)."""

    def __reduce__(self) -> NoReturn:
        raise InvalidArgument(
            f"A RunContext cannot be pickled to another process: it is this process's link to job {self.job_id} "
            "(its database connection and claim). Lightning's strategy='ddp_spawn' (and other 'spawn' launchers) "
            "pickle the callbacks: use strategy='ddp' or 'ddp_fork' (rank zero reports the job), or report from "
            "the process that has the context.")

    def __copy__(self) -> RunContext:  # a shallow copy shares the link: no pickling involved
        new = object.__new__(RunContext)
        new.__dict__.update(self.__dict__)
        return new

    @property
    def stopped_by_signal(self) -> str | None:
        """The signal (``"SIGINT"``, ``"SIGTERM"``) that stopped this process since the job started, or None."""
        state = runtime.signal_state()
        return state.name if state.count != self._signals_seen else None

    @property
    def model_dir(self) -> Path:
        """The model run's directory: training code saves its model here, prediction code loads it."""
        return make_private_dir(Path(self._model_dir))

    @property
    def job_dir(self) -> Path:
        """This job's own directory (log file, default export location)."""
        return self._store.job_dir(self.job_id)

    @property
    def log_path(self) -> Path:
        return self.job_dir / "log.txt"

    # -- checkpoints and resuming (#18) ------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        """This job's checkpoint directory, kept across its attempts (and copied by ``jobtrack retry``)."""
        return checkpoints.directory(self.job_dir)

    @property
    def resume_epoch(self) -> int | None:
        """The epoch to start from: one after the largest epoch stored for this job, or None if none is.

        Read once, when first asked, so it names where this attempt started.
        """
        if self._resume_epoch is None:
            last = self._store.last_epoch(self.job_id)
            self._resume_epoch = (None if last is None else last + 1,)
        return self._resume_epoch[0]

    def _stored_top(self) -> int | None:
        if self._top is None:
            self._top = (self._store.last_epoch(self.job_id),)
        return self._top[0]

    def _replay_epochs_before(self, epoch: int) -> None:
        """Feed the epochs stored before ``epoch`` (by earlier attempts, or copied by ``jobtrack retry``) to
        early stopping, so a resumed attempt stops where an uninterrupted run would."""
        self._early_fed = True
        if self._stored_top() is not None and self._early.active:
            for old in self._store.epochs(self.job_id):
                if old["epoch"] < epoch:
                    self._early.update(old["epoch"], old["train"], old["validation"])

    def save_checkpoint(self, data: bytes | str | os.PathLike[str], name: str | None = None) -> Path:
        """Store a checkpoint atomically (temp file, fsync, rename): ``data`` as bytes, or a file's path to copy.

        ``name`` defaults to the file's name (``"checkpoint"`` for bytes); ``latest_checkpoint()`` finds it.

        Raises:
            InvalidArgument: data that is neither bytes nor a file, or a name that is not a plain file name.
        """
        return checkpoints.save(self.checkpoint_dir, data, name)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint this job saved (in any attempt, or its retried job's), or None.

        The one ``save_checkpoint()`` saved last; without any, the newest entry a framework callback saved
        in ``checkpoint_dir`` (``last.ckpt``, ``last.keras``, or a ``checkpoint-N`` folder).
        """
        return checkpoints.latest(self.job_dir / checkpoints.DIR_NAME)

    # -- reporting ------------------------------------------------------------------------

    def log_epoch(
        self,
        epoch: int,
        train: Mapping[str, Any] | None = None,
        validation: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record one epoch's training and validation metrics (numbers; NaN/inf are stored as None).

        Returns ``should_stop``: True once the job's ``patience`` rule (``Trainer(patience=N)``) says
        training should stop early; the loop decides (``if ctx.log_epoch(...): break``), and a job that
        stops there completes with ``result["stopped_early"] = True``. Always False without ``patience``.
        In a process the job's code forked as a ``torch.distributed`` rank other than zero, nothing is stored
        (rank zero reports the epoch) and it returns False: broadcast rank zero's decision to the others.

        Raises:
            JobCanceled: a cancel was requested; let it propagate so the job ends CANCELED.
            NotSerializable: a metric that is not a number.
            ResultTooLarge: the epochs reported so far would pass ``max_result_bytes``; nothing was stored.
        """
        if not isinstance(epoch, int) and hasattr(epoch, "__index__") and getattr(epoch, "ndim", 0) == 0:
            with suppress(TypeError):  # a 0-d float array has __index__ too, and refuses: refused below
                epoch = operator.index(epoch)  # numpy.int64, 0-d integer arrays and tensors (#13); not np.array([3])
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise InvalidArgument(f"log_epoch(epoch=...) must be an int, not {type(epoch).__name__} {epoch!r}.")
        if not -(2**63) <= epoch < 2**63:  # the database stores it as a signed 64-bit integer (#21)
            raise InvalidArgument(
                f"log_epoch(epoch={epoch}) does not fit a signed 64-bit integer; "
                "report the epoch's number (0, 1, 2, ...)."
            )
        if _further_rank():  # a forked DDP rank other than zero (#20): rank zero reports the run's epochs
            if self.is_cancel_requested():
                raise JobCanceled(self.job_id)
            return False
        train_clean, bad_t = jsonutil.clean_metrics(train, "train metrics")
        val_clean, bad_v = jsonutil.clean_metrics(validation, "validation metrics")
        for name in bad_t + bad_v:
            self.log(f"epoch {epoch}: metric {name!r} was not finite (NaN or infinite); stored as null")
        if self.stopped_by_signal:  # this process is stopping: the job ends CANCELED, nothing more is written
            self._cancel_seen = True
            raise JobCanceled(self.job_id)
        train_json = jsonutil.dumps(train_clean, "train metrics")
        val_json = jsonutil.dumps(val_clean, "validation metrics")
        t_size, v_size = jsonutil.stored_size(train_json), jsonutil.stored_size(val_json)
        size = self._epoch_bytes + t_size + v_size + 48  # + the epoch's own keys in the result
        if size > self.max_result_bytes:
            biggest = "train metrics" if t_size >= v_size else "validation metrics"
            raise ResultTooLarge(f"log_epoch({epoch}): its {biggest} ({max(t_size, v_size):,} "
                                 "bytes) with the epochs before", size, self.max_result_bytes)
        top = self._stored_top()
        if not self._early_fed:
            self._replay_epochs_before(epoch)
        try:  # as _canceled_if_fenced(), without a context manager's cost on every epoch (#14)
            cancel = self._store.add_epoch(self.job_id, self._token, epoch, train_json, val_json,
                                           replace=top is not None and epoch <= top,
                                           decoded=(train_clean, val_clean))
        except RunnerFenced as exc:
            self._fenced(exc)
        self._top = (epoch if top is None else max(top, epoch),)
        self._epoch_bytes = size
        self._metric_names.update(train_clean, val_clean)
        self._validation_names.update(val_clean)
        self.log(epoch_line(epoch, train_clean, val_clean))  # one log line per reported epoch (#13)
        if cancel:
            self._cancel_seen = True
            raise JobCanceled(self.job_id)
        pruned = self._pruner(epoch, train_clean, val_clean) if self._pruner is not None else None
        if pruned:  # a sweep's pruner (#17): the same cancel path, ending CANCELED with its reason
            self.log(pruned)
            self._store.request_cancel(self.job_id, reason=pruned)
            self._cancel_seen = True
            raise JobCanceled(self.job_id)
        was_stopping = self._early.should_stop
        if self._early.update(epoch, train_clean, val_clean) and not was_stopping:
            self.log(f"early stopping: no improvement of {self._early.metric} in {self.patience} evaluation(s) "
                     f"(best {self._early.best} at epoch {self._early.best_epoch}); should_stop is now True")
        return self._early.should_stop

    @property
    def should_stop(self) -> bool:
        """Whether early stopping (``patience``) says the training loop should end now.

        Asked before a resumed attempt reports its first epoch, the answer counts the epochs stored before it.
        """
        if not self._early_fed and self._early.active and self._stored_top() is not None:
            preview = copy.copy(self._early)  # not fed yet: the epochs go to it at the first log_epoch, once
            for old in self._store.epochs(self.job_id):
                preview.update(old["epoch"], old["train"], old["validation"])
            return preview.should_stop
        return self._early.should_stop

    def should_evaluate(self, epoch: int) -> bool:
        """Whether ``epoch`` is an evaluation epoch under ``eval_every`` (``epoch % eval_every == 0``).

        Raises:
            InvalidArgument: ``epoch`` is not an integer (numpy's count too).
        """
        number = jsonutil.as_int(epoch)
        if number is None:
            raise InvalidArgument(f"should_evaluate(epoch) takes the epoch's number, not {type(epoch).__name__} "
                                  f"{epoch!r}.")
        return number % self.eval_every == 0

    def result_extras(self) -> dict[str, Any]:
        """Entries the runner adds to a completed job's ``result``: ``stopped_early`` when a patience rule is set.

        Also logs it when epochs were reported but never the evaluation metric (``result["eval_metric_missing"]``).
        """
        metric = self._early.metric
        if metric and self._metric_names and not self._early.seen:
            hint = prefixed_metric_hint(metric, self._validation_names)
            self.log(f"no epoch reported {metric!r}, this job's evaluation metric, so it has no best epoch; "
                     f"reported: {', '.join(sorted(self._metric_names))}. " + (f"{hint}." if hint else
                     "Report it, or choose one of these with Trainer(eval_metric=..., eval_mode='max'|'min')."))
        # A resumed attempt that reported no epoch, or a run whose epochs a copy of this context reported
        # in another process (a forked DDP rank, #20): early stopping learns them from the store.
        if self._early.active and (not self._early_fed or not self._metric_names):
            try:
                if not self._metric_names:
                    self._top = None  # read again: other processes may have stored epochs
                top = self._stored_top()
                if top is not None:
                    self._replay_epochs_before(top + 1)
            except StoreError as exc:  # the code completed: a store gone meanwhile must not fail the job
                self.log(f"could not read the stored epochs to tell whether the job stopped early: {exc}")
        stopped = self._early.stopped_early
        return {} if stopped is None else {"stopped_early": stopped}

    def batches(self, table: str | Iterable[Mapping[str, Any]] = "test",
                size: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """The rows of ``table`` (a split name, default ``"test"``, or rows) in lists of ``size`` rows.

        ``size`` defaults to ``test_batch_size`` (``predict(test_batch_size=...)``, 128 as in the reference).

        Raises:
            InvalidArgument: a size that is not a positive integer, a split the dataset lacks, or neither a
                split name nor rows.
        """
        size = self.test_batch_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidArgument(f"batches(size=...) must be a positive integer, not {size!r}.")
        if not isinstance(table, (str, Iterable)) or isinstance(table, Mapping):
            raise InvalidArgument(f"batches(table=...) takes a split name such as 'test' or a list of row dicts, "
                                  f"not {type(table).__name__} {table!r}.")
        rows = self.dataset.table(table) if isinstance(table, str) else table
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(dict(row))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def log(self, message: str) -> None:
        """Append a line to the job's log (``stream_logs()`` and ``jobtrack logs`` show it).

        A log line never fails the job (#21): text that is not valid Unicode (lone surrogates, as
        ``os.fsdecode`` makes) is written with backslash escapes, and a log that cannot be written
        (no permission, disk full) is reported once through ``logging`` and otherwise skipped. Lines
        past the log's cap (``Trainer(max_log_bytes=...)``) are skipped after a note (#13).
        """
        self.log_file.write(message)

    @property
    def cancel_requested(self) -> bool:
        """Whether the user asked this job to stop (checking also renews the runner's lease)."""
        if not self._cancel_seen:
            if self.stopped_by_signal:
                self._cancel_seen = True
            else:
                with self._canceled_if_fenced():
                    self._cancel_seen = self._store.heartbeat(self.job_id, self._token)
        return self._cancel_seen

    @contextmanager
    def _canceled_if_fenced(self) -> Iterator[None]:
        """A runner write refused because the job was CANCELED meanwhile (a signal, another process)
        reaches the job's code as JobCanceled, the way every cancel does."""
        try:
            yield
        except RunnerFenced as exc:
            self._fenced(exc)

    def _fenced(self, exc: RunnerFenced) -> NoReturn:
        if exc.status == JobStatus.CANCELED:
            self._cancel_seen = True
            raise JobCanceled(self.job_id) from None
        raise exc

    def is_cancel_requested(self) -> bool:
        """``cancel_requested`` by one read that takes no lock and renews nothing: cheap enough for every
        training step (the framework callbacks ask at each step boundary, #20). Also True once the job
        ended meanwhile (canceled by a signal, declared lost)."""
        if not self._cancel_seen:
            rec = self._store.get_job(self.job_id, check_liveness=False)
            self._cancel_seen = bool(self.stopped_by_signal or rec.cancel_requested or rec.status.is_terminal)
        return self._cancel_seen

    def check_canceled(self) -> None:
        """Raise JobCanceled if a cancel was requested (for long loops that report no epochs)."""
        if self.cancel_requested:
            raise JobCanceled(self.job_id)

    def export(self, kind: str, rows: Iterable[Mapping[str, Any]]) -> Path | None:
        """Write ``predictions`` or ``embeddings`` rows to a file and a source view; returns the path.

        Each call appends its rows to the same file and view (#13), so large prediction sets can be
        exported batch by batch; ``exporter()`` streams them. Values ML code produces are converted
        (numpy and pandas scalars, arrays as lists, datetimes as UTC text); NaN and infinities are
        stored as null, and the job's log says in which columns and rows. Embeddings are exported only
        when the job was submitted with ``extract_embeddings=True``; otherwise the call is skipped with a
        log line and returns None. With ``flatten_output=True`` predictions are flattened first
        (``jobtrack.flatten``: one row per label or candidate, no ``ground_truth`` column).

        Raises:
            InvalidArgument: an unknown kind, a job without an output alias, or rows whose columns differ
                (from each other or from the earlier batches).
            NotSerializable: a value that cannot be stored, naming its row and column.
        """
        return self._exports.export(kind, rows)

    def exported_kinds(self) -> list[str]:
        """The kinds (``predictions``, ``embeddings``) this job has exported so far."""
        return self._exports.kinds()

    def exporter(self, kind: str, *, batch_rows: int = exports.EXPORT_BATCH_ROWS) -> ContextManager[Exporter]:
        """Stream rows to an export without holding them all: ``with ctx.exporter("predictions") as out:``
        then ``out.write(row)`` or ``out.write_many(rows)``.

        Rows are written in batches of ``batch_rows``, appended like ``export()`` calls; the file, the
        view and ``export_paths`` are complete when the block ends.

        Raises:
            InvalidArgument, NotSerializable: as ``export()`` (from ``write``, ``write_many`` or the end).
        """
        return self._exports.exporter(kind, batch_rows)

    def record_export(self, kind: str, columns: list[str], rows_json: list[str], path: str, view: str, *,
                      first_seq: int) -> None:
        """Store one batch of an export (``jobtrack.exporting``); a canceled job gets JobCanceled."""
        with self._canceled_if_fenced():
            self._store.add_export(self.job_id, self._token, kind, columns, rows_json, path, view,
                                   first_seq=first_seq)


def _own_copy(value: Any) -> Any:
    """A job's own copy of its config's plain containers (dicts, lists, sets, tuples, recursively), so in-process jobs
    never share what the code may change; anything else in them (a model, an array) is the caller's object."""
    kind = type(value)
    if kind is dict:
        return {k: _own_copy(v) for k, v in value.items()}
    if kind in (list, set, tuple):
        return kind(_own_copy(v) for v in value)
    return value


def _further_rank() -> bool:
    """Whether this process is a ``torch.distributed`` rank other than zero (torch is never imported here)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)
