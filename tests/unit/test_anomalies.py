"""The isolation-anomaly checker: one hand-built history per anomaly, the guarantee table, and
simulated serial / read committed / snapshot executions that must come out clean."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uowstress import anomalies
from uowstress.anomalies import (
    ALWAYS_FORBIDDEN,
    ANOMALIES,
    FORBIDDEN,
    Finding,
    Guarantee,
    analyse,
    check,
)
from uowstress.history import (
    History,
    Op,
    Scalar,
    Transaction,
    append,
    delete,
    ins,
    pr,
    r,
    txn,
    w,
)
from uowstress.isolation import ANOMALY_CLASSES


def names(findings: Sequence[Finding]) -> set[str]:
    return {f.anomaly for f in findings}


def only(findings: Sequence[Finding], anomaly: str) -> Finding:
    hits = [f for f in findings if f.anomaly == anomaly]
    assert len(hits) == 1, findings
    return hits[0]


def forbidden_under(history: Sequence[Transaction], anomaly: str) -> set[Guarantee]:
    """The guarantees under which ``history``'s ``anomaly`` finding fails the check."""
    out = set()
    for g in Guarantee:
        result = check(history, g)
        assert anomaly in result.counts
        if any(f.anomaly == anomaly for f in result.forbidden):
            out.add(g)
            assert not result.ok
    return out


RU, RC, RR, SI, SER = (
    Guarantee.READ_UNCOMMITTED,
    Guarantee.READ_COMMITTED,
    Guarantee.REPEATABLE_READ,
    Guarantee.SNAPSHOT,
    Guarantee.SERIALIZABLE,
)
ALL = {RU, RC, RR, SI, SER}


# -- the guarantee table -----------------------------------------------------------------------


def test_forbidden_table_matches_the_documented_levels() -> None:
    always = {"garbage-read", "internal"}
    assert always == ALWAYS_FORBIDDEN
    assert FORBIDDEN[RU] == always | {"G0"}
    rc = always | {"G0", "G1a", "G1b", "G1c", "incompatible-order"}
    assert FORBIDDEN[RC] == rc
    assert FORBIDDEN[RR] == rc | {"G-single", "G2-item", "P4", "OTV"}
    assert FORBIDDEN[SI] == rc | {"G-single", "G-nonadjacent", "P4", "OTV", "PMP"}
    assert "G2-item" not in FORBIDDEN[SI] and "G2" not in FORBIDDEN[SI]
    assert FORBIDDEN[SER] == set(ANOMALIES)
    # Every level forbids at least what the weaker ones do (snapshot and repeatable read are
    # incomparable, both stronger than read committed).
    assert FORBIDDEN[RU] < FORBIDDEN[RC] < FORBIDDEN[RR] < FORBIDDEN[SER]
    assert FORBIDDEN[RC] < FORBIDDEN[SI] < FORBIDDEN[SER]


def test_check_accepts_the_guarantee_as_text_and_rejects_unknown_names() -> None:
    h = [txn(1, ops=[r("x", 9)], commit=1)]
    assert check(h, "serializable").guarantee is SER
    with pytest.raises(ValueError, match="unknown guarantee 'linearizable'"):
        check(h, "linearizable")


# -- one history per anomaly -------------------------------------------------------------------


def test_g0_write_cycle_from_list_orders() -> None:
    # T1 appended before T2 to list a, but after T2 to list b: their writes interleaved.
    h = [
        txn(1, ops=[append("a", 1), append("b", 1)], commit=2),
        txn(2, ops=[append("a", 2), append("b", 2)], commit=3),
        txn(3, ops=[r("a", (1, 2)), r("b", (2, 1))], commit=4),
    ]
    f = only(analyse(h), "G0")
    assert names(analyse(h)) == {"G0"}
    assert set(f.txns) == {1, 2}
    assert {e[2] for e in f.edges} == {"ww"}
    assert {e[3] for e in f.edges} == {"a", "b"}
    assert forbidden_under(h, "G0") == ALL


def test_g1a_aborted_read() -> None:
    h = [
        txn(1, ops=[w("x", 1)], status="aborted"),
        txn(2, ops=[r("x", 1)], commit=3),
    ]
    f = only(analyse(h), "G1a")
    assert names(analyse(h)) == {"G1a"}
    assert f.txns == (1, 2) and f.keys == ("x",)
    assert "T1" in f.explanation and "aborted" in f.explanation and "x = 1" in f.explanation
    assert forbidden_under(h, "G1a") == ALL - {RU}


def test_g1b_intermediate_read() -> None:
    h = [
        txn(1, ops=[w("x", 1), w("x", 2)], commit=2),
        txn(2, ops=[r("x", 1)], commit=3),
    ]
    assert names(analyse(h)) == {"G1b"}
    assert "overwrote x with 2" in only(analyse(h), "G1b").explanation
    assert forbidden_under(h, "G1b") == ALL - {RU}


def test_g1b_on_a_list_read_ending_inside_a_transaction() -> None:
    h = [
        txn(1, ops=[append("l", 1), append("l", 2)], commit=2),
        txn(2, ops=[r("l", (1,))], commit=3),
    ]
    assert names(analyse(h)) == {"G1b"}


def test_g1c_circular_information_flow() -> None:
    h = [
        txn(1, ops=[w("x", 1), r("y", 2)], commit=2),
        txn(2, ops=[w("y", 2), r("x", 1)], commit=3),
    ]
    assert names(analyse(h)) == {"G1c"}
    f = only(analyse(h), "G1c")
    assert {e[2] for e in f.edges} == {"wr"}
    assert "cycle T1 -wr(x)-> T2 -wr(y)-> T1" in f.explanation
    assert forbidden_under(h, "G1c") == ALL - {RU}


def test_g_single_read_skew() -> None:
    h = [
        txn(0, ops=[w("x", 0), w("y", 0)], commit=1),
        txn(2, ops=[w("x", 4), w("y", 5)], commit=5),
        # T1 read x before T2 and y after it.
        txn(1, ops=[r("x", 0), r("y", 5)], commit=10),
    ]
    assert names(analyse(h)) == {"G-single"}
    f = only(analyse(h), "G-single")
    assert sorted(e[2] for e in f.edges) == ["rw", "wr"]
    assert "T1 read x = 0 and T2 installed the next version, x = 4" in f.explanation
    assert "T1 read T2's write of 5 to y" in f.explanation
    assert forbidden_under(h, "G-single") == {RR, SI, SER}


def test_write_skew_is_g2_item_permitted_under_snapshot_forbidden_under_serializable() -> None:
    h = [
        txn(1, ops=[r("x", None), r("y", None), w("x", 1)], commit=10),
        txn(2, ops=[r("x", None), r("y", None), w("y", 2)], commit=11),
    ]
    assert names(analyse(h)) == {"G2-item"}
    f = only(analyse(h), "G2-item")
    assert sorted(e[2] for e in f.edges) == ["rw", "rw"]
    assert set(f.keys) == {"x", "y"}
    assert forbidden_under(h, "G2-item") == {RR, SER}
    si = check(h, SI)
    assert si.ok and [p.anomaly for p in si.permitted] == ["G2-item"]


def test_long_fork_is_g_nonadjacent_forbidden_under_snapshot() -> None:
    # T2 and T4 write independent keys; T1 saw T4's write but not T2's, T3 saw T2's but not
    # T4's: no order of snapshots gives both views. Its two anti-dependencies are not adjacent,
    # which no snapshot-isolated execution shows, unlike a write skew (adjacent ones).
    h = [
        txn(2, ops=[w("x", 10), w("y", 20)], commit=10),
        txn(4, ops=[w("z", 30), w("u", 40)], commit=15),
        txn(3, ops=[r("y", 20), r("z", None)], commit=20),
        txn(1, ops=[r("x", None), r("u", 40)], commit=50),
    ]
    assert names(analyse(h)) == {"G-nonadjacent", "G2-item"}
    f = only(analyse(h), "G-nonadjacent")
    assert set(f.txns) == {1, 2, 3, 4}
    assert sorted(e[2] for e in f.edges) == ["rw", "rw", "wr", "wr"]
    assert "T1 read x = absent and T2 installed the next version, x = 10" in f.explanation
    assert "T3 read z = absent and T4 installed the next version, z = 30" in f.explanation
    assert "T1 read T4's write of 40 to u" in f.explanation
    assert forbidden_under(h, "G-nonadjacent") == {SI, SER}
    assert not check(h, SI).ok
    # A write skew has only adjacent anti-dependencies: not G-nonadjacent.
    skew = [
        txn(1, ops=[r("x", None), r("y", None), w("x", 1)], commit=10),
        txn(2, ops=[r("x", None), r("y", None), w("y", 2)], commit=11),
    ]
    assert "G-nonadjacent" not in names(analyse(skew))


def test_a_cycle_of_an_item_and_a_predicate_anti_dependency_is_g2_item_too() -> None:
    # T1 read x and wrote doc:a; T2 ran the predicate (missing doc:a) and wrote x. Adya: a
    # cycle with one item anti-dependency is G2-item, which repeatable read forbids.
    def matches(k: str, v: Scalar) -> bool:
        return k.startswith("doc:")

    h = [
        txn(1, ops=[r("x", None), ins("doc:a", 1)], commit=2),
        txn(2, ops=[pr("docs", []), w("x", 5)], commit=3),
    ]
    found = analyse(h, {"docs": matches})
    assert names(found) == {"G2-item", "G2"}
    assert sorted(e[2] for e in only(found, "G2-item").edges) == ["prw", "rw"]
    assert not check(h, RR, {"docs": matches}).ok
    assert check(h, SI, {"docs": matches}).ok


def test_phantom_write_skew_is_g2_with_the_predicate() -> None:
    def matches(k: str, v: Scalar) -> bool:
        return k.startswith("doc:")

    h = [
        txn(1, ops=[pr("docs", []), ins("doc:a", 1)], commit=2),
        txn(2, ops=[pr("docs", []), ins("doc:b", 2)], commit=3),
    ]
    found = analyse(h, {"docs": matches})
    assert names(found) == {"G2"}
    assert {e[2] for e in only(found, "G2").edges} == {"prw"}
    assert "predicate read docs did not see" in only(found, "G2").explanation
    # Without the predicate's definition nothing can be said about rows it did not return.
    assert analyse(h) == []
    assert check(h, SI, {"docs": matches}).ok
    assert not check(h, SER, {"docs": matches}).ok


def test_lost_update_is_p4_forbidden_under_snapshot() -> None:
    h = [
        txn(0, ops=[w("x", 0)], commit=1),
        txn(1, ops=[r("x", 0), w("x", 1)], commit=10),
        txn(2, ops=[r("x", 0), w("x", 2)], commit=11),
    ]
    # A lost update is also a cycle with one anti-dependency (T2 -rw-> T1 -ww-> T2).
    assert names(analyse(h)) == {"P4", "G-single"}
    f = only(analyse(h), "P4")
    assert f.txns == (1, 2) and f.keys == ("x",)
    assert "update of T1 was lost" in f.explanation
    assert forbidden_under(h, "P4") == {RR, SI, SER}


def test_otv_observed_transaction_vanishes() -> None:
    h = [
        txn(1, ops=[w("x", 1), w("y", 1)], commit=2),
        # T2 saw T1's x, then read y as if T1 had never run.
        txn(2, ops=[r("x", 1), r("y", None)], commit=3),
    ]
    assert names(analyse(h)) == {"OTV", "G-single"}
    f = only(analyse(h), "OTV")
    assert f.txns == (2, 1) and f.keys == ("x", "y")
    assert "vanished" in f.explanation
    assert forbidden_under(h, "OTV") == {RR, SI, SER}


def test_otv_on_a_list() -> None:
    h = [
        txn(1, ops=[w("x", 1), append("l", 7)], commit=2),
        txn(2, ops=[r("x", 1), r("l", ())], commit=3),
    ]
    assert "OTV" in names(analyse(h))


def test_pmp_two_evaluations_of_a_predicate_differ() -> None:
    h = [
        txn(2, ops=[ins("doc:a", 1)], commit=3),
        txn(1, ops=[pr("docs", []), pr("docs", [("doc:a", 1)])], commit=5),
    ]
    assert names(analyse(h)) == {"PMP"}
    f = only(analyse(h), "PMP")
    assert f.txns == (1, 2)
    assert "changed by T2" in f.explanation
    assert forbidden_under(h, "PMP") == {SI, SER}


def test_pmp_predicate_read_misses_a_matching_row_an_item_read_saw() -> None:
    h = [
        txn(0, ops=[ins("doc:a", 3)], commit=1),
        txn(2, ops=[delete("doc:a")], commit=3),
        txn(1, ops=[r("doc:a", 3), pr("docs", [])], commit=5),
    ]
    found = analyse(h, {"docs": lambda k, v: True})
    assert "PMP" in names(found)
    # Without the predicate it cannot know doc:a should have matched.
    assert "PMP" not in names(analyse(h))


def test_pmp_predicate_read_returns_another_version_than_an_item_read() -> None:
    h = [
        txn(0, ops=[ins("doc:a", 3)], commit=1),
        txn(2, ops=[w("doc:a", 4)], commit=3),
        txn(1, ops=[r("doc:a", 3), pr("docs", [("doc:a", 4)])], commit=5),
    ]
    assert "PMP" in names(analyse(h))


def test_own_writes_do_not_count_as_pmp() -> None:
    h = [txn(1, ops=[pr("docs", []), ins("doc:a", 1), pr("docs", [("doc:a", 1)])], commit=2)]
    assert analyse(h) == []


def test_garbage_read_is_always_forbidden() -> None:
    h = [txn(1, ops=[r("x", 99)], commit=1)]
    f = only(analyse(h), "garbage-read")
    assert "99" in f.explanation
    assert forbidden_under(h, "garbage-read") == ALL


def test_garbage_element_in_a_list_read() -> None:
    h = [txn(1, ops=[append("l", 1)], commit=1), txn(2, ops=[r("l", (1, 42))], commit=2)]
    assert "garbage-read" in names(analyse(h))


def test_internal_own_write_not_seen_is_always_forbidden() -> None:
    h = [
        txn(0, ops=[w("x", 0)], commit=1),
        txn(1, ops=[w("x", 1), r("x", 0)], commit=2),
    ]
    assert names(analyse(h)) == {"internal"}
    assert forbidden_under(h, "internal") == ALL


def test_internal_missing_own_append() -> None:
    h = [txn(1, ops=[append("l", 1), r("l", ())], commit=1)]
    assert names(analyse(h)) == {"internal"}


def test_incompatible_list_orders() -> None:
    h = [
        txn(1, ops=[append("l", 1)], commit=1),
        txn(2, ops=[append("l", 2)], commit=2),
        txn(3, ops=[r("l", (1, 2))], commit=3),
        txn(4, ops=[r("l", (2,))], commit=4),
    ]
    f = only(analyse(h), "incompatible-order")
    assert f.txns == (4,)
    assert forbidden_under(h, "incompatible-order") == ALL - {RU}


def test_list_order_follows_the_reads_not_the_commit_order() -> None:
    # The database shows 2 before 1 although T1 committed first: the order of the reads is the
    # version order, and on its own that is no anomaly.
    h = [
        txn(1, ops=[append("l", 1)], commit=1),
        txn(2, ops=[append("l", 2)], commit=2),
        txn(3, ops=[r("l", (2, 1))], commit=3),
        txn(4, ops=[r("l", (2,))], commit=4),
    ]
    assert analyse(h) == []


# -- which transactions count ------------------------------------------------------------------


def test_aborted_transactions_create_no_edges() -> None:
    # Were T3 committed (before T1), T1 -wr-> T2 -wr-> T3 -ww-> T1 would be a cycle.
    h = [
        txn(1, ops=[r("x", None), w("y", 1)], commit=2),
        txn(2, ops=[r("y", 1), w("z", 2)], commit=3),
        txn(3, ops=[r("z", 2), w("y", 3)], status="aborted"),
    ]
    assert analyse(h) == []
    committed = [*h[:2], txn(3, ops=h[2].ops, commit=1)]
    assert names(analyse(committed)) == {"G1c"}


def test_unknown_transaction_counts_only_when_its_write_was_read() -> None:
    unread = [
        txn(1, ops=[r("x", None), w("y", 1)], commit=2),
        txn(3, ops=[r("y", None), w("x", 3)], status="unknown", commit=3),
    ]
    assert analyse(unread) == []
    read = [*unread, txn(4, ops=[r("x", 3)], commit=5)]
    found = analyse(read)
    # T3 must have committed, so T1 and T3 form a write skew; reading it is no aborted read.
    assert names(found) == {"G2-item"}
    assert set(only(found, "G2-item").txns) == {1, 3}


def test_unknown_transaction_with_an_unknown_place_gets_no_version_order() -> None:
    def history(end: int) -> list[Transaction]:
        return [
            txn(1, ops=[w("x", 1)], commit=1),
            # T3 and T2 both read x = 1 and overwrote it: a lost update if T3's commit landed
            # before T2's; its outcome was open from event 2 to event ``end``.
            txn(3, ops=[r("x", 1), w("x", 3), w("y", 3)], status="unknown", commit=2, end=end),
            txn(2, ops=[r("x", 1), w("x", 2)], commit=5),
            txn(4, ops=[r("y", 3)], commit=11),  # proves T3 committed
        ]

    # T2 committed while T3's outcome was open: x's version order is unknown, so no claim.
    assert analyse(history(end=10)) == []
    # Settled before T2 committed: T3 then T2 on x, and T3's update was lost.
    assert names(analyse(history(end=3))) == {"P4", "G-single"}


def test_unobserved_unknown_writes_may_explain_a_predicate_miss() -> None:
    # T5's predicate read missed T3's matching doc:b = 3, unless T4 (commit outcome unknown,
    # never observed) did commit and overwrote it with the non-matching 4.
    def div3(k: str, v: Scalar) -> bool:
        return isinstance(v, int) and v % 3 == 0

    t3 = txn(3, ops=[w("x", 2), w("doc:b", 3)], commit=3)
    t4 = txn(4, ops=[w("doc:b", 4)], status="unknown", commit=4, end=5)
    t5 = txn(5, ops=[r("x", 2), pr("div3", [])], commit=6)
    assert analyse([t3, t4, t5], {"div3": div3}) == []
    assert names(analyse([t3, t5], {"div3": div3})) == {"G-single"}


def test_unobserved_unknown_delete_may_explain_an_absent_read() -> None:
    t1 = txn(1, ops=[ins("x", 1), w("z", 1)], commit=1)
    t2 = txn(2, ops=[delete("x")], status="unknown", commit=2, end=3)
    t3 = txn(3, ops=[r("z", 1), r("x", None)], commit=4)
    assert analyse([t1, t2, t3]) == []
    assert names(analyse([t1, t3])) == {"G-single", "OTV"}


def test_absent_read_with_deletes_uses_timing_to_stay_sound() -> None:
    # x: T1 inserts, T2 deletes, T3 inserts again. T4 saw T1's write of z, then read x as
    # absent; the read finished (event 6) before T2's delete was sent (event 10), so it saw
    # the initial version, older than T1's: a read skew.
    base = [
        txn(1, ops=[ins("x", 1), w("z", 1)], commit=2, spans=[(0, 1), (1, 2)]),
        txn(2, ops=[delete("x")], commit=11, spans=[(10, 11)]),
        txn(3, ops=[ins("x", 3)], commit=21, spans=[(20, 21)]),
    ]
    reader = txn(4, ops=[r("z", 1), r("x", None)], commit=30, spans=[(3, 4), (5, 6)])
    assert names(analyse([*base, reader])) == {"G-single", "OTV"}
    # Without timing the read may have seen T2's delete, which is no anomaly: nothing claimed.
    untimed = [txn(t.id, ops=t.ops, commit=t.commit_index) for t in [*base, reader]]
    assert analyse(untimed) == []


def test_a_lone_predicate_anti_dependency_makes_g_single() -> None:
    h = [
        txn(2, ops=[ins("doc:a", 1), w("y", 2)], commit=3),
        # T1's predicate read missed doc:a, but T1 then read T2's y.
        txn(1, ops=[pr("docs", []), r("y", 2)], commit=5),
    ]
    found = analyse(h, {"docs": lambda k, v: True})
    assert names(found) == {"G-single"}
    assert sorted(e[2] for e in only(found, "G-single").edges) == ["prw", "wr"]


def test_reading_an_unknown_outcome_write_of_an_aborted_txn_is_g1a() -> None:
    h = [
        txn(1, ops=[], status="aborted", indeterminate=[w("x", 1)]),
        txn(2, ops=[r("x", 1)], commit=2),
    ]
    assert names(analyse(h)) == {"G1a"}


def test_input_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="written to x twice"):
        analyse([txn(1, ops=[w("x", 1)], commit=1), txn(2, ops=[w("x", 1)], commit=2)])
    with pytest.raises(ValueError, match="appears twice"):
        analyse([txn(1, ops=[], commit=1), txn(1, ops=[], commit=2)])
    with pytest.raises(ValueError, match="append-only"):
        analyse([txn(1, ops=[w("l", 1), append("l", 2)], commit=1)])
    with pytest.raises(ValueError, match="ints or strings"):
        analyse([txn(1, ops=[Op("w", "x", None)], commit=1)])
    with pytest.raises(ValueError, match="read whole"):
        analyse([txn(1, ops=[append("l", 1)], commit=1), txn(2, ops=[r("l", 1)], commit=2)])
    no_commit = Transaction(id=1, session=0, status="committed", ops=(w("x", 1),))
    with pytest.raises(ValueError, match="no commit_index"):
        analyse([no_commit])


def test_a_value_reused_under_another_key_still_names_its_writer() -> None:
    h = [
        txn(1, ops=[w("x", 7), w("y", 7)], commit=1),
        txn(2, ops=[r("y", 7), r("x", 7)], commit=2),
    ]
    assert analyse(h) == []
    assert names(analyse([*h, txn(3, ops=[r("z", 7)], commit=3)])) == {"garbage-read"}


def test_long_cycle_is_found_and_reported_once_per_class() -> None:
    n = 60
    # A ring of read skews: Ti reads k_i before T(i+1) overwrote it, and T(i+1) reads Ti's y.
    ring = []
    for i in range(n):
        nxt = (i + 1) % n
        ring.append(
            txn(
                i,
                ops=[r(f"k{nxt}", None), w(f"k{i}", 1000 + i)],
                commit=i + 1,
            )
        )
    found = analyse(ring)
    f = only(found, "G2-item")
    assert len(f.txns) == n
    assert len(f.edges) == n


def test_check_result_splits_findings() -> None:
    h = [
        txn(1, ops=[r("x", None), r("y", None), w("x", 1)], commit=10),
        txn(2, ops=[r("x", None), r("y", None), w("y", 2)], commit=11),
        txn(3, ops=[r("z", 404)], commit=12),
    ]
    result = check(h, SI)
    assert not result.ok
    assert [f.anomaly for f in result.forbidden] == ["garbage-read"]
    assert [f.anomaly for f in result.permitted] == ["G2-item"]
    assert dict(result.counts) == {"garbage-read": 1, "G2-item": 1}
    assert len(result.findings) == 2


# -- simulated executions ------------------------------------------------------------------------

Mode = Literal["serial", "rc", "si"]
ITEMS = ["x0", "x1", "x2", "x3"]
LISTS = ["l0", "l1"]


def _divisible_by_3(key: str, value: Scalar) -> bool:
    return isinstance(value, int) and value % 3 == 0


PREDICATES = {"div3": _divisible_by_3}


@dataclass
class _Active:
    txn: int
    session: int
    program: list[tuple[str, str]]
    fate: str
    start: int
    snapshot_items: dict[str, int]
    snapshot_lists: dict[str, list[int]]
    own: dict[str, int | None] = field(default_factory=dict)
    own_app: dict[str, list[int]] = field(default_factory=dict)
    step: int = 0


class Simulator:
    """Runs transactions against an in-memory store and records them in a History.

    serial: one transaction at a time. rc: reads see the latest committed state. si: reads see
    the state at begin; a commit whose written keys changed since its begin fails
    (first committer wins). Writes are buffered until commit, so commit order is version order.
    """

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.items: dict[str, int] = {}
        self.lists: dict[str, list[int]] = {}
        self.changed_at: dict[str, int] = {}
        self.commits = 0
        self.values = 0
        self.h = History()

    def value(self) -> int:
        self.values += 1
        return self.values

    def _view(self, a: _Active, k: str) -> int | None:
        if k in a.own:
            return a.own[k]
        return (a.snapshot_items if self.mode == "si" else self.items).get(k)

    def _list_view(self, a: _Active, k: str) -> tuple[int, ...]:
        base = (a.snapshot_lists if self.mode == "si" else self.lists).get(k, [])
        return tuple(base) + tuple(a.own_app.get(k, []))

    def begin(self, tid: int, session: int, program: list[tuple[str, str]], fate: str) -> _Active:
        self.h.begin(session, tid)
        return _Active(
            tid,
            session,
            program,
            fate,
            self.commits,
            dict(self.items),
            {k: list(v) for k, v in self.lists.items()},
        )

    def act(self, a: _Active) -> bool:
        """One step of ``a``; True when it has finished."""
        if a.step < len(a.program):
            kind, key = a.program[a.step]
            a.step += 1
            op = self._op(a, kind, key)
            self.h.invoke_op(a.session, a.txn, Op(op.kind, op.key) if op.kind == "r" else op)
            self.h.ok_op(a.session, a.txn, op)
            return False
        self._finish(a)
        return True

    def _op(self, a: _Active, kind: str, key: str) -> Op:
        if kind == "r":
            return r(key, self._view(a, key))
        if kind == "w":
            v = self.value()
            a.own[key] = v
            return w(key, v)
        if kind == "del":
            if self._view(a, key) is None:
                return r(key, None)  # a delete that matched nothing is a read of absence
            a.own[key] = None
            return delete(key)
        if kind == "append":
            v = self.value()
            a.own_app.setdefault(key, []).append(v)
            return append(key, v)
        if kind == "lr":
            return r(key, self._list_view(a, key))
        rows: list[tuple[str, Scalar]] = []
        for k in ITEMS:
            seen = self._view(a, k)
            if seen is not None and _divisible_by_3(k, seen):
                rows.append((k, seen))
        return pr("div3", rows)

    def _finish(self, a: _Active) -> None:
        s, t = a.session, a.txn
        if a.fate == "abort":
            self.h.abort(s, t, "the workload chose to roll back")
            return
        self.h.commit_invoke(s, t)
        written = set(a.own) | set(a.own_app)
        if self.mode == "si" and any(self.changed_at.get(k, -1) >= a.start for k in written):
            self.h.commit_fail(s, t, "could not serialize access due to concurrent update")
            return
        if a.fate != "info-lost":
            self.commits += 1
            for k, v in a.own.items():
                if v is None:
                    self.items.pop(k, None)
                else:
                    self.items[k] = v
            for k, vs in a.own_app.items():
                self.lists.setdefault(k, []).extend(vs)
            for k in written:
                self.changed_at[k] = self.commits
        if a.fate == "commit":
            self.h.commit_ok(s, t)
        else:
            self.h.commit_info(s, t, "connection killed during commit")

    def run(
        self,
        programs: list[list[tuple[str, str]]],
        fates: list[str],
        sessions: int,
        schedule: list[int],
    ) -> list[Transaction]:
        queues: list[list[int]] = [[] for _ in range(sessions)]
        for j in range(len(programs)):
            queues[j % sessions].append(j)
        active: dict[int, _Active | None] = {s: None for s in range(sessions)}

        def step(s: int) -> None:
            a = active[s]
            if a is None:
                if not queues[s]:
                    return
                j = queues[s].pop(0)
                a = active[s] = self.begin(j + 1, s, programs[j], fates[j])
            if self.act(a):
                active[s] = None

        if self.mode == "serial":
            for j, program in enumerate(programs):
                a = self.begin(j + 1, j % sessions, program, fates[j])
                while not self.act(a):
                    pass
        else:
            for s in schedule:
                step(s)
            while any(queues) or any(a is not None for a in active.values()):
                for s in range(sessions):
                    step(s)
        return self.h.transactions()


_intents = st.one_of(
    st.tuples(st.sampled_from(["r", "w", "del"]), st.sampled_from(ITEMS)),
    st.tuples(st.sampled_from(["append", "lr"]), st.sampled_from(LISTS)),
    st.just(("pr", "div3")),
)


@st.composite
def workloads(
    draw: st.DrawFn,
) -> tuple[list[list[tuple[str, str]]], list[str], int, list[int]]:
    sessions = draw(st.integers(1, 4))
    n = draw(st.integers(1, 10))
    programs = [draw(st.lists(_intents, min_size=1, max_size=5)) for _ in range(n)]
    fates = [
        draw(st.sampled_from(["commit"] * 6 + ["abort", "info-applied", "info-lost"]))
        for _ in range(n)
    ]
    schedule = draw(st.lists(st.integers(0, sessions - 1), max_size=60))
    return programs, fates, sessions, schedule


Workload = tuple[list[list[tuple[str, str]]], list[str], int, list[int]]


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_serial_executions_have_no_anomaly(workload: Workload) -> None:
    history = Simulator("serial").run(*workload)
    assert analyse(history, PREDICATES) == []


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_read_committed_executions_pass_read_committed(workload: Workload) -> None:
    history = Simulator("rc").run(*workload)
    result = check(history, RC, PREDICATES)
    assert result.ok, [f.explanation for f in result.forbidden]


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_snapshot_executions_pass_snapshot(workload: Workload) -> None:
    history = Simulator("si").run(*workload)
    result = check(history, SI, PREDICATES)
    assert result.ok, [f.explanation for f in result.forbidden]


@settings(max_examples=60, deadline=None)
@given(workloads(), st.randoms(use_true_random=False))
def test_input_order_does_not_change_what_is_found(workload: Workload, rnd: random.Random) -> None:
    history = Simulator("rc").run(*workload)
    shuffled = list(history)
    rnd.shuffle(shuffled)
    before = Counter(f.anomaly for f in analyse(history, PREDICATES))
    after = Counter(f.anomaly for f in analyse(shuffled, PREDICATES))
    assert before == after


@settings(max_examples=60, deadline=None)
@given(workloads(), st.sampled_from(ITEMS))
def test_an_injected_lost_update_is_always_found(workload: Workload, key: str) -> None:
    programs, fates, sessions, schedule = workload
    # Every outcome known: an unobserved unknown commit could explain an "absent" read.
    known = ["abort" if f == "abort" else "commit" for f in fates]
    history = Simulator("serial").run(programs, known, sessions, schedule)
    last = max((t.commit_index or 0) for t in history) + 1
    final = None
    for t in sorted(history, key=lambda t: t.commit_index or -1):
        if t.status == "committed":
            for op in t.ops:
                if op.key == key and op.kind in ("w", "ins"):
                    final = op.value
                elif op.key == key and op.kind == "del":
                    final = None
    injected = [
        txn(1001, ops=[r(key, final), w(key, 10**6 + 1)], commit=last + 1),
        txn(1002, ops=[r(key, final), w(key, 10**6 + 2)], commit=last + 2),
    ]
    found = names(analyse([*history, *injected], PREDICATES))
    assert "G-single" in found
    if final is not None:
        # An absent read on a key with deletes may have seen any absent version, so P4 (same
        # version read) is only certain for a present value.
        assert "P4" in found
    assert not check([*history, *injected], SI, PREDICATES).ok


# -- work that must grow linearly with the history ---------------------------------------------


def _recorded(n: int, ops_of: Callable[[int], list[Op]]) -> list[Transaction]:
    """``n`` transactions one after another, recorded with timing (op spans)."""
    h = History()
    for i in range(1, n + 1):
        h.begin(0, i)
        for op in ops_of(i):
            h.invoke_op(0, i, Op(op.kind, op.key) if op.kind in ("r", "pr") else op)
            h.ok_op(0, i, op)
        h.commit_invoke(0, i)
        h.commit_ok(0, i)
    return h.transactions()


def _sessions(i: int) -> list[Op]:
    # Each transaction finds the one open session, closes it (a delete) and opens another.
    found = [(f"session:{i - 1}", i - 1)] if i > 1 else []
    return [
        pr("open", found),
        *([delete(f"session:{i - 1}")] if i > 1 else []),
        ins(f"session:{i}", i),
    ]


def _flip(i: int) -> list[Op]:
    # One key, re-created and deleted in turn; each transaction reads it first.
    if i % 2:
        return [r("x", None), ins("x", i)]
    return [r("x", i - 1), delete("x")]


def _toggle(i: int) -> list[Op]:
    # One key whose versions match the predicate in turn; each transaction queries it.
    return [pr("even", [("x", i - 1)] if i > 1 and (i - 1) % 2 == 0 else []), w("x", i)]


@pytest.mark.parametrize(
    ("shape", "spans"),
    [(_sessions, False), (_flip, True), (_toggle, True)],
    ids=["sessions", "absent-reads-between-deletes", "predicate-one-key"],
)
def test_reads_against_many_versions_do_linear_work(
    shape: Callable[[int], list[Op]], spans: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted, not timed: how often a version's write time is asked for, and how many keys a
    # predicate read looks at. Both grew with the square of the history (every read walked
    # every version of the key, or every key that ever matched).
    calls = Counter[str]()
    for method in ("_version_invoke", "_shadowed"):
        original = getattr(anomalies._Analysis, method)

        def counted(self: object, *args: object, _f: object = original, _m: str = method) -> object:
            calls[_m] += 1
            return _f(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(anomalies._Analysis, method, counted)
    preds = {
        "open": lambda k, v: True,
        "even": lambda k, v: isinstance(v, int) and v % 2 == 0,
    }
    n = 600
    if spans:
        history = _recorded(n, shape)
    else:
        history = [txn(i, ops=shape(i), commit=i) for i in range(1, n + 1)]
    assert analyse(history, preds) == []
    assert calls["_version_invoke"] <= 4 * n, calls
    assert calls["_shadowed"] <= 4 * n, calls


def test_the_isolation_matrix_searches_every_anomaly_a_database_can_show() -> None:
    """Every class the checker reports has a column of `uowstress isolation`, except those
    that mean the database or the tester is broken (they stop the search instead)."""
    broken = anomalies.ALWAYS_FORBIDDEN | {anomalies.INCOMPATIBLE}
    assert set(ANOMALY_CLASSES) == set(anomalies.ANOMALIES) - broken


def test_pmp_names_the_transactions_that_changed_the_rows_not_their_earlier_writers() -> None:
    # T1 reads every row twice; in between T2 deletes b and T3 updates a. T0 wrote the rows
    # the first read saw: it changed nothing between the two reads.
    h = [
        txn(0, ops=[w("a", 1), w("b", 2)], commit=1),
        txn(2, ops=[delete("b")], commit=3),
        txn(3, ops=[w("a", 5)], commit=4),
        txn(1, ops=[pr("all", [("a", 1), ("b", 2)]), pr("all", [("a", 5)])], commit=6),
    ]
    f = only(analyse(h, {"all": lambda _k, _v: True}), "PMP")
    assert f.txns == (1, 2, 3)
    assert "changed by T2, T3, committed in between" in f.explanation
    assert "T0" not in f.explanation
