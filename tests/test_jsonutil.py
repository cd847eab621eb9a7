"""Strict JSON: the optional orjson fast path must accept and refuse exactly what the standard path does.

Both write NaN and infinities as null (#13); everything else as the standard encoder does."""

from __future__ import annotations

import dataclasses
import enum
import json
import math

import pytest
from hypothesis import example, given, settings, strategies as st

from jobtrack import NotSerializable, jsonutil

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4),
    max_leaves=20,
)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _standard(value: object) -> object:
    try:
        return json.loads(json.dumps(_finite(value), allow_nan=False))
    except (TypeError, ValueError):
        return NotSerializable


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_dumps_agrees_with_the_standard_encoder(value: object) -> None:
    expected = _standard(value)
    try:
        got = json.loads(jsonutil.dumps(value, "v"))
    except NotSerializable:
        got = NotSerializable
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(json_values)
# integers orjson would read as floats (issue #21), and a 19-digit run that is only a string
@example({"n": -(2**63) - 1, "m": 2**64, "k": [10**30, -(10**19)]})
@example(["1234567890123456789012", 2**63 - 1, -(2**63)])
def test_loads_reads_back_what_dumps_wrote(value: object) -> None:
    try:
        text = jsonutil.dumps(value, "v")
    except NotSerializable:
        return
    assert jsonutil.loads(text) == json.loads(text)


class Color(enum.IntEnum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [
    {"p": Point(1)}, {"obj": object()}, {(1, 2): "tuple key"}, {"s": {1, 2}}, {"b": b"bytes"},
])
def test_values_jobtrack_does_not_store_are_refused_with_the_key_named(value: dict[object, object]) -> None:
    with pytest.raises(NotSerializable) as info:
        jsonutil.dumps(value, "summary")
    assert "summary" in str(info.value)


def test_a_refused_dataclass_is_named_with_the_fix() -> None:
    """A dataclass (a training run's summary, say) was refused as "holds Point Point(x=1)", with no way out named."""
    with pytest.raises(NotSerializable) as info:
        jsonutil.dumps({"p": Point(1)}, "summary")
    assert "summary['p'] holds the dataclass Point Point(x=1); store dataclasses.asdict() of it" in str(info.value)
    stored, problems = jsonutil.storable({"p": Point(1), "n": 2}, "the returned summary")
    assert stored == {"p": "<not stored: Point>", "n": 2} and "dataclasses.asdict()" in problems[0]


def test_subclasses_and_big_integers_encode_as_the_standard_encoder_does() -> None:
    value = {"color": Color.RED, "big": 2**70, 3: "int key", "none": None}
    assert json.loads(jsonutil.dumps(value, "v")) == json.loads(json.dumps(value))
    assert jsonutil.loads(json.dumps({"big": 2**70})) == {"big": 2**70}


def test_without_the_fast_extra_the_standard_path_does_the_same(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    blocker = tmp_path / "orjson.py"
    blocker.write_text("raise ImportError('fast extra not installed')\n")
    code = (
        "import json, math, sys\n"
        "from jobtrack import jsonutil, NotSerializable\n"
        "assert 'orjson' not in sys.modules  # the blocker's import failed: only the standard path is left\n"
        "assert json.loads(jsonutil.dumps({'a': [1, 2.5, None]}, 'v')) == {'a': [1, 2.5, None]}\n"
        "assert jsonutil.loads('{\"a\": 1}') == {'a': 1}\n"
        "assert jsonutil.dumps({'x': math.nan, 'when': __import__('datetime').date(2026, 1, 2)}, 'v') == "
        "'{\"x\":null,\"when\":\"2026-01-02\"}'\n"
        "try:\n    jsonutil.dumps({'x': object()}, 'v')\nexcept NotSerializable as e:\n    print('refused', e.field)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused v"
