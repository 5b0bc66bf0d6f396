"""Value objects of the training lab: immutable, validated on construction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from humanoid_training.domain.errors import InvalidValue


class SkillType(StrEnum):
    POSTURAL_CONTROL = "postural_control"
    STATIC_BALANCE = "static_balance"
    DYNAMIC_BALANCE = "dynamic_balance"
    FORWARD_WALKING = "forward_walking"
    BACKWARD_WALKING = "backward_walking"
    TURNING = "turning"
    SPEED_CONTROL = "speed_control"
    TERRAIN_ADAPTATION = "terrain_adaptation"
    OBSTACLE_AVOIDANCE = "obstacle_avoidance"

    @property
    def prerequisites(self) -> frozenset[SkillType]:
        return PREREQUISITES[self]


S = SkillType
PREREQUISITES: Mapping[SkillType, frozenset[SkillType]] = MappingProxyType(
    {
        S.POSTURAL_CONTROL: frozenset(),
        S.STATIC_BALANCE: frozenset({S.POSTURAL_CONTROL}),
        S.DYNAMIC_BALANCE: frozenset({S.STATIC_BALANCE, S.POSTURAL_CONTROL}),
        S.FORWARD_WALKING: frozenset({S.DYNAMIC_BALANCE}),
        S.BACKWARD_WALKING: frozenset({S.FORWARD_WALKING}),
        S.TURNING: frozenset({S.FORWARD_WALKING}),
        S.SPEED_CONTROL: frozenset({S.FORWARD_WALKING}),
        S.TERRAIN_ADAPTATION: frozenset({S.SPEED_CONTROL}),
        S.OBSTACLE_AVOIDANCE: frozenset({S.TURNING, S.SPEED_CONTROL}),
    }
)
# Declaration order is already a topological order of the prerequisite graph.
SKILL_ORDER: tuple[SkillType, ...] = tuple(SkillType)


class MasteryLevel(StrEnum):
    NOVICE = "novice"
    BEGINNER = "beginner"
    INTERMEDIATE = "intermediate"
    ADVANCED = "advanced"
    EXPERT = "expert"

    @classmethod
    def from_score(cls, score: float) -> MasteryLevel:
        check_unit_interval("score", score)
        if score < 0.125:
            return cls.NOVICE
        if score < 0.375:
            return cls.BEGINNER
        if score < 0.625:
            return cls.INTERMEDIATE
        if score < 0.875:
            return cls.ADVANCED
        return cls.EXPERT

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]

    def at_least(self, other: MasteryLevel) -> bool:
        return self.rank >= other.rank


_LEVEL_RANK = {level: i for i, level in enumerate(MasteryLevel)}


class RobotType(StrEnum):
    UNITREE_G1 = "unitree_g1"
    GENERIC_HUMANOID = "generic_humanoid"
    CUSTOM = "custom"


def is_finite(value: float) -> bool:
    """`math.isfinite` that answers False, instead of raising, for an int too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_unit_interval(name: str, value: float) -> float:
    """Refuse anything that is not a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{name} must be a number in [0, 1], got {value!r}")
    if not is_finite(value) or not 0.0 <= value <= 1.0:
        raise InvalidValue(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{name} must be a positive number, got {value!r}")
    if not is_finite(value) or value <= 0:
        raise InvalidValue(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_unicode(name: str, text: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8, so no database (and no JSON payload) can
    # store it: refused here rather than failing at commit.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidValue(
            f"{name} holds a lone surrogate character at position {error.start} of {text!r};"
            " use valid Unicode text"
        ) from None


def check_storable_text(name: str, text: str) -> str:
    """Text that every backend stores as text unchanged: no NUL (PostgreSQL refuses it in text
    columns) and no lone surrogate."""
    if "\x00" in text:
        raise InvalidValue(
            f"{name} contains a NUL character, which databases cannot store in text: {text!r};"
            " remove it"
        )
    _check_unicode(name, text)
    return text


def check_finite_json(name: str, value: Any, depth: int = 0) -> None:
    """Free-form payloads must be JSON-shaped and free of NaN and infinity."""
    if depth > 64:
        raise InvalidValue(f"{name} is nested deeper than 64 levels")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"{name} holds a non-finite number {value!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidValue(f"{name} keys must be strings, got {k!r}")
            _check_unicode(name, k)
            check_finite_json(name, v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_finite_json(name, v, depth + 1)
    elif isinstance(value, str):
        _check_unicode(name, value)
    elif value is not None and not isinstance(value, int | bool):
        raise InvalidValue(f"{name} must hold JSON values only, got {type(value).__name__}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_timestamp(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidValue(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class SkillAssessment:
    id: str
    skill: SkillType
    score: float
    confidence: float
    evidence: float
    assessed_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 1 <= len(self.id) <= 64:
            raise InvalidValue(f"assessment id must be a string of 1-64 chars, got {self.id!r}")
        check_storable_text("assessment id", self.id)
        try:
            object.__setattr__(self, "skill", SkillType(self.skill))
        except ValueError:
            raise InvalidValue(f"unknown skill {self.skill!r}") from None
        for name in ("score", "confidence", "evidence"):
            object.__setattr__(self, name, check_unit_interval(name, getattr(self, name)))
        object.__setattr__(self, "assessed_at", check_timestamp("assessed_at", self.assessed_at))

    @classmethod
    def restored(
        cls,
        id: str,
        skill: SkillType,
        score: float,
        confidence: float,
        evidence: float,
        assessed_at: datetime,
    ) -> SkillAssessment:
        """An assessment read back from storage, where it was checked when it was made: built
        without checking it again, since loading a long history is a hot path."""
        assessment = object.__new__(cls)
        # A frozen dataclass refuses attribute assignment; its instance dict does not.
        fields = assessment.__dict__
        fields["id"] = id
        fields["skill"] = skill
        fields["score"] = score
        fields["confidence"] = confidence
        fields["evidence"] = evidence
        fields["assessed_at"] = assessed_at
        return assessment

    def __deepcopy__(self, memo: dict[int, Any]) -> SkillAssessment:
        # Every field is immutable, so the assessment is too: a copy of a robot (the in-memory
        # model copies aggregates in and out of its store) can share it.
        return self

    @property
    def level(self) -> MasteryLevel:
        return MasteryLevel.from_score(self.score)

    @property
    def reliable(self) -> bool:
        return self.confidence >= 0.7 and self.evidence >= 0.6


@dataclass(frozen=True)
class RobotConfiguration:
    joint_count: int
    height_m: float
    weight_kg: float
    max_joint_velocity: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.joint_count, bool) or not isinstance(self.joint_count, int):
            raise InvalidValue(f"joint_count must be an integer > 0, got {self.joint_count!r}")
        check_positive("joint_count", self.joint_count)
        for name in ("height_m", "weight_kg", "max_joint_velocity"):
            object.__setattr__(self, name, float(check_positive(name, getattr(self, name))))
        if not isinstance(self.extra, Mapping):
            raise InvalidValue(f"extra must be a mapping, got {type(self.extra).__name__}")
        check_finite_json("configuration.extra", dict(self.extra))

    def to_json(self) -> dict[str, Any]:
        return {
            "joint_count": self.joint_count,
            "height_m": self.height_m,
            "weight_kg": self.weight_kg,
            "max_joint_velocity": self.max_joint_velocity,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RobotConfiguration:
        try:
            return cls(
                joint_count=data["joint_count"],
                height_m=data["height_m"],
                weight_kg=data["weight_kg"],
                max_joint_velocity=data["max_joint_velocity"],
                extra=data.get("extra", {}),
            )
        except (KeyError, TypeError) as error:
            raise InvalidValue(f"robot configuration payload is malformed: {error!r}") from None


@dataclass(frozen=True)
class EpisodeMetrics:
    success_rate: float
    reward: float
    skill_scores: Mapping[SkillType, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "success_rate", check_unit_interval("success_rate", self.success_rate)
        )
        if isinstance(self.reward, bool) or not isinstance(self.reward, int | float):
            raise InvalidValue(f"reward must be a finite number, got {self.reward!r}")
        if not is_finite(self.reward):
            raise InvalidValue(f"reward must be finite, got {self.reward!r}")
        object.__setattr__(self, "reward", float(self.reward))
        if not isinstance(self.skill_scores, Mapping):
            raise InvalidValue(
                f"skill_scores must be a mapping, got {type(self.skill_scores).__name__}"
            )
        scores: dict[SkillType, float] = {}
        for skill, score in dict(self.skill_scores).items():
            try:
                key = SkillType(skill)
            except ValueError:
                raise InvalidValue(f"unknown skill {skill!r} in metrics") from None
            scores[key] = check_unit_interval(f"skill score of {key}", score)
        object.__setattr__(self, "skill_scores", scores)
        if not isinstance(self.details, Mapping):
            raise InvalidValue(f"details must be a mapping, got {type(self.details).__name__}")
        check_finite_json("metrics.details", dict(self.details))

    def to_json(self) -> dict[str, Any]:
        return {
            "success_rate": self.success_rate,
            "reward": self.reward,
            "skill_scores": {str(k): v for k, v in self.skill_scores.items()},
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpisodeMetrics:
        try:
            return cls(
                success_rate=data["success_rate"],
                reward=data["reward"],
                skill_scores=data.get("skill_scores", {}),
                details=data.get("details", {}),
            )
        except (KeyError, TypeError) as error:
            raise InvalidValue(f"episode metrics payload is malformed: {error!r}") from None
