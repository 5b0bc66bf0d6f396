"""Engine factory of the reference system: one place that knows the quirks of each backend.

SQLite is opened in WAL mode with explicit BEGIN control, so that a transaction that starts
with a read is a real SQLite transaction (the sqlite3 driver's legacy mode would run that read
outside any transaction). PostgreSQL goes through psycopg 3 and MariaDB/MySQL through PyMySQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, quote_plus
from weakref import WeakSet

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool

from humanoid_training.persistence.errors import DatabaseUnavailable

Backend = Literal["sqlite", "postgresql", "mysql"]

# Every spelling a user may write, mapped to the backend and the driver this system ships with.
_DRIVERS: dict[str, tuple[Backend, str]] = {
    "sqlite": ("sqlite", "sqlite"),
    "sqlite+pysqlite": ("sqlite", "sqlite+pysqlite"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgresql+psycopg": ("postgresql", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mysql+pymysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mysql+pymysql"),
    "mariadb+pymysql": ("mysql", "mysql+pymysql"),
}
_ACCEPTED = "sqlite://, postgresql:// (psycopg 3) or mysql:// / mariadb:// (PyMySQL)"

_ISOLATION_LEVELS: dict[Backend, tuple[str, ...]] = {
    # SQLite offers one behaviour: writers take turns on one lock, and a transaction writes
    # only if its snapshot is the latest commit, so each SQLite transaction is serializable.
    # A unit of work that writes on a DEFERRED engine is two transactions, though (see
    # begin_writing): it is serializable as far as its version checks reach.
    "sqlite": ("SERIALIZABLE",),
    # PostgreSQL accepts READ UNCOMMITTED and runs it as READ COMMITTED.
    "postgresql": ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"),
    "mysql": ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"),
}


@dataclass(frozen=True)
class EngineOptions:
    """How an engine connects; the defaults favour durability and correctness."""

    isolation_level: str | None = None  # backend default when None
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    sqlite_busy_timeout_ms: int = 5000  # 0 = fail immediately with SQLITE_BUSY
    sqlite_begin: Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] = "DEFERRED"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 30.0
    connect_timeout_s: int = 5


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    try:
        return make_url(url)
    except sa_exc.ArgumentError:
        # The text itself is not echoed: it may hold a password.
        raise ValueError(
            f"not a database URL; write it as {_ACCEPTED}, e.g. postgresql://user@host:5432/dbname"
        ) from None


def normalize_url(url: str | URL) -> URL:
    """The URL with the driver this system uses for its backend made explicit."""
    parsed = _parse(url)
    entry = _DRIVERS.get(parsed.drivername.lower())
    if entry is None:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; use {_ACCEPTED}")
    return parsed.set(drivername=entry[1])


def backend_of(url_or_engine: str | URL | Engine) -> Backend:
    """Which of the three supported backends a URL or engine talks to."""
    url = url_or_engine.url if isinstance(url_or_engine, Engine) else url_or_engine
    return _DRIVERS[normalize_url(url).drivername][0]


# Query parameters that carry a secret (libpq and the MySQL drivers accept these in the URL).
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "sslpassword"})


def redacted(url: str | URL) -> str:
    """The URL as text with its password (and any secret of its query string) shown as ***,
    safe for messages and logs."""
    parsed = _parse(url)
    hidden = {key: "***" for key in parsed.query if key.lower() in _SECRET_QUERY_KEYS}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")  # not percent-encoded in the query string


def _isolation_level(backend: Backend, level: str | None) -> str | None:
    if level is None:
        return None
    canonical = " ".join(level.replace("_", " ").upper().split())
    accepted = _ISOLATION_LEVELS[backend]
    if canonical not in accepted:
        raise ValueError(
            f"isolation level {level!r} is not available on {backend}; use one of"
            f" {', '.join(accepted)} (or leave it unset for the backend default)"
        )
    return canonical


def _sqlite_path(url: URL) -> str:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise ValueError(
            f"SQLite URL {redacted(url)} names an in-memory database; every unit of work uses"
            " its own connection and would see its own empty database. Use a file, e.g."
            " sqlite:///lab.db"
        )
    return database


def make_engine(url: str | URL, options: EngineOptions = EngineOptions()) -> Engine:
    """An engine for `url` configured per `options`; raises ValueError for unusable settings."""
    normalized = normalize_url(url)
    backend = _DRIVERS[normalized.drivername][0]
    isolation = _isolation_level(backend, options.isolation_level)
    pool_args: dict[str, Any] = {
        "poolclass": QueuePool,
        "pool_size": options.pool_size,
        "max_overflow": options.max_overflow,
        "pool_timeout": options.pool_timeout_s,
    }
    if backend == "sqlite":
        _sqlite_path(normalized)
        # Both end up in SQL text, so only the documented words are let through.
        if options.sqlite_synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"sqlite_synchronous {options.sqlite_synchronous!r} is not one of OFF, NORMAL,"
                " FULL, EXTRA; use FULL unless you accept losing the last commits on power loss"
            )
        if options.sqlite_begin not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(
                f"sqlite_begin {options.sqlite_begin!r} is not one of DEFERRED, IMMEDIATE,"
                " EXCLUSIVE; use DEFERRED for the SQLite default"
            )
        if options.sqlite_busy_timeout_ms < 0:
            raise ValueError(
                f"sqlite_busy_timeout_ms is {options.sqlite_busy_timeout_ms}; use 0 (fail at"
                " once when the database is locked) or a positive number of milliseconds"
            )
        # SERIALIZABLE is SQLite's only behaviour, so it is not passed on: SQLAlchemy would
        # reset the driver's transaction mode when applying it.
        engine = create_engine(
            normalized,
            connect_args={
                # The pool hands a connection to different threads, never to two at once.
                "check_same_thread": False,
                "timeout": options.sqlite_busy_timeout_ms / 1000,
            },
            **pool_args,
        )
        _install_sqlite_hooks(engine, options)
        return engine
    extra: dict[str, Any] = {}
    if isolation is not None:
        extra["isolation_level"] = isolation
    engine = create_engine(
        normalized,
        connect_args={"connect_timeout": options.connect_timeout_s},
        **pool_args,
        **extra,
    )
    if isolation == "READ UNCOMMITTED":
        _DIRTY_READS.add(engine)
    return engine


# The engines made here at READ UNCOMMITTED (see reads_uncommitted).
_DIRTY_READS: WeakSet[Engine] = WeakSet()


def reads_uncommitted(engine: Engine) -> bool:
    """Whether `engine` was made here at READ UNCOMMITTED: what its units of work read may
    still be rolled back."""
    return engine in _DIRTY_READS


def _install_sqlite_hooks(engine: Engine, options: EngineOptions) -> None:
    busy_ms = int(options.sqlite_busy_timeout_ms)
    synchronous = options.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first, so that switching to WAL waits for a concurrent opener.
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    # Set on this engine's dialect rather than through a "begin" event: any connection-event
    # listener makes SQLAlchemy dispatch events around every statement of every connection,
    # which costs more than the statements themselves on SQLite. A failing BEGIN is still
    # wrapped as a DBAPIError by SQLAlchemy.
    engine.dialect.do_begin = _SqliteBegin(options.sqlite_begin)  # type: ignore[method-assign,assignment]


# How a unit of work's write phase begins on SQLite (see begin_writing).
WRITE_BEGIN = "BEGIN IMMEDIATE"
# Key of a pool connection's `info`: set while begin_writing begins the write phase, so that
# the dialect's BEGIN is WRITE_BEGIN.
_WRITE_PHASE = "humanoid_training.write_phase"


class _SqliteBegin:
    """The `do_begin` of a SQLite engine made by make_engine; it also tells begin_writing
    whether the engine begins its transactions DEFERRED."""

    __slots__ = ("begin", "deferred")

    def __init__(self, mode: str) -> None:
        self.begin = f"BEGIN {mode}"
        self.deferred = mode == "DEFERRED"

    def statement(self, connection: PoolProxiedConnection) -> str | None:
        """The BEGIN that `connection` (the pool's proxy of a driver connection) is sent now,
        or None when the driver is in autocommit mode."""
        driver: Any = connection.driver_connection  # sqlite3.Connection
        # SQLAlchemy's AUTOCOMMIT sets the driver's isolation_level to None: no BEGIN then.
        if driver.isolation_level is None:
            return None
        return WRITE_BEGIN if connection.info.get(_WRITE_PHASE) else self.begin

    def __call__(self, connection: PoolProxiedConnection) -> None:
        # The driver's legacy mode skips BEGIN before a SELECT, so a transaction opening with
        # a read would see later commits; an explicit BEGIN makes it one snapshot. The driver
        # then sees a transaction in progress and adds no BEGIN of its own; it still emits
        # COMMIT and ROLLBACK.
        statement = self.statement(connection)
        if statement is not None:
            driver: Any = connection.driver_connection
            driver.execute(statement)


def begin_statement(connection: Connection) -> str | None:
    """The BEGIN statement a SQLite engine made by make_engine sends when `connection` begins a
    transaction now (WRITE_BEGIN inside begin_writing); None for any other engine, or when no
    BEGIN is sent (autocommit). For recorders listening to the "begin" event, which comes just
    before the BEGIN."""
    begin = connection.dialect.do_begin
    if not isinstance(begin, _SqliteBegin):
        return None
    return begin.statement(connection.connection)


def begin_writing(connection: Connection) -> None:
    """Start a unit of work's write phase on SQLite: end its read transaction and begin a
    write transaction IMMEDIATE. Call it only when something will be written: it waits for,
    and takes, the database's one write lock.

    SQLite has one write lock. A read transaction that asks for it after another writer has
    committed fails at once (SQLITE_BUSY_SNAPSHOT), however unrelated the rows: under
    concurrent writers most units of work would fail that way and start over. Begun
    IMMEDIATE, the write transaction waits its turn for the lock (the busy timeout) and sees
    the latest commits. Ending the read snapshot first loses no check on what was loaded:
    every aggregate written is version-guarded and every aggregate only read is validated at
    commit, so a change committed in between is still a ConcurrencyConflict. What a query did
    not find is not re-checked (see repositories.py). Other backends, and SQLite engines
    configured to begin IMMEDIATE or EXCLUSIVE, hold what they need already: nothing to do.

    SQLAlchemy sends the BEGIN (through the dialect's do_begin), so a refusal (the lock not
    free within the busy timeout) is an OperationalError like any other, and the transaction
    is SQLAlchemy's to commit or roll back.
    """
    begin = connection.dialect.do_begin
    if not isinstance(begin, _SqliteBegin) or not begin.deferred:
        return
    connection.rollback()
    info = connection.connection.info
    info[_WRITE_PHASE] = True
    try:
        connection.begin()
    finally:
        del info[_WRITE_PHASE]


def server_version(engine: Engine) -> str:
    """Product and version of the server, e.g. "PostgreSQL 15.20" or "MariaDB 10.11.19"."""
    backend = backend_of(engine)
    with engine.connect() as connection:
        if backend == "sqlite":
            return f"SQLite {connection.exec_driver_sql('SELECT sqlite_version()').scalar()}"
        if backend == "postgresql":
            raw = str(connection.execute(text("SHOW server_version")).scalar())
            # "15.20 (Debian 15.20-0+deb12u1)": the first word is the version.
            return f"PostgreSQL {raw.split()[0]}"
        raw = str(connection.execute(text("SELECT VERSION()")).scalar())
    # "10.11.19-MariaDB-0+deb12u1" or "8.0.36": MariaDB names itself after the number.
    match = re.match(r"\d+(?:\.\d+)*", raw)
    number = match.group(0) if match else raw
    product = "MariaDB" if "mariadb" in raw.lower() else "MySQL"
    return f"{product} {number}"


def _where(url: URL, backend: Backend) -> str:
    if backend == "sqlite":
        return f"sqlite database {url.database!r}"
    port = f":{url.port}" if url.port is not None else ""
    user = f" as {url.username}" if url.username else ""
    return f"{backend} database {url.database!r} at {url.host or 'localhost'}{port}{user}"


def _scrub(message: str, password: str | None) -> str:
    if not password:
        return message
    forms = {password, quote(password, safe=""), quote_plus(password, safe="")}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 6:
            message = message.replace(form, "***")
        else:
            # A short password only where no letter or digit touches it: hiding every "e" of
            # "Access denied" for a password "e" leaves the message unreadable, hiding nothing.
            message = re.sub(rf"(?<![^\W_]){re.escape(form)}(?![^\W_])", "***", message)
    return message


def check_connection(engine: Engine) -> str:
    """Connect once and return the server version; raise DatabaseUnavailable if that fails."""
    try:
        return server_version(engine)
    except sa_exc.DBAPIError as error:
        url = engine.url
        backend = backend_of(url)
        password = url.password if isinstance(url.password, str) else None
        driver_text = str(error.orig).strip()
        first_line = driver_text.splitlines()[0] if driver_text else type(error.orig).__name__
        reason = _scrub(first_line, password)
        unavailable = DatabaseUnavailable(
            f"cannot connect to {_where(url, backend)}: {reason}. Check that the server is"
            f" running and the URL ({redacted(url)}) is right."
        )
        # Keep the driver error for debugging unless its text could reveal the password.
        if password and password in str(error):
            raise unavailable from None
        raise unavailable from error
