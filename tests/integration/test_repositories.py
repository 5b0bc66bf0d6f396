"""Repositories on every backend: finders return the right aggregates, unknown ids raise
NotFound, and every statement the repositories run is answered through an index.

The index check EXPLAINs the very statements the repositories send (captured from the driver
with their parameters), on tables holding enough rows for the planners to take indexes
seriously, after the tables were analysed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, text

from humanoid_training.domain import (
    CurriculumPlan,
    CurriculumStage,
    HumanoidRobot,
    LearningSession,
    NotFound,
    PlanStatus,
    SessionStatus,
    SkillAssessment,
    SkillType,
    new_id,
)
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import backend_of
from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork
from tests.integration.support import save_new, uow

S = SkillType


def _robot(name: str, scores: dict[SkillType, float]) -> HumanoidRobot:
    robot = HumanoidRobot.create(name, id=new_id())
    for skill, score in scores.items():
        robot.assess(SkillAssessment(new_id(), skill, score, 0.9, 0.9))
    return robot


def _session(robot: HumanoidRobot, status: SessionStatus) -> LearningSession:
    session = LearningSession(id=new_id(), robot_id=robot.id)
    if status is not SessionStatus.CREATED:
        session.start()
    if status is SessionStatus.PAUSED:
        session.pause()
    elif status is SessionStatus.COMPLETED:
        session.complete()
    elif status is SessionStatus.FAILED:
        session.fail()
    return session


def _plan(robot: HumanoidRobot, status: PlanStatus) -> CurriculumPlan:
    plan = CurriculumPlan(id=new_id(), robot_id=robot.id, name=f"plan {status}")
    plan.add_stage(CurriculumStage(name="stand", target_skills=(S.POSTURAL_CONTROL,)))
    if status is not PlanStatus.DRAFT:
        plan.activate()
    if status is PlanStatus.COMPLETED:
        plan.stages[0] = CurriculumStage(
            name="stand", target_skills=(S.POSTURAL_CONTROL,), episodes=10, successes=10
        )
        plan.advance(dict.fromkeys(SkillType, 1.0))
    return plan


class World:
    """Three robots with sessions and plans in every status."""

    def __init__(self, engine: Engine) -> None:
        self.r1 = _robot("r1", {S.POSTURAL_CONTROL: 0.9, S.STATIC_BALANCE: 0.5})
        self.r2 = _robot("r2", {S.POSTURAL_CONTROL: 0.3})
        self.r3 = _robot("r3", {})
        self.active = _session(self.r1, SessionStatus.ACTIVE)
        self.completed = _session(self.r1, SessionStatus.COMPLETED)
        self.paused = _session(self.r2, SessionStatus.PAUSED)
        self.created = _session(self.r3, SessionStatus.CREATED)
        self.failed = _session(self.r3, SessionStatus.FAILED)
        self.active_plan = _plan(self.r1, PlanStatus.ACTIVE)
        self.draft_plan = _plan(self.r2, PlanStatus.DRAFT)
        self.completed_plan = _plan(self.r1, PlanStatus.COMPLETED)
        save_new(
            engine,
            self.r1,
            self.r2,
            self.r3,
            self.active,
            self.completed,
            self.paused,
            self.created,
            self.failed,
            self.active_plan,
            self.draft_plan,
            self.completed_plan,
        )


def _ids(aggregates: list[Any]) -> list[str]:
    return [a.id for a in aggregates]


def test_finders_return_the_right_aggregates(schema_engine: Engine) -> None:
    w = World(schema_engine)
    with uow(schema_engine) as work:
        assert work.sessions.find_active_sessions() == [w.active]
        assert sorted(_ids(work.sessions.find_sessions_by_robot(w.r1.id))) == sorted(
            [w.active.id, w.completed.id]
        )
        assert work.sessions.find_sessions_by_robot(w.r1.id, open_only=True) == [w.active]
        assert work.sessions.find_sessions_by_robot(w.r2.id, open_only=True) == [w.paused]
        assert work.sessions.find_sessions_by_robot(w.r3.id, open_only=True) == []
        assert sorted(_ids(work.sessions.find_sessions_by_robot(w.r3.id, lock=True))) == sorted(
            [w.created.id, w.failed.id]
        )
        assert work.sessions.find_sessions_by_robot("no-such-robot") == []

        # min_score is inclusive; robots come back whole and in id order.
        assert work.robots.find_robots_by_skill(S.POSTURAL_CONTROL, 0.3) == sorted(
            [w.r1, w.r2], key=lambda r: r.id
        )
        assert work.robots.find_robots_by_skill(S.POSTURAL_CONTROL, 0.30000000000000004) == [w.r1]
        assert work.robots.find_robots_by_skill(S.STATIC_BALANCE, 0.0) == [w.r1]
        assert work.robots.find_robots_by_skill(S.TURNING, 0.0) == []

        assert work.plans.find_active_plans() == [w.active_plan]

        events = work.events.events_for(w.r1.id)
        assert [(e.event_type, e.payload.get("skill")) for e in events] == [
            ("SkillAssessed", "postural_control"),
            ("SkillMastered", "postural_control"),
            ("SkillAssessed", "static_balance"),
        ]
        assert {e.aggregate_id for e in events} == {w.r1.id}
        assert [e.event_type for e in work.events.events_for(w.completed.id)] == [
            "SessionStarted",
            "SessionCompleted",
        ]
        assert work.events.events_for(w.r3.id) == []
        assert work.events.events_for("no-such-aggregate") == []


def test_one_unit_of_work_hands_out_one_instance_per_aggregate(schema_engine: Engine) -> None:
    """Finders and get share an identity map: a change made through one reference is seen
    (and saved) through every other."""
    w = World(schema_engine)
    with uow(schema_engine) as work:
        by_get = work.sessions.get(w.active.id)
        (by_finder,) = work.sessions.find_active_sessions()
        assert by_finder is by_get
        (robot,) = work.robots.find_robots_by_skill(S.STATIC_BALANCE, 0.1)
        assert robot is work.robots.get(w.r1.id)
        assert work.plans.find_active_plans()[0] is work.plans.get(w.active_plan.id)


def test_unknown_ids_raise_not_found(schema_engine: Engine) -> None:
    World(schema_engine)
    with uow(schema_engine) as work:
        for repository in (work.robots, work.sessions, work.plans):
            for lock in (False, True):
                with pytest.raises(NotFound, match="no-such-id"):
                    repository.get("no-such-id", lock=lock)


# -- index use --------------------------------------------------------------------------------


_CONFIGURATION = json.dumps(
    {"joint_count": 1, "height_m": 1.0, "weight_kg": 1.0, "max_joint_velocity": 1.0, "extra": {}}
)


def _bulk_rows(engine: Engine, count: int = 300) -> None:
    """Background rows, mostly finished, as a lab accumulates them: the few open sessions and
    active plans the finders look for are then a small fraction, as in real use."""
    rows: dict[Any, list[dict[str, Any]]] = {table: [] for table in t.ALL_TABLES}
    for i in range(count):
        robot, plan = f"bulk-robot-{i:05d}", f"bulk-plan-{i:05d}"
        score = (i % 100) / 100
        rows[t.robots].append(
            dict(id=robot, version=1, name=robot, robot_type="custom", configuration=_CONFIGURATION)
        )
        # Robots know the first few skills of the curriculum, as training goes.
        for n, skill in enumerate(list(SkillType)[: 1 + i % len(SkillType)]):
            rows[t.robot_skills].append(dict(robot_id=robot, skill=skill, score=score))
            rows[t.assessments].append(
                dict(id=f"{robot}-{n}", robot_id=robot, seq=n, skill=skill, score=score,
                     confidence=0.5, evidence=0.5, assessed_at=i)
            )  # fmt: skip
        rows[t.plans].append(
            dict(id=plan, version=1, robot_id=robot, name=plan, status="completed",
                 current_stage_index=0)
        )  # fmt: skip
        rows[t.stages].append(
            dict(plan_id=plan, position=0, name="s", target_skills="turning",
                 prerequisite_skills="", min_episodes=0, target_success_rate=0.0, episodes=0,
                 successes=0)
        )  # fmt: skip
        for n, status in enumerate(("completed", "failed", "completed", "created")):
            session = f"bulk-session-{i:05d}-{n}"
            rows[t.sessions].append(
                dict(id=session, version=1, robot_id=robot, plan_id=plan, status=status,
                     episodes_completed=1, episodes_successful=1, created_at=i)
            )  # fmt: skip
            rows[t.episodes].append(
                dict(id=f"{session}-e", session_id=session, number=1, status="completed",
                     outcome="success", reward=1.0, metrics=None, started_at=i, ended_at=i)
            )  # fmt: skip
            rows[t.outbox].append(
                dict(event_id=f"{session}-ev", aggregate_type="session", aggregate_id=session,
                     event_type="SessionStarted", payload="{}", occurred_at=i)
            )  # fmt: skip
    with engine.begin() as connection:
        for table in t.ALL_TABLES:  # sorted by dependency, for the foreign keys
            connection.execute(insert(table), rows[table])


def _analyse(engine: Engine) -> None:
    backend = backend_of(engine)
    with engine.begin() as connection:
        if backend == "mysql":
            names = ", ".join(table.name for table in t.ALL_TABLES)
            connection.execute(text(f"ANALYZE TABLE {names}")).all()
        else:
            connection.execute(text("ANALYZE"))


@contextmanager
def _captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements (SQL and driver parameters) sent to the database inside the block."""
    statements: list[tuple[str, Any]] = []

    def capture(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not many and re.match(r"\s*(SELECT|UPDATE|DELETE)\b", statement, re.IGNORECASE):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def _repository_statements(engine: Engine, w: World) -> list[tuple[str, Any]]:
    """Run every finder and loader (plain and locking) and one versioned update of each
    aggregate kind, and return what they sent."""
    calls: list[Callable[[SqlAlchemyUnitOfWork], Any]] = [
        lambda work: work.sessions.find_active_sessions(),
        lambda work: work.sessions.find_sessions_by_robot(w.r1.id),
        lambda work: work.sessions.find_sessions_by_robot(w.r1.id, open_only=True, lock=True),
        lambda work: work.robots.find_robots_by_skill(S.POSTURAL_CONTROL, 0.85),
        lambda work: work.plans.find_active_plans(),
        lambda work: work.events.events_for(w.r1.id),
        lambda work: work.robots.get(w.r2.id, lock=True),
        lambda work: work.sessions.get(w.paused.id, lock=True),
        lambda work: work.plans.get(w.draft_plan.id, lock=True),
    ]
    with _captured(engine) as statements:
        for call in calls:
            with uow(engine) as work:
                call(work)
        with uow(engine) as work:
            work.robots.get(w.r3.id).rename("renamed")
            work.sessions.get(w.created.id).start()
            work.plans.get(w.draft_plan.id).activate()
            work.commit()
    return statements


def _plan_problems(connection: Connection, backend: str, sql: str, parameters: Any) -> list[str]:
    """Each access in the plan of `sql` that reads a whole table or a whole index instead of
    looking rows up through an index (empty when there is none)."""
    if backend == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters).all()
        # SEARCH is an index lookup; SCAN reads the whole table, or the whole of an index
        # ("SCAN t USING INDEX i"), which is no better.
        return [str(row[-1]) for row in rows if str(row[-1]).startswith("SCAN ht_")]
    if backend == "postgresql":
        # Sequential scans priced out: a plan still holding one has no index to use.
        connection.exec_driver_sql("SET enable_seqscan = off")
        (raw,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", parameters).one()
        plan: list[dict[str, Any]] = json.loads(raw) if isinstance(raw, str) else raw
        return [
            f"{node['Node Type']} on {node.get('Relation Name')}"
            f" (index {node.get('Index Name')}, no index condition)"
            for node in _nodes(plan[0]["Plan"])
            if node["Node Type"] == "Seq Scan"
            # An index scan without a condition walks the whole index (e.g. for ORDER BY).
            or (node["Node Type"] in _PG_INDEX_SCANS and "Index Cond" not in node)
        ]
    result = connection.exec_driver_sql(f"EXPLAIN {sql}", parameters)
    explained = [dict(zip(result.keys(), row, strict=True)) for row in result]
    # ALL is a full table scan, index a full index scan.
    return [
        f"type {row['type']} on {row['table']} (possible keys: {row['possible_keys']})"
        for row in explained
        if row["type"] in ("ALL", "index")
    ]


_PG_INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_repository_statements_use_indexes(schema_engine: Engine) -> None:
    _bulk_rows(schema_engine)
    w = World(schema_engine)
    _analyse(schema_engine)
    statements = _repository_statements(schema_engine, w)
    backend = backend_of(schema_engine)

    tables_seen = {m for sql, _ in statements for m in re.findall(r"\bht_\w+", sql)}
    # Every table the aggregates live in was queried, so every one had its plan checked.
    assert tables_seen >= {table.name for table in t.ALL_TABLES}, tables_seen
    problems = {}
    with schema_engine.connect() as connection:
        for sql, parameters in statements:
            found = _plan_problems(connection, backend, sql, parameters)
            if found:
                problems[sql] = found
        connection.rollback()
    assert not problems, "statements without an index:\n" + "\n".join(
        f"{sql}\n  -> {found}" for sql, found in problems.items()
    )
