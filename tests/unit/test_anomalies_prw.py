"""Predicate anti-dependencies (prw edges): the checker against a straightforward reference.

The checker makes the prw edges that point back in commit order for every predicate read, and
those that point forward only where they can lie on a cycle (see
``_Analysis._later_predicate_edges``): a predicate read followed by many matching writes no
longer gets an edge to each. The reference below is the checker as it was before: every
predicate read looks at every key with a matching version and gets its edge, wherever it
points. On small random histories (any interleaving, aborted and unknown transactions,
operations of unknown outcome, with and without timing) both must report exactly the same
findings, word for word, and the only edges the checker leaves out must be forward prw edges
that lie on no cycle of the reference's graph.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import count
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uowstress import anomalies
from uowstress.anomalies import Predicate, _Analysis
from uowstress.history import Op, Scalar, Transaction, delete, ins, pr, r, txn, w

_PRW = 3


class _EveryPredicateEdge(_Analysis):
    """The reference: each predicate read against each key with a matching version."""

    def _predicate_matches(self) -> None:
        # predicate name -> (key, indices of its matching versions, of its other versions,
        # latest event at which a read could still miss a matching version of it), keys latest
        # first (the order in which a read makes its edges).
        self.pmatch: dict[str, list[tuple[str, list[int], list[int], float]]] = {}
        inf = float("inf")
        for name in self.pr_reads:
            fn = self.predicates.get(name)
            if fn is None:
                continue
            per_key: list[tuple[str, list[int], list[int], float]] = []
            for k, vl in self.vers.items():
                yes: list[int] = []
                no: list[int] = []
                for idx, n in enumerate(vl):
                    v = self.finals[self.tx_of[n]][k].value
                    (yes if v is not None and fn(k, v) else no).append(idx)
                if yes:
                    later = [self._version_invoke(k, idx) for idx in no if idx > yes[-1]]
                    per_key.append((k, yes, no, min(later, default=inf)))
            per_key.sort(key=lambda entry: -entry[3])
            self.pmatch[name] = per_key

    def _predicate_edges(
        self,
        i: int,
        node: int,
        pos: int,
        name: str,
        ext: Mapping[str, Scalar],
        own: Mapping[str, Scalar | None],
    ) -> None:
        spans = self.txs[i].op_spans
        done = spans[pos][1] if spans else None
        fn = self.predicates[name]
        for k, yes, no, _ in self.pmatch.get(name, ()):
            if k in ext or k in own or k in self.uncertain:
                continue
            if self._shadowed(k, done, lambda v: v is None or not fn(k, v)):  # noqa: B023
                continue
            # The latest non-matching version the read could have seen, and the first matching
            # version after it.
            cand = self._latest_sent_before(k, no, done)
            if cand < 0 and self._missed_dirty(k, i, done, fn):
                continue  # it may have seen an uncommitted version instead of the first
            j = bisect_right(yes, cand)
            if j < len(yes):
                target = self.vers[k][yes[j]]
                if target != node:
                    self._edge(node, target, _PRW, k)

    def _later_predicate_edges(
        self, regions: Sequence[tuple[int, int]], inside: Sequence[int]
    ) -> list[int]:
        return []  # every edge is made already


def _run(cls: type[_Analysis], history: Sequence[Transaction], preds: Mapping[str, Predicate]):
    analysis = cls(history, preds)
    findings = analysis.run()
    edges = Counter(
        zip(analysis.e_src, analysis.e_dst, analysis.e_kind, analysis.e_key, strict=True)
    )
    return analysis, findings, edges


def _same_as_reference(history: Sequence[Transaction], preds: Mapping[str, Predicate]) -> None:
    ours, found, edges = _run(_Analysis, history, preds)
    ref, ref_found, ref_edges = _run(_EveryPredicateEdge, history, preds)
    assert found == ref_found
    assert ours.regions == ref.regions
    assert not edges - ref_edges, "an edge the reference does not make"
    # What is left out lies on no cycle of the reference's graph.
    adj: list[list[int]] = [[] for _ in ref.tx_of]
    for src, dst, _, _ in ref_edges:
        adj[src].append(dst)
    component = anomalies._tarjan(adj)
    for src, dst, kind, _ in ref_edges - edges:
        assert kind == _PRW and src < dst, "only forward prw edges are left out"
        assert component[src] != component[dst], "an edge on a cycle is left out"


# -- random histories ----------------------------------------------------------------------------

KEYS = ["a", "b", "c", "d"]
PREDICATES: dict[str, Predicate] = {
    "any": lambda k, v: True,  # every row: each insert is a phantom to the readers it missed
    "even": lambda k, v: isinstance(v, int) and v % 2 == 0,
    "div3": lambda k, v: isinstance(v, int) and v % 3 == 0,
    "a-or-b": lambda k, v: k in ("a", "b"),
}
_STEPS = st.one_of(
    st.tuples(st.sampled_from(["r", "w", "ins", "del"]), st.sampled_from(KEYS)),
    st.tuples(st.just("pr"), st.sampled_from([*PREDICATES, "undefined"])),
)


@st.composite
def histories(draw: st.DrawFn) -> list[Transaction]:
    """Transactions interleaved at random whose reads return any value written (or none):
    anomalies of every kind, and regions of overlapping transactions among serial stretches."""
    n = draw(st.integers(1, 9))
    values = count(1)
    plans: list[list[tuple[str, str, Scalar | None]]] = []
    written: dict[str, list[Scalar]] = {k: [] for k in KEYS}
    for _ in range(n):
        plan: list[tuple[str, str, Scalar | None]] = []
        for kind, key in draw(st.lists(_STEPS, min_size=1, max_size=5)):
            if kind in ("w", "ins"):
                value = next(values)
                written[key].append(value)
                plan.append((kind, key, value))
            else:
                plan.append((kind, key, None))
        plans.append(plan)

    def read(key: str) -> Scalar | None:
        return draw(st.sampled_from([None, *written[key]]))

    ops_of: list[list[Op]] = []
    for plan in plans:
        ops: list[Op] = []
        for kind, key, value in plan:
            if kind == "r":
                ops.append(r(key, read(key)))
            elif kind in ("w", "ins"):
                assert value is not None
                ops.append(w(key, value) if kind == "w" else ins(key, value))
            elif kind == "del":
                ops.append(delete(key))
            else:
                rows = [(k, v) for k in draw(st.sets(st.sampled_from(KEYS))) if (v := read(k))]
                ops.append(pr(key, rows))
        ops_of.append(ops)
    # The interleaving: each transaction's operations and then its end, in a drawn order.
    turns = draw(st.permutations([j for j, ops in enumerate(ops_of) for _ in range(len(ops) + 1)]))
    timed = draw(st.booleans())
    fates = [
        draw(st.sampled_from(["committed"] * 5 + ["aborted", "unknown", "uncertain-op"]))
        for _ in range(n)
    ]
    spans: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    ends: dict[int, int] = {}
    event = 0
    for j in turns:
        if len(spans[j]) < len(ops_of[j]):
            spans[j].append((event, event + 1))
            event += 2
        else:
            ends[j] = event
            event += 2
    out: list[Transaction] = []
    for j, ops in enumerate(ops_of):
        fate = fates[j]
        unsure: list[Op] = []
        if fate == "uncertain-op" and ops[-1].kind in ("w", "ins", "del"):
            unsure, ops = [ops[-1]], ops[:-1]
        status = {"aborted": "aborted", "unknown": "unknown"}.get(fate, "committed")
        out.append(
            txn(
                j + 1,
                session=j % 3,
                ops=ops,
                status=status,  # type: ignore[arg-type]
                commit=None if status == "aborted" else ends[j],
                end=ends[j] + 1 if status == "unknown" else None,
                spans=spans[j][: len(ops)] if timed else (),
                indeterminate=unsure,
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(histories())
def test_prw_edges_left_out_change_no_finding(history: list[Transaction]) -> None:
    _same_as_reference(history, PREDICATES)


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(1, 3))
def test_predicates_asked_a_block_of_versions_at_a_time_make_the_same_graph(
    history: list[Transaction], block: int
) -> None:
    whole = _run(_Analysis, history, PREDICATES)
    with patch.object(anomalies, "_PREDICATE_BLOCK", block):
        blocked = _run(_Analysis, history, PREDICATES)
    assert blocked[1:] == whole[1:]
    assert blocked[0].pr_back == whole[0].pr_back


# -- the search for the segments that hold a read --------------------------------------------

_BOUNDS = st.one_of(st.integers(0, 12).map(float), st.just(float("inf")), st.just(-float("inf")))


@st.composite
def _stabbing(
    draw: st.DrawFn,
) -> tuple[list[anomalies._Segment], list[tuple[int, float, int]]]:
    segments = []
    for j in range(draw(st.integers(0, 12))):
        lo, hi = sorted((draw(_BOUNDS), draw(_BOUNDS)))
        key = draw(st.integers(0, 8))
        segments.append((key, lo, hi, (j, f"k{j}", key)))
    segments.sort(key=lambda seg: seg[0])
    points = st.one_of(st.integers(0, 12).map(float), st.just(float("inf")))
    queries = sorted(
        (draw(st.integers(0, 9)), draw(points), qid) for qid in range(draw(st.integers(0, 8)))
    )
    return segments, queries


@settings(max_examples=300, deadline=None)
@given(_stabbing())
def test_the_segments_that_hold_each_read_are_found(
    case: tuple[list[anomalies._Segment], list[tuple[int, float, int]]],
) -> None:
    segments, queries = case
    expected = {}
    for threshold, point, qid in queries:
        held = [item for key, lo, hi, item in segments if key < threshold and lo < point <= hi]
        if held:
            expected[qid] = sorted(held)

    def found(search: Callable[..., dict[int, list[tuple[int, str, int]]]]) -> dict[int, list]:
        return {qid: sorted(items) for qid, items in search(segments, queries).items()}

    assert found(anomalies._stab) == expected
    assert found(anomalies._stab_tree) == expected
    points = [point for _, point, _ in queries]
    if points == sorted(points):
        assert found(anomalies._stab_in_order) == expected


# -- hand-made shapes ----------------------------------------------------------------------------


def _serial(n: int, ops_of: Callable[[int], list[Op]], *, timed: bool) -> list[Transaction]:
    """``n`` transactions one after another, with or without timing (op spans)."""
    out: list[Transaction] = []
    event = 0
    for i in range(1, n + 1):
        ops = ops_of(i)
        spans = [(event + 2 * p, event + 2 * p + 1) for p in range(len(ops))]
        event += 2 * len(ops) + 1
        out.append(txn(i, ops=ops, commit=event, spans=spans if timed else ()))
        event += 1
    return out


def _sessions(i: int) -> list[Op]:
    # Each transaction finds the open session, closes it (a version that no longer matches)
    # and opens another: every read is followed by all the later sessions' inserts.
    found = [(f"session:{i - 1}", 2 * i - 1)] if i > 1 else []
    closing = [w(f"session:{i - 1}", 2 * i)] if i > 1 else []
    return [pr("open", found), *closing, ins(f"session:{i}", 2 * i + 1)]


def _open(k: str, v: Scalar) -> bool:
    return isinstance(v, int) and v % 2 == 1


def _phantom_at_the_end(n: int) -> list[Transaction]:
    """The sessions shape, then two transactions that each miss the other's new session."""
    history = _serial(n, _sessions, timed=True)
    last = max(t.commit_index or 0 for t in history)
    seen = [(f"session:{n}", 2 * n + 1)]
    return [
        *history,
        txn(n + 1, ops=[pr("open", seen), ins("session:x", 10**6 + 1)], commit=last + 10),
        txn(n + 2, ops=[pr("open", seen), ins("session:y", 10**6 + 3)], commit=last + 11),
    ]


def test_a_phantom_after_a_long_serial_history_is_found() -> None:
    history = _phantom_at_the_end(300)
    _same_as_reference(history, {"open": _open})
    found = anomalies.analyse(history, {"open": _open})
    assert [f.anomaly for f in found] == ["G2"]
    assert set(found[0].txns) == {301, 302}


def test_a_transaction_open_across_the_history_keeps_the_graph_linear() -> None:
    # T0 read x before T-1 overwrote it and committed after everything else: a backward edge
    # over the whole history, which makes it one region. Every read's edges to the later
    # sessions lie inside it; none of them is on a cycle but the phantom's.
    n = 600
    history = _phantom_at_the_end(n)
    last = max(t.commit_index or 0 for t in history)
    history += [
        txn(-2, ops=[w("x", -2)], commit=-9),
        txn(-1, ops=[w("x", -1)], commit=-5),
        txn(0, ops=[r("x", -2), w("y", -3)], commit=last + 20),
    ]
    preds = {"open": _open}
    analysis = _Analysis(history, preds)
    found = analysis.run()
    assert [f.anomaly for f in found] == ["G2"]
    assert len(analysis.regions) == 1 and len(analysis.e_src) <= 4 * n
    _same_as_reference(history[300:], preds)


def test_the_late_edges_stand_where_the_reference_makes_them() -> None:
    # Inside one region, edges made late (forward) and early (backward) by the same reads:
    # the cycle search meets them in the same order, so it reports the same example cycles.
    history = [
        txn(1, ops=[pr("any", []), ins("a", 1), r("z", None)], commit=10),
        txn(2, ops=[pr("any", []), ins("b", 2)], commit=11),
        txn(3, ops=[pr("any", [("a", 1)]), ins("c", 3), w("z", 4)], commit=12),
        txn(4, ops=[pr("any", [("c", 3)]), ins("d", 5)], commit=13),
    ]
    _same_as_reference(history, PREDICATES)
    assert anomalies.analyse(history, PREDICATES)


@pytest.mark.parametrize("timed", [True, False], ids=["timed", "untimed"])
def test_predicate_reads_before_many_matching_writes_make_a_linear_graph(timed: bool) -> None:
    # Counted, not timed. Each read of the sessions shape missed every later insert, and so
    # did each reader of the second shape, all of which come before the inserts: the graph
    # grew with the square of the history (an edge from each read to each later insert).
    n = 600
    shapes = [
        (_serial(n, _sessions, timed=timed), {"open": _open}),
        (
            _serial(
                n, lambda i: [pr("any", [])] if i <= n // 2 else [ins(f"k{i}", i)], timed=timed
            ),
            PREDICATES,
        ),
    ]
    for history, preds in shapes:
        analysis = _Analysis(history, preds)
        assert analysis.run() == []
        assert len(analysis.e_src) <= 4 * n
        reported = sum(len(found) for found in analysis.pr_back.values())
        assert reported <= 2 * n, "the search for backward edges looks at more than the rows read"
