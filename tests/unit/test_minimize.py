"""Shrinking concrete step lists."""

from __future__ import annotations

from typing import Any

from uowstress.stateful.minimize import blocks, minimize


def step(action: str, tag: str = "") -> dict[str, Any]:
    return {"action": action, "op": tag} if tag else {"action": action}


def test_blocks_group_a_transaction_with_its_ending() -> None:
    steps = [
        step("query"),
        step("begin"),
        step("apply", "a"),
        step("apply", "b"),
        step("commit"),
        step("transaction", "t"),
        step("begin"),
        step("leave"),
    ]
    assert blocks(steps) == [[0], [1, 2, 3, 4], [5], [6, 7]]


def test_blocks_follow_each_session_through_interleavings() -> None:
    steps = [
        {"session": 0, "action": "begin"},
        {"session": 1, "action": "begin"},
        {"session": 0, "action": "apply", "op": "a"},
        {"session": 1, "action": "commit"},
        {"session": 0, "action": "commit"},
        {"session": 1, "action": "transaction"},
    ]
    assert blocks(steps) == [[0, 2, 4], [1, 3], [5]]


def test_minimize_keeps_only_what_the_failure_needs() -> None:
    # Fails when a transaction applying "x" is committed before the last step.
    steps = [
        step("begin"),
        step("apply", "noise"),
        step("commit"),
        step("begin"),
        step("apply", "x"),
        step("apply", "noise"),
        step("commit"),
        step("query", "q"),
        step("transaction", "t"),
        step("query", "boom"),
    ]

    def fails(candidate: list[dict[str, Any]]) -> bool:
        if candidate[-1] != step("query", "boom"):
            return False
        seen_x = False
        for i, s in enumerate(candidate):
            if s == step("apply", "x") and step("commit") in candidate[i:]:
                seen_x = True
        return seen_x

    smallest, trials = minimize(steps, fails)
    assert smallest == [step("begin"), step("apply", "x"), step("commit"), step("query", "boom")]
    assert trials > 0


def test_minimize_respects_its_trial_budget() -> None:
    calls = []

    def fails(candidate: list[dict[str, Any]]) -> bool:
        calls.append(1)
        return True

    steps = [step("query", str(i)) for i in range(50)]
    _, trials = minimize(steps, fails, max_trials=5)
    assert trials == 5 == len(calls)


def fault_at(statement: int) -> dict[str, Any]:
    return {"action": "fault", "fault": {"point": "statement", "statement": statement}}


def test_minimize_joins_transactions_and_moves_the_fault_to_the_statement_that_still_fails() -> (
    None
):
    # A model of a partial commit: the fault must land on the third write of the transaction
    # that ends with it, and both "a" and "b" must have been written by then.
    steps = [
        step("begin"),
        step("apply", "a"),
        step("commit"),
        step("begin"),
        step("apply", "b"),
        fault_at(2),
    ]

    def fails(candidate: list[dict[str, Any]]) -> bool:
        last = candidate[-1]
        if last.get("action") != "fault":
            return False
        ops = [s.get("op") for s in candidate if s.get("action") == "apply"]
        begins = [i for i, s in enumerate(candidate) if s["action"] == "begin"]
        writes_before = [s.get("op") for s in candidate[begins[-1] :] if s["action"] == "apply"]
        return set(ops) == {"a", "b"} and last["fault"]["statement"] == len(writes_before) + 1

    smallest, _ = minimize(steps, fails)
    assert smallest == [step("begin"), step("apply", "a"), step("apply", "b"), fault_at(3)]


def test_minimize_moves_a_statement_fault_earlier_when_that_still_fails() -> None:
    steps = [step("begin"), step("apply", "a"), fault_at(5)]

    def fails(candidate: list[dict[str, Any]]) -> bool:
        last = candidate[-1]
        return last.get("action") == "fault" and last["fault"]["statement"] >= 2

    smallest, _ = minimize(steps, fails)
    assert smallest == [step("begin"), fault_at(2)]
