"""shared.cjson — JSON over the C module `_json` alone, for the plugin's start-up — means what `json` means."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import cjson

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)


@given(VALUES)
def test_dumps_and_loads_are_json_s(value: object) -> None:
    text = json.dumps(value)
    assert cjson.dumps(value) == text
    assert cjson.loads(text) == json.loads(text)
    assert cjson.loads(text.encode()) == json.loads(text)
    assert cjson.loads(f" \n\t{text}\r\n ") == value or value != value


@given(st.dictionaries(st.text(), SCALARS | st.lists(SCALARS) | st.tuples(SCALARS, SCALARS)))
def test_dumps_flat_is_json_s_indented_form(value: dict[str, object]) -> None:
    assert cjson.dumps_flat(value) == json.dumps(value, indent=1)


@pytest.mark.parametrize(
    "text", ["", " ", "{", '{"a": 1} x', "[1,]", '{"a" 1}', "\ufeff{}", "nul", '"\x01"', "01", "{'a': 1}"]
)
def test_what_json_refuses_cjson_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        cjson.loads(text)


def test_constants_as_json_reads_them_or_as_the_caller_says() -> None:
    assert math.isinf(cjson.loads("[Infinity]")[0]) and math.isnan(cjson.loads("NaN"))

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    with pytest.raises(ValueError, match="NaN is not JSON"):
        cjson.loads('{"a": NaN}', parse_constant=refuse)


def test_what_json_cannot_write_cjson_cannot() -> None:
    with pytest.raises(TypeError):
        cjson.dumps({"a": object()})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        cjson.dumps(loop)
    assert cjson.dumps([1, 2]) == "[1, 2]"  # the encoder after a failure starts clean
