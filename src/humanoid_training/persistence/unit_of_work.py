"""The Unit of Work: one connection, every change of the block or none.

`with uow:` opens the connection; the transaction begins with the first statement (for SQLite a
real `BEGIN`, see engine.py). `uow.commit()` writes what changed and the events it raised, then
commits; leaving the block without commit rolls back; an exception rolls back and propagates.
A commit that fails rolls the transaction back (releasing its locks) and raises; the aggregates
keep their unsaved changes and events.

On PostgreSQL and MariaDB that is one transaction. On SQLite (engines beginning DEFERRED) a
commit that writes anything ends the read transaction and writes in a second one, begun
IMMEDIATE (see engine.begin_writing): the version checks make the two act as one for every
aggregate loaded. A commit with nothing to write commits the read transaction alone and never
takes SQLite's write lock.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, select
from sqlalchemy import exc as sa_exc

from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.domain.events import DomainEvent
from humanoid_training.persistence import statements as q
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.codec import JsonCodec
from humanoid_training.persistence.engine import begin_writing
from humanoid_training.persistence.errors import ConcurrencyConflict, translated_errors
from humanoid_training.persistence.repositories import (
    AbstractEventRepository,
    AbstractPlanRepository,
    AbstractRobotRepository,
    AbstractSessionRepository,
    SqlAlchemyEventRepository,
    SqlAlchemyPlanRepository,
    SqlAlchemyRobotRepository,
    SqlAlchemySessionRepository,
    to_micros,
)
from humanoid_training.weakenings import Weakenings

log = logging.getLogger(__name__)

# Points on the commit path where a fault hook is called (uowstress injects failures there).
FAULT_POINTS = ("before_flush", "after_flush", "before_commit")
FaultHook = Callable[[str, Connection], None]
_ROOT_TABLES = {"robot": t.robots, "session": t.sessions, "plan": t.plans}
# What an added aggregate writes at commit: its INSERT (see SqlAlchemyUnitOfWork._changes).
_NEW = object()


class AbstractUnitOfWork(abc.ABC):
    robots: AbstractRobotRepository
    sessions: AbstractSessionRepository
    plans: AbstractPlanRepository
    events: AbstractEventRepository
    weakenings: Weakenings = Weakenings()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.rollback()
        return None

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...


@dataclass
class Tracked:
    kind: str
    aggregate: Aggregate
    snapshot: Any  # None for an aggregate added in this unit of work
    touched: bool = False


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    def __init__(
        self,
        engine: Engine,
        *,
        weakenings: Weakenings | None = None,
        codec: JsonCodec | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.engine = engine
        self.weakenings = weakenings or Weakenings()
        self.codec = codec or JsonCodec()
        self.fault_hook = fault_hook
        self._connection: Connection | None = None
        self.tracked: dict[tuple[str, str], Tracked] = {}
        self._robots = SqlAlchemyRobotRepository(self)
        self._sessions = SqlAlchemySessionRepository(self)
        self._plans = SqlAlchemyPlanRepository(self)
        self.robots = self._robots
        self.sessions = self._sessions
        self.plans = self._plans
        self._repositories: dict[str, Any] = {
            "robot": self._robots,
            "session": self._sessions,
            "plan": self._plans,
        }
        self.events = SqlAlchemyEventRepository(self)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._connection is not None:
            raise RuntimeError("this unit of work is already open; use a new one per block")
        with translated_errors():
            self._connection = self.engine.connect()
        self.tracked = {}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        suppress = None
        try:
            if exc is not None and self.weakenings.commit_swallows_errors:
                # Weakened on purpose: keep whatever the block did before it failed.
                log.warning("unit of work swallowed %s and committed anyway", exc_type)
                try:
                    self.commit()
                    suppress = True
                except Exception:
                    log.warning("commit after swallowed error failed too", exc_info=True)
            self.rollback()
        finally:
            self._close()
        return suppress

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        self.tracked = {}
        if connection is not None:
            try:
                connection.close()
            except sa_exc.DBAPIError:
                # The connection died under us (killed, server gone): drop it from the pool.
                connection.invalidate()

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the unit of work is not open; use it as `with uow:`")
        return self._connection

    # -- tracking -----------------------------------------------------------------------------

    def track_new(self, kind: str, aggregate: Aggregate) -> None:
        key = (kind, aggregate.id)
        if key in self.tracked:
            raise ValueError(f"{kind} {aggregate.id!r} is already in this unit of work")
        self.tracked[key] = Tracked(kind, aggregate, None)

    def track_loaded(self, kind: str, aggregate: Aggregate, snapshot: Any) -> None:
        self.tracked[(kind, aggregate.id)] = Tracked(kind, aggregate, snapshot)

    def touch(self, kind: str, aggregate: Aggregate) -> None:
        tracked = self.tracked.get((kind, aggregate.id))
        if tracked is None or tracked.aggregate is not aggregate:
            raise ValueError(f"{kind} {aggregate.id!r} was not loaded by this unit of work")
        tracked.touched = True

    def _repository(self, kind: str) -> Any:
        return self._repositories[kind]

    # -- commit / rollback --------------------------------------------------------------------

    def _hook(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point, self.connection)

    def commit(self) -> None:
        try:
            pending, versions = self._write_and_commit()
        except BaseException:
            # A failed transaction holds its locks (SQLite's write lock above all) until it
            # ends; the caller may go on in the block, so it ends here.
            try:
                self._end_transaction()
            except Exception:
                # The commit's own error is the one to report; leaving the block tries again.
                log.warning("rolling back after a failed commit failed too", exc_info=True)
            raise
        for tracked, version in versions:
            tracked.aggregate.version = version
        for tracked, events in pending:
            del tracked.aggregate.events[: len(events)]
            repository = self._repository(tracked.kind)
            tracked.snapshot = repository.snapshot(tracked.aggregate)
            tracked.touched = False

    def _write_and_commit(
        self,
    ) -> tuple[list[tuple[Tracked, list[DomainEvent]]], list[tuple[Tracked, int]]]:
        """Write what changed and commit; the events written, and the new versions."""
        connection = self.connection
        with translated_errors():
            self._hook("before_flush")
            pending = [(tr, tr.aggregate.events[:]) for tr in self.tracked.values()]
            event_rows = [self._event_row(e) for _, events in pending for e in events]
            if event_rows and self.weakenings.events_outside_transaction:
                # Weakened on purpose: the events are committed before, and apart from, the change.
                with self.engine.begin() as other:
                    q.INSERT_EVENTS.run(other, event_rows)
            store_events = bool(event_rows) and not self.weakenings.events_outside_transaction
            writes = [
                (tracked, changes)
                for tracked in list(self.tracked.values())
                if (changes := self._changes(tracked)) is not None
            ]
            if writes or store_events:
                # Only a commit that writes takes SQLite's write lock: one that only read must
                # not queue behind, nor hold up, the writers.
                begin_writing(connection)
            versions: list[tuple[Tracked, int]] = []
            for tracked, changes in writes:
                try:
                    version = self._save(tracked, changes)
                except Exception:
                    if not self.weakenings.commit_swallows_errors:
                        raise
                    log.warning(
                        "save of %s %s failed; swallowed",
                        tracked.kind,
                        tracked.aggregate.id,
                        exc_info=True,
                    )
                    continue
                versions.append((tracked, version))
            self._validate_reads({id(tracked) for tracked, _ in versions})
            if store_events:
                q.INSERT_EVENTS.run(connection, event_rows)
            self._hook("after_flush")
            self._hook("before_commit")
            connection.commit()
        return pending, versions

    def _changes(self, tracked: Tracked) -> Any:
        """What committing `tracked` writes: _NEW for an added aggregate, the repository's
        changes for a loaded one, None when nothing (unchanged and not touched)."""
        if tracked.snapshot is None:
            return _NEW
        return self._repository(tracked.kind).changes(
            tracked.aggregate, tracked.snapshot, tracked.touched
        )

    def _save(self, tracked: Tracked, changes: Any) -> int:
        repository = self._repository(tracked.kind)
        if changes is _NEW:
            return repository.insert(tracked.aggregate)  # type: ignore[no-any-return]
        return repository.save(  # type: ignore[no-any-return]
            tracked.aggregate, tracked.snapshot, changes
        )

    def _validate_reads(self, saved: set[int]) -> None:
        """Every aggregate this unit of work loaded and did not change must still be at the
        version it loaded, and stays there until the commit (a shared row lock): what was
        decided from it still holds, so the commit is as if all its reads happened at once
        (an inconsistent read, e.g. a robot older than the session it came with, is refused).
        Changed aggregates are checked by their own version-guarded UPDATE."""
        if self.weakenings.no_version_check:
            return
        unchanged: dict[str, dict[str, int]] = {}
        for (kind, aggregate_id), tracked in self.tracked.items():
            if tracked.snapshot is not None and id(tracked) not in saved:
                unchanged.setdefault(kind, {})[aggregate_id] = tracked.aggregate.version
        for kind, loaded in unchanged.items():
            table = _ROOT_TABLES[kind]
            query = select(table.c.id, table.c.version).where(table.c.id.in_(sorted(loaded)))
            try:
                rows = self.connection.execute(query.with_for_update(read=True))
                current = {row.id: row.version for row in rows}
            except Exception:
                if not self.weakenings.commit_swallows_errors:
                    raise
                log.warning("checking what %ss were read failed; swallowed", kind, exc_info=True)
                continue
            for aggregate_id, version in sorted(loaded.items()):
                if current.get(aggregate_id) != version:
                    conflict = ConcurrencyConflict(kind, aggregate_id, version)
                    if not self.weakenings.commit_swallows_errors:
                        raise conflict
                    log.warning("%s; swallowed", conflict)

    def _event_row(self, event: DomainEvent) -> dict[str, Any]:
        return {
            "event_id": event.event_id,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "event_type": event.name,
            "payload": self.codec.encode(event.payload()),
            "occurred_at": to_micros(event.occurred_at),
        }

    def rollback(self) -> None:
        if self._connection is None:
            return
        self._end_transaction()
        # What was loaded may not match the database any more: start afresh.
        self.tracked = {}

    def _end_transaction(self) -> None:
        """Roll back the connection's transaction, if any, including one whose COMMIT failed."""
        connection = self._connection
        if connection is None:
            return
        transaction = connection.get_transaction()
        if transaction is None:
            return
        if transaction.is_active or connection.invalidated:
            try:
                connection.rollback()
            except sa_exc.DBAPIError:
                connection.invalidate()
            return
        # The COMMIT itself failed. SQLAlchemy keeps the transaction, inactive: its rollback()
        # sends no ROLLBACK, and while it is kept Connection.close() skips the pool's reset.
        # SQLite keeps its transaction, and the write lock, after a refused COMMIT (e.g. a
        # deferred foreign key): the driver connection is rolled back here. Where the server
        # ended the transaction itself (PostgreSQL) that costs nothing.
        pooled = connection.connection
        connection.rollback()  # forgets the transaction; sends nothing
        try:
            connection.dialect.do_rollback(pooled)
        except Exception:
            # State unknown: the pool must not hand this connection out again.
            log.warning("rolling back after a refused COMMIT failed", exc_info=True)
            connection.invalidate()
