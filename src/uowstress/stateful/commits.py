"""Has anything been committed since the committed state was last read?

Reading the whole committed state after every step is what a check costs most. Many steps
cannot have changed it (an operation inside an open Unit of Work, a query, a rollback), and
when the database itself can say that nothing was committed since the last read, the state
read then is still the state now, already checked.

SQLite says so exactly: `PRAGMA data_version` changes whenever another connection commits to
the database file. The watcher keeps one connection of its own for asking, which never writes.
Other backends have no such answer that is both cheap and exact, so there the state is read
after every step.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from sqlalchemy import Engine


class CommitWatcher(Protocol):
    def committed_since_last_look(self) -> bool:
        """True when something may have been committed since the previous call (always True
        on the first call)."""
        ...

    def close(self) -> None: ...


class AlwaysChanged:
    """For databases that cannot tell: read the committed state every time."""

    def committed_since_last_look(self) -> bool:
        return True

    def close(self) -> None:
        return None


class SqliteDataVersion:
    """SQLite's data_version, read on a connection that only ever asks for it."""

    def __init__(self, path: str, *, uri: bool = False) -> None:
        # Autocommit: each PRAGMA runs in a read transaction of its own, so it sees every
        # commit made before it.
        self._connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, uri=uri
        )
        self._last: Any = None

    def committed_since_last_look(self) -> bool:
        version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        changed = bool(version != self._last)
        self._last = version
        return changed

    def close(self) -> None:
        self._connection.close()


def watch(engine: Engine) -> CommitWatcher:
    """The cheapest exact watcher for the database behind `engine`."""
    url = engine.url
    database = url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:"):
        return AlwaysChanged()
    uri = str(url.query.get("uri", "")).lower() in ("1", "true")
    if uri and "mode=memory" in database:
        return AlwaysChanged()
    return SqliteDataVersion(database, uri=uri)
