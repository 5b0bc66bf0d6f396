"""The reference target's arguments prefer what another session's open unit of work holds
(`Ids.contended`), and draw as before when nothing is held."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from humanoid_training.target import MISSING, _existing, _prefer
from uowstress.target import Ids

IDS = ["r3", "r1", "r2"]  # sorted by the target: r1, r2, r3


def _drawing(value: int) -> Any:
    """A draw function that answers every integer draw with `value` (within its bounds)."""

    def draw(strategy: st.SearchStrategy[Any]) -> Any:
        bounds = strategy.wrapped_strategy if hasattr(strategy, "wrapped_strategy") else strategy
        low, high = bounds.start, bounds.end  # type: ignore[attr-defined]
        assert low <= value <= high, (value, low, high)
        return value

    return draw


def test_ids_hold_nothing_contended_until_a_machine_says_so() -> None:
    assert Ids().contended == []


@pytest.mark.parametrize(("value", "chosen"), [(0, "r1"), (26, "r3"), (27, MISSING), (29, MISSING)])
def test_without_contention_an_id_is_drawn_as_it_always_was(value: int, chosen: str) -> None:
    # Nine in ten existing, one in ten missing, from a single draw over 10 x 3 values.
    assert _existing(_drawing(value), IDS, []) == chosen
    assert _existing(_drawing(value), IDS, ["x9", "someone"]) == chosen  # nothing held is ours


@pytest.mark.parametrize(
    ("value", "chosen"),
    [
        (0, "r2"),  # the lower half: the held ids, latest first
        (1, "r3"),
        (2, "r2"),
        (29, "r3"),
        (30, "r1"),  # the upper half: as without contention
        (56, "r3"),
        (57, MISSING),
        (59, MISSING),
    ],
)
def test_with_contention_half_the_draws_take_a_held_id(value: int, chosen: str) -> None:
    assert _existing(_drawing(value), IDS, ["r2", "a name", "r3"]) == chosen


def test_a_preferred_id_that_is_held_comes_first() -> None:
    free, every = ["r1", "r2"], IDS
    # Held and preferred: the lower half of the draw.
    assert _prefer(_drawing(0), free, every, ["r2"]) == "r2"
    assert _prefer(_drawing(7), free, every, ["r2"]) == "r2"
    # Upper half: three quarters among the preferred ...
    assert _prefer(_drawing(8), free, every, ["r2"]) == "r1"
    assert _prefer(_drawing(13), free, every, ["r2"]) == "r2"
    # Held but not preferred (a busy robot): not taken over the preferred ones.
    assert _prefer(_drawing(0), free, every, ["r3"]) == "r1"


def test_draws_over_many_values_stay_within_the_ids_or_missing() -> None:
    for value in range(60):
        assert _existing(_drawing(value), IDS, ["r2"]) in {*IDS, MISSING}
