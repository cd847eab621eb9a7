"""Numbers of numpy, pandas and torch as the plain Python values jobtrack stores (``jsonutil``'s helpers).

Every number is stored in 64 bits. A 32- or 16-bit float (bfloat16 too) is stored as the shortest decimal it stands
for: ``np.float32(0.01)`` as ``0.01``, what the user wrote and what ``--where config.lr = 0.01`` finds, not as
``0.009999999776482582``, its exact value in 64 bits (the same 32-bit value, so nothing is lost).
"""

from __future__ import annotations

import math
import operator
import struct
from typing import Any

_BFLOAT16 = "bf16"
"""bfloat16 (torch's, and numpy's through ml_dtypes): no struct format of its own, the upper half of a float32."""

_NARROW = {"float32": "f", "float16": "e", "torch.float32": "f", "torch.float16": "e",
           "bfloat16": _BFLOAT16, "torch.bfloat16": _BFLOAT16}
"""The struct format of each narrow float dtype whose values are stored as the decimals they stand for."""


def item(value: Any) -> Any:
    """A numpy/torch scalar or 0-d array as a Python value (``item()``); numpy's longdouble, whose ``item()`` gives
    back a numpy scalar, as a float; a 32- or 16-bit float as the shortest decimal it stands for."""
    plain = value.item()
    if type(plain) is not float and getattr(getattr(value, "dtype", None), "kind", "") == "f":
        return float(plain)
    if type(plain) is float:
        fmt = _NARROW.get(str(getattr(value, "dtype", "")))
        if fmt is not None:
            return short_float(plain, fmt)
    return plain


def narrow_floats(array: Any, items: list[Any]) -> list[Any]:
    """``items`` (``array.tolist()``) with each float of a 32- or 16-bit ``array`` as the decimal it stands for."""
    fmt = _NARROW.get(str(getattr(array, "dtype", "")))
    return items if fmt is None else [short_float(v, fmt) if type(v) is float else v for v in items]


def _pack(fmt: str, x: float) -> bytes | int:
    """``x`` as a ``fmt`` float, to compare; bfloat16 as float32's upper 16 bits, rounded to nearest even as torch
    converts."""
    if fmt != _BFLOAT16:
        return struct.pack(fmt, x)
    bits: int = struct.unpack("<I", struct.pack("<f", x))[0]
    return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16


def short_float(x: float, fmt: str) -> float:
    """The shortest decimal that is the same ``fmt`` (``"f"``: 32-bit, ``"e"``: 16-bit, ``"bf16"``: bfloat16) float
    as ``x``."""
    try:
        target = _pack(fmt, x)
    except (OverflowError, struct.error):
        return x
    # A 32-bit float from 6 digits: a shorter decimal that is the same value prints the same at 6 (%g drops
    # trailing zeros), as its spacing is below half a 6-digit step; 9 digits tell every 32-bit float apart.
    # A 16-bit float's spacing is not: from 1 digit.
    for digits in range(6 if fmt == "f" else 1, 10):
        shorter = float(f"{x:.{digits}g}")
        try:
            if _pack(fmt, shorter) == target:
                return shorter
        except (OverflowError, struct.error):  # rounded past the format's largest value: try more digits
            continue
    return x


def number(val: Any) -> int | float | None:
    """A metric value as a plain int or float, or None if it is not a real number (bools are not)."""
    if type(val) is float or type(val) is int:  # the common case first
        return val
    if isinstance(val, bool):
        return None
    if isinstance(val, int):
        return int(val)
    if isinstance(val, float):
        return float(val)
    try:
        shape = getattr(val, "shape", None)  # numpy/torch scalars, and arrays and tensors of one element (any ndim)
        if isinstance(shape, tuple) and math.prod(shape) == 1 and hasattr(val, "item"):
            plain = item(val)
            return None if isinstance(plain, bool) or not isinstance(plain, (int, float)) else plain
        if hasattr(val, "__index__"):
            return operator.index(val)
        if hasattr(val, "__float__") and not hasattr(val, "__len__"):
            return float(val)
    except (TypeError, ValueError, OverflowError):
        return None
    return None
