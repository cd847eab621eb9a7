"""Strict JSON for everything jobtrack stores: no NaN, no pickle, and errors that name the bad key."""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
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
    """Encode value as compact strict JSON, or raise NotSerializable naming the offending key path.

    Integers of any size are written exactly; text holding one beyond 64 bits starts with a tab (JSON
    whitespace, see ``loads``). A lone surrogate in a string (what ``os.fsdecode`` makes
    of a byte that is not UTF-8: ``"data_\\udcff.csv"``) cannot be stored as UTF-8, and would leave a job
    unrecordable (#21); it is written as the six characters ``\\udcff`` (a backslash, ``u`` and its hex
    code), as ``errors="backslashreplace"`` writes it in log and export files. So the stored text is valid
    UTF-8, every other character is kept, and the byte stays visible. Not a ``\\udcff`` JSON escape, though
    that would read back exactly in Python: SQLite's ``json_extract`` turns such an escape into invalid
    UTF-8 and PostgreSQL's ``jsonb`` refuses it, which would break the export views.

    Raises:
        NotSerializable: a value JSON cannot hold (NaN, an object, a set, ...), a value that contains
            itself, or one nested deeper than Python's recursion limit.
    """
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):
            pass  # the standard path decides (surrogates, integers beyond 64 bits), and names the offending key
        else:
            # orjson writes NaN and infinities as null; only output without any null is certainly strict
            if b"null" not in out:
                return out.decode()
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotSerializable(field, _describe(value, field, exc)) from None
    if not text.isascii() and _SURROGATE.search(text):  # only inside strings: replaced in place
        text = _SURROGATE.sub(_backslash_surrogate, text)
    if _may_hold_a_long_integer(text):
        text = _LONG_INTEGER_MARK + text
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")

# orjson reads integers from -2**63 to 2**64 - 1 exactly and larger ones as floats (#21). Text that may hold
# such an integer starts with a tab, which is JSON whitespace (every JSON reader, SQLite's json functions and
# PostgreSQL's jsonb skip it) and which neither encoder writes anywhere else (they escape control characters
# in strings), so ``loads`` tells it apart with one substring test. Scanning every text read for long digit
# runs instead costs about half of what orjson needs to decode it, on the status-read path.
_LONG_INTEGER_MARK = "\t"

# Only the standard path can write such an integer (orjson refuses it), so only its output is scanned: first
# for a digit run of 19 or more (the shortest outside orjson's range, -2**63 - 1, has 19) that starts a token
# (after ``:`` ``,`` ``[`` ``-`` or whitespace, not after ``.``: long fractions such as 0.0012345678901234567
# are common and harmless), with one bytes.translate and one substring search; then, only where such a run
# exists, by the value of each. Digits inside a string may still match: that only sends the text to the exact
# standard decoder.
_TOKEN_CLASSES = bytes.maketrans(b"0123456789:,[- \t\r\n", b"9999999999dddddddd")
_LONG_RUN = b"d" + b"9" * 19
_LONG_TOKEN = re.compile(r"(?<![0-9.])-?[0-9]{19,}")


def _may_hold_a_long_integer(text: str) -> bool:
    classes = text.encode("utf-8", "surrogatepass").translate(_TOKEN_CLASSES)
    if _LONG_RUN not in classes and not classes.startswith(_LONG_RUN[1:]):
        return False
    return any(not -(2**63) <= int(m.group()) < 2**64 for m in _LONG_TOKEN.finditer(text))


def _backslash_surrogate(match: re.Match[str]) -> str:
    return f"\\\\u{ord(match.group()):04x}"  # JSON for a backslash, then "udcff": the text \\udcff


def loads(text: str | None) -> Any:
    """Decode stored JSON (None stays None); integers of any size come back exact.

    orjson decodes unless the text starts with (or, spliced into a larger text, holds) the tab ``dumps``
    puts before text with integers beyond 64 bits; the standard decoder reads those exactly.
    """
    if text is None:
        return None
    if _orjson is not None and _LONG_INTEGER_MARK not in text:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass  # e.g. a lone surrogate escape written by another tool: the standard decoder reads it
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


def _describe(value: Any, field: str, exc: BaseException) -> str:
    """What is wrong with value, for NotSerializable: the key path and the bad value, when they can be found."""
    if isinstance(exc, RecursionError):
        return f"it is nested deeper than Python's recursion limit ({sys.getrecursionlimit()})"
    try:
        path, detail = _find_bad(value, field, set())
    except RecursionError:
        path, detail = None, ""
    return f"{path} {detail}" if path else str(exc)


def _find_bad(value: Any, path: str, parents: set[int]) -> tuple[str | None, str]:
    """The key path of the first value the standard encoder refuses, and what it holds."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"holds float {value!r}"
    if value is None or isinstance(value, (str, int, float, bool)):
        return None, ""
    if isinstance(value, (dict, list, tuple)):
        if id(value) in parents:  # the standard encoder's "Circular reference detected"
            return path, "contains itself (a reference cycle); store a copy without the cycle"
        parents.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, (str, int, float, bool)) and key is not None:
                        return f"{path} key {_short(key)}", f"is a {type(key).__name__}, not a string"
                    found = _find_bad(item, f"{path}[{key!r}]", parents)
                    if found[0]:
                        return found
            else:
                for i, item in enumerate(value):
                    found = _find_bad(item, f"{path}[{i}]", parents)
                    if found[0]:
                        return found
        finally:
            parents.discard(id(value))
        return None, ""
    return path, f"holds {type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
