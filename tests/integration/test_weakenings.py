"""Each weakening switch lets its defect happen when on, and the defect is absent when off.

Every test runs the same interleaving twice, switch off then on, on every backend, so that a
switch that does nothing (or a default that is already weak) fails here.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from humanoid_training.domain import (
    ActiveSessionExists,
    HumanoidRobot,
    InvalidTransition,
    LearningSession,
    SessionStatus,
    SkillAssessment,
    SkillType,
    new_id,
)
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import backend_of
from humanoid_training.persistence.errors import ConcurrencyConflict, RetryableConflict
from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork
from humanoid_training.services import SessionChange, batch_update, start_session
from humanoid_training.weakenings import Weakenings
from tests.integration.support import (
    count_rows,
    outbox_count,
    reload,
    run_concurrently,
    save_new,
    uow,
)

S = SkillType
SWITCH = pytest.mark.parametrize("on", [False, True], ids=["off", "on"])


def _assessment(skill: SkillType, score: float) -> SkillAssessment:
    return SkillAssessment(new_id(), skill, score, 0.9, 0.9)


def _robot() -> HumanoidRobot:
    robot = HumanoidRobot.create("Weakened", id=new_id())
    robot.assess(_assessment(S.POSTURAL_CONTROL, 0.5))
    robot.assess(_assessment(S.STATIC_BALANCE, 0.5))
    return robot


def _is_lost_update(robot: HumanoidRobot, skill: SkillType) -> bool:
    """The stored score is no longer the best of the stored history: an update was lost."""
    best = max(a.score for a in robot.history if a.skill is skill)
    return robot.skills[skill] != best


# -- no_version_check ---------------------------------------------------------------------------


@SWITCH
def test_no_version_check_lets_overlapping_updates_lose_one(
    schema_engine: Engine, on: bool
) -> None:
    """B loads, A loads, A raises static_balance to 0.8 and commits, B assesses 0.6 from its
    stale copy and commits."""
    robot = _robot()
    save_new(schema_engine, robot)
    a, b = uow(schema_engine, no_version_check=on), uow(schema_engine, no_version_check=on)
    with a, b:
        stale = b.robots.get(robot.id)
        a.robots.get(robot.id).assess(_assessment(S.STATIC_BALANCE, 0.8))
        a.commit()
        stale.assess(_assessment(S.STATIC_BALANCE, 0.6))
        # On SQLite too: B's write phase begins after A's commit, so only the version check
        # stands between B's stale copy and a lost update.
        if not on:
            with pytest.raises(ConcurrencyConflict):
                b.commit()
        else:
            b.commit()
    final = reload(schema_engine, robot)
    assert sorted(a.score for a in final.history if a.skill is S.STATIC_BALANCE) == (
        [0.5, 0.6, 0.8] if on else [0.5, 0.8]
    )
    assert _is_lost_update(final, S.STATIC_BALANCE) is on
    assert final.skills[S.STATIC_BALANCE] == (0.6 if on else 0.8)


@SWITCH
def test_no_version_check_lets_a_stale_aggregate_overwrite(schema_engine: Engine, on: bool) -> None:
    """B loads the robot and commits (its unit of work stays open, its copy stays tracked);
    A then raises static_balance to 0.8; B assesses 0.6 from its stale copy in a new
    transaction. No snapshot is stale here, so only the version check can catch it, on every
    backend including SQLite."""
    robot = _robot()
    save_new(schema_engine, robot)
    with uow(schema_engine, no_version_check=on) as b:
        stale = b.robots.get(robot.id)
        b.commit()  # ends B's transaction; B keeps the copy it loaded
        with uow(schema_engine, no_version_check=on) as a:
            a.robots.get(robot.id).assess(_assessment(S.STATIC_BALANCE, 0.8))
            a.robots.get(robot.id).rename("Renamed by A")
            a.commit()
        stale.assess(_assessment(S.STATIC_BALANCE, 0.6))
        if on:
            b.commit()
        else:
            with pytest.raises(ConcurrencyConflict):
                b.commit()
    final = reload(schema_engine, robot)
    assert _is_lost_update(final, S.STATIC_BALANCE) is on
    assert final.name == "Renamed by A"
    assert final.version == 2  # with the check off, B wrote version 2 over A's version 2


# -- no_session_lock ----------------------------------------------------------------------------


def _start_after_both_read(
    engine: Engine, robot_id: str, both_read: threading.Barrier, on: bool
) -> str:
    """start_session, held after its read of the robot's open sessions until the other thread
    has read too (or until the barrier times out, when the other thread is blocked by a lock
    this one holds)."""
    work = SqlAlchemyUnitOfWork(engine, weakenings=Weakenings(no_session_lock=on))
    read = work.sessions.find_sessions_by_robot

    def read_then_wait(*args: Any, **kwargs: Any) -> list[LearningSession]:
        found = read(*args, **kwargs)
        # Broken when the other thread waits on our lock: it cannot read before we commit.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return found

    work.sessions.find_sessions_by_robot = read_then_wait  # type: ignore[method-assign]
    return start_session(work, robot_id)


@SWITCH
def test_no_session_lock_lets_two_sessions_open(schema_engine: Engine, on: bool) -> None:
    robot = _robot()
    save_new(schema_engine, robot)
    backend = backend_of(schema_engine)
    # The servers' default isolation (READ COMMITTED on PostgreSQL, REPEATABLE READ on
    # MariaDB) does not stop write skew by itself; the lock taken when the switch is off does,
    # and then the other thread is blocked before its read: a short barrier timeout lets the
    # first go on.
    both_read = threading.Barrier(2, timeout=1.0 if not on and backend != "sqlite" else 30.0)
    start = functools.partial(_start_after_both_read, schema_engine, robot.id, both_read, on)
    outcomes = run_concurrently([start, start])

    errors = [o.error for o in outcomes if o.error is not None]
    open_sessions = count_rows(
        schema_engine,
        t.sessions,
        t.sessions.c.robot_id == robot.id,
        t.sessions.c.status.in_([SessionStatus.ACTIVE, SessionStatus.PAUSED]),
    )
    # SQLite included: its writers take turns, but the second one's write phase begins after
    # the first's commit, so only the robot's lock (its version bumped) keeps the rule.
    if on:
        assert open_sessions == 2, outcomes
        assert errors == []
    else:
        assert open_sessions == 1
        assert len(errors) == 1, outcomes
        assert isinstance(errors[0], ActiveSessionExists | ConcurrencyConflict), outcomes


# -- events_outside_transaction -----------------------------------------------------------------


class Boom(Exception):
    """The failure injected into a commit."""


def _fail_before_commit(point: str, connection: Connection) -> None:
    if point == "before_commit":
        raise Boom("injected before commit")


@SWITCH
def test_events_outside_transaction_leaves_events_of_a_failed_commit(
    schema_engine: Engine, on: bool
) -> None:
    robot = _robot()
    save_new(schema_engine, robot)
    before = outbox_count(schema_engine, robot.id)
    work = SqlAlchemyUnitOfWork(
        schema_engine,
        weakenings=Weakenings(events_outside_transaction=on),
        fault_hook=_fail_before_commit,
    )
    # On SQLite the events' own transaction moves the database past the unit of work's
    # snapshot, so the change's write is refused (SQLITE_BUSY) before the injected failure:
    # the commit fails either way, which is what this test needs.
    refusals = (Boom, RetryableConflict) if on else (Boom,)
    with pytest.raises(refusals), work:
        work.robots.get(robot.id).assess(_assessment(S.DYNAMIC_BALANCE, 0.9))
        work.commit()
    assert reload(schema_engine, robot) == robot  # the change itself was not committed
    # SkillAssessed and SkillMastered of the change that never happened, or nothing.
    assert outbox_count(schema_engine, robot.id) - before == (2 if on else 0)


@SWITCH
def test_events_outside_transaction_leaves_events_of_a_conflicting_change(
    schema_engine: Engine, on: bool
) -> None:
    robot = _robot()
    save_new(schema_engine, robot)
    with uow(schema_engine, events_outside_transaction=on) as loser:
        stale = loser.robots.get(robot.id)
        loser.commit()  # the copy stays tracked; the next commit is a new transaction
        with uow(schema_engine) as winner:
            winner.robots.get(robot.id).rename("Winner")
            winner.commit()
        stale.assess(_assessment(S.DYNAMIC_BALANCE, 0.3))
        with pytest.raises(ConcurrencyConflict):
            loser.commit()
    with uow(schema_engine) as work:
        events = work.events.events_for(robot.id)
    dynamic = [e for e in events if e.payload.get("skill") == "dynamic_balance"]
    assert len(dynamic) == (1 if on else 0)
    assert S.DYNAMIC_BALANCE not in reload(schema_engine, robot).skills


# -- commit_swallows_errors ---------------------------------------------------------------------


@SWITCH
def test_commit_swallows_errors_lets_a_batch_half_apply(schema_engine: Engine, on: bool) -> None:
    robots = [HumanoidRobot.create(f"R{i}", id=new_id()) for i in range(3)]
    sessions = []
    for robot in robots:
        session = LearningSession(id=new_id(), robot_id=robot.id)
        session.start()
        sessions.append(session)
    sessions[1].complete()  # in the middle: cannot be paused
    save_new(schema_engine, *robots, *sessions)

    work = uow(schema_engine, commit_swallows_errors=on)
    ids = [s.id for s in sessions]
    if on:
        batch_update(work, ids, SessionChange.PAUSE)  # the error is swallowed
    else:
        with pytest.raises(InvalidTransition):
            batch_update(work, ids, SessionChange.PAUSE)

    statuses = [reload(schema_engine, s).status for s in sessions]
    first = SessionStatus.PAUSED if on else SessionStatus.ACTIVE
    assert statuses == [first, SessionStatus.COMPLETED, SessionStatus.ACTIVE]
