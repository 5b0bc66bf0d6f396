"""Fault injection on the commit path of a Unit of Work.

A fault is armed before a commit and fires at one point of it: before the flush, at the k-th
SQL statement of the flush, after the flush, just before the commit, at the commit itself, or
by killing the connection from outside at one of the hook points. The system's Unit of Work
calls the hook (`FaultHook`) at its named points; statements and the commit are caught with
SQLAlchemy's connection events, so they need nothing from the system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.pool import NullPool

from uowstress.errors import UowstressError

FaultPoint = Literal["before_flush", "statement", "after_flush", "before_commit", "commit", "kill"]
FAULT_POINTS: tuple[FaultPoint, ...] = (
    "before_flush",
    "statement",
    "after_flush",
    "before_commit",
    "commit",
    "kill",
)
KILL_AT = ("before_flush", "after_flush", "before_commit")
_SPEC_KEYS = ("point", "statement", "kill_at")


def spec_problem(data: object) -> str | None:
    """What is wrong with a fault spec read from a file (as `Fault.to_json` writes it), or
    None when it is sound: a bad spec would otherwise crash a replay or quietly inject a
    different fault."""
    if not isinstance(data, dict):
        return f'a fault must be an object like {{"point": "commit"}}, not {data!r}'
    unknown = sorted(str(key) for key in data if key not in _SPEC_KEYS)
    if unknown:
        return (
            f"a fault has unknown field(s) {', '.join(unknown)}; it takes only"
            f" {', '.join(_SPEC_KEYS)}"
        )
    if "point" not in data:
        return f"a fault needs 'point' (one of {', '.join(FAULT_POINTS)})"
    point = data["point"]
    if point not in FAULT_POINTS:
        return f"a fault's 'point' is {point!r}; it must be one of {', '.join(FAULT_POINTS)}"
    # Checked whenever present, not only for their own point: `to_json` writes both always.
    statement = data.get("statement", 1)
    # bool is an int subclass, and True would mean statement 1 without saying so.
    if isinstance(statement, bool) or not isinstance(statement, int) or statement < 1:
        return (
            f"a fault's 'statement' is {statement!r}; it must be a whole number from 1 (the"
            " statement of the flush where the fault fires)"
        )
    kill_at = data.get("kill_at", "before_commit")
    if kill_at not in KILL_AT:
        return f"a fault's 'kill_at' is {kill_at!r}; it must be one of {', '.join(KILL_AT)}"
    return None


class InjectedFault(UowstressError):
    """Raised by uowstress inside a Unit of Work to simulate a failure; never a finding."""


@dataclass
class Fault:
    """One armed fault; `fired` tells whether it happened (a commit may end before the k-th
    statement, then nothing fired and the commit must succeed)."""

    point: FaultPoint
    statement: int = 1  # for "statement": fire at this statement of the flush (1-based)
    kill_at: str = "before_commit"  # for "kill": the hook point where the connection dies
    fired: bool = False
    _listeners: list[tuple[Any, str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"point": self.point, "statement": self.statement, "kill_at": self.kill_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Raises UowstressError, naming the problem, for a spec `spec_problem` refuses."""
        problem = spec_problem(data)
        if problem is not None:
            raise UowstressError(problem)
        return cls(
            point=data["point"],
            statement=data.get("statement", 1),
            kill_at=data.get("kill_at", "before_commit"),
        )

    def hook(self, point: str, connection: Connection) -> None:
        """The FaultHook the system's Unit of Work calls at its named points."""
        if point == "before_flush":
            self._arm_events(connection)
        if self.point == "kill" and point == self.kill_at:
            # Killed *under a transaction*: with none begun there is nothing to interrupt.
            if connection.in_transaction():
                self.fired = True
                kill_connection(connection)
        elif self.point == point:
            self.fired = True
            raise InjectedFault(f"injected fault at {point}")

    def _arm_events(self, connection: Connection) -> None:
        if self.point == "statement":
            seen = [0]

            def before_execute(*_: Any) -> None:
                seen[0] += 1
                if seen[0] == self.statement and not self.fired:
                    self.fired = True
                    raise InjectedFault(f"injected fault at statement {self.statement} of flush")

            self._listen(connection, "before_cursor_execute", before_execute)
        elif self.point == "commit":

            def on_commit(conn: Connection) -> None:
                if not self.fired:
                    self.fired = True
                    # As when the database refuses a COMMIT (a deferred constraint, a
                    # serialization failure found at commit). The servers end the transaction
                    # then; SQLite keeps it open, its locks held, until a ROLLBACK, which the
                    # system under test must send.
                    if conn.dialect.name != "sqlite":
                        conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
                    raise InjectedFault("injected fault at commit: the database refused it")

            self._listen(connection, "commit", on_commit)

    def _listen(self, connection: Connection, name: str, fn: Any) -> None:
        event.listen(connection, name, fn)
        self._listeners.append((connection, name, fn))

    def disarm(self) -> None:
        for target, name, fn in self._listeners:
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._listeners.clear()


def kill_connection(connection: Connection) -> None:
    """Kill the database session behind `connection` from outside, as a crash or a network
    failure would: the server aborts its transaction."""
    backend = connection.dialect.name
    if backend == "sqlite":
        # No server: closing the driver connection under SQLAlchemy is the nearest thing.
        connection.connection.dbapi_connection.close()  # type: ignore[union-attr]
        return
    if backend == "postgresql":
        pid = connection.exec_driver_sql("select pg_backend_pid()").scalar()
        statement = f"select pg_terminate_backend({int(pid)})"  # type: ignore[arg-type]
    elif backend in ("mysql", "mariadb"):
        ident = connection.exec_driver_sql("select connection_id()").scalar()
        statement = f"kill {int(ident)}"  # type: ignore[arg-type]
    else:
        raise UowstressError(f"cannot kill a connection on backend {backend!r}")
    # A connection of its own, not from the system's pool, so the pool's counts stay true.
    killer = create_engine(connection.engine.url, poolclass=NullPool)
    try:
        with killer.connect() as admin:
            admin.exec_driver_sql(statement)
            admin.commit()
    finally:
        killer.dispose()
