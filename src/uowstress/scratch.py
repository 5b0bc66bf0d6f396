"""Fresh, isolated databases for a run or a test, removed afterwards.

SQLite gets a new file in a new directory, PostgreSQL a new schema (selected for every
connection through the URL's libpq `options`), MariaDB/MySQL a new database. Nothing outside
the scratch database is touched, so runs can share a server.

A SQLite URL that names no file (`sqlite://`) gets its scratch file in RAM when the machine
has a RAM file system (/dev/shm on Linux): there every fsync returns at once, so a run spends
its time on testing rather than waiting for the disk. The database still runs with
synchronous=FULL and takes the same code paths; what it does not exercise is the disk itself
(durability across a power cut). Name a file (`sqlite:///path/lab.db`) or set
UOWSTRESS_SQLITE_DIR to a directory on disk to run there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import quote, quote_plus

from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from uowstress.errors import DatabaseUnreachable, LeftUndone, UowstressError

try:
    import fcntl
except ImportError:  # not on Windows: SQLite scratch directories go unkept there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Backend = Literal["sqlite", "postgresql", "mysql"]

# The tester keeps its own copy of this mapping: it must not depend on any system under test.
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
_ACCEPTED = (
    "sqlite:///path/to/file.db (or sqlite:// for a scratch file), postgresql://user@host/db"
    " (psycopg 3) or mysql://user@host/db (PyMySQL; mariadb:// too)"
)
# Where a server URL may name a Unix socket instead of a host.
_SOCKET_KEYS: dict[str, str] = {"postgresql": "host", "mysql": "unix_socket"}
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
SQLITE_DIR_ENV = "UOWSTRESS_SQLITE_DIR"
_RAM_DIRECTORY = "/dev/shm"
# Long enough for a lock held by a forgotten transaction to show up as an error, not a hang.
_DROP_LOCK_TIMEOUT_S = 30


def normalize(url: str | URL) -> tuple[Backend, URL]:
    if isinstance(url, str):
        try:
            url = make_url(url)
        except sa_exc.ArgumentError:
            # The text is not echoed: it may hold a password.
            raise ValueError(f"not a database URL; write it as {_ACCEPTED}") from None
        except ValueError:
            # SQLAlchemy's own words are int()'s about the port; the text is not echoed either.
            raise ValueError(
                f"the database URL's host:port part is malformed (the port must be a number,"
                f" an IPv6 host goes in [brackets]); write it as {_ACCEPTED}"
            ) from None
    entry = _DRIVERS.get(url.drivername.lower())
    if entry is None:
        raise ValueError(f"unsupported database URL scheme {url.drivername!r}; use {_ACCEPTED}")
    return entry[0], url.set(drivername=entry[1])


# Query parameters that carry a secret (libpq and the MySQL drivers accept these in the URL).
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "sslpassword"})


def _without_empty_password(url: URL) -> URL:
    # "user:@host" has no password: shown as "***" it would stand for one (and a command
    # quoting it would fail). set() takes None as "unchanged", hence _replace.
    return url._replace(password=None) if url.password == "" else url


def _redacted(url: URL) -> str:
    url = _without_empty_password(url)
    hidden = {key: "***" for key in url.query if key.lower() in _SECRET_QUERY_KEYS}
    if hidden:
        url = url.update_query_dict(hidden)
    # "***" would be shown percent-encoded in the query string.
    return url.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def holds_secret(url: str | URL) -> bool:
    """Whether `redacted(url)` hides something: a password, or a secret of the query string."""
    return bool(_secrets(normalize(url)[1]))


# The servers' own default ports: a URL without one names the same database as with it.
_DEFAULT_PORTS: dict[str, int] = {"postgresql": 5432, "mysql": 3306}


def same_database(a: str | URL, b: str | URL) -> bool:
    """Whether two URLs name the same database the same way (an empty password is none, and
    no port is the server's default one)."""

    def canonical(url: str | URL) -> URL:
        backend, parsed = normalize(url)
        if parsed.port is None and backend in _DEFAULT_PORTS:
            parsed = parsed.set(port=_DEFAULT_PORTS[backend])
        return _without_empty_password(parsed)

    return canonical(a) == canonical(b)


def repeated_database(urls: list[str]) -> tuple[int, int] | None:
    """The positions (earlier, later) of the first URL naming the same database as an earlier
    one, or None. `sqlite://` names a fresh scratch file each time, so it never repeats; a URL
    that is not one is left to the check that says why."""
    named: list[tuple[int, str]] = []
    for position, url in enumerate(urls):
        try:
            backend, parsed = normalize(url)
        except ValueError:
            continue
        if backend == "sqlite" and not parsed.database:
            continue
        for earlier, other in named:
            if same_database(other, url):
                return earlier, position
        named.append((position, url))
    return None


def _secrets(url: URL) -> list[str]:
    """The URL's password and any secret of its query string."""
    found = [url.password] if isinstance(url.password, str) and url.password else []
    for key, value in url.query.items():
        if key.lower() in _SECRET_QUERY_KEYS:
            found.extend([value] if isinstance(value, str) else list(value))
    return [secret for secret in found if secret]


# Below this length a secret is hidden only where no letter or digit touches it (see
# hide_secrets).
_SHORT_SECRET = 6


def hide_secrets(text: str, url: str | URL) -> str:
    """`text` with the secrets of `url` (its password, secret query parameters) shown as ***,
    as written and percent-encoded (as a URL carries them).

    A secret of fewer than six characters is hidden only where no letter or digit touches it,
    not inside a longer word: for a password "e", hiding every e of "Access denied" would
    leave the message unreadable and tell nothing more about the password. A URL that cannot
    be parsed has no secrets to find."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (sa_exc.ArgumentError, ValueError):
            return text
    forms = {
        form
        for secret in _secrets(url)
        for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""))
    }
    # Longest first: a secret's encoded form may hold the secret itself.
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= _SHORT_SECRET:
            text = text.replace(form, "***")
        else:
            text = re.sub(rf"(?<![^\W_]){re.escape(form)}(?![^\W_])", "***", text)
    return text


def _failure_message(url: URL, backend: Backend, error: BaseException) -> str:
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    lines = str(orig).strip().splitlines()
    reason = hide_secrets(lines[0] if lines else type(orig).__name__, url)
    port = f":{url.port}" if url.port is not None else ""
    user = f" as {url.username}" if url.username else ""
    return (
        f"cannot connect to the {backend} server at {url.host or 'localhost'}{port}{user}:"
        f" {reason}. Check that the server is running and that the URL ({_redacted(url)})"
        " is right."
    )


def server_engine(url: URL, timeout_s: int, *, quick: bool = False) -> Engine:
    """`quick`: every read waits timeout_s at most too (for short queries only: not a drop
    that may wait on a lock)."""
    connect_args: dict[str, int] = {"connect_timeout": timeout_s}
    if quick and url.get_backend_name() == "mysql":
        # PyMySQL's connect_timeout covers the TCP connect alone: a port that accepts and never
        # answers (a hung server, another service) would keep its handshake waiting forever.
        connect_args["read_timeout"] = timeout_s
    # One short-lived connection at a time; nothing to pool.
    return create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _version(connection: Connection, backend: Backend) -> str:
    if backend == "postgresql":
        raw = str(connection.execute(text("SHOW server_version")).scalar())
        return f"PostgreSQL {raw.split()[0]}"
    raw = str(connection.execute(text("SELECT VERSION()")).scalar())
    match = re.match(r"\d+(?:\.\d+)*", raw)
    number = match.group(0) if match else raw
    return f"{'MariaDB' if 'mariadb' in raw.lower() else 'MySQL'} {number}"


_SQLITE_FORMS = (
    "sqlite:// for a scratch file, sqlite:///relative/path.db or sqlite:////absolute/path.db"
)


# What a driver raises, before any connection, for a query parameter it cannot take (a number
# that is none, an unknown character set, a certificate file that is not there). SQLAlchemy
# wraps none of them: left alone they would end the run as a traceback.
_PARAMETER_ERRORS = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    OSError,
    sa_exc.ArgumentError,
)
_DRIVER_NAMES = {"postgresql": "psycopg", "mysql": "PyMySQL"}


def _take_parameters(url: URL) -> None:
    """Have the driver take the URL's query parameters as it would for a connection, without
    opening one: raises what it raises for one it cannot take."""
    engine = create_engine(url, poolclass=NullPool)  # the dialect reads the query string here
    try:
        if url.get_backend_name() == "mysql":
            args, kwargs = engine.dialect.create_connect_args(url)
            # PyMySQL checks the rest (the character set, timeouts) when it makes its
            # connection object; defer_connect stops it there.
            engine.dialect.loaded_dbapi.connect(*args, **kwargs, defer_connect=True)
    finally:
        engine.dispose()


def _refused_parameter(url: URL) -> str | None:
    """Why the driver refuses the server URL's query parameters, naming each one at fault, or
    None when it takes them all."""
    if not url.query:
        return None
    try:
        _take_parameters(url)
        return None
    except _PARAMETER_ERRORS as error:
        together = error

    def said(error: BaseException) -> str:
        lines = str(error).strip().splitlines()
        words = lines[0] if lines else ""
        # The type tells most when the words are the driver's own slip (an AttributeError).
        return f"{type(error).__name__}: {words}" if words else type(error).__name__

    def shown(key: str) -> str:
        value = url.query[key]
        secret = key.lower() in _SECRET_QUERY_KEYS or not isinstance(value, str)
        return key if secret else f"{key}={value}"

    # Each alone, to name the ones at fault.
    refused: list[tuple[str, str]] = []
    for key, value in url.query.items():
        try:
            _take_parameters(url.set(query={key: value}))
        except _PARAMETER_ERRORS as error:
            refused.append((shown(key), said(error)))
    backend = url.get_backend_name()
    driver = _DRIVER_NAMES.get(backend, backend)
    if not refused:
        what = (
            f"{driver} does not accept the URL's parameters ({', '.join(url.query)}) together"
            f" ({said(together)})"
        )
    elif len(refused) == 1:
        what = f"the URL's parameter {refused[0][0]} is not one {driver} accepts: {refused[0][1]}"
    else:
        each = "; ".join(f"{parameter} ({why})" for parameter, why in refused)
        what = f"the URL's parameters {each} are not ones {driver} accepts"
    # A secret may sit in another parameter's value too (the value is shown, with the URL).
    return hide_secrets(f"cannot connect to {_redacted(url)}: {what}; fix the URL", url)


_AT_EXAMPLE = {
    "postgresql": "postgresql://user:p%40ss@host:5432/dbname",
    "mysql": "mysql://user:p%40ss@host:3306/dbname",
}


def check_url(url: str | URL) -> Backend:
    """The backend of a URL uowstress can use, decided without connecting. ValueError names
    what is wrong and the accepted forms; it never holds the password."""
    backend, normalized = normalize(url)
    if "@" in (normalized.host or ""):
        # An '@' written as it is in a password: the URL splits at the first one, and the
        # password's tail would be taken for the host, shown in every message about it.
        raise ValueError(
            f"the {backend} URL holds an '@' after the one that ends its user and password: a"
            " password (or user) with an '@' in it must be written percent-encoded, as %40"
            f" (e.g. {_AT_EXAMPLE.get(backend, _AT_EXAMPLE['postgresql'])}). The URL is not"
            " shown here: it holds part of a password"
        )
    if backend == "sqlite":
        parts = [
            part
            for part, value in (
                ("a user", normalized.username),
                ("a password", normalized.password),
                ("a host", normalized.host),
                ("a port", normalized.port),
            )
            if value not in (None, "")
        ]
        if parts:
            # SQLAlchemy would refuse it only once the run's tests connect, each as a failure.
            listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
            raise ValueError(
                f"the SQLite URL {_redacted(normalized)} names {listed}, but SQLite opens a"
                f" file, not a server; write it as {_SQLITE_FORMS}"
            )
        return backend
    refusal = _refused_parameter(normalized)
    if refusal is not None:
        raise ValueError(refusal)
    socket_key = _SOCKET_KEYS.get(backend)
    if socket_key is not None and not normalized.host and not normalized.query.get(socket_key):
        # Without a host the driver would guess one (a local socket, environment variables):
        # the run must reach the server the user meant, so the URL has to say which.
        shown = _redacted(make_url(url) if isinstance(url, str) else url)
        raise ValueError(
            f"the {backend} URL {shown} names no server host (a Unix socket goes in"
            f" ?{socket_key}=/path/to/socket); write it as {_ACCEPTED}"
        )
    return backend


def reachable(url: str | URL, timeout_s: int = 3) -> tuple[bool, str]:
    """(True, server version) when the URL answers, else (False, why); never raises for that."""
    try:
        check_url(url)
        backend, normalized = normalize(url)
    except ValueError as error:
        return False, str(error)
    if backend == "sqlite":
        database = normalized.database or ""
        if str(normalized.query.get("uri", "")).lower() in ("true", "1"):
            # Checks of what a file holds, and its cleanup, go by the file's path.
            return False, (
                "SQLite URI filenames (uri=true) are not supported; write the file's path,"
                " e.g. sqlite:///path/to/lab.db (or sqlite:// for a temporary file)"
            )
        if database and database != ":memory:":
            directory = os.path.dirname(os.path.abspath(database))
            if not os.path.isdir(directory):
                return False, (
                    f"directory {directory!r} of the SQLite database does not exist; create it"
                    " or point the URL elsewhere"
                )
            problem = _not_sqlite(database)
            if problem is not None:
                return False, f"{_redacted(normalized)} {problem}"
        # Opening a file would create it; the embedded library is always there.
        return True, f"SQLite {sqlite3.sqlite_version}"
    engine = server_engine(normalized, timeout_s, quick=True)
    try:
        with engine.connect() as connection:
            return True, _version(connection, backend)
    except (sa_exc.SQLAlchemyError, OSError) as error:
        return False, _failure_message(normalized, backend, error)
    finally:
        engine.dispose()


_SQLITE_HEADER = b"SQLite format 3\x00"


def _not_sqlite(path: str) -> str | None:
    """Why the file at `path` cannot be used as a SQLite database, or None (absent and empty
    files are new databases). Told from the file's header, without opening it in SQLite."""
    if os.path.isdir(path):
        return "names a directory; point the URL at a SQLite file, or at a path for a new one"
    try:
        with open(path, "rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror or error}); point the URL at a file you can read"
    if header and header != _SQLITE_HEADER:
        return (
            "is not a SQLite database; point the URL at a SQLite file, or at a path for a new one"
        )
    return None


def list_tables(url: str | URL) -> list[str]:
    """Names of the tables in the database (PostgreSQL: the first schema of the search path)."""
    backend, normalized = normalize(url)
    engine = create_engine(normalized, poolclass=NullPool)
    try:
        return sorted(inspect(engine).get_table_names())
    except sa_exc.OperationalError as error:
        raise DatabaseUnreachable(_failure_message(normalized, backend, error)) from None
    finally:
        engine.dispose()


def connect_or_raise(engine: Engine, url: URL, backend: Backend) -> Connection:
    try:
        return engine.connect()
    except (sa_exc.SQLAlchemyError, OSError) as error:
        unreachable = DatabaseUnreachable(_failure_message(url, backend, error))
        if any(secret in str(error) for secret in _secrets(url)):
            raise unreachable from None
        raise unreachable from error


@contextmanager
def scratch_database(url: str | URL, *, prefix: str = "uows_") -> Iterator[URL]:
    """A new empty database on the server of `url`, dropped on exit even if the body raises.

    Yields the URL that reaches it: a file for SQLite (in a new directory beside the file
    the URL names, or, when it names none, in `default_sqlite_directory()`), a schema
    selected through `options=-csearch_path=...` for PostgreSQL, a database for MariaDB/MySQL.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"scratch database prefix {prefix!r} must be a lowercase identifier of at most"
            " 41 characters (letters, digits, underscores; not starting with a digit)"
        )
    backend, normalized = normalize(url)
    name = f"{prefix}{secrets.token_hex(6)}"  # a keeper's lock is named after it too
    if backend == "sqlite":
        with _sqlite_scratch(normalized, name) as scratch:
            yield scratch
        return
    engine = server_engine(normalized, timeout_s=5)
    try:
        # The keeper takes the lock before it creates the schema: no moment when a cleanup
        # could take the new schema for a leftover.
        keeper = connect_or_raise(engine, normalized, backend)
        try:
            _keep_alive(keeper, backend)
            for _ in range(5):
                if try_keep(keeper, backend, name):
                    break
                name = f"{prefix}{secrets.token_hex(6)}"  # held by another: another name
            _create(keeper, backend, name, normalized)
            try:
                yield _scratch_url(normalized, backend, name)
            except BaseException:
                # The body's own error (a server gone, Ctrl-C) is the one to report; no
                # report may follow, so what is left on the server is said now as well.
                _drop_or_say(engine, normalized, backend, name, now=True)
                raise
            _drop_or_say(engine, normalized, backend, name, now=False)
        finally:
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                keeper.close()
    finally:
        engine.dispose()


def _drop_or_say(engine: Engine, url: URL, backend: Backend, name: str, *, now: bool) -> None:
    """Drop the scratch database `name`; when it cannot be (the server stopped answering, a
    lock held in it), say what is left on the server and how to remove it, as a LeftUndone
    warning (the run's console and report list those), and on stderr at once when `now`.
    Never raises: what the run found stands, and an error of the body stays the error."""
    try:
        with connect_or_raise(engine, url, backend) as connection:
            drop(connection, backend, name)
        return
    except (UowstressError, sa_exc.SQLAlchemyError, OSError) as error:
        what = "schema" if backend == "postgresql" else "database"
        said = hide_secrets(str(error).strip(), url)
        if not said.startswith("could not remove"):
            said = f"could not remove the scratch {what} {name}: {said}"
        message = (
            f"{said} The scratch {what} {name} is left on {_redacted(url)}: once the server"
            f" answers, `uowstress cleanup --db-url {_redacted(url)}` drops it"
        )
    log.warning("%s", message)
    if now:
        print(f"uowstress: {message}", file=sys.stderr)
    warnings.warn(message, LeftUndone, stacklevel=4)


def default_sqlite_directory() -> str | None:
    """Where a SQLite scratch database goes when its URL names no file: the directory named by
    UOWSTRESS_SQLITE_DIR, else /dev/shm when it is a writable directory (a RAM file system),
    else None (the system's temporary directory)."""
    chosen = os.environ.get(SQLITE_DIR_ENV)
    if chosen:
        if not os.path.isdir(chosen) or not os.access(chosen, os.W_OK):
            raise UowstressError(
                f"{SQLITE_DIR_ENV}={chosen!r} is not a writable directory; create it or unset"
                " the variable"
            )
        return chosen
    if os.path.isdir(_RAM_DIRECTORY) and os.access(_RAM_DIRECTORY, os.W_OK | os.X_OK):
        return _RAM_DIRECTORY
    return None


# A scratch database is kept, for as long as it lives, by a lock named after it (an advisory
# lock of a connection of its own on the servers, a lock on a file in a SQLite scratch's
# directory): `uowstress cleanup` drops only scratch databases nobody keeps, those left by a
# run that was killed (SIGKILL cannot be caught; Ctrl-C and SIGTERM clean up as they go).
SCRATCH_NAME = re.compile(r"uows_[0-9a-f]{12}")
KEEPER_FILE = ".uowstress-keeper"
# What marks a scratch database as uowstress's own, whatever its name: the comment of a
# PostgreSQL schema or of a MariaDB database (10.5 and later; MySQL keeps no comment on a
# database, so its scratch databases carry none), the keeper file of a SQLite scratch folder.
# `uowstress cleanup` drops nothing without it: a schema a user named alike is the user's.
SCRATCH_MARK = "uowstress scratch database; uowstress cleanup drops it once its run is gone"
# A SQLite file a run creates where its URL points (a file that was not there) is marked by a
# keeper file beside it, made and locked before the file and removed after it: a run killed by
# SIGKILL leaves the mark with the file, so that `uowstress cleanup` and the next run on that
# URL know the file for uowstress's.
NEW_FILE_KEEPER_SUFFIX = "-uowstress"
# A SQLite database and the files SQLite keeps beside it.
SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")
# PostgreSQL advisory lock keys: "uo" in the top 16 bits, a scratch name's 48 random bits
# below: one key per name, apart from an application's own keys.
_LOCK_TAG = 0x756F << 48


def _lock_key(name: str) -> int:
    return _LOCK_TAG | int(name[-12:], 16)  # the name's random part


def try_keep(connection: Connection, backend: Backend, name: str) -> bool:
    """Take the keeper's lock of scratch database `name` on `connection`, without waiting:
    False when another connection holds it (a run using that scratch database)."""
    if backend == "postgresql":
        query = f"SELECT pg_try_advisory_lock({_lock_key(name)})"
    else:
        query = f"SELECT GET_LOCK('uowstress.{name}', 0)"
    kept = bool(connection.execute(text(query)).scalar())
    connection.commit()  # the lock outlives the transaction; the connection stays idle
    return kept


def _keep_alive(connection: Connection, backend: Backend) -> None:
    """No server timeout ends the keeper while its run goes on (a session timeout of the
    role or database, MariaDB's wait_timeout of 8 hours): its lock would go with it."""
    if backend == "postgresql":
        version = int(connection.execute(text("SHOW server_version_num")).scalar() or 0)
        settings = ["idle_session_timeout"] if version >= 140000 else []
        for setting in [*settings, "idle_in_transaction_session_timeout", "statement_timeout"]:
            connection.execute(text(f"SET {setting} = 0"))
    else:
        connection.execute(text("SET SESSION wait_timeout = 31536000"))
    connection.commit()


def release(connection: Connection, backend: Backend, name: str) -> None:
    if backend == "postgresql":
        query = f"SELECT pg_advisory_unlock({_lock_key(name)})"
    else:
        query = f"SELECT RELEASE_LOCK('uowstress.{name}')"
    connection.execute(text(query))
    connection.commit()


def try_keep_directory(directory: str, *, create: bool = False) -> int | None:
    """An open descriptor holding the keeper's lock of a SQLite scratch directory, or None
    when another process holds it (or the system has no such locks: nothing is kept).
    FileNotFoundError when the directory has no keeper file (it carries no mark of a run's).

    `create`: make the keeper file, locked before it appears under its name (a cleanup that
    finds it finds it locked)."""
    if fcntl is None:
        return None
    path = os.path.join(directory, KEEPER_FILE)
    if create:
        fresh = f"{path}.{os.getpid()}"
        descriptor = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(fresh, path)
        return descriptor
    return try_keep_file(path)


def try_keep_file(path: str) -> int | None:
    """An open descriptor holding the lock of the keeper file `path`, or None when another
    process holds it (or the system has no such locks). FileNotFoundError when there is none."""
    if fcntl is None:
        return None
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def new_file_keeper(path: str) -> str:
    """The keeper file marking the SQLite file at `path` as one a run created."""
    return path + NEW_FILE_KEEPER_SUFFIX


def keep_new_file(path: str) -> int | None:
    """Make and lock the keeper file of a SQLite file the run is about to create at `path`:
    the open descriptor holding its lock (None on a system without such locks: nothing is
    made). FileExistsError when the keeper file is there already (another run's)."""
    if fcntl is None:
        return None
    keeper = new_file_keeper(path)
    fresh = f"{keeper}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Locked before it appears under its name (a cleanup that finds it finds it locked);
        # a link, unlike a rename, never replaces another run's keeper.
        os.link(fresh, keeper)
        return descriptor
    except FileExistsError:
        os.close(descriptor)
        raise
    except OSError:
        os.close(descriptor)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(fresh)
    # A file system without hard links: made in place, locked a moment later.
    descriptor = os.open(keeper, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def sqlite_file(url: str | URL) -> str | None:
    """The file a SQLite URL names, as written; None for a scratch file or memory."""
    database = make_url(url).database or ""
    return None if database in ("", ":memory:") else database


def remove_new_file(path: str) -> None:
    """Remove the SQLite file a run created at `path` (see keep_new_file), then its keeper."""
    remove_sqlite_file(path)
    os.remove(new_file_keeper(path))


def remove_sqlite_file(path: str) -> None:
    """Remove the SQLite file at `path` with its -wal, -shm and -journal files."""
    for suffix in SQLITE_FILE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


@contextmanager
def _sqlite_scratch(url: URL, name: str) -> Iterator[URL]:
    database = url.database or ""
    if database and database != ":memory:":
        parent: str | None = os.path.dirname(os.path.abspath(database))
    else:
        parent = default_sqlite_directory()
    directory = tempfile.mkdtemp(prefix=name + "_", dir=parent)
    keeper: int | None = None
    try:
        keeper = try_keep_directory(directory, create=True)
        # Only the path changes: query options such as a driver setting are kept.
        yield url.set(database=os.path.join(directory, f"{name}.db"))
    finally:
        # The database, its -wal and -shm files all live in the directory.
        shutil.rmtree(directory, ignore_errors=True)
        if keeper is not None:
            os.close(keeper)


def takes_database_comments(connection: Connection) -> bool:
    """Whether a MariaDB/MySQL server keeps a comment on a database (MariaDB 10.5 and later;
    not MySQL)."""
    query = (
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
        " 'information_schema' AND TABLE_NAME = 'SCHEMATA' AND COLUMN_NAME = 'SCHEMA_COMMENT'"
    )
    found = bool(connection.execute(text(query)).scalar())
    connection.commit()
    return found


def _create(connection: Connection, backend: Backend, name: str, url: URL) -> None:
    if backend == "postgresql":
        # One transaction: the schema never exists without its mark.
        statements = [
            f'CREATE SCHEMA "{name}"',
            f"COMMENT ON SCHEMA \"{name}\" IS '{SCRATCH_MARK}'",
        ]
    else:
        # utf8mb4 whatever the server default, so that any Unicode text can be stored.
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        if takes_database_comments(connection):
            create += f" COMMENT '{SCRATCH_MARK}'"
        statements = [create]
    try:
        for statement in statements:
            connection.execute(text(statement))
        connection.commit()
    except sa_exc.DBAPIError as error:
        # Most often a user without the right to create one: said with what to grant, not
        # as a traceback.
        lines = str(error.orig).strip().splitlines()
        reason = hide_secrets(lines[0] if lines else type(error.orig).__name__, url)
        user = url.username or "the user"
        if backend == "postgresql":
            grant = f'GRANT CREATE ON DATABASE "{url.database}" TO "{user}"'
            what = "schema"
        else:
            grant = f"GRANT ALL ON `uows\\_%`.* TO '{user}'@'<host>'"
            what = "database"
        raise UowstressError(
            f"cannot create a scratch {what} on the {backend} server at"
            f" {url.host or 'localhost'}{f':{url.port}' if url.port is not None else ''}"
            f" as {user}: {reason}. Every run works in a scratch {what} of its own"
            f" (uows_...): connect as a user who may create one, or have an administrator"
            f" run: {grant}"
        ) from None


def drop(connection: Connection, backend: Backend, name: str) -> None:
    if backend == "postgresql":
        timeout = f"SET lock_timeout = '{_DROP_LOCK_TIMEOUT_S}s'"
        statement = f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
    else:
        timeout = f"SET SESSION lock_wait_timeout = {_DROP_LOCK_TIMEOUT_S}"
        statement = f"DROP DATABASE IF EXISTS `{name}`"
    try:
        connection.execute(text(timeout))
        connection.execute(text(statement))
        connection.commit()
    except sa_exc.DBAPIError as error:
        lines = str(error.orig).strip().splitlines()
        what = "schema" if backend == "postgresql" else "database"
        if _refused(error):
            # A cleanup by another user than the run's: no lock is to blame.
            advice = (
                "The URL's user may not drop it (another user's run made it): run uowstress"
                " cleanup with the URL of its owner or of an administrator, or have one"
                f" run: {statement}"
            )
        else:
            advice = (
                "A connection made from the scratch URL probably still holds a lock in it:"
                " dispose such engines before the block ends, then remove it by hand with:"
                f" {statement}"
            )
        raise UowstressError(
            f"could not remove the scratch {what} {name}:"
            f" {lines[0] if lines else type(error.orig).__name__}. {advice}"
        ) from error


def _refused(error: sa_exc.DBAPIError) -> bool:
    """Whether the server refused a statement for want of a privilege."""
    if getattr(error.orig, "sqlstate", None) == "42501":  # PostgreSQL's insufficient_privilege
        return True
    args: tuple[object, ...] = getattr(error.orig, "args", ())
    # MariaDB/MySQL: access denied to the database, to a table, for want of a privilege.
    return bool(args) and args[0] in (1044, 1142, 1227)


def _scratch_url(url: URL, backend: Backend, name: str) -> URL:
    if backend == "mysql":
        return url.set(database=name)
    # libpq applies `options` to every connection made from the URL, whatever the engine.
    existing = url.query.get("options")
    if isinstance(existing, tuple):
        existing = " ".join(existing)
    options = f"{existing} -csearch_path={name}" if existing else f"-csearch_path={name}"
    return url.update_query_dict({"options": options})


# The names a backend goes by (the schemes of _DRIVERS without a driver), as messages list them.
BACKEND_NAMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def backend_of_name(name: str) -> Backend | None:
    """The backend a bare name stands for ("postgres" and "mariadb" too: every scheme a URL
    may start with, driver included), or None for a name that is none of them."""
    entry = _DRIVERS.get(name.strip().lower())
    return None if entry is None else entry[0]


def backend_name(url: str | URL) -> Backend:
    """ "sqlite", "postgresql" or "mysql" for any URL spelling uowstress accepts."""
    return normalize(url)[0]


def redacted(url: str | URL) -> str:
    """The URL with its password hidden: the only form that may reach a log or a report."""
    return _redacted(normalize(url)[1])


def redacted_as_written(url: str) -> str:
    """`redacted(url)` with the scheme as the user wrote it (postgresql://, not the driver's
    postgresql+psycopg://): for a command line shown to be run again."""
    _, normalized = normalize(url)  # refuses what is not a URL uowstress takes
    return _redacted(normalized.set(drivername=make_url(url).drivername))
