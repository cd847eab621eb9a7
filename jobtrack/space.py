"""Search spaces of sweeps (#17): choices, ranges and fixed values; the grid and random samplers; the median rule.

Pure: no I/O and no jobtrack state. A space maps config keys to a list of choices (``[2, 4, 8]``), a
range (``uniform(a, b)``, ``loguniform(a, b)``, ``randint(a, b)``) or a fixed value; ``parse_space``
reads the CLI's ``"lr=loguniform(1e-4,1e-1); depth=[2,4,8]"`` without ``eval``.
"""

from __future__ import annotations

import ast
import itertools
import math
import random
import re
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobtrack import jsonutil
from jobtrack.errors import InvalidArgument, NotSerializable

SAMPLERS = ("grid", "random")
"""The built-in samplers; any Optuna sampler object is accepted as well (``optuna`` extra)."""

PRUNERS = ("median",)
"""The built-in pruner; an Optuna pruner object is accepted as well (``optuna`` extra)."""


_SCALAR = (str, int, float, bool, type(None))


def _scalar(value: Any) -> Any:
    """A numpy (or torch, pandas) scalar as the plain value it holds; anything else as it is."""
    if type(value) in _SCALAR:
        return value
    try:
        plain = jsonutil.plain(value)
    except (TypeError, ValueError, OverflowError):
        return value
    return plain if isinstance(plain, _SCALAR) else value


def _number(value: Any, what: str) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number, not {type(value).__name__} {value!r}.")
    return float(value)


@dataclass(frozen=True)
class Range:
    """A continuous or integer range a random sampler draws from: ``uniform``, ``loguniform`` or ``randint``."""

    kind: str  # "uniform", "loguniform" or "randint"
    low: float
    high: float

    def __post_init__(self) -> None:
        _number(self.low, f"{self.kind}(low, ...)")
        _number(self.high, f"{self.kind}(..., high)")
        if not self.low < self.high and not (self.kind == "randint" and self.low == self.high):
            raise InvalidArgument(f"{self.kind}({self.low}, {self.high}): low must be below high.")
        if self.kind == "loguniform" and self.low <= 0:
            raise InvalidArgument(f"loguniform({self.low}, {self.high}): both bounds must be > 0.")

    def sample(self, rng: random.Random) -> float | int:
        """One value drawn with ``rng``: uniform in [low, high), log-uniform, or an integer in [low, high]."""
        if self.kind == "randint":
            return rng.randint(int(self.low), int(self.high))
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high}

    def __repr__(self) -> str:
        low, high = (int(self.low), int(self.high)) if self.kind == "randint" else (self.low, self.high)
        return f"{self.kind}({low!r}, {high!r})"


def uniform(low: float, high: float) -> Range:
    """A float drawn uniformly from [low, high) for each trial of a random sweep."""
    return Range("uniform", _scalar(low), _scalar(high))


def loguniform(low: float, high: float) -> Range:
    """A float drawn log-uniformly from [low, high) (both > 0): learning rates, regularisation strengths."""
    return Range("loguniform", _scalar(low), _scalar(high))


def randint(low: int, high: int) -> Range:
    """An integer drawn uniformly from [low, high], both ends included."""
    bounds = []
    for v, what in ((low, "low"), (high, "high")):
        number = jsonutil.as_int(v)  # numpy's integers too
        if number is None:
            raise InvalidArgument(f"randint({what}=...) must be an integer, not {type(v).__name__} {v!r}.")
        bounds.append(number)
    return Range("randint", *bounds)


def _choices(value: Any, key: str) -> Any:
    """Choices given as what ML code builds them with (``np.logspace(...)``, ``range(2, 10, 2)``, a pandas Series)
    as a list; any other value as it is."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray, list, tuple)):
        return list(value)
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and len(shape) == 1 and hasattr(value, "tolist"):
        return list(value.tolist())
    if isinstance(shape, tuple) and len(shape) > 1:
        raise InvalidArgument(f"space[{key!r}]: a {len(shape)}-d {type(value).__name__} of shape {shape} is not a "
                              "list of choices; give a 1-d array or a list.")
    return value


def _check_value(value: Any, key: str, *, choice: bool = False) -> Any:
    value = _scalar(value)  # np.float64(0.1) -> 0.1, np.str_ -> str: stored and compared as plain values
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"space[{key!r}]: {value!r} is not a finite number.")
    if not isinstance(value, _SCALAR):
        if choice:  # [[64, 32], [128]]: choices that are lists themselves
            raise InvalidArgument(f"space[{key!r}]: each choice must be one number, string, bool or None, not "
                                  f"{type(value).__name__} {value!r}; name structured choices by a string "
                                  f"(e.g. {{'layers': ['64-32', '128']}}) and build them from it in the training code.")
        raise InvalidArgument(f"space[{key!r}]: a value must be a number, string, bool or None, not "
                              f"{type(value).__name__} {value!r}; use a list for choices.")
    return value


@dataclass(frozen=True)
class Space:
    """A checked search space: for each key, its choices (a tuple), its range, or its fixed value."""

    params: tuple[tuple[str, Any], ...]  # (key, tuple of choices | Range | fixed value), sorted by key

    @classmethod
    def of(cls, space: Any) -> Space:
        """Check a user's ``space`` mapping.

        Raises:
            InvalidArgument: not a mapping, a bad key, an empty list of choices, a value that cannot be stored.
        """
        if isinstance(space, Space):
            return space
        if not isinstance(space, Mapping) or not space:
            raise InvalidArgument(f"space must be a non-empty dict of config key -> choices, range or value, not "
                                  f"{type(space).__name__} {space!r}; e.g. {{'lr': jobtrack.loguniform(1e-4, 1e-1)}}.")
        params = []
        for key, value in space.items():
            if not isinstance(key, str) or not key or not key.isprintable():
                raise InvalidArgument(f"space keys must be config key names, not {key!r}.")
            value = _choices(value, key)
            if isinstance(value, (list, tuple)):
                if not value:
                    raise InvalidArgument(f"space[{key!r}] is an empty list; give at least one choice.")
                value = tuple(_check_value(v, key, choice=True) for v in value)
                if len(set(map(repr, value))) != len(value):
                    raise InvalidArgument(f"space[{key!r}] lists a choice twice: {list(value)!r}.")
            elif not isinstance(value, Range):
                value = _check_value(value, key)
            params.append((key, value))
        return cls(tuple(sorted(params, key=lambda kv: kv[0])))

    @property
    def ranges(self) -> list[str]:
        return [k for k, v in self.params if isinstance(v, Range)]

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the grid, in a fixed order (the last key changes fastest).

        Raises:
            InvalidArgument: the space has ranges, which have no grid.
        """
        if self.ranges:
            raise InvalidArgument(f"sampler='grid' needs choices, not ranges: {', '.join(self.ranges)} "
                                  f"{'is a range' if len(self.ranges) == 1 else 'are ranges'}; list the values "
                                  "to try (e.g. [1e-3, 1e-2]) or use sampler='random'.")
        keys = [k for k, _ in self.params]
        axes = [v if isinstance(v, tuple) else (v,) for _, v in self.params]
        return [dict(zip(keys, point, strict=True)) for point in itertools.product(*axes)]

    def grid_size(self) -> int:
        return math.prod(len(v) if isinstance(v, tuple) else 1 for _, v in self.params)

    def sample(self, seed: int, trial: int) -> dict[str, Any]:
        """The random sampler's point for trial number ``trial``: the same for the same seed in any process."""
        rng = random.Random(f"jobtrack-sweep/{seed}/{trial}")
        out: dict[str, Any] = {}
        for key, value in self.params:
            if isinstance(value, Range):
                out[key] = value.sample(rng)
            elif isinstance(value, tuple):
                out[key] = value[rng.randrange(len(value))]
            else:
                out[key] = value
        return out

    def to_spec(self) -> dict[str, Any]:
        """A JSON-ready description, compared when a sweep is resumed."""
        return {k: (v.to_spec() if isinstance(v, Range) else list(v) if isinstance(v, tuple) else {"fixed": v})
                for k, v in self.params}

    def describe(self) -> str:
        """``depth=[2, 4, 8]; lr=loguniform(0.0001, 0.1)``: the CLI's own syntax."""
        return "; ".join(f"{k}={list(v) if isinstance(v, tuple) else v!r}" for k, v in self.params)


# -- a trial's config ----------------------------------------------------------------------------------

_SWEPT = object()  # a config value a space sets in every trial (resume_config)


def with_params(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config: ``config`` with the sampled ``params``. A dotted name (``"model.depth"``) that is not a key
    of ``config`` but reaches into its nested dicts sets the nested value (copied, never changed in place), so the
    training code reads the value the trial stores as ``config.model.depth``."""
    out = dict(config)
    for key, value in params.items():
        parts = key.split(".")
        node = out
        if key not in out and len(parts) > 1 and isinstance(out.get(parts[0]), Mapping):
            for part in parts[:-1]:
                child = node.get(part, {})
                if not isinstance(child, Mapping):
                    break  # a plain value on the way: the dotted name stays a key of its own
                node[part] = node = dict(child)
            else:
                node[parts[-1]] = value
                continue
            node = out
        node[key] = value
    return out


def resume_config(config: Mapping[str, Any], space: Space) -> dict[str, Any]:
    """The Trainer's config as a resumed sweep compares it: what the space does not set in every trial, values as
    stored, one that cannot be stored (kept in memory by in-process runners) by its type's name."""
    def unswept(value: Any) -> Any:  # a nested dict the space reaches into, without the values it sets
        return {k: unswept(v) for k, v in value.items() if v is not _SWEPT} if isinstance(value, dict) else value

    out: dict[str, Any] = {}
    swept = with_params(config, dict.fromkeys((k for k, _ in space.params), _SWEPT))  # the space's keys, marked
    for key, value in swept.items():
        if value is _SWEPT:
            continue
        value = unswept(value)
        try:
            out[key] = jsonutil.loads(jsonutil.dumps(value, "config value"))
        except NotSerializable:
            out[key] = f"<{type(value).__name__}>"
    return out


def param_of(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value ``with_params`` placed for ``key``: the key itself, else the nested value its dotted name reaches."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# -- the CLI's space syntax -----------------------------------------------------------------------------

_RANGE_CALL = re.compile(r"^(uniform|loguniform|randint)\((.*)\)$", re.S)


def parse_space(text: str) -> Space:
    """``"lr=loguniform(1e-4,1e-1); depth=[2,4,8]; act='relu'"`` as a Space; literals only, never ``eval``.

    Raises:
        InvalidArgument: a part without ``=``, an unknown function, or a value that is not a literal.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("--space is empty; write e.g. \"lr=loguniform(1e-4,1e-1); depth=[2,4,8]\".")
    space: dict[str, Any] = {}
    for part in (p.strip() for p in _split(text)):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise InvalidArgument(f"--space part {part!r} is not KEY=VALUE; write e.g. \"depth=[2,4,8]\".")
        if key in space:
            raise InvalidArgument(f"--space names {key!r} twice.")
        match = _RANGE_CALL.match(raw)
        if match:
            args = _literal(f"({match.group(2)},)", part)
            if len(args) != 2:
                raise InvalidArgument(f"--space part {part!r}: {match.group(1)} takes two numbers (low, high).")
            fn = {"uniform": uniform, "loguniform": loguniform, "randint": randint}[match.group(1)]
            space[key] = fn(*args)
        else:
            value = _literal(raw, part)
            space[key] = list(value) if isinstance(value, (list, tuple)) else value
    return Space.of(space)


def _split(text: str) -> list[str]:
    """Split on ``;`` outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ";" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _literal(raw: str, part: str) -> Any:
    try:
        with warnings.catch_warnings():  # "1or 2": Python's compiler warns before the error below says what is wrong
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", raw):
            return raw  # a bare word is a string: act=relu
        raise InvalidArgument(f"--space part {part!r}: {raw!r} is not a number, string, list or "
                              "uniform/loguniform/randint(low, high).") from None


# -- pruning: the median rule -------------------------------------------------------------------------

MEDIAN_MIN_TRIALS = 2
"""Earlier trials that must have reported an epoch before the median rule may prune at that epoch."""


def median_says_prune(value: float | None, others: Sequence[float], mode: str) -> bool:
    """Whether ``value`` at an epoch is worse than the median of earlier trials' values at the same epoch.

    >>> median_says_prune(0.5, [0.8, 0.9, 0.7], "max")
    True
    >>> median_says_prune(0.5, [0.8], "max")
    False
    """
    if value is None or len(others) < MEDIAN_MIN_TRIALS:
        return False
    median = statistics.median(others)
    return value < median if mode == "max" else value > median


def better(a: float, b: float, mode: str) -> bool:
    """Whether metric value ``a`` is better than ``b`` in direction ``mode`` ("max" or "min")."""
    return a > b if mode == "max" else a < b


# -- Optuna (the ``optuna`` extra): ask/tell with a study rebuilt in memory, no Optuna storage --------------

History = list[tuple[dict[str, Any], str, float | None, dict[int, float]]]
"""Earlier trials for Optuna: (params, "COMPLETE"/"PRUNED"/"FAIL", value, {epoch: metric value})."""


def _study(optuna: Any, space: Space, mode: str, history: History, sampler: Any = None, pruner: Any = None) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" at every ask
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", sampler=sampler, pruner=pruner)
    dists = _distributions(optuna, space)
    state = optuna.trial.TrialState
    for params, kind, value, curve in history:
        known = {k: v for k, v in params.items() if k in dists}
        if len(known) != len(dists):
            continue  # a trial of another space cannot inform this one
        study.add_trial(optuna.trial.create_trial(
            params=known, distributions=dists, value=value if kind == "COMPLETE" else None,
            intermediate_values=curve, state=getattr(state, kind)))
    return study


def _distributions(optuna: Any, space: Space) -> dict[str, Any]:
    d = optuna.distributions
    out: dict[str, Any] = {}
    for key, value in space.params:
        if isinstance(value, Range):
            out[key] = (d.IntDistribution(int(value.low), int(value.high)) if value.kind == "randint"
                        else d.FloatDistribution(value.low, value.high, log=value.kind == "loguniform"))
        elif isinstance(value, tuple):
            out[key] = d.CategoricalDistribution(value)
    return out


def optuna_ask(sampler: Any, space: Space, mode: str, history: History) -> dict[str, Any]:
    """The next point an Optuna sampler proposes after ``history`` (fixed values of the space added)."""
    import optuna

    study = _study(optuna, space, mode, history, sampler=sampler)
    trial = study.ask(_distributions(optuna, space))
    fixed = {k: v for k, v in space.params if not isinstance(v, (Range, tuple))}
    return {**fixed, **trial.params}


def optuna_should_prune(pruner: Any, space: Space, mode: str, history: History, curve: dict[int, float]) -> bool:
    """Whether an Optuna pruner stops a trial whose metric so far is ``curve`` ({epoch: value}), given ``history``."""
    import optuna

    study = _study(optuna, space, mode, history, pruner=pruner)
    trial = study.ask()
    for step in sorted(curve):
        trial.report(curve[step], step)
    return bool(trial.should_prune())
