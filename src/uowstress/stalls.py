"""A step that waits on a lock held by another connection of the same system: a stall.

The single-session machine and its replay run one step at a time on one thread, so while a
step runs no other connection of the system can move. A statement of the step that waits on a
lock one of them holds would wait forever: the holder waits for its client, the client for the
statement, and the database sees no deadlock (PostgreSQL waits without end by default; MariaDB
gives up after innodb_lock_wait_timeout, 50 s by default). A unit of work that writes a row on
a second connection after writing it on its first does exactly this.

The watch costs a step nothing while it is quick. One thread of the process looks, a few times
a second, at the step each watch is running; a step running longer than `patience_s` is looked
at in the database, through a monitor connection of its own: does a connection of the system's
engine wait on a lock held by another of them, idle in its transaction (one at work, on a
thread of the system's own, may still release it)? If so the watch cancels the waiting
statement (the step then goes on with the error the system gets; a statement tried again is
cancelled again) and keeps what it saw, for the executor to report as the step's finding.

The system's connections are those checked out of its engine's pool (pool events, as the
concurrent scheduler does; see sessions.py): a connection it opens by other means is not seen.
SQLite needs no watch: a write waiting on a lock gives up after the busy timeout with
"database is locked".
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from uowstress.scratch import hide_secrets, redacted
from uowstress.sessions import BACKEND_ID_QUERIES, backend_id, dialect_family, monitor_engine

__all__ = ["StallWatch"]

log = logging.getLogger(__name__)

# How often the process's watch thread looks at the running steps.
_LOOK_S = 0.2
_PATIENCE_S = 0.5
_QUERY_SHOWN = 300

# (waiting id, its blockers that are the system's, the waiting statement).
Wait = tuple[int, frozenset[int], str]


def _postgres_waits(monitor: Connection, ids: Sequence[int]) -> list[Wait]:
    # Only holders idle inside a transaction: those wait for their client, which waits for
    # the step, and can never release. A holder at work (a thread of the system's own) can.
    rows = monitor.execute(
        text(
            "SELECT w.pid, array_agg(b.pid), min(w.query) FROM pg_stat_activity w"
            " JOIN pg_stat_activity b ON b.pid = ANY(pg_blocking_pids(w.pid))"
            " WHERE w.pid = ANY(CAST(:ids AS integer[])) AND b.pid = ANY(CAST(:ids AS integer[]))"
            " AND b.state LIKE 'idle in transaction%' GROUP BY w.pid"
        ),
        {"ids": sorted(ids)},
    ).all()
    return [(int(pid), frozenset(int(b) for b in found), str(q or "")) for pid, found, q in rows]


def _postgres_cancel(monitor: Connection, waiting: int) -> None:
    # Only while it still waits: a statement that has since moved on is left alone.
    monitor.execute(
        text(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = :pid"
            " AND cardinality(pg_blocking_pids(pid)) > 0"
        ),
        {"pid": waiting},
    )


def _mysql_waits(monitor: Connection, ids: Sequence[int]) -> list[Wait]:
    # INNODB_LOCK_WAITS names the blocking transaction (the lock-wait scheduler's INNODB STATUS
    # does not); read a few times a second, its cache is fresh (see sessions.py). Holders
    # idle ("Sleep") only, as on PostgreSQL.
    rows = monitor.execute(
        text(
            "SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id, r.trx_query"
            " FROM information_schema.INNODB_LOCK_WAITS w"
            " JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id"
            " JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id"
            " JOIN information_schema.PROCESSLIST p ON p.ID = b.trx_mysql_thread_id"
            " WHERE p.COMMAND = 'Sleep'"
        )
    ).all()
    mine = set(ids)
    blockers: dict[int, set[int]] = {}
    queries: dict[int, str] = {}
    for waiting, blocking, query in rows:
        if int(waiting) in mine and int(blocking) in mine:
            blockers.setdefault(int(waiting), set()).add(int(blocking))
            queries[int(waiting)] = str(query or "")
    return [(w, frozenset(b), queries[w]) for w, b in blockers.items()]


def _mysql_cancel(monitor: Connection, waiting: int) -> None:
    with contextlib.suppress(sa_exc.DBAPIError):  # already over is fine
        monitor.execute(text(f"KILL QUERY {int(waiting)}"))


_BACKENDS: dict[
    str,
    tuple[
        str, Callable[[Connection, Sequence[int]], list[Wait]], Callable[[Connection, int], None]
    ],
] = {
    "postgresql": ("PostgreSQL backend", _postgres_waits, _postgres_cancel),
    "mysql": ("connection", _mysql_waits, _mysql_cancel),
}


class StallWatch:
    """Watches the steps run on one system's engine; see the module's docstring.

    Call `begin()` before a step and `end()` after it (also when it raised): `end()` returns
    the stall seen during the step, in words, or None. `close()` detaches from the engine."""

    def __init__(self, engine: Any, *, patience_s: float = _PATIENCE_S) -> None:
        self._patience_s = patience_s
        self._since: float | None = None
        self._step = 0
        self._stall: tuple[int, str] | None = None
        # Held by the watch thread from its look at a step to its cancel, and by end(): a
        # cancel never reaches a step after the one it was meant for.
        self._step_lock = threading.Lock()
        self._held: dict[ConnectionPoolEntry, int] = {}
        # Re-entrant: SQLAlchemy checks a forgotten connection in from a garbage-collection
        # callback, which may run while this thread holds the lock.
        self._lock = threading.RLock()
        self._engine: Engine | None = None
        self._unsupported = False
        try:
            family = dialect_family(engine) if isinstance(engine, Engine) else None
        except ValueError:
            family = None  # a dialect the watch cannot ask: unwatched, as before
        if family not in _BACKENDS:
            return  # SQLite (or not a SQLAlchemy engine): nothing to watch
        self._engine = engine
        self._what, self._waits, self._cancel = _BACKENDS[family]
        self._id_query = BACKEND_ID_QUERIES[family]
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        _WATCHER.add(self)

    # -- the executor's side -----------------------------------------------------------------

    def begin(self) -> None:
        self._step += 1
        self._since = time.monotonic()

    def end(self) -> str | None:
        with self._step_lock:
            self._since = None
            stall, self._stall = self._stall, None
        if stall is None or stall[0] != self._step:
            return None
        return stall[1]

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        _WATCHER.discard(self)
        for name, listener in (("checkout", self._on_checkout), ("checkin", self._on_checkin)):
            with contextlib.suppress(sa_exc.InvalidRequestError):
                event.remove(engine, name, listener)

    # -- pool events -------------------------------------------------------------------------

    def _on_checkout(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        try:
            found = backend_id(dbapi_connection, record, self._id_query)
        except Exception:
            # The system's step must not fail for the watch (a proxy that does not answer the
            # question, say): this connection goes unwatched.
            return
        with self._lock:
            self._held[record] = found

    def _on_checkin(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        with self._lock:
            self._held.pop(record, None)

    # -- the watch thread's side -------------------------------------------------------------

    def look(self, now: float) -> None:
        """Called by the watch thread: if the running step has waited long enough, ask."""
        since, engine = self._since, self._engine
        if since is None or engine is None or self._unsupported or now - since < self._patience_s:
            return
        with self._lock:
            ids = sorted(set(self._held.values()))
        if len(ids) < 2:
            return  # one connection cannot wait on itself
        try:
            monitor = monitor_engine(engine.url).connect()
        except (sa_exc.SQLAlchemyError, OSError):
            return  # the server did not answer this time; look again later
        try:
            monitor = monitor.execution_options(isolation_level="AUTOCOMMIT")
            with self._step_lock:
                step = self._step
                if self._since is None:
                    return  # the step ended meanwhile
                waits = self._waits(monitor, ids)
                if not waits:
                    return
                waiting, blockers, query = waits[0]
                if self._stall is None or self._stall[0] != step:
                    self._stall = (step, self._describe(waiting, blockers, query, engine))
                # Again at every look: a system that retries the cancelled statement waits
                # again.
                self._cancel(monitor, waiting)
        except sa_exc.DBAPIError as error:
            if error.connection_invalidated:
                return  # the monitor connection was lost; look again later
            # The server answers but cannot show lock waits to this user (MariaDB without the
            # PROCESS privilege; a MySQL without INNODB_LOCK_WAITS): said once, then the
            # database's own lock wait timeout is left to end a stall.
            self._unsupported = True
            reason = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
            message = hide_secrets(
                f"uowstress cannot see lock waits on {redacted(engine.url)} ({reason}), so a"
                " step waiting on a lock held by the system's own other connection is ended"
                " only by the server's lock wait timeout. On MariaDB grant the user the"
                " PROCESS privilege: GRANT PROCESS ON *.* TO <user>",
                engine.url,
            )
            log.warning("%s", message)
            warnings.warn(message, RuntimeWarning, stacklevel=1)
        finally:
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                monitor.close()

    def _describe(self, waiting: int, blockers: frozenset[int], query: str, engine: Engine) -> str:
        shown = " ".join(query.split())
        if len(shown) > _QUERY_SHOWN:
            shown = shown[:_QUERY_SHOWN] + "..."
        holders = ", ".join(str(b) for b in sorted(blockers))
        return hide_secrets(
            f"the step waited on a lock held by another connection of the system itself: its"
            f" {self._what} {waiting} waited on {self._what} {holders}, which the system's"
            f" engine had also handed out"
            + (f", in the statement {shown!r}" if shown else "")
            + ". Nothing else runs during a step, so the holder could never release it and the"
            " step could never finish (uowstress cancelled the waiting statement). A unit of"
            " work must not wait on itself: do its writes on one connection, or commit the"
            " first connection's writes before another touches the same rows",
            engine.url,
        )


class _Watcher:
    """The process's one watch thread, started on first use (again after a fork, or if it
    ever stopped)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A fork copies neither the thread nor a lock's holder: the child starts afresh.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._watches: weakref.WeakSet[StallWatch] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: StallWatch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="uowstress-stall-watch", daemon=True
                )
                self._thread.start()

    def discard(self, watch: StallWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(_LOOK_S)
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                try:
                    watch.look(time.monotonic())
                except Exception:  # the watch must outlive whatever one look met
                    log.exception("uowstress's stall watch failed to look at a step")


_WATCHER = _Watcher()
