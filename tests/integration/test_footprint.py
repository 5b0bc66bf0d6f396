"""The reference Unit of Work's footprint: what each transaction read and wrote, by aggregate."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from humanoid_training import services
from humanoid_training.domain import HumanoidRobot, new_id
from humanoid_training.footprint import ObservedUnitOfWork
from humanoid_training.persistence.errors import ConcurrencyConflict, RetryableConflict
from humanoid_training.weakenings import Weakenings
from tests.integration.support import save_new
from uowstress.target import AggregateRead, AggregateWrite, Footprint, PredicateRead


def observed(engine: Engine, **switches: bool) -> ObservedUnitOfWork:
    return ObservedUnitOfWork(engine, weakenings=Weakenings(**switches))


@pytest.mark.parametrize("guarded", [True, False], ids=["default", "no_session_lock"])
def test_starting_a_session_reads_the_robot_and_its_open_sessions(
    schema_engine: Engine, guarded: bool
) -> None:
    robot = HumanoidRobot.create("Walker", id="r1")
    save_new(schema_engine, robot)
    work = observed(schema_engine, no_session_lock=not guarded)
    services.start_session(work, "r1", session_id="s1")
    open_sessions = "open sessions of robot r1"
    writes = [
        AggregateWrite(
            "session:s1",
            1,
            frozenset({open_sessions, "sessions of robot r1", "active sessions"}),
        )
    ]
    if guarded:  # the robot is locked and its version bumped
        writes.insert(0, AggregateWrite("robot:r1", 2))
    assert work.footprints() == [
        Footprint(
            (AggregateRead("robot:r1", 1), PredicateRead(open_sessions, {})),
            tuple(writes),
            "committed",
        )
    ]
    # A second start sees the first session, and is refused: rolled back, nothing written.
    again = observed(schema_engine)
    with pytest.raises(Exception, match="already has open session s1"):
        services.start_session(again, "r1", session_id="s2")
    (refused,) = again.footprints()
    assert refused.outcome == "aborted" and refused.writes == ()
    assert refused.reads[-1] == PredicateRead(open_sessions, {"session:s1": 1})


def test_a_refused_commit_is_an_aborted_footprint(schema_engine: Engine) -> None:
    robot = HumanoidRobot.create("Walker", id=new_id())
    save_new(schema_engine, robot)
    first, second = observed(schema_engine), observed(schema_engine)
    with first, second:
        first.robots.get(robot.id).rename("First")
        second.robots.get(robot.id).rename("Second")
        first.commit()
        # A version conflict, or SQLite refusing a writer whose snapshot is stale.
        with pytest.raises((ConcurrencyConflict, RetryableConflict)):
            second.commit()
    assert [f.outcome for f in first.footprints()] == ["committed"]
    assert first.footprints()[0].writes == (AggregateWrite(f"robot:{robot.id}", 2),)
    assert second.footprints() == [
        Footprint((AggregateRead(f"robot:{robot.id}", 1),), (), "aborted")
    ]


def test_a_unit_of_work_that_goes_on_after_a_commit_has_a_footprint_per_transaction(
    schema_engine: Engine,
) -> None:
    robot = HumanoidRobot.create("Walker", id=new_id())
    save_new(schema_engine, robot)
    work = observed(schema_engine)
    with work:
        work.robots.get(robot.id).rename("Once")
        work.commit()
        work.sessions.find_active_sessions()
    key = f"robot:{robot.id}"
    assert work.footprints() == [
        Footprint((AggregateRead(key, 1),), (AggregateWrite(key, 2),), "committed"),
        Footprint((PredicateRead("active sessions", {}),), (), "aborted"),
    ]
