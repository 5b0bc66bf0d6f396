"""Fault injection on the commit path of a Unit of Work.

A fault is armed before a commit and fires at one point of it: before the flush, at the k-th
SQL statement of the commit, after the flush, just before the commit, at the commit itself, or
by killing the connection from outside at one of the hook points.

What needs the system's help, and what does not:

- Faults at a statement and at the commit itself need nothing from the system: they are caught
  with SQLAlchemy's events. A Unit of Work that never calls the hook gets them on its engine
  (`System.engine`), armed when its `commit()` starts, the statements counted from there.
- Faults before the flush, after the flush, before the commit, and kills (at any of those
  three points) fire only where the system's Unit of Work calls the hook (`FaultHook`,
  `fault_hook(point, connection)`) at that point: uowstress cannot tell where a flush ends on
  its own. A run that drew such faults for a Unit of Work that never called the hook there says
  so in a warning (`unreached_warning`).
- A Unit of Work that calls the hook at "before_flush" gets its statement and commit faults on
  the connection it hands over, the statements counted from that call (the flush). Once a run
  has seen it call the hook there, nothing more is armed on its engine: a listener on an Engine
  makes SQLAlchemy dispatch events around every statement of it from then on. Before that (a
  run's or a replay's first commit may be one with a fault), the fault is armed on the engine
  as for a Unit of Work that never calls the hook, and moved to the connection when the hook is
  called at "before_flush", its count started afresh: the same statement is hit as when it is
  armed there from the start, unless the Unit of Work runs statements in `commit()` before it
  calls the hook (those are counted until then).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from uowstress.errors import UowstressError
from uowstress.report import formatting as fmt

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
# The points the system's Unit of Work names by calling the hook: a fault at one of them (or a
# kill there) fires only if it does.
HOOK_POINTS = KILL_AT
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
            " statement of the commit where the fault fires)"
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
    statement: int = 1  # for "statement": fire at this statement of the commit (1-based)
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

    @property
    def hook_point(self) -> str | None:
        """The hook point this fault fires at (a kill's too); None for the points caught with
        SQLAlchemy's events, a statement and the commit."""
        if self.point == "kill":
            return self.kill_at
        return self.point if self.point in HOOK_POINTS else None

    def arm_on_engine(self, engine: Engine) -> None:
        """Arm a statement or commit fault on every connection of `engine`, for a Unit of Work
        not known to call the hook: called as its commit starts, the statements are counted
        from there. SQLAlchemy dispatches an engine's listeners to its connections, those
        already open too. Should the hook be called at "before_flush" after all, `hook` moves
        the fault to the connection it is given, as if it had never been armed here."""
        self._arm_events(engine)

    def hook(self, point: str, connection: Connection) -> None:
        """The FaultHook the system's Unit of Work calls at its named points."""
        if point == "before_flush":
            self._disarm(on_engine_only=True)
            self._arm_events(connection)
        if self.point == "kill" and point == self.kill_at:
            # Killed *under a transaction*: with none begun there is nothing to interrupt.
            if connection.in_transaction():
                self.fired = True
                kill_connection(connection)
        elif self.point == point:
            self.fired = True
            raise InjectedFault(f"injected fault at {point}")

    def _arm_events(self, target: Connection | Engine) -> None:
        if self.point == "statement":
            seen = [0]
            # Counted from the flush when the hook says where it starts, else from the commit.
            counted = "flush" if isinstance(target, Connection) else "the commit"

            def before_execute(*_: Any) -> None:
                seen[0] += 1
                if seen[0] == self.statement and not self.fired:
                    self.fired = True
                    raise InjectedFault(
                        f"injected fault at statement {self.statement} of {counted}"
                    )

            self._listen(target, "before_cursor_execute", before_execute)
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

            self._listen(target, "commit", on_commit)

    def _listen(self, target: Connection | Engine, name: str, fn: Any) -> None:
        event.listen(target, name, fn)
        self._listeners.append((target, name, fn))

    def disarm(self) -> None:
        self._disarm(on_engine_only=False)

    def _disarm(self, *, on_engine_only: bool) -> None:
        kept = []
        for target, name, fn in self._listeners:
            if on_engine_only and not isinstance(target, Engine):
                kept.append((target, name, fn))
            elif event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._listeners[:] = kept


class HookUse:
    """The points at which a system's Unit of Work has called its fault hook, over a run.

    Learnt from its commits (the executor hands the hook to every unit of work it opens, with
    a fault armed or not) and kept across the examples of a run, each of which has an executor
    of its own: once the Unit of Work is seen to call the hook at "before_flush", no fault is
    armed on its engine again (see `Fault.arm_on_engine`)."""

    def __init__(self) -> None:
        self.points: set[str] = set()

    @property
    def flushes(self) -> bool:
        """Whether the Unit of Work calls the hook at "before_flush"."""
        return "before_flush" in self.points


def unreached_warning(called: set[str], unreached: Mapping[str, int]) -> str | None:
    """What a run must say when faults it drew at hook points could not be injected because the
    Unit of Work never called the hook there; None when there is nothing to say.

    `called` holds the hook points the Unit of Work called in the run; `unreached` counts the
    faults that did not fire, by what they were ("before_commit", "kill at after_flush", ...)."""
    missed = {
        what: n
        for what, n in unreached.items()
        if n and what.rsplit(" ", 1)[-1] in HOOK_POINTS and what.rsplit(" ", 1)[-1] not in called
    }
    if not missed:
        return None
    total = sum(missed.values())
    drawn = ", ".join(f"{what}: {n}" for what, n in sorted(missed.items()))
    faults = fmt.counted(total, "fault")
    if not called:
        return (
            f"the Unit of Work never called fault_hook: {faults} drawn at"
            f" before_flush/after_flush/before_commit and kills were not injected ({drawn});"
            " call fault_hook(point, connection) at those points (see examples/README.md)"
        )
    points = sorted({what.rsplit(" ", 1)[-1] for what in missed})
    return (
        f"the Unit of Work never called fault_hook at {', '.join(points)}: {faults} drawn"
        f" there were not injected ({drawn}); call fault_hook(point, connection) at"
        f" {'that point' if len(points) == 1 else 'those points'} (see examples/README.md)"
    )


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
