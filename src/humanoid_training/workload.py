"""The training lab in the performance suites' words (uowstress's Workload protocol).

A key names a robot. Creating it registers the robot with an active two-stage curriculum and
an open learning session; a change is one skill assessment; a cycle is one training episode
completed through the application service (session, robot and plan in one unit of work); the
tally counts each robot's assessments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from sqlalchemy import func, select

from humanoid_training import services
from humanoid_training.domain import (
    CurriculumPlan,
    CurriculumStage,
    EpisodeMetrics,
    EpisodeOutcome,
    HumanoidRobot,
    LearningSession,
    SessionStatus,
    SkillAssessment,
    SkillType,
)
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.errors import ConcurrencyConflict, RetryableConflict
from humanoid_training.persistence.unit_of_work import AbstractUnitOfWork

# A session holds at most 1,000 episodes (domain rule); a long run opens the next one in time.
_EPISODES_PER_SESSION = 1000
_STAGES = (
    CurriculumStage(
        name="posture",
        target_skills=(SkillType.POSTURAL_CONTROL,),
        min_episodes=3,
        target_success_rate=0.5,
    ),
    CurriculumStage(
        name="balance",
        target_skills=(SkillType.STATIC_BALANCE,),
        prerequisite_skills=(SkillType.POSTURAL_CONTROL,),
        min_episodes=3,
        target_success_rate=0.5,
    ),
)


def _assessment(key: str, n: int, skill: SkillType) -> SkillAssessment:
    # Scores climb through the levels as n grows, so curricula advance under a long load.
    return SkillAssessment(
        id=f"{key}-a{n}",
        skill=skill,
        score=0.2 + (n % 8) / 10,
        confidence=0.8,
        evidence=0.7,
    )


class TrainingWorkload:
    """Robots under training, for uowstress's performance suites."""

    def create(self, uow: AbstractUnitOfWork, key: str) -> None:
        uow.robots.add(HumanoidRobot.create(f"robot {key}", id=key))
        plan = CurriculumPlan(id=f"{key}-p", robot_id=key, name=f"walking for {key}")
        for stage in _STAGES:
            plan.add_stage(stage)
        plan.activate()
        uow.plans.add(plan)
        services.open_session(uow, key, plan.id, session_id=f"{key}-s0")

    def change(self, uow: AbstractUnitOfWork, key: str, n: int) -> None:
        uow.robots.get(key).assess(_assessment(key, n, SkillType.POSTURAL_CONTROL))

    def read(self, uow: AbstractUnitOfWork, key: str) -> int:
        return len(uow.robots.get(key).history)

    def cycle(self, uow: AbstractUnitOfWork, key: str, n: int) -> None:
        """One episode of the robot's open session, run and completed with one assessment."""
        session = self._open_session(uow, key, n)
        session.new_episode(f"{key}-e{n}")
        session.start_episode()
        robot = uow.robots.get(key)
        skill = (
            SkillType.STATIC_BALANCE
            if robot.can_assess(SkillType.STATIC_BALANCE) and n % 2
            else SkillType.POSTURAL_CONTROL
        )
        outcome = EpisodeOutcome.FAILURE if n % 4 == 0 else EpisodeOutcome.SUCCESS
        services.finish_episode(
            uow,
            session.id,
            outcome,
            reward=float(n % 100),
            metrics=EpisodeMetrics(success_rate=0.0 if n % 4 == 0 else 1.0, reward=n % 100),
            assessments=[_assessment(key, n, skill)],
        )

    def _open_session(self, uow: AbstractUnitOfWork, key: str, n: int) -> LearningSession:
        found = uow.sessions.find_sessions_by_robot(key, open_only=True)
        if found and found[0].status is SessionStatus.PAUSED:
            found[0].resume()
        if found and len(found[0].episodes) < _EPISODES_PER_SESSION:
            return found[0]
        if found:
            found[0].complete()
        plan_id = found[0].plan_id if found else None
        return services.open_session(uow, key, plan_id, session_id=f"{key}-s{n}")

    def store(self, uow: AbstractUnitOfWork, key: str, document: Any) -> None:
        robot = uow.robots.get(key)
        robot.reconfigure(dataclasses.replace(robot.configuration, extra=document))

    def load(self, uow: AbstractUnitOfWork, key: str) -> Any:
        return dict(uow.robots.get(key).configuration.extra)

    def tally(self, system: Any) -> dict[str, int]:
        joined = t.robots.outerjoin(t.assessments, t.assessments.c.robot_id == t.robots.c.id)
        query = (
            select(t.robots.c.id, func.count(t.assessments.c.id))
            .select_from(joined)
            .group_by(t.robots.c.id)
        )
        with system.engine.connect() as conn:
            return {robot_id: int(count) for robot_id, count in conn.execute(query)}

    def classify(self, error: BaseException) -> Literal["conflict", "deadlock"] | None:
        if isinstance(error, ConcurrencyConflict):
            return "conflict"
        if isinstance(error, RetryableConflict):
            return "deadlock" if error.reason == "deadlock" else "conflict"
        return None


WORKLOAD = TrainingWorkload()
