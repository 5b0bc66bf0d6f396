"""The CurriculumPlan aggregate and its CurriculumStage entities."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.domain.errors import CurriculumError, InvalidTransition, InvalidValue
from humanoid_training.domain.events import CurriculumStageAdvanced
from humanoid_training.domain.values import (
    MasteryLevel,
    SkillType,
    check_storable_text,
    check_unit_interval,
)

DEFAULT_MIN_EPISODES = 10
DEFAULT_TARGET_SUCCESS_RATE = 0.7
# Stage counts are stored in 32-bit INTEGER columns; larger ones could never be saved.
MAX_STAGE_COUNT = 2**31 - 1


class PlanStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    COMPLETED = "completed"


def _skills(name: str, skills: Iterable[SkillType | str]) -> tuple[SkillType, ...]:
    try:
        unique = {SkillType(s) for s in skills}
    except (ValueError, TypeError) as error:
        raise InvalidValue(f"{name} must be an iterable of skill names: {error}") from None
    # A canonical order keeps stored and reloaded stages equal.
    return tuple(s for s in SkillType if s in unique)


@dataclass(eq=True, kw_only=True)
class CurriculumStage:
    name: str
    target_skills: tuple[SkillType, ...]
    prerequisite_skills: tuple[SkillType, ...] = ()
    min_episodes: int = DEFAULT_MIN_EPISODES
    target_success_rate: float = DEFAULT_TARGET_SUCCESS_RATE
    episodes: int = 0
    successes: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 100:
            raise InvalidValue(f"stage name must be 1-100 characters, got {self.name!r}")
        check_storable_text("stage name", self.name)
        self.target_skills = _skills("target_skills", self.target_skills)
        self.prerequisite_skills = _skills("prerequisite_skills", self.prerequisite_skills)
        if not self.target_skills:
            raise InvalidValue(f"stage {self.name!r} needs at least one target skill")
        if isinstance(self.min_episodes, bool) or not isinstance(self.min_episodes, int):
            raise InvalidValue(f"min_episodes must be an integer >= 0, got {self.min_episodes!r}")
        if not 0 <= self.min_episodes <= MAX_STAGE_COUNT:
            raise InvalidValue(
                f"min_episodes must be from 0 to {MAX_STAGE_COUNT}, got {self.min_episodes}"
            )
        self.target_success_rate = check_unit_interval(
            "target_success_rate", self.target_success_rate
        )
        for counter in (self.episodes, self.successes):
            if isinstance(counter, bool) or not isinstance(counter, int):
                raise InvalidValue(f"stage episodes and successes are integers, got {counter!r}")
        if not 0 <= self.successes <= self.episodes <= MAX_STAGE_COUNT:
            raise InvalidValue(
                "a stage's successes must lie between 0 and its episodes, and its episodes"
                f" must not exceed {MAX_STAGE_COUNT}; got {self.successes} of {self.episodes}"
            )

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def blockers(self, robot_skills: Mapping[SkillType, float]) -> list[str]:
        """Why the stage may not advance yet; empty when it may."""
        reasons = []
        if self.episodes < self.min_episodes:
            reasons.append(f"{self.episodes} of {self.min_episodes} episodes")
        if self.success_rate < self.target_success_rate:
            reasons.append(
                f"success rate {self.success_rate:.2f} below {self.target_success_rate:.2f}"
            )
        for skill in self.target_skills:
            score = robot_skills.get(skill)
            if score is None or not MasteryLevel.from_score(score).at_least(
                MasteryLevel.INTERMEDIATE
            ):
                reasons.append(f"{skill} below intermediate")
        return reasons


@dataclass(eq=False, kw_only=True)
class CurriculumPlan(Aggregate):
    robot_id: str
    name: str
    status: PlanStatus = PlanStatus.DRAFT
    stages: list[CurriculumStage] = field(default_factory=list)
    current_stage_index: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 100:
            raise InvalidValue(f"plan name must be 1-100 characters, got {self.name!r}")
        check_storable_text("plan name", self.name)
        index, last = self.current_stage_index, max(len(self.stages) - 1, 0)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= last:
            raise InvalidValue(
                f"current_stage_index must be an integer from 0 to {last} (the last stage),"
                f" got {index!r}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CurriculumPlan):
            return NotImplemented
        return (
            self.id == other.id
            and self.version == other.version
            and self.robot_id == other.robot_id
            and self.name == other.name
            and self.status == other.status
            and self.stages == other.stages
            and self.current_stage_index == other.current_stage_index
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def current_stage(self) -> CurriculumStage | None:
        return self.stages[self.current_stage_index] if self.stages else None

    def add_stage(self, stage: CurriculumStage) -> None:
        if self.status is not PlanStatus.DRAFT:
            raise InvalidTransition(
                f"stages are added only in draft; plan {self.id} is {self.status}"
            )
        if stage.episodes or stage.successes:
            raise CurriculumError("a new stage starts with no episodes")
        earlier = {s for st in self.stages for s in st.target_skills}
        missing = [s for s in stage.prerequisite_skills if s not in earlier]
        if missing:
            raise CurriculumError(
                f"stage {stage.name!r} needs {', '.join(missing)}, which no earlier stage targets"
            )
        self.stages.append(stage)

    def activate(self) -> None:
        if self.status is not PlanStatus.DRAFT:
            raise InvalidTransition(f"only a draft plan can be activated; plan is {self.status}")
        if not self.stages:
            raise CurriculumError(f"plan {self.id} needs at least one stage before activation")
        self.status = PlanStatus.ACTIVE

    def record_episode(self, successful: bool) -> None:
        if self.status is not PlanStatus.ACTIVE:
            raise InvalidTransition(f"episodes count only in an active plan; plan is {self.status}")
        stage = self.stages[self.current_stage_index]
        if stage.episodes >= MAX_STAGE_COUNT:
            raise CurriculumError(
                f"stage {stage.name!r} already counts {MAX_STAGE_COUNT} episodes, the most that"
                " can be stored; advance the plan or start a new one"
            )
        stage.episodes += 1
        if successful:
            stage.successes += 1

    def ready_to_advance(self, robot_skills: Mapping[SkillType, float]) -> bool:
        stage = self.current_stage
        return (
            self.status is PlanStatus.ACTIVE
            and stage is not None
            and not stage.blockers(robot_skills)
        )

    def advance(self, robot_skills: Mapping[SkillType, float]) -> None:
        if self.status is not PlanStatus.ACTIVE:
            raise InvalidTransition(f"only an active plan advances; plan is {self.status}")
        stage = self.stages[self.current_stage_index]
        reasons = stage.blockers(robot_skills)
        if reasons:
            raise CurriculumError(f"stage {stage.name!r} cannot advance: {'; '.join(reasons)}")
        origin = self.current_stage_index
        last = len(self.stages) - 1
        if origin == last:
            self.status = PlanStatus.COMPLETED
        else:
            self.current_stage_index = origin + 1
        self._raise(
            CurriculumStageAdvanced(
                aggregate_id=self.id,
                from_stage=origin,
                to_stage=self.current_stage_index,
                completed=self.status is PlanStatus.COMPLETED,
            )
        )
