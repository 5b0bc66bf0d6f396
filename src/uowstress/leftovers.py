"""Scratch databases a killed run left behind, found and dropped (`uowstress cleanup`).

A run drops its scratch schemas, databases and files on the way out, Ctrl-C and SIGTERM
included; a SIGKILL (an out-of-memory killer, `timeout -s KILL`, a CI runner killed) leaves
them. Each scratch database is kept by a lock for as long as its run lives (see scratch.py):
one whose lock this process can take belongs to no running uowstress, and is dropped; one
whose lock is held is left alone, in use. Only names of uowstress's own form (`uows_` and
twelve hexadecimal digits) are looked at, and of those only the ones carrying uowstress's mark
(see scratch.SCRATCH_MARK) are dropped: a name alike without it may be a user's, and is
reported and left, with the statement that drops it by hand (scratch databases of versions
before the mark carry none either, nor do MySQL's). A run of a uowstress older than the
keeper's lock keeps none: run the cleanup when no such run is going.

A SQLite URL naming a file is looked at too: a file a run created there (it was not there
before) is marked by a keeper file beside it, and removed with its -wal and -shm files when
its run is gone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from uowstress.errors import UowstressError
from uowstress.scratch import (
    KEEPER_FILE,
    SCRATCH_MARK,
    SCRATCH_NAME,
    check_url,
    connect_or_raise,
    default_sqlite_directory,
    drop,
    hide_secrets,
    new_file_keeper,
    normalize,
    reachable,
    redacted,
    release,
    remove_new_file,
    server_engine,
    sqlite_file,
    takes_database_comments,
    try_keep,
    try_keep_directory,
    try_keep_file,
)

__all__ = ["Leftover", "clean", "places"]

# mkdtemp's form of a SQLite scratch folder: the scratch name, "_", a random suffix (which
# may hold "_" too).
_FOLDER = re.compile(rf"({SCRATCH_NAME.pattern})_.+")

Fate = Literal["dropped", "would drop", "in use", "not ours", "not dropped", "error"]


@dataclass(frozen=True)
class Leftover:
    where: str  # the server (password hidden) or the folder
    name: str  # the schema, database or folder ("" for an error of the whole server)
    fate: Fate
    why: str = ""  # for "not ours", "not dropped" and "error": why it is left


def _server_names(connection: Connection, backend: str) -> dict[str, bool]:
    """The names of scratch form on the server, each with whether it carries the mark."""
    if backend == "postgresql":
        query = "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace"
    elif takes_database_comments(connection):
        query = "SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA"
    else:
        query = "SELECT SCHEMA_NAME, NULL FROM information_schema.SCHEMATA"
    rows = [(str(name), mark == SCRATCH_MARK) for name, mark in connection.execute(text(query))]
    connection.commit()
    return {name: marked for name, marked in sorted(rows) if SCRATCH_NAME.fullmatch(name)}


def _unmarked(what: str, by_hand: str) -> str:
    return (
        f"named like a scratch {what} but without uowstress's mark: someone else's, or left"
        f" by a uowstress too old to mark what it made; left as it is. If it is a leftover"
        f" nobody needs, remove it by hand: {by_hand}"
    )


def _clean_server(url: str, only: Collection[str], *, dry_run: bool) -> list[Leftover]:
    backend, normalized = normalize(url)
    where = redacted(normalized)
    # Asked first with every wait bounded: the cleanup's own connection may wait on a lock.
    ok, detail = reachable(normalized)
    if not ok:
        return [Leftover(where, "", "error", detail)]
    engine = server_engine(normalized, timeout_s=5)
    found: list[Leftover] = []
    try:
        with connect_or_raise(engine, normalized, backend) as connection:
            for name, marked in _server_names(connection, backend).items():
                if only and name not in only:
                    continue
                if not marked:
                    what = "schema" if backend == "postgresql" else "database"
                    by_hand = (
                        f'DROP SCHEMA "{name}" CASCADE'
                        if backend == "postgresql"
                        else f"DROP DATABASE `{name}`"
                    )
                    found.append(Leftover(where, name, "not ours", _unmarked(what, by_hand)))
                    continue
                if not try_keep(connection, backend, name):
                    found.append(Leftover(where, name, "in use"))
                    continue
                try:
                    if not dry_run:
                        drop(connection, backend, name)
                except UowstressError as error:
                    # Still locked by someone (a run of an earlier version keeps no lock):
                    # said, and the others are still looked at.
                    found.append(Leftover(where, name, "not dropped", str(error)))
                    connection.rollback()
                    continue
                finally:
                    release(connection, backend, name)
                found.append(Leftover(where, name, "would drop" if dry_run else "dropped"))
    except (UowstressError, SQLAlchemyError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        found.append(Leftover(where, "", "error", hide_secrets(reason[0] if reason else "", url)))
    finally:
        engine.dispose()
    return found


def _folders(url: str) -> list[str]:
    """Where SQLite scratch folders of runs on `url` go: beside the file it names, else the
    default place (UOWSTRESS_SQLITE_DIR, /dev/shm, the temporary directory)."""
    database = make_url(url).database or ""
    if database and database != ":memory:":
        return [os.path.dirname(os.path.abspath(database))]
    chosen = default_sqlite_directory()
    return [chosen] if chosen else [tempfile.gettempdir()]


def _clean_folder(folder: str, only: Collection[str], *, dry_run: bool) -> list[Leftover]:
    found: list[Leftover] = []
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return found
    for entry in entries:
        path = os.path.join(folder, entry)
        match = _FOLDER.fullmatch(entry)
        if match is None or not os.path.isdir(path):
            continue
        stem = match.group(1)
        if only and stem not in only and entry not in only:
            continue
        if not os.path.exists(os.path.join(path, KEEPER_FILE)):
            # The keeper file marks the folders uowstress makes (before any database goes in).
            why = _unmarked("folder", f"rm -r {shlex.quote(path)}")
            found.append(Leftover(folder, entry, "not ours", why))
            continue
        try:
            keeper = try_keep_directory(path)
        except FileNotFoundError:
            continue  # removed by its run meanwhile
        except OSError as error:
            found.append(Leftover(folder, entry, "not dropped", str(error)))
            continue
        if keeper is None:
            found.append(Leftover(folder, entry, "in use"))
            continue
        try:
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(keeper)
        if not dry_run and os.path.exists(path):
            found.append(Leftover(folder, entry, "not dropped", "some of its files stayed"))
            continue
        found.append(Leftover(folder, entry, "would drop" if dry_run else "dropped"))
    return found


def _clean_new_file(path: str, only: Collection[str], *, dry_run: bool) -> list[Leftover]:
    """The SQLite file at `path` when a run created it and was killed (its keeper file says
    so): removed with its -wal and -shm files, then the keeper file."""
    folder, name = os.path.split(path)
    keeper_path = new_file_keeper(path)
    if (only and name not in only) or not os.path.exists(keeper_path):
        return []  # no mark: the user's file, or none
    try:
        keeper = try_keep_file(keeper_path)
    except FileNotFoundError:
        return []  # removed by its run meanwhile
    except OSError as error:
        return [Leftover(folder, name, "not dropped", str(error))]
    if keeper is None:
        return [Leftover(folder, name, "in use")]
    try:
        if not dry_run:
            remove_new_file(path)
    except OSError as error:
        return [Leftover(folder, name, "not dropped", str(error))]
    finally:
        os.close(keeper)
    return [Leftover(folder, name, "would drop" if dry_run else "dropped")]


def clean(urls: list[str], *, only: Collection[str] = (), dry_run: bool = False) -> list[Leftover]:
    """The scratch databases of `urls` (SQLite: their folders) that no running uowstress
    keeps, dropped unless `dry_run`; those in use are listed and left alone. `only`: these
    names alone. A server that cannot be reached is an "error" entry; the others go on."""
    # Every URL is checked before any connects, as for a run: without a host the driver
    # would guess a server (a local socket), and drop scratch schemas on one not meant.
    for url in urls:
        check_url(url)
    found: list[Leftover] = []
    folders: list[str] = []
    for url in _servers(urls):
        found += _clean_server(url, only, dry_run=dry_run)
    files: list[str] = []
    for url in urls:
        if normalize(url)[0] == "sqlite":
            folders += [f for f in _folders(url) if f not in folders]
            named = sqlite_file(url)
            path = None if named is None else os.path.abspath(named)
            if path is not None and path not in files:
                files.append(path)
    for path in files:
        found += _clean_new_file(path, only, dry_run=dry_run)
    for folder in folders:
        found += _clean_folder(folder, only, dry_run=dry_run)
    return found


def _servers(urls: list[str]) -> list[str]:
    """The server URLs, each server database once: two spellings of one (another driver, the
    same URL given twice) would be looked at, or reported unreachable, twice."""
    distinct: dict[str, str] = {}
    for url in urls:
        backend, normalized = normalize(url)
        if backend != "sqlite":
            distinct.setdefault(normalized.render_as_string(hide_password=False), url)
    return list(distinct.values())


def not_found(names: Collection[str], found: Collection[Leftover]) -> list[str]:
    """The `names` given to `clean` that none of what it found answers to (a SQLite scratch
    folder answers to its name and to the scratch name in it)."""
    seen: set[str] = set()
    for leftover in found:
        if leftover.fate == "error":
            continue
        seen.add(leftover.name)
        match = _FOLDER.fullmatch(leftover.name)
        if match is not None:
            seen.add(match.group(1))
    return [name for name in dict.fromkeys(names) if name not in seen]


def places(urls: list[str]) -> int:
    """How many places `clean(urls)` looks at: each server database, and the SQLite folders
    (which are always reached) as one."""
    return len(_servers(urls)) + any(normalize(url)[0] == "sqlite" for url in urls)
