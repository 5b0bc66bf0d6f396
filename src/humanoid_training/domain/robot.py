"""The HumanoidRobot aggregate: configuration, skills and the append-only assessment history."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.domain.assessments import AssessmentHistory
from humanoid_training.domain.errors import InvalidValue, PrerequisiteNotMet
from humanoid_training.domain.events import SkillAssessed, SkillMastered
from humanoid_training.domain.values import (
    MasteryLevel,
    RobotConfiguration,
    RobotType,
    SkillAssessment,
    SkillType,
    check_storable_text,
)

BEGINNER_SCORE = 0.125
EXPERT_SCORE = 0.875


def check_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise InvalidValue(f"robot name must be 1-100 characters, got {name!r}")
    return check_storable_text("robot name", name)


@dataclass(eq=False, kw_only=True)
class HumanoidRobot(Aggregate):
    name: str
    robot_type: RobotType
    configuration: RobotConfiguration
    skills: dict[SkillType, float] = field(default_factory=dict)
    # A list given here is copied into an AssessmentHistory.
    history: AssessmentHistory = field(default_factory=AssessmentHistory, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        try:
            self.robot_type = RobotType(self.robot_type)
        except ValueError:
            raise InvalidValue(f"unknown robot type {self.robot_type!r}") from None
        if not isinstance(self.configuration, RobotConfiguration):
            raise InvalidValue("configuration must be a RobotConfiguration")
        if not isinstance(self.history, AssessmentHistory):
            given = list(self.history)
            if len({a.id for a in given}) != len(given):
                raise InvalidValue("assessment ids must be unique within a robot's history")
            self.history = AssessmentHistory(given)

    @classmethod
    def create(
        cls,
        name: str,
        robot_type: RobotType | str = RobotType.GENERIC_HUMANOID,
        configuration: RobotConfiguration | None = None,
        id: str | None = None,
    ) -> HumanoidRobot:
        config = configuration or RobotConfiguration(
            joint_count=23, height_m=1.32, weight_kg=35.0, max_joint_velocity=10.0
        )
        try:
            kind = RobotType(robot_type)
        except ValueError:
            raise InvalidValue(f"unknown robot type {robot_type!r}") from None
        if id is None:
            return cls(name=name, robot_type=kind, configuration=config)
        return cls(id=id, name=name, robot_type=kind, configuration=config)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HumanoidRobot):
            return NotImplemented
        return (
            self.id == other.id
            and self.version == other.version
            and self.name == other.name
            and self.robot_type == other.robot_type
            and self.configuration == other.configuration
            and self.skills == other.skills
            and self.history == other.history
        )

    __hash__ = None  # type: ignore[assignment]

    def score(self, skill: SkillType) -> float | None:
        return self.skills.get(skill)

    def level(self, skill: SkillType) -> MasteryLevel | None:
        score = self.skills.get(skill)
        return None if score is None else MasteryLevel.from_score(score)

    def missing_prerequisites(self, skill: SkillType) -> list[SkillType]:
        return sorted(
            (p for p in skill.prerequisites if self.skills.get(p, 0.0) < BEGINNER_SCORE),
            key=list(SkillType).index,
        )

    def can_assess(self, skill: SkillType) -> bool:
        return not self.missing_prerequisites(skill)

    def assess(self, assessment: SkillAssessment) -> None:
        """Append to the history; the skill's score rises to the assessment's, never falls."""
        if not isinstance(assessment, SkillAssessment):
            raise InvalidValue("assess() takes a SkillAssessment")
        missing = self.missing_prerequisites(assessment.skill)
        if missing:
            raise PrerequisiteNotMet(
                f"{assessment.skill} needs {', '.join(missing)} at beginner level or above"
                f" on robot {self.id}"
            )
        if self.history.holds(assessment.id):
            raise InvalidValue(f"assessment {assessment.id!r} is already in the history")
        self.history.append(assessment)
        previous = self.skills.get(assessment.skill)
        self._raise(
            SkillAssessed(
                aggregate_id=self.id,
                assessment_id=assessment.id,
                skill=str(assessment.skill),
                score=assessment.score,
            )
        )
        if previous is None or assessment.score >= previous:
            self.skills[assessment.skill] = assessment.score
            if assessment.score >= EXPERT_SCORE and (previous is None or previous < EXPERT_SCORE):
                self._raise(
                    SkillMastered(
                        aggregate_id=self.id, skill=str(assessment.skill), score=assessment.score
                    )
                )

    def assess_many(self, assessments: Iterable[SkillAssessment]) -> None:
        """All or nothing: every assessment is checked against the state the earlier ones leave."""
        batch = list(assessments)
        trial = HumanoidRobot(
            id=self.id,
            name=self.name,
            robot_type=self.robot_type,
            configuration=self.configuration,
            skills=dict(self.skills),
            history=AssessmentHistory.following(self.history),
        )
        for assessment in batch:
            trial.assess(assessment)
        for assessment in batch:
            self.assess(assessment)

    def rename(self, name: str) -> None:
        self.name = check_name(name)

    def reconfigure(self, configuration: RobotConfiguration) -> None:
        if not isinstance(configuration, RobotConfiguration):
            raise InvalidValue("configuration must be a RobotConfiguration")
        self.configuration = configuration


def skills_from(scores: Mapping[SkillType | str, float]) -> dict[SkillType, float]:
    return {SkillType(k): v for k, v in scores.items()}
