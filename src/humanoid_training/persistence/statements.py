"""The repositories' statements: built once, compiled once per dialect, run as driver SQL.

Building a SQLAlchemy construct and computing its cache key costs more than running it on
SQLite, and so does SQLAlchemy's per-call work of looking up the compiled form and processing
each parameter. A `Prepared` statement is compiled once per dialect; each call hands its SQL
text and the parameters, in the driver's style, to `Connection.exec_driver_sql`. Statements
still pass through the Connection: its events (fault injection, statement timing), error
wrapping and transaction handling are those of any other statement.

The result rows come back as the driver returns them: for the column types read here
(strings, integers, doubles) the three drivers already return Python values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, CursorResult, bindparam, func, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from humanoid_training.persistence import tables as t

Parameters = Mapping[str, Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Positional drivers (sqlite3's "?"): the parameter names in placeholder order. Named
    # drivers (psycopg's and PyMySQL's "%(name)s"): None, the mapping is passed as it is.
    order: tuple[str, ...] | None
    # Conversions SQLAlchemy would apply before binding (e.g. int to float for a SQLite
    # double); empty for most statements.
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]


class Prepared:
    """One statement, compiled on first use with each dialect (see the module docstring).

    `keys` names the columns an INSERT or UPDATE sets, when the statement leaves them to the
    parameters."""

    def __init__(self, statement: ClauseElement, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._compiled: WeakKeyDictionary[Dialect, _Compiled] = WeakKeyDictionary()
        # The last dialect and its form: a process mostly runs one engine, and looking up a
        # WeakKeyDictionary makes a weak reference each time. (That one dialect is kept alive;
        # the others stay weakly held.)
        self._last: tuple[Dialect, _Compiled] | None = None

    def _for(self, dialect: Dialect) -> _Compiled:
        last = self._last
        if last is not None and last[0] is dialect:
            return last[1]
        compiled = self._compiled.get(dialect)
        if compiled is None:
            c = cast(SQLCompiler, self.statement.compile(dialect=dialect, column_keys=self.keys))
            names = list(c.positiontup or ()) if dialect.positional else list(c.binds)
            processors = []
            for name in dict.fromkeys(names):
                process = c.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    processors.append((name, process))
            compiled = _Compiled(
                c.string, tuple(names) if dialect.positional else None, tuple(processors)
            )
            self._compiled[dialect] = compiled
        self._last = (dialect, compiled)
        return compiled

    def _bound(self, compiled: _Compiled, parameters: Parameters) -> Any:
        if compiled.processors:
            parameters = dict(parameters)
            for name, process in compiled.processors:
                parameters[name] = process(parameters[name])
        if compiled.order is None:
            return parameters
        return tuple([parameters[name] for name in compiled.order])

    def run(
        self, connection: Connection, parameters: Parameters | Sequence[Parameters]
    ) -> CursorResult[Any]:
        """Execute with one set of parameters, or with each of a list (executemany)."""
        compiled = self._for(connection.dialect)
        if isinstance(parameters, Mapping):
            bound = self._bound(compiled, parameters)
        elif len(parameters) == 1:
            # A one-element executemany costs more than a plain execute, on every driver.
            bound = self._bound(compiled, parameters[0])
        else:
            bound = [self._bound(compiled, p) for p in parameters]
        return connection.exec_driver_sql(compiled.sql, bound)


def _columns(table: Any, *skip: str) -> list[str]:
    return [c.key for c in table.c if c.key not in skip]


def _guarded(table: Any, check_version: bool, keys: Sequence[str]) -> Prepared:
    """UPDATE of an aggregate root by id, setting `keys`, with or without the version check."""
    statement = update(table).where(table.c.id == bindparam("b_id"))
    if check_version:
        statement = statement.where(table.c.version == bindparam("b_version"))
    return Prepared(statement, keys)


# -- robots ---------------------------------------------------------------------------------

# How many assessments the robot's history holds: its stored entries are read only when used
# (see humanoid_training.domain.assessments). An index range count, no rows to fetch.
_COUNT_HISTORY = (
    select(func.count())
    .select_from(t.assessments)
    .where(t.assessments.c.robot_id == bindparam("b_id"))
)
_HISTORY_LENGTH = _COUNT_HISTORY.scalar_subquery().label("history_length")
# The root row with its skill rows and its history's length in one round trip (one row per
# skill; NULLs when none). The length is read in the same statement as the version, so the two
# agree at any isolation level.
ROBOT_WITH_SKILLS = Prepared(
    select(t.robots, t.robot_skills.c.skill, t.robot_skills.c.score, _HISTORY_LENGTH)
    .select_from(t.robots.outerjoin(t.robot_skills, t.robot_skills.c.robot_id == t.robots.c.id))
    .where(t.robots.c.id == bindparam("b_id"))
)
# Locking reads take the root row alone: MariaDB has no FOR UPDATE OF and would lock the
# joined skill rows too. The robot's parts are then read with ROBOT_WITH_SKILLS.
ROBOT_FOR_UPDATE = Prepared(
    select(t.robots).where(t.robots.c.id == bindparam("b_id")).with_for_update()
)
# The first `b_length` entries of a robot's history: those it had when it was loaded (the
# history is append-only, so they are the same whenever they are read).
ROBOT_HISTORY = Prepared(
    select(
        t.assessments.c.id,
        t.assessments.c.skill,
        t.assessments.c.score,
        t.assessments.c.confidence,
        t.assessments.c.evidence,
        t.assessments.c.assessed_at,
    )
    .where(t.assessments.c.robot_id == bindparam("b_id"))
    .where(t.assessments.c.seq < bindparam("b_length"))
    .order_by(t.assessments.c.seq, t.assessments.c.id)
)
# Whether those entries hold an assessment id (a primary key lookup).
HISTORY_HOLDS = Prepared(
    select(t.assessments.c.id)
    .where(t.assessments.c.id == bindparam("b_assessment_id"))
    .where(t.assessments.c.robot_id == bindparam("b_id"))
    .where(t.assessments.c.seq < bindparam("b_length"))
)
INSERT_ROBOT = Prepared(insert(t.robots), _columns(t.robots))
INSERT_SKILLS = Prepared(insert(t.robot_skills), _columns(t.robot_skills))
UPDATE_SKILL_SCORE = Prepared(
    update(t.robot_skills)
    .where(t.robot_skills.c.robot_id == bindparam("b_robot_id"))
    .where(t.robot_skills.c.skill == bindparam("b_skill"))
    .values(score=bindparam("b_score"))
)
INSERT_ASSESSMENTS = Prepared(insert(t.assessments), _columns(t.assessments))
ROBOT_ROOT = ("name", "robot_type", "configuration")

# -- learning sessions ----------------------------------------------------------------------

SESSION = Prepared(select(t.sessions).where(t.sessions.c.id == bindparam("b_id")))
SESSION_FOR_UPDATE = Prepared(
    select(t.sessions).where(t.sessions.c.id == bindparam("b_id")).with_for_update()
)
SESSION_EPISODES = Prepared(
    select(t.episodes)
    .where(t.episodes.c.session_id == bindparam("b_id"))
    .order_by(t.episodes.c.number)
)


def _sessions_by_robot(open_only: bool, lock: bool) -> Prepared:
    statement = select(t.sessions).where(t.sessions.c.robot_id == bindparam("b_robot_id"))
    if open_only:
        # Two plain parameters: a list given to in_() would be an "expanding" parameter,
        # rendered only at execution time.
        statement = statement.where(
            t.sessions.c.status.in_([bindparam("b_status_1"), bindparam("b_status_2")])
        )
    statement = statement.order_by(t.sessions.c.id)
    return Prepared(statement.with_for_update() if lock else statement)


# A robot's sessions, by (open sessions only, locked); open ones take the two open statuses.
SESSIONS_BY_ROBOT = {
    (open_only, lock): _sessions_by_robot(open_only, lock)
    for open_only in (False, True)
    for lock in (False, True)
}
INSERT_SESSION = Prepared(insert(t.sessions), _columns(t.sessions))
INSERT_EPISODES = Prepared(insert(t.episodes), _columns(t.episodes))
UPDATE_EPISODE = Prepared(
    update(t.episodes).where(t.episodes.c.id == bindparam("b_id")),
    _columns(t.episodes, "id", "session_id"),
)
SESSION_ROOT = (
    "robot_id",
    "plan_id",
    "status",
    "episodes_completed",
    "episodes_successful",
    "created_at",
)

# -- curriculum plans -----------------------------------------------------------------------

PLAN = Prepared(select(t.plans).where(t.plans.c.id == bindparam("b_id")))
PLAN_FOR_UPDATE = Prepared(
    select(t.plans).where(t.plans.c.id == bindparam("b_id")).with_for_update()
)
PLAN_STAGES = Prepared(
    select(t.stages).where(t.stages.c.plan_id == bindparam("b_id")).order_by(t.stages.c.position)
)
INSERT_PLAN = Prepared(insert(t.plans), _columns(t.plans))
INSERT_STAGES = Prepared(insert(t.stages), _columns(t.stages))
UPDATE_STAGE = Prepared(
    update(t.stages)
    .where(t.stages.c.plan_id == bindparam("b_plan_id"))
    .where(t.stages.c.position == bindparam("b_position")),
    _columns(t.stages, "plan_id", "position"),
)
PLAN_ROOT = ("robot_id", "name", "status", "current_stage_index")

# -- every aggregate root -------------------------------------------------------------------

_ROOTS = {
    "robot": (t.robots, ROBOT_ROOT),
    "session": (t.sessions, SESSION_ROOT),
    "plan": (t.plans, PLAN_ROOT),
}

# UPDATE of a root row by id: [kind, version checked, root fields changed too].
GUARDED_UPDATE: dict[tuple[str, bool, bool], Prepared] = {
    (kind, check, with_root): _guarded(
        table, check, ("version", *root) if with_root else ("version",)
    )
    for kind, (table, root) in _ROOTS.items()
    for check in (True, False)
    for with_root in (True, False)
}

# inline(): no RETURNING of the generated id, which nothing reads.
INSERT_EVENTS = Prepared(insert(t.outbox).inline(), _columns(t.outbox, "id"))
