"""uowstress's Hypothesis profiles and the settings of its machines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from uowstress.profiles import PROFILES, machine_settings


@pytest.fixture
def loaded_ci() -> Iterator[None]:
    """Hypothesis's own ci profile loaded, as it is wherever CI is set."""
    previous = settings._current_profile
    settings.load_profile("ci")
    try:
        yield
    finally:
        settings.load_profile(previous or "default")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_machines_draw_fresh_examples_under_a_derandomized_profile(
    loaded_ci: None, profile: str
) -> None:
    assert settings.default.derandomize
    chosen = machine_settings(profile)
    assert not chosen.derandomize
    assert chosen.max_examples == PROFILES[profile].max_examples
    assert chosen.database is not None
