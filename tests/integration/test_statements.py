"""Prepared statements: compiled once per dialect, run as driver SQL, on every backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, bindparam, event, select, text

from humanoid_training.persistence import statements as q
from humanoid_training.persistence import tables as t


def _robot(robot_id: str) -> dict[str, Any]:
    return {
        "id": robot_id,
        "version": 1,
        "name": f"robot {robot_id}",
        "robot_type": "custom",
        "configuration": "{}",
    }


def test_inserts_selects_and_guarded_updates_round_trip(schema_engine: Engine) -> None:
    with schema_engine.begin() as connection:
        q.INSERT_ROBOT.run(connection, [_robot("r1"), _robot("r2")])  # executemany
        q.INSERT_SKILLS.run(
            connection,
            [
                {"robot_id": "r1", "skill": "turning", "score": 0.5},
                {"robot_id": "r1", "skill": "static_balance", "score": 0.25},
            ],
        )
        rows = q.ROBOT_WITH_SKILLS.run(connection, {"b_id": "r1"}).all()
        assert {(r.id, r.name, r.skill, r.score) for r in rows} == {
            ("r1", "robot r1", "turning", 0.5),
            ("r1", "robot r1", "static_balance", 0.25),
        }
        # A robot without skills: one row, the skill columns NULL.
        rows = q.ROBOT_WITH_SKILLS.run(connection, {"b_id": "r2"}).all()
        assert [(r.id, r.skill, r.score) for r in rows] == [("r2", None, None)]

        checked = q.GUARDED_UPDATE["robot", True, True]
        stale = {"b_id": "r1", "b_version": 7, "version": 8, "name": "x", "robot_type": "custom"}
        assert checked.run(connection, stale | {"configuration": "{}"}).rowcount == 0
        fresh = stale | {"b_version": 1, "version": 2, "configuration": '{"a":1}'}
        assert checked.run(connection, fresh).rowcount == 1
        unchecked = q.GUARDED_UPDATE["robot", False, False]
        assert unchecked.run(connection, {"b_id": "r2", "version": 5}).rowcount == 1
        # Placeholders bound by name, whatever order the dialect puts them in.
        q.UPDATE_SKILL_SCORE.run(
            connection, {"b_score": 0.75, "b_skill": "turning", "b_robot_id": "r1"}
        )
        stored = connection.execute(
            select(t.robots.c.id, t.robots.c.version, t.robots.c.name, t.robots.c.configuration)
        ).all()
        skills = connection.execute(select(t.robot_skills.c.skill, t.robot_skills.c.score))
        scores = {skill: score for skill, score in skills}
    assert sorted(tuple(r) for r in stored) == [
        ("r1", 2, "x", '{"a":1}'),
        ("r2", 5, "robot r2", "{}"),
    ]
    assert scores == {"turning": 0.75, "static_balance": 0.25}


def test_parameters_are_converted_as_sqlalchemy_would(schema_engine: Engine) -> None:
    # An integer score bound to a double column is stored as a double (SQLite would keep an
    # integer otherwise, and read it back as one).
    with schema_engine.begin() as connection:
        q.INSERT_ROBOT.run(connection, _robot("r1"))
        q.INSERT_SKILLS.run(connection, {"robot_id": "r1", "skill": "turning", "score": 1})
        row = q.ROBOT_WITH_SKILLS.run(connection, {"b_id": "r1"}).one()
        skill, score = row.skill, row.score
    assert skill == "turning" and score == 1.0 and isinstance(score, float)


def test_prepared_statements_pass_through_sqlalchemys_events(schema_engine: Engine) -> None:
    # Fault injection at the k-th statement and statement timing listen there.
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(schema_engine, "before_cursor_execute", record)
    try:
        with schema_engine.begin() as connection:
            q.INSERT_ROBOT.run(connection, _robot("r1"))
            q.ROBOT_HISTORY.run(connection, {"b_id": "r1", "b_length": 1}).all()
    finally:
        event.remove(schema_engine, "before_cursor_execute", record)
    assert [s.split()[0] for s in seen] == ["INSERT", "SELECT"]


def test_autocommit_connections_get_no_begin(schema_engine: Engine, backend: str) -> None:
    # The reference engine issues SQLite's BEGIN itself; under AUTOCOMMIT it must not.
    with schema_engine.connect() as connection:
        auto = connection.execution_options(isolation_level="AUTOCOMMIT")
        q.INSERT_ROBOT.run(auto, _robot("r1"))
        auto.rollback()  # nothing to roll back: the insert is already committed
    with schema_engine.connect() as connection:
        count = connection.execute(text("SELECT COUNT(*) FROM ht_robots")).scalar()
    assert count == 1


def test_engines_of_different_backends_share_a_statement() -> None:
    """One statement used by engines of two dialects in turn gets each its own SQL."""
    from sqlalchemy.dialects import postgresql, sqlite

    statement = q.Prepared(select(t.robots.c.id).where(t.robots.c.id == bindparam("b_id")))
    lite, pg = sqlite.dialect(), postgresql.dialect()  # type: ignore[no-untyped-call]
    for dialect, placeholder in [
        (lite, "= ?"),
        (pg, "= %(b_id)s"),
        (lite, "= ?"),
        (pg, "= %(b_id)s"),
    ]:
        sql = statement._for(dialect).sql
        assert placeholder in sql and ("%(" in sql) == (dialect is pg), sql


def test_the_outbox_insert_asks_nothing_back(schema_engine: Engine) -> None:
    # Nothing reads an event's generated id at commit: a RETURNING clause (PostgreSQL,
    # MariaDB) would be one more result for the driver and SQLAlchemy to describe.
    row = {
        "event_id": "e1",
        "aggregate_type": "robot",
        "aggregate_id": "r1",
        "event_type": "SkillAssessed",
        "payload": "{}",
        "occurred_at": 1,
    }
    with schema_engine.begin() as connection:
        result = q.INSERT_EVENTS.run(connection, row)
        assert not result.returns_rows
        assert "RETURNING" not in q.INSERT_EVENTS._for(connection.dialect).sql.upper()
        stored = connection.execute(select(t.outbox.c.event_id)).scalars().all()
    assert stored == ["e1"]
