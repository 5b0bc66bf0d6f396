"""The history recorder: events, folding into transactions, builders and JSON."""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uowstress.errors import ReproducerError
from uowstress.history import (
    EventType,
    History,
    Op,
    append,
    delete,
    from_json,
    ins,
    pr,
    r,
    to_json,
    txn,
    w,
)


def _record_txn(h: History, session: int, tid: int, ops: list[Op], outcome: str) -> None:
    h.begin(session, tid)
    for op in ops:
        h.invoke_op(session, tid, Op(op.kind, op.key) if op.kind == "r" else op)
        h.ok_op(session, tid, op)
    if outcome == "abort":
        h.abort(session, tid, "rolled back by the test")
        return
    h.commit_invoke(session, tid)
    if outcome == "ok":
        h.commit_ok(session, tid)
    elif outcome == "fail":
        h.commit_fail(session, tid, "could not serialize access")
    elif outcome == "info":
        h.commit_info(session, tid, "connection killed during commit")


def test_events_have_increasing_indices_and_the_recorded_types() -> None:
    h = History()
    h.begin(1, 10)
    h.invoke_op(1, 10, r("x"))
    h.ok_op(1, 10, r("x", 5))
    h.commit_invoke(1, 10)
    h.commit_ok(1, 10)
    events = h.events
    assert [e.index for e in events] == [0, 1, 2, 3, 4]
    assert [(e.type, e.what) for e in events] == [
        (EventType.OK, "begin"),
        (EventType.INVOKE, "op"),
        (EventType.OK, "op"),
        (EventType.INVOKE, "commit"),
        (EventType.OK, "commit"),
    ]
    assert events[2].ops == (r("x", 5),)
    assert all(a.time_ns <= b.time_ns for a, b in itertools.pairwise(events))
    assert len(h) == 5


def test_fold_gives_status_ops_and_positions() -> None:
    h = History()
    _record_txn(h, 1, 1, [w("x", 1), r("y", None)], "ok")
    _record_txn(h, 2, 2, [w("x", 2)], "abort")
    _record_txn(h, 3, 3, [w("x", 3)], "fail")
    _record_txn(h, 4, 4, [w("x", 4)], "info")
    by_id = {t.id: t for t in h.transactions()}
    assert {i: t.status for i, t in by_id.items()} == {
        1: "committed",
        2: "aborted",
        3: "aborted",
        4: "unknown",
    }
    t1 = by_id[1]
    assert t1.ops == (w("x", 1), r("y", None))
    assert t1.session == 1
    assert t1.begin_index == 0
    # begin, 2 x (invoke, ok), commit invoke, commit ok: the commit ok is event 6.
    assert t1.commit_invoke_index == 5
    assert t1.commit_index == 6
    assert t1.op_spans == ((1, 2), (3, 4))
    assert by_id[4].commit_index is None
    assert by_id[4].commit_invoke_index is not None
    assert by_id[4].end_index is not None and by_id[4].end_index > by_id[4].commit_invoke_index


def test_failed_ops_are_dropped_and_unknown_ops_are_indeterminate() -> None:
    h = History()
    h.begin(1, 1)
    h.invoke_op(1, 1, w("x", 1))
    h.fail_op(1, 1, w("x", 1), "duplicate key")
    h.invoke_op(1, 1, w("y", 2))
    h.ok_op(1, 1, w("y", 2))
    h.invoke_op(1, 1, w("z", 3))
    h.info_op(1, 1, w("z", 3), "connection lost")
    h.abort(1, 1)
    (t,) = h.transactions()
    assert t.ops == (w("y", 2),)
    assert t.indeterminate == (w("z", 3),)
    assert t.status == "aborted"


def test_history_cut_short_leaves_in_flight_commit_unknown_and_open_txn_aborted() -> None:
    h = History()
    h.begin(1, 1)
    h.invoke_op(1, 1, w("x", 1))
    h.ok_op(1, 1, w("x", 1))
    h.commit_invoke(1, 1)
    h.begin(2, 2)
    h.invoke_op(2, 2, w("y", 1))  # never answered
    by_id = {t.id: t for t in h.transactions()}
    assert by_id[1].status == "unknown"
    assert by_id[2].status == "aborted"
    assert by_id[2].indeterminate == (w("y", 1),)


def test_recording_rejects_impossible_sequences() -> None:
    h = History()
    h.begin(1, 1)
    with pytest.raises(ValueError, match="unique id"):
        h.begin(2, 1)
    with pytest.raises(ValueError, match="invoke_op before"):
        h.ok_op(1, 1, r("x", None))
    h.commit_invoke(1, 1)
    h.commit_ok(1, 1)
    with pytest.raises(ValueError, match="already has its outcome"):
        h.invoke_op(1, 1, r("x"))


def test_concurrent_recording_keeps_indices_unique_and_per_txn_order() -> None:
    h = History()
    per_thread = 200

    def worker(session: int) -> None:
        for j in range(per_thread):
            tid = session * 10_000 + j
            _record_txn(h, session, tid, [w(f"k{session}", tid)], "ok")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = h.events
    assert [e.index for e in events] == list(range(len(events)))
    txns = h.transactions()
    assert len(txns) == 4 * per_thread
    assert all(t.status == "committed" for t in txns)
    assert all(t.begin_index is not None and t.commit_index is not None for t in txns)
    assert all(t.begin_index < t.commit_index for t in txns)  # type: ignore[operator]


def test_txn_builder_requires_a_commit_position_for_committed_txns() -> None:
    with pytest.raises(ValueError, match="commit="):
        txn(1, ops=[w("x", 1)])
    t = txn(1, ops=[w("x", 1)], commit=7)
    assert (t.status, t.commit_index, t.ops) == ("committed", 7, (w("x", 1),))
    u = txn(2, ops=[w("x", 2)], status="unknown", commit=3, end=9)
    assert (u.commit_index, u.commit_invoke_index, u.end_index) == (None, 3, 9)
    with pytest.raises(ValueError, match="span"):
        txn(3, ops=[w("x", 3)], commit=1, spans=[(0, 1), (2, 3)])


def test_op_builders_and_validation() -> None:
    assert pr("P", [("a", 1), ("b", 2)]).value == frozenset({("a", 1), ("b", 2)})
    assert delete("x") == Op("del", "x", None)
    assert ins("x", 1).kind == "ins"
    assert append("l", 3) == Op("append", "l", 3)
    with pytest.raises(ValueError, match="unknown op kind"):
        Op("read", "x")  # type: ignore[arg-type]


# -- JSON ------------------------------------------------------------------------------------

_scalars = st.one_of(st.integers(-(10**12), 10**12), st.text(max_size=8))
_keys = st.sampled_from(["x", "y", "robot:r1:score", "robot:r1:history"])
_ops = st.one_of(
    st.builds(r, _keys, st.one_of(st.none(), _scalars, st.lists(_scalars, max_size=4).map(tuple))),
    st.builds(w, _keys, _scalars),
    st.builds(ins, _keys, _scalars),
    st.builds(delete, _keys),
    st.builds(append, _keys, _scalars),
    st.builds(pr, st.sampled_from(["P", "Q"]), st.lists(st.tuples(_keys, _scalars), max_size=3)),
)


@st.composite
def histories(draw: st.DrawFn) -> History:
    h = History()
    n = draw(st.integers(0, 6))
    for tid in range(n):
        session = draw(st.integers(0, 3))
        h.begin(session, tid)
        for op in draw(st.lists(_ops, max_size=4)):
            h.invoke_op(session, tid, op)
            outcome = draw(st.sampled_from(["ok", "fail", "info"]))
            if outcome == "ok":
                h.ok_op(session, tid, op)
            elif outcome == "fail":
                h.fail_op(session, tid, op, "some error")
            else:
                h.info_op(session, tid, op, "unknown")
                break
        end = draw(st.sampled_from(["ok", "fail", "info", "abort", "open"]))
        if end == "abort":
            h.abort(session, tid, draw(st.one_of(st.none(), st.text(max_size=5))))
        elif end != "open":
            h.commit_invoke(session, tid)
            if end == "ok":
                h.commit_ok(session, tid)
            elif end == "fail":
                h.commit_fail(session, tid, "refused")
            else:
                h.commit_info(session, tid, "lost")
    return h


@settings(max_examples=60, deadline=None)
@given(histories())
def test_json_round_trip(h: History) -> None:
    data = json.loads(json.dumps(to_json(h)))
    back = from_json(data)
    assert back.events == h.events
    assert back.transactions() == h.transactions()
    assert to_json(back) == to_json(h)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[0].update(index=5), "out of sequence"),
        (lambda d: d[0].update(what="launch"), "'what' must be one of"),
        (lambda d: d[1]["ops"][0].update(kind="read"), "an op needs 'kind'"),
        (lambda d: d[1]["ops"][0].update(value=1.5), "expected an int or a string"),
        (lambda d: d[0].pop("session"), "malformed"),
        (lambda d: d[0].update(type="maybe"), "malformed"),
    ],
)
def test_from_json_names_the_bad_event(mutate: Any, message: str) -> None:
    h = History()
    h.begin(1, 1)
    h.invoke_op(1, 1, w("x", 1))
    data = to_json(h)
    mutate(data)
    with pytest.raises(ReproducerError, match=message):
        from_json(data)
