"""Strict JSON for everything jobtrack stores: no NaN, no pickle, and errors that name the bad key."""

from __future__ import annotations

import importlib
import json
import math
from typing import Any

from jobtrack.errors import NotSerializable

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)

_orjson: Any
try:  # the ``fast`` extra: the same JSON, encoded and decoded about four times faster
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - exercised by the core-only CI step
    _orjson = None

# orjson must never accept what the standard encoder refuses: types it would serialize itself
# (datetime, dataclasses, subclasses) are passed to a default that refuses them, which sends the
# value down the standard path, where it is encoded or refused exactly as without the extra.
_ORJSON_OPTIONS = (
    _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_SUBCLASS
    if _orjson is not None
    else 0
)


def _refuse(value: Any) -> Any:
    raise TypeError


def dumps(value: Any, field: str) -> str:
    """Encode value as compact strict JSON, or raise NotSerializable naming the offending key path."""
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):
            pass  # the standard path decides, and names the offending key
        else:
            # orjson writes NaN and infinities as null; only output without any null is certainly strict
            if b"null" not in out:
                return out.decode()
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        path, bad = _find_bad(value, field)
        detail = f"{path} holds {type(bad).__name__} {_short(bad)}" if path else str(exc)
        raise NotSerializable(field, detail) from None


def loads(text: str | None) -> Any:
    """Decode stored JSON (None stays None)."""
    if text is None:
        return None
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass  # e.g. integers beyond 64 bits: the standard decoder reads them
    return json.loads(text)


def splice(obj_json: str, members: dict[str, str | None]) -> str:
    """Add already-encoded members to an encoded JSON object (members whose value is None are left out).

    >>> splice('{"a":1}', {"b": '[2]', "c": None})
    '{"a":1,"b":[2]}'
    """
    extra = ",".join(f"{_ENCODER.encode(k)}:{v}" for k, v in members.items() if v is not None)
    if not extra:
        return obj_json
    return obj_json[:-1] + ("," if obj_json != "{}" else "") + extra + "}"


def clean_metrics(values: Any, field: str) -> tuple[dict[str, float | int | None], list[str]]:
    """Check a metrics mapping: string keys, real-number values; NaN/±inf become None.

    Returns the cleaned mapping and the names of the non-finite values that were replaced,
    so the caller can log them (a diverged loss is information, not a crash).
    """
    if values is None:
        return {}, []
    if not isinstance(values, dict):
        raise NotSerializable(field, f"expected a dict of metric name to number, got {type(values).__name__}")
    out: dict[str, float | int | None] = {}
    replaced: list[str] = []
    for key, val in values.items():
        if not isinstance(key, str):
            raise NotSerializable(field, f"metric name {key!r} is not a string")
        if isinstance(val, bool) or not _is_number(val):
            raise NotSerializable(f"{field}[{key!r}]", f"{type(val).__name__} {_short(val)} is not a number")
        number = float(val) if not isinstance(val, int) else val
        if isinstance(number, float) and not math.isfinite(number):
            replaced.append(key)
            out[key] = None
        else:
            out[key] = number
    return out, replaced


def _is_number(val: Any) -> bool:
    if isinstance(val, (int, float)):
        return True
    # numpy scalars and similar: anything with a lossless __float__ and no length
    return hasattr(val, "__float__") and not hasattr(val, "__len__")


def _find_bad(value: Any, path: str) -> tuple[str | None, Any]:
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if value is None or isinstance(value, (str, int, float, bool)):
        return None, None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{path} key {key!r}", key
            found = _find_bad(item, f"{path}[{key!r}]")
            if found[0]:
                return found
        return None, None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _find_bad(item, f"{path}[{i}]")
            if found[0]:
                return found
        return None, None
    return path, value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
