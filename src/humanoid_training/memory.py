"""An in-memory Unit of Work: the same repositories over dictionaries.

It is the model that uowstress compares the real system against: what the committed state
must be if persistence were perfect. It never applies weakening switches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from humanoid_training.domain import (
    CurriculumPlan,
    HumanoidRobot,
    LearningSession,
    NotFound,
    PlanStatus,
    SessionStatus,
    SkillType,
)
from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.persistence.repositories import (
    AbstractEventRepository,
    AbstractPlanRepository,
    AbstractRobotRepository,
    AbstractSessionRepository,
    StoredEvent,
)
from humanoid_training.persistence.unit_of_work import AbstractUnitOfWork


@dataclass
class MemoryStore:
    """What is committed."""

    robots: dict[str, HumanoidRobot] = field(default_factory=dict)
    sessions: dict[str, LearningSession] = field(default_factory=dict)
    plans: dict[str, CurriculumPlan] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)

    def table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "robot": self.robots,
            "session": self.sessions,
            "plan": self.plans,
        }
        return tables[kind]


class _MemoryRepository:
    kind = ""

    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def _add(self, aggregate: Aggregate) -> None:
        key = (self.kind, aggregate.id)
        if key in self._uow.seen or aggregate.id in self._uow.store.table(self.kind):
            raise ValueError(f"{self.kind} {aggregate.id!r} already exists")
        self._uow.seen[key] = aggregate

    def _get(self, aggregate_id: str) -> Any:
        key = (self.kind, aggregate_id)
        if key not in self._uow.seen:
            committed = self._uow.store.table(self.kind).get(aggregate_id)
            if committed is None:
                noun = {"robot": "robot", "session": "learning session", "plan": "curriculum plan"}
                raise NotFound(f"no {noun[self.kind]} with id {aggregate_id!r}")
            self._uow.seen[key] = copy.deepcopy(committed)
        return self._uow.seen[key]

    def _where(self, keep: Callable[[Any], bool]) -> list[Any]:
        """Committed aggregates and this unit of work's own, judged on their in-memory state
        (a query sees the unit of work's own changes), handed out as working copies."""
        committed = self._uow.store.table(self.kind)
        seen = {i: a for (k, i), a in self._uow.seen.items() if k == self.kind}
        out = []
        for aggregate_id in sorted(set(committed) | set(seen)):
            current = seen.get(aggregate_id, committed.get(aggregate_id))
            if keep(current):
                out.append(self._get(aggregate_id))
        return out


class MemoryRobotRepository(_MemoryRepository, AbstractRobotRepository):
    kind = "robot"

    def add(self, robot: HumanoidRobot) -> None:
        self._add(robot)

    def get(self, robot_id: str, *, lock: bool = False) -> HumanoidRobot:
        return self._get(robot_id)  # type: ignore[no-any-return]

    def find_robots_by_skill(self, skill: SkillType, min_score: float) -> list[HumanoidRobot]:
        skill = SkillType(skill)
        return self._where(lambda r: r.skills.get(skill, -1.0) >= min_score)

    def touch(self, robot: HumanoidRobot) -> None:
        return None


class MemorySessionRepository(_MemoryRepository, AbstractSessionRepository):
    kind = "session"

    def add(self, session: LearningSession) -> None:
        self._add(session)

    def get(self, session_id: str, *, lock: bool = False) -> LearningSession:
        return self._get(session_id)  # type: ignore[no-any-return]

    def find_active_sessions(self) -> list[LearningSession]:
        return self._where(lambda s: s.status is SessionStatus.ACTIVE)

    def find_sessions_by_robot(
        self, robot_id: str, *, open_only: bool = False, lock: bool = False
    ) -> list[LearningSession]:
        return self._where(lambda s: s.robot_id == robot_id and (s.is_open or not open_only))


class MemoryPlanRepository(_MemoryRepository, AbstractPlanRepository):
    kind = "plan"

    def add(self, plan: CurriculumPlan) -> None:
        self._add(plan)

    def get(self, plan_id: str, *, lock: bool = False) -> CurriculumPlan:
        return self._get(plan_id)  # type: ignore[no-any-return]

    def find_active_plans(self) -> list[CurriculumPlan]:
        return self._where(lambda p: p.status is PlanStatus.ACTIVE)


class MemoryEventRepository(AbstractEventRepository):
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def events_for(self, aggregate_id: str) -> list[StoredEvent]:
        return [e for e in self._uow.store.events if e.aggregate_id == aggregate_id]


class InMemoryUnitOfWork(AbstractUnitOfWork):
    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.seen: dict[tuple[str, str], Any] = {}
        self.robots = MemoryRobotRepository(self)
        self.sessions = MemorySessionRepository(self)
        self.plans = MemoryPlanRepository(self)
        self.events = MemoryEventRepository(self)

    def __enter__(self) -> Self:
        self.seen = {}
        return self

    def commit(self) -> None:
        for (kind, aggregate_id), aggregate in self.seen.items():
            for event in aggregate.events:
                self.store.events.append(
                    StoredEvent(
                        event_id=event.event_id,
                        aggregate_type=event.aggregate_type,
                        aggregate_id=event.aggregate_id,
                        event_type=event.name,
                        payload=event.payload(),
                        occurred_at=event.occurred_at,
                    )
                )
            aggregate.events.clear()
            self.store.table(kind)[aggregate_id] = copy.deepcopy(aggregate)

    def rollback(self) -> None:
        self.seen = {}
