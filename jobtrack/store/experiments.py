"""Experiments in the store (#15): config parameters, tags, best and last metrics, provenance.

The tables are a contract with the query language (``config.<key>``, ``tag``, ``best.<m>``, ``last.<m>``,
``best_metric``, ``git.*``), so their layout is fixed:

- ``job_params(job_id, key, kind, num_value, text_value)``: the job's config flattened at creation, in the
  job's own write transaction. Nested dicts give dotted keys (``model.depth``); ``kind`` is ``number``
  (int or float in ``num_value``), ``bool`` (1/0 in ``num_value``), ``string`` (``text_value``) or ``null``
  (both NULL). Lists and empty dicts are stored as their JSON text with kind ``string``. Non-finite floats
  are already null in the stored config (``jsonutil``), so they are kind ``null``; integers too large for a
  float are kind ``string``.
- ``job_tags(job_id, tag)``: set at creation and by ``tag``/``untag``; not a status change.
- ``job_metrics(job_id, name, best_value, last_value)``: kept current in each epoch's write transaction.
  Every validation key under its bare name; every train key under ``train.<key>``, and under its bare name
  when validation lacks it. ``last_value`` is the value at the job's last epoch reporting it;
  ``best_value`` the value at the best epoch (``results.best_epoch``: the rule of ``result["best_epoch"]``;
  NULL for a name that epoch did not report, and for every name while no epoch reported the evaluation
  metric). A job without an evaluation metric: best = last. ``jobs.best_metric`` is the evaluation
  metric's value at the best epoch (``result["best_metric"]``).
- ``jobs.provenance_json``: ``jobtrack.provenance.collect()``'s dict as JSON, written with the job row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobtrack import jsonutil, results
from jobtrack.errors import JobNotFound
from jobtrack.store.base import StoreBase, in_list
from jobtrack.store.db import Tx

_INSERT_PARAM = ("INSERT INTO job_params (job_id, key, kind, num_value, text_value) "
                 "VALUES (:job_id, :key, :kind, :num_value, :text_value)")
_INSERT_TAG = "INSERT INTO job_tags (job_id, tag) VALUES (:job_id, :tag) ON CONFLICT (job_id, tag) DO NOTHING"
_UPSERT_BEST = ("INSERT INTO job_metrics (job_id, name, best_value, last_value) VALUES (:id, :name, :v, :v) "
                "ON CONFLICT (job_id, name) DO UPDATE SET best_value = excluded.best_value, "
                "last_value = excluded.last_value")
_UPSERT_LAST = ("INSERT INTO job_metrics (job_id, name, best_value, last_value) VALUES (:id, :name, NULL, :v) "
                "ON CONFLICT (job_id, name) DO UPDATE SET last_value = excluded.last_value")
_UPSERT_NAMES = ("id", "name", "v")
_STATES_KEPT = 256  # running jobs whose best epoch this process tracks incrementally


# -- config parameters (pure) ----------------------------------------------------------------------------


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts as dotted keys (``{"model": {"depth": 4}}`` → ``{"model.depth": 4}``); other values as they
    are. A literal dotted key and a nested one that meet: the later in the document wins."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out[prefix] = value

    for key, value in config.items():
        walk(str(key), value)
    return out


def param_row(job_id: str, key: str, value: Any) -> dict[str, Any]:
    """The ``job_params`` row of one flattened config value (see the module docstring for the kinds)."""
    row: dict[str, Any] = {"job_id": job_id, "key": key, "kind": "null", "num_value": None, "text_value": None}
    if isinstance(value, bool):
        row.update(kind="bool", num_value=1.0 if value else 0.0)
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range: kept exactly, as text
            row.update(kind="string", text_value=str(value))
        else:
            if math.isfinite(number):
                row.update(kind="number", num_value=number)
    elif isinstance(value, str):
        row.update(kind="string", text_value=value)
    elif value is not None:  # lists, empty dicts
        row.update(kind="string", text_value=json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                                        sort_keys=True))
    return row


def config_rows(job_id: str, spec_json: str | None) -> list[dict[str, Any]]:
    """The ``job_params`` rows of a job from its stored spec's ``config`` (JSON-normalised by ``jsonutil``)."""
    doc = jsonutil.loads(spec_json) if spec_json else None
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        return []
    return [param_row(job_id, k, v) for k, v in flatten_config(config).items()]


def backfill(tx: Tx) -> None:
    """Give jobs written before schema 4 what the query language reads: their ``job_params`` (from the stored
    config), ``job_metrics`` and ``jobs.best_metric`` (from the stored epochs). Only jobs that have none of
    these rows are filled, so a job written by schema 4 is left as it is (the upgrade step to 4)."""
    rows = tx.all("SELECT id, spec_json FROM jobs WHERE NOT EXISTS "
                  "(SELECT 1 FROM job_params p WHERE p.job_id = jobs.id)")
    tx.run_many(_INSERT_PARAM, [p for job_id, spec in rows for p in config_rows(str(job_id), spec)])
    for job_id, metric, mode in tx.all(
            "SELECT id, eval_metric, metric_mode FROM jobs WHERE EXISTS (SELECT 1 FROM job_epochs e WHERE e.job_id = "
            "jobs.id) AND NOT EXISTS (SELECT 1 FROM job_metrics m WHERE m.job_id = jobs.id)"):
        _recompute(tx, str(job_id), metric, mode)


def insert_created(tx: Tx, job_id: str, params: list[dict[str, Any]], tags: Iterable[str]) -> None:
    """Write a new job's parameters and tags (inside ``create_job``'s transaction)."""
    tx.run_many(_INSERT_PARAM, params)
    tx.run_many(_INSERT_TAG, [{"job_id": job_id, "tag": t} for t in dict.fromkeys(tags)])


# -- metrics, in each epoch's transaction --------------------------------------------------------------


@dataclass
class _Best:
    """What this process knows of a running job's best epoch, so an epoch costs one upsert, not a re-read."""

    seq: int  # the last epoch row it saw (``jobs.epoch_seq``)
    section: str | None  # "validation" once the metric was reported there, else "train", or None
    value: Any  # the evaluation metric at the best epoch
    epochs: set[int] = field(default_factory=set)  # numbers seen: a repeated one replaces a stored epoch
    names: set[str] = field(default_factory=set)  # metric rows the job has
    metric: str | None = None  # the job's evaluation metric and its mode: set at creation, never changed
    mode: str | None = None


_states: dict[tuple[str, str, int], _Best] = {}  # (database, job, claim token): a cache, re-read when unsure


def _named(train: Mapping[str, Any], validation: Mapping[str, Any]) -> dict[str, Any]:
    """One epoch's ``job_metrics`` names and values (train keys as ``train.<k>``, bare when validation lacks k)."""
    named: dict[str, Any] = {f"train.{k}": v for k, v in train.items()}
    named.update((k, v) for k, v in train.items() if k not in validation)
    named.update(validation)
    return {k: None if v is None or v is True or v is False else float(v) for k, v in named.items()}


def record_epoch(store: StoreBase, tx: Tx, job_id: str, token: int, seq: int, epoch: int, train_json: str,
                 validation_json: str, decoded: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> None:
    """Keep ``job_metrics`` and ``jobs.best_metric`` current after an epoch was written in ``tx``.

    One upsert per epoch while this process has seen every earlier epoch of the claim; otherwise (another
    process, a repeated epoch number, a failed commit) everything is recomputed from the stored epochs.
    ``decoded``: the epoch's metrics as the caller encoded them (saves decoding the JSON again, #14).
    """
    key = (store.target, job_id, token)
    state = _states.pop(key, None)  # back in only once this epoch is accounted for: a failure leaves none
    if state is None and seq == 1:  # the job's first epoch row ever: nothing stored to recount (#14)
        state = _Best(0, None, None, set(), set(), *_evaluation(tx, job_id))
    if state is None or state.seq != seq - 1 or epoch in state.epochs:
        state = _recompute(tx, job_id, *_evaluation(tx, job_id))
    else:
        if decoded is None:
            decoded = jsonutil.loads(train_json) or {}, jsonutil.loads(validation_json) or {}
        _advance(tx, job_id, state, *decoded)
    state.seq = seq
    state.epochs.add(epoch)
    if len(_states) >= _STATES_KEPT:
        _states.clear()
    _states[key] = state


def _evaluation(tx: Tx, job_id: str) -> tuple[str | None, str | None]:
    """The job's evaluation metric and its mode (``max``/``min``), as stored at creation."""
    row = tx.one("SELECT eval_metric, metric_mode FROM jobs WHERE id = :id", {"id": job_id})
    return (None, None) if row is None else (row[0], row[1])


def _better(value: Any, best: Any, mode: str | None) -> bool:
    return bool(value < best) if mode == "min" else bool(value > best)


def _advance(tx: Tx, job_id: str, state: _Best, train: Mapping[str, Any], validation: Mapping[str, Any]) -> None:
    """One new epoch: the same choice as ``results.best_epoch`` (validation first, ties keep the earliest)."""
    metric, mode = state.metric, state.mode
    v, t = validation.get(metric) if metric else None, train.get(metric) if metric else None
    section, value, is_best = state.section, state.value, not metric  # no evaluation metric: best = last
    if v is not None and (section != "validation" or _better(v, value, mode)):
        section, value, is_best = "validation", v, True
    elif v is None and t is not None and section != "validation" and (section is None or _better(t, value, mode)):
        section, value, is_best = "train", t, True
    named = _named(train, validation)
    if is_best and metric:  # the best epoch moved here: names it did not report have no best value
        if not state.names.issubset(named):
            tx.run("UPDATE job_metrics SET best_value = NULL WHERE job_id = :id", {"id": job_id})
        tx.execute_row("UPDATE jobs SET best_metric = :v WHERE id = :id", ("v", "id"), (float(value), job_id))
    tx.run_rows(_UPSERT_BEST if is_best else _UPSERT_LAST, _UPSERT_NAMES, [(job_id, n, x) for n, x in named.items()])
    state.section, state.value = section, value
    state.names.update(named)


def _recompute(tx: Tx, job_id: str, metric: str | None, mode: str | None) -> _Best:
    """Every ``job_metrics`` row and ``best_metric`` of a job from its stored epochs."""
    stored = tx.all("SELECT epoch, train_json, validation_json FROM job_epochs WHERE job_id = :id ORDER BY seq",
                    {"id": job_id})
    # numbered by position, so best_epoch gives the index of the best epoch
    epochs: list[dict[str, Any]] = [{"epoch": i, "train": jsonutil.loads(t) or {},
                                     "validation": jsonutil.loads(v) or {}} for i, (_, t, v) in enumerate(stored)]
    index, value = results.best_epoch(epochs, metric, mode)
    last: dict[str, Any] = {}
    for ep in epochs:
        last.update((n, x) for n, x in _named(ep["train"], ep["validation"]).items())
    if not metric:
        best = dict(last)
    elif index is None:
        best = {}
    else:
        best = _named(epochs[index]["train"], epochs[index]["validation"])
    tx.run("DELETE FROM job_metrics WHERE job_id = :id", {"id": job_id})
    tx.run_many("INSERT INTO job_metrics (job_id, name, best_value, last_value) VALUES (:id, :name, :best, :last)",
                [{"id": job_id, "name": n, "best": best.get(n), "last": x} for n, x in last.items()])
    tx.run("UPDATE jobs SET best_metric = :v WHERE id = :id", {"v": None if value is None else float(value),
                                                               "id": job_id})
    section = None
    if index is not None:
        section = "validation" if epochs[index]["validation"].get(metric) is not None else "train"
    return _Best(-1, section, value, {int(e) for e, _, _ in stored}, set(last), metric, mode)


# -- reads and tag writes ----------------------------------------------------------------------------------


class ExperimentsMixin(StoreBase):
    """Tags, parameters, metrics and provenance of jobs (the rows the query language reads)."""

    def change_tags(self, job_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove tags of a job (names already checked); returns its tags after, sorted. Idempotent.

        Raises:
            JobNotFound: no job has this id (nothing is written).
        """
        add, remove = list(dict.fromkeys(add)), list(dict.fromkeys(remove))
        with self.db.write() as tx:
            if tx.one("SELECT id FROM jobs WHERE id = :id", {"id": job_id}) is None:
                raise JobNotFound(job_id, self.target)
            if remove:
                params: dict[str, Any] = {"id": job_id}
                tx.run(f"DELETE FROM job_tags WHERE job_id = :id AND tag IN {in_list('t', remove, params)}", params)
            tx.run_many(_INSERT_TAG, [{"job_id": job_id, "tag": t} for t in add])
            return [r[0] for r in tx.all("SELECT tag FROM job_tags WHERE job_id = :id ORDER BY tag", {"id": job_id})]

    def job_tags(self, job_id: str) -> list[str]:
        """A job's tags, sorted.

        Raises:
            JobNotFound: no job has this id.
        """
        with self.db.read() as tx:
            return _tags(tx, job_id, self.target)

    def job_provenance(self, job_id: str) -> dict[str, Any] | None:
        """A job's provenance dict (``jobtrack.provenance``), or None if it was not recorded.

        Raises:
            JobNotFound: no job has this id.
        """
        row = self.db.read_one("SELECT provenance_json FROM jobs WHERE id = :id", {"id": job_id})
        if row is None:
            raise JobNotFound(job_id, self.target)
        return None if row[0] is None else dict(jsonutil.loads(row[0]))

    def experiment_facts(self, job_id: str) -> dict[str, Any]:
        """What ``show`` and ``compare`` need of a job beyond its status: config (flattened, from the stored
        spec), tags, metrics (name → (best, last)), epochs stored, provenance, and when it was claimed.

        Raises:
            JobNotFound: no job has this id.
        """
        with self.db.read() as tx:
            row = tx.one("SELECT spec_json, provenance_json, best_metric FROM jobs WHERE id = :id", {"id": job_id})
            if row is None:
                raise JobNotFound(job_id, self.target)
            tags = _tags(tx, job_id, self.target)
            metrics = {n: (b, v) for n, b, v in tx.all("SELECT name, best_value, last_value FROM job_metrics "
                                                       "WHERE job_id = :id ORDER BY name", {"id": job_id})}
            epochs = tx.scalar("SELECT COUNT(*) FROM job_epochs WHERE job_id = :id", {"id": job_id})
            claimed = tx.scalar("SELECT MIN(at) FROM job_events WHERE job_id = :id AND to_status = 'RUNNING'",
                                {"id": job_id})
        spec = jsonutil.loads(row[0]) or {}
        config: dict[str, Any] = spec["config"] if isinstance(spec.get("config"), dict) else {}
        return {"config": flatten_config(config), "tags": tags, "metrics": metrics, "epochs": int(epochs or 0),
                "provenance": None if row[1] is None else jsonutil.loads(row[1]), "best_metric": row[2],
                "claimed_at": claimed}


def _tags(tx: Tx, job_id: str, target: str) -> list[str]:
    rows = tx.all("SELECT tag FROM job_tags WHERE job_id = :id ORDER BY tag", {"id": job_id})
    if not rows and tx.one("SELECT id FROM jobs WHERE id = :id", {"id": job_id}) is None:
        raise JobNotFound(job_id, target)
    return [str(r[0]) for r in rows]
