"""The multi-session scheduler against real databases: blocking, deadlocks, stalls, replays."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool, QueuePool

from humanoid_training.persistence.engine import EngineOptions, make_engine
from tests.integration.support import SERVERS
from uowstress.sessions import Completion, Scheduler, _make_detector, current_session

ROWS = (1, 2, 3)


class Lab:
    """Steps over a table of cells; each session's connections live on its worker thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connections: dict[int, list[Connection]] = {}

    def _session(self) -> int:
        session = current_session()
        assert session is not None, "steps run on the scheduler's worker threads"
        return session

    def _connection(self) -> Connection:
        connections = self._connections.setdefault(self._session(), [])
        if not connections:
            connections.append(self.engine.connect())
        return connections[0]

    def read(self, key: int) -> Callable[[], int]:
        return lambda: int(
            self._connection()
            .execute(text("SELECT v FROM cells WHERE id = :k"), {"k": key})
            .scalar_one()
        )

    def write(self, key: int, value: int) -> Callable[[], int]:
        return lambda: (
            self._connection()
            .execute(text("UPDATE cells SET v = :v WHERE id = :k"), {"v": value, "k": key})
            .rowcount
        )

    def write_on_second_connection(self, key: int, value: int) -> Callable[[], int]:
        """A write through another connection of the same session (a second Unit of Work)."""

        def step() -> int:
            second = self.engine.connect()
            self._connections.setdefault(self._session(), []).append(second)
            statement = text("UPDATE cells SET v = :v WHERE id = :k")
            return second.execute(statement, {"v": value, "k": key}).rowcount

        return step

    def commit(self) -> None:
        self._connection().commit()

    def rollback(self) -> None:
        self._connection().rollback()

    def backend_id(self) -> int:
        query = (
            "SELECT pg_backend_pid()"
            if self.engine.dialect.name == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        return int(self._connection().execute(text(query)).scalar_one())

    def abandon(self) -> None:
        """The close() callable: give back every connection of the calling session.

        A connection the scheduler killed fails its rollback on close (the pool takes it
        back all the same), so one failure must not keep the others open.
        """
        failures: list[sa_exc.DBAPIError] = []
        for connection in self._connections.pop(self._session(), []):
            try:
                connection.close()
            except sa_exc.DBAPIError as error:
                failures.append(error)
        if failures:
            raise failures[0]


@pytest.fixture
def lab_engine(db_url: URL) -> Iterator[Engine]:
    """The reference system's engine (SQLite busy timeout 0) with three cells at 0."""
    engine = make_engine(db_url, EngineOptions(sqlite_busy_timeout_ms=0))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE cells (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"))
        for key in ROWS:
            connection.execute(text("INSERT INTO cells (id, v) VALUES (:k, 0)"), {"k": key})
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def outside(db_url: URL) -> Iterator[Engine]:
    """An engine of the test's own, outside the system's pool."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def alive(monitor: Engine, backend_ids: list[int]) -> list[int]:
    """Which of the backend ids still name a live database session."""
    with monitor.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if monitor.dialect.name == "postgresql":
            query = "SELECT pid FROM pg_stat_activity WHERE pid = ANY(CAST(:ids AS integer[]))"
            rows = connection.execute(text(query), {"ids": backend_ids}).all()
        else:
            rows = connection.execute(text("SELECT ID FROM information_schema.PROCESSLIST")).all()
    return sorted(int(row[0]) for row in rows if int(row[0]) in backend_ids)


def checked_out(engine: Engine) -> int:
    """Connections of the engine's pool in use right now."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


def is_deadlock(error: BaseException | None) -> bool:
    """The database's own deadlock error: SQLSTATE 40P01 or MariaDB error 1213."""
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    orig: Any = error.orig
    return getattr(orig, "sqlstate", None) == "40P01" or (bool(orig.args) and orig.args[0] == 1213)


def value_of(completions: list[Completion], session: int) -> Any:
    (found,) = [c for c in completions if c.session == session]
    assert found.outcome.ok, found.outcome.error
    return found.outcome.value


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_blocked_step_completes_in_the_submit_that_releases_it(lab_engine: Engine) -> None:
    lab = Lab(lab_engine)
    started = time.monotonic()
    with Scheduler(lab_engine, 2) as scheduler:
        assert value_of(scheduler.submit(0, lab.write(1, 10)), 0) == 1

        before = time.monotonic()
        assert scheduler.submit(1, lab.write(1, 11)) == []
        assert time.monotonic() - before < 2.0, "a lock wait is detected, not waited out"
        assert scheduler.blocked == {1}
        assert not scheduler.all_blocked()  # session 0 can still act
        with pytest.raises(ValueError, match="session 1 is still blocked on step 1"):
            scheduler.submit(1, lab.commit)

        released = scheduler.submit(0, lab.commit)
        assert [(c.session, c.step) for c in released] == [(0, 2), (1, 1)]
        assert value_of(released, 1) == 1
        assert scheduler.blocked == frozenset()
        scheduler.submit(1, lab.commit)
        scheduler.close(abandon=lab.abandon)
    with lab_engine.connect() as connection:
        assert connection.execute(text("SELECT v FROM cells WHERE id = 1")).scalar_one() == 11
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_deadlock_ends_with_the_database_error_on_one_side(lab_engine: Engine) -> None:
    lab = Lab(lab_engine)
    with Scheduler(lab_engine, 2) as scheduler:
        scheduler.submit(0, lab.write(1, 10))
        scheduler.submit(1, lab.write(2, 20))
        assert scheduler.submit(0, lab.write(2, 12)) == []
        assert scheduler.blocked == {0}

        # Closing the cycle: the database picks a victim (MariaDB at once, PostgreSQL after
        # deadlock_timeout) and the other write goes through once the victim rolled back.
        ended = scheduler.submit(1, lab.write(1, 21))
        assert sorted(c.step for c in ended) == [2, 3]
        failed = [c for c in ended if not c.outcome.ok]
        assert len(failed) == 1 and is_deadlock(failed[0].outcome.error), ended
        survivor = next(c for c in ended if c.outcome.ok)
        assert survivor.outcome.value == 1
        assert scheduler.blocked == frozenset()
        assert scheduler.deadlocked == frozenset()
        scheduler.close(abandon=lab.abandon)
    assert checked_out(lab_engine) == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_conflicting_write_fails_at_once(lab_engine: Engine) -> None:
    lab = Lab(lab_engine)
    with Scheduler(lab_engine, 2) as scheduler:
        scheduler.submit(0, lab.write(1, 10))
        before = time.monotonic()
        (conflict,) = scheduler.submit(1, lab.write(2, 20))
        assert time.monotonic() - before < 1.0
        assert not conflict.outcome.ok
        assert isinstance(conflict.outcome.error, sa_exc.OperationalError)
        assert "database is locked" in str(conflict.outcome.error)
        assert scheduler.blocked == frozenset()
        scheduler.close(abandon=lab.abandon)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_engine_that_would_wait_is_refused(db_url: URL) -> None:
    waiting = make_engine(db_url)  # the default busy timeout waits 5 s for a lock
    try:
        with pytest.raises(ValueError, match="busy timeout of 5000 ms"):
            Scheduler(waiting, 2)
    finally:
        waiting.dispose()


# (session, action, key, value); the comments say what a server does at that step.
SCHEDULE: list[tuple[int, str, int, int]] = [
    (0, "read", 1, 0),
    (1, "read", 2, 0),
    (0, "write", 1, 101),
    (1, "write", 1, 102),  # blocks on 0
    (2, "read", 1, 0),
    (2, "write", 3, 103),
    (0, "commit", 0, 0),  # releases 1
    (1, "read", 1, 0),
    (2, "write", 2, 104),
    (1, "write", 2, 105),  # blocks on 2
    (2, "rollback", 0, 0),  # releases 1
    (0, "write", 3, 106),
    (1, "write", 3, 107),  # blocks on 0
    (2, "write", 3, 108),  # blocks on 0, queued behind 1
    (0, "rollback", 0, 0),  # releases 1; 2 now waits on 1
    (1, "commit", 0, 0),  # releases 2
    (0, "read", 3, 0),
    (2, "commit", 0, 0),
    (0, "read", 2, 0),
    (0, "commit", 0, 0),
    (1, "read", 3, 0),
]
BLOCKING_STEPS = {3, 9, 12, 13}


def replay(engine: Engine) -> tuple[list[tuple[Any, ...]], set[int]]:
    """Run SCHEDULE once from fresh cells: each completion's signature, and the steps left
    blocked by their own submit."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE cells SET v = 0"))
    lab = Lab(engine)
    steps: dict[str, Callable[[int, int], Callable[[], Any]]] = {
        "read": lambda key, _value: lab.read(key),
        "write": lab.write,
        "commit": lambda _key, _value: lab.commit,
        "rollback": lambda _key, _value: lab.rollback,
    }
    signatures: list[tuple[Any, ...]] = []
    blocked_steps: set[int] = set()
    with Scheduler(engine, 3, step_timeout_s=10.0) as scheduler:
        for index, (session, action, key, value) in enumerate(SCHEDULE):
            completions = scheduler.submit(session, steps[action](key, value))
            if index not in {c.step for c in completions}:
                blocked_steps.add(index)
            for c in completions:
                error = c.outcome.error
                signatures.append(
                    (
                        c.session,
                        c.step,
                        c.outcome.ok,
                        c.outcome.value,
                        type(error).__name__,
                        type(getattr(error, "orig", None)).__name__,
                    )
                )
        assert scheduler.blocked == frozenset()
        scheduler.close(abandon=lab.abandon)
    assert checked_out(engine) == 0
    return signatures, blocked_steps


def test_the_same_schedule_gives_the_same_completions(backend: str, lab_engine: Engine) -> None:
    first, blocked_steps = replay(lab_engine)
    assert len(first) == len(SCHEDULE), "every step completes by the end of the schedule"
    if backend == "sqlite":
        assert blocked_steps == set()
        assert any(not ok for _s, _step, ok, *_ in first), "conflicts fail with SQLITE_BUSY"
    else:
        assert blocked_steps == BLOCKING_STEPS
        assert all(ok for _s, _step, ok, *_ in first), first
    for attempt in range(49):
        again, again_blocked = replay(lab_engine)
        assert (again, again_blocked) == (first, blocked_steps), f"replay {attempt + 2} differs"


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_all_blocked_on_an_outside_holder_and_close_kills_the_waiters(
    lab_engine: Engine, outside: Engine
) -> None:
    lab = Lab(lab_engine)
    holder = outside.connect()
    try:
        holder.execute(text("UPDATE cells SET v = -1 WHERE id = 1"))
        scheduler = Scheduler(lab_engine, 2)
        ids = [value_of(scheduler.submit(s, lab.backend_id), s) for s in (0, 1)]
        assert scheduler.submit(0, lab.write(1, 10)) == []
        assert not scheduler.all_blocked()
        assert scheduler.submit(1, lab.write(1, 11)) == []
        # Nobody can act and the database reports no deadlock: a stall.
        assert scheduler.all_blocked()
        assert scheduler.blocked == {0, 1}
        assert scheduler.deadlocked == frozenset()

        before = time.monotonic()
        ended = scheduler.close(abandon=lab.abandon)
        assert time.monotonic() - before < 6.0
        killed = [c for c in ended if c.step in (2, 3)]
        assert [c.session for c in killed] == [0, 1]
        assert all(isinstance(c.outcome.error, sa_exc.DBAPIError) for c in killed), killed
        abandons = [c for c in ended if c.step > 3]
        assert sorted(c.session for c in abandons) == [0, 1]
        assert checked_out(lab_engine) == 0
        assert alive(outside, ids) == []
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_close_releases_blocked_steps_by_abandoning_the_holders_first(
    lab_engine: Engine,
) -> None:
    lab = Lab(lab_engine)
    scheduler = Scheduler(lab_engine, 2)
    scheduler.submit(0, lab.write(1, 10))
    assert scheduler.submit(1, lab.write(1, 11)) == []
    ended = scheduler.close(abandon=lab.abandon)
    # Abandoning session 0 rolled it back, which let session 1's write through: no kill.
    assert [(c.session, c.step) for c in ended] == [(0, 2), (1, 1), (1, 3)]
    assert all(c.outcome.ok for c in ended), ended
    assert ended[1].outcome.value == 1
    assert checked_out(lab_engine) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_wait_cycle_the_database_cannot_see_is_reported(lab_engine: Engine) -> None:
    lab = Lab(lab_engine)
    scheduler = Scheduler(lab_engine, 2)
    try:
        scheduler.submit(0, lab.write(1, 10))
        # Session 0 waits, on a second connection, for its own first one: PostgreSQL sees
        # one process waiting on another that is idle, no cycle, and never breaks it.
        assert scheduler.submit(0, lab.write_on_second_connection(1, 11)) == []
        assert scheduler.deadlocked == {0}
        assert scheduler.blocked == {0}
        assert not scheduler.all_blocked()  # session 1 is idle
    finally:
        scheduler.close(abandon=lab.abandon)
    assert checked_out(lab_engine) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_monitor_ends_only_backends_of_its_own_database(
    lab_engine: Engine, outside: Engine, db_url: URL
) -> None:
    # A process id held by the run may since have gone to another program's connection: the
    # kill must not reach a backend of another database.
    other = create_engine(db_url.set(database="postgres"), poolclass=NullPool)
    detector = _make_detector(lab_engine)
    assert detector is not None
    try:
        with other.connect() as elsewhere, outside.connect() as here:
            pid_elsewhere = int(elsewhere.execute(text("SELECT pg_backend_pid()")).scalar_one())
            pid_here = int(here.execute(text("SELECT pg_backend_pid()")).scalar_one())
            detector.kill([0, 1], {0: frozenset({pid_elsewhere}), 1: frozenset({pid_here})})
            assert elsewhere.execute(text("SELECT 1")).scalar_one() == 1
            deadline = time.monotonic() + 5
            while alive(outside, [pid_here]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert alive(outside, [pid_here]) == []
            here.invalidate()  # ended on the server: nothing to roll back
    finally:
        detector.close()
        other.dispose()
