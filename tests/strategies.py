"""Hypothesis strategies for valid aggregates of the reference system, at their extremes.

Every aggregate is built through the domain's own operations (assess, start, new_episode,
record_episode, advance...), so whatever a strategy yields is a state the domain can reach:
histories respect prerequisites, episode counters match the episodes, plan progress matches
the stages. Values are pushed to the edges the domain accepts: 1-100 character names with
astral-plane characters, scores at 0.0, 1.0 and subnormal, rewards up to the largest float,
microsecond timestamps in many time zones, free-form JSON.

Identifiers are fresh for every draw (not drawn from the Hypothesis data), so that examples
sharing one database, and Hypothesis replaying an example, never clash on a primary key.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from humanoid_training.domain import (
    CurriculumPlan,
    CurriculumStage,
    EpisodeMetrics,
    EpisodeOutcome,
    EpisodeStatus,
    HumanoidRobot,
    LearningSession,
    PlanStatus,
    RobotConfiguration,
    RobotType,
    SessionStatus,
    SkillAssessment,
    SkillType,
    new_id,
)

__all__ = [
    "EXTREME_REWARDS",
    "EXTREME_UNIT_FLOATS",
    "MAX_COUNTER",
    "assessments",
    "configurations",
    "counters",
    "episode_metrics",
    "episode_statuses",
    "ids",
    "json_objects",
    "json_values",
    "names",
    "plans",
    "positive_floats",
    "rewards",
    "robots",
    "sessions",
    "stages",
    "timestamps",
    "unit_floats",
]

# The largest count the relational schema stores (32-bit INTEGER columns on every backend).
MAX_COUNTER = 2**31 - 1

_SMALLEST_SUBNORMAL = 5e-324
_SMALLEST_NORMAL = sys.float_info.min
_LARGEST = sys.float_info.max

# Values in [0, 1] where storage or the mastery thresholds are most likely to go wrong.
EXTREME_UNIT_FLOATS: tuple[float, ...] = (
    0.0,
    1.0,
    _SMALLEST_SUBNORMAL,
    _SMALLEST_NORMAL,
    math.nextafter(1.0, 0.0),
    0.125,
    math.nextafter(0.125, 0.0),
    0.375,
    0.625,
    0.875,
    math.nextafter(0.875, 0.0),
    0.1,  # not exact in binary: a decimal round trip would change it
    1 / 3,
)
EXTREME_REWARDS: tuple[float, ...] = (
    0.0,
    -0.0,
    1e308,
    -1e308,
    _LARGEST,
    -_LARGEST,
    _SMALLEST_SUBNORMAL,
    -_SMALLEST_SUBNORMAL,
    -1.5,
    123456789.12345679,
)

# Zones far apart (and one with a sub-hour offset): the stored instant must not depend on them.
_ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=14)),
        timezone(timedelta(hours=-12)),
        timezone(timedelta(hours=5, minutes=45)),
    ]
)
# A day inside the extremes of datetime, so that converting between zones never overflows.
_EARLIEST = datetime(1, 1, 2)
_LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999)


def ids() -> st.SearchStrategy[str]:
    """A fresh unique identifier on every draw (see the module docstring for why)."""
    return st.builds(new_id)


def names(*, min_size: int = 1, max_size: int = 100) -> st.SearchStrategy[str]:
    """Names as the domain accepts them: any printable or not, astral-plane characters
    included; NUL and lone surrogates excluded (the domain refuses them, as no database
    stores them in text)."""
    alphabet = st.characters(codec="utf-8", exclude_characters="\x00")
    astral = st.characters(min_codepoint=0x10000, codec="utf-8")
    return st.one_of(
        st.text(alphabet, min_size=min_size, max_size=max_size),
        st.text(astral, min_size=min_size, max_size=max_size),
        st.integers(min_size, max_size).map(lambda n: "\U0001f916" * n),
    )


def unit_floats() -> st.SearchStrategy[float]:
    """Floats in [0, 1], boundaries and subnormals favoured."""
    return st.one_of(
        st.sampled_from(EXTREME_UNIT_FLOATS),
        st.floats(min_value=0.0, max_value=1.0, allow_subnormal=True),
    )


def rewards() -> st.SearchStrategy[float]:
    """Any finite float: negative, huge, subnormal, negative zero."""
    return st.one_of(
        st.sampled_from(EXTREME_REWARDS),
        st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True),
    )


def positive_floats() -> st.SearchStrategy[float]:
    """Finite floats > 0, from the smallest subnormal to the largest float."""
    return st.one_of(
        st.sampled_from((_SMALLEST_SUBNORMAL, _SMALLEST_NORMAL, 1.0, 1e308, _LARGEST)),
        st.floats(min_value=_SMALLEST_SUBNORMAL, allow_infinity=False, allow_subnormal=True),
    )


def counters(max_value: int = MAX_COUNTER) -> st.SearchStrategy[int]:
    """Non-negative counts up to what the schema stores, both ends favoured."""
    return st.one_of(st.sampled_from((0, 1, max_value)), st.integers(0, max_value))


def timestamps() -> st.SearchStrategy[datetime]:
    """Timezone-aware datetimes with microseconds, years 1 to 9999, in several zones."""
    return st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=_ZONES)


def json_values(*, max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Free-form JSON: nulls, booleans, big integers, finite floats, any text, nested."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects(*, max_leaves: int = 6) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=8), json_values(max_leaves=max_leaves), max_size=3)


def configurations() -> st.SearchStrategy[RobotConfiguration]:
    return st.builds(
        RobotConfiguration,
        joint_count=st.one_of(st.sampled_from((1, 2**63 - 1)), st.integers(1, 10**6)),
        height_m=positive_floats(),
        weight_kg=positive_floats(),
        max_joint_velocity=positive_floats(),
        extra=json_objects(),
    )


def assessments(
    skill: SkillType | st.SearchStrategy[SkillType] | None = None,
) -> st.SearchStrategy[SkillAssessment]:
    """Single assessments of `skill` (or any skill); prerequisites are the caller's concern."""
    if skill is None:
        skills: st.SearchStrategy[SkillType] = st.sampled_from(SkillType)
    elif isinstance(skill, SkillType):
        skills = st.just(skill)
    else:
        skills = skill
    return st.builds(
        SkillAssessment,
        id=ids(),
        skill=skills,
        score=unit_floats(),
        confidence=unit_floats(),
        evidence=unit_floats(),
        assessed_at=timestamps(),
    )


@st.composite
def robots(
    draw: st.DrawFn, *, min_assessments: int = 0, max_assessments: int = 20
) -> HumanoidRobot:
    """A new robot whose history was built by `assess`, each assessment of a skill whose
    prerequisites were met at that point (so skills are exactly what the history implies)."""
    robot = HumanoidRobot.create(
        draw(names()),
        draw(st.sampled_from(RobotType)),
        draw(configurations()),
        id=new_id(),
    )
    count = draw(st.integers(min_assessments, max_assessments))
    for _ in range(count):
        # postural_control has no prerequisite, so the choice is never empty.
        open_skills = [s for s in SkillType if robot.can_assess(s)]
        robot.assess(draw(assessments(st.sampled_from(open_skills))))
    return robot


def episode_metrics() -> st.SearchStrategy[EpisodeMetrics]:
    return st.builds(
        EpisodeMetrics,
        success_rate=unit_floats(),
        reward=rewards(),
        skill_scores=st.dictionaries(st.sampled_from(SkillType), unit_floats(), max_size=4),
        details=json_objects(),
    )


# How an episode that is not the last one ends.
_FINISHED = ("completed", "failed", "terminated")
# What the last episode may be left as, by the session's final status.
_LAST_FATES = {
    SessionStatus.ACTIVE: ("running", "pending", *_FINISHED),
    SessionStatus.PAUSED: ("pending", *_FINISHED),
    SessionStatus.COMPLETED: _FINISHED,
    SessionStatus.FAILED: ("running", "pending", *_FINISHED),
}


def _finish(draw: st.DrawFn, session: LearningSession, fate: str) -> None:
    """Run the pending episode of an active session to `fate` through the domain."""
    session.start_episode()
    if fate == "completed":
        session.complete_episode(
            draw(st.sampled_from(EpisodeOutcome)), draw(rewards()), draw(episode_metrics())
        )
    elif fate == "failed":
        session.fail_episode()
    else:
        # Pausing terminates the running episode; resuming keeps the session going.
        session.pause()
        session.resume()


def _redate(draw: st.DrawFn, session: LearningSession) -> None:
    """Replace the wall-clock times the domain stamped with drawn extreme ones (start before
    end), so that timestamps far from now and in other zones are stored too."""
    for episode in session.episodes:
        if episode.started_at is None and episode.ended_at is None:
            continue
        first, second = sorted((draw(timestamps()), draw(timestamps())))
        if episode.started_at is not None:
            episode.started_at = first
        if episode.ended_at is not None:
            episode.ended_at = second


@st.composite
def sessions(
    draw: st.DrawFn,
    robot_id: str,
    plan_id: str | None = None,
    *,
    statuses: Sequence[SessionStatus] = tuple(SessionStatus),
    max_episodes: int = 8,
) -> LearningSession:
    """A session of `robot_id` in one of `statuses`, with episodes in every status the domain
    lets them reach (pending, running, completed, failed, terminated); the counters are the
    domain's own, hence consistent with the episodes."""
    target = draw(st.sampled_from(list(statuses)))
    session = LearningSession(
        id=new_id(), robot_id=robot_id, plan_id=plan_id, created_at=draw(timestamps())
    )
    if target is SessionStatus.CREATED:
        return session
    session.start()
    count = draw(st.integers(0, max_episodes))
    for number in range(1, count + 1):
        session.new_episode(episode_id=new_id())
        last = number == count
        # Only the last episode may stay open, and only where the final status keeps it:
        # pausing terminates a running episode, failing terminates any open one.
        fates = _LAST_FATES[target] if last else _FINISHED
        fate = draw(st.sampled_from(fates))
        if fate == "running":
            session.start_episode()
        elif fate != "pending":
            _finish(draw, session, fate)
        if not last and draw(st.booleans()):
            session.pause()
            session.resume()
    if target is SessionStatus.PAUSED:
        session.pause()
    elif target is SessionStatus.COMPLETED:
        if draw(st.booleans()):
            session.pause()
        session.complete()
    elif target is SessionStatus.FAILED:
        session.fail()
    _redate(draw, session)
    return session


@st.composite
def stages(
    draw: st.DrawFn, earlier_targets: Sequence[SkillType] = (), *, small: bool = False
) -> CurriculumStage:
    """A new stage (no episodes yet) whose prerequisites are among `earlier_targets`.
    `small` keeps min_episodes low enough to be reached by recording episodes."""
    targets = draw(st.sets(st.sampled_from(SkillType), min_size=1, max_size=4))
    prerequisites = (
        draw(st.sets(st.sampled_from(sorted(set(earlier_targets))), max_size=3))
        if earlier_targets
        else set()
    )
    return CurriculumStage(
        name=draw(names()),
        target_skills=tuple(targets),
        prerequisite_skills=tuple(prerequisites),
        min_episodes=draw(st.integers(0, 4) if small else counters()),
        target_success_rate=draw(unit_floats()),
    )


# Every skill at its best: the robot side of a stage's advancement is never the blocker.
_ALL_MASTERED = dict.fromkeys(SkillType, 1.0)


def _pass_stage(draw: st.DrawFn, plan: CurriculumPlan) -> None:
    """Record episodes on the current stage until it may advance, then advance it."""
    stage = plan.stages[plan.current_stage_index]
    # Only successes first: the rate is then 1.0, above any target.
    for _ in range(max(stage.min_episodes, 1) + draw(st.integers(0, 2))):
        plan.record_episode(True)
    # Then failures, as long as the rate stays at or above the target.
    for _ in range(draw(st.integers(0, 3))):
        if (stage.successes / (stage.episodes + 1)) < stage.target_success_rate:
            break
        plan.record_episode(False)
    plan.advance(_ALL_MASTERED)


@st.composite
def plans(
    draw: st.DrawFn,
    robot_id: str,
    *,
    statuses: Sequence[PlanStatus] = tuple(PlanStatus),
    max_stages: int = 4,
) -> CurriculumPlan:
    """A plan of `robot_id` in one of `statuses`: stages added in draft with prerequisites
    from earlier stages, then activated and advanced through the domain. The current stage of
    an active plan may carry progress up to the largest counters the schema stores."""
    target = draw(st.sampled_from(list(statuses)))
    plan = CurriculumPlan(id=new_id(), robot_id=robot_id, name=draw(names()))
    stage_count = draw(st.integers(0 if target is PlanStatus.DRAFT else 1, max_stages))
    passed = 0
    if target is PlanStatus.COMPLETED:
        passed = stage_count
    elif target is PlanStatus.ACTIVE:
        passed = draw(st.integers(0, stage_count - 1))
    earlier: list[SkillType] = []
    for index in range(stage_count):
        stage = draw(stages(earlier, small=index < passed))
        plan.add_stage(stage)
        earlier.extend(stage.target_skills)
    if target is PlanStatus.DRAFT:
        return plan
    plan.activate()
    for _ in range(passed):
        _pass_stage(draw, plan)
    if target is PlanStatus.ACTIVE:
        current = plan.stages[plan.current_stage_index]
        if draw(st.booleans()):
            for successful in draw(st.lists(st.booleans(), max_size=6)):
                plan.record_episode(successful)
        else:
            # Progress as a long-running plan would have it: set as a reload would.
            episodes = draw(counters())
            successes = draw(st.integers(0, episodes))
            plan.stages[plan.current_stage_index] = replace(
                current, episodes=episodes, successes=successes
            )
    return plan


def episode_statuses(session: LearningSession) -> set[EpisodeStatus]:
    """The statuses of a session's episodes (handy to check what a strategy covered)."""
    return {e.status for e in session.episodes}
