"""Repositories: abstract ports, and their SQLAlchemy Core implementations.

The concrete repositories load whole aggregates, keep a snapshot of what they loaded, and at
commit write only what changed, guarded by the aggregate's version (optimistic concurrency).

Query-driven writes need a guard aggregate on SQLite. There a unit of work that writes reads in
one transaction and writes in a second one (see engine.begin_writing); the version checks
cover every aggregate it loaded, but not a row that a query did not find. A write whose target
or whose permission a query decides ("no open session for this robot, so open one", "pause
every active session") must also lock and touch an aggregate the answer depends on, as
services.open_session does with the robot: otherwise a unit of work committing in between can
change the answer unseen. PostgreSQL below SERIALIZABLE does not lock what a query did not
find either.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, CursorResult, Row, select

from humanoid_training.domain import (
    CurriculumPlan,
    CurriculumStage,
    EpisodeMetrics,
    EpisodeOutcome,
    EpisodeStatus,
    HumanoidRobot,
    LearningEpisode,
    LearningSession,
    NotFound,
    PlanStatus,
    RobotConfiguration,
    RobotType,
    SessionStatus,
    SkillAssessment,
    SkillType,
)
from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.domain.assessments import AssessmentHistory
from humanoid_training.persistence import statements as q
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import reads_uncommitted
from humanoid_training.persistence.errors import (
    ConcurrencyConflict,
    RetryableConflict,
    translated_errors,
)

if TYPE_CHECKING:
    from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# A dictionary lookup: calling the enum for each loaded row costs more.
_SKILLS: dict[str, SkillType] = {str(s): s for s in SkillType}


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    return EPOCH + _MICRO * micros  # exact, and faster than timedelta(microseconds=...)


def _opt_micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def _opt_datetime(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


@dataclass(frozen=True)
class StoredEvent:
    """An outbox row, as read back."""

    event_id: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: dict[str, Any]
    occurred_at: datetime


# ---------------------------------------------------------------------------------------------
# Abstract ports
# ---------------------------------------------------------------------------------------------


class AbstractRobotRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, robot: HumanoidRobot) -> None: ...

    @abc.abstractmethod
    def get(self, robot_id: str, *, lock: bool = False) -> HumanoidRobot:
        """The robot with that id; `NotFound` otherwise. `lock` takes a row lock where the
        backend has one."""

    @abc.abstractmethod
    def find_robots_by_skill(self, skill: SkillType, min_score: float) -> list[HumanoidRobot]: ...

    @abc.abstractmethod
    def touch(self, robot: HumanoidRobot) -> None:
        """Bump the robot's version at commit even if it did not change, so that a concurrent
        unit of work that read it conflicts (guards decisions taken from other aggregates)."""


class AbstractSessionRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, session: LearningSession) -> None: ...

    @abc.abstractmethod
    def get(self, session_id: str, *, lock: bool = False) -> LearningSession: ...

    @abc.abstractmethod
    def find_active_sessions(self) -> list[LearningSession]: ...

    @abc.abstractmethod
    def find_sessions_by_robot(
        self, robot_id: str, *, open_only: bool = False, lock: bool = False
    ) -> list[LearningSession]: ...


class AbstractPlanRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, plan: CurriculumPlan) -> None: ...

    @abc.abstractmethod
    def get(self, plan_id: str, *, lock: bool = False) -> CurriculumPlan: ...

    @abc.abstractmethod
    def find_active_plans(self) -> list[CurriculumPlan]: ...


class AbstractEventRepository(abc.ABC):
    @abc.abstractmethod
    def events_for(self, aggregate_id: str) -> list[StoredEvent]: ...


# ---------------------------------------------------------------------------------------------
# SQLAlchemy implementations
# ---------------------------------------------------------------------------------------------


class _SqlRepository:
    kind = ""

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        self._uow = uow

    def _read(self, statement: Any, parameters: dict[str, Any] | None = None) -> CursorResult[Any]:
        """Run a query of the unit of work. A locking or snapshot read can be refused by the
        database too (serialization failure, deadlock, lock timeout, SQLITE_BUSY): that must
        surface as RetryableConflict here as well as at commit, so callers can retry."""
        with translated_errors():
            if isinstance(statement, q.Prepared):
                return statement.run(self._uow.connection, parameters or {})
            return self._uow.connection.execute(statement, parameters)

    def _cached(self, aggregate_id: str) -> Any:
        tracked = self._uow.tracked.get((self.kind, aggregate_id))
        return None if tracked is None else tracked.aggregate

    def _with_pending(self, found: list[Any], keep: Callable[[Any], bool]) -> list[Any]:
        """What a query found in the database, plus what this unit of work holds in memory,
        judged on the in-memory state: a query sees the unit of work's own changes (an added
        session, a status changed but not yet written)."""
        by_id = {a.id: a for a in found}
        for (kind, aggregate_id), tracked in self._uow.tracked.items():
            if kind == self.kind:
                by_id[aggregate_id] = tracked.aggregate
        return [by_id[i] for i in sorted(by_id) if keep(by_id[i])]

    def _guarded_update(self, aggregate: Aggregate, values: dict[str, Any]) -> int:
        """UPDATE the root row and bump its version; a stale version is a ConcurrencyConflict."""
        new_version = aggregate.version + 1
        check = not self._uow.weakenings.no_version_check
        parameters = {"b_id": aggregate.id, "version": new_version, **values}
        if check:
            parameters["b_version"] = aggregate.version
        result = q.GUARDED_UPDATE[self.kind, check, bool(values)].run(
            self._uow.connection, parameters
        )
        if result.rowcount != 1:
            raise ConcurrencyConflict(self.kind, aggregate.id, aggregate.version)
        return new_version


class SqlAlchemyRobotRepository(_SqlRepository, AbstractRobotRepository):
    kind = "robot"

    def add(self, robot: HumanoidRobot) -> None:
        self._uow.track_new(self.kind, robot)

    def get(self, robot_id: str, *, lock: bool = False) -> HumanoidRobot:
        cached = self._cached(robot_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        key = {"b_id": robot_id}
        locked = None
        if lock:
            locked = self._read(q.ROBOT_FOR_UPDATE, key).one_or_none()
            if locked is None:
                raise NotFound(f"no robot with id {robot_id!r}")
        rows = self._read(q.ROBOT_WITH_SKILLS, key).all()
        if locked is not None and (not rows or rows[0].version != locked.version):
            # A locking read returns the latest version, a plain one the unit of work's
            # snapshot: on MySQL and MariaDB at REPEATABLE READ (their default), the snapshot
            # of its first read, which may be older. The robot's parts (its skills, its
            # history) are plain reads, so they would not be those of the version locked.
            # PostgreSQL refuses to lock a row changed since the snapshot; so does this.
            # (Locking reads of the parts would lock gaps where rows are missing, and hold up
            # units of work on other robots.)
            seen = f"version {rows[0].version}" if rows else "no such robot"
            raise RetryableConflict(
                "serialization",
                f"robot {robot_id!r} was changed since this unit of work's snapshot was taken"
                f" ({seen} there, version {locked.version} locked)",
            )
        if not rows:
            raise NotFound(f"no robot with id {robot_id!r}")
        # The outer join gives one row per skill, or one row of NULLs for a robot without any.
        skills = {_SKILLS[r.skill]: r.score for r in rows if r.skill is not None}
        return self._load(rows[0], skills, rows[0].history_length)

    def _load(
        self, row: Row[Any], skills: dict[SkillType, float], history_length: int
    ) -> HumanoidRobot:
        robot = HumanoidRobot(
            id=row.id,
            version=row.version,
            name=row.name,
            robot_type=RobotType(row.robot_type),
            configuration=RobotConfiguration.from_json(self._uow.codec.decode(row.configuration)),
            skills=skills,
            history=self._history(row.id, history_length),
        )
        self._uow.track_loaded(self.kind, robot, self.snapshot(robot))
        return robot

    def _history(self, robot_id: str, length: int) -> AssessmentHistory:
        """The robot's history of `length` stored entries, read only when it is used (see
        humanoid_training.domain.assessments)."""
        if not length:
            return AssessmentHistory()
        key = {"b_id": robot_id, "b_length": length}
        # The block this robot was loaded in: a read after it ends uses a connection of its
        # own, even when the same unit of work has been opened again since.
        loaded_on = self._uow.connection

        def read() -> list[SkillAssessment]:
            restored = SkillAssessment.restored
            rows = self._rows(q.ROBOT_HISTORY, key, loaded_on)
            return [
                restored(id_, _SKILLS[skill], score, confidence, evidence, from_micros(micros))
                for id_, skill, score, confidence, evidence, micros in rows
            ]

        def holds(assessment_id: str) -> bool:
            parameters = {**key, "b_assessment_id": assessment_id}
            return bool(self._rows(q.HISTORY_HOLDS, parameters, loaded_on))

        if self._uow.weakenings.no_version_check or reads_uncommitted(self._uow.engine):
            # The first `length` entries are then no fixed set: two units of work can append
            # at one position without the version check, and a length read uncommitted can be
            # rolled back. Read as loaded, as the history always was before.
            return AssessmentHistory(read())
        return AssessmentHistory.stored(length, read, holds)

    def _rows(
        self, statement: q.Prepared, parameters: dict[str, Any], loaded_on: Connection
    ) -> Sequence[Any]:
        """The rows of a read of stored history: in the unit of work's block that loaded the
        robot while it is open, on a connection of its own afterwards (what it reads never
        changes, see ROBOT_HISTORY)."""
        if self._uow.is_open and self._uow.connection is loaded_on:
            return self._read(statement, parameters).all()
        with translated_errors(), self._uow.engine.connect() as connection:
            return statement.run(connection, parameters).all()

    def find_robots_by_skill(self, skill: SkillType, min_score: float) -> list[HumanoidRobot]:
        ids = self._read(
            select(t.robot_skills.c.robot_id)
            .where(t.robot_skills.c.skill == str(SkillType(skill)))
            .where(t.robot_skills.c.score >= min_score)
            .order_by(t.robot_skills.c.robot_id)
        ).scalars()
        skill = SkillType(skill)
        return self._with_pending(
            [self.get(robot_id) for robot_id in list(ids)],
            lambda r: r.skills.get(skill, -1.0) >= min_score,
        )

    def touch(self, robot: HumanoidRobot) -> None:
        self._uow.touch(self.kind, robot)

    @staticmethod
    def snapshot(robot: HumanoidRobot) -> Any:
        return (
            robot.name,
            robot.robot_type,
            robot.configuration,
            dict(robot.skills),
            len(robot.history),
        )

    def insert(self, robot: HumanoidRobot) -> int:
        conn = self._uow.connection
        q.INSERT_ROBOT.run(
            conn,
            {
                "id": robot.id,
                "version": 1,
                "name": robot.name,
                "robot_type": str(robot.robot_type),
                "configuration": self._uow.codec.encode(robot.configuration.to_json()),
            },
        )
        self._insert_skills(robot, robot.skills)
        self._insert_assessments(robot, 0)
        return 1

    def changes(self, robot: HumanoidRobot, snapshot: Any, touched: bool) -> Any:
        """What `save` writes for the robot loaded as `snapshot`; None when nothing."""
        name, robot_type, configuration, skills, history_len = snapshot
        root_changed = (name, robot_type, configuration) != (
            robot.name,
            robot.robot_type,
            robot.configuration,
        )
        changed = {k: v for k, v in robot.skills.items() if skills.get(k) != v}
        if not (root_changed or changed or len(robot.history) != history_len or touched):
            return None
        return root_changed, changed

    def save(self, robot: HumanoidRobot, snapshot: Any, changes: Any) -> int:
        _name, _robot_type, _configuration, skills, history_len = snapshot
        root_changed, changed = changes
        values: dict[str, Any] = {}
        if root_changed:
            values = {
                "name": robot.name,
                "robot_type": str(robot.robot_type),
                "configuration": self._uow.codec.encode(robot.configuration.to_json()),
            }
        version = self._guarded_update(robot, values)
        conn = self._uow.connection
        existing = [(k, v) for k, v in changed.items() if k in skills]
        if existing:
            q.UPDATE_SKILL_SCORE.run(
                conn,
                [{"b_robot_id": robot.id, "b_skill": str(k), "b_score": v} for k, v in existing],
            )
        self._insert_skills(robot, {k: v for k, v in changed.items() if k not in skills})
        self._insert_assessments(robot, history_len)
        return version

    def _insert_skills(self, robot: HumanoidRobot, skills: dict[SkillType, float]) -> None:
        if skills:
            q.INSERT_SKILLS.run(
                self._uow.connection,
                [{"robot_id": robot.id, "skill": str(k), "score": v} for k, v in skills.items()],
            )

    def _insert_assessments(self, robot: HumanoidRobot, start: int) -> None:
        new = robot.history[start:]
        if new:
            q.INSERT_ASSESSMENTS.run(
                self._uow.connection,
                [
                    {
                        "id": a.id,
                        "robot_id": robot.id,
                        "seq": start + i,
                        "skill": str(a.skill),
                        "score": a.score,
                        "confidence": a.confidence,
                        "evidence": a.evidence,
                        "assessed_at": to_micros(a.assessed_at),
                    }
                    for i, a in enumerate(new)
                ],
            )


class SqlAlchemySessionRepository(_SqlRepository, AbstractSessionRepository):
    kind = "session"

    def add(self, session: LearningSession) -> None:
        self._uow.track_new(self.kind, session)

    def get(self, session_id: str, *, lock: bool = False) -> LearningSession:
        cached = self._cached(session_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        query = q.SESSION_FOR_UPDATE if lock else q.SESSION
        row = self._read(query, {"b_id": session_id}).one_or_none()
        if row is None:
            raise NotFound(f"no learning session with id {session_id!r}")
        return self._load(row)

    def _many(self, query: Any, parameters: dict[str, Any] | None = None) -> list[LearningSession]:
        rows = list(self._read(query, parameters))
        return [self._cached(row.id) or self._load(row) for row in rows]

    def find_active_sessions(self) -> list[LearningSession]:
        found = self._many(
            select(t.sessions)
            .where(t.sessions.c.status == str(SessionStatus.ACTIVE))
            .order_by(t.sessions.c.id)
        )
        return self._with_pending(found, lambda s: s.status is SessionStatus.ACTIVE)

    def find_sessions_by_robot(
        self, robot_id: str, *, open_only: bool = False, lock: bool = False
    ) -> list[LearningSession]:
        parameters: dict[str, Any] = {"b_robot_id": robot_id}
        if open_only:
            parameters["b_status_1"] = str(SessionStatus.ACTIVE)
            parameters["b_status_2"] = str(SessionStatus.PAUSED)
        found = self._many(q.SESSIONS_BY_ROBOT[open_only, lock], parameters)
        return self._with_pending(
            found, lambda s: s.robot_id == robot_id and (s.is_open or not open_only)
        )

    def _load(self, row: Row[Any]) -> LearningSession:
        decode = self._uow.codec.decode
        episodes = [
            LearningEpisode(
                id=e.id,
                number=e.number,
                status=EpisodeStatus(e.status),
                outcome=None if e.outcome is None else EpisodeOutcome(e.outcome),
                reward=e.reward,
                metrics=None if e.metrics is None else EpisodeMetrics.from_json(decode(e.metrics)),
                started_at=_opt_datetime(e.started_at),
                ended_at=_opt_datetime(e.ended_at),
            )
            for e in self._read(q.SESSION_EPISODES, {"b_id": row.id})
        ]
        session = LearningSession(
            id=row.id,
            version=row.version,
            robot_id=row.robot_id,
            plan_id=row.plan_id,
            status=SessionStatus(row.status),
            episodes=episodes,
            episodes_completed=row.episodes_completed,
            episodes_successful=row.episodes_successful,
            created_at=from_micros(row.created_at),
        )
        self._uow.track_loaded(self.kind, session, self.snapshot(session))
        return session

    @staticmethod
    def _episode_state(e: LearningEpisode) -> tuple[Any, ...]:
        return (e.number, e.status, e.outcome, e.reward, e.metrics, e.started_at, e.ended_at)

    @classmethod
    def snapshot(cls, session: LearningSession) -> Any:
        return (
            (
                session.robot_id,
                session.plan_id,
                session.status,
                session.episodes_completed,
                session.episodes_successful,
                session.created_at,
            ),
            {e.id: cls._episode_state(e) for e in session.episodes},
        )

    def _root_values(self, session: LearningSession) -> dict[str, Any]:
        return {
            "robot_id": session.robot_id,
            "plan_id": session.plan_id,
            "status": str(session.status),
            "episodes_completed": session.episodes_completed,
            "episodes_successful": session.episodes_successful,
            "created_at": to_micros(session.created_at),
        }

    def _episode_values(self, session_id: str, e: LearningEpisode) -> dict[str, Any]:
        return {
            "id": e.id,
            "session_id": session_id,
            "number": e.number,
            "status": str(e.status),
            "outcome": None if e.outcome is None else str(e.outcome),
            "reward": e.reward,
            "metrics": None if e.metrics is None else self._uow.codec.encode(e.metrics.to_json()),
            "started_at": _opt_micros(e.started_at),
            "ended_at": _opt_micros(e.ended_at),
        }

    def insert(self, session: LearningSession) -> int:
        conn = self._uow.connection
        q.INSERT_SESSION.run(conn, {"id": session.id, "version": 1} | self._root_values(session))
        if session.episodes:
            q.INSERT_EPISODES.run(
                conn,
                [self._episode_values(session.id, e) for e in session.episodes],
            )
        return 1

    def changes(self, session: LearningSession, snapshot: Any, touched: bool) -> Any:
        """What `save` writes for the session loaded as `snapshot`; None when nothing."""
        now = self.snapshot(session)
        return None if now == snapshot and not touched else now

    def save(self, session: LearningSession, snapshot: Any, changes: Any) -> int:
        root, episodes = snapshot
        root_now, episodes_now = changes
        version = self._guarded_update(
            session, self._root_values(session) if root != root_now else {}
        )
        conn = self._uow.connection
        new = [e for e in session.episodes if e.id not in episodes]
        changed = [
            e for e in session.episodes if e.id in episodes and episodes[e.id] != episodes_now[e.id]
        ]
        for e in changed:
            values = self._episode_values(session.id, e)
            del values["id"], values["session_id"]
            q.UPDATE_EPISODE.run(conn, {"b_id": e.id} | values)
        if new:
            q.INSERT_EPISODES.run(conn, [self._episode_values(session.id, e) for e in new])
        return version


class SqlAlchemyPlanRepository(_SqlRepository, AbstractPlanRepository):
    kind = "plan"

    def add(self, plan: CurriculumPlan) -> None:
        self._uow.track_new(self.kind, plan)

    def get(self, plan_id: str, *, lock: bool = False) -> CurriculumPlan:
        cached = self._cached(plan_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        row = self._read(q.PLAN_FOR_UPDATE if lock else q.PLAN, {"b_id": plan_id}).one_or_none()
        if row is None:
            raise NotFound(f"no curriculum plan with id {plan_id!r}")
        return self._load(row)

    def find_active_plans(self) -> list[CurriculumPlan]:
        rows = list(
            self._read(
                select(t.plans)
                .where(t.plans.c.status == str(PlanStatus.ACTIVE))
                .order_by(t.plans.c.id)
            )
        )
        found = [self._cached(row.id) or self._load(row) for row in rows]
        return self._with_pending(found, lambda p: p.status is PlanStatus.ACTIVE)

    def _load(self, row: Row[Any]) -> CurriculumPlan:
        stages = [
            CurriculumStage(
                name=s.name,
                target_skills=_split(s.target_skills),
                prerequisite_skills=_split(s.prerequisite_skills),
                min_episodes=s.min_episodes,
                target_success_rate=s.target_success_rate,
                episodes=s.episodes,
                successes=s.successes,
            )
            for s in self._read(q.PLAN_STAGES, {"b_id": row.id})
        ]
        plan = CurriculumPlan(
            id=row.id,
            version=row.version,
            robot_id=row.robot_id,
            name=row.name,
            status=PlanStatus(row.status),
            stages=stages,
            current_stage_index=row.current_stage_index,
        )
        self._uow.track_loaded(self.kind, plan, self.snapshot(plan))
        return plan

    @staticmethod
    def _stage_state(s: CurriculumStage) -> tuple[Any, ...]:
        return (
            s.name,
            s.target_skills,
            s.prerequisite_skills,
            s.min_episodes,
            s.target_success_rate,
            s.episodes,
            s.successes,
        )

    @classmethod
    def snapshot(cls, plan: CurriculumPlan) -> Any:
        return (
            (plan.robot_id, plan.name, plan.status, plan.current_stage_index),
            [cls._stage_state(s) for s in plan.stages],
        )

    @staticmethod
    def _stage_values(plan_id: str, position: int, s: CurriculumStage) -> dict[str, Any]:
        return {
            "plan_id": plan_id,
            "position": position,
            "name": s.name,
            "target_skills": _join(s.target_skills),
            "prerequisite_skills": _join(s.prerequisite_skills),
            "min_episodes": s.min_episodes,
            "target_success_rate": s.target_success_rate,
            "episodes": s.episodes,
            "successes": s.successes,
        }

    @staticmethod
    def _root_values(plan: CurriculumPlan) -> dict[str, Any]:
        return {
            "robot_id": plan.robot_id,
            "name": plan.name,
            "status": str(plan.status),
            "current_stage_index": plan.current_stage_index,
        }

    def insert(self, plan: CurriculumPlan) -> int:
        conn = self._uow.connection
        q.INSERT_PLAN.run(conn, {"id": plan.id, "version": 1} | self._root_values(plan))
        if plan.stages:
            q.INSERT_STAGES.run(
                conn,
                [self._stage_values(plan.id, i, s) for i, s in enumerate(plan.stages)],
            )
        return 1

    def changes(self, plan: CurriculumPlan, snapshot: Any, touched: bool) -> Any:
        """What `save` writes for the plan loaded as `snapshot`; None when nothing."""
        now = self.snapshot(plan)
        return None if now == snapshot and not touched else now

    def save(self, plan: CurriculumPlan, snapshot: Any, changes: Any) -> int:
        root, stages = snapshot
        root_now, stages_now = changes
        version = self._guarded_update(plan, self._root_values(plan) if root != root_now else {})
        conn = self._uow.connection
        for i, state in enumerate(stages_now):
            if i >= len(stages):
                q.INSERT_STAGES.run(conn, self._stage_values(plan.id, i, plan.stages[i]))
            elif stages[i] != state:
                values = self._stage_values(plan.id, i, plan.stages[i])
                del values["plan_id"], values["position"]
                q.UPDATE_STAGE.run(conn, {"b_plan_id": plan.id, "b_position": i} | values)
        return version


def _join(skills: Sequence[SkillType]) -> str:
    return ",".join(str(s) for s in skills)


def _split(text: str) -> tuple[SkillType, ...]:
    return tuple(SkillType(s) for s in text.split(",") if s)


class SqlAlchemyEventRepository(_SqlRepository, AbstractEventRepository):
    kind = "event"

    def events_for(self, aggregate_id: str) -> list[StoredEvent]:
        rows = self._read(
            select(t.outbox).where(t.outbox.c.aggregate_id == aggregate_id).order_by(t.outbox.c.id)
        )
        return [
            StoredEvent(
                event_id=r.event_id,
                aggregate_type=r.aggregate_type,
                aggregate_id=r.aggregate_id,
                event_type=r.event_type,
                payload=self._uow.codec.decode(r.payload),
                occurred_at=from_micros(r.occurred_at),
            )
            for r in rows
        ]
