"""Strict JSON for everything jobtrack stores: no NaN, no pickle, and errors that name the bad key."""

from __future__ import annotations

import json
import math
from typing import Any

from jobtrack.errors import NotSerializable

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any, field: str) -> str:
    """Encode value as compact strict JSON, or raise NotSerializable naming the offending key path."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        path, bad = _find_bad(value, field)
        detail = f"{path} holds {type(bad).__name__} {_short(bad)}" if path else str(exc)
        raise NotSerializable(field, detail) from None


def loads(text: str | None) -> Any:
    """Decode stored JSON (None stays None)."""
    return None if text is None else json.loads(text)


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
