"""Real threads against real databases: conflicting updates, the one-open-session rule under
several isolation levels, and skill transfers in both directions (no deadlock that lasts).

Every thread join is bounded (support.JOIN_TIMEOUT_S): a deadlock fails the test, never hangs it.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from humanoid_training.domain import (
    ActiveSessionExists,
    HumanoidRobot,
    SessionStatus,
    SkillAssessment,
    SkillType,
    new_id,
)
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import EngineOptions, backend_of
from humanoid_training.persistence.errors import ConcurrencyConflict, RetryableConflict
from humanoid_training.services import retrying, start_session, transfer_skills
from tests.integration.support import (
    JOIN_TIMEOUT_S,
    count_rows,
    reload,
    run_concurrently,
    save_new,
    schema_engine_for,
    uow,
)

S = SkillType
ROUNDS = 8

# Isolation levels to run the race under, by backend (None: the backend's default, which is
# READ COMMITTED on PostgreSQL and REPEATABLE READ on MariaDB).
ISOLATION_LEVELS: dict[str, list[str | None]] = {
    "sqlite": [None],
    "postgresql": [None, "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"],
    "mysql": [None, "REPEATABLE READ", "READ COMMITTED"],
}


def _robot(name: str, scores: dict[SkillType, float] | None = None) -> HumanoidRobot:
    robot = HumanoidRobot.create(name, id=new_id())
    for skill, score in (scores or {}).items():
        robot.assess(SkillAssessment(new_id(), skill, score, 0.9, 0.9))
    return robot


def test_concurrent_updates_of_one_robot_have_one_winner(schema_engine: Engine) -> None:
    """Two threads load the same robot, both wait until both have loaded, then both change
    it and commit: exactly one commit survives each round."""
    losers: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        stored = _robot(f"Contended {round_}", {S.POSTURAL_CONTROL: 0.5})
        save_new(schema_engine, stored)
        loaded = threading.Barrier(2, timeout=JOIN_TIMEOUT_S)

        def update(
            score: float, robot_id: str = stored.id, loaded: threading.Barrier = loaded
        ) -> float:
            with uow(schema_engine) as work:
                robot = work.robots.get(robot_id)
                loaded.wait()
                robot.assess(SkillAssessment(new_id(), S.STATIC_BALANCE, score, 0.9, 0.9))
                work.commit()
            return score

        outcomes = run_concurrently([lambda: update(0.3), lambda: update(0.6)])
        winners = [o.value for o in outcomes if o.error is None]
        errors = [o.error for o in outcomes if o.error is not None]
        assert len(winners) == 1, f"round {round_}: expected one winner, got {outcomes}"
        error = errors[0]
        # Every backend, SQLite too: the loser's write phase comes after the winner's commit,
        # and the version check refuses its stale copy.
        assert isinstance(error, ConcurrencyConflict), f"round {round_}: {error!r}"
        losers["ConcurrencyConflict"] += 1
        final = reload(schema_engine, stored)
        assert final.version == 2
        assert [a.score for a in final.history] == [0.5, winners[0]]
        assert final.skills[S.STATIC_BALANCE] == winners[0]
    assert losers == {"ConcurrencyConflict": ROUNDS}


def test_concurrent_updates_of_different_robots_both_commit(schema_engine: Engine) -> None:
    """Two threads each load their own robot, wait until both have loaded, change it and
    commit: both commit, on every backend. (On SQLite, a read transaction asking for the one
    write lock after another writer committed would be refused whatever it touched; the write
    phase begins afresh instead.)"""
    for round_ in range(ROUNDS):
        robots = [_robot(f"Own {round_}-{i}", {S.POSTURAL_CONTROL: 0.5}) for i in range(2)]
        save_new(schema_engine, *robots)
        loaded = threading.Barrier(2, timeout=JOIN_TIMEOUT_S)

        def update(robot_id: str, loaded: threading.Barrier = loaded) -> None:
            with uow(schema_engine) as work:
                robot = work.robots.get(robot_id)
                loaded.wait()
                robot.assess(SkillAssessment(new_id(), S.STATIC_BALANCE, 0.4, 0.9, 0.9))
                work.commit()

        outcomes = run_concurrently([functools.partial(update, r.id) for r in robots])
        assert [o.error for o in outcomes] == [None, None], f"round {round_}: {outcomes}"
        for robot in robots:
            assert reload(schema_engine, robot).skills[S.STATIC_BALANCE] == 0.4


def _race_start_session(engine: Engine, rounds: int) -> Counter[str]:
    outcomes_seen: Counter[str] = Counter()
    for _ in range(rounds):
        robot = _robot("Racer")
        save_new(engine, robot)

        def start(robot_id: str = robot.id) -> str:
            return start_session(uow(engine), robot_id)

        outcomes = run_concurrently([start, start])
        for outcome in outcomes:
            if outcome.error is None:
                outcomes_seen["started"] += 1
            else:
                assert isinstance(
                    outcome.error, ActiveSessionExists | ConcurrencyConflict | RetryableConflict
                ), f"unexpected error {outcome.error!r}"
                outcomes_seen[type(outcome.error).__name__] += 1
        open_sessions = count_rows(
            engine,
            t.sessions,
            t.sessions.c.robot_id == robot.id,
            t.sessions.c.status.in_([SessionStatus.ACTIVE, SessionStatus.PAUSED]),
        )
        started = sum(1 for o in outcomes if o.error is None)
        assert open_sessions == started == 1, (
            f"robot {robot.id}: {open_sessions} open sessions, {started} starts succeeded"
            f" ({outcomes})"
        )
    return outcomes_seen


def test_concurrent_starts_never_open_two_sessions(db_url: URL, backend: str) -> None:
    for level in ISOLATION_LEVELS[backend]:
        with schema_engine_for(db_url, EngineOptions(isolation_level=level)) as engine:
            seen = _race_start_session(engine, ROUNDS)
        assert seen["started"] == ROUNDS, f"{level}: {seen}"
        print(f"{backend} {level or 'default'}: {dict(seen)}")


def test_transfers_in_both_directions_finish_and_stay_consistent(schema_engine: Engine) -> None:
    """A->B and B->A at once, many rounds: each transfer locks both robots; with `retrying`
    both finish, and every stored score is what the stored history says."""
    attempts: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        a = _robot(f"A{round_}", {S.POSTURAL_CONTROL: 0.9, S.STATIC_BALANCE: 0.8})
        b = _robot(f"B{round_}", {S.POSTURAL_CONTROL: 0.5})
        save_new(schema_engine, a, b)

        def transfer(source: str, target: str, label: str) -> list[SkillAssessment]:
            def once() -> list[SkillAssessment]:
                attempts[label] += 1
                return transfer_skills(uow(schema_engine), source, target)

            return retrying(once, attempts=20, max_delay_s=0.05)

        works: list[Callable[[], Any]] = [
            functools.partial(transfer, a.id, b.id, "A->B"),
            functools.partial(transfer, b.id, a.id, "B->A"),
        ]
        outcomes = run_concurrently(works)
        assert [o.error for o in outcomes] == [None, None], outcomes
        to_b, to_a = (o.value for o in outcomes)
        stored_a, stored_b = reload(schema_engine, a), reload(schema_engine, b)
        for robot, before, received in ((stored_a, a, to_a), (stored_b, b, to_b)):
            # No transfer lost and none applied twice: the history is the old one plus what
            # the transfers returned, in some order.
            assert robot.history[: len(before.history)] == before.history
            assert sorted(x.id for x in robot.history[len(before.history) :]) == sorted(
                x.id for x in received
            )
            for skill, score in robot.skills.items():
                assert score == max(x.score for x in robot.history if x.skill is skill)
        # What A knew reached B at 90 % (A's scores never drop, whichever ran first).
        assert stored_b.skills[S.STATIC_BALANCE] == pytest.approx(0.72)
        assert stored_b.skills[S.POSTURAL_CONTROL] == pytest.approx(0.81)
    # Attempts per direction over all rounds (more than ROUNDS: conflicts were retried).
    print(f"{backend_of(schema_engine)} attempts: {dict(attempts)}")


def test_a_unit_of_work_cannot_commit_what_it_decided_from_a_robot_since_changed(
    schema_engine: Engine,
) -> None:
    """A robot read and left unchanged is checked at commit like a changed one: a unit of
    work whose reads no longer hold together (read skew) is refused, whatever the backend."""
    robot, other = _robot("Read only"), _robot("Other")
    save_new(schema_engine, robot, other)
    with uow(schema_engine) as reader:
        reader.robots.get(robot.id)
        with uow(schema_engine) as writer:
            writer.robots.get(robot.id).rename("Changed meanwhile")
            writer.commit()
        reader.robots.get(other.id).rename("Decided from the old robot")
        with pytest.raises((ConcurrencyConflict, RetryableConflict)):
            reader.commit()
    assert reload(schema_engine, other).name == "Other"
    # Unchanged, the same reads commit.
    with uow(schema_engine) as reader:
        reader.robots.get(robot.id)
        reader.robots.get(other.id).rename("Decided from the current robot")
        reader.commit()
    assert reload(schema_engine, other).name == "Decided from the current robot"
