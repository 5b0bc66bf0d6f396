"""The database a run uses: fresh, refused if it holds tables uowstress did not create, cleaned
up afterwards.

PostgreSQL and MariaDB runs take place in a scratch schema (database) created inside the server
the URL names and dropped at the end, so nothing of the user's is touched. A SQLite URL naming a
file is used as is, after checking that it holds no tables; with no file, a temporary one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url

from uowstress.errors import DatabaseUnreachable, UnsafeDatabase
from uowstress.scratch import backend_name, list_tables, reachable, redacted, scratch_database

DEFAULT_URLS = {
    "sqlite": "sqlite://",
    "postgresql": os.environ.get(
        "UOWSTRESS_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("UOWSTRESS_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


@dataclass(frozen=True)
class PreparedDatabase:
    url: str  # with its password: for connecting only, never for printing
    display: str  # password hidden
    backend: str
    server_version: str


def _sqlite_file(url: URL) -> str | None:
    database = url.database or ""
    return None if database in ("", ":memory:") else database


@contextmanager
def prepared_database(
    url: str, *, allow_existing_tables: bool = False
) -> Iterator[PreparedDatabase]:
    backend = backend_name(url)
    ok, detail = reachable(url)
    if not ok:
        raise DatabaseUnreachable(detail)
    parsed = make_url(url)
    path = _sqlite_file(parsed) if backend == "sqlite" else None
    if path is not None:
        existed = os.path.exists(path)
        if existed:
            tables = list_tables(url)
            if tables and not allow_existing_tables:
                raise UnsafeDatabase(
                    f"{redacted(url)} holds tables uowstress did not create"
                    f" ({', '.join(tables[:8])}{', ...' if len(tables) > 8 else ''}); point"
                    " --db-url at an empty database, or pass --allow-existing-tables if you"
                    " accept that the target may change them"
                )
        try:
            yield PreparedDatabase(url, redacted(url), backend, detail)
        finally:
            if not existed:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)
        return
    with scratch_database(url) as scratch:
        full = scratch.render_as_string(hide_password=False)
        yield PreparedDatabase(full, redacted(url), backend, detail)
