"""Helpers shared by the integration tests of the reference system's persistence."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL

from humanoid_training.domain import CurriculumPlan, HumanoidRobot, LearningSession
from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.engine import EngineOptions, make_engine
from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork
from humanoid_training.weakenings import Weakenings
from uowstress import reproducers

# The servers, each test carrying its server's marker (skipped locally, failed under CI=true,
# when the server does not answer: see tests/conftest.py).
POSTGRES = pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql")
MYSQL = pytest.param("mysql", marks=pytest.mark.mysql, id="mysql")
SERVERS = [POSTGRES, MYSQL]
on_servers = pytest.mark.parametrize("backend", SERVERS)
postgres_only = pytest.mark.parametrize("backend", [POSTGRES])

A = TypeVar("A", bound=Aggregate)

# The ACID machine's step that registers robot r1 (the start of many hand-written sequences).
REGISTER: dict[str, Any] = {
    "action": "apply",
    "op": "register_robot",
    "args": {
        "robot_id": "r1",
        "name": "Atlas",
        "robot_type": "custom",
        "joint_count": 3,
        "height_m": 1.2,
    },
}


def register_then_kill(
    directory: Path,
    *,
    register: dict[str, Any] | None = None,
    kind: str = "lost",
    message: str = "commit 1 was acknowledged",
) -> Path:
    """A durability reproducer written to `directory`: one transaction registering robot r1
    (with `register` as its arguments, else REGISTER's), its worker killed right after its
    acknowledgement; recorded as a finding of `kind`."""
    args = REGISTER["args"] if register is None else register
    return reproducers.write(
        reproducers.make_reproducer(
            machine="durability",
            target="humanoid_training.target:TARGET",
            backend="sqlite",
            guarantee="serializable",
            steps=[
                reproducers.Step(action="begin"),
                reproducers.Step(action="apply", op="register_robot", args=args),
                reproducers.Step(action="commit"),
            ],
            kill=reproducers.KillPoint(after_acks=1),
            failure=reproducers.Failure(kind=kind, message=message),
        ),
        directory,
    )


# Long enough for a slow CI machine, short enough that a deadlock fails the test, not the run.
JOIN_TIMEOUT_S = 30.0


def uow(engine: Engine, **switches: bool) -> SqlAlchemyUnitOfWork:
    """A fresh unit of work, with the named weakening switches on."""
    return SqlAlchemyUnitOfWork(engine, weakenings=Weakenings(**switches))


def save_new(engine: Engine, *aggregates: Aggregate) -> None:
    """Insert new aggregates in one unit of work (in the order given, for foreign keys)."""
    with uow(engine) as work:
        for aggregate in aggregates:
            repository_for(work, aggregate).add(aggregate)
        work.commit()


def repository_for(work: SqlAlchemyUnitOfWork, aggregate: Aggregate) -> Any:
    if isinstance(aggregate, HumanoidRobot):
        return work.robots
    if isinstance(aggregate, LearningSession):
        return work.sessions
    if isinstance(aggregate, CurriculumPlan):
        return work.plans
    raise TypeError(f"no repository for {type(aggregate).__name__}")


def reload(engine: Engine, aggregate: A) -> A:
    """The stored state of `aggregate`, loaded by a new unit of work."""
    with uow(engine) as work:
        loaded: A = repository_for(work, aggregate).get(aggregate.id)
        return loaded


def differences(expected: Aggregate, actual: Aggregate) -> list[str]:
    """The persistent fields that differ, for assertion messages."""
    found = []
    for f in fields(expected):
        if f.name == "events":
            continue
        want, got = getattr(expected, f.name), getattr(actual, f.name)
        if want != got:
            found.append(f"{f.name}: expected {want!r}, got {got!r}")
    return found


def assert_round_trips(engine: Engine, aggregate: Aggregate) -> None:
    loaded = reload(engine, aggregate)
    problems = differences(aggregate, loaded)
    assert not problems, "\n".join(problems)
    # __eq__ is what the rest of the system relies on: it must agree with the field diff.
    assert loaded == aggregate


def count_rows(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        )


def outbox_count(engine: Engine, aggregate_id: str) -> int:
    return count_rows(engine, t.outbox, t.outbox.c.aggregate_id == aggregate_id)


@contextmanager
def schema_engine_for(db_url: URL, options: EngineOptions) -> Iterator[Engine]:
    """An engine with `options` on the scratch database, with the schema created."""
    engine = make_engine(db_url, options)
    try:
        t.metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()


@dataclass
class Outcome:
    """What one thread's work returned or raised."""

    value: Any = None
    error: BaseException | None = None


def run_concurrently(
    works: Sequence[Callable[[], Any]], *, timeout_s: float = JOIN_TIMEOUT_S
) -> list[Outcome]:
    """Run each work in its own thread, all released together; fail (not hang) when a thread
    is still running after `timeout_s`."""
    start = threading.Barrier(len(works))
    outcomes = [Outcome() for _ in works]

    def runner(index: int) -> None:
        try:
            start.wait(timeout_s)
            outcomes[index].value = works[index]()
        except BaseException as error:  # reported to the test, which decides
            outcomes[index].error = error

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    stuck = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not stuck, (
        f"threads {stuck} still running after {timeout_s} s: a deadlock or a lock wait that"
        " never ends"
    )
    return outcomes


# Register steps: two sessions read k0, both write it, both commit; the second write is the
# lost update.
LOST_UPDATE_REGISTERS = [
    {"session": 0, "action": "begin"},
    {"session": 1, "action": "begin"},
    {"session": 0, "action": "read", "key": 0},
    {"session": 1, "action": "read", "key": 0},
    {"session": 0, "action": "write", "key": 0, "value": 1},
    {"session": 1, "action": "write", "key": 0, "value": 2},
    {"session": 0, "action": "commit"},
    {"session": 1, "action": "commit"},
]
