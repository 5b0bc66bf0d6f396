"""Reads that saw an uncommitted delete or write, in a history that starts from a committed
initial state: the state before that state is no explanation for them."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from uowstress.anomalies import _Analysis, analyse
from uowstress.history import History, Op, Transaction, delete, pr, r, txn, w

PREDICATES = {"all": lambda _k, _v: True, "even": lambda _k, v: isinstance(v, int) and v % 2 == 0}


def _op(h: History, session: int, txn: int, invoked: Op, done: Op | None = None) -> None:
    h.invoke_op(session, txn, invoked)
    h.ok_op(session, txn, done or invoked)


def _setup(h: History, keys: tuple[str, ...]) -> None:
    h.begin(-1, 0)
    for k in keys:
        _op(h, -1, 0, w(k, 0))
    h.commit_invoke(-1, 0)
    h.commit_ok(-1, 0)


def test_absent_read_of_an_aborted_delete_is_an_aborted_read_not_a_vanished_transaction() -> None:
    # T1 deletes k2 and rolls back; T2, begun after the initial state was committed, reads k2
    # absent: it saw T1's delete (read uncommitted), not the state before T0's rows existed.
    h = History()
    _setup(h, ("k0", "k2"))
    h.begin(0, 1)
    _op(h, 0, 1, delete("k2"))
    h.begin(1, 2)
    _op(h, 1, 2, pr("all"), pr("all", [("k0", 0)]))
    _op(h, 1, 2, r("k2"), r("k2", None))
    h.commit_invoke(1, 2)
    h.commit_ok(1, 2)
    h.abort(0, 1)
    findings = analyse(h.transactions(), PREDICATES)
    assert {f.anomaly for f in findings} == {"G1a"}, findings
    (g1a,) = findings
    assert g1a.txns == (1, 2)
    assert "deleted by T1" in g1a.explanation


def test_predicate_read_missing_a_row_through_an_aborted_write_makes_no_cycle() -> None:
    # T1 writes k0 = 5 (odd) and rolls back; T2's predicate read of even rows, begun after the
    # initial state was committed, misses k0 because it saw T1's write: no anti-dependency
    # from T2 to T0, whose k0 = 0 it could not have read past.
    h = History()
    _setup(h, ("k0", "k1"))
    h.begin(0, 1)
    _op(h, 0, 1, w("k0", 5))
    h.begin(1, 2)
    _op(h, 1, 2, pr("even"), pr("even", [("k1", 0)]))
    h.commit_invoke(1, 2)
    h.commit_ok(1, 2)
    h.abort(0, 1)
    findings = analyse(h.transactions(), PREDICATES)
    assert not {f.anomaly for f in findings} & {"G-single", "G2", "G2-item", "OTV"}, findings


def test_a_reader_that_began_before_the_first_version_committed_still_gets_its_edge() -> None:
    # T2 begins before T1 inserts k0 and commits; T2's read of k0 as absent then says T2
    # read the version before T1's: the anti-dependency stays.
    h = History()
    h.begin(1, 2)
    h.begin(0, 1)
    _op(h, 0, 1, w("k0", 1))
    h.commit_invoke(0, 1)
    h.commit_ok(0, 1)
    _op(h, 1, 2, r("k0"), r("k0", None))
    _op(h, 1, 2, w("k0", 2))
    h.commit_invoke(1, 2)
    h.commit_ok(1, 2)
    findings = analyse(h.transactions(), PREDICATES)
    assert "G-single" in {f.anomaly for f in findings}, findings


# -- which uncommitted write a read may have seen ------------------------------------------------


@st.composite
def _dirty_histories(draw: st.DrawFn) -> list[Transaction]:
    """Transactions writing, deleting and reading a few keys, some aborted, some committed
    with writes they overwrote themselves; with op spans or without."""
    timed = draw(st.booleans())
    out: list[Transaction] = []
    event = 0
    for tid in range(1, draw(st.integers(1, 12)) + 1):
        ops: list[Op] = []
        spans: list[tuple[int, int]] = []
        for _ in range(draw(st.integers(1, 4))):
            key = draw(st.sampled_from(["a", "b"]))
            kind = draw(st.sampled_from(["w", "del", "r"]))
            ops.append(
                w(key, tid * 10 + len(ops))
                if kind == "w"
                else delete(key)
                if kind == "del"
                else r(key)
            )
            spans.append((event, event + 1))
            event += draw(st.integers(1, 3))
        aborted = draw(st.booleans())
        event += 1
        out.append(
            txn(
                tid,
                session=tid % 3,
                ops=ops,
                status="aborted" if aborted else "committed",
                commit=None if aborted else event,
                spans=spans if timed else (),
            )
        )
    return out


def _first_dirty(
    history: list[Transaction], k: str, i: int, done: int | None, fits: Any
) -> tuple[int, int] | None:
    """The first write of ``k`` in transaction order that no committed state holds, by
    another transaction than ``i``, sent before ``done``: scanned from the history itself."""
    for j, t in enumerate(history):
        last = {op.key: p for p, op in enumerate(t.ops) if op.kind in ("w", "del")}
        for p, op in enumerate(t.ops):
            if op.key != k or op.kind not in ("w", "del") or j == i:
                continue
            if t.status != "aborted" and last[k] == p:
                continue  # installed: a committed state holds it
            sent = t.op_spans[p][0] if t.op_spans else -1
            if done is not None and sent >= done:
                continue
            if op.value is None or (fits is not None and fits(op.value)):
                return j, p
    return None


@settings(max_examples=300, deadline=None)
@given(_dirty_histories(), st.integers(0, 11), st.one_of(st.none(), st.integers(0, 40)))
def test_the_uncommitted_write_a_read_may_have_seen_is_the_first_in_transaction_order(
    history: list[Transaction], reader: int, done: int | None
) -> None:
    analysis = _Analysis(history, {})
    with contextlib.suppress(ValueError):  # a history the checker refuses: nothing to ask
        analysis.run()
        for k in ("a", "b"):
            for fits in (None, lambda v: v % 2 == 0):
                assert analysis._dirty(k, reader, done, fits) == _first_dirty(
                    history, k, reader, done, fits
                )
