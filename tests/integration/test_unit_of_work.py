"""Unit of Work semantics on every backend: commit, rollback, exceptions, the outbox, conflicts.

Each test leaves the block in a different way and then checks, through a new unit of work or a
plain connection, what the database really holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from humanoid_training.domain import (
    EpisodeMetrics,
    HumanoidRobot,
    InvalidTransition,
    InvalidValue,
    LearningSession,
    NotFound,
    SessionStatus,
    SkillAssessment,
    SkillType,
    new_id,
)
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import (
    EngineOptions,
    backend_of,
    begin_statement,
    make_engine,
)
from humanoid_training.persistence.errors import ConcurrencyConflict, RetryableConflict
from humanoid_training.persistence.unit_of_work import FaultHook, SqlAlchemyUnitOfWork
from humanoid_training.services import SessionChange, batch_update
from tests.integration.support import (
    count_rows,
    outbox_count,
    reload,
    run_concurrently,
    save_new,
    schema_engine_for,
    uow,
)

S = SkillType


class Boom(Exception):
    """An error raised inside a unit of work by the test."""


def _assessment(skill: SkillType, score: float) -> SkillAssessment:
    return SkillAssessment(new_id(), skill, score, 0.9, 0.9)


def _stored_robot(engine: Engine, name: str = "Stored") -> HumanoidRobot:
    robot = HumanoidRobot.create(name, id=new_id())
    robot.assess(_assessment(S.POSTURAL_CONTROL, 0.5))
    save_new(engine, robot)
    return robot


def test_leaving_without_commit_rolls_back(schema_engine: Engine) -> None:
    stored = _stored_robot(schema_engine)
    new = HumanoidRobot.create("Never committed", id=new_id())
    with uow(schema_engine) as work:
        work.robots.add(new)
        loaded = work.robots.get(stored.id)
        loaded.assess(_assessment(S.POSTURAL_CONTROL, 0.9))
        loaded.rename("Renamed")
    with uow(schema_engine) as work, pytest.raises(NotFound):
        work.robots.get(new.id)
    assert reload(schema_engine, stored) == stored
    assert outbox_count(schema_engine, new.id) == 0


def test_writes_of_a_failed_commit_are_rolled_back(schema_engine: Engine) -> None:
    """The rows are in the transaction when the commit fails at its last step: leaving the
    block must roll them back, and the error must reach the caller."""
    stored = _stored_robot(schema_engine)
    new = HumanoidRobot.create("Half written", id=new_id())
    reached: list[str] = []

    def fail_before_commit(point: str, connection: Connection) -> None:
        reached.append(point)
        if point == "before_commit":
            # Proof that the changes were written inside the transaction before it failed.
            assert count_rows_on(connection, new.id) == 1
            raise Boom("injected before commit")

    work = SqlAlchemyUnitOfWork(schema_engine, fault_hook=fail_before_commit)
    with pytest.raises(Boom), work:
        work.robots.add(new)
        work.robots.get(stored.id).assess(_assessment(S.POSTURAL_CONTROL, 0.9))
        work.commit()
    assert reached == ["before_flush", "after_flush", "before_commit"]
    assert count_rows(schema_engine, t.robots, t.robots.c.id == new.id) == 0
    assert reload(schema_engine, stored) == stored
    assert outbox_count(schema_engine, stored.id) == 1  # only the event of the first save


def count_rows_on(connection: Connection, robot_id: str) -> int:
    query = select(func.count()).select_from(t.robots).where(t.robots.c.id == robot_id)
    return int(connection.execute(query).scalar_one())


def test_an_exception_in_the_block_rolls_back_and_propagates(schema_engine: Engine) -> None:
    stored = _stored_robot(schema_engine)
    with pytest.raises(Boom, match="in the block"), uow(schema_engine) as work:
        loaded = work.robots.get(stored.id)
        loaded.assess(_assessment(S.STATIC_BALANCE, 0.7))
        work.robots.add(HumanoidRobot.create("Other", id=new_id()))
        raise Boom("in the block")
    assert reload(schema_engine, stored) == stored
    assert count_rows(schema_engine, t.robots) == 1


def test_a_committed_unit_of_work_can_go_on_and_roll_back_the_rest(schema_engine: Engine) -> None:
    stored = _stored_robot(schema_engine)
    with uow(schema_engine) as work:
        loaded = work.robots.get(stored.id)
        loaded.assess(_assessment(S.STATIC_BALANCE, 0.7))
        work.commit()
        loaded.assess(_assessment(S.DYNAMIC_BALANCE, 0.6))  # never committed
    stored_now = reload(schema_engine, stored)
    assert set(stored_now.skills) == {S.POSTURAL_CONTROL, S.STATIC_BALANCE}
    assert stored_now.version == 2


def test_events_are_in_the_outbox_exactly_when_the_change_is_committed(
    schema_engine: Engine,
) -> None:
    robot = HumanoidRobot.create("Eventful", id=new_id())
    robot.assess(_assessment(S.POSTURAL_CONTROL, 0.9))  # SkillAssessed + SkillMastered
    session = LearningSession(id=new_id(), robot_id=robot.id)
    session.start()  # SessionStarted
    expected_ids = [e.event_id for e in robot.events]

    # Not committed: no event.
    with uow(schema_engine) as work:
        work.robots.add(robot)
        work.sessions.add(session)
    assert outbox_count(schema_engine, robot.id) == 0
    assert outbox_count(schema_engine, session.id) == 0

    # Committed: every event, with its payload, in the order raised.
    with uow(schema_engine) as work:
        work.robots.add(robot)
        work.sessions.add(session)
        work.commit()
        assert robot.events == [] and session.events == []
    with uow(schema_engine) as work:
        robot_events = work.events.events_for(robot.id)
        session_events = work.events.events_for(session.id)
    assert [e.event_id for e in robot_events] == expected_ids
    assert [e.event_type for e in robot_events] == ["SkillAssessed", "SkillMastered"]
    assert robot_events[0].payload["score"] == 0.9
    assert robot_events[0].payload["skill"] == "postural_control"
    assert [(e.event_type, e.aggregate_type) for e in session_events] == [
        ("SessionStarted", "session")
    ]
    assert session_events[0].payload == {"robot_id": robot.id}

    # A commit that fails leaves no event behind, and the events stay with the aggregate.
    with uow(schema_engine) as work:
        loaded = work.sessions.get(session.id)
        loaded.new_episode(episode_id=new_id())
        loaded.start_episode()
        loaded.complete_episode("success", 2.0, EpisodeMetrics(success_rate=1.0, reward=2.0))
        work.fault_hook = _raise_at("after_flush")
        with pytest.raises(Boom):
            work.commit()
        assert [e.name for e in loaded.events] == ["EpisodeCompleted"]
    assert outbox_count(schema_engine, session.id) == 1


def _raise_at(where: str) -> FaultHook:
    def hook(point: str, connection: Connection) -> None:
        if point == where:
            raise Boom(f"injected at {point}")

    return hook


def _conflict_is_expected(engine: Engine, error: BaseException) -> None:
    """The loser of two updates from one version sees ConcurrencyConflict; SQLite may refuse
    the stale writer earlier, with SQLITE_BUSY(_SNAPSHOT), which surfaces as RetryableConflict."""
    if isinstance(error, ConcurrencyConflict):
        return
    assert backend_of(engine) == "sqlite", f"unexpected loser outcome {error!r}"
    assert isinstance(error, RetryableConflict), f"unexpected loser outcome {error!r}"
    assert error.reason == "busy"


def test_two_units_of_work_updating_one_robot_one_wins(schema_engine: Engine) -> None:
    """Both load version 1, both change the robot, both commit: the first commit wins, the
    second is refused and changes nothing."""
    stored = _stored_robot(schema_engine)
    first, second = uow(schema_engine), uow(schema_engine)
    with first, second:
        a = first.robots.get(stored.id)
        b = second.robots.get(stored.id)
        a.assess(_assessment(S.STATIC_BALANCE, 0.6))
        b.rename("Second")
        b.assess(_assessment(S.STATIC_BALANCE, 0.3))
        first.commit()
        with pytest.raises((ConcurrencyConflict, RetryableConflict)) as refused:
            second.commit()
    _conflict_is_expected(schema_engine, refused.value)
    final = reload(schema_engine, stored)
    assert final.version == 2
    assert final.name == stored.name
    assert final.skills[S.STATIC_BALANCE] == 0.6
    assert [a.score for a in final.history] == [0.5, 0.6]
    assert outbox_count(schema_engine, stored.id) == 2  # the loser's SkillAssessed is not there


def test_batch_update_with_one_invalid_session_changes_nothing(schema_engine: Engine) -> None:
    robots = [HumanoidRobot.create(f"R{i}", id=new_id()) for i in range(4)]
    sessions = []
    for robot in robots:
        session = LearningSession(id=new_id(), robot_id=robot.id)
        session.start()
        sessions.append(session)
    sessions[2].complete()  # a completed session cannot be paused
    save_new(schema_engine, *robots, *sessions)
    ids = [s.id for s in sessions]

    with pytest.raises(InvalidTransition):
        batch_update(uow(schema_engine), ids, SessionChange.PAUSE)
    with pytest.raises(NotFound):
        batch_update(uow(schema_engine), [ids[0], "no-such-session", ids[1]], SessionChange.PAUSE)

    for session in sessions:
        stored = reload(schema_engine, session)
        assert (stored.status, stored.version) == (session.status, 1)
    # The valid part alone goes through: the refusal above was about the invalid session.
    batch_update(uow(schema_engine), [ids[0], ids[1], ids[3]], SessionChange.PAUSE)
    assert [reload(schema_engine, s).status for s in sessions] == [
        SessionStatus.PAUSED,
        SessionStatus.PAUSED,
        SessionStatus.COMPLETED,
        SessionStatus.PAUSED,
    ]


# --- SQLite's one write lock -----------------------------------------------------------------
# A unit of work takes the write lock only for a commit that writes, and gives it back when that
# commit fails. Proven with busy timeout 0: a wait for the lock would be an immediate refusal.


@pytest.fixture
def sqlite_lab(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    """A SQLite engine that waits for no lock, with the schema, and its database file."""
    path = tmp_path / "lab.db"
    options = EngineOptions(sqlite_busy_timeout_ms=0)
    with schema_engine_for(make_url(f"sqlite:///{path}"), options) as engine:
        yield engine, path


@contextmanager
def _write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock (BEGIN IMMEDIATE) meanwhile."""
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def _write_lock_is_free(path: Path) -> bool:
    """Whether another connection can take the write lock at once."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as error:
        assert "locked" in str(error), error
        return False
    finally:
        other.close()


def _begins(engine: Engine) -> list[str]:
    """The BEGIN statements `engine` sends from now on."""
    sent: list[str] = []

    def begin(connection: Connection) -> None:
        statement = begin_statement(connection)
        if statement is not None:
            sent.append(statement)

    event.listen(engine, "begin", begin)
    return sent


def test_sqlite_read_only_commit_takes_no_write_lock(
    sqlite_lab: tuple[Engine, Path],
) -> None:
    engine, path = sqlite_lab
    stored = _stored_robot(engine)
    session = LearningSession(id=new_id(), robot_id=stored.id)
    save_new(engine, session)
    begins = _begins(engine)
    with _write_lock_held(path):
        # Reads, a query, and a commit with nothing to write: no wait for the lock.
        with uow(engine) as work:
            robot = work.robots.get(stored.id)
            work.sessions.find_sessions_by_robot(stored.id)
            robot.rename(robot.name)  # not a change
            work.commit()
        with uow(engine) as work:
            work.commit()  # nothing read, nothing to write
        assert begins == ["BEGIN DEFERRED"]
        # The control: a commit that writes does need the lock, and is refused without it.
        with uow(engine) as work:
            work.robots.touch(work.robots.get(stored.id))
            with pytest.raises(RetryableConflict) as refused:
                work.commit()
        assert refused.value.reason == "busy"
        assert begins == ["BEGIN DEFERRED", "BEGIN DEFERRED", "BEGIN IMMEDIATE"]
    assert reload(engine, stored).version == 1


@pytest.mark.parametrize("failure", ["stale version", "fault before commit"])
def test_sqlite_failed_commit_releases_the_write_lock_at_once(
    sqlite_lab: tuple[Engine, Path], failure: str
) -> None:
    engine, path = sqlite_lab
    stored = _stored_robot(engine)
    hook = _raise_at("before_commit") if failure == "fault before commit" else None
    work = SqlAlchemyUnitOfWork(engine, fault_hook=hook)
    with work:
        robot = work.robots.get(stored.id)
        if failure == "stale version":
            with uow(engine) as other:
                other.robots.get(stored.id).rename("Changed meanwhile")
                other.commit()
        robot.assess(_assessment(S.STATIC_BALANCE, 0.6))
        with pytest.raises((ConcurrencyConflict, Boom)):
            work.commit()
        # Still inside the block: the failed commit has ended its write transaction already.
        assert not work.connection.in_transaction()
        assert _write_lock_is_free(path)
    assert reload(engine, stored).skills == stored.skills


def test_sqlite_commit_refused_the_write_lock_can_be_retried(
    sqlite_lab: tuple[Engine, Path],
) -> None:
    """A refused BEGIN IMMEDIATE is a RetryableConflict; the unit of work keeps its changes,
    and the refusal leaves nothing behind on the pooled connection."""
    engine, path = sqlite_lab
    stored = _stored_robot(engine)
    with uow(engine) as work:
        robot = work.robots.get(stored.id)
        robot.assess(_assessment(S.STATIC_BALANCE, 0.6))
        with _write_lock_held(path), pytest.raises(RetryableConflict) as refused:
            work.commit()
        assert refused.value.reason == "busy"
        assert isinstance(refused.value.__cause__, sa_exc.OperationalError)  # from SQLAlchemy
        work.commit()
    assert reload(engine, stored).skills[S.STATIC_BALANCE] == 0.6
    # The pooled connection's next transaction is an ordinary one, not a write phase.
    with _write_lock_held(path), uow(engine) as work:
        work.robots.get(stored.id)
        work.commit()


def test_a_robot_loaded_locked_is_one_committed_state(schema_engine: Engine) -> None:
    """On every backend: a robot loaded with a lock, after the unit of work has read something
    else and another has changed the robot since, is one committed state, or refused. Its
    root row is read with FOR UPDATE, which returns the latest version, and its parts with
    plain reads, which return the unit of work's snapshot: at MariaDB's default, REPEATABLE
    READ, the snapshot of its first read, older than the version locked; that is refused as
    PostgreSQL refuses it at REPEATABLE READ. SQLite has no row locks: the load reads the
    snapshot, and the commit is refused."""
    stored = _stored_robot(schema_engine)
    bystander = _stored_robot(schema_engine, "Bystander")
    backend = backend_of(schema_engine)
    with uow(schema_engine) as work:
        work.robots.get(bystander.id)  # MariaDB takes the transaction's snapshot here
        taught = _assessment(S.STATIC_BALANCE, 0.9)
        with uow(schema_engine) as meanwhile:
            meanwhile.robots.get(stored.id).assess(taught)
            meanwhile.commit()
        if backend == "mysql":
            with pytest.raises(RetryableConflict, match="changed since this unit of work's"):
                work.robots.get(stored.id, lock=True)
            return
        robot = work.robots.get(stored.id, lock=True)
        if backend != "sqlite":
            # Asked of the database, before the history is read.
            with pytest.raises(InvalidValue, match="is already in the history"):
                robot.assess(taught)
        expected = stored if backend == "sqlite" else reload(schema_engine, stored)
        assert robot.version == expected.version
        assert robot.skills == expected.skills
        assert list(robot.history) == list(expected.history)
        robot.assess(_assessment(S.POSTURAL_CONTROL, 0.6))
        if backend == "sqlite":
            with pytest.raises(ConcurrencyConflict):
                work.commit()
            return
        work.commit()
    after = reload(schema_engine, stored)
    assert [a.skill for a in after.history] == [
        S.POSTURAL_CONTROL,
        S.STATIC_BALANCE,
        S.POSTURAL_CONTROL,
    ]
    assert after.skills == {S.POSTURAL_CONTROL: 0.6, S.STATIC_BALANCE: 0.9}


def test_a_robot_loaded_locked_holds_up_no_change_of_another(schema_engine: Engine) -> None:
    """On every backend: while a unit of work holds one robot locked (and has asked whether
    its history holds an id), another unit of work assesses another robot and commits without
    waiting. Locking reads of a robot's parts on MariaDB would lock the gaps where the rows
    they miss would go, and an insert of another robot's history waited for them."""
    held, other = _stored_robot(schema_engine, "Held"), _stored_robot(schema_engine, "Other")
    with uow(schema_engine) as work:
        work.robots.get(held.id, lock=True).assess(_assessment(S.POSTURAL_CONTROL, 0.7))

        def assess_the_other() -> None:
            with uow(schema_engine) as elsewhere:
                elsewhere.robots.get(other.id, lock=True).assess(
                    _assessment(S.POSTURAL_CONTROL, 0.8)
                )
                elsewhere.commit()

        [outcome] = run_concurrently([assess_the_other], timeout_s=10)
        assert outcome.error is None, outcome
        work.commit()
    assert reload(schema_engine, other).skills[S.POSTURAL_CONTROL] == 0.8
    assert reload(schema_engine, held).skills[S.POSTURAL_CONTROL] == 0.7


def test_failed_commit_ends_the_transaction(schema_engine: Engine) -> None:
    """On every backend: a commit that fails rolls back at once, so its row locks go too."""
    stored = _stored_robot(schema_engine)
    work = SqlAlchemyUnitOfWork(schema_engine, fault_hook=_raise_at("before_commit"))
    with work:
        work.robots.get(stored.id).rename("Never stored")
        with pytest.raises(Boom):
            work.commit()
        assert not work.connection.in_transaction()

        # The row the failed commit updated is free: another unit of work can change it now
        # (in a thread, so that a lock still held fails the test instead of hanging it).
        def change_it() -> None:
            with uow(schema_engine) as other:
                other.robots.get(stored.id, lock=True).rename("Other")
                other.commit()

        [outcome] = run_concurrently([change_it])
        assert outcome.error is None, outcome
    assert reload(schema_engine, stored).name == "Other"


# --- A COMMIT the database refuses -----------------------------------------------------------
# Every statement succeeds, then the COMMIT fails. SQLAlchemy keeps such a transaction, inactive,
# and sends no ROLLBACK for it, not even when the connection goes back to the pool; SQLite keeps
# its transaction, and the write lock, open after a refused COMMIT. MariaDB is not among these
# tests: InnoDB checks every constraint at its statement, and nothing else there refuses a
# COMMIT on demand, without a race or a lost connection.


def _refuse_the_commit(connection: Connection) -> None:
    """Write what only the COMMIT finds wrong, so that the database refuses the COMMIT."""
    if connection.dialect.name == "sqlite":
        # A skill of no robot, its foreign key checked at COMMIT (only in this transaction).
        connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        row = {"robot_id": "no-such-robot", "skill": S.STATIC_BALANCE.value, "score": 0.1}
        connection.execute(insert(t.robot_skills).values(row))
    else:
        # A unique constraint checked at COMMIT, on a table gone with the transaction.
        connection.exec_driver_sql(
            "CREATE TEMP TABLE commit_refused"
            " (id int, CONSTRAINT once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        connection.exec_driver_sql("INSERT INTO commit_refused VALUES (1), (1)")


@contextmanager
def _row_lock_probe(db_url: URL) -> Iterator[Callable[[str], bool]]:
    """Whether another connection can lock a robot's row at once, without waiting (SQLite:
    take the write lock)."""
    if backend_of(db_url) == "sqlite":
        assert db_url.database
        path = Path(db_url.database)
        yield lambda _robot_id: _write_lock_is_free(path)
        return
    observer = make_engine(db_url)
    locked = select(t.robots.c.id).with_for_update(nowait=True)

    def is_free(robot_id: str) -> bool:
        with observer.connect() as connection:
            try:
                connection.execute(locked.where(t.robots.c.id == robot_id)).all()
                return True
            except sa_exc.OperationalError as error:
                assert getattr(error.orig, "sqlstate", None) == "55P03", error  # lock_not_available
                return False

    try:
        yield is_free
    finally:
        observer.dispose()


@pytest.mark.parametrize("ended_by", ["commit", "rollback"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_refused_commit_leaves_the_connection_clean(db_url: URL, ended_by: str) -> None:
    """The refused COMMIT's transaction ends, and its locks go, at once (in uow.commit(), or
    in uow.rollback() when the block committed the connection itself); the pool's one
    connection comes back, and serves the next unit of work."""
    options = EngineOptions(sqlite_busy_timeout_ms=0, pool_size=1, max_overflow=0)
    with schema_engine_for(db_url, options) as engine, _row_lock_probe(db_url) as lock_is_free:
        stored = _stored_robot(engine)
        held_at_commit: list[bool] = []

        def refuse(point: str, connection: Connection) -> None:
            if point == "before_commit":
                held_at_commit.append(not lock_is_free(stored.id))
                _refuse_the_commit(connection)

        work = SqlAlchemyUnitOfWork(engine, fault_hook=refuse)
        with work:
            work.robots.get(stored.id).rename("Never stored")
            with pytest.raises(sa_exc.IntegrityError):
                if ended_by == "commit":
                    work.commit()
                else:
                    work.connection.execute(
                        t.robots.update().where(t.robots.c.id == stored.id).values(name="Nor this")
                    )
                    refuse("before_commit", work.connection)
                    work.connection.commit()
            if ended_by == "rollback":
                work.rollback()
            assert held_at_commit == [True]  # the probe sees a held lock
            assert lock_is_free(stored.id)
            # None left behind, not even an inactive one: closing would skip the pool's reset.
            assert work.connection.get_transaction() is None
        assert lock_is_free(stored.id)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        # The pool's only connection: its next unit of work writes as any other.
        with uow(engine) as following:
            following.robots.get(stored.id).rename("Renamed after")
            following.commit()
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert reload(engine, stored).name == "Renamed after"
        assert count_rows(engine, t.robot_skills, t.robot_skills.c.robot_id == "no-such-robot") == 0
