"""The scheduler's own logic, with a fake lock table standing in for the database.

Steps take named locks from `FakeLocks`; `FakeDetector` answers the scheduler's questions
from that table the way PostgreSQL's lock table does. The engine is an SQLite file the steps
never touch, so nothing here needs a server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event

import uowstress.sessions as sessions_module
from uowstress.errors import UowstressError
from uowstress.sessions import Scheduler, SchedulerTimeout, current_session

OUTSIDE = -1  # a holder that is not one of the scheduler's sessions


class Killed(Exception):
    """What a fake step raises when the fake database ends it (deadlock victim, kill)."""


class FakeLocks:
    """Exclusive named locks granted first come, first served, as a database's lock queue
    does; a session's locks go when it releases or is ended."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.holder: dict[str, int] = {}
        self.waiting: dict[int, str] = {}  # seen by the detector, like a lock table
        self.queue: dict[str, list[int]] = {}
        self.doomed: set[int] = set()

    def _me(self) -> int:
        session = current_session()
        assert session is not None
        return session

    def _end_if_doomed(self, session: int) -> None:
        if session in self.doomed:
            self.doomed.discard(session)
            name = self.waiting.pop(session, None)
            if name is not None:
                self.queue[name].remove(session)
            self._drop(session)
            raise Killed(f"session {session} ended by the database")

    def _drop(self, session: int) -> None:
        for name in [n for n, h in self.holder.items() if h == session]:
            del self.holder[name]
        self.cond.notify_all()

    def take(self, name: str, owner: int | None = None) -> str:
        session = self._me() if owner is None else owner
        with self.cond:
            line = self.queue.setdefault(name, [])
            line.append(session)
            while self.holder.get(name, session) != session or line[0] != session:
                self._end_if_doomed(session)
                self.waiting[session] = name
                self.cond.wait()
            line.pop(0)
            self.waiting.pop(session, None)
            self.holder[name] = session
            self.cond.notify_all()  # the next in line may now wait on this session
        return name

    def stall(self) -> None:
        """Wait, invisibly to the detector, until ended: like a step stuck in Python."""
        session = self._me()
        with self.cond:
            while True:
                self._end_if_doomed(session)
                self.cond.wait()

    def release(self, owner: int | None = None) -> None:
        with self.cond:
            self._drop(self._me() if owner is None else owner)

    def end(self, session: int) -> None:
        with self.cond:
            self.doomed.add(session)
            self.cond.notify_all()


class FakeDetector:
    """Answers from FakeLocks; with `breaks_cycles` it ends the lowest session of a cycle
    on its second look, like a database's deadlock detector."""

    def __init__(self, locks: FakeLocks, *, grace_s: float = 0.05, breaks_cycles: bool = False):
        self.locks = locks
        self.grace_s = grace_s
        self.breaks_cycles = breaks_cycles
        self.polls = 0
        self.killed: list[int] = []
        self.closed = False
        self._cycle_seen = False

    def poll(
        self, running: Collection[int], held: Mapping[int, frozenset[int]]
    ) -> dict[int, sessions_module._Wait]:
        self.polls += 1
        with self.locks.cond:
            waits = {}
            for s in running:
                name = self.locks.waiting.get(s)
                if name is None:
                    continue
                holder = self.locks.holder.get(name)
                if holder is None:
                    # A database grants a released lock to the next in line at once; here that
                    # session's thread takes it when it next runs. Until then it is not blocked
                    # (on a busy machine that can be a while), only the ones behind it are.
                    line = self.locks.queue.get(name, [])
                    if not line or line[0] == s:
                        continue
                    holder = line[0]
                waits[s] = sessions_module._Wait(on=frozenset({holder}) - {OUTSIDE}, exact=True)
            cycle = sessions_module._on_cycle({s: w.on for s, w in waits.items()})
            if cycle and self.breaks_cycles:
                if self._cycle_seen:
                    self.locks.doomed.add(min(cycle))
                    self.locks.cond.notify_all()
                    self._cycle_seen = False
                else:
                    self._cycle_seen = True
        return waits

    def kill(self, sessions: Collection[int], held: Mapping[int, frozenset[int]]) -> frozenset[int]:
        for session in sessions:
            self.killed.append(session)
            self.locks.end(session)
        return frozenset()

    def alive(self, backend_ids: Collection[int]) -> frozenset[int]:
        return frozenset()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    created = create_engine(f"sqlite:///{tmp_path / 'unit.db'}", connect_args={"timeout": 0})
    try:
        yield created
    finally:
        created.dispose()


@pytest.fixture
def locks() -> FakeLocks:
    return FakeLocks()


def use_detector(monkeypatch: pytest.MonkeyPatch, detector: FakeDetector) -> None:
    monkeypatch.setattr(sessions_module, "_make_detector", lambda engine: detector)


@pytest.fixture
def detector(monkeypatch: pytest.MonkeyPatch, locks: FakeLocks) -> FakeDetector:
    fake = FakeDetector(locks)
    use_detector(monkeypatch, fake)
    return fake


def take(locks: FakeLocks, name: str) -> Callable[[], str]:
    return lambda: locks.take(name)


def summary(completions: list[sessions_module.Completion]) -> list[tuple[int, int, bool]]:
    return [(c.session, c.step, c.outcome.ok) for c in completions]


def test_step_runs_on_its_session_thread_and_outcomes_are_captured(engine: Engine) -> None:
    def fail() -> None:
        raise KeyError("no such robot")

    with Scheduler(engine, 2) as scheduler:
        (first,) = scheduler.submit(1, current_session)
        (second,) = scheduler.submit(0, fail)
    assert (first.session, first.step, first.outcome.value) == (1, 0, 1)
    assert current_session() is None
    assert not second.outcome.ok and isinstance(second.outcome.error, KeyError)


def test_blocked_step_is_released_by_the_holder(
    engine: Engine, locks: FakeLocks, detector: FakeDetector
) -> None:
    with Scheduler(engine, 3) as scheduler:
        scheduler.submit(2, take(locks, "row"))
        assert scheduler.submit(0, take(locks, "row")) == []
        assert scheduler.submit(1, take(locks, "row")) == []
        assert scheduler.blocked == {0, 1}
        assert not scheduler.all_blocked()  # session 2 can still act
        with pytest.raises(ValueError, match="session 0 is still blocked on step 1"):
            scheduler.submit(0, lambda: None)

        # 2 releases: 0 (first in line) gets the lock, 1 goes on waiting, now on 0.
        assert summary(scheduler.submit(2, locks.release)) == [(0, 1, True), (2, 3, True)]
        assert scheduler.blocked == {1}
        assert summary(scheduler.submit(0, locks.release)) == [(0, 4, True), (1, 2, True)]
        assert scheduler.blocked == frozenset()


def test_every_session_blocked_on_an_outside_holder_is_a_stall(
    engine: Engine, locks: FakeLocks, detector: FakeDetector
) -> None:
    locks.take("row", owner=OUTSIDE)
    with Scheduler(engine, 2) as scheduler:
        scheduler.submit(0, take(locks, "row"))
        assert not scheduler.all_blocked()
        scheduler.submit(1, take(locks, "row"))
        assert scheduler.all_blocked()
        assert scheduler.deadlocked == frozenset()  # not a cycle: the holder could go on
        ended = scheduler.close()
    assert sorted(detector.killed) == [0, 1]
    # In the order they ended: both were killed at once, and either may end first.
    assert sorted((c.session, type(c.outcome.error)) for c in ended) == [(0, Killed), (1, Killed)]
    assert detector.closed


def test_cycle_the_database_breaks_is_waited_for(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, locks: FakeLocks
) -> None:
    # A grace far longer than the fake's two looks: the submit must end on the victim.
    detector = FakeDetector(locks, grace_s=10.0, breaks_cycles=True)
    use_detector(monkeypatch, detector)
    with Scheduler(engine, 2) as scheduler:
        scheduler.submit(0, take(locks, "a"))
        scheduler.submit(1, take(locks, "b"))
        assert scheduler.submit(0, take(locks, "b")) == []
        started = time.monotonic()
        ended = scheduler.submit(1, take(locks, "a"))
        assert time.monotonic() - started < 5.0
        assert [(c.session, c.outcome.ok) for c in ended] == [(0, False), (1, True)]
        assert isinstance(ended[0].outcome.error, Killed)
        assert scheduler.deadlocked == frozenset()
        assert scheduler.blocked == frozenset()


def test_cycle_the_database_leaves_is_reported_after_its_grace(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, locks: FakeLocks
) -> None:
    # A grace long enough that a step taking it again stands out from a busy machine's delays.
    detector = FakeDetector(locks, grace_s=1.0)
    use_detector(monkeypatch, detector)
    with Scheduler(engine, 3) as scheduler:
        scheduler.submit(0, take(locks, "a"))
        scheduler.submit(1, take(locks, "b"))
        scheduler.submit(0, take(locks, "b"))
        started = time.monotonic()
        assert scheduler.submit(1, take(locks, "a")) == []
        assert time.monotonic() - started >= detector.grace_s
        assert scheduler.deadlocked == {0, 1}
        assert not scheduler.all_blocked()  # session 2 is idle, yet 0 and 1 never get out

        # The cycle is known: later steps do not wait for the database again.
        started = time.monotonic()
        scheduler.submit(2, take(locks, "c"))
        assert time.monotonic() - started < detector.grace_s
        assert scheduler.deadlocked == {0, 1}
        scheduler.close()
    assert sorted(detector.killed) == [0, 1]


def test_lagging_wait_signal_is_looked_at_twice(
    monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    finish = threading.Event()

    class StaleDetector(FakeDetector):
        """Reports session 0 waiting (as text status that lags would) while letting it end."""

        def poll(
            self, running: Collection[int], held: Mapping[int, frozenset[int]]
        ) -> dict[int, sessions_module._Wait]:
            self.polls += 1
            finish.set()
            if self.polls == 1:
                return {0: sessions_module._Wait(on=frozenset(), exact=False)}
            return {}

    detector = StaleDetector(FakeLocks())
    use_detector(monkeypatch, detector)
    with Scheduler(engine, 2) as scheduler:
        (done,) = scheduler.submit(0, lambda: finish.wait(5.0))
        assert done.outcome.value is True
        assert scheduler.blocked == frozenset()


def test_step_neither_finished_nor_blocked_times_out_and_close_still_cleans_up(
    engine: Engine, locks: FakeLocks, detector: FakeDetector
) -> None:
    scheduler = Scheduler(engine, 2, step_timeout_s=0.2)
    scheduler.submit(1, lambda: "fine")
    with pytest.raises(SchedulerTimeout, match="step 1 on session 0 neither finished") as caught:
        scheduler.submit(0, locks.stall)
    assert (caught.value.session, caught.value.step) == (0, 1)
    assert isinstance(caught.value, UowstressError)
    with pytest.raises(UowstressError, match="call close"):
        scheduler.submit(1, lambda: None)

    started = time.monotonic()
    ended = scheduler.close()
    assert time.monotonic() - started < 2.0
    assert detector.killed == [0]
    assert [(c.session, c.step, type(c.outcome.error)) for c in ended] == [(0, 1, Killed)]
    assert not any(t.name.startswith("uowstress-session-") for t in threading.enumerate())


def test_close_abandons_idle_sessions_first_and_then_those_they_released(
    engine: Engine, locks: FakeLocks, detector: FakeDetector
) -> None:
    abandoned: list[int | None] = []

    def abandon() -> None:
        abandoned.append(current_session())
        locks.release()

    scheduler = Scheduler(engine, 3)
    scheduler.submit(1, take(locks, "row"))
    scheduler.submit(0, take(locks, "row"))
    ended = scheduler.close(abandon=abandon)
    # 1 is the only idle session: abandoning it lets 0 through, which is then the lowest
    # idle session not yet abandoned.
    assert abandoned == [1, 0, 2]
    assert summary(ended) == [(0, 1, True), (1, 2, True), (0, 3, True), (2, 4, True)]
    assert detector.killed == []
    assert scheduler.close() == []
    with pytest.raises(UowstressError, match="closed"):
        scheduler.submit(0, lambda: None)


def test_close_detaches_from_the_engine(engine: Engine) -> None:
    scheduler = Scheduler(engine, 2)
    listener = scheduler._on_checkout
    assert event.contains(engine, "checkout", listener)
    scheduler.close()
    assert not event.contains(engine, "checkout", listener)


@pytest.mark.parametrize(
    ("sessions", "timeout", "message"),
    [(0, 30.0, "positive number of sessions"), (2, 0.0, "step_timeout_s must be positive")],
)
def test_bad_arguments_are_refused(
    engine: Engine, sessions: int, timeout: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Scheduler(engine, sessions, step_timeout_s=timeout)


def test_submit_to_a_session_that_does_not_exist_is_refused(engine: Engine) -> None:
    with Scheduler(engine, 2) as scheduler, pytest.raises(ValueError, match="sessions 0 to 1"):
        scheduler.submit(2, lambda: None)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({0: frozenset({1}), 1: frozenset({0})}, {0, 1}),
        ({0: frozenset({0})}, {0}),
        ({0: frozenset({1}), 1: frozenset()}, set()),  # 1 waits on someone outside
        ({0: frozenset({2}), 1: frozenset({2})}, set()),  # 2 is idle: it can release them
        ({0: frozenset({1}), 1: frozenset({2}), 2: frozenset({1}), 3: frozenset({0})}, {1, 2}),
    ],
)
def test_on_cycle(edges: dict[int, frozenset[int]], expected: set[int]) -> None:
    assert sessions_module._on_cycle(edges) == expected


INNODB_STATUS = """
------------------------
LATEST DETECTED DEADLOCK
------------------------
*** (1) TRANSACTION:
TRANSACTION 11290, ACTIVE 0 sec starting index read
MariaDB thread id 77, OS thread handle 1, query id 5 127.0.0.1 root Updating
*** WAITING FOR THIS LOCK TO BE GRANTED:
------------
TRANSACTIONS
------------
Trx id counter 11317
LIST OF TRANSACTIONS FOR EACH SESSION:
---TRANSACTION 11316, ACTIVE 1 sec starting index read
mysql tables in use 1, locked 1
LOCK WAIT 2 lock struct(s), heap size 1128, 1 row lock(s)
MariaDB thread id 1134, OS thread handle 140204112488128, query id 32897 127.0.0.1 root Updating
update t_exp set v=2 where id=1
------- TRX HAS BEEN WAITING 50233 us FOR THIS LOCK TO BE GRANTED:
RECORD LOCKS space id 692 page no 3 n bits 320 index PRIMARY of table `test`.`t_exp`

------------------
---TRANSACTION 11315, ACTIVE 1 sec
2 lock struct(s), heap size 1128, 1 row lock(s), undo log entries 1
MariaDB thread id 1133, OS thread handle 140204112795328, query id 32896 127.0.0.1 root
---TRANSACTION 421, ACTIVE 3 sec
MySQL thread id 9, OS thread handle 2, query id 7 localhost root updating
------- TRX HAS BEEN WAITING 3 SEC FOR THIS LOCK TO BE GRANTED:
--------
FILE I/O
--------
"""


def test_innodb_status_names_only_the_waiting_threads() -> None:
    # 77 is in the last deadlock's report, not waiting now; 1133 holds the lock.
    assert sessions_module._innodb_lock_waiters(INNODB_STATUS) == {1134, 9}
    assert sessions_module._innodb_lock_waiters("no transaction list") == set()


@pytest.mark.parametrize(
    ("state", "waits"),
    [
        ("Waiting for table metadata lock", True),
        ("Waiting for table level lock", True),
        ("User lock", True),
        ("Updating", False),
        ("Waiting for table flush", False),
        ("", False),
        (None, False),
    ],
)
def test_process_list_states_that_wait_for_a_lock(state: str | None, waits: bool) -> None:
    assert sessions_module._state_waits_for_lock(state) is waits
