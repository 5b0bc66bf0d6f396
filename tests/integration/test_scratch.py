"""scratch_database: isolated, removed afterwards, on every backend; clear errors otherwise."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from humanoid_training.persistence.engine import normalize_url
from tests.integration.support import on_servers, postgres_only
from uowstress import scratch
from uowstress.cli import main
from uowstress.errors import DatabaseUnreachable, LeftUndone, UowstressError
from uowstress.scratch import (
    SQLITE_DIR_ENV,
    check_url,
    default_sqlite_directory,
    list_tables,
    reachable,
    scratch_database,
)

PASSWORD = "Sup3r-s3cret-pw"
T = TypeVar("T")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def create_table(url: URL, name: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()


def scratch_exists(server_url: str, backend: str, scratch: URL) -> bool:
    """Whether the scratch database behind `scratch` is still there, asked of the server."""
    if backend == "sqlite":
        assert scratch.database is not None
        return os.path.exists(os.path.dirname(scratch.database))
    engine = create_engine(normalize_url(server_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                options = str(scratch.query["options"])
                schema = options.rsplit("search_path=", 1)[1]
                query = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = :n"
                return bool(connection.execute(text(query), {"n": schema}).scalar())
            query = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = :n"
            return bool(connection.execute(text(query), {"n": scratch.database}).scalar())
    finally:
        engine.dispose()


def test_scratch_databases_are_isolated_and_removed(server_url: str, backend: str) -> None:
    with scratch_database(server_url) as first, scratch_database(server_url) as second:
        assert first != second
        assert list_tables(first) == []
        create_table(first, "probe")
        assert list_tables(first) == ["probe"]
        assert list_tables(second) == []
        create_table(second, "probe")  # the same name: no clash across scratch databases
        assert scratch_exists(server_url, backend, first)
    assert not scratch_exists(server_url, backend, first)
    assert not scratch_exists(server_url, backend, second)


def test_scratch_database_is_removed_when_the_body_raises(server_url: str, backend: str) -> None:
    class BodyFailed(Exception):
        pass

    with pytest.raises(BodyFailed), scratch_database(server_url) as url:
        create_table(url, "left_behind")
        seen = url
        raise BodyFailed
    assert not scratch_exists(server_url, backend, seen)


@on_servers
@pytest.mark.parametrize("body_fails", [False, True])
def test_a_scratch_database_the_server_cannot_drop_is_said_left_with_how_to_drop_it(
    server_url: str, backend: str, body_fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server stops answering before the run ends: the scratch database stays on it.
    class BodyFailed(Exception):
        pass

    def gone(*args: object, **kwargs: object) -> None:
        raise DatabaseUnreachable("cannot connect to the server: connection refused")

    with contextlib.ExitStack() as stack:
        caught = stack.enter_context(pytest.warns(LeftUndone))
        if body_fails:
            # The body's own error is the run's, not the drop's.
            stack.enter_context(pytest.raises(BodyFailed))
        url = stack.enter_context(scratch_database(server_url))
        seen = url
        monkeypatch.setattr(scratch, "connect_or_raise", gone)
        if body_fails:
            raise BodyFailed
    monkeypatch.undo()
    try:
        assert scratch_exists(server_url, backend, seen)
        (warned,) = caught.list
        message = str(warned.message)
        name = _scratch_name(seen, backend)
        assert "could not remove the scratch" in message and name in message, message
        assert "uowstress cleanup --db-url" in message, message
    finally:
        engine = create_engine(normalize_url(server_url), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                scratch.drop(connection, backend, _scratch_name(seen, backend))  # type: ignore[arg-type]
        finally:
            engine.dispose()
    assert not scratch_exists(server_url, backend, seen)


def _scratch_name(url: URL, backend: str) -> str:
    if backend == "postgresql":
        return str(url.query["options"]).rsplit("search_path=", 1)[1]
    assert url.database is not None
    return url.database


def test_scratch_database_accepts_urls_as_users_write_them(server_url: str, backend: str) -> None:
    plain = make_url(server_url)
    plain = plain.set(drivername=plain.drivername.split("+")[0])
    with scratch_database(plain, prefix="plain_") as url:
        create_table(url, "probe")
        assert list_tables(url) == ["probe"]
        name = url.database if backend != "postgresql" else str(url.query["options"])
        assert name is not None and "plain_" in name


@postgres_only
def test_postgresql_scratch_url_pins_every_connection_to_its_schema(server_url: str) -> None:
    with scratch_database(server_url) as url:
        schema = str(url.query["options"]).rsplit("search_path=", 1)[1]
        create_table(url, "pinned")
        engine = create_engine(url)  # pooled, several connections: each must see the schema
        try:
            with engine.connect() as one, engine.connect() as two:
                for connection in (one, two):
                    assert connection.execute(text("SELECT current_schema()")).scalar() == schema
            with engine.connect() as connection:
                query = "SELECT table_schema FROM information_schema.tables WHERE table_name = :t"
                where = connection.execute(text(query), {"t": "pinned"}).scalars().all()
            assert where == [schema]
        finally:
            engine.dispose()


@postgres_only
def test_postgresql_scratch_keeps_existing_libpq_options(server_url: str) -> None:
    with_options = make_url(server_url).update_query_dict({"options": "-cstatement_timeout=5000"})
    with scratch_database(with_options) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SHOW statement_timeout")).scalar() == "5s"
                schema = str(connection.execute(text("SELECT current_schema()")).scalar())
                assert schema.startswith("uows_")
        finally:
            engine.dispose()


def test_sqlite_scratch_lives_beside_the_named_file(tmp_path: Path) -> None:
    with scratch_database(f"sqlite:///{tmp_path / 'lab.db'}") as url:
        assert url.database is not None
        directory = Path(url.database).parent
        assert directory.parent == tmp_path
        create_table(url, "probe")
        assert Path(url.database).exists()
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []


def test_sqlite_scratch_without_a_path_uses_a_temporary_directory() -> None:
    with scratch_database("sqlite://") as url:
        assert url.database is not None
        path = Path(url.database)
        assert path.name.startswith("uows_") and path.suffix == ".db"
        create_table(url, "probe")
        assert list_tables(url) == ["probe"]
    assert not path.parent.exists()


def test_sqlite_scratch_without_a_path_goes_where_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SQLITE_DIR_ENV, str(tmp_path))
    with scratch_database("sqlite://") as url:
        assert url.database is not None
        assert Path(url.database).parent.parent == tmp_path
        create_table(url, "probe")
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_scratch_directory_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SQLITE_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(UowstressError, match=f"{SQLITE_DIR_ENV}=.*missing.*not a writable"):
        default_sqlite_directory()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="this machine has no /dev/shm")
def test_sqlite_scratch_without_a_path_lives_in_ram_when_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SQLITE_DIR_ENV, raising=False)
    with scratch_database("sqlite://") as url:
        assert url.database is not None
        assert Path(url.database).parent.parent == Path("/dev/shm")


@pytest.mark.parametrize("prefix", ["", "1abc", "Upper", "semi;colon", "x" * 42])
def test_unsafe_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"), scratch_database("sqlite://", prefix=prefix):
        pass


@pytest.mark.parametrize("base", ["postgresql://root", "mysql://root", "mariadb://root"])
def test_unreachable_server_is_named_without_the_password(base: str) -> None:
    port = closed_port()
    url = f"{base}:{PASSWORD}@127.0.0.1:{port}/test"
    with pytest.raises(DatabaseUnreachable) as info, scratch_database(url):
        pytest.fail("the body must not run without a server")
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert ":***@" in message
    assert "Check that the server is running" in message
    assert PASSWORD not in "".join(traceback.format_exception(info.value))

    ok, reason = reachable(url, timeout_s=1)
    assert not ok
    assert f"127.0.0.1:{port}" in reason
    assert PASSWORD not in reason


def _within(seconds: float, call: Callable[[], T]) -> T:
    """What `call` returns, failing the test (not hanging it) when it takes longer."""
    done: list[T] = []
    worker = threading.Thread(target=lambda: done.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert done, f"still waiting after {seconds} s"
    return done[0]


@pytest.mark.parametrize("base", ["postgresql://root", "mysql://root"])
def test_a_server_that_accepts_and_never_answers_is_an_error_not_a_hang(base: str) -> None:
    # A hung server, or another service on the port: the connection opens, no greeting comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"{base}:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}/test"
        ok, reason = _within(20, lambda: reachable(url, timeout_s=1))
        assert not ok and "cannot connect" in reason and PASSWORD not in reason, reason
        result = _within(30, lambda: CliRunner().invoke(main, ["cleanup", "--db-url", url]))
    assert result.exit_code == 2, result.output
    assert "cannot connect" in result.output and PASSWORD not in result.output


def test_reachable_reports_the_server_version(server_url: str, backend: str) -> None:
    ok, version = reachable(server_url)
    assert ok, version
    expected = {"sqlite": "SQLite ", "postgresql": "PostgreSQL ", "mysql": "MariaDB "}[backend]
    if backend == "mysql" and version.startswith("MySQL "):
        expected = "MySQL "
    assert version.startswith(expected)


def test_reachable_explains_unusable_urls_instead_of_raising(tmp_path: Path) -> None:
    ok, reason = reachable("oracle://u@h/db")
    assert not ok and "oracle" in reason
    # No host: the driver would guess one; the URL has to name the server.
    ok, reason = reachable("postgresql://u:s3cret@/db")
    assert not ok and "names no server host" in reason and "s3cret" not in reason
    # A Unix socket names the server too: that URL is tried (and fails for want of one).
    ok, reason = reachable("mysql://u@/db?unix_socket=/nowhere/mysqld.sock", timeout_s=1)
    assert not ok and "names no server host" not in reason and "cannot connect" in reason
    ok, reason = reachable(f"sqlite:///{tmp_path / 'missing' / 'lab.db'}")
    assert not ok and "does not exist" in reason


@pytest.mark.parametrize("backend", [pytest.param("mysql", marks=pytest.mark.mysql, id="mysql")])
def test_a_refused_short_password_leaves_the_servers_words_readable(server_url: str) -> None:
    # The server's answer holds the letter of the password in its own words ("denied"): those
    # stay, the URL's password is hidden.
    url = make_url(server_url).set(password="e")
    ok, reason = reachable(url.render_as_string(hide_password=False), timeout_s=2)
    assert not ok
    assert "Access denied for user" in reason, reason
    assert "root:***@" in reason


@contextmanager
def _user_who_cannot_create(server_url: str, backend: str) -> Iterator[str]:
    """The URL of a user of the server who may connect to its database, and create nothing."""
    admin = create_engine(normalize_url(server_url), poolclass=NullPool)
    url = make_url(server_url)
    user = "uows_cannot_create"
    if backend == "postgresql":
        setup = [
            f"DROP ROLE IF EXISTS {user}",
            f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'",
            f'GRANT CONNECT ON DATABASE "{url.database}" TO {user}',
        ]
        teardown = [f'REVOKE ALL ON DATABASE "{url.database}" FROM {user}', f"DROP ROLE {user}"]
    else:
        setup = [
            f"DROP USER IF EXISTS '{user}'@'%'",
            f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'",
            f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%'",
        ]
        teardown = [f"DROP USER IF EXISTS '{user}'@'%'"]
    with admin.begin() as connection:
        for statement in setup:
            connection.execute(text(statement))
    try:
        yield url.set(username=user, password=PASSWORD).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            for statement in teardown:
                connection.execute(text(statement))
        admin.dispose()


@on_servers
def test_a_user_who_may_not_create_the_scratch_database_is_told_what_to_grant(
    server_url: str, backend: str
) -> None:
    with _user_who_cannot_create(server_url, backend) as limited:
        with pytest.raises(UowstressError) as info, scratch_database(limited):
            pytest.fail("the body must not run without a scratch database")
        # The whole run says so too, as an error before anything runs, not a traceback.
        result = CliRunner().invoke(
            main, ["run", "--db-url", limited, "--pattern", "test_state_machines.py"]
        )
    message = str(info.value)
    assert "cannot create a scratch" in message and "uows_cannot_create" in message, message
    assert "GRANT " in message, message
    assert PASSWORD not in "".join(traceback.format_exception(info.value))
    assert result.exit_code == 2, result.output
    assert "cannot create a scratch" in result.output, result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output


@pytest.mark.parametrize(
    ("query", "driver_said"),
    [
        ("charset=bogus", "AttributeError"),
        ("connect_timeout=abc", "invalid literal for int()"),
        ("port=abc", "port should be of type int"),
        ("read_timeout=-1", "read_timeout should be > 0"),
    ],
)
def test_a_url_parameter_the_driver_refuses_is_named_before_connecting(
    query: str, driver_said: str
) -> None:
    # A closed port: the parameters are judged without a server.
    url = f"mysql://root:{PASSWORD}@127.0.0.1:{closed_port()}/test?{query}"
    ok, reason = reachable(url, timeout_s=1)
    assert not ok
    assert reason.startswith("cannot connect to mysql+pymysql://root:***@127.0.0.1:"), reason
    assert f"the URL's parameter {query} is not one PyMySQL accepts: " in reason
    assert driver_said in reason and reason.endswith("; fix the URL")
    assert PASSWORD not in reason
    with pytest.raises(ValueError, match="fix the URL") as info:
        check_url(url)
    assert PASSWORD not in str(info.value)


def test_every_refused_url_parameter_is_named() -> None:
    url = f"mysql://root:{PASSWORD}@127.0.0.1:1/test?charset=bogus&connect_timeout=abc&autocommit=1"
    ok, reason = reachable(url, timeout_s=1)
    assert not ok and PASSWORD not in reason
    assert "parameters charset=bogus (AttributeError" in reason
    assert "connect_timeout=abc (ValueError: invalid literal for int()" in reason
    assert "autocommit=1 (" not in reason


def test_a_secret_url_parameter_the_driver_refuses_is_named_without_its_value() -> None:
    url = f"mysql://root@127.0.0.1:1/test?password={PASSWORD}&connect_timeout={PASSWORD}"
    ok, reason = reachable(url, timeout_s=1)
    assert not ok and "parameter connect_timeout" in reason, reason
    assert PASSWORD not in reason


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        (f"sqlite://user:{PASSWORD}@localhost/x.db", "a user, a password and a host"),
        ("sqlite://x.db", "a host"),  # a relative path written with two slashes
        ("sqlite://localhost:5/x.db", "a host and a port"),
        (f"sqlite+pysqlite://:{PASSWORD}@/x.db", "a password"),
    ],
)
def test_a_sqlite_url_naming_a_server_is_refused_with_the_forms_it_takes(
    url: str, parts: str
) -> None:
    with pytest.raises(ValueError) as info:
        check_url(url)
    message = str(info.value)
    assert f"names {parts}, but SQLite opens a file, not a server" in message
    for form in ("sqlite:// ", "sqlite:///relative/path.db", "sqlite:////absolute/path.db"):
        assert form in message
    assert PASSWORD not in message
    ok, reason = reachable(url)
    assert not ok and reason == message


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///lab.db", "sqlite:////tmp/lab.db"])
def test_the_sqlite_forms_are_accepted(url: str) -> None:
    assert check_url(url) == "sqlite"


@pytest.mark.parametrize(
    ("url", "example"),
    [
        ("postgresql://root:Secr3t@Word@127.0.0.1:5432/test", "postgresql://user:p%40ss@host:5432"),
        ("mysql://root:p@ssW0rdX@127.0.0.1:3306/test", "mysql://user:p%40ss@host:3306"),
    ],
)
def test_a_password_with_a_bare_at_sign_is_refused_without_showing_any_of_it(
    url: str, example: str
) -> None:
    # The URL splits at the first '@': the password's tail would be taken for the host.
    with pytest.raises(ValueError) as info:
        check_url(url)
    message = str(info.value)
    assert "must be written percent-encoded, as %40" in message and example in message
    for part in ("Secr3t", "Word", "p@ss", "ssW0rdX", "127.0.0.1"):
        assert part not in message
    ok, reason = reachable(url)
    assert not ok and reason == message
