"""The reference Unit of Work, keeping its footprint for uowstress's anomaly checker.

`ObservedUnitOfWork` is the ordinary SQLAlchemy Unit of Work plus a record of what each of its
transactions read and wrote at the level of aggregates (`uowstress.target.Footprint`): every
aggregate it loaded, at the version loaded; the session queries, with the sessions the
database returned; and the versions its commit installed, with the predicates each new version
satisfies. Nothing it records changes what the Unit of Work does.

Aggregates are named "robot:<id>", "session:<id>", "plan:<id>". The predicates are the
session queries the services decide on: "sessions of robot <id>", "open sessions of robot
<id>" (the one-open-session rule reads this one) and "active sessions". The other queries
(robots by skill, active plans) are recorded through the aggregates they load only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exc as sa_exc

from humanoid_training.domain import LearningSession, SessionStatus
from humanoid_training.domain.aggregate import Aggregate
from humanoid_training.persistence.repositories import SqlAlchemySessionRepository
from humanoid_training.persistence.unit_of_work import SqlAlchemyUnitOfWork
from uowstress.target import (
    AggregateRead,
    AggregateWrite,
    Footprint,
    FootprintOutcome,
    PredicateRead,
)


def aggregate_key(kind: str, aggregate_id: str) -> str:
    return f"{kind}:{aggregate_id}"


def robot_sessions(robot_id: str, *, open_only: bool) -> str:
    """The name of the predicate behind `find_sessions_by_robot`."""
    return f"{'open ' if open_only else ''}sessions of robot {robot_id}"


ACTIVE_SESSIONS = "active sessions"


def predicates_matched(kind: str, aggregate: Aggregate) -> frozenset[str]:
    """The recorded predicates a version of `aggregate` satisfies."""
    if kind != "session" or not isinstance(aggregate, LearningSession):
        return frozenset()
    names = {robot_sessions(aggregate.robot_id, open_only=False)}
    if aggregate.is_open:
        names.add(robot_sessions(aggregate.robot_id, open_only=True))
    if aggregate.status is SessionStatus.ACTIVE:
        names.add(ACTIVE_SESSIONS)
    return frozenset(names)


def _connection_lost(error: BaseException) -> bool:
    """The commit's outcome is unknown: the connection died while it was in flight."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False


class _ObservedSessions(SqlAlchemySessionRepository):
    """The session repository, telling the Unit of Work what its queries found."""

    _uow: ObservedUnitOfWork
    _found: list[LearningSession] | None = None

    def _many(self, query: Any, parameters: dict[str, Any] | None = None) -> list[LearningSession]:
        found = super()._many(query, parameters)
        self._found = found
        return found

    def _query(self, name: str, run: Any) -> list[LearningSession]:
        self._found = None
        result: list[LearningSession] = run()
        if self._found is None:
            raise RuntimeError(
                "the session repository's queries no longer load through _many, so the"
                " footprint cannot tell what the database returned: update"
                " humanoid_training/footprint.py"
            )
        # What the database returned; the Unit of Work's own unsaved sessions are its writes.
        self._uow.record(
            PredicateRead(name, {aggregate_key(self.kind, s.id): s.version for s in self._found})
        )
        return result

    def find_active_sessions(self) -> list[LearningSession]:
        return self._query(ACTIVE_SESSIONS, super().find_active_sessions)

    def find_sessions_by_robot(
        self, robot_id: str, *, open_only: bool = False, lock: bool = False
    ) -> list[LearningSession]:
        return self._query(
            robot_sessions(robot_id, open_only=open_only),
            lambda: super(_ObservedSessions, self).find_sessions_by_robot(
                robot_id, open_only=open_only, lock=lock
            ),
        )


class ObservedUnitOfWork(SqlAlchemyUnitOfWork):
    """A `SqlAlchemyUnitOfWork` that keeps the footprint of each of its transactions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions = _ObservedSessions(self)
        self.sessions = self._sessions
        self._ended: list[Footprint] = []
        self._reads: list[AggregateRead | PredicateRead] = []
        self._loaded: set[str] = set()

    # -- what uowstress reads ------------------------------------------------------------------

    def footprints(self) -> Sequence[Footprint]:
        """One footprint per transaction so far; the last is open if it has read something."""
        if self._reads:
            return [*self._ended, Footprint(tuple(self._reads))]
        return list(self._ended)

    # -- recording -----------------------------------------------------------------------------

    def record(self, read: AggregateRead | PredicateRead) -> None:
        self._reads.append(read)

    def _end(self, outcome: FootprintOutcome, writes: Sequence[AggregateWrite] = ()) -> None:
        if self._reads or writes:
            self._ended.append(Footprint(tuple(self._reads), tuple(writes), outcome))
        self._reads = []
        self._loaded = set()

    def track_loaded(self, kind: str, aggregate: Aggregate, snapshot: Any) -> None:
        super().track_loaded(kind, aggregate, snapshot)
        key = aggregate_key(kind, aggregate.id)
        if key not in self._loaded:
            self._loaded.add(key)
            self.record(AggregateRead(key, aggregate.version))

    def commit(self) -> None:
        before = {key: tracked.aggregate.version for key, tracked in self.tracked.items()}
        try:
            super().commit()
        except BaseException as error:
            self._end("unknown" if _connection_lost(error) else "aborted")
            raise
        # A version that moved is one this commit installed (new aggregates go from 0 to 1; a
        # save that failed and was swallowed keeps its version).
        writes = [
            AggregateWrite(
                aggregate_key(kind, aggregate_id),
                tracked.aggregate.version,
                predicates_matched(kind, tracked.aggregate),
            )
            for (kind, aggregate_id), tracked in self.tracked.items()
            if tracked.aggregate.version != before.get((kind, aggregate_id))
        ]
        self._end("committed", writes)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end("aborted")
