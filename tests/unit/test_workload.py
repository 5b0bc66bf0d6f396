"""How uowstress tells a conflict from a deadlock from an error, and a clean refusal from a
broken call, on real driver exceptions."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from sqlalchemy import exc as sa_exc

from uowstress.load import Job, error_key, run_load
from uowstress.workload import classify_error, refused_by_database, refused_cleanly


def _wrapped(orig: BaseException) -> sa_exc.DBAPIError:
    return sa_exc.OperationalError("UPDATE t SET v = 1", {}, orig)


class DomainConflict(Exception):
    """A target's own error that carries the driver error as its cause."""


def _caused_by(cause: BaseException) -> DomainConflict:
    try:
        raise DomainConflict("could not commit") from cause
    except DomainConflict as error:
        return error


@pytest.mark.parametrize(
    ("orig", "kind"),
    [
        (psycopg.errors.DeadlockDetected("deadlock detected"), "deadlock"),
        (psycopg.errors.SerializationFailure("could not serialize access"), "conflict"),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), "conflict"),
        (psycopg.errors.UniqueViolation("duplicate key"), "error"),
        (pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"), "deadlock"),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), "conflict"),
        (pymysql.err.IntegrityError(1062, "Duplicate entry"), "error"),
    ],
)
def test_driver_errors_are_classified_directly_and_through_causes(
    orig: BaseException, kind: str
) -> None:
    assert classify_error(_wrapped(orig)) == kind
    assert classify_error(_caused_by(_wrapped(orig))) == kind


def test_a_busy_sqlite_database_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (v INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("BEGIN IMMEDIATE")
        assert classify_error(_wrapped(caught.value)) == "conflict"
    finally:
        holder.rollback()
        holder.close()
        other.close()


def test_the_workloads_own_classification_comes_first() -> None:
    class Workload:
        def classify(self, error: BaseException) -> str | None:
            return "conflict" if isinstance(error, DomainConflict) else None

    assert classify_error(DomainConflict("version mismatch"), Workload()) == "conflict"
    assert classify_error(ValueError("bad"), Workload()) == "error"
    # A workload that does not know the error leaves the driver's answer.
    deadlock = _caused_by(_wrapped(psycopg.errors.DeadlockDetected("deadlock")))
    assert classify_error(deadlock, object()) == "deadlock"


def test_a_conflict_is_the_databases_refusal_only_with_a_driver_error_behind_it() -> None:
    assert refused_by_database(_caused_by(_wrapped(psycopg.errors.SerializationFailure("x"))))
    assert refused_by_database(_wrapped(pymysql.err.OperationalError(1205, "Lock wait")))
    # A version check of the system's own: nothing from the database behind it.
    assert not refused_by_database(DomainConflict("version mismatch"))
    assert not refused_by_database(_caused_by(ValueError("not a driver's")))


class NotFound(Exception):
    """A target's own refusal."""


def _translated(cause: BaseException, error: Exception) -> Exception:
    try:
        raise error from cause
    except Exception as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (NotFound("no robot 'missing'"), True),
        # Translated from a lookup: still the target's own refusal.
        (_translated(KeyError("missing"), NotFound("no robot 'missing'")), True),
        (sa_exc.NoResultFound("No row was found when one was required"), True),
        (_wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")), True),
        # A bad statement, raw or wrapped in the target's own error.
        (_wrapped(psycopg.errors.UndefinedColumn('column "nope" does not exist')), False),
        (_caused_by(_wrapped(pymysql.err.ProgrammingError(1054, "Unknown column"))), False),
        (_translated(sqlite3.OperationalError("no such column: nope"), NotFound("?")), False),
        # Python's own errors: a bug in the target, not a refusal.
        (KeyError("robot_id"), False),
        (TypeError("'NoneType' object is not subscriptable"), False),
    ],
)
def test_a_clean_refusal_is_told_from_a_broken_call(error: Exception, refused: bool) -> None:
    assert refused_cleanly(error) is refused


def test_the_workloads_conflicts_are_refusals() -> None:
    class Workload:
        def classify(self, error: BaseException) -> str | None:
            return "conflict" if isinstance(error, TypeError) else None

    assert refused_cleanly(TypeError("version mismatch"), Workload())
    assert not refused_cleanly(TypeError("version mismatch"))


def test_a_long_error_message_is_cut_between_words_and_marked() -> None:
    message = "the payload is too large: " + "word " * 100
    key = error_key("error", ValueError(message))
    assert key.startswith("error: ValueError: the payload is too large: word")
    assert key.endswith(" word …") and len(key) < 300
    assert error_key("error", ValueError("short")) == "error: ValueError: short"


class _Work:
    """A unit of work that does nothing, for driving the load's counting."""

    def __enter__(self) -> _Work:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def commit(self) -> None:
        pass


class _System:
    def unit_of_work(self) -> _Work:
        return _Work()


def test_the_load_counts_which_conflicts_the_system_raised_itself() -> None:
    class Workload:
        def classify(self, error: BaseException) -> str | None:
            return "conflict" if isinstance(error, DomainConflict) else None

    # Each job fails once and then commits: with a version check of its own, with the
    # database's lock timeout behind the system's error, and with the driver's error itself.
    failures: list[BaseException | None] = [
        DomainConflict("version mismatch"),
        _caused_by(_wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout"))),
        _wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
    ]

    def job(n: int) -> Job:
        def work(uow: Any) -> None:
            error, failures[n] = failures[n], None
            if error is not None:
                raise error

        return Job(f"job {n}", work)

    def stale(uow: Any) -> None:
        raise DomainConflict("version mismatch, every time")

    jobs = [job(0), job(1), job(2), Job("stale", stale)]
    load = run_load(_System(), Workload(), [jobs], attempts=2, backoff_s=0)
    assert load.attempts.conflicts == 5
    assert load.attempts.system_conflicts == 3
    # A transaction counts as its last attempt ended: the stale one, a conflict of the system's.
    assert load.transactions.committed == 3
    assert load.transactions.conflicts == 1 and load.transactions.system_conflicts == 1
