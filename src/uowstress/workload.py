"""The Workload protocol: what the performance suites ask of a target, in neutral words.

The state machines explore a target through its operations (`uowstress.target`); the
performance suites load it with many transactions of a few kinds instead, and need to name
aggregates and count what was committed. A target that offers `workload` (an attribute holding
an object of this protocol) can be put under load by every suite; without it the suites are
skipped for that target, with that reason.

Every method that takes a ``uow`` runs inside a Unit of Work the suite has opened (``with
uow:``) and commits afterwards; the method itself neither opens nor commits. Keys are short
strings chosen by the suite (``k1``, ``k2``, ...); ``n`` is unique within a run, so a method can
make unique ids and values from it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from sqlalchemy import exc as sa_exc

from uowstress.target import JSON, System

__all__ = [
    "ErrorKind",
    "Workload",
    "classify_error",
    "refused_by_database",
    "refused_cleanly",
    "workload_of",
]

# How an attempt that did not commit ended: a conflict (optimistic version check, serialization
# failure, busy database: a retry may succeed), a deadlock the database broke, or an error.
ErrorKind = Literal["conflict", "deadlock", "error"]


@runtime_checkable
class Workload(Protocol):
    """The performance vocabulary of a target."""

    def create(self, uow: Any, key: str) -> None:
        """Add a new aggregate named ``key`` (with whatever it needs to take changes)."""
        ...

    def change(self, uow: Any, key: str, n: int) -> None:
        """Make one counted change to aggregate ``key``: one more thing that ``tally`` counts
        once committed. Two units of work changing one aggregate at the same time must not
        both commit on the same version: one conflicts or waits for the other."""
        ...

    def read(self, uow: Any, key: str) -> JSON:
        """Load aggregate ``key`` whole and return something of it."""
        ...

    def tally(self, system: System) -> dict[str, int]:
        """Counted changes committed per key, read from the database."""
        ...


# Optional methods, looked up with getattr (a target offers what its domain has):
#   cycle(uow, key, n) -> None: one step of a longer business process that touches several
#       aggregates in one unit of work and makes one counted change to `key` (the reference
#       system completes an episode of the robot's session, applies its assessment and
#       advances the curriculum).
#   store(uow, key, document: JSON) -> None / load(uow, key) -> JSON: keep a free-form JSON
#       document with aggregate `key` and give it back (serialization scenarios).
#   classify(error) -> "conflict" | "deadlock" | None: the target's own conflict errors (e.g.
#       a version mismatch); driver-level conflicts and deadlocks are recognised without it.


def workload_of(target: object) -> Workload | None:
    workload = getattr(target, "workload", None)
    return workload if isinstance(workload, Workload) else None


# Driver error codes, kept by the tester itself: it must not depend on a system under test.
_PG_DEADLOCK = {"40P01"}
_PG_CONFLICT = {"40001", "55P03"}  # serialization failure, lock not available
_MYSQL_DEADLOCK = {1213}
_MYSQL_CONFLICT = {1205, 1020}  # lock wait timeout, record changed (snapshot isolation)
_SQLITE_BUSY = {5, 6, 261, 262, 517, 773}


def _driver_kind(error: BaseException) -> ErrorKind | None:
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    args = getattr(orig, "args", ())
    # PyMySQL first: it also sets a sqlstate, and gives a deadlock PostgreSQL's 40001.
    if args and isinstance(args[0], int):
        if args[0] in _MYSQL_DEADLOCK:
            return "deadlock"
        if args[0] in _MYSQL_CONFLICT:
            return "conflict"
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _PG_DEADLOCK:
        return "deadlock"
    if sqlstate in _PG_CONFLICT:
        return "conflict"
    if getattr(orig, "sqlite_errorcode", None) in _SQLITE_BUSY:
        return "conflict"
    if "database is locked" in str(orig).lower():
        return "conflict"
    return None


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_error(error: BaseException, workload: object = None) -> ErrorKind:
    """How an attempt failed: the target's own classification first, then driver errors
    anywhere in the chain of causes (targets often wrap them), else an error."""
    classify = getattr(workload, "classify", None)
    if classify is not None:
        kind = classify(error)
        if kind in ("conflict", "deadlock"):
            return kind  # type: ignore[no-any-return]
    for link in _chain(error):
        kind = _driver_kind(link)
        if kind is not None:
            return kind
    return "error"


def refused_by_database(error: BaseException) -> bool:
    """Whether a driver's conflict or deadlock lies in the chain of causes of `error`: the
    database refused the transaction. A conflict without one was raised by the system itself
    (an optimistic version check, usually)."""
    return any(_driver_kind(link) is not None for link in _chain(error))


# Where database errors come from: SQLAlchemy and the drivers (a target may wrap their errors).
_DATABASE_PACKAGES = frozenset(
    {"sqlalchemy", "sqlite3", "psycopg", "psycopg2", "pymysql", "MySQLdb"}
)


def refused_cleanly(error: BaseException, workload: object = None) -> bool:
    """Whether a call that raised ``error`` was refused (the system said no: not found, a
    broken rule, a conflict) rather than broken (a bad statement, a missing column, a bug).

    A conflict or deadlock (see `classify_error`) is a refusal: the database ran the statement
    and would not go on. So is SQLAlchemy's NoResultFound: the database answered, with no row.
    Otherwise a refusal is an exception of the target's own (e.g. a domain NotFound) with no
    database error anywhere in its chain of causes. Assumed broken: a database error however
    wrapped (a target that turns one into its own refusal on a read is taken as failing), and
    one of Python's own exception types raised as is (KeyError, TypeError, ValueError, ...:
    what a bug in the target's code raises, not what it refuses with on purpose)."""
    if classify_error(error, workload) != "error":
        return True
    if isinstance(error, sa_exc.NoResultFound):
        return True
    if type(error).__module__ == "builtins":
        return False
    return not any(
        type(link).__module__.partition(".")[0] in _DATABASE_PACKAGES for link in _chain(error)
    )
