"""uowstress's Hypothesis profiles and the settings of its machines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import settings

from uowstress.profiles import PROFILES, draws, machine_settings
from uowstress.pytest_plugin import options_from


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


class _Config:
    """The options of a pytest session given `--hypothesis-profile NAME` alone."""

    def __init__(self, hypothesis_profile: str) -> None:
        self.hypothesis_profile = hypothesis_profile
        self.stash = pytest.Stash()
        self.rootpath = Path("/project")

    def getoption(self, name: str, default: object = None) -> object:
        return self.hypothesis_profile if name == "hypothesis_profile" else default

    def getini(self, name: str) -> object:
        return ""


@pytest.mark.parametrize(
    ("hypothesis_profile", "machines"),
    [("ci", "ci"), ("uowstress-ci", "ci"), ("uowstress-nightly", "nightly"), ("mine", "dev")],
)
def test_the_machines_take_the_uowstress_profile_hypothesis_loaded(
    hypothesis_profile: str, machines: str
) -> None:
    # `--hypothesis-profile uowstress-ci` is the name of uowstress's ci profile itself.
    config = cast(pytest.Config, _Config(hypothesis_profile))
    assert options_from(config)["profile"] == machines


@pytest.mark.parametrize(
    ("profile", "kills", "expected"),
    [
        ("dev", None, True),
        ("nightly", "0", True),  # the machines still draw
        ("replay", None, False),  # saved failures and saved kills only
        ("replay", "0", False),
        ("replay", " 3 ", True),  # new kills are drawn
    ],
)
def test_a_run_draws_unless_it_only_replays(
    profile: str, kills: str | None, expected: bool
) -> None:
    assert draws(profile, kills) is expected
