"""The bound on Hypothesis's example cache holds during a machine run and only then."""

from __future__ import annotations

import pytest
from hypothesis.internal.conjecture import engine

from uowstress.stateful.example_cache import EXAMPLES_KEPT, bounded, bounded_example_cache


def test_this_hypothesis_has_the_constant_the_bound_sets() -> None:
    # If a Hypothesis release drops it, the bound lapses silently; this test says so loudly.
    assert bounded()


def test_the_bound_holds_inside_and_is_restored_after() -> None:
    before = engine.CACHE_SIZE
    assert before > EXAMPLES_KEPT
    with bounded_example_cache():
        assert engine.CACHE_SIZE == EXAMPLES_KEPT
        with bounded_example_cache(size=10):  # nested: the outer bound stays
            assert engine.CACHE_SIZE == EXAMPLES_KEPT
        assert engine.CACHE_SIZE == EXAMPLES_KEPT
    assert before == engine.CACHE_SIZE


def test_the_bound_is_restored_when_the_run_raises() -> None:
    before = engine.CACHE_SIZE
    with pytest.raises(RuntimeError), bounded_example_cache():
        raise RuntimeError("a run that fails")
    assert before == engine.CACHE_SIZE
