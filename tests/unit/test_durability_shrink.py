"""The smaller workloads a durability finding is tried with: the acknowledged commits before the
kill counted again, the steps into the killed transaction moved with what is taken out of it."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

from uowstress.reproducers import Failure, KillPoint, Reproducer, Step, steps_after_acks
from uowstress.stateful.durability import (
    DurabilityFinding,
    KillPlan,
    KillResult,
    shrink_kill,
    smaller_workloads,
)
from uowstress.target import Operation


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


# -- kills that land later than planned ----------------------------------------------------------


class _Work:
    """A model's Unit of Work that keeps nothing: only the steps matter here."""

    def __enter__(self) -> _Work:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def commit(self) -> None:
        pass


class _Model:
    def unit_of_work(self) -> _Work:
        return _Work()

    def state(self) -> dict[str, Any]:
        return {}


_MODEL_TARGET: Any = SimpleNamespace(
    name="t",
    operations=[Operation(op, lambda s, i: st.just({}), lambda uow, a: None) for op in "abcx"],
)


def _landed(plan: KillPlan, point: KillPoint, kind: str | None) -> KillResult:
    return KillResult(
        index=1,
        commits=plan.commits,
        kill_after_acks=plan.kill_after_acks,
        extra_steps=plan.extra_steps,
        kill_delay_s=plan.kill_delay_s,
        acknowledged=point.after_acks,
        in_commit=False,
        landed=None,
        seconds=0.0,
        finding=None if kind is None else DurabilityFinding(kind, "found"),
        killed_at=point,
    )


def test_shrinking_starts_from_where_the_kill_landed_and_keeps_each_trials_landing() -> None:
    # Planned after the first commit's begin, the kill landed 2 steps into the second
    # transaction (its begin and "x" had run): the problem is there, not where it was planned.
    steps = _tx("a") + _tx("x", "b") + _tx("c")
    planned = _plan(steps, 0, 1)
    found = _landed(planned, KillPoint(after_acks=1, extra_steps=2, delay_us=300), "partial")
    tried: list[tuple[list[str], KillPoint]] = []

    def kill_at(candidate: KillPlan) -> KillResult:
        tried.append((_ops(candidate.steps), candidate.point))
        if "x" not in _ops(candidate.steps):
            return _landed(candidate, candidate.point, None)
        # Each trial's kill lands one step further than it was planned, where it can.
        reach = steps_after_acks([s["action"] for s in candidate.steps], candidate.kill_after_acks)
        later = candidate.point.model_copy(
            update={"extra_steps": min(candidate.extra_steps + 1, reach), "delay_us": 0}
        )
        return _landed(candidate, later, "partial")

    small, kill = shrink_kill(
        planned, found, kill_at, _MODEL_TARGET, _Model, time.perf_counter() + 60
    )
    # The first workload tried keeps the transaction the kill landed in (the second), at the
    # landed point, where one made from the planned point would have kept the first alone.
    assert tried[0] == (
        ["B", "a", "C", "B", "x", "b", "C"],
        KillPoint(after_acks=1, extra_steps=2, delay_us=300),
    )
    # What is returned kills where its own kill landed: a reproducer of it replays that point.
    assert kill.finding is not None and kill.finding.kind == "partial"
    assert small.point == kill.killed_at
    assert "x" in _ops(small.steps) and len(small.steps) < len(steps)
    reproducer = Reproducer(
        machine="durability",
        target="t:T",
        backend="sqlite",
        guarantee="serializable",
        steps=[Step(**step) for step in small.steps],
        failure=Failure(kind="partial", message="found"),
        kill=kill.killed_at,
    )
    assert reproducer.step_problems() == []
