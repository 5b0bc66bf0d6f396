"""Errors of the persistence layer, and the translation of driver errors into them.

Serialization failures, deadlocks and lock timeouts differ on every backend; callers see one
`RetryableConflict` type so that a single retry helper serves all three.
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal

from sqlalchemy import exc as sa_exc

ConflictReason = Literal["serialization", "deadlock", "lock_timeout", "busy"]


class PersistenceError(Exception):
    """Base of the errors the persistence layer raises on purpose."""


class ConcurrencyConflict(PersistenceError):
    """An aggregate changed since it was loaded: its version no longer matches."""

    def __init__(self, aggregate_type: str, aggregate_id: str, expected_version: int) -> None:
        super().__init__(
            f"{aggregate_type} {aggregate_id!r} was changed by another unit of work since it was"
            f" loaded at version {expected_version}; reload it and apply the change again"
        )
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version


class RetryableConflict(PersistenceError):
    """The database refused the transaction for a reason that a retry can overcome."""

    def __init__(self, reason: ConflictReason, detail: str) -> None:
        super().__init__(
            f"transaction aborted by the database ({reason}): {detail}; retry the whole unit of"
            " work (see humanoid_training.services.retrying)"
        )
        self.reason: ConflictReason = reason
        self.detail = detail


class DatabaseUnavailable(PersistenceError):
    """A database URL does not answer."""


class PayloadError(PersistenceError):
    """A JSON payload is not encodable, or exceeds the configured size or nesting depth."""


_PG_CODES: dict[str, ConflictReason] = {
    "40001": "serialization",
    "40P01": "deadlock",
    "55P03": "lock_timeout",
}
_MYSQL_CODES: dict[int, ConflictReason] = {
    1213: "deadlock",
    1205: "lock_timeout",
    # ER_CHECKREAD / snapshot isolation write conflicts on MariaDB 10.6+ (innodb_snapshot_isolation)
    1020: "serialization",
}
# SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes (BUSY_RECOVERY 261,
# BUSY_SNAPSHOT 517, BUSY_TIMEOUT 773, LOCKED_SHAREDCACHE 262).
_SQLITE_BUSY_CODES = {5, 6, 261, 262, 517, 773}


def conflict_reason(error: BaseException) -> ConflictReason | None:
    """The retryable reason behind a driver error, or None when it is not retryable."""
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    # PyMySQL first: it also sets `sqlstate`, and gives a MariaDB deadlock PostgreSQL's
    # serialization code 40001.
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_CODES:
        return _MYSQL_CODES[args[0]]
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg 3
    if isinstance(sqlstate, str) and sqlstate in _PG_CODES:
        return _PG_CODES[sqlstate]
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code in _SQLITE_BUSY_CODES:
        return "busy"
    text = str(orig).lower()
    if "database is locked" in text or "database table is locked" in text:
        return "busy"
    return None


class _TranslatedErrors:
    """The context manager `translated_errors` returns; a class rather than a generator
    function, as it wraps every statement (a generator-based one costs several times more)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if isinstance(error, sa_exc.DBAPIError):
            reason = conflict_reason(error)
            if reason is not None:
                raise RetryableConflict(reason, str(error.orig).strip().splitlines()[0]) from error
        return False


_TRANSLATED_ERRORS = _TranslatedErrors()


def translated_errors() -> _TranslatedErrors:
    """Turn retryable driver errors into `RetryableConflict`; let every other error through."""
    return _TRANSLATED_ERRORS
