"""The database a run uses: fresh, refused if it holds tables uowstress did not create, cleaned
up afterwards.

PostgreSQL and MariaDB runs take place in a scratch schema (database) created inside the server
the URL names and dropped at the end, so nothing of the user's is touched. A SQLite URL naming a
file is used as is, after checking that it holds no tables; with no file, a temporary one. A
file the run creates is marked as uowstress's by a keeper file beside it (see
scratch.NEW_FILE_KEEPER_SUFFIX): when a killed run leaves it, the next run on the URL removes
it and starts afresh, and `uowstress cleanup` removes it too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sqlite3
import sys
import warnings
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from uowstress.errors import (
    ConfigError,
    DatabaseUnreachable,
    LeftUndone,
    UnsafeDatabase,
    UowstressError,
)
from uowstress.report import formatting as fmt
from uowstress.report.passwords import hide_passwords
from uowstress.scratch import (
    backend_name,
    check_url,
    hide_secrets,
    keep_new_file,
    list_tables,
    new_file_keeper,
    reachable,
    redacted,
    remove_new_file,
    remove_sqlite_file,
    scratch_database,
    sqlite_file,
    try_keep_file,
)
from uowstress.target import Target, connect_system

log = logging.getLogger(__name__)

# The variable naming each server backend's default database, and the local server's URL.
URL_VARIABLES = {"postgresql": "UOWSTRESS_PG_URL", "mysql": "UOWSTRESS_MYSQL_URL"}
_LOCAL_URLS = {
    "postgresql": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
# Read as they are, at import: default_url checks them where they are used, so that a wrong
# variable stops what needs it, not `uowstress --help` or an import.
DEFAULT_URLS = {
    "sqlite": "sqlite://",
    **{
        backend: os.environ.get(URL_VARIABLES[backend], url) for backend, url in _LOCAL_URLS.items()
    },
}


# What may be echoed of a value that is not a URL: a word, never user:password@host.
_PLAIN = re.compile(r"[A-Za-z0-9_.+/-]{1,60}")


def _shown(value: str) -> str:
    """A variable's value as a message may show it: its password hidden."""
    try:
        return redacted(value)
    except ValueError:
        pass
    try:  # a URL of a scheme uowstress does not take
        return hide_secrets(make_url(value).render_as_string(hide_password=True), value)
    except (sa_exc.ArgumentError, ValueError):
        pass
    return repr(value) if _PLAIN.fullmatch(value) else "a value not shown (it may hold a password)"


def default_url(backend: str) -> str:
    """The URL of `backend`'s default database (DEFAULT_URLS). ConfigError, naming the
    variable it comes from, when that is not a URL uowstress can use for this backend: a
    URL of another backend would otherwise have the run test that one instead, unsaid."""
    url = DEFAULT_URLS[backend]
    variable = URL_VARIABLES.get(backend)
    if variable is None:
        return url
    advice = (
        f"set it to a {backend} URL such as {backend}://user@host/db, or unset it for the"
        f" local server ({_LOCAL_URLS[backend]})"
    )
    try:
        named: str | None = backend_name(url)
    except ValueError:
        named = None
    if named != backend:
        what = f"a {named} URL, not a {backend} one" if named else "not a URL uowstress can use"
        raise ConfigError(f"{variable} holds {_shown(url)}: {what}; {advice}")
    try:
        check_url(url)
    except ValueError as error:
        raise ConfigError(f"{variable} cannot be used: {error}") from None
    return url


@dataclass(frozen=True)
class PreparedDatabase:
    url: str  # with its password: for connecting only, never for printing
    display: str  # password hidden
    backend: str
    server_version: str


def _listed(names: list[str]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _sqlite_objects(path: str) -> dict[str, str]:
    """Name -> type of every table, view and index of a SQLite file (they share one namespace;
    SQLite's own objects left out)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view', 'index')"
            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchall()
    finally:
        conn.close()
    return {str(name): str(kind) for name, kind in rows}


def _undeclared_tables(target: Target, created: Collection[str]) -> ConfigError | None:
    """The error for tables `connect` created that the target's `tables` does not name."""
    declared = {name.lower() for name in target.tables}
    missing = sorted(name for name in created if name.lower() not in declared)
    if not missing:
        return None
    return ConfigError(
        f"target {target.name} created table{'s' if len(missing) > 1 else ''}"
        f" {', '.join(missing)} that its `tables` does not name"
        f" ({', '.join(sorted(target.tables)) or 'none'}); add every table connect creates"
        " to `tables`: uowstress refuses a database already holding one of them by those names"
    )


# What each target creates, found once per process (see objects_of).
_objects: weakref.WeakKeyDictionary[Target, dict[str, frozenset[str]]] = weakref.WeakKeyDictionary()


def objects_of(
    target: Target,
    options: Mapping[str, str],
    isolation_level: str | None = None,
    url: str = "sqlite://",
) -> frozenset[str]:
    """The names of what `target.connect` creates on the backend of `url` (SQLite: tables,
    views and indexes; a server: tables), found once per process by connecting it to a
    throwaway database of uowstress's own (a SQLite file elsewhere than the user's, a scratch
    schema or database on the server), then disposing of it.

    Raises ConfigError when the target refuses its options or creates a table its `tables`
    does not name: the names are what keeps a run off a user's own tables; DatabaseUnreachable
    when the server fails meanwhile."""
    backend = backend_name(url)
    key = json.dumps([backend, sorted(options.items()), isolation_level])
    try:
        known = _objects.setdefault(target, {})
    except TypeError:  # a target that takes no weak reference: found again each time
        known = {}
    found = known.get(key)
    if found is None:
        try:
            made = _made_by(target, options, isolation_level, url, backend)
        except sa_exc.SQLAlchemyError as error:
            # The server failed or went away during the setup (a restart, a killed
            # connection): an error before the run, in words, not a traceback.
            orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
            lines = str(orig).strip().splitlines()
            reason = hide_secrets(lines[0] if lines else type(orig).__name__, url)
            raise DatabaseUnreachable(
                f"the database failed while target {target.name} was set up on a scratch"
                f" database of {redacted(url)}: {reason}. Check that the server is up and"
                " accepts the URL's user, then run again"
            ) from None
        undeclared = _undeclared_tables(target, [n for n, k in made.items() if k == "table"])
        if undeclared is not None:
            raise undeclared
        found = known[key] = frozenset(made)
    return found


def _made_by(
    target: Target,
    options: Mapping[str, str],
    isolation_level: str | None,
    url: str,
    backend: str,
) -> dict[str, str]:
    """Name -> type of what `target.connect` creates on a throwaway database (see objects_of)."""
    with scratch_database("sqlite://" if backend == "sqlite" else url) as scratch:
        trial = scratch.render_as_string(hide_password=False)
        try:
            system = connect_system(target, trial, options, isolation_level)
        except ValueError as error:
            raise ConfigError(
                f"target {target.name} refused its options on {redacted(url)}:"
                f" {hide_passwords(hide_secrets(str(error), url))}"
            ) from None
        try:
            return (
                _sqlite_objects(str(scratch.database))
                if backend == "sqlite"
                else dict.fromkeys(list_tables(trial), "table")
            )
        finally:
            system.dispose()


def _claim_new_file(path: str, url: str) -> int | None:
    """The held keeper of the SQLite file at `path` when the run is to create it: it was not
    there, or was left by a killed run (its keeper file says so; removed now). None when the
    file is the user's, or the system has no file locks (nothing marks the file then).

    Raises UnsafeDatabase when another run, still going, created the file."""
    keeper_path = new_file_keeper(path)
    for _ in range(5):  # again when another run makes or removes its keeper meanwhile
        if os.path.exists(keeper_path):
            try:
                keeper = try_keep_file(keeper_path)
            except FileNotFoundError:
                continue
            if keeper is None:
                break
            if os.path.exists(path):
                log.warning(
                    "removing %s, left by a uowstress run that was killed (as its keeper file"
                    " %s shows), before using the URL afresh",
                    path,
                    keeper_path,
                )
            remove_sqlite_file(path)
            return keeper
        if os.path.exists(path):
            return None  # no keeper: the user's file
        try:
            keeper = keep_new_file(path)
        except FileExistsError:
            continue
        if keeper is not None and os.path.exists(path):
            # Created meanwhile by another program: the user's, not the run's.
            os.remove(keeper_path)
            os.close(keeper)
            continue
        return keeper
    raise UnsafeDatabase(
        f"{redacted(url)} was created by another uowstress run, still going, which removes it"
        " when it ends; wait for that run, or point --db-url at another file"
    )


def _release_new_file(path: str, keeper: int) -> None:
    """Remove the SQLite file the run created, then the keeper file that marked it."""
    try:
        remove_new_file(path)
    finally:
        os.close(keeper)


@contextmanager
def prepared_database(
    url: str,
    *,
    allow_existing_tables: bool = False,
    ours: Collection[str] | Callable[[], Collection[str]] = (),
) -> Iterator[PreparedDatabase]:
    """The database a run uses (see the module's docstring).

    `ours`: the names the run creates in it and drops at the end (or a function giving them,
    asked only when needed: `objects_of` for a target). A SQLite file the user names that
    already holds a table, view or index of one of those names is refused even with
    `allow_existing_tables`: the run would take the user's table for its own."""
    backend = backend_name(url)
    ok, detail = reachable(url)
    if not ok:
        raise DatabaseUnreachable(detail)
    path = sqlite_file(url) if backend == "sqlite" else None
    if path is not None:
        keeper = _claim_new_file(path, url)
        existed = keeper is None and os.path.exists(path)
        if existed:
            list_tables(url)  # refuses a file that is not a SQLite database, untouched
            objects = _sqlite_objects(path)
            held = sorted(name for name, kind in objects.items() if kind != "index")
            if held and not allow_existing_tables:
                raise UnsafeDatabase(
                    f"{redacted(url)} holds tables uowstress did not create ({_listed(held)});"
                    " point --db-url at an empty database, or pass --allow-existing-tables to"
                    " work beside them (under pytest --uowstress-db-url and"
                    " --uowstress-allow-existing-tables). uowstress drops only the tables it"
                    " creates; what a target under test does to the others is up to its code"
                )
            if objects:
                # SQLite's names ignore case.
                mine = {name.lower() for name in (ours() if callable(ours) else ours)}
                taken = sorted(name for name in objects if name.lower() in mine)
                if taken:
                    raise UnsafeDatabase(
                        f"{redacted(url)} already holds {_listed(taken)}, which the run creates"
                        " for itself and drops when it ends: it would take the user's"
                        " table for its own and lose its rows. Rename or move it, or point"
                        " --db-url (under pytest --uowstress-db-url) at another file"
                        " (--allow-existing-tables lets the run share a file with other tables,"
                        " never take one of them over)"
                    )
        # What the run changes in a file it did not create, besides its own tables (which the
        # target drops): the journal mode (the reference system's engine sets WAL, which stays
        # with the file) and SQLite's statistics tables (ANALYZE creates them).
        before = _file_settings(path) if existed else None
        try:
            yield PreparedDatabase(url, redacted(url), backend, detail)
        except BaseException:
            # The run's own error is the one to report.
            if before is not None:
                try:
                    _restore_file_settings(path, before)  # the space note is not urgent
                except UowstressError as error:
                    # No report follows an interrupted run: what is left to do is said now.
                    log.warning("%s", error)
                    print(f"uowstress: {error}", file=sys.stderr)
                    warnings.warn(str(error), LeftUndone, stacklevel=3)
            raise
        finally:
            if keeper is not None:
                _release_new_file(path, keeper)
            elif not existed:
                remove_sqlite_file(path)
        if before is not None:
            try:
                note = _restore_file_settings(path, before)
            except UowstressError as error:
                # The run's results stand; what is left to do by hand is said, on the console
                # and in the report (see runner._Collector).
                log.warning("%s", error)
                warnings.warn(str(error), LeftUndone, stacklevel=3)
            else:
                if note is not None:
                    warnings.warn(note, LeftUndone, stacklevel=3)
        return
    with scratch_database(url) as scratch:
        full = scratch.render_as_string(hide_password=False)
        yield PreparedDatabase(full, redacted(url), backend, detail)


@dataclass(frozen=True)
class _FileSettings:
    journal_mode: str
    statistics: frozenset[str]  # the sqlite_stat tables the file holds
    free_pages: int  # pages on the file's free list


def _statistics_tables(conn: sqlite3.Connection) -> frozenset[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'sqlite\\_stat%'"
        " ESCAPE '\\'"
    )
    return frozenset(str(name) for (name,) in rows)


def _file_settings(path: str) -> _FileSettings:
    conn = sqlite3.connect(path)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        return _FileSettings(str(mode).lower(), _statistics_tables(conn), int(free))
    finally:
        conn.close()


def _restore_file_settings(path: str, before: _FileSettings) -> str | None:
    """Put back the journal mode of a SQLite file the run used but did not create, and drop
    the statistics tables the run added (their rows were the run's tables', dropped with them).

    Returns what is left to do by hand, or None: the pages the run's tables used stay in the
    file as free pages. Not reclaimed here: VACUUM may renumber the rows of the user's tables
    that have no INTEGER PRIMARY KEY, which a run must not do to data that is not its own."""
    restore = f"PRAGMA journal_mode = {before.journal_mode.upper()}"
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            added = _statistics_tables(conn) - before.statistics
            for table in sorted(added):
                conn.execute(f'DROP TABLE "{table}"')
            conn.commit()
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != before.journal_mode:
                (mode,) = conn.execute(restore).fetchone()
                if str(mode).lower() != before.journal_mode:
                    raise sqlite3.OperationalError(f"the journal mode stayed {mode}")
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as error:
        by_hand = [restore] + [
            f"DROP TABLE IF EXISTS {name}"
            for name in ("sqlite_stat1", "sqlite_stat4")
            if name not in before.statistics
        ]
        raise UowstressError(
            f"could not put {path} back as it was before the run (journal mode"
            f" {before.journal_mode}, no statistics tables of the run's): {error}. Close what"
            f" else has the file open, then run: sqlite3 {shlex.quote(path)}"
            f" {shlex.quote('; '.join(by_hand))}"
        ) from error
    grown = int(free) - before.free_pages
    if grown <= 0:
        return None
    return (
        f"{path} keeps the {fmt.counted(grown, 'page')} ({grown * int(page_size):,} bytes) the"
        " run's tables used,"
        " as free pages: SQLite does not shrink a file by itself. To give the space back, run:"
        f" sqlite3 {shlex.quote(path)} VACUUM (VACUUM may renumber the rowids of tables without"
        " an INTEGER PRIMARY KEY, so the run leaves that choice to you)"
    )
