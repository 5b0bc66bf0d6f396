"""make_engine and friends on real SQLite files, PostgreSQL and MariaDB servers."""

from __future__ import annotations

import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import QueuePool

from humanoid_training.persistence.engine import (
    EngineOptions,
    backend_of,
    check_connection,
    make_engine,
    normalize_url,
    redacted,
    server_version,
)
from humanoid_training.persistence.errors import (
    DatabaseUnavailable,
    RetryableConflict,
    conflict_reason,
    translated_errors,
)
from tests.conftest import PG_URL
from tests.integration.support import SERVERS

PASSWORD = "Sup3r-s3cret-pw"
# Long enough never to fire on a healthy server, short enough to end a broken test quickly.
THREAD_JOIN_S = 30.0


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def sqlite_url(tmp_path: Path, name: str = "lab.db") -> str:
    return f"sqlite:///{tmp_path / name}"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path))
    try:
        yield engine
    finally:
        engine.dispose()


def run_in_threads(*bodies: Callable[[], None]) -> list[BaseException | None]:
    """Run each body in its own thread; return what each raised (None when it returned)."""
    outcomes: list[BaseException | None] = [None] * len(bodies)

    def runner(index: int, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as error:  # reported to the test, which decides
            outcomes[index] = error

    threads = [
        threading.Thread(target=runner, args=(index, body), daemon=True)
        for index, body in enumerate(bodies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_JOIN_S)
        assert not thread.is_alive(), "a database call did not return: lock timeouts not applied?"
    return outcomes


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://u@h:3307/db", "mysql+pymysql://u@h:3307/db"),
        ("mariadb://u@h/db", "mysql+pymysql://u@h/db"),
        ("mysql+pymysql://u@h/db?charset=utf8mb4", "mysql+pymysql://u@h/db?charset=utf8mb4"),
        ("sqlite:///lab.db", "sqlite:///lab.db"),
        ("sqlite+pysqlite:////tmp/lab.db", "sqlite+pysqlite:////tmp/lab.db"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected
    assert normalize_url(make_url(given)) == normalize_url(given)


@pytest.mark.parametrize("scheme", ["oracle", "postgresql+asyncpg", "mssql+pyodbc"])
def test_normalize_url_names_an_unknown_scheme_and_the_accepted_ones(scheme: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(scheme))) as info:
        normalize_url(f"{scheme}://u@h/db")
    for accepted in ("sqlite://", "postgresql://", "mysql://"):
        assert accepted in str(info.value)


def test_normalize_url_refuses_text_that_is_no_url_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="not a database URL") as info:
        normalize_url(f"nonsense with {PASSWORD}")
    assert PASSWORD not in str(info.value)


def test_backend_of_urls_and_engines(tmp_path: Path) -> None:
    assert backend_of("postgres://u@h/db") == "postgresql"
    assert backend_of(make_url("mariadb://u@h/db")) == "mysql"
    assert backend_of("sqlite:///x.db") == "sqlite"
    engine = make_engine(sqlite_url(tmp_path))
    try:
        assert backend_of(engine) == "sqlite"
    finally:
        engine.dispose()
    pg = make_engine(PG_URL)  # no connection is made until one is asked for
    try:
        assert backend_of(pg) == "postgresql"
    finally:
        pg.dispose()


def test_redacted_hides_the_password() -> None:
    shown = redacted(f"postgresql://root:{PASSWORD}@db.example:5432/lab")
    assert PASSWORD not in shown
    assert shown == "postgresql://root:***@db.example:5432/lab"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_make_engine_refuses_in_memory_sqlite(url: str) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        make_engine(url)


# --- isolation levels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "level"),
    [
        ("sqlite:///x.db", "READ COMMITTED"),
        ("sqlite:///x.db", "REPEATABLE READ"),
        ("postgresql://u@h/db", "SNAPSHOT"),
        ("postgresql://u@h/db", "AUTOCOMMIT"),
        ("mysql://u@h/db", "READ_COMMITED"),
        ("mysql://u@h/db", ""),
    ],
)
def test_invalid_isolation_level_is_rejected_with_the_accepted_ones(url: str, level: str) -> None:
    with pytest.raises(ValueError, match="SERIALIZABLE") as info:
        make_engine(url, EngineOptions(isolation_level=level))
    assert repr(level) in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        EngineOptions(sqlite_synchronous="full; DROP TABLE x"),  # type: ignore[arg-type]
        EngineOptions(sqlite_begin="TRANSACTION"),  # type: ignore[arg-type]
        EngineOptions(sqlite_busy_timeout_ms=-1),
    ],
    ids=["synchronous", "begin", "busy-timeout"],
)
def test_invalid_sqlite_options_are_rejected(tmp_path: Path, options: EngineOptions) -> None:
    with pytest.raises(ValueError, match="sqlite_"):
        make_engine(sqlite_url(tmp_path), options)


@pytest.mark.parametrize("level", ["SERIALIZABLE", "serializable", "Serializable"])
def test_sqlite_accepts_serializable_spellings(tmp_path: Path, level: str) -> None:
    engine = make_engine(sqlite_url(tmp_path), EngineOptions(isolation_level=level))
    try:
        assert check_connection(engine).startswith("SQLite ")
    finally:
        engine.dispose()


def read_isolation_level(connection: Connection, backend: str) -> str:
    """The session's isolation level as the server reports it, as e.g. "repeatable read"."""
    if backend == "postgresql":
        raw = connection.execute(text("SHOW transaction_isolation")).scalar()
    else:
        try:
            raw = connection.execute(text("SELECT @@transaction_isolation")).scalar()
        except sa_exc.OperationalError:  # MariaDB before 11.1 only knows the old name
            connection.rollback()
            raw = connection.execute(text("SELECT @@tx_isolation")).scalar()
    return str(raw).lower().replace("-", " ")


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("serializable", "serializable"),
        ("REPEATABLE_READ", "repeatable read"),
        ("read committed", "read committed"),
        ("READ UNCOMMITTED", "read uncommitted"),
    ],
)
def test_isolation_level_reaches_the_server(
    db_url: URL, backend: str, level: str, expected: str
) -> None:
    engine = make_engine(db_url, EngineOptions(isolation_level=level))
    try:
        # Two connections: the level must hold for every pooled connection, not the first.
        with engine.connect() as first, engine.connect() as second:
            assert read_isolation_level(first, backend) == expected
            assert read_isolation_level(second, backend) == expected
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", SERVERS)
def test_no_isolation_level_keeps_the_server_default(db_url: URL, backend: str) -> None:
    plain = create_engine(normalize_url(db_url))
    engine = make_engine(db_url)
    try:
        with plain.connect() as reference, engine.connect() as connection:
            assert read_isolation_level(connection, backend) == read_isolation_level(
                reference, backend
            )
    finally:
        engine.dispose()
        plain.dispose()


# --- SQLite configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("synchronous", "code"), [("OFF", 0), ("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)]
)
def test_sqlite_pragmas_on_every_connection(
    tmp_path: Path, synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"], code: int
) -> None:
    options = EngineOptions(sqlite_synchronous=synchronous, sqlite_busy_timeout_ms=1234)
    engine = make_engine(sqlite_url(tmp_path), options)
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                pragma = connection.exec_driver_sql
                assert pragma("PRAGMA journal_mode").scalar() == "wal"
                assert pragma("PRAGMA foreign_keys").scalar() == 1
                assert pragma("PRAGMA synchronous").scalar() == code
                assert pragma("PRAGMA busy_timeout").scalar() == 1234
    finally:
        engine.dispose()


def test_sqlite_defaults_are_full_sync_and_5s_busy_timeout(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_foreign_keys_are_enforced(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE robot (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql(
            "CREATE TABLE session (id INTEGER PRIMARY KEY, robot_id INTEGER REFERENCES robot(id))"
        )
    with pytest.raises(sa_exc.IntegrityError, match="FOREIGN KEY"), sqlite_engine.begin() as c:
        c.exec_driver_sql("INSERT INTO session (id, robot_id) VALUES (1, 42)")


def test_every_backend_uses_a_queue_pool_sized_by_the_options(db_url: URL) -> None:
    engine = make_engine(db_url, EngineOptions(pool_size=2, max_overflow=1, pool_timeout_s=0.2))
    try:
        assert isinstance(engine.pool, QueuePool)
        # pool_size + max_overflow connections are handed out; the next one waits
        # pool_timeout_s for a connection that never comes back.
        with (
            engine.connect(),
            engine.connect(),
            engine.connect(),
            pytest.raises(sa_exc.TimeoutError),
        ):
            engine.connect()
    finally:
        engine.dispose()


def _snapshot_setup(url: str) -> None:
    setup = create_engine(url)
    try:
        with setup.begin() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode = WAL")
            connection.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, v INTEGER)")
            connection.exec_driver_sql("INSERT INTO counter VALUES (1, 1)")
    finally:
        setup.dispose()


def _reads_twice_around_a_commit(engine: Engine) -> tuple[int, int]:
    """Read, let another connection commit a change, read again in the same transaction."""
    read = text("SELECT v FROM counter WHERE id = 1")
    with engine.connect() as reader, engine.connect() as writer:
        reader.begin()
        before = reader.execute(read).scalar_one()
        with writer.begin():
            writer.exec_driver_sql("UPDATE counter SET v = v + 1 WHERE id = 1")
        after = reader.execute(read).scalar_one()
        reader.rollback()
    return before, after


def test_sqlite_transaction_opening_with_a_read_is_a_snapshot(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    _snapshot_setup(url)
    engine = make_engine(url)
    try:
        assert _reads_twice_around_a_commit(engine) == (1, 1)
    finally:
        engine.dispose()


def test_without_explicit_begin_the_driver_would_not_give_a_snapshot(tmp_path: Path) -> None:
    # The control for the test above: the driver's default mode sees the other commit.
    url = sqlite_url(tmp_path)
    _snapshot_setup(url)
    plain = create_engine(url)
    try:
        assert _reads_twice_around_a_commit(plain) == (1, 2)
    finally:
        plain.dispose()


def test_sqlite_ddl_is_transactional_and_savepoints_roll_back(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        with connection.begin() as transaction:
            connection.exec_driver_sql("CREATE TABLE scratch (id INTEGER PRIMARY KEY)")
            transaction.rollback()
        with connection.begin():
            tables = (
                connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
                .scalars()
                .all()
            )
            assert "scratch" not in tables
            connection.exec_driver_sql("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
            connection.exec_driver_sql("INSERT INTO kept VALUES (1)")
            savepoint = connection.begin_nested()
            connection.exec_driver_sql("INSERT INTO kept VALUES (2)")
            savepoint.rollback()
        ids = connection.exec_driver_sql("SELECT id FROM kept").scalars().all()
        connection.rollback()
    assert ids == [1]


def test_sqlite_busy_is_a_retryable_conflict(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    holder_engine = make_engine(url, EngineOptions(sqlite_begin="IMMEDIATE"))
    writer_engine = make_engine(url, EngineOptions(sqlite_busy_timeout_ms=0))
    try:
        with writer_engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        with holder_engine.connect() as holder, writer_engine.connect() as writer:
            holder.begin()  # BEGIN IMMEDIATE: holds the write lock without writing anything
            writer.begin()
            with pytest.raises(sa_exc.OperationalError) as info:
                writer.exec_driver_sql("INSERT INTO t VALUES (1)")
            assert conflict_reason(info.value) == "busy"
            with pytest.raises(RetryableConflict) as translated, translated_errors():
                raise info.value
            assert translated.value.reason == "busy"
            writer.rollback()
            holder.rollback()
    finally:
        holder_engine.dispose()
        writer_engine.dispose()


# --- versions and connection checks ----------------------------------------------------------

VERSION_FORMATS = {
    "sqlite": r"SQLite \d+\.\d+\.\d+",
    "postgresql": r"PostgreSQL \d+(\.\d+)+",
    "mysql": r"(MariaDB|MySQL) \d+\.\d+\.\d+",
}


def test_server_version_and_check_connection(engine: Engine, backend: str) -> None:
    version = server_version(engine)
    assert re.fullmatch(VERSION_FORMATS[backend], version), version
    assert check_connection(engine) == version


@pytest.mark.parametrize(
    ("base", "backend"),
    [("postgresql://root", "postgresql"), ("mysql://root", "mysql")],
)
def test_unreachable_server_error_names_where_and_hides_the_password(
    base: str, backend: str
) -> None:
    port = closed_port()
    engine = make_engine(f"{base}:{PASSWORD}@127.0.0.1:{port}/test")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            check_connection(engine)
    finally:
        engine.dispose()
    message = str(info.value)
    assert f"cannot connect to {backend} database 'test' at 127.0.0.1:{port} as root:" in message
    assert f"root:***@127.0.0.1:{port}/test" in message
    assert "Check that the server is running" in message
    # Nothing the error carries, chained driver errors included, may show the password.
    assert PASSWORD not in "".join(traceback.format_exception(info.value))


def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "missing-directory"))
    try:
        with pytest.raises(DatabaseUnavailable, match="cannot connect to sqlite database"):
            check_connection(engine)
    finally:
        engine.dispose()


# --- real conflicts on the servers -----------------------------------------------------------


def _two_rows(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE pair (id INTEGER PRIMARY KEY, v INTEGER)"))
        connection.execute(text("INSERT INTO pair (id, v) VALUES (1, 0), (2, 0)"))


def _bound_lock_waits(connection: Connection, backend: str, lock_timeout_s: int) -> None:
    if backend == "postgresql":
        connection.execute(text(f"SET lock_timeout = '{lock_timeout_s}s'"))
        try:
            # Detect the deadlock fast; only a superuser may change this.
            with connection.begin_nested():
                connection.execute(text("SET deadlock_timeout = '100ms'"))
        except sa_exc.ProgrammingError:
            pass
    else:
        connection.execute(text(f"SET SESSION innodb_lock_wait_timeout = {lock_timeout_s}"))


def _update(connection: Connection, row: int) -> Callable[[], None]:
    def update() -> None:
        connection.execute(text("UPDATE pair SET v = v + 1 WHERE id = :id"), {"id": row})

    return update


@pytest.mark.parametrize("backend", SERVERS)
def test_real_deadlock_is_recognised(engine: Engine, backend: str) -> None:
    _two_rows(engine)
    with engine.connect() as first, engine.connect() as second:
        for connection in (first, second):
            _bound_lock_waits(connection, backend, lock_timeout_s=10)
        _update(first, 1)()
        _update(second, 2)()
        # Each now waits for the row the other holds, in whichever order they arrive.
        outcomes = run_in_threads(_update(first, 2), _update(second, 1))
        first.rollback()
        second.rollback()
    errors = [error for error in outcomes if error is not None]
    assert len(errors) == 1, outcomes  # the victim; the survivor's update went through
    assert conflict_reason(errors[0]) == "deadlock", errors[0]
    with pytest.raises(RetryableConflict) as translated, translated_errors():
        raise errors[0]
    assert translated.value.reason == "deadlock"


@pytest.mark.parametrize("backend", SERVERS)
def test_real_lock_timeout_is_recognised(engine: Engine, backend: str) -> None:
    _two_rows(engine)
    with engine.connect() as holder, engine.connect() as waiter:
        _update(holder, 1)()
        if backend == "postgresql":
            waiter.execute(text("SET lock_timeout = '100ms'"))
        else:
            waiter.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))  # its minimum
        (outcome,) = run_in_threads(_update(waiter, 1))
        waiter.rollback()
        holder.rollback()
    assert outcome is not None
    assert conflict_reason(outcome) == "lock_timeout", outcome
