"""Application services: the lab's multi-aggregate transactions, each one Unit of Work.

Each service takes a fresh (not yet entered) Unit of Work. Conflicts surface as
`ConcurrencyConflict` or `RetryableConflict`; wrap a call in `retrying` to retry it whole.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from humanoid_training.domain import (
    ActiveSessionExists,
    CurriculumPlan,
    CurriculumStage,
    EpisodeMetrics,
    EpisodeOutcome,
    HumanoidRobot,
    InvalidValue,
    LearningSession,
    PlanStatus,
    RobotConfiguration,
    RobotType,
    SkillAssessment,
    SkillType,
    new_id,
)
from humanoid_training.domain.values import SKILL_ORDER, utc_now
from humanoid_training.persistence.errors import ConcurrencyConflict, RetryableConflict
from humanoid_training.persistence.unit_of_work import AbstractUnitOfWork

T = TypeVar("T")


class SessionChange(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    FAIL = "fail"


def retrying(
    work: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.005,
    max_delay_s: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (RetryableConflict, ConcurrencyConflict),
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run `work` (a whole unit of work) again after a conflict, with exponential backoff and
    full jitter; the last conflict propagates when every attempt failed."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    jitter = rng or random.Random()
    for attempt in range(attempts):
        try:
            return work()
        except retry_on:
            if attempt == attempts - 1:
                raise
            sleep(jitter.uniform(0, min(max_delay_s, base_delay_s * 2**attempt)))
    raise AssertionError("unreachable")


def register_robot(
    uow: AbstractUnitOfWork,
    name: str,
    robot_type: RobotType | str = RobotType.GENERIC_HUMANOID,
    configuration: RobotConfiguration | None = None,
    robot_id: str | None = None,
) -> str:
    robot = HumanoidRobot.create(name, robot_type, configuration, id=robot_id)
    with uow:
        uow.robots.add(robot)
        uow.commit()
    return robot.id


def assess_robot(
    uow: AbstractUnitOfWork, robot_id: str, assessments: Sequence[SkillAssessment]
) -> None:
    with uow:
        uow.robots.get(robot_id).assess_many(assessments)
        uow.commit()


def create_plan(
    uow: AbstractUnitOfWork,
    robot_id: str,
    name: str,
    stages: Iterable[CurriculumStage],
    *,
    activate: bool = True,
    plan_id: str | None = None,
) -> str:
    plan = CurriculumPlan(id=plan_id or new_id(), robot_id=robot_id, name=name)
    for stage in stages:
        plan.add_stage(stage)
    if activate:
        plan.activate()
    with uow:
        uow.robots.get(robot_id)  # the plan's robot must exist
        uow.plans.add(plan)
        uow.commit()
    return plan.id


def open_session(
    uow: AbstractUnitOfWork,
    robot_id: str,
    plan_id: str | None = None,
    *,
    session_id: str | None = None,
) -> LearningSession:
    """Create and start a session inside an open unit of work, enforcing one open (active or
    paused) session per robot.

    The check reads other aggregates and then inserts: the classic write-skew shape. It is made
    safe by locking the robot and bumping its version, so two concurrent starts for one robot
    conflict on the robot row whatever the isolation level.
    """
    guard = not uow.weakenings.no_session_lock
    robot = uow.robots.get(robot_id, lock=guard)
    if plan_id is not None:
        plan = uow.plans.get(plan_id)
        if plan.robot_id != robot_id:
            raise InvalidValue(f"plan {plan_id} belongs to robot {plan.robot_id}, not {robot_id}")
    open_sessions = uow.sessions.find_sessions_by_robot(robot_id, open_only=True, lock=guard)
    if open_sessions:
        raise ActiveSessionExists(
            f"robot {robot_id} already has open session {open_sessions[0].id}"
            f" ({open_sessions[0].status}); complete or fail it first"
        )
    session = LearningSession(id=session_id or new_id(), robot_id=robot_id, plan_id=plan_id)
    session.start()
    uow.sessions.add(session)
    if guard:
        uow.robots.touch(robot)
    return session


def start_session(
    uow: AbstractUnitOfWork,
    robot_id: str,
    plan_id: str | None = None,
    *,
    session_id: str | None = None,
) -> str:
    """`open_session` as one unit of work."""
    with uow:
        session = open_session(uow, robot_id, plan_id, session_id=session_id)
        uow.commit()
    return session.id


def change_session(uow: AbstractUnitOfWork, session_id: str, change: SessionChange | str) -> None:
    batch_update(uow, [session_id], change)


def _apply(session: LearningSession, change: SessionChange) -> None:
    {
        SessionChange.PAUSE: session.pause,
        SessionChange.RESUME: session.resume,
        SessionChange.COMPLETE: session.complete,
        SessionChange.FAIL: session.fail,
    }[change]()


def apply_to_sessions(
    uow: AbstractUnitOfWork, session_ids: Sequence[str], change: SessionChange | str
) -> None:
    """Apply one change to every session inside an open unit of work."""
    try:
        kind = SessionChange(change)
    except ValueError:
        raise InvalidValue(
            f"unknown session change {change!r}; choose from {[c.value for c in SessionChange]}"
        ) from None
    for session_id in session_ids:
        _apply(uow.sessions.get(session_id), kind)


def batch_update(
    uow: AbstractUnitOfWork, session_ids: Sequence[str], change: SessionChange | str
) -> None:
    """Apply one change to every session, all or nothing."""
    with uow:
        apply_to_sessions(uow, session_ids, change)
        uow.commit()


def new_episode(uow: AbstractUnitOfWork, session_id: str, *, start: bool = True) -> str:
    with uow:
        session = uow.sessions.get(session_id)
        episode = session.new_episode()
        if start:
            session.start_episode()
        uow.commit()
    return episode.id


def fail_episode(uow: AbstractUnitOfWork, session_id: str) -> None:
    with uow:
        uow.sessions.get(session_id).fail_episode()
        uow.commit()


def finish_episode(
    uow: AbstractUnitOfWork,
    session_id: str,
    outcome: EpisodeOutcome | str,
    reward: float,
    metrics: EpisodeMetrics,
    assessments: Sequence[SkillAssessment] = (),
) -> bool:
    """Complete the running episode, apply the assessments to the robot and advance the plan's
    stage when it is ready, inside an open unit of work. Returns whether the plan advanced."""
    session = uow.sessions.get(session_id)
    robot = uow.robots.get(session.robot_id)
    robot.assess_many(assessments)
    episode = session.complete_episode(outcome, reward, metrics)
    if session.plan_id is None:
        return False
    plan = uow.plans.get(session.plan_id)
    if plan.status is not PlanStatus.ACTIVE:
        return False
    plan.record_episode(episode.successful)
    if not plan.ready_to_advance(robot.skills):
        return False
    plan.advance(robot.skills)
    return True


def complete_episode(
    uow: AbstractUnitOfWork,
    session_id: str,
    outcome: EpisodeOutcome | str,
    reward: float,
    metrics: EpisodeMetrics,
    assessments: Sequence[SkillAssessment] = (),
) -> bool:
    """`finish_episode` as one unit of work: session, robot and plan commit together."""
    with uow:
        advanced = finish_episode(uow, session_id, outcome, reward, metrics, assessments)
        uow.commit()
    return advanced


def teach(
    uow: AbstractUnitOfWork,
    source_robot: str,
    target_robot: str,
    ratio: float = 0.9,
    *,
    ids: Sequence[str] | None = None,
    assessed_at: datetime | None = None,
) -> list[SkillAssessment]:
    """Teach the target robot what the source knows, at `ratio` of the source's scores, inside
    an open unit of work.

    Each transferred skill is recorded as an assessment of the target (prerequisites first, so
    the history stays the single source of every score). Both robots are locked in id order,
    so concurrent transfers in both directions queue instead of deadlocking; the source's
    version is bumped because the transfer was decided from its state. `ids` names the new
    assessments (one per skill at most); fresh ids are made when it is None.
    """
    if source_robot == target_robot:
        raise InvalidValue("a robot cannot transfer skills to itself")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise InvalidValue(f"ratio must be in (0, 1], got {ratio!r}")
    ordered = sorted((source_robot, target_robot))
    robots = {rid: uow.robots.get(rid, lock=True) for rid in ordered}
    source, target = robots[source_robot], robots[target_robot]
    fresh = iter(ids) if ids is not None else None
    transferred = []
    now = assessed_at or utc_now()
    for skill in SKILL_ORDER:
        known = source.skills.get(skill)
        if known is None:
            continue
        score = known * ratio
        current = target.skills.get(skill)
        if (current is not None and score <= current) or not target.can_assess(skill):
            continue
        assessment = SkillAssessment(
            id=next(fresh, new_id()) if fresh is not None else new_id(),
            skill=skill,
            score=score,
            confidence=ratio,
            evidence=ratio,
            assessed_at=now,
        )
        target.assess(assessment)
        transferred.append(assessment)
    uow.robots.touch(source)
    return transferred


def transfer_skills(
    uow: AbstractUnitOfWork,
    source_robot: str,
    target_robot: str,
    ratio: float = 0.9,
) -> list[SkillAssessment]:
    """`teach` as one unit of work: both robots commit together."""
    with uow:
        transferred = teach(uow, source_robot, target_robot, ratio)
        uow.commit()
    return transferred


def robots_with_skill(uow: AbstractUnitOfWork, skill: SkillType, min_score: float) -> list[str]:
    with uow:
        return [r.id for r in uow.robots.find_robots_by_skill(skill, min_score)]
