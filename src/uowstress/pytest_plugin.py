"""pytest plugin of uowstress: the shared options, the profiles, and fixtures.

Options are the ones the CLI takes (uowstress.options), spelled `--uowstress-<name>`; the
target can also be set once in the ini file (`uowstress_target = package.module:attribute`).
Profiles: `pytest --hypothesis-profile ci` selects uowstress's ci profile (see profiles.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from uowstress.options import OPTIONS, option_values, parse_target_options
from uowstress.profiles import PROFILES, register_profiles
from uowstress.target import DEFAULT_TARGET, Target, load_target


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uowstress", "uowstress: stress and property testing of Units of Work")
    for spec in OPTIONS:
        kwargs: dict[str, Any] = {"dest": f"uowstress_{spec.name}", "help": spec.help}
        if spec.flag:
            kwargs["action"] = "store_true"
        elif spec.multiple:
            kwargs["action"] = "append"
        else:
            kwargs["default"] = None
            if spec.choices:
                kwargs["choices"] = spec.choices
        group.addoption(spec.pytest_flag, **kwargs)
    parser.addini(
        "uowstress_target",
        "the system under test (package.module:attribute)",
        default=DEFAULT_TARGET,
    )


def pytest_configure(config: pytest.Config) -> None:
    register_profiles()
    config.addinivalue_line("markers", "uowstress: a uowstress stress or property test")


def options_from(config: pytest.Config) -> dict[str, Any]:
    raw = {spec.name: config.getoption(f"uowstress_{spec.name}") for spec in OPTIONS}
    if raw.get("target") is None:
        raw["target"] = config.getini("uowstress_target") or DEFAULT_TARGET
    if raw.get("profile") is None:
        # `--hypothesis-profile ci` chooses uowstress's profile of that name too.
        chosen = config.getoption("hypothesis_profile", None)
        if chosen in PROFILES:
            raw["profile"] = chosen
    values = option_values(raw)
    values["target_options"] = parse_target_options(values["target_option"])
    return values


@pytest.fixture(scope="session")
def uowstress_options(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The uowstress options of this test session, defaults filled in."""
    return options_from(pytestconfig)


@pytest.fixture(scope="session")
def uowstress_target(uowstress_options: dict[str, Any]) -> Target:
    """The Target under test (--uowstress-target or the uowstress_target ini value)."""
    return load_target(uowstress_options["target"])
