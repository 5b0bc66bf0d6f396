"""The register workload: a tiny table of integer registers, read and written by several
sessions at one isolation level, with everything recorded for the anomaly checker.

The table ``uows_registers(k INTEGER PRIMARY KEY, v INTEGER NOT NULL)`` holds the rows
``k = 0 .. KEYS - 1``, each with the value 0 when a run starts; that state is recorded as a
setup transaction (T0, on session -1) committed before anything else, so a read of 0 names it.
Every later write carries a value unique in the run, so every read names its writer.

A step is JSON, like the other machines'::

    {"session": 0, "action": "begin"}
    {"session": 0, "action": "read", "key": 1}
    {"session": 0, "action": "write", "key": 1, "value": 7}     # UPDATE
    {"session": 0, "action": "rmw", "key": 1, "value": 8}       # SELECT, then UPDATE
    {"session": 0, "action": "insert", "key": 1, "value": 9}
    {"session": 0, "action": "delete", "key": 1}
    {"session": 0, "action": "pread", "predicate": "even"}      # or "all"
    {"session": 0, "action": "commit"}                          # or "rollback"

Each session holds one connection for its whole life, opened on its worker thread at its first
step, with explicit BEGIN / COMMIT / ROLLBACK. A failed statement (deadlock victim,
serialization failure, duplicate key, SQLite's "database is locked") ends its transaction: the
worker rolls it back in the same step, so every backend leaves the same state behind, and the
history records the failed operation and the abort. A write or delete that matched no row
changed nothing: it is recorded as a read of the key as absent (the checker's rule).

Recording follows the real order: invokes before the step is submitted,
completions from what the scheduler hands back, in the order they happened as far as it can be
told (see ``RegisterRun._record``). A step sent to a blocked session waits, in that session's
order, until the session is released; a step that no longer fits its session (an operation
with no transaction open) is skipped, so shrunk step lists replay.

The machine (:func:`register_machine`) draws 2-3 sessions, 2-4 keys and the steps; which
session acts is drawn among those the database has not blocked.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from uowstress.anomalies import Predicate
from uowstress.errors import ReproducerError, UowstressError
from uowstress.history import History, Op, Row, ins, pr, r, w
from uowstress.history import delete as del_op
from uowstress.scratch import backend_name
from uowstress.sessions import Completion, Outcome, Scheduler, SchedulerTimeout, current_session

__all__ = [
    "ACTIONS",
    "INITIAL_VALUE",
    "KEYS",
    "PREDICATES",
    "RegisterRun",
    "RegisterWorkload",
    "Step",
    "create_table",
    "describe_step",
    "drop_table",
    "history_key",
    "isolation_levels",
    "register_engine",
    "register_machine",
    "registers",
    "replay_steps",
    "reset_table",
    "step_sessions",
    "validate_steps",
]

Step = dict[str, Any]

#: Rows of the table: keys 0 .. KEYS - 1. A run uses the first 2 to 4 of them.
KEYS = 4
#: The value of every row when a run starts (written by the setup transaction T0).
INITIAL_VALUE = 0
SETUP_SESSION, SETUP_TXN = -1, 0

ACTIONS = ("begin", "read", "write", "rmw", "insert", "delete", "pread", "commit", "rollback")
_WITH_VALUE = frozenset({"write", "rmw", "insert"})
_WITH_KEY = frozenset({"read", "write", "rmw", "insert", "delete"})

metadata = MetaData()
registers = Table(
    "uows_registers",
    metadata,
    Column("k", Integer, primary_key=True, autoincrement=False),
    Column("v", Integer, nullable=False),
)


def _even(_key: str, value: Any) -> bool:
    return isinstance(value, int) and value % 2 == 0


def _any(_key: str, _value: Any) -> bool:
    return True


#: The predicate reads, by name: the checker needs their definitions to see phantoms (G2).
PREDICATES: Mapping[str, Predicate] = {"even": _even, "all": _any}
_PREDICATE_SQL = {"even": registers.c.v % 2 == 0, "all": None}

# The SQL spelling of each isolation level, per backend. SQLite has only serializable (read
# uncommitted needs a shared cache, which one file opened by several connections has not).
_LEVELS: dict[str, tuple[str, ...]] = {
    "postgresql": ("read uncommitted", "read committed", "repeatable read", "serializable"),
    "mysql": ("read uncommitted", "read committed", "repeatable read", "serializable"),
    "sqlite": ("serializable",),
}

# PostgreSQL breaks a deadlock only after deadlock_timeout (1 s by default), which would make
# every deadlock of the search cost a second. Lowered for the workload's own connections; long
# enough that the session waiting first is still the victim (steps follow each other within
# milliseconds), so replays stay deterministic.
_PG_DEADLOCK_TIMEOUT = "200ms"


def history_key(key: int) -> str:
    """The checker's name of register ``key``."""
    return f"k{key}"


def isolation_levels(backend: str) -> tuple[str, ...]:
    """The isolation levels ``backend`` accepts, in lower case, weakest first."""
    try:
        return _LEVELS[backend]
    except KeyError:
        raise ValueError(
            f"unknown backend {backend!r}; use one of {', '.join(sorted(_LEVELS))}"
        ) from None


def _no_driver_transactions(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # sqlite3 would otherwise begin a transaction only at the first write, so reads before it
    # would see no snapshot; BEGIN is sent by _begin instead. Busy timeout 0: a lock conflict
    # must fail at once, since nothing shows an SQLite lock wait (see sessions.py).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 0")
    finally:
        cursor.close()


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def register_engine(url: str | URL, level: str) -> Engine:
    """An engine on ``url`` whose connections run at isolation ``level`` (lower case, as in
    :func:`isolation_levels`), ready for the scheduler."""
    backend = backend_name(url)
    levels = isolation_levels(backend)
    if level not in levels:
        raise ValueError(
            f"{backend} does not offer isolation level {level!r}; use one of {', '.join(levels)}"
        )
    parsed = make_url(url) if isinstance(url, str) else url
    sql_level = level.upper()
    if backend == "sqlite":
        engine = create_engine(parsed, isolation_level=sql_level)
        event.listen(engine, "connect", _no_driver_transactions)
        event.listen(engine, "begin", _begin)
        return engine
    if backend == "postgresql":
        parsed = _with_deadlock_timeout(parsed)
    # pre-ping: a connection the scheduler killed at the end of a run is not handed out again.
    return create_engine(parsed, isolation_level=sql_level, pool_pre_ping=True)


def _with_deadlock_timeout(url: URL) -> URL:
    """``url`` with a short deadlock_timeout, if the server lets this user set it."""
    existing = url.query.get("options")
    if isinstance(existing, tuple):
        existing = " ".join(existing)
    option = f"-cdeadlock_timeout={_PG_DEADLOCK_TIMEOUT}"
    candidate = url.update_query_dict({"options": f"{existing} {option}" if existing else option})
    probe = create_engine(candidate, pool_size=1)
    try:
        with probe.connect():
            return candidate
    except sa_exc.DBAPIError:
        # Setting it needs superuser (or a grant): run with the server's value, only slower.
        return url
    finally:
        probe.dispose()


def create_table(engine: Engine) -> None:
    """Create the register table (if missing) with its initial rows."""
    metadata.create_all(engine)
    reset_table(engine)


def drop_table(engine: Engine) -> None:
    """Drop the register table, if there is one."""
    registers.drop(engine, checkfirst=True)


def reset_table(engine: Engine) -> None:
    """Put every register back to its initial value: the state every run starts from."""
    with engine.begin() as connection:
        connection.execute(delete(registers))
        connection.execute(insert(registers), [{"k": k, "v": INITIAL_VALUE} for k in range(KEYS)])


# ---------------------------------------------------------------------------------------------
# Steps


def _int(step: Mapping[str, Any], name: str, where: str) -> int:
    value = step.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReproducerError(f"{where}: {name!r} must be an integer, got {value!r}")
    return value


def validate_steps(steps: Iterable[Mapping[str, Any]]) -> list[Step]:
    """The steps as plain dicts, or ReproducerError naming the first malformed one."""
    out: list[Step] = []
    values: set[int] = set()
    for n, step in enumerate(steps, 1):
        where = f"step {n}"
        if not isinstance(step, Mapping):
            raise ReproducerError(f"{where}: a step is an object, got {step!r}")
        session = _int(step, "session", where)
        if session < 0:
            raise ReproducerError(f"{where}: session must be 0 or more, got {session}")
        action = step.get("action")
        if action not in ACTIONS:
            raise ReproducerError(
                f"{where}: unknown action {action!r}; use one of {', '.join(ACTIONS)}"
            )
        if action in _WITH_KEY:
            key = _int(step, "key", where)
            if not 0 <= key < KEYS:
                raise ReproducerError(f"{where}: key must be 0 to {KEYS - 1}, got {key}")
        if action in _WITH_VALUE:
            value = _int(step, "value", where)
            if value == INITIAL_VALUE or value in values:
                raise ReproducerError(
                    f"{where}: value {value} is used twice (or is the initial value); every"
                    " write needs its own value so that each read names its writer"
                )
            values.add(value)
        if action == "pread" and step.get("predicate") not in PREDICATES:
            raise ReproducerError(
                f"{where}: predicate must be one of {', '.join(PREDICATES)},"
                f" got {step.get('predicate')!r}"
            )
        out.append(dict(step))
    return out


def step_sessions(steps: Sequence[Mapping[str, Any]]) -> int:
    """How many sessions the steps need (sessions are numbered from 0)."""
    return 1 + max((int(s["session"]) for s in steps), default=0)


def describe_step(step: Mapping[str, Any]) -> str:
    """A step in a few words, e.g. ``write k1 = 7``."""
    action = step.get("action")
    if action in ("write", "insert"):
        return f"{action} k{step.get('key')} = {step.get('value')}"
    if action == "rmw":
        return f"rmw k{step.get('key')} := {step.get('value')}"
    if action in ("read", "delete"):
        return f"{action} k{step.get('key')}"
    if action == "pread":
        return f"pread {step.get('predicate')}"
    return str(action)


def _error_text(error: BaseException) -> str:
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _unknown_outcome(error: BaseException | None) -> bool:
    """The connection died: whatever was in flight may or may not have happened."""
    return isinstance(error, sa_exc.DBAPIError) and bool(error.connection_invalidated)


@dataclass
class _Flight:
    """A submitted step whose completion is not recorded yet (one per session at most)."""

    action: str
    record: Callable[[Outcome], None]


class RegisterRun:
    """One run of the register workload: a connection per session, and a History.

    Use from one thread; end with :meth:`close`. The table must be in its initial state
    (:func:`reset_table`) when the run starts. Without ``scheduler`` the run makes its own and
    closes it at the end; with one (of a :class:`RegisterWorkload`, at least ``sessions``
    workers, no step pending) it leaves it idle for the next run if it can, else closes it
    (then ``scheduler_closed`` is true).
    """

    def __init__(
        self,
        engine: Engine,
        sessions: int,
        *,
        scheduler: Scheduler | None = None,
        step_timeout_s: float = 30.0,
    ) -> None:
        if sessions < 1:
            raise ValueError(f"a run needs at least one session, got {sessions}")
        self.engine = engine
        self.sessions = sessions
        self.history = History()
        self.steps: list[Step] = []
        #: Per step, the transaction it acted in (None: skipped, or not run yet).
        self.step_txns: list[int | None] = []
        self.ended = 0  # transactions ended so far (committed, refused or rolled back)
        self.stall: str | None = None  # why the run cannot go on, if it cannot
        #: Keys whose row the latest committed change removed (the machine steers by it).
        self.absent: set[int] = set()
        self._presence: dict[int, dict[int, bool]] = {}  # txn -> key -> row left present
        self._record_setup()
        self._own_scheduler = scheduler is None
        self.scheduler = (
            scheduler
            if scheduler is not None
            else Scheduler(engine, sessions, step_timeout_s=step_timeout_s)
        )
        self.scheduler_closed = False
        self._connections: dict[int, Connection] = {}
        self._lock = threading.Lock()
        self._txn: dict[int, int] = {}  # session -> its open transaction
        self._next_txn = SETUP_TXN + 1
        self._flights: dict[int, _Flight] = {}
        self._deferred: dict[int, list[tuple[int, Step]]] = {}
        self._closed = False

    def _record_setup(self) -> None:
        h = self.history
        h.begin(SETUP_SESSION, SETUP_TXN)
        for k in range(KEYS):
            op = w(history_key(k), INITIAL_VALUE)
            h.invoke_op(SETUP_SESSION, SETUP_TXN, op)
            h.ok_op(SETUP_SESSION, SETUP_TXN, op)
        h.commit_invoke(SETUP_SESSION, SETUP_TXN)
        h.commit_ok(SETUP_SESSION, SETUP_TXN)

    # -- what a machine needs to draw steps ----------------------------------------------------

    def is_open(self, session: int) -> bool:
        """The session has a transaction open (or one in flight: its begin cannot block)."""
        return session in self._txn

    def is_blocked(self, session: int) -> bool:
        return session in self.scheduler.blocked

    def free_sessions(self) -> list[int]:
        if self.stall is not None:
            return []
        return [s for s in range(self.sessions) if not self.is_blocked(s)]

    # -- running steps -------------------------------------------------------------------------

    def run(self, step: Step) -> int:
        """Run one step; returns how many transactions ended during it.

        A step for a blocked session waits, in its session's order, until the session is
        released (replays of shrunk step lists need that). A step that no longer fits its
        session (an operation with no transaction open, a begin with one open: an earlier
        step that ended or opened the transaction was removed, or failed) is skipped.
        """
        if self._closed:
            raise UowstressError("this run is closed; start a new RegisterRun")
        session = int(step["session"])
        if not 0 <= session < self.sessions:
            raise ValueError(f"step names session {session}; this run has {self.sessions}")
        index = len(self.steps)
        self.steps.append(step)
        self.step_txns.append(None)
        before = self.ended
        if self.stall is not None:
            return 0
        if self.is_blocked(session) or self._deferred.get(session):
            self._deferred.setdefault(session, []).append((index, step))
            return 0
        self._submit(session, index, step)
        progress = True
        while progress and self.stall is None:
            progress = False
            for waiting, queued in sorted(self._deferred.items()):
                if queued and not self.is_blocked(waiting):
                    self._submit(waiting, *queued.pop(0))
                    progress = True
        return self.ended - before

    def _submit(self, session: int, index: int, step: Step) -> None:
        flight = self._prepare(session, index, step)
        if flight is None:
            return
        self._flights[session] = flight
        try:
            completions = self.scheduler.submit(session, self._work(step))
        except SchedulerTimeout as timeout:
            self.stall = str(timeout)
            return
        self._record(completions, first=session)
        blocked = self.scheduler.blocked
        if self.scheduler.deadlocked or set(range(self.sessions)) <= blocked:
            self.stall = (
                f"sessions {sorted(blocked)} all wait on each other and the database reported"
                " no deadlock"
            )

    def _record(self, completions: list[Completion], first: int | None) -> None:
        """Record completions in the order they happened, as far as it can be told: a step
        that ended its transaction (commit, rollback, failure) released the others, so it
        goes first; a submitted operation that was released went on after the failures (a
        deadlock victim's abort) that released it; released steps complete after their
        releaser. Without ``first`` (the end of a run) the given order is kept."""
        submitted = next((c for c in completions if c.session == first), None)
        flight = self._flights.get(first) if first is not None else None
        releaser = submitted is not None and (
            not submitted.outcome.ok
            or (flight is not None and flight.action in ("commit", "rollback"))
        )

        def order(c: Completion) -> tuple[int, int]:
            if first is None:
                return (0, 0)
            if c.session == first:
                return (0 if releaser else 1, c.session)
            return (0 if not c.outcome.ok else 2, c.session)

        for completion in sorted(completions, key=order):
            # A session has at most one step of the run in flight; a completion with none is
            # a step that ends the run (releasing the session's connection).
            done = self._flights.pop(completion.session, None)
            if done is not None:
                done.record(completion.outcome)

    def _prepare(self, session: int, index: int, step: Step) -> _Flight | None:
        """Record the invokes of ``step`` and return how to record its completion; None when
        the step does not fit the session's state."""
        action = step["action"]
        h = self.history
        if action == "begin":
            if self.is_open(session):
                return None
            txn = self._next_txn
            self._next_txn += 1
            self._txn[session] = txn
            self.step_txns[index] = txn

            def began(outcome: Outcome) -> None:
                h.begin(session, txn)
                if not outcome.ok:
                    self._end(session, txn)
                    h.abort(session, txn, _error_text(_must(outcome.error)))

            return _Flight(action, began)
        txn_or_none = self._txn.get(session)
        if txn_or_none is None:
            return None
        txn = txn_or_none
        self.step_txns[index] = txn
        if action in ("commit", "rollback"):
            if action == "commit":
                h.commit_invoke(session, txn)

            def ended(outcome: Outcome) -> None:
                self._end(session, txn)
                error = outcome.error
                if action == "rollback":
                    h.abort(session, txn, None if error is None else _error_text(error))
                elif outcome.ok:
                    h.commit_ok(session, txn)
                    for key, present in self._presence.pop(txn, {}).items():
                        (self.absent.discard if present else self.absent.add)(key)
                elif _unknown_outcome(error):
                    h.commit_info(session, txn, _error_text(_must(error)))
                else:
                    h.commit_fail(session, txn, _error_text(_must(error)))

            return _Flight(action, ended)
        ops = _invoked_ops(step)
        for op in ops:
            h.invoke_op(session, txn, op)

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                for op in outcome.value:
                    h.ok_op(session, txn, op)
                    if op.kind in ("w", "ins", "del"):
                        self._presence.setdefault(txn, {})[int(step["key"])] = op.kind != "del"
                for op in ops[len(outcome.value) :]:
                    # rmw on an absent row: its write was never sent.
                    h.fail_op(session, txn, op, "the row is absent: nothing was written")
                return
            error = _must(outcome.error)
            text = _error_text(error)
            for op in ops:
                if _unknown_outcome(error):
                    h.info_op(session, txn, op, text)
                else:
                    h.fail_op(session, txn, op, text)
            # The worker rolled the transaction back (or the connection died with it).
            self._end(session, txn)
            h.abort(session, txn, text)

        return _Flight(action, done)

    def _end(self, session: int, txn: int) -> None:
        if self._txn.get(session) == txn:
            del self._txn[session]
        self.ended += 1

    # -- what the workers do -------------------------------------------------------------------

    def _connection(self) -> Connection:
        session = current_session()
        assert session is not None, "register steps run on the scheduler's worker threads"
        with self._lock:
            connection = self._connections.get(session)
        if connection is None:
            connection = self.engine.connect()
            with self._lock:
                self._connections[session] = connection
        return connection

    def _work(self, step: Step) -> Callable[[], Any]:
        action = step["action"]
        if action == "begin":

            def begin() -> None:
                self._connection().begin()

            return begin
        if action == "commit":

            def commit() -> None:
                connection = self._connection()
                try:
                    connection.commit()
                except BaseException:
                    # SQLite keeps a transaction whose COMMIT was refused (busy) open.
                    with contextlib.suppress(sa_exc.SQLAlchemyError):
                        connection.rollback()
                    raise

            return commit
        if action == "rollback":
            return lambda: self._connection().rollback()

        def operation() -> list[Op]:
            connection = self._connection()
            try:
                return _execute(connection, step)
            except BaseException:
                # Every backend ends the transaction here, whatever it would do on its own.
                with contextlib.suppress(sa_exc.SQLAlchemyError):
                    connection.rollback()
                raise

        return operation

    # -- the end -------------------------------------------------------------------------------

    def _release(self) -> None:
        """On a worker: end the session's connection (rolling back what is open)."""
        session = current_session()
        with self._lock:
            connection = self._connections.pop(session, None) if session is not None else None
        if connection is not None:
            # A connection the scheduler killed raises here; it is discarded all the same.
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                connection.close()

    def _release_all(self) -> bool:
        """Release every session through the scheduler, leaving it idle; False if some
        session stays blocked with no free session left to release it."""
        left = set(range(self.sessions))
        while left:
            free = sorted(s for s in left if not self.is_blocked(s))
            if not free:
                return False
            left.discard(free[0])
            self._record(self.scheduler.submit(free[0], self._release), first=free[0])
        return not self.scheduler.blocked

    def close(self) -> None:
        """Roll back every open transaction and return the connections; the history gets an
        abort for each transaction left open."""
        if self._closed:
            return
        self._closed = True
        try:
            kept = False
            if not self._own_scheduler and self.stall is None:
                # ValueError: a step whose wait was cut short (Ctrl-C, SIGTERM) is still
                # pending, so its session takes no release; closing the scheduler ends it
                # instead, and the interrupt, not this, is what the run reports.
                with contextlib.suppress(SchedulerTimeout, ValueError):
                    kept = self._release_all()
            if not kept:
                self.scheduler_closed = True
                self._record(self.scheduler.close(abandon=self._release), first=None)
        except SchedulerTimeout as timeout:
            self.stall = self.stall or str(timeout)
        finally:
            for session, txn in sorted(self._txn.items()):
                self.history.abort(session, txn, "rolled back at the end of the run")
                self.ended += 1
            self._txn.clear()
            with self._lock:
                left = list(self._connections.values())
                self._connections.clear()
            for connection in left:
                with contextlib.suppress(sa_exc.SQLAlchemyError):
                    connection.invalidate()

    def __enter__(self) -> RegisterRun:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class RegisterWorkload:
    """The register table on one engine, and a scheduler kept from one run to the next.

    A scheduler costs a monitor connection (with PyMySQL a TLS context, about 0.1 s); runs
    that end with every session released leave it idle, so a search pays for it once.
    """

    def __init__(
        self, engine: Engine, *, max_sessions: int = 3, step_timeout_s: float = 30.0
    ) -> None:
        self.engine = engine
        self.max_sessions = max_sessions
        self.step_timeout_s = step_timeout_s
        self._scheduler: Scheduler | None = None

    def start(self, sessions: int) -> RegisterRun:
        """Reset the table and start a run of ``sessions`` sessions."""
        reset_table(self.engine)
        if self._scheduler is not None and sessions > self.max_sessions:
            self._close_scheduler()
        self.max_sessions = max(self.max_sessions, sessions)
        if self._scheduler is None:
            self._scheduler = Scheduler(
                self.engine, self.max_sessions, step_timeout_s=self.step_timeout_s
            )
        return RegisterRun(self.engine, sessions, scheduler=self._scheduler)

    def finish(self, run: RegisterRun) -> None:
        """Close ``run``; its scheduler is replaced next time if the run had to close it."""
        run.close()
        if run.scheduler_closed and run.scheduler is self._scheduler:
            self._scheduler = None

    def replay(self, steps: Sequence[Mapping[str, Any]]) -> RegisterRun:
        """Run ``steps`` from the initial state; returns the finished run (its history)."""
        checked = validate_steps(steps)
        run = self.start(step_sessions(checked))
        try:
            for step in checked:
                run.run(step)
        finally:
            self.finish(run)
        return run

    def _close_scheduler(self) -> None:
        if self._scheduler is not None:
            scheduler, self._scheduler = self._scheduler, None
            with contextlib.suppress(SchedulerTimeout):
                scheduler.close()

    def close(self) -> None:
        self._close_scheduler()

    def __enter__(self) -> RegisterWorkload:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _must(error: BaseException | None) -> BaseException:
    assert error is not None, "a failed outcome carries its error"
    return error


def _invoked_ops(step: Step) -> tuple[Op, ...]:
    """What a step is sent as, before its outcome is known."""
    action = step["action"]
    if action == "pread":
        return (pr(step["predicate"]),)
    key = history_key(step["key"])
    if action == "read":
        return (r(key),)
    if action == "write":
        return (w(key, step["value"]),)
    if action == "rmw":
        return (r(key), w(key, step["value"]))
    if action == "insert":
        return (ins(key, step["value"]),)
    if action == "delete":
        return (del_op(key),)
    raise ValueError(f"{action!r} is not an operation step")


def _execute(connection: Connection, step: Step) -> list[Op]:
    """Run one operation step on the worker's connection; returns what it observed."""
    action = step["action"]
    if action == "pread":
        name = step["predicate"]
        query = select(registers.c.k, registers.c.v).order_by(registers.c.k)
        where = _PREDICATE_SQL[name]
        if where is not None:
            query = query.where(where)
        rows: list[Row] = [(history_key(k), v) for k, v in connection.execute(query)]
        return [pr(name, rows)]
    k = int(step["key"])
    key = history_key(k)
    if action == "read":
        return [r(key, _read(connection, k))]
    if action == "write":
        return [_update(connection, k, int(step["value"]))]
    if action == "rmw":
        seen = _read(connection, k)
        if seen is None:
            return [r(key, None)]
        return [r(key, seen), _update(connection, k, int(step["value"]))]
    if action == "insert":
        value = int(step["value"])
        connection.execute(insert(registers).values(k=k, v=value))
        return [ins(key, value)]
    if action == "delete":
        removed = connection.execute(delete(registers).where(registers.c.k == k)).rowcount
        # A delete that matched nothing saw the row absent (the checker's rule).
        return [del_op(key) if removed else r(key, None)]
    raise ValueError(f"{action!r} is not an operation step")


def _read(connection: Connection, k: int) -> int | None:
    value = connection.execute(select(registers.c.v).where(registers.c.k == k)).scalar()
    return None if value is None else int(value)


def _update(connection: Connection, k: int, value: int) -> Op:
    changed = connection.execute(
        update(registers).where(registers.c.k == k).values(v=value)
    ).rowcount
    key = history_key(k)
    return w(key, value) if changed else r(key, None)


def replay_steps(engine: Engine, steps: Sequence[Mapping[str, Any]]) -> RegisterRun:
    """Reset the table and run ``steps`` in a new run; returns the finished run (its history).

    The engine must be one of `register_engine(url, level)` (it runs every transaction at that
    isolation level) whose database holds the table (`create_table(engine)`); to replay a
    reproducer of the isolation search in one call, use
    `uowstress.isolation.replay_reproducer(url, level, steps)`, which does both.
    Use a :class:`RegisterWorkload` to replay many step lists: it keeps its scheduler."""
    with RegisterWorkload(engine, max_sessions=1) as workload:
        return workload.replay(steps)


# ---------------------------------------------------------------------------------------------
# The machine

# Weights of the actions of a session with a transaction open (repeats in a sampled list).
_OPEN_CHOICES = (
    ("read",) * 3
    + ("write",) * 3
    + ("rmw",) * 3
    + ("pread",) * 2
    + ("insert", "delete")
    + ("commit",) * 5
    + ("rollback",)
)


# Drawn numbers are taken modulo the sessions free or the keys in use (1 to 4 of each): a
# multiple of every such count keeps the choice even.
_SPREAD = 12


def register_machine(
    workload: RegisterWorkload,
    *,
    observe: Callable[[RegisterRun], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    finished: Callable[[RegisterRun], None] | None = None,
    sessions: tuple[int, int] = (2, 3),
    keys: tuple[int, int] = (2, 4),
) -> type[RuleBasedStateMachine]:
    """A machine that draws register steps for ``workload`` (table created, any level).

    ``observe(run)`` is called after every step that ended a transaction; once ``stop()`` is
    true, examples do nothing (Hypothesis has no early exit that is not a failure);
    ``finished(run)`` gets each example's closed run.
    """
    if not 1 <= sessions[0] <= sessions[1] or not 1 <= keys[0] <= keys[1] <= KEYS:
        raise ValueError(f"sessions {sessions} and keys {keys} must be ranges within 1..{KEYS}")

    class RegisterMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.run: RegisterRun | None = None
            self.keys = 0
            self.next_value = INITIAL_VALUE + 1

        @initialize(n_sessions=st.integers(*sessions), n_keys=st.integers(*keys))
        def start(self, n_sessions: int, n_keys: int) -> None:
            if stop():
                return
            self.run = workload.start(n_sessions)
            self.keys = n_keys

        # Every step draws the same fields whatever the database did: Hypothesis rejects a
        # test whose draws depend on outside state (blocked sessions, the stop signal), so
        # the draws are only interpreted against that state.
        @rule(
            pick=st.integers(0, _SPREAD - 1),
            action=st.sampled_from(_OPEN_CHOICES),
            key=st.integers(0, _SPREAD - 1),
            predicate=st.sampled_from(sorted(PREDICATES)),
        )
        def step(self, pick: int, action: str, key: int, predicate: str) -> None:
            run = self.run
            if run is None or stop():
                return
            free = run.free_sessions()
            if not free:
                return
            # A blocked session takes no step: the drawn number picks among the free ones.
            session = free[pick % len(free)]
            if not run.is_open(session):
                step: Step = {"session": session, "action": "begin"}
            else:
                if action == "insert":
                    # An insert of a row that is there only aborts its transaction: it goes
                    # to a key whose row is gone, if the run knows of one, else it writes.
                    gone = sorted(k for k in run.absent if k < self.keys)
                    if gone:
                        key = gone[key % len(gone)]
                    else:
                        action = "write"
                step = {"session": session, "action": action}
                if action in _WITH_KEY:
                    step["key"] = key % self.keys
                if action in _WITH_VALUE:
                    step["value"] = self.next_value
                    self.next_value += 1
                if action == "pread":
                    step["predicate"] = predicate
            if run.run(step) and observe is not None:
                observe(run)

        def teardown(self) -> None:
            if self.run is not None:
                workload.finish(self.run)
                if finished is not None:
                    finished(self.run)

    RegisterMachine.__name__ = f"RegisterMachine[{workload.engine.dialect.name}]"
    return RegisterMachine
