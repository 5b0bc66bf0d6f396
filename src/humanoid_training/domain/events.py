"""Domain events: raised by aggregates, written to the outbox with the change that raised them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

from humanoid_training.domain.values import utc_now


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    aggregate_type: ClassVar[str] = ""
    aggregate_id: str
    event_id: str = field(default_factory=new_event_id)
    occurred_at: datetime = field(default_factory=utc_now)

    @property
    def name(self) -> str:
        return type(self).__name__

    def payload(self) -> dict[str, Any]:
        """The event's own fields as JSON values (identity and time are stored apart)."""
        out: dict[str, Any] = {}
        for name in _payload_fields(type(self)):
            v = getattr(self, name)
            out[name] = str(v) if not isinstance(v, int | float | bool | None) else v
        return out


_PAYLOAD_FIELDS: dict[type, tuple[str, ...]] = {}


def _payload_fields(kind: type) -> tuple[str, ...]:
    # Every field of an event is a scalar, so reading them beats dataclasses.asdict's deep copy.
    names = _PAYLOAD_FIELDS.get(kind)
    if names is None:
        skip = ("aggregate_id", "event_id", "occurred_at")
        names = _PAYLOAD_FIELDS[kind] = tuple(f.name for f in fields(kind) if f.name not in skip)
    return names


@dataclass(frozen=True, kw_only=True)
class SkillAssessed(DomainEvent):
    aggregate_type: ClassVar[str] = "robot"
    assessment_id: str
    skill: str
    score: float


@dataclass(frozen=True, kw_only=True)
class SkillMastered(DomainEvent):
    aggregate_type: ClassVar[str] = "robot"
    skill: str
    score: float


@dataclass(frozen=True, kw_only=True)
class EpisodeCompleted(DomainEvent):
    aggregate_type: ClassVar[str] = "session"
    episode_id: str
    outcome: str
    reward: float


@dataclass(frozen=True, kw_only=True)
class SessionStarted(DomainEvent):
    aggregate_type: ClassVar[str] = "session"
    robot_id: str


@dataclass(frozen=True, kw_only=True)
class SessionCompleted(DomainEvent):
    aggregate_type: ClassVar[str] = "session"
    robot_id: str
    episodes_completed: int
    episodes_successful: int


@dataclass(frozen=True, kw_only=True)
class CurriculumStageAdvanced(DomainEvent):
    aggregate_type: ClassVar[str] = "plan"
    from_stage: int
    to_stage: int
    completed: bool


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.__name__: cls
    for cls in (
        SkillAssessed,
        SkillMastered,
        EpisodeCompleted,
        SessionStarted,
        SessionCompleted,
        CurriculumStageAdvanced,
    )
}
