"""The differences between the model's state and the committed one, in plain words."""

from __future__ import annotations

from uowstress.stateful.executor import diff_states


def test_a_field_only_the_committed_state_has_is_named_with_the_likely_cause() -> None:
    expected = {"members": {"m1": {"name": "Ada"}}}
    actual = {"members": {"m1": {"name": "Ada", "created_at": "2026-11-30 16:48:27"}}}
    (said,) = diff_states(expected, actual)
    assert said.startswith('members[m1] differs: created_at: committed "2026-11-30 16:48:27"')
    assert "a field the model's state does not have" in said and "no clock" in said
    assert "expected null" not in said


def test_a_field_only_the_model_has_and_a_changed_value() -> None:
    expected = {"books": {"b1": {"copies": 3, "title": "Dune"}}}
    actual = {"books": {"b1": {"copies": 2}}}
    (said,) = diff_states(expected, actual)
    assert "copies: expected 3, committed 2" in said
    assert 'title: expected "Dune", a field the committed state does not have' in said


def test_rows_missing_and_unexpected() -> None:
    said = diff_states({"a": {"x": {}}, "b": [1, 2]}, {"a": {"y": {}}, "b": [2, 3]})
    assert said == [
        "a[x] should be committed but is missing",
        "a[y] is committed but should not exist",
        "b: missing 1",
        "b: unexpected 3",
    ]
