"""The local model registry: model runs and the names and versions given to them."""

from __future__ import annotations

from typing import Any

from jobtrack.errors import DuplicateName, ModelNotFound
from jobtrack.store.jobs import JobsMixin
from jobtrack.store.records import JobRecord
from jobtrack.timeutil import to_iso, utcnow


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
        if row is None:
            raise ModelNotFound(model_run_id)
        run = dict(zip(("id", "job_id", "experiment_name", "task_type", "created_at"), row))
        return run, self.get_job(run["job_id"])

    def resolve_registered(self, key: str) -> str:
        """The model_run_id behind a registered model key ("name:version").

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
