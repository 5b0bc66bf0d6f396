"""The deterministic multi-session scheduler: one worker thread per logical session.

A caller (a Hypothesis machine, a replay) submits one step at a time to one session. The step
runs on that session's own worker thread, so every connection the step checks out of the
system's engine belongs to that thread alone. `submit` returns only when the system is
quiescent: every session's worker is idle (its step returned or raised) or confirmed blocked
by the database on a lock. Nothing is ordered by sleeping: the scheduler asks the database who
is waiting, so the same sequence of submitted steps gives the same sequence of completions.

How a worker is tied to a database session: the scheduler listens to the pool of the system's
engine. On "connect" it reads the backend id once (PostgreSQL `pg_backend_pid()`, MariaDB and
MySQL `connection_id()`) into the connection record's `info`; on "checkout" it notes which
thread holds that id, on "checkin" it forgets it. The listeners are removed by `close()`.

How "blocked" is decided, through a monitor connection of the scheduler's own (a NullPool
engine on the same URL, never a connection of the system's pool):

- PostgreSQL: `pg_blocking_pids()` (and `pg_safe_snapshot_blocking_pids()`) is non-empty. They
  read the lock table, which the releasing backend updates before its COMMIT returns;
  `pg_stat_activity.wait_event` is not used because the waiter clears it only once it has woken
  up, so right after a release it still says "Lock".
- MariaDB / MySQL: the transaction of the connection is shown waiting for a lock in
  `SHOW ENGINE INNODB STATUS` ("TRX HAS BEEN WAITING ... FOR THIS LOCK TO BE GRANTED", which
  the releasing transaction clears), or the process list state says it waits for a metadata,
  table or user lock. `information_schema.INNODB_TRX` is not used: the server serves it from a
  cache that is refreshed only when it was not read for 0.1 s, so a scheduler polling it sees
  a stale picture forever. Needs the PROCESS privilege.
- SQLite: nothing ever waits. The caller must give the system's engine a busy timeout of 0
  (sqlite3 `timeout=0`, or `PRAGMA busy_timeout = 0` on connect) so a conflicting write fails
  at once with SQLITE_BUSY ("database is locked"): an error outcome, not a block. The
  scheduler refuses an SQLite engine with any other busy timeout.

Deadlocks. A wait cycle among the scheduler's sessions is left to the database: MariaDB breaks
it at once (error 1213), PostgreSQL after `deadlock_timeout` (1 s by default; the process whose
timer fires first after the cycle closed is the victim, normally the one that waited longest).
The scheduler waits for that (read from the monitor connection, plus a margin) before it calls
the system quiescent, so the victim's error is a completion of the step that closed the cycle.
A cycle still there after that time is exposed as `deadlocked`; every session blocked at once
is exposed by `all_blocked()`. Callers report either as a finding: a stall the database did
not resolve.

Limits: a step must do its database work on its worker thread (threads it starts are not
seen); the system's pool needs at least as many connections as sessions (a step waiting for a
pooled connection is invisible to the database, so it ends in `SchedulerTimeout`); the
scheduler is driven from one thread; MariaDB wait cycles are not seen, only stalls.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

from uowstress.errors import DatabaseUnreachable, UowstressError
from uowstress.scratch import hide_secrets

__all__ = ["Completion", "Outcome", "Scheduler", "SchedulerTimeout", "current_session"]

# Where the backend id of a DBAPI connection is kept; `info` lives as long as the connection.
_INFO_KEY = "uowstress.sessions.backend_id"
# Polling for a lock wait starts fast (most blocks show within a millisecond) and backs off.
_FIRST_POLL_S = 0.001
_MAX_POLL_S = 0.01
# A wait read from status text (process list) is cleared by the waiter itself when it wakes,
# so it counts only when seen again this much later with nothing finished in between.
_CONFIRM_LAGGING_S = 0.02
# After a kill, how long the server may take to end the killed sessions.
_KILL_WAIT_S = 5.0
_JOIN_S = 5.0
_MONITOR_CONNECT_TIMEOUT_S = 5
# How a connection asks the server for its own session's id, by dialect family.
BACKEND_ID_QUERIES = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}

_local = threading.local()


@dataclass(frozen=True)
class Outcome:
    """What a step did: returned `value` (ok) or raised `error`."""

    ok: bool
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Completion:
    """Step number `step` (counted over all sessions from 0) on `session` finished."""

    session: int
    step: int
    outcome: Outcome


class SchedulerTimeout(UowstressError):
    """A step neither finished nor was reported blocked by the database in time."""

    def __init__(self, message: str, *, session: int, step: int) -> None:
        super().__init__(message)
        self.session = session
        self.step = step


def current_session() -> int | None:
    """The session whose worker thread calls this, None outside the scheduler's workers.

    Lets one `abandon` callable (see `Scheduler.close`) find the work of its own session.
    """
    session = getattr(_local, "session", None)
    return session if isinstance(session, int) else None


@dataclass(frozen=True)
class _Wait:
    """A session seen waiting on a lock."""

    on: frozenset[int]  # sessions of this scheduler holding what it waits for (maybe unknown)
    exact: bool  # False: the signal lags behind the release and needs a second look


class _Detector(Protocol):
    grace_s: float  # how long the database may take to break a wait cycle

    def poll(
        self, running: Collection[int], held: Mapping[int, frozenset[int]]
    ) -> dict[int, _Wait]:
        """The running sessions that wait on a lock; `held`: backend ids of every session."""
        ...

    def kill(self, sessions: Collection[int], held: Mapping[int, frozenset[int]]) -> frozenset[int]:
        """End the database sessions of `sessions`; returns the backend ids it ended."""
        ...

    def alive(self, backend_ids: Collection[int]) -> frozenset[int]: ...

    def close(self) -> None: ...


def backend_id(dbapi_connection: Any, record: ConnectionPoolEntry, query: str) -> int:
    """The server's id of a pooled connection's session, asked once and kept in its record."""
    known = record.info.get(_INFO_KEY)
    if isinstance(known, int):
        return known
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(query)
        row = cursor.fetchone()
    finally:
        cursor.close()
    # The query may have opened a transaction; hand the connection on as it came.
    dbapi_connection.rollback()
    found = int(row[0])
    record.info[_INFO_KEY] = found
    return found


def _owners(held: Mapping[int, frozenset[int]]) -> dict[int, int]:
    return {backend_id: session for session, ids in held.items() for backend_id in ids}


_monitor_engines: dict[str, Engine] = {}
_monitor_engines_lock = threading.Lock()


def monitor_engine(url: URL) -> Engine:
    """A NullPool engine on `url`, one per URL and process.

    NullPool keeps no connection, so each scheduler still opens (and closes) its own monitor
    connection; sharing the engine only saves the dialect's first-connect queries, which cost
    as much as the connection itself on some servers.
    """
    key = url.render_as_string(hide_password=False)
    with _monitor_engines_lock:
        engine = _monitor_engines.get(key)
        if engine is None:
            engine = create_engine(
                url,
                poolclass=NullPool,
                connect_args={"connect_timeout": _MONITOR_CONNECT_TIMEOUT_S},
            )
            _monitor_engines[key] = engine
        return engine


class _ServerDetector:
    """What PostgreSQL and MariaDB detectors share: one autocommit monitor connection."""

    grace_s = 0.0

    def __init__(self, engine: Engine) -> None:
        url = engine.url
        # The engine reaches the run's scratch database, gone by the time a message is read:
        # named by the server and user the run was given.
        port = f":{url.port}" if url.port is not None else ""
        user = f" as {url.username}" if url.username else ""
        self._display = (
            f"the {url.get_backend_name()} server at {url.host or 'localhost'}{port}{user}"
        )
        self._engine = monitor_engine(url)
        try:
            self._connection: Connection = self._engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        except (sa_exc.SQLAlchemyError, OSError) as error:
            orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
            lines = str(orig).strip().splitlines()
            reason = hide_secrets(lines[0] if lines else type(orig).__name__, url)
            hidden = hide_secrets(str(error), url) != str(error)
            unreachable = DatabaseUnreachable(
                f"the scheduler cannot open its monitor connection to {self._display}:"
                f" {reason}. It needs one connection besides the system's; check that the"
                " server accepts another connection from this user."
            )
            if hidden:
                raise unreachable from None
            raise unreachable from error

    def close(self) -> None:
        with contextlib.suppress(sa_exc.SQLAlchemyError):
            self._connection.close()


class _PostgresDetector(_ServerDetector):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._blocking = text(
            "SELECT p, pg_blocking_pids(p) || pg_safe_snapshot_blocking_pids(p)"
            " FROM unnest(CAST(:pids AS integer[])) AS p"
        )
        row = self._connection.execute(
            text("SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout'")
        ).one()
        deadlock_timeout_s = float(row[0]) / 1000.0
        # The timer of the session that closes a cycle fires at most deadlock_timeout after
        # the cycle is seen; the margin covers a loaded machine.
        self.grace_s = 2 * deadlock_timeout_s + 0.5

    def poll(
        self, running: Collection[int], held: Mapping[int, frozenset[int]]
    ) -> dict[int, _Wait]:
        pids = sorted({pid for session in running for pid in held.get(session, frozenset())})
        if not pids:
            return {}
        rows = self._connection.execute(self._blocking, {"pids": pids}).all()
        blockers = {int(pid): [int(b) for b in found] for pid, found in rows if found}
        owners = _owners(held)
        waits: dict[int, _Wait] = {}
        for session in running:
            found = [b for pid in held.get(session, frozenset()) for b in blockers.get(pid, [])]
            if found:
                on = frozenset(owners[b] for b in found if b in owners)
                waits[session] = _Wait(on=on, exact=True)
        return waits

    def kill(self, sessions: Collection[int], held: Mapping[int, frozenset[int]]) -> frozenset[int]:
        pids = frozenset(pid for session in sessions for pid in held.get(session, frozenset()))
        if pids:
            # Only backends of this database and user: a process id the server has since given
            # to another program's connection is left alone.
            self._connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid = ANY(CAST(:pids AS integer[]))"
                    " AND datname = current_database() AND usename = current_user"
                ),
                {"pids": sorted(pids)},
            )
        return pids

    def alive(self, backend_ids: Collection[int]) -> frozenset[int]:
        if not backend_ids:
            return frozenset()
        rows = self._connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(CAST(:pids AS integer[]))"),
            {"pids": sorted(backend_ids)},
        ).all()
        return frozenset(int(row[0]) for row in rows)


_TRANSACTIONS_MARK = "LIST OF TRANSACTIONS FOR EACH SESSION:"
_THREAD_ID = re.compile(r"(?:MySQL|MariaDB) thread id (\d+)")
_LOCK_WAIT_MARK = "TRX HAS BEEN WAITING"


def _innodb_lock_waiters(status: str) -> set[int]:
    """Thread ids whose InnoDB transaction waits for a lock, from SHOW ENGINE INNODB STATUS."""
    start = status.find(_TRANSACTIONS_MARK)
    if start < 0:
        return set()
    waiting = set()
    for block in status[start:].split("---TRANSACTION ")[1:]:
        found = _THREAD_ID.search(block)
        if found and _LOCK_WAIT_MARK in block:
            waiting.add(int(found.group(1)))
    return waiting


def _state_waits_for_lock(state: str | None) -> bool:
    """A process list state of a thread waiting for a server-level (not InnoDB row) lock."""
    if not state:
        return False
    # "Waiting for table metadata lock", "... table level lock", "... global read lock";
    # GET_LOCK() waits show "User lock".
    return state == "User lock" or (state.startswith("Waiting for") and state.endswith("lock"))


class _MysqlDetector(_ServerDetector):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        try:
            self._status()
        except sa_exc.DBAPIError as error:
            self.close()
            raise UowstressError(
                f"the scheduler cannot read lock waits on {self._display}: SHOW ENGINE INNODB"
                f" STATUS failed ({str(error.orig).strip().splitlines()[0]}). Grant the user the"
                " PROCESS privilege: GRANT PROCESS ON *.* TO <user>"
            ) from None
        self._processes = text(
            "SELECT ID, STATE FROM information_schema.PROCESSLIST WHERE ID IN :ids"
        ).bindparams(bindparam("ids", expanding=True))

    def _status(self) -> str:
        row = self._connection.execute(text("SHOW ENGINE INNODB STATUS")).one()
        return str(row[2])

    def poll(
        self, running: Collection[int], held: Mapping[int, frozenset[int]]
    ) -> dict[int, _Wait]:
        ids = sorted({i for session in running for i in held.get(session, frozenset())})
        if not ids:
            return {}
        row_waiters = _innodb_lock_waiters(self._status())
        server_waiters = {
            int(thread_id)
            for thread_id, state in self._connection.execute(self._processes, {"ids": ids})
            if _state_waits_for_lock(state)
        }
        waits: dict[int, _Wait] = {}
        for session in running:
            mine = held.get(session, frozenset())
            # InnoDB does not name the holder here, so `on` stays unknown.
            if mine & row_waiters:
                waits[session] = _Wait(on=frozenset(), exact=True)
            elif mine & server_waiters:
                waits[session] = _Wait(on=frozenset(), exact=False)
        return waits

    def kill(self, sessions: Collection[int], held: Mapping[int, frozenset[int]]) -> frozenset[int]:
        ids = frozenset(i for session in sessions for i in held.get(session, frozenset()))
        for thread_id in sorted(ids):
            # Already gone is fine: ending it was the point.
            with contextlib.suppress(sa_exc.DBAPIError):
                self._connection.execute(text(f"KILL CONNECTION {int(thread_id)}"))
        return ids

    def alive(self, backend_ids: Collection[int]) -> frozenset[int]:
        if not backend_ids:
            return frozenset()
        rows = self._connection.execute(self._processes, {"ids": sorted(backend_ids)}).all()
        return frozenset(int(row[0]) for row in rows)


def dialect_family(engine: Engine) -> str:
    name = engine.dialect.name
    if name in ("mysql", "mariadb"):
        return "mysql"
    if name in ("postgresql", "sqlite"):
        return name
    raise ValueError(
        f"the scheduler supports PostgreSQL, MariaDB/MySQL and SQLite engines, not {name!r}:"
        " it must ask the database which sessions wait on a lock"
    )


def _make_detector(engine: Engine) -> _Detector | None:
    """The lock-wait detector for the engine's database; None for SQLite, which never waits."""
    backend = dialect_family(engine)
    if backend == "postgresql":
        return _PostgresDetector(engine)
    if backend == "mysql":
        return _MysqlDetector(engine)
    return None


def _check_sqlite_busy_timeout(engine: Engine) -> None:
    with engine.connect() as connection:
        busy_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    if busy_ms != 0:
        raise ValueError(
            f"the SQLite engine has a busy timeout of {busy_ms} ms; the scheduler needs 0, so"
            " that a conflicting write fails at once with SQLITE_BUSY instead of waiting where"
            " no lock table shows it. Create the engine with the sqlite3 argument timeout=0"
            " (or run PRAGMA busy_timeout = 0 on connect)."
        )


def _on_cycle(edges: Mapping[int, frozenset[int]]) -> frozenset[int]:
    """The sessions that wait, through other waiting sessions, on themselves."""
    found = set()
    for start in edges:
        stack = list(edges[start])
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if node == start:
                found.add(start)
                break
            # A holder that is not waiting can still act: no cycle through it.
            if node in seen or node not in edges:
                continue
            seen.add(node)
            stack.extend(edges[node])
    return frozenset(found)


@dataclass(frozen=True)
class _Task:
    step: int
    fn: Callable[[], Any]


class _Worker:
    """One session's thread: runs its tasks in order and reports each completion."""

    def __init__(self, session: int, report: Callable[[int, int, Outcome], None]) -> None:
        self.session = session
        self.tasks: queue.Queue[_Task | None] = queue.Queue()
        self._report = report
        self.thread = threading.Thread(
            target=self._run, name=f"uowstress-session-{session}", daemon=True
        )
        self.thread.start()
        ident = self.thread.ident
        assert ident is not None  # set before start() returns
        self.ident = ident

    def _run(self) -> None:
        _local.session = self.session
        while True:
            task = self.tasks.get()
            if task is None:
                return
            try:
                outcome = Outcome(ok=True, value=task.fn())
            except BaseException as error:  # every failure of a step is an outcome
                outcome = Outcome(ok=False, error=error)
            self._report(self.session, task.step, outcome)


class Scheduler:
    """Runs steps of `sessions` logical sessions against `engine`, one step at a time.

    `engine` is the system's own engine: the scheduler watches its pool to learn which
    database session each worker uses. Use it from one thread, and end it with `close()` (or
    a `with` block).
    """

    def __init__(self, engine: Engine, sessions: int, *, step_timeout_s: float = 30.0) -> None:
        if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
            raise ValueError(f"sessions must be a positive number of sessions, got {sessions!r}")
        if not step_timeout_s > 0:
            raise ValueError(f"step_timeout_s must be positive seconds, got {step_timeout_s!r}")
        backend = dialect_family(engine)
        if backend == "sqlite":
            _check_sqlite_busy_timeout(engine)
        self._engine = engine
        self._count = sessions
        self._step_timeout_s = float(step_timeout_s)
        self._id_query = BACKEND_ID_QUERIES.get(backend)
        self._cond = threading.Condition()
        self._next_step = 0
        self._pending: dict[int, int] = {}  # session -> step submitted and not yet reported
        self._finished: dict[int, Completion] = {}
        self._epoch = 0  # completions so far: a reading older than one may predate a release
        self._blocked: frozenset[int] = frozenset()
        self._deadlocked: frozenset[int] = frozenset()
        self._failure: str | None = None
        self._closed = False
        # Re-entrant: SQLAlchemy checks a forgotten connection in from a garbage-collection
        # callback, which may run inside this lock's region on the same thread.
        self._held_lock = threading.RLock()
        # thread ident -> {connection record: backend id} of the connections it has out.
        self._held: dict[int, dict[ConnectionPoolEntry, int]] = {}
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("connect", self._on_connect),
            ("checkout", self._on_checkout),
            ("checkin", self._on_checkin),
        ]
        self._detector = _make_detector(engine)
        for name, listener in self._listeners:
            event.listen(engine, name, listener)
        self._workers = [_Worker(index, self._report) for index in range(sessions)]

    # -- pool events -------------------------------------------------------------------------

    def _identify(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> int | None:
        if self._id_query is None:
            return None
        return backend_id(dbapi_connection, record, self._id_query)

    def _on_connect(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        self._identify(dbapi_connection, record)

    def _on_checkout(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        # Connections opened before the scheduler was attached are identified here.
        backend_id = self._identify(dbapi_connection, record)
        if backend_id is None:
            return
        with self._held_lock:
            self._held.setdefault(threading.get_ident(), {})[record] = backend_id

    def _on_checkin(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        with self._held_lock:
            for records in self._held.values():
                records.pop(record, None)

    def _held_ids(self) -> dict[int, frozenset[int]]:
        with self._held_lock:
            return {
                worker.session: frozenset(self._held.get(worker.ident, {}).values())
                for worker in self._workers
            }

    # -- public API --------------------------------------------------------------------------

    @property
    def blocked(self) -> frozenset[int]:
        """Sessions whose pending step the database showed blocked, as of the last submit."""
        with self._cond:
            return self._blocked

    @property
    def deadlocked(self) -> frozenset[int]:
        """Sessions in a wait cycle the database did not break in time (a finding)."""
        with self._cond:
            return self._deadlocked

    def all_blocked(self) -> bool:
        """True when every session has a blocked step, so no session can take a step: a stall.

        The database reported no deadlock (that would have ended one of the steps), so
        callers report this as a finding: a deadlock or lock wait the database did not end.
        """
        with self._cond:
            return len(self._blocked) == self._count

    def submit(self, session: int, fn: Callable[[], Any]) -> list[Completion]:
        """Run `fn` as the next step of `session` and wait until the system is quiescent.

        Returns every completion since the last call, ordered by session: the submitted
        step's if it finished, and those of blocked steps it released. A step that is left
        blocked shows in `blocked` and completes in a later call. Raises ValueError if the
        session is still blocked on its previous step, SchedulerTimeout if quiescence does
        not come within step_timeout_s.
        """
        if isinstance(session, bool) or not isinstance(session, int):
            raise ValueError(f"session must be a session number, got {session!r}")
        if not 0 <= session < self._count:
            raise ValueError(
                f"session {session} does not exist; this scheduler runs sessions 0 to"
                f" {self._count - 1}"
            )
        with self._cond:
            if self._closed:
                raise UowstressError("the scheduler is closed; create a new one for a new run")
            if self._failure is not None:
                raise UowstressError(
                    f"the scheduler stopped after an earlier failure ({self._failure}); call"
                    " close() to end the run"
                )
            if session in self._pending and session not in self._finished:
                raise ValueError(
                    f"session {session} is still blocked on step {self._pending[session]}; it"
                    " takes no new step until another session releases the lock (commit or"
                    " roll back the holder) or the run is closed"
                )
            carried = self._take_finished_locked()
            self._enqueue_locked(session, fn)
        try:
            self._settle(time.monotonic() + self._step_timeout_s)
        except SchedulerTimeout as timeout:
            with self._cond:
                self._failure = str(timeout)
                # Completions of this call are handed out by close() instead.
                self._finished.update({c.session: c for c in carried})
            raise
        with self._cond:
            return sorted(carried + self._take_finished_locked(), key=lambda c: (c.session, c.step))

    def close(self, *, abandon: Callable[[], None] | None = None) -> list[Completion]:
        """End the run: release or kill blocked steps, stop the workers, detach from the engine.

        `abandon`, if given, is run once on each session's worker thread (see
        `current_session`) to give up that session's open work, e.g. roll back its Unit of
        Work, which may release sessions blocked by it. It goes each time to the
        lowest-numbered idle session not yet abandoned; steps still blocked when none is left
        have their database connections killed by the monitor (pg_terminate_backend / KILL),
        and are abandoned once they have failed (closing a killed connection raises, so an
        `abandon` that closes several must go on past a failure). Returns the completions
        since the last submit, abandon calls included (they take step numbers like submitted
        steps), in the order they happened (by session within one wait). Takes at most about
        twice step_timeout_s plus a few seconds; raises SchedulerTimeout, after cleaning up,
        if a worker is still running.
        """
        with self._cond:
            if self._closed:
                return []
            self._closed = True
            out = self._take_finished_locked()
            # Running yet not blocked happens only after a SchedulerTimeout.
            running = frozenset(self._running_locked() - self._blocked)
        stuck: list[_Worker] = []
        try:
            if running:
                # Ended first, so that abandoning the others does not wait on them.
                self._kill(running)
            with self._cond:
                ignore = frozenset(self._running_locked() & running)
            abandoned: set[int] = set()
            if abandon is not None:
                out += self._abandon_idle(abandon, abandoned, ignore)
            with self._cond:
                pending = frozenset(self._running_locked())
            if pending:
                self._kill(pending)
            with self._cond:
                out += self._take_finished_locked()
            if abandon is not None:
                out += self._abandon_idle(abandon, abandoned, ignore)
        finally:
            for worker in self._workers:
                worker.tasks.put(None)
            join_until = time.monotonic() + _JOIN_S
            for worker in self._workers:
                worker.thread.join(max(0.0, join_until - time.monotonic()))
                if worker.thread.is_alive():
                    stuck.append(worker)
            for name, listener in self._listeners:
                # The pool may have been replaced (engine.dispose()); nothing left to remove.
                with contextlib.suppress(sa_exc.InvalidRequestError):
                    event.remove(self._engine, name, listener)
            if self._detector is not None:
                self._detector.close()
        with self._cond:
            out += self._take_finished_locked()
            self._blocked = frozenset()
        if stuck:
            first = stuck[0]
            step = self._pending.get(first.session, -1)
            raise SchedulerTimeout(
                f"session {first.session} is still running step {step} after close(): the"
                " step waits on something the database cannot see or end (a Python lock, an"
                " SQLite busy timeout, a connection pool wait). Its thread is a daemon and is"
                " left behind; make the step return.",
                session=first.session,
                step=step,
            )
        return out

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- machinery ---------------------------------------------------------------------------

    def _report(self, session: int, step: int, outcome: Outcome) -> None:
        with self._cond:
            self._finished[session] = Completion(session, step, outcome)
            self._epoch += 1
            self._cond.notify_all()

    def _enqueue_locked(self, session: int, fn: Callable[[], Any]) -> int:
        step = self._next_step
        self._next_step += 1
        self._pending[session] = step
        self._workers[session].tasks.put(_Task(step, fn))
        return step

    def _take_finished_locked(self) -> list[Completion]:
        taken = sorted(self._finished.values(), key=lambda c: c.session)
        for completion in taken:
            if self._pending.get(completion.session) == completion.step:
                del self._pending[completion.session]
        self._finished.clear()
        self._blocked = self._blocked & frozenset(self._pending)
        self._deadlocked = self._deadlocked & frozenset(self._pending)
        return taken

    def _running_locked(self) -> set[int]:
        return set(self._pending) - set(self._finished)

    def _kill(self, sessions: frozenset[int]) -> None:
        """End the database sessions of pending steps and wait (bounded) for those steps."""
        if self._detector is None:
            return
        victims = self._detector.kill(sorted(sessions), self._held_ids())
        self._settle(time.monotonic() + min(self._step_timeout_s, _KILL_WAIT_S), False)
        self._wait_gone(victims)

    def _abandon_idle(
        self, abandon: Callable[[], None], abandoned: set[int], ignore: frozenset[int]
    ) -> list[Completion]:
        """Run `abandon` on every idle session not yet abandoned, until none is left."""
        out: list[Completion] = []
        deadline = time.monotonic() + self._step_timeout_s
        while time.monotonic() < deadline:
            with self._cond:
                out += self._take_finished_locked()
                idle = [
                    s for s in range(self._count) if s not in self._pending and s not in abandoned
                ]
                if not idle:
                    break
                session = idle[0]
                abandoned.add(session)
                self._enqueue_locked(session, abandon)
            self._settle(deadline, raise_on_timeout=False, ignore=ignore)
        with self._cond:
            out += self._take_finished_locked()
        return out

    def _changed_since(self, epoch: int) -> Callable[[], bool]:
        return lambda: self._epoch != epoch

    def _wait_gone(self, backend_ids: frozenset[int]) -> None:
        """Wait (bounded) until the server has ended the killed sessions."""
        if self._detector is None or not backend_ids:
            return
        until = time.monotonic() + _KILL_WAIT_S
        while self._detector.alive(backend_ids) and time.monotonic() < until:
            # Cleanup only: no step is ordered by this wait.
            time.sleep(0.005)

    def _settle(
        self, deadline: float, raise_on_timeout: bool = True, ignore: frozenset[int] = frozenset()
    ) -> None:
        """Wait until every pending step (but those in `ignore`, known stuck) has finished or
        is blocked by the database."""
        interval = _FIRST_POLL_S
        lagging_since: dict[int, float] = {}
        cycle_since: float | None = None
        while True:
            with self._cond:
                running = self._running_locked() - ignore
                if not running:
                    self._blocked, self._deadlocked = frozenset(), frozenset()
                    return
                epoch = self._epoch
                # Most steps finish within the first wait, without asking the database.
                if self._cond.wait_for(self._changed_since(epoch), timeout=interval):
                    interval = _FIRST_POLL_S
                    continue
            waits = (
                self._detector.poll(running, self._held_ids()) if self._detector is not None else {}
            )
            now = time.monotonic()
            with self._cond:
                if self._epoch != epoch:
                    # A step finished while the database was read: the reading may predate
                    # the locks that step released.
                    lagging_since.clear()
                    cycle_since = None
                    interval = _FIRST_POLL_S
                    continue
            if set(waits) == running:
                lagging = {s for s, wait in waits.items() if not wait.exact}
                lagging_since = {s: lagging_since.get(s, now) for s in lagging}
                if all(now - since >= _CONFIRM_LAGGING_S for since in lagging_since.values()):
                    cycle = _on_cycle({s: wait.on for s, wait in waits.items()})
                    if not cycle:
                        cycle_since = None
                    elif cycle_since is None:
                        cycle_since = now
                    # A cycle is the database's to break; past its detection time it is ours.
                    # One already reported (its steps still pending) is not waited for again.
                    grace = self._detector.grace_s if self._detector is not None else 0.0
                    with self._cond:
                        known = bool(cycle) and cycle <= self._deadlocked
                    if (
                        cycle_since is None
                        or known
                        or now - cycle_since >= grace
                        or now >= deadline
                    ):
                        with self._cond:
                            self._blocked = frozenset(running)
                            self._deadlocked = cycle
                        return
            else:
                lagging_since.clear()
                cycle_since = None
            if now >= deadline:
                with self._cond:
                    stalled = sorted(set(running) - set(waits))
                    session = stalled[0] if stalled else min(running)
                    step = self._pending[session]
                if not raise_on_timeout:
                    return
                raise SchedulerTimeout(
                    f"step {step} on session {session} neither finished nor was reported"
                    f" blocked by the database within {self._step_timeout_s:g} s. It may wait"
                    " on something the database cannot see (a connection pool with fewer"
                    " connections than sessions, a Python lock, an SQLite busy timeout) or"
                    " just run longer: find what it waits on, or raise step_timeout_s. Call"
                    " close() to end the run.",
                    session=session,
                    step=step,
                )
            interval = min(interval * 2, _MAX_POLL_S)
