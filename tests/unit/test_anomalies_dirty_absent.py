"""Reads that saw an uncommitted delete or write, in a history that starts from a committed
initial state: the state before that state is no explanation for them."""

from __future__ import annotations

from uowstress.anomalies import analyse
from uowstress.history import History, Op, delete, pr, r, w

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
