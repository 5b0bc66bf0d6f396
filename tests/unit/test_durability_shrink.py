"""The smaller workloads a durability finding is tried with: the acknowledged commits before the
kill counted again, the steps into the killed transaction moved with what is taken out of it."""

from __future__ import annotations

import itertools
from typing import Any

from uowstress.reproducers import Failure, KillPoint, Reproducer, Step, steps_after_acks
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
    tried = [(_ops(s), acks, extra) for s, acks, extra in smaller_workloads(_plan(steps, 2, 1))]
    assert tried[:6] == [
        # Without the transaction after the one the kill lands in (the third).
        (["B", "a", "b", "C", "B", "c", "C", "B", "d", "e", "C"], 2, 1),
        # Without each earlier transaction: one commit fewer before the kill.
        (["B", "c", "C", "B", "d", "e", "C", "B", "f", "C"], 1, 1),
        (["B", "a", "b", "C", "B", "d", "e", "C", "B", "f", "C"], 1, 1),
        # Without each operation of an earlier transaction.
        (["B", "b", "C", "B", "c", "C", "B", "d", "e", "C", "B", "f", "C"], 2, 1),
        (["B", "a", "C", "B", "c", "C", "B", "d", "e", "C", "B", "f", "C"], 2, 1),
        (["B", "a", "b", "C", "B", "C", "B", "d", "e", "C", "B", "f", "C"], 2, 1),
    ]


def test_the_killed_transaction_loses_what_follows_the_kill_and_each_operation() -> None:
    steps = _tx("a") + _tx("b", "c", "d") + _tx("e")
    # Killed two steps into the second transaction: its begin and "b" had started.
    tried = [(_ops(s), acks, extra) for s, acks, extra in smaller_workloads(_plan(steps, 1, 2))]
    assert tried[-4:] == [
        # The steps after the kill point ("c", "d") never started without a delay.
        (["B", "a", "C", "B", "b", "C", "B", "e", "C"], 1, 2),
        # Without "b", which had started: the kill comes one step earlier.
        (["B", "a", "C", "B", "c", "d", "C", "B", "e", "C"], 1, 1),
        # Without "c" or "d", which had not: the kill point stays.
        (["B", "a", "C", "B", "b", "d", "C", "B", "e", "C"], 1, 2),
        (["B", "a", "C", "B", "b", "c", "C", "B", "e", "C"], 1, 2),
    ]


def test_a_kill_inside_the_commit_stays_inside_it_and_one_before_the_begin_drops_it() -> None:
    steps = _tx("a") + _tx("b", "c")
    in_commit = list(smaller_workloads(_plan(steps, 1, 4)))
    assert [(_ops(s), a, e) for s, a, e in in_commit[-2:]] == [
        (["B", "a", "C", "B", "c", "C"], 1, 3),
        (["B", "a", "C", "B", "b", "C"], 1, 3),
    ]
    # Killed right after the first acknowledgement: the second transaction never began.
    before_begin = [(_ops(s), a, e) for s, a, e in smaller_workloads(_plan(steps, 1, 0))]
    assert before_begin[-3:] == [
        (["B", "a", "C"], 1, 0),
        (["B", "a", "C", "B", "c", "C"], 1, 0),
        (["B", "a", "C", "B", "b", "C"], 1, 0),
    ]
    assert all(len(s) < len(steps) for s, _, _ in smaller_workloads(_plan(steps, 1, 2)))


def test_a_kill_after_every_commit_keeps_them_all_but_tries_without_each() -> None:
    steps = _tx("a") + _tx("b")
    tried = [(_ops(s), acks) for s, acks, _ in smaller_workloads(_plan(steps, 2, 0))]
    assert tried[:2] == [(["B", "b", "C"], 1), (["B", "a", "C"], 1)]
    assert all(len(s) < len(steps) for s, _, _ in smaller_workloads(_plan(steps, 2, 0)))
    # Killed in the first transaction: nothing precedes it to drop; what follows it goes, and
    # its own operation ("a" had started: the kill comes one step earlier).
    assert [(_ops(s), a, e) for s, a, e in smaller_workloads(_plan(steps, 0, 2))] == [
        (["B", "a", "C"], 0, 2),
        (["B", "C", "B", "b", "C"], 0, 1),
    ]


def test_every_workload_tried_can_be_written_as_a_reproducer_that_loads() -> None:
    # Whatever is tried may become the reproducer: its steps and kill point must pass the
    # checks `uowstress replay` makes (steps there are, the kill point within reach).
    for sizes in itertools.chain.from_iterable(
        itertools.product(range(3), repeat=n) for n in (1, 2, 3)
    ):
        steps = [step for size in sizes for step in _tx(*"abc"[:size])]
        for acks in range(len(sizes) + 1):
            reach = steps_after_acks([s["action"] for s in steps], acks)
            for extra in range(reach + 1):
                for tried, after_acks, extra_steps in smaller_workloads(_plan(steps, acks, extra)):
                    reproducer = Reproducer(
                        machine="durability",
                        target="t:T",
                        backend="sqlite",
                        guarantee="serializable",
                        steps=[Step(**step) for step in tried],
                        failure=Failure(kind="lost", message="lost"),
                        kill=KillPoint(after_acks=after_acks, extra_steps=extra_steps),
                    )
                    where = (sizes, acks, extra, _ops(tried), after_acks, extra_steps)
                    assert reproducer.step_problems() == [], where
                    assert len(tried) < len(steps), where
