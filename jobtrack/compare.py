"""Comparing runs (#15): what differs between jobs' config, metrics, epochs, duration and provenance.

``compare()`` is pure logic over ``RunFacts`` (built from one job's row, its ``store.experiments`` facts
and its result); the only I/O is hashing each job's saved uncommitted diff (``provenance.file_sha256``,
cached), so that two dirty trees count as the same code when their diffs are equal.

Runs are *identical* when nothing differs that makes a result: config, status, job type, experiment,
epochs, metrics, and the code and data of their provenance (commit, diff, Python, package versions,
dataset hashes). Durations, timestamps, tags, branch names, platform and host are shown but not counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobtrack import jsonutil, provenance
from jobtrack.timeutil import utcnow

if TYPE_CHECKING:
    from jobtrack.store import JobRecord

_UNCOUNTED_PROVENANCE = ("git.branch", "platform", "host")
"""Provenance that tells where a run happened, not what it ran: shown, never a reason for 'not identical'."""


@dataclass(frozen=True)
class RunFacts:
    """One job as ``compare`` sees it."""

    job_id: str
    status: str
    job_type: str
    experiment: str
    eval_metric: str | None
    metric_mode: str | None
    best_metric: float | None
    best_epoch: Any
    epochs: int
    duration_s: float | None  # from the claim (first RUNNING) to the end; None if never claimed or not ended
    config: dict[str, Any]  # flattened: dotted keys
    metrics: dict[str, tuple[float | None, float | None]]  # name -> (best, last), as in ``job_metrics``
    tags: list[str]
    provenance: dict[str, Any] | None


@dataclass(frozen=True)
class Row:
    """One compared field: its value in each job (``present`` False: the job has no such key)."""

    section: str  # "job", "config", "metric", "metrics", "provenance" or "time"
    key: str
    values: tuple[Any, ...]
    present: tuple[bool, ...]
    differs: bool
    counted: bool  # a difference here makes the runs not identical

    def cells(self) -> list[str]:
        """Each job's value as ``jobtrack compare`` shows it (durations as 1.2s, booleans as true/false, ...)."""
        return [_cell(v, p, self.key) for v, p in zip(self.values, self.present, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        out = {"section": self.section, "key": self.key, "values": list(self.values), "differs": self.differs}
        if not all(self.present):
            out["present"] = list(self.present)
        return out


@dataclass(frozen=True)
class Comparison:
    """The result of ``JobManager.compare``: every compared field, and what to show by default."""

    jobs: tuple[str, ...]
    identical: bool
    rows: tuple[Row, ...]  # everything compared, differing or not
    evaluation: dict[str, Any] | None  # the shared eval metric: name, mode, values, deltas, directions
    show_all: bool = False
    durations: tuple[float | None, ...] = field(default=())

    def shown(self) -> list[Row]:
        """The rows to show: those that differ (durations always; metrics besides the evaluation metric only with
        ``show_all``), or all with ``show_all``."""
        return [r for r in self.rows if self.show_all or (r.differs and r.section != "metrics") or r.key == "duration"]

    def hidden(self) -> list[str]:
        """Keys that differ but are shown only with ``show_all``: metrics other than the evaluation metric."""
        return [] if self.show_all else [r.key for r in self.rows if r.differs and r.section == "metrics"]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict: ``jobs``, ``identical``, ``evaluation`` and the shown ``rows``."""
        return {"jobs": list(self.jobs), "identical": self.identical, "evaluation": self.evaluation,
                "rows": [r.as_dict() for r in self.shown()], "hidden": self.hidden()}

    def format(self) -> str:
        """A table for people: one column per job; ``identical`` when nothing counted differs."""
        lines = []
        if self.identical:
            durations = ", ".join(_duration(d) for d in self.durations)
            lines.append(f"identical: same config, code, data and metrics (durations: {durations})")
            if not self.show_all:
                return "\n".join(lines)
        table = [("", *self.jobs)]
        for row in self.shown():
            cells = row.cells()
            if row.section == "metric" and self.evaluation is not None:
                cells = [c + _note(d, w) for c, d, w in
                         zip(cells, self.evaluation["deltas"], self.evaluation["directions"], strict=True)]
            table.append((jsonutil.one_line(row.key), *cells))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        if self.hidden():
            names = ", ".join(map(jsonutil.one_line, self.hidden()[:4]))
            lines.append(f"({len(self.hidden())} other metric value(s) differ: {names}"
                         f"{', ...' if len(self.hidden()) > 4 else ''}; --all shows them)")
        return "\n".join(lines)


def run_facts(rec: JobRecord, facts: dict[str, Any], result: dict[str, Any]) -> RunFacts:
    """RunFacts from a job's record, its ``Store.experiment_facts`` and its result dict."""
    claimed = facts.get("claimed_at")
    duration, end = None, rec.run_end(utcnow())  # a running job's time so far, as `jobtrack list` shows it
    if claimed and end:
        duration = max(0.0, (end - datetime.fromisoformat(claimed)).total_seconds())
    return RunFacts(job_id=rec.id, status=rec.status.value, job_type=rec.job_type.value,
                    experiment=rec.experiment_name, eval_metric=rec.eval_metric, metric_mode=rec.metric_mode,
                    best_metric=result.get("best_metric"), best_epoch=result.get("best_epoch"),
                    epochs=facts["epochs"], duration_s=duration, config=facts["config"], metrics=facts["metrics"],
                    tags=facts["tags"], provenance=facts["provenance"])


def compare(runs: Sequence[RunFacts], *, show_all: bool = False,
            hash_file: Callable[[str], str | None] = provenance.file_sha256) -> Comparison:
    """Compare two or more runs field by field (the first is the baseline for metric deltas)."""
    rows: list[Row] = []

    def add(section: str, key: str, cells: list[tuple[bool, Any]], counted: bool = True) -> None:
        present = tuple(p for p, _ in cells)
        values = tuple(v if p else None for p, v in cells)
        differs = len({(p, _key(v)) for p, v in cells}) > 1
        rows.append(Row(section, key, values, present, differs, counted))

    for name in ("status", "job_type", "experiment", "eval_metric"):
        add("job", name, [(True, getattr(r, name)) for r in runs])
    for key in sorted({k for r in runs for k in r.config}):
        add("config", f"config.{key}", [(key in r.config, r.config.get(key)) for r in runs])
    evaluation = _evaluation(runs)
    label = f"best {evaluation['metric']}" if evaluation else "best_metric"
    add("metric", label, [(True, r.best_metric) for r in runs])
    add("job", "best_epoch", [(True, r.best_epoch) for r in runs])
    add("job", "epochs", [(True, r.epochs) for r in runs])
    add("job", "tags", [(True, ", ".join(r.tags)) for r in runs], counted=False)
    shared = {r.eval_metric for r in runs}
    for name in sorted({n for r in runs for n in r.metrics}):
        if name not in shared or len(shared) > 1:  # the shared eval metric's best value is the row above
            add("metrics", f"best.{name}", [(name in r.metrics, r.metrics.get(name, (None, None))[0]) for r in runs])
        add("metrics", f"last.{name}", [(name in r.metrics, r.metrics.get(name, (None, None))[1]) for r in runs])
    flat = [_flat_provenance(r.provenance, hash_file) for r in runs]
    for key in sorted({k for f in flat for k in f}, key=_provenance_order):
        add("provenance", key, [(key in f, f.get(key)) for f in flat], counted=key not in _UNCOUNTED_PROVENANCE)
    add("time", "duration", [(True, r.duration_s) for r in runs], counted=False)
    identical = not any(r.differs and r.counted for r in rows)
    return Comparison(jobs=tuple(r.job_id for r in runs), identical=identical, rows=tuple(rows),
                      evaluation=evaluation, show_all=show_all, durations=tuple(r.duration_s for r in runs))


def _evaluation(runs: Sequence[RunFacts]) -> dict[str, Any] | None:
    """The eval metric at the best epoch with deltas against the first run and their direction; None when the
    runs do not share one metric and mode (their values are still compared, without direction)."""
    if len({(r.eval_metric, r.metric_mode) for r in runs}) != 1 or not runs[0].eval_metric:
        return None
    mode = runs[0].metric_mode
    base = runs[0].best_metric
    values = [r.best_metric for r in runs]
    deltas: list[float | None] = [None]
    directions: list[str | None] = [None]
    for value in values[1:]:
        if value is None or base is None:
            deltas.append(None)
            directions.append(None)
            continue
        delta = value - base
        deltas.append(delta)
        better = delta > 0 if mode != "min" else delta < 0
        directions.append("equal" if delta == 0 else "better" if better else "worse")
    return {"metric": runs[0].eval_metric, "mode": mode, "values": values, "deltas": deltas,
            "directions": directions}


def _flat_provenance(prov: dict[str, Any] | None, hash_file: Callable[[str], str | None]) -> dict[str, Any]:
    """Provenance as dotted keys; the diff file as the sha256 of its content (``git.diff``)."""
    if prov is None:
        return {}
    out: dict[str, Any] = {}
    git = prov.get("git") or {}  # not in a repository (or no git): every git field None
    out.update({"git.commit": git.get("commit"), "git.branch": git.get("branch"), "git.dirty": git.get("dirty"),
                "git.diff": None})
    if git.get("diff_file"):
        digest = hash_file(git["diff_file"])
        out["git.diff"] = f"sha256:{digest}" if digest else f"{git.get('diff_bytes')} bytes (file missing)"
    for key in ("python", "platform", "host"):
        out[key] = prov.get(key)
    out.update((f"packages.{k}", v) for k, v in (prov.get("packages") or {}).items())
    out.update((f"datasets.{k}", v) for k, v in (prov.get("datasets") or {}).items())
    return out


def _provenance_order(key: str) -> tuple[int, str]:
    order = ("git.commit", "git.branch", "git.dirty", "git.diff", "python", "platform", "host")
    return (order.index(key), key) if key in order else (len(order), key)


def _key(value: Any) -> str:
    """A value in a form that compares equal exactly when the values are equal (1 and 1.0 are equal)."""
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        return json.dumps(value, sort_keys=True, default=str)
    return repr(float(value))


def _cell(value: Any, present: bool, key: str) -> str:
    if not present:
        return "(absent)"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "duration":
        return _duration(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        if key == "git.commit" or key.startswith("datasets."):
            return value[:12]
        if value.startswith("sha256:"):
            return value[:19]
        return jsonutil.one_line(value)  # a newline or escape sequence must not break the table
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _note(delta: float | None, direction: str | None) -> str:
    if delta is None or direction is None:
        return ""
    return f" ({delta:+.4g}, {direction})" if direction != "equal" else " (equal)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"
