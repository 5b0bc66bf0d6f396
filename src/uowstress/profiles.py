"""Hypothesis settings profiles of uowstress: dev, ci, nightly and replay.

Hypothesis's own `ci` profile drops the example database; ours keeps an explicit one under
`.hypothesis/examples`, so a failure found in CI is tried first on the next run.

The table of profiles does not import Hypothesis: the command line names the profiles in its
help, and `uowstress --help` must not wait for Hypothesis to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from uowstress.errors import ConfigError

if TYPE_CHECKING:
    from hypothesis import settings

EXAMPLES_DIR = Path(".hypothesis") / "examples"
REPRODUCERS_DIR = Path(".hypothesis") / "reproducers"


# The names of hypothesis.Phase's members.
PhaseName = Literal["explicit", "reuse", "generate", "target", "shrink", "explain"]


@dataclass(frozen=True)
class Profile:
    name: str
    max_examples: int
    step_count: int  # longest step sequence of one example
    durability_kills: int  # SIGKILLs per backend in the durability check
    description: str
    # No Hypothesis shrink phase: uowstress shrinks the concrete steps itself (minimize.py),
    # which deletes whole transactions that Hypothesis's choice-sequence shrinker cannot.
    # Named, not hypothesis.Phase members, so that the table is read without Hypothesis.
    phases: tuple[PhaseName, ...] = ("explicit", "reuse", "generate", "target")


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("dev", 25, 20, 5, "fast local feedback"),
        Profile("ci", 100, 40, 20, "bounded time, explicit example database"),
        Profile("nightly", 500, 80, 100, "long runs: many examples and long step sequences"),
        Profile(
            "replay",
            1,
            30,
            0,
            "only saved failures: the example database and the written reproducers",
            phases=("explicit", "reuse"),
        ),
    )
}
DEFAULT_PROFILE = "dev"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


def draws(profile: str | Profile, kills: object = None) -> bool:
    """Whether a run under `profile` draws anything a seed would fix: its machines generate
    examples, or its durability check draws kills (`kills`: the --kills given, None if not;
    the replay profile without it replays saved kills only)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    if "generate" in p.phases:
        return True
    try:
        return kills is not None and int(str(kills).strip()) > 0
    except ValueError:
        return False


def machine_settings(profile: str | Profile, *, examples_dir: Path = EXAMPLES_DIR) -> settings:
    """Settings for uowstress's state machines under a profile."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    p = get_profile(profile) if isinstance(profile, str) else profile
    return settings(
        max_examples=p.max_examples,
        stateful_step_count=p.step_count,
        phases=[Phase[name] for name in p.phases],
        # Wall-clock budgets are judged by uowstress on the aggregate, never per example.
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
        # One failure, shrunk, per run: its steps become the written reproducer.
        report_multiple_bugs=False,
        database=DirectoryBasedExampleDatabase(str(examples_dir)),
        print_blob=True,
        # Set, not inherited: Hypothesis loads its own `ci` profile (derandomized) wherever CI
        # is set, and every nightly run and every shard would then explore the same examples.
        derandomize=False,
    )


def _registered(name: str) -> bool:
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument

    try:
        settings.get_profile(name)
    except InvalidArgument:
        return False
    return True


def register_profiles(examples_dir: Path = EXAMPLES_DIR) -> None:
    """Register the profiles with Hypothesis as `uowstress-<name>` and, for use with
    `--hypothesis-profile`, plain `<name>` where no profile of that name exists yet: a name the
    project registered itself, and Hypothesis's own `ci`, are left as they are (the plugin is
    loaded in every pytest session where uowstress is installed, and a test suite that does
    not use it must run unchanged). The registered settings keep Hypothesis's own shrink phase
    for ordinary property tests; the state machines take `machine_settings` whichever profile
    Hypothesis loaded."""
    from hypothesis import Phase, settings

    for name in PROFILES:
        machines = machine_settings(name, examples_dir=examples_dir)
        s = settings(machines, phases=tuple(Phase) if name != "replay" else machines.phases)
        settings.register_profile(f"uowstress-{name}", s)
        if not _registered(name):
            settings.register_profile(name, s)
