"""Shared builders and checks for the domain unit tests."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest

from humanoid_training.domain import (
    Aggregate,
    DomainError,
    EpisodeMetrics,
    HumanoidRobot,
    LearningSession,
    SessionStatus,
    SkillAssessment,
    SkillType,
)

E = TypeVar("E", bound=DomainError)

# The prerequisite table of docs/domain.md, written out by hand (plain strings, not the code's
# constant) so that a wrong table in the code makes the tests fail.
EXPECTED_PREREQUISITES: dict[str, frozenset[str]] = {
    "postural_control": frozenset(),
    "static_balance": frozenset({"postural_control"}),
    "dynamic_balance": frozenset({"static_balance", "postural_control"}),
    "forward_walking": frozenset({"dynamic_balance"}),
    "backward_walking": frozenset({"forward_walking"}),
    "turning": frozenset({"forward_walking"}),
    "speed_control": frozenset({"forward_walking"}),
    "terrain_adaptation": frozenset({"speed_control"}),
    "obstacle_avoidance": frozenset({"turning", "speed_control"}),
}
PREREQUISITE_EDGES: list[tuple[str, str]] = [
    (skill, needed) for skill, needs in EXPECTED_PREREQUISITES.items() for needed in sorted(needs)
]

BEGINNER = 0.125
INTERMEDIATE = 0.375
EXPERT = 0.875
NON_FINITE = [math.nan, math.inf, -math.inf]
# An int too large to convert to a float: finite for Python, no usable measure for the domain.
TOO_LARGE_FOR_FLOAT = 10**400


def below(x: float) -> float:
    """The largest float strictly below x: the closest a value can get to a boundary."""
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


_ids = itertools.count(1)


def assessment(
    skill: SkillType | str,
    score: float,
    *,
    id: str | None = None,
    confidence: float = 0.9,
    evidence: float = 0.9,
) -> SkillAssessment:
    return SkillAssessment(
        id=id or f"assessment-{next(_ids)}",
        skill=SkillType(skill),
        score=score,
        confidence=confidence,
        evidence=evidence,
    )


def make_robot(skills: Mapping[str, float] | None = None, name: str = "Atlas") -> HumanoidRobot:
    robot = HumanoidRobot.create(name)
    # Seeding skills directly is how a stored robot is reloaded; it skips the prerequisite
    # checks on purpose so each test can set up exactly the state it needs.
    robot.skills.update({SkillType(k): v for k, v in (skills or {}).items()})
    return robot


def metrics(success_rate: float = 1.0, reward: float = 1.0) -> EpisodeMetrics:
    return EpisodeMetrics(success_rate=success_rate, reward=reward)


def session_in(status: SessionStatus | str) -> LearningSession:
    """A session brought to `status` through its own actions."""
    session = LearningSession(robot_id="robot-1")
    target = SessionStatus(status)
    if target is SessionStatus.FAILED:
        session.fail()
    elif target is not SessionStatus.CREATED:
        session.start()
        if target is SessionStatus.PAUSED:
            session.pause()
        elif target is SessionStatus.COMPLETED:
            session.complete()
    assert session.status is target
    return session


def snapshot(aggregate: Aggregate) -> tuple[Aggregate, dict[str, Any], int]:
    return copy.deepcopy(aggregate), copy.deepcopy(vars(aggregate)), len(aggregate.events)


def assert_unchanged(aggregate: Aggregate, before: tuple[Aggregate, dict[str, Any], int]) -> None:
    copied, fields, event_count = before
    assert aggregate == copied
    # vars() also covers what the aggregate's __eq__ leaves out (events, private indexes).
    assert vars(aggregate) == fields
    assert len(aggregate.events) == event_count


def assert_refused(aggregate: Aggregate, action: Callable[[], object], error: type[E]) -> E:
    """`action` must raise exactly `error` (a DomainError) and leave `aggregate` as it was."""
    before = snapshot(aggregate)
    refusal = assert_domain_error(action, error)
    assert_unchanged(aggregate, before)
    return refusal


def assert_domain_error(action: Callable[[], object], error: type[E]) -> E:
    with pytest.raises(DomainError) as caught:
        action()
    refusal = caught.value
    assert type(refusal) is error, (
        f"expected {error.__name__}, got {type(refusal).__name__}: {refusal}"
    )
    assert isinstance(refusal, error)
    assert not isinstance(refusal, ValueError | TypeError)
    assert str(refusal), "a domain error must say what is wrong"
    return refusal
