"""What happened: every step of every logical session, in the order it really happened.

The scheduler records one event per moment it observes, with one call each::

    h = History()
    h.begin(session=1, txn=7)
    h.invoke_op(1, 7, r("robot:r1:score"))          # before the step is sent
    h.ok_op(1, 7, r("robot:r1:score", 42))          # when it returns, with the value read
    h.invoke_op(1, 7, w("robot:r1:score", 43))
    h.ok_op(1, 7, w("robot:r1:score", 43))
    h.commit_invoke(1, 7)
    h.commit_ok(1, 7)                               # or commit_fail / commit_info / abort

Event types follow the usual invoke / ok / fail / info scheme: ``fail`` means the step certainly
had no effect, ``info`` means its outcome is unknown (for example the connection was killed
while the commit was in flight). Events get a strictly increasing ``index``; recording is
thread-safe, so worker threads may record directly.

``History.transactions()`` folds the events into one :class:`Transaction` per transaction id,
which is what :mod:`uowstress.anomalies` checks. Tests can skip the events and build
transactions by hand with :func:`txn` and the op builders :func:`r`, :func:`w`, :func:`append`,
:func:`pr`, :func:`ins` and :func:`delete`.

What the checker relies on: every written value is unique per key (so a read names its
writer); a list key is only appended to and read whole, in list order; ``commit_info`` is
recorded once the outcome can no longer change (the connection is gone), so an unknown commit
took effect, if at all, between its ``commit_invoke`` and its ``commit_info``; one session has
at most one operation in flight.

Operations (:class:`Op`):

========== ============================ ================================================
kind       key                          value
========== ============================ ================================================
``r``      the key read                 the value read; ``None`` = absent / initial
                                        version; a tuple for a list key (whole list)
``w``      the key written              the (unique) value written
``ins``    the key inserted             the (unique) value inserted
``del``    the key deleted              ``None`` (record only a delete that removed a
                                        row; one that matched nothing is ``r(key)`` of
                                        ``None``)
``append`` the list key                 the (unique) element appended
``pr``     the predicate's name         frozenset of ``(key, value)`` rows it matched
========== ============================ ================================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeAlias, cast

from uowstress.errors import ReproducerError

__all__ = [
    "Event",
    "EventType",
    "History",
    "Op",
    "OpKind",
    "OpValue",
    "Row",
    "Scalar",
    "Status",
    "Transaction",
    "append",
    "delete",
    "from_json",
    "ins",
    "pr",
    "r",
    "to_json",
    "txn",
    "w",
]

Scalar: TypeAlias = int | str
Row: TypeAlias = tuple[str, Scalar]
OpValue: TypeAlias = Scalar | tuple[Scalar, ...] | frozenset[Row] | None
OpKind: TypeAlias = Literal["r", "w", "append", "pr", "ins", "del"]
Status: TypeAlias = Literal["committed", "aborted", "unknown"]
What: TypeAlias = Literal["begin", "op", "commit", "abort"]

_KINDS: frozenset[str] = frozenset({"r", "w", "append", "pr", "ins", "del"})
_WHATS: frozenset[str] = frozenset({"begin", "op", "commit", "abort"})


class EventType(StrEnum):
    """Outcome of one recorded event."""

    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    #: Outcome unknown: the step may or may not have taken effect.
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction (see the module's table for kinds and values)."""

    kind: OpKind
    key: str
    value: OpValue = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(
                f"unknown op kind {self.kind!r}: use one of {', '.join(sorted(_KINDS))}"
            )


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded moment. ``ops`` holds the op for ``what == "op"`` events, else ``None``."""

    index: int
    time_ns: int
    session: int
    txn: int
    type: EventType
    ops: tuple[Op, ...] | None
    what: What
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Transaction:
    """A transaction as the checker sees it.

    ``ops`` are the operations that completed (``ok``), in order, reads carrying the values
    observed. ``indeterminate`` are operations whose outcome is unknown (``info``, or never
    answered): the checker lets reads name their writes but builds no version order on them.
    Failed operations had no effect and are dropped.

    Positions are event indices. ``commit_index`` is the commit's ``ok`` event (committed
    transactions only) and orders versions; ``commit_invoke_index`` and ``end_index`` bound when
    an ``unknown`` transaction may have committed. ``op_spans`` gives, per op in ``ops``, the
    (invoke, completion) event indices; it may be empty for hand-built transactions, in which
    case the checker uses no timing at all.
    """

    id: int
    session: int
    status: Status
    ops: tuple[Op, ...]
    commit_index: int | None = None
    begin_index: int | None = None
    commit_invoke_index: int | None = None
    end_index: int | None = None
    op_spans: tuple[tuple[int, int], ...] = ()
    indeterminate: tuple[Op, ...] = ()


# ---------------------------------------------------------------------------------------------
# Op and transaction builders (for tests, benchmarks and the scheduler alike)


def r(key: str, value: OpValue = None) -> Op:
    """A read of ``key`` that saw ``value`` (``None``: absent; a tuple: a list's elements)."""
    return Op("r", key, value)


def w(key: str, value: Scalar) -> Op:
    """A write of the unique ``value`` to ``key``."""
    return Op("w", key, value)


def ins(key: str, value: Scalar) -> Op:
    """An insert of the row ``key`` with the unique ``value``."""
    return Op("ins", key, value)


def delete(key: str) -> Op:
    """A delete of the row ``key``."""
    return Op("del", key, None)


def append(key: str, element: Scalar) -> Op:
    """An append of the unique ``element`` to the list ``key``."""
    return Op("append", key, element)


def pr(predicate: str, rows: Iterable[Row] = ()) -> Op:
    """A predicate read named ``predicate`` that matched ``rows`` (``(key, value)`` pairs).

    Give each predicate and parameter set its own name: the checker compares results by name.
    """
    return Op("pr", predicate, frozenset(rows))


def txn(
    id: int,
    *,
    ops: Iterable[Op],
    session: int = 0,
    status: Status = "committed",
    commit: int | None = None,
    end: int | None = None,
    spans: Sequence[tuple[int, int]] = (),
    indeterminate: Iterable[Op] = (),
) -> Transaction:
    """Build a :class:`Transaction` by hand.

    ``commit`` is the transaction's place in the commit order: the commit ``ok`` index of a
    committed transaction, the commit invoke index of an ``unknown`` one (whose commit then
    happened, if at all, between ``commit`` and ``end``).
    """
    if status not in ("committed", "aborted", "unknown"):
        raise ValueError(f"status must be committed, aborted or unknown, not {status!r}")
    if status == "committed" and commit is None:
        raise ValueError(
            f"committed transaction T{id} needs commit=<its position in the commit order>: "
            "the checker derives each key's version order from it"
        )
    op_tuple = tuple(ops)
    if spans and len(spans) != len(op_tuple):
        raise ValueError(f"T{id}: give one (invoke, completion) span per op, or none")
    return Transaction(
        id=id,
        session=session,
        status=status,
        ops=op_tuple,
        commit_index=commit if status == "committed" else None,
        begin_index=None,
        commit_invoke_index=commit if status == "unknown" else None,
        end_index=end if end is not None else commit,
        op_spans=tuple(spans),
        indeterminate=tuple(indeterminate),
    )


# ---------------------------------------------------------------------------------------------
# The recorder


class _TxnState:
    """Bookkeeping per transaction while recording, to reject impossible sequences early."""

    __slots__ = ("pending", "session", "terminal")

    def __init__(self, session: int) -> None:
        self.session = session
        self.pending = 0
        self.terminal = False


class History:
    """A thread-safe, append-only log of :class:`Event`.

    Every recording method returns the event it appended. Transaction ids must be unique in
    the history and belong to one session. Recording anything for a transaction after its
    commit outcome or abort raises ``ValueError``: it would make the history ambiguous.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._txns: dict[int, _TxnState] = {}

    # -- recording ---------------------------------------------------------------------------

    def begin(self, session: int, txn: int) -> Event:
        """The transaction ``txn`` of ``session`` starts."""
        return self._record(session, txn, EventType.OK, None, "begin", None)

    def invoke_op(self, session: int, txn: int, op: Op) -> Event:
        """``op`` is about to be sent (for a read, its value is not known yet)."""
        return self._record(session, txn, EventType.INVOKE, (op,), "op", None)

    def ok_op(self, session: int, txn: int, op: Op) -> Event:
        """``op`` completed; for a read, ``op.value`` is what was observed."""
        return self._record(session, txn, EventType.OK, (op,), "op", None)

    def fail_op(self, session: int, txn: int, op: Op, error: str) -> Event:
        """``op`` failed and certainly had no effect."""
        return self._record(session, txn, EventType.FAIL, (op,), "op", error)

    def info_op(self, session: int, txn: int, op: Op, error: str) -> Event:
        """``op``'s outcome is unknown (e.g. the connection died while it ran)."""
        return self._record(session, txn, EventType.INFO, (op,), "op", error)

    def commit_invoke(self, session: int, txn: int) -> Event:
        """The commit is about to be sent."""
        return self._record(session, txn, EventType.INVOKE, None, "commit", None)

    def commit_ok(self, session: int, txn: int) -> Event:
        """The database acknowledged the commit."""
        return self._record(session, txn, EventType.OK, None, "commit", None)

    def commit_fail(self, session: int, txn: int, error: str) -> Event:
        """The commit was refused: the transaction did not commit."""
        return self._record(session, txn, EventType.FAIL, None, "commit", error)

    def commit_info(self, session: int, txn: int, error: str) -> Event:
        """The commit's outcome is unknown (e.g. the connection was killed during it)."""
        return self._record(session, txn, EventType.INFO, None, "commit", error)

    def abort(self, session: int, txn: int, error: str | None = None) -> Event:
        """The transaction was rolled back (``error``: why, if it was not by choice)."""
        return self._record(session, txn, EventType.OK, None, "abort", error)

    def _record(
        self,
        session: int,
        txn: int,
        type_: EventType,
        ops: tuple[Op, ...] | None,
        what: What,
        error: str | None,
    ) -> Event:
        with self._lock:
            event = Event(
                index=len(self._events),
                time_ns=time.perf_counter_ns(),
                session=session,
                txn=txn,
                type=type_,
                ops=ops,
                what=what,
                error=error,
            )
            self._admit(event)
            self._events.append(event)
            return event

    def _admit(self, event: Event) -> None:
        """Check ``event`` against its transaction's state (caller holds the lock)."""
        state = self._txns.get(event.txn)
        if state is None:
            state = self._txns[event.txn] = _TxnState(event.session)
        if state.session != event.session:
            raise ValueError(
                f"transaction {event.txn} belongs to session {state.session} but session "
                f"{event.session} recorded an event for it: give every transaction a unique id"
            )
        if state.terminal:
            raise ValueError(
                f"transaction {event.txn} already has its outcome; record the next "
                "transaction under a new id"
            )
        if event.what == "op":
            if event.type is EventType.INVOKE:
                state.pending += 1
            elif state.pending == 0:
                raise ValueError(
                    f"transaction {event.txn}: an op completed that was never invoked; "
                    "call invoke_op before ok_op / fail_op / info_op"
                )
            else:
                state.pending -= 1
        elif event.what == "abort" or (
            event.what == "commit" and event.type is not EventType.INVOKE
        ):
            state.terminal = True

    # -- reading -----------------------------------------------------------------------------

    @property
    def events(self) -> tuple[Event, ...]:
        """A snapshot of the events recorded so far."""
        with self._lock:
            return tuple(self._events)

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def transactions(self) -> list[Transaction]:
        """Fold the events into transactions, in order of their first event.

        Status: ``committed`` if the commit was acknowledged; ``unknown`` if the commit's
        outcome is unknown or the history ends while the commit is in flight; otherwise
        ``aborted`` (refused commit, rollback, or the history ends before any commit was sent:
        such a transaction never committed).
        """
        return _fold(self.events)


@dataclass
class _Fold:
    session: int
    begin: int
    ops: list[Op]
    spans: list[tuple[int, int]]
    pending: list[tuple[Op, int]]
    indeterminate: list[Op]
    commit_invoke: int | None = None
    commit_ok: int | None = None
    commit_info: bool = False
    end: int | None = None


def _fold(events: Sequence[Event]) -> list[Transaction]:
    folds: dict[int, _Fold] = {}
    for e in events:
        f = folds.get(e.txn)
        if f is None:
            f = folds[e.txn] = _Fold(e.session, e.index, [], [], [], [])
        if e.what == "op":
            if e.type is EventType.INVOKE:
                assert e.ops is not None
                f.pending.append((e.ops[0], e.index))
                continue
            # One outstanding op per session at a time, so completions match invokes in order.
            invoked_at = f.pending.pop(0)[1] if f.pending else e.index
            assert e.ops is not None
            if e.type is EventType.OK:
                f.ops.append(e.ops[0])
                f.spans.append((invoked_at, e.index))
            elif e.type is EventType.INFO:
                f.indeterminate.append(e.ops[0])
        elif e.what == "commit":
            if e.type is EventType.INVOKE:
                f.commit_invoke = e.index
            elif e.type is EventType.OK:
                f.commit_ok = e.index
                f.end = e.index
            elif e.type is EventType.INFO:
                f.commit_info = True
                f.end = e.index
            else:
                f.end = e.index
        elif e.what == "abort":
            f.end = e.index
    out: list[Transaction] = []
    for txn_id, f in folds.items():
        status: Status
        if f.commit_ok is not None:
            status = "committed"
        elif f.commit_info or (f.commit_invoke is not None and f.end is None):
            status = "unknown"
        else:
            status = "aborted"
        out.append(
            Transaction(
                id=txn_id,
                session=f.session,
                status=status,
                ops=tuple(f.ops),
                commit_index=f.commit_ok,
                begin_index=f.begin,
                commit_invoke_index=f.commit_invoke,
                end_index=f.end,
                op_spans=tuple(f.spans),
                indeterminate=tuple(f.indeterminate + [op for op, _ in f.pending]),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# JSON (reproducers store histories this way)


def _value_to_json(op: Op) -> Any:
    v = op.value
    if isinstance(v, frozenset):
        # Sorted so equal histories serialise identically; the type name keeps ints and
        # strings from being compared with each other.
        rows = sorted(v, key=lambda row: (row[0], type(row[1]).__name__, row[1]))
        return [[k, x] for k, x in rows]
    if isinstance(v, tuple):
        return list(v)
    return v


def _scalar(x: Any, where: str) -> Scalar:
    if isinstance(x, bool) or not isinstance(x, int | str):
        raise ReproducerError(f"{where}: expected an int or a string, got {x!r}")
    return x


def _op_from_json(d: Any, where: str) -> Op:
    if (
        not isinstance(d, Mapping)
        or d.get("kind") not in _KINDS
        or not isinstance(d.get("key"), str)
    ):
        raise ReproducerError(
            f"{where}: an op needs 'kind' (one of {', '.join(sorted(_KINDS))}), "
            f"a string 'key' and a 'value'; got {d!r}"
        )
    raw = d.get("value")
    value: OpValue
    if d["kind"] == "pr":
        if not isinstance(raw, list) or not all(isinstance(x, list) and len(x) == 2 for x in raw):
            raise ReproducerError(
                f"{where}: a predicate read's value must be a list of [key, value] pairs"
            )
        value = frozenset((str(k), _scalar(x, where)) for k, x in raw)
    elif isinstance(raw, list):
        value = tuple(_scalar(x, where) for x in raw)
    elif raw is None:
        value = None
    else:
        value = _scalar(raw, where)
    return Op(cast(OpKind, d["kind"]), d["key"], value)


def to_json(history: History) -> list[dict[str, Any]]:
    """Every event as a JSON-ready dict (lists for tuples and predicate rows)."""
    out: list[dict[str, Any]] = []
    for e in history.events:
        out.append(
            {
                "index": e.index,
                "time_ns": e.time_ns,
                "session": e.session,
                "txn": e.txn,
                "type": e.type.value,
                "what": e.what,
                "ops": None
                if e.ops is None
                else [{"kind": o.kind, "key": o.key, "value": _value_to_json(o)} for o in e.ops],
                "error": e.error,
            }
        )
    return out


def from_json(data: Iterable[Mapping[str, Any]]) -> History:
    """Rebuild a :class:`History` written by :func:`to_json`.

    Raises :class:`~uowstress.errors.ReproducerError` naming the first malformed event.
    """
    h = History()
    for n, d in enumerate(data):
        where = f"history event #{n}"
        try:
            index = d["index"]
            if index != n:
                raise ReproducerError(
                    f"{where}: index {index!r} out of sequence; events must be stored in order "
                    "with indices 0, 1, 2, ..."
                )
            ops_raw = d["ops"]
            ops = None if ops_raw is None else tuple(_op_from_json(o, where) for o in ops_raw)
            what = d["what"]
            if what not in _WHATS:
                raise ReproducerError(f"{where}: 'what' must be one of {sorted(_WHATS)}")
            error = d.get("error")
            event = Event(
                index=index,
                time_ns=int(d["time_ns"]),
                session=int(d["session"]),
                txn=int(d["txn"]),
                type=EventType(d["type"]),
                ops=ops,
                what=cast(What, what),
                error=None if error is None else str(error),
            )
            if (event.what == "op") != (event.ops is not None):
                raise ReproducerError(f"{where}: only 'op' events carry ops")
            h._admit(event)
        except ReproducerError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ReproducerError(
                f"{where} is malformed ({exc!s}); regenerate the reproducer with this "
                "version of uowstress"
            ) from exc
        h._events.append(event)
    return h
