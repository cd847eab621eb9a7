"""The local model registry: model runs and the names and versions given to them."""

from __future__ import annotations

from typing import Any

from jobtrack import jsonutil
from jobtrack.errors import DuplicateName, ModelInUse, ModelNotFound
from jobtrack.store.jobs import JobsMixin
from jobtrack.store.records import JobRecord
from jobtrack.store.tx import Tx
from jobtrack.timeutil import to_iso, utcnow


def model_in_use(tx: Tx, job_id: str, model_run_id: str) -> tuple[str, str] | None:
    """(id, status) of the oldest QUEUED or RUNNING job that needs this model run (its training job ``job_id``,
    or a job that uses it), or None: deleting the model then would fail that job."""
    row = tx.one("SELECT id, status FROM jobs WHERE (id = :job OR model_run_id = :m) "
                 "AND status IN ('QUEUED', 'RUNNING') ORDER BY created_at LIMIT 1", {"job": job_id, "m": model_run_id})
    return None if row is None else (str(row[0]), str(row[1]))


class RegistryMixin(JobsMixin):
    """Model runs (one per train or train_inference job) and registered model keys."""

    def get_model_run(self, model_run_id: str) -> tuple[dict[str, Any], JobRecord]:
        """The model run and its training job.

        Raises:
            ModelNotFound: no such model run.
        """
        with self.db.read() as tx:
            row = tx.one("SELECT id, job_id, experiment_name, task_type, created_at FROM model_runs WHERE id = :id",
                         {"id": model_run_id})
            trained = None if row else tx.scalar("SELECT id FROM model_runs WHERE job_id = :id", {"id": model_run_id})
        if row is None:  # the reference's model_run_id is the training job's id: ported code passes that (#22)
            raise ModelNotFound(model_run_id, "" if trained is None else (
                f"that is the id of a training job, whose model run is {trained!r}; pass model_run_id={trained!r} "
                "(the training job's monitor.model_run_id)"))
        run = dict(zip(("id", "job_id", "experiment_name", "task_type", "created_at"), row, strict=True))
        return run, self.get_job(run["job_id"])

    def resolve_registered(self, key: str) -> str:
        """The model_run_id behind a registered model key (``"name:version"`` or ``"database.schema.name.version"``).

        Raises:
            ModelNotFound: no registered model has this key.
        """
        with self.db.read() as tx:
            run_id = tx.scalar("SELECT model_run_id FROM registered_models WHERE key = :key", {"key": key})
        if run_id is None:
            raise ModelNotFound(key, "no registered model has this key")
        return str(run_id)

    def register_model(self, key: str, model_name: str, version_name: str, model_run_id: str,
                       comment: str | None) -> None:
        """Record a registry entry; a (name, version) pair can be registered once.

        Raises:
            DuplicateName: this model name already has this version.
        """
        with self.db.write() as tx:
            if tx.one("SELECT key FROM registered_models WHERE model_name = :n AND version_name = :v",
                      {"n": model_name, "v": version_name}):
                raise DuplicateName(
                    f"Model {model_name!r} already has a version {version_name!r}; choose a new version_name.")
            tx.run("INSERT INTO registered_models (key, model_name, version_name, model_run_id, comment, created_at) "
                   "VALUES (:key, :n, :v, :m, :c, :at)",
                   {"key": key, "n": model_name, "v": version_name, "m": model_run_id, "c": comment,
                    "at": to_iso(utcnow())})

    # -- ModelManager: every model run, and deleting one (#22) ----------------------------------------

    def list_model_runs(self) -> list[dict[str, Any]]:
        """Every model run, newest first: its experiment, training job and status, and its registry entries."""
        with self.db.read() as tx:
            runs = tx.all("SELECT m.id, m.experiment_name, m.task_type, m.job_id, j.status, m.created_at "
                          "FROM model_runs m JOIN jobs j ON j.id = m.job_id ORDER BY m.created_at DESC, m.id DESC")
            regs = tx.all("SELECT key, model_name, version_name, model_run_id, comment, created_at "
                          "FROM registered_models ORDER BY created_at, key")
        by_run: dict[str, list[dict[str, Any]]] = {}
        for key, name, version, run_id, comment, at in regs:
            by_run.setdefault(run_id, []).append({"key": key, "model_name": name, "version_name": version,
                                                  "comment": comment, "created_at": at})
        return [{"model_run_id": run_id, "experiment_name": experiment, "task_type": task, "job_id": job_id,
                 "status": status, "created_at": at, "registered": by_run.get(run_id, [])}
                for run_id, experiment, task, job_id, status, at in runs]

    def delete_model_run(self, model_run_id: str) -> tuple[list[str], list[str]]:
        """Remove a model run and its registry entries; returns (registry keys removed, files to delete).

        The training job stays (its history and result); jobs that used the model keep their results.
        The caller deletes the files after this transaction commits (``jobtrack.files.remove_paths``).

        Raises:
            ModelNotFound: no such model run.
            ModelInUse: its training job, or a job using it, is still QUEUED or RUNNING.
        """
        with self.db.write() as tx:
            job_id = tx.scalar(f"SELECT job_id FROM model_runs WHERE id = :m{self.db.for_update}",
                               {"m": model_run_id})
            if job_id is None:
                raise ModelNotFound(model_run_id)
            busy = model_in_use(tx, job_id, model_run_id)
            if busy is not None:
                raise ModelInUse(model_run_id, busy[0], busy[1])
            keys = [str(k) for (k,) in tx.all("SELECT key FROM registered_models WHERE model_run_id = :m ORDER BY key",
                                              {"m": model_run_id})]
            spec_json = tx.scalar("SELECT spec_json FROM jobs WHERE id = :job", {"job": job_id})
            tx.run("DELETE FROM registered_models WHERE model_run_id = :m", {"m": model_run_id})
            tx.run("DELETE FROM model_runs WHERE id = :m", {"m": model_run_id})
        recorded = (jsonutil.loads(spec_json or "{}") or {}).get("model_dir")
        folder = self.model_dir_of(model_run_id, recorded)  # where it is now; another database's is left alone
        return keys, [folder] if self.inside_files(folder) else []  # a model is made in its files folder
