"""ModelManager: the local model registry as the reference SDK's ``ModelManager`` shows it; thin over the Store.

Registry keys come in two forms, both accepted by ``predict(registered_model_key=...)``:
``"model_name:version_name"`` (jobtrack's) and ``"database_name.schema_name.model_name.version_name"``
(the reference's, when ``database_name`` and ``schema_name`` are given). The namespace is part of the
model's name: the same model name and version can be registered once per ``database.schema``.
"""

from __future__ import annotations

import os
from typing import Any

from jobtrack import files
from jobtrack.config import check_lock_timeout
from jobtrack.dataset import check_name
from jobtrack.errors import InvalidArgument, ModelNotReady
from jobtrack.states import JobStatus
from jobtrack.store import Store


def registry_key(model_name: str, version_name: str, database_name: str | None = None,
                 schema_name: str | None = None) -> tuple[str, str]:
    """(key, qualified model name) of a registration, every name checked.

    Raises:
        InvalidArgument: a bad name; only one of database_name/schema_name; a dot inside a four-part key's part.
    """
    check_name(model_name, "model_name")
    check_name(version_name, "version_name")
    if (database_name is None) != (schema_name is None):
        given = "database_name" if schema_name is None else "schema_name"
        raise InvalidArgument(f"Got {given}={database_name if schema_name is None else schema_name!r} alone: pass both "
                              "database_name= and schema_name= (the key is 'database.schema.model.version'), or "
                              "neither (the key is 'model:version'). As in the reference SDK, the arguments after "
                              "version_name are database_name and schema_name; a comment goes in comment=.")
    if database_name is None or schema_name is None:
        return f"{model_name}:{version_name}", model_name
    parts = {"database_name": database_name, "schema_name": schema_name, "model_name": model_name,
             "version_name": version_name}
    for what, value in parts.items():
        check_name(value, what)
        if "." in value:
            raise InvalidArgument(f"{what} {value!r} holds a '.', which separates the parts of the key "
                                  "'database.schema.model.version'; use '_' or '-' instead.")
    qualified = f"{database_name}.{schema_name}.{model_name}"
    return f"{qualified}.{version_name}", qualified


def register(store: Store, model_run_id: str, model_name: str, version_name: str, database_name: str | None,
             schema_name: str | None, comment: str | None, *, experiment_name: str | None = None) -> str:
    """Register a completed model run; prints and returns its key.

    Raises:
        InvalidArgument: a bad name or comment, or ``experiment_name`` that is not the run's.
        ModelNotFound: no such model run.
        ModelNotReady: its training job has not completed.
        DuplicateName: this (qualified) model name already has this version.
    """
    key, qualified = registry_key(model_name, version_name, database_name, schema_name)
    if comment is not None and not isinstance(comment, str):
        raise InvalidArgument(f"comment must be a string or None, not {type(comment).__name__}.")
    run, train_job = store.get_model_run(model_run_id)
    if experiment_name is not None and experiment_name.replace("/", "_") != run["experiment_name"]:
        raise InvalidArgument(f"Model run {model_run_id!r} belongs to experiment {run['experiment_name']!r}, "
                              f"not {experiment_name!r}.")
    if train_job.status is not JobStatus.COMPLETED:
        raise ModelNotReady(model_run_id, train_job.status)
    store.register_model(key, qualified, version_name, model_run_id, comment)
    print(f"Registered model run {model_run_id} as {key!r}; use predict(registered_model_key={key!r}).")
    return key


class ModelManager:
    """Model runs and registered models of one database (``db``, else ``$JOBTRACK_DB``, else the default)."""

    def __init__(self, db: str | os.PathLike[str] | None = None, *, lock_timeout: float | None = None) -> None:
        # Never creates a database (#13): a missing path is DatabaseNotFound; an unwritable one is read read-only.
        self._store = Store.open(db, lock_timeout=None if lock_timeout is None else check_lock_timeout(lock_timeout),
                                 create=False)

    @property
    def db(self) -> str:
        """The database this manager reads and writes."""
        return self._store.target

    def list_models(self) -> list[dict[str, Any]]:
        """Every model run, newest first, with its registered keys.

        Each entry: ``model_run_id``, ``experiment_name``, ``task_type``, ``job_id`` and ``status`` of
        its training job, ``created_at``, and ``registered``: a list of ``key``, ``database_name``,
        ``schema_name`` (None for two-part keys), ``model_name``, ``version_name``, ``comment``, ``created_at``.
        """
        out = self._store.list_model_runs()
        for run in out:
            run["registered"] = [_registration(r) for r in run["registered"]]
        return out

    def delete_model(self, experiment_name: str, model_run_id: str) -> list[str]:
        """Delete a model run: its registry entries and its model files; returns the registry keys removed.

        Its training job and the jobs that used it stay, with their results and exports.

        Raises:
            InvalidArgument: ``experiment_name`` is not the run's experiment.
            ModelNotFound: no such model run.
            ModelInUse: its training job, or a job using it, is QUEUED or RUNNING.
        """
        run, _ = self._store.get_model_run(model_run_id)
        if not isinstance(experiment_name, str) or experiment_name.replace("/", "_") != run["experiment_name"]:
            raise InvalidArgument(f"Model run {model_run_id!r} belongs to experiment {run['experiment_name']!r}, "
                                  f"not {experiment_name!r}; nothing was deleted.")
        keys, paths = self._store.delete_model_run(model_run_id)
        files.remove_paths(paths)
        return keys

    def register_model(self, model_run_id: str, experiment_name: str, model_name: str, version_name: str,
                       database_name: str | None = None, schema_name: str | None = None,
                       comment: str | None = None) -> str:
        """Register a completed model run under ``database.schema.model.version`` (or ``model:version``).

        Prints and returns the key, which ``predict(registered_model_key=...)`` accepts.

        Raises:
            InvalidArgument: a bad name, or ``experiment_name`` that is not the run's.
            ModelNotFound: no such model run.
            ModelNotReady: its training job has not completed.
            DuplicateName: this model already has this version.
        """
        return register(self._store, model_run_id, model_name, version_name, database_name, schema_name, comment,
                        experiment_name=experiment_name)


def _registration(entry: dict[str, Any]) -> dict[str, Any]:
    parts = str(entry["model_name"]).split(".") if ":" not in entry["key"] else [entry["model_name"]]
    database, schema, name = (parts if len(parts) == 3 else [None, None, entry["model_name"]])
    return {"key": entry["key"], "database_name": database, "schema_name": schema, "model_name": name,
            "version_name": entry["version_name"], "comment": entry["comment"], "created_at": entry["created_at"]}
