"""Strict JSON for everything jobtrack stores: no NaN, no pickle, and errors that name the bad key.

Values ML code produces are converted on the way in (#13), by one ``default=`` hook shared by the
orjson and standard paths (``plain``), without importing numpy, pandas or torch: scalars and 0-d arrays
through ``.item()`` (else ``__index__``, else ``__float__``), 1-d arrays and Series of at most
``MAX_ARRAY_ITEMS`` items as lists, ``datetime`` as ISO 8601 UTC text, ``Path`` as text, tuples as
lists, pandas' ``NA``/``NaT`` as null. NaN and infinities are stored as null; ``dumps(...,
nonfinite=[])`` reports where.
"""

from __future__ import annotations

import datetime as _dt
import enum
import importlib
import json
import math
import operator
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from math import isfinite as _isfinite
from pathlib import PurePath
from typing import Any

from jobtrack.errors import NotSerializable
from jobtrack.scalars import item as _item, narrow_floats, number as _number

MAX_ARRAY_ITEMS = 10_000
"""Largest 1-d array (numpy, pandas, torch) a summary, config or result may hold; it is stored as a list.

Anything larger belongs in a file under ``ctx.model_dir`` or in an export (``ctx.export``/``ctx.exporter``).
"""


def plain(value: Any) -> Any:
    """``value`` as a type JSON holds, for values the encoders do not know (their ``default=`` hook).

    Raises:
        TypeError: a value jobtrack does not store (an object, a set, bytes, a 2-d or a large array),
            with the reason as its message.
    """
    kind = type(value)
    if isinstance(value, str):  # subclasses (StrEnum, numpy.str_): orjson passes them here
        return str.__str__(value)
    if isinstance(value, int):  # bool is never a subclass; IntEnum is
        return int(value)
    if isinstance(value, float):  # numpy.float64
        return float(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if kind.__name__ in ("NAType", "NaTType"):  # pandas' missing values (NaT is also a datetime)
        return None
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return _iso(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):  # orjson writes an enum's value: so does the standard path
        return value.value
    import uuid  # not on `jobtrack status`'s path (#14)

    if isinstance(value, uuid.UUID):  # likewise
        return str(value)
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(shape, (int, str)):
        ndim = len(shape)
        if ndim == 0 and hasattr(value, "item"):  # numpy/torch scalars and 0-d arrays
            item = _item(value)
            if isinstance(item, complex) or type(item) is type(value):  # complex, and numpy's clongdouble
                raise TypeError(f"holds {kind.__name__} {_short(value)}, which is not a real number")
            return item
        if ndim == 1 and hasattr(value, "tolist"):
            if shape[0] > MAX_ARRAY_ITEMS:
                raise TypeError(f"holds a 1-d {kind.__name__} of {shape[0]} items, more than the {MAX_ARRAY_ITEMS} a "
                                "stored value may hold; save it to a file under ctx.model_dir, or export it")
            items = value.tolist()
            return narrow_floats(value, items)
        raise TypeError(f"holds a {ndim}-d {kind.__name__} of shape {tuple(shape)}; store a 1-d list of at most "
                        f"{MAX_ARRAY_ITEMS} items, or save it to a file under ctx.model_dir")
    if hasattr(value, "__index__"):
        return operator.index(value)
    if hasattr(value, "__float__") and not hasattr(value, "__len__"):  # Decimal, Fraction
        return float(value)
    if hasattr(kind, "__dataclass_fields__"):  # a dataclass instance: its fields are likely storable
        raise TypeError(f"holds the dataclass {kind.__name__} {_short(value)}; store dataclasses.asdict() of it")
    raise TypeError(f"holds {kind.__name__} {_short(value)}")


def _iso(value: _dt.date | _dt.time) -> str:
    """A datetime as ISO 8601 UTC text (a naive one is read as local time, as ``datetime.astimezone`` does)."""
    if not isinstance(value, _dt.datetime):
        return value.isoformat()
    if type(value) is not _dt.datetime:  # pandas.Timestamp: its own astimezone refuses naive values
        value = _dt.datetime.combine(value.date(), value.timetz())
    try:
        return value.astimezone(_dt.UTC).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError) as exc:  # a naive time outside what the platform converts
        raise TypeError(f"holds datetime {value!r}, which cannot be converted to UTC ({exc})") from None


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False, default=plain)

_orjson: Any
try:  # the ``fast`` extra: the same JSON, encoded and decoded about four times faster
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - exercised by the core-only CI step
    _orjson = None

# orjson must store exactly what the standard path stores: types it would serialize its own way (datetime,
# dataclasses, subclasses) are passed to the same ``plain`` hook the standard encoder uses.
_ORJSON_OPTIONS = (
    _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_SUBCLASS
    if _orjson is not None
    else 0
)


@contextmanager
def standard_library_only() -> Iterator[None]:
    """Encode and decode with the standard ``json`` module meanwhile, as without the ``fast`` extra.

    For benchmarks that compare the two paths in one process; not thread-safe.
    """
    global _orjson
    saved, _orjson = _orjson, None
    try:
        yield
    finally:
        _orjson = saved


def dumps(value: Any, field: str, *, nonfinite: list[str] | None = None) -> str:
    """Encode value as compact strict JSON, or raise NotSerializable naming the offending key path.

    Values ML code produces are converted first (``plain``); NaN and infinities are written as null,
    and their key paths appended to ``nonfinite`` when a list is given (so the caller can log them).

    Integers of any size are written exactly; text holding one beyond 64 bits starts with a tab (JSON
    whitespace, see ``loads``). A lone surrogate in a string (what ``os.fsdecode`` makes
    of a byte that is not UTF-8: ``"data_\\udcff.csv"``) cannot be stored as UTF-8, and would leave a job
    unrecordable (#21); it is written as the six characters ``\\udcff`` (a backslash, ``u`` and its hex
    code), as ``errors="backslashreplace"`` writes it in log and export files. So the stored text is valid
    UTF-8, every other character is kept, and the byte stays visible. Not a ``\\udcff`` JSON escape, though
    that would read back exactly in Python: SQLite's ``json_extract`` turns such an escape into invalid
    UTF-8 and PostgreSQL's ``jsonb`` refuses it, which would break the export views.

    Raises:
        NotSerializable: a value jobtrack does not store (an object, a set, a large array, ...), a value
            that contains itself, or one nested deeper than Python's recursion limit.
    """
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(value, default=plain, option=_ORJSON_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):
            pass  # the standard path decides (surrogates, integers beyond 64 bits), and names the offending key
        else:
            # orjson writes NaN and infinities as null: only output with a null may hold one, to be located
            if nonfinite is not None and b"null" in out:
                with suppress(_Refused, RecursionError):  # orjson took it, so the walk does too
                    _finite(value, field, nonfinite, set())
            return out.decode()
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise NotSerializable(field, f"it is nested deeper than Python's recursion limit ({sys.getrecursionlimit()})"
                              ) from None
    except (TypeError, ValueError):  # a NaN, a cycle, a key or value to convert or refuse: walk it
        found: list[str] = []
        try:
            clean = _finite(value, field, found, set())
        except _Refused as bad:
            raise NotSerializable(field, f"{bad.path} {bad.detail}") from None
        except RecursionError:
            raise NotSerializable(
                field, f"it is nested deeper than Python's recursion limit ({sys.getrecursionlimit()})") from None
        if nonfinite is not None:
            nonfinite.extend(found)
        text = _ENCODER.encode(clean)
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


def stored_size(text: str) -> int:
    """The bytes ``text`` takes stored (UTF-8): what ``max_result_bytes`` caps, not its count of characters."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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


_METRIC_HINT = ("A metric is one number under a string name: a float or an int, or a numpy, pandas or torch scalar, "
                "array or tensor of one element (NaN and infinities are stored as null); leave out a metric an epoch "
                "does not have.")


def clean_metrics(values: Any, field: str) -> tuple[dict[str, float | int | None], list[str]]:
    """Check a metrics mapping: string keys, real-number values (numpy, pandas and torch scalars and arrays
    of one element too, as plain numbers); NaN/±inf become None.

    Returns the cleaned mapping and the names of the non-finite values that were replaced,
    so the caller can log them (a diverged loss is information, not a crash).
    """
    if values is None:
        return {}, []
    if not isinstance(values, dict):
        raise NotSerializable(field, f"expected a dict of metric name to number, got {type(values).__name__}",
                              _METRIC_HINT)
    out: dict[str, float | int | None] = {}
    replaced: list[str] = []
    for key, val in values.items():
        if type(key) is str and not key.isascii() and _SURROGATE.search(key):  # a name os.fsdecode made (#21)
            key = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)  # as dumps() writes it: \udcff
        if type(val) is float and type(key) is str:  # the common case, without the calls below (#14)
            if _isfinite(val):
                out[key] = val
            else:
                replaced.append(key)
                out[key] = None
            continue
        if not isinstance(key, str):
            raise NotSerializable(field, f"metric name {key!r} is not a string", _METRIC_HINT)
        number = _number(val)
        if number is None:
            raise NotSerializable(f"{field}[{key!r}]", f"{type(val).__name__} {_short(val)} is not a number",
                                  _METRIC_HINT)
        if isinstance(number, float) and not math.isfinite(number):
            replaced.append(key)
            out[key] = None
        else:
            out[key] = number
    return out, replaced


def as_flag(value: Any, what: str) -> bool:
    """A True/False argument (numpy's True from a comparison too); "no", 0 or None is refused, never taken as truthy.

    Raises:
        InvalidArgument: anything else.
    """
    if getattr(getattr(value, "dtype", None), "kind", "") == "b" and getattr(value, "shape", None) == ():
        value = bool(value)
    if not isinstance(value, bool):
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument(f"{what} must be True or False, not {type(value).__name__} {value!r}.")
    return value


def as_int(value: Any) -> int | None:
    """An integer argument as a plain int: an int, or what ``operator.index`` takes (numpy and torch integer
    scalars, 0-d integer arrays); None for anything else, bools included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        return None


def storable(value: Any, field: str, *, nonfinite: list[str] | None = None) -> tuple[Any, list[str]]:
    """What can be stored of ``value``, and what could not be (#13): for a summary that must not fail its job.

    Each value ``dumps`` would refuse is replaced by the text ``"<not stored: TypeName>"`` (a key by its
    ``repr``), and described in the returned list (``"summary['model'] holds LogisticRegression ..."``).
    NaN and infinities become None (their paths appended to ``nonfinite``, as ``dumps`` does). A value
    nested too deep for the walk gives (None, [why]).
    """
    problems: list[str] = []
    try:
        return _storable(value, field, problems, set(), [] if nonfinite is None else nonfinite), problems
    except RecursionError:
        return None, [f"{field} is nested deeper than Python's recursion limit ({sys.getrecursionlimit()})"]


def _storable(value: Any, path: str, problems: list[str], parents: set[int], nonfinite: list[str]) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        nonfinite.append(path)
        return None
    if value is None or (isinstance(value, (str, int, bool)) and type(value) in (str, int, bool)):
        return value
    if isinstance(value, (dict, list, tuple)) and type(value) in (dict, list, tuple):
        if id(value) in parents:
            problems.append(f"{path} contains itself (a reference cycle)")
            return "<not stored: a reference cycle>"
        parents.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for k, v in value.items():
                    try:
                        key = _key(k, path)
                    except _Refused as bad:
                        problems.append(f"{bad.path} {bad.detail}")
                        key = _short(k)
                    out[key] = _storable(v, f"{path}[{k!r}]", problems, parents, nonfinite)
                return out
            return [_storable(v, f"{path}[{i}]", problems, parents, nonfinite) for i, v in enumerate(value)]
        finally:
            parents.discard(id(value))
    try:
        converted = plain(value)
    except (TypeError, ValueError, OverflowError) as exc:
        detail = str(exc) if str(exc).startswith("holds") else f"holds {type(value).__name__} {_short(value)}"
        problems.append(f"{path} {detail}")
        return f"<not stored: {type(value).__name__}>"
    return _storable(converted, path, problems, parents, nonfinite)


class _Refused(Exception):
    """A value ``_finite`` cannot store: where it is and why."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(path, detail)
        self.path = path
        self.detail = detail


def _finite(value: Any, path: str, nonfinite: list[str], parents: set[int]) -> Any:
    """A copy of ``value`` made of plain JSON types: converted by ``plain``, NaN and infinities as None (their
    paths appended to ``nonfinite``).

    Raises:
        _Refused: naming the path of a value ``plain`` refuses, or of a reference cycle.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        nonfinite.append(path)
        return None
    if value is None or (isinstance(value, (str, int, bool)) and type(value) in (str, int, bool)):
        return value
    if isinstance(value, (dict, list, tuple)) and type(value) in (dict, list, tuple):
        if id(value) in parents:  # the standard encoder's "Circular reference detected"
            raise _Refused(path, "contains itself (a reference cycle); store a copy without the cycle")
        parents.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k, path): _finite(v, f"{path}[{k!r}]", nonfinite, parents) for k, v in value.items()}
            return [_finite(v, f"{path}[{i}]", nonfinite, parents) for i, v in enumerate(value)]
        finally:
            parents.discard(id(value))
    try:
        converted = plain(value)
    except (TypeError, ValueError, OverflowError) as exc:
        detail = str(exc) if str(exc).startswith("holds") else f"holds {type(value).__name__} {_short(value)}"
        raise _Refused(path, detail) from None
    return _finite(converted, path, nonfinite, parents)


def _key(key: Any, path: str) -> Any:
    """A dict key as the standard encoder takes it: str, int, float, bool or None (others converted or refused)."""
    if key is None or type(key) in (str, int, bool):
        return key
    if isinstance(key, float):
        return key if math.isfinite(key) else repr(key)
    try:
        converted = plain(key)
    except (TypeError, ValueError, OverflowError):
        converted = key
    if converted is None or isinstance(converted, (str, int, float, bool)):
        return converted
    raise _Refused(f"{path} key {_short(key)}", f"is a {type(key).__name__}, not a string")


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user object whose __repr__ fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def one_line(text: str) -> str:
    """``text`` for one cell of a table a terminal shows: each character that is not printable (a newline, a tab,
    an escape sequence's ESC, a lone surrogate) written as its Python escape (``\\n``, ``\\x1b``), the rest as is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
