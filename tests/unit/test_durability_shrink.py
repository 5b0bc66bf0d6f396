"""The smaller workloads a durability finding is tried with: the killed transaction kept whole,
the acknowledged commits before the kill counted again."""

from __future__ import annotations

from typing import Any

from uowstress.stateful.durability import KillPlan, smaller_workloads


def _tx(*ops: str) -> list[dict[str, Any]]:
    return [
        {"action": "begin"},
        *({"action": "apply", "op": op} for op in ops),
        {"action": "commit"},
    ]


def _plan(steps: list[dict[str, Any]], acks: int, extra: int) -> KillPlan:
    commits = sum(s["action"] == "commit" for s in steps)
    return KillPlan(steps, [{}] * (commits + 1), [None] * len(steps), acks, extra)


def _ops(steps: list[dict[str, Any]]) -> list[str]:
    return [s.get("op", s["action"][0].upper()) for s in steps]


def test_the_workloads_tried_drop_what_follows_then_what_precedes_the_killed_transaction() -> None:
    steps = _tx("a", "b") + _tx("c") + _tx("d", "e") + _tx("f")
    tried = [(_ops(s), acks) for s, acks in smaller_workloads(_plan(steps, 2, 1))]
    assert tried == [
        # Without the transaction after the one the kill lands in (the third).
        (["B", "a", "b", "C", "B", "c", "C", "B", "d", "e", "C"], 2),
        # Without each earlier transaction: one commit fewer before the kill.
        (["B", "c", "C", "B", "d", "e", "C", "B", "f", "C"], 1),
        (["B", "a", "b", "C", "B", "d", "e", "C", "B", "f", "C"], 1),
        # Without each operation of an earlier transaction.
        (["B", "b", "C", "B", "c", "C", "B", "d", "e", "C", "B", "f", "C"], 2),
        (["B", "a", "C", "B", "c", "C", "B", "d", "e", "C", "B", "f", "C"], 2),
        (["B", "a", "b", "C", "B", "C", "B", "d", "e", "C", "B", "f", "C"], 2),
    ]


def test_a_kill_after_every_commit_keeps_them_all_but_tries_without_each() -> None:
    steps = _tx("a") + _tx("b")
    tried = [(_ops(s), acks) for s, acks in smaller_workloads(_plan(steps, 2, 0))]
    assert tried[:2] == [(["B", "b", "C"], 1), (["B", "a", "C"], 1)]
    assert all(len(s) < len(steps) for s, _ in smaller_workloads(_plan(steps, 2, 0)))
    # Killed in the first transaction: nothing precedes it to drop, only what follows.
    assert [(_ops(s), a) for s, a in smaller_workloads(_plan(steps, 0, 2))] == [
        (["B", "a", "C"], 0)
    ]
