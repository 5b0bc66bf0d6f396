"""JsonCodec: exact round trips, and every kind of refusal with a message that says what to do."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from humanoid_training.persistence.codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, JsonCodec
from humanoid_training.persistence.errors import PayloadError

LIMIT_ADVICE = (
    "raise the codec's max_bytes (uowstress: --target-option max_payload_bytes=N) or shrink"
)


def nested_lists(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    """Containers nested in `value` (a scalar has depth 0), counted without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


# --- encoding ---------------------------------------------------------------------------------


def test_encode_is_compact_sorted_and_keeps_unicode() -> None:
    encoded = JsonCodec().encode({"b": [1, 2.5, None, True], "a": "é"})
    assert encoded == '{"a":"é","b":[1,2.5,null,true]}'


def test_equal_dicts_encode_identically_whatever_their_insertion_order() -> None:
    codec = JsonCodec()
    assert codec.encode({"x": 1, "y": {"q": 2, "p": 3}}) == codec.encode(
        {"y": {"p": 3, "q": 2}, "x": 1}
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_encode_refuses_non_finite_floats_and_names_where(bad: float) -> None:
    with pytest.raises(PayloadError, match=r"\$\.metrics\.loss\[1\]") as info:
        JsonCodec().encode({"metrics": {"loss": [0.5, bad]}})
    assert "finite" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [{1, 2}, b"bytes", object(), datetime.date(2024, 1, 1), decimal.Decimal("1.5"), 1j],
    ids=lambda value: type(value).__name__,
)
def test_encode_refuses_values_json_cannot_represent(bad: object) -> None:
    with pytest.raises(PayloadError, match=type(bad).__name__) as info:
        JsonCodec().encode({"config": [bad]})
    assert "$.config[0]" in str(info.value)


@pytest.mark.parametrize("key", [1, 2.5, None, True, ("a", "b")])
def test_encode_refuses_non_string_keys_that_json_would_silently_convert(key: object) -> None:
    with pytest.raises(PayloadError, match="keys must be strings"):
        JsonCodec().encode({key: 1})


def test_encode_refuses_lone_surrogates() -> None:
    with pytest.raises(PayloadError, match="surrogate"):
        JsonCodec().encode({"name": "bad \ud800 text"})


def test_encode_depth_limit_is_inclusive() -> None:
    codec = JsonCodec(max_depth=5)
    assert json.loads(codec.encode(nested_lists(5))) == nested_lists(5)
    with pytest.raises(PayloadError, match=r"depth 6 > limit 5") as info:
        codec.encode(nested_lists(6))
    assert LIMIT_ADVICE in str(info.value)


def test_encode_refuses_very_deep_values_without_recursion_error() -> None:
    with pytest.raises(PayloadError, match=rf"depth {DEFAULT_MAX_DEPTH + 1} > limit"):
        JsonCodec().encode(nested_lists(100_000))


def test_encode_refuses_a_self_referencing_value() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(PayloadError, match="depth"):
        JsonCodec().encode(cycle)


def test_encode_size_limit_counts_utf8_bytes_not_characters() -> None:
    text = "é" * 10  # 10 characters, 20 bytes; with quotes the JSON text is 22 bytes
    assert JsonCodec(max_bytes=22).encode(text) == f'"{text}"'
    with pytest.raises(PayloadError, match=r"22 bytes > limit 21 bytes") as info:
        JsonCodec(max_bytes=21).encode(text)
    assert LIMIT_ADVICE in str(info.value)


def test_encode_refuses_a_value_sharing_sub_objects_without_walking_all_of_it() -> None:
    shared: Any = [0]
    for _ in range(60):  # 2**60 paths: only the node bound can stop the walk in time
        shared = [shared, shared]
    with pytest.raises(PayloadError, match="limit"):
        JsonCodec(max_bytes=1000, max_depth=100).encode(shared)


def test_codec_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        JsonCodec(max_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        JsonCodec(max_depth=0)


# --- decoding ---------------------------------------------------------------------------------


def test_decode_refuses_oversized_text_before_parsing_it() -> None:
    # Invalid JSON: a size error proves that the size was checked first.
    text = "{" + "x" * 200
    with pytest.raises(PayloadError, match=r"201 bytes > limit 100 bytes") as info:
        JsonCodec(max_bytes=100).decode(text)
    assert LIMIT_ADVICE in str(info.value)


def test_decode_measures_str_in_utf8_bytes() -> None:
    text = json.dumps("€" * 10, ensure_ascii=False)  # 30 bytes of text + 2 quotes
    assert JsonCodec(max_bytes=32).decode(text) == "€" * 10
    with pytest.raises(PayloadError, match=r"32 bytes > limit 31 bytes"):
        JsonCodec(max_bytes=31).decode(text)
    with pytest.raises(PayloadError, match=r"32 bytes > limit 31 bytes"):
        JsonCodec(max_bytes=31).decode(text.encode("utf-8"))


def test_decode_refuses_deep_text_before_parsing_it() -> None:
    # Unbalanced and 100,000 deep: the parser would recurse; the scan refuses it first.
    with pytest.raises(PayloadError, match=rf"depth {DEFAULT_MAX_DEPTH + 1} > limit") as info:
        JsonCodec().decode("[" * 100_000)
    assert LIMIT_ADVICE in str(info.value)


def test_decode_deep_text_within_a_raised_limit() -> None:
    text = '{"a":' * 500 + "1" + "}" * 500
    with pytest.raises(PayloadError, match="depth"):
        JsonCodec().decode(text)
    assert depth_of(JsonCodec(max_depth=500).decode(text)) == 500


def test_a_limit_beyond_what_the_parser_can_nest_still_gives_a_payload_error() -> None:
    codec = JsonCodec(max_depth=1_000_000)
    with pytest.raises(PayloadError, match="max_depth"):
        codec.decode("[" * 50_000 + "]" * 50_000)
    with pytest.raises(PayloadError, match="max_depth"):
        codec.encode(nested_lists(50_000))


def test_decode_ignores_brackets_inside_strings() -> None:
    codec = JsonCodec(max_depth=1)
    assert codec.decode('["[[[[{{{{", "\\"[[[[ and ]]]]\\\\"]') == ["[[[[{{{{", '"[[[[ and ]]]]\\']
    with pytest.raises(PayloadError, match=r"depth 2 > limit 1"):
        codec.decode('["\\\\", ["x"]]')  # an escaped backslash must not hide the next quote


def test_decode_reports_the_position_of_invalid_json() -> None:
    with pytest.raises(PayloadError, match=r"line 2, column 7, character 15") as info:
        JsonCodec().decode('{"a": 1,\n "b": ]}')
    assert "invalid JSON" in str(info.value)


def test_decode_reports_an_unterminated_string_as_invalid_json() -> None:
    with pytest.raises(PayloadError, match="Unterminated string"):
        JsonCodec(max_depth=1).decode('["abc [[[[')


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_decode_refuses_non_finite_literals(literal: str) -> None:
    with pytest.raises(PayloadError, match=literal):
        JsonCodec().decode(f'{{"loss": {literal}}}')


def test_decode_refuses_numbers_that_overflow_to_infinity() -> None:
    with pytest.raises(PayloadError, match="1e400"):
        JsonCodec().decode("[1e400]")


def test_decode_accepts_utf8_bytes_and_refuses_other_bytes() -> None:
    assert JsonCodec().decode('{"ß": [1]}'.encode()) == {"ß": [1]}
    with pytest.raises(PayloadError, match="UTF-8"):
        JsonCodec().decode(b'{"a": "\xff"}')


def test_defaults() -> None:
    codec = JsonCodec()
    assert (codec.max_bytes, codec.max_depth) == (DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH)


# --- properties -------------------------------------------------------------------------------


@given(json_values)
def test_any_json_value_within_limits_round_trips(value: Any) -> None:
    codec = JsonCodec()
    encoded = codec.encode(value)
    decoded = codec.decode(encoded)
    assert decoded == value
    # Text equality also tells -0.0 from 0.0 and 1 from 1.0, which == does not.
    assert codec.encode(decoded) == encoded


@given(json_values)
def test_encode_and_decode_agree_on_depth_and_size(value: Any) -> None:
    depth = depth_of(value)
    size = len(JsonCodec().encode(value).encode("utf-8"))
    exact = JsonCodec(max_bytes=size, max_depth=max(depth, 1))
    assert exact.decode(exact.encode(value)) == value
    if depth > 1:
        shallow = JsonCodec(max_depth=depth - 1)
        with pytest.raises(PayloadError, match="depth"):
            shallow.encode(value)
        with pytest.raises(PayloadError, match="depth"):
            shallow.decode(exact.encode(value))
    if size > 1:
        small = JsonCodec(max_bytes=size - 1)
        with pytest.raises(PayloadError, match="bytes > limit"):
            small.encode(value)
        with pytest.raises(PayloadError, match="bytes > limit"):
            small.decode(exact.encode(value))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(number: float) -> None:
    codec = JsonCodec()
    decoded = codec.decode(codec.encode(number))
    assert decoded == number
    assert repr(decoded) == repr(number)  # keeps the sign of zero and every digit
