"""The domain model of the training lab: pure Python, no persistence."""

from humanoid_training.domain.aggregate import Aggregate, new_id
from humanoid_training.domain.curriculum import CurriculumPlan, CurriculumStage, PlanStatus
from humanoid_training.domain.errors import (
    ActiveSessionExists,
    CurriculumError,
    DomainError,
    EpisodeInProgress,
    EpisodeLimitReached,
    InvalidTransition,
    InvalidValue,
    NotFound,
    PrerequisiteNotMet,
)
from humanoid_training.domain.events import (
    EVENT_TYPES,
    CurriculumStageAdvanced,
    DomainEvent,
    EpisodeCompleted,
    SessionCompleted,
    SessionStarted,
    SkillAssessed,
    SkillMastered,
)
from humanoid_training.domain.robot import HumanoidRobot
from humanoid_training.domain.session import (
    MAX_EPISODES,
    EpisodeOutcome,
    EpisodeStatus,
    LearningEpisode,
    LearningSession,
    SessionStatus,
)
from humanoid_training.domain.values import (
    PREREQUISITES,
    EpisodeMetrics,
    MasteryLevel,
    RobotConfiguration,
    RobotType,
    SkillAssessment,
    SkillType,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_EPISODES",
    "PREREQUISITES",
    "ActiveSessionExists",
    "Aggregate",
    "CurriculumError",
    "CurriculumPlan",
    "CurriculumStage",
    "CurriculumStageAdvanced",
    "DomainError",
    "DomainEvent",
    "EpisodeCompleted",
    "EpisodeInProgress",
    "EpisodeLimitReached",
    "EpisodeMetrics",
    "EpisodeOutcome",
    "EpisodeStatus",
    "HumanoidRobot",
    "InvalidTransition",
    "InvalidValue",
    "LearningEpisode",
    "LearningSession",
    "MasteryLevel",
    "NotFound",
    "PlanStatus",
    "PrerequisiteNotMet",
    "RobotConfiguration",
    "RobotType",
    "SessionCompleted",
    "SessionStarted",
    "SessionStatus",
    "SkillAssessed",
    "SkillAssessment",
    "SkillMastered",
    "SkillType",
    "new_id",
]
