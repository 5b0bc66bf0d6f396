"""Shrinking a failing step list on its concrete JSON steps.

Hypothesis shrinks the choices that generated a run; with preconditions and identifiers that
depend on earlier draws, deleting one step there changes the meaning of the ones after it. Here
the steps are concrete (ids written out), so whole transactions and single operations can be
deleted freely: delta debugging on the structure, each candidate replayed from an empty
database. When nothing more can be deleted, two transactions of a session that follow each
other are joined into one (the first one's commit and the second one's begin deleted), and a
fault injected at the k-th statement is tried at an earlier one. A candidate counts only if it
fails with the same kind of finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Steps = list[dict[str, Any]]
ENDINGS = ("commit", "rollback", "leave", "raise", "fault")


def blocks(steps: Steps) -> list[list[int]]:
    """Indices of each transaction (a session's `begin` with its steps up to its ending, which
    may interleave with other sessions' steps), and of each step outside a transaction."""
    out: list[list[int]] = []
    open_blocks: dict[int, list[int]] = {}
    for index, step in enumerate(steps):
        session = int(step.get("session", 0))
        action = step.get("action")
        if action == "begin":
            block = [index]
            open_blocks[session] = block
            out.append(block)
        elif session in open_blocks:
            open_blocks[session].append(index)
            if action in ENDINGS:
                del open_blocks[session]
        else:
            out.append([index])
    out.sort(key=lambda b: b[0])
    return out


def _without(steps: Steps, drop: set[int]) -> Steps:
    return [s for i, s in enumerate(steps) if i not in drop]


def _joins(steps: Steps) -> list[set[int]]:
    """Pairs (a session's commit, that session's next begin) with no step of that session
    between them: deleting both joins the two transactions."""
    out: list[set[int]] = []
    for index, step in enumerate(steps):
        if step.get("action") != "commit":
            continue
        session = int(step.get("session", 0))
        for later in range(index + 1, len(steps)):
            if int(steps[later].get("session", 0)) != session:
                continue
            if steps[later].get("action") == "begin":
                out.append({index, later})
            break
    return out


# A joined transaction writes more before its fault: how many statements later to look.
_JOIN_REACH = 8


def _statement_faults(steps: Steps, reach: int) -> list[Steps]:
    """The steps with one statement fault moved to each other statement from the first to
    `reach` after its own, earliest first."""
    out: list[Steps] = []
    for index, step in enumerate(steps):
        fault = step.get("fault") or {}
        if step.get("action") != "fault" or fault.get("point") != "statement":
            continue
        own = int(fault.get("statement", 1))
        for statement in range(1, own + reach + 1):
            if statement != own:
                candidate = list(steps)
                candidate[index] = {**step, "fault": {**fault, "statement": statement}}
                out.append(candidate)
    return out


def minimize(
    steps: Steps,
    still_fails: Callable[[Steps], bool],
    *,
    budget_s: float = 60.0,
    max_trials: int = 500,
) -> tuple[Steps, int]:
    """The smallest failing step list found within the budget, and the number of replays."""
    deadline = time.monotonic() + budget_s
    trials = 0
    current = list(steps)

    def attempt(candidate: Steps) -> bool:
        nonlocal trials
        if trials >= max_trials or time.monotonic() > deadline:
            return False
        trials += 1
        return still_fails(candidate)

    changed = True
    while changed and trials < max_trials and time.monotonic() < deadline:
        changed = False
        last = len(current) - 1
        # Whole transactions first, latest first; the failing (last) step must stay.
        for block in reversed(blocks(current)):
            if last in block:
                continue
            candidate = _without(current, set(block))
            if attempt(candidate):
                current, changed = candidate, True
                last = len(current) - 1
                break
        if changed:
            continue
        # Then single operations.
        for index in range(len(current) - 2, -1, -1):
            if current[index].get("action") == "apply":
                candidate = _without(current, {index})
                if attempt(candidate):
                    current, changed = candidate, True
                    break
        if changed:
            continue
        # Then fewer transactions (the fault, if at a statement, tried at each statement the
        # joined flush may reach), and earlier faults.
        for pair in _joins(current):
            joined = _without(current, pair)
            for candidate in [joined, *_statement_faults(joined, _JOIN_REACH)]:
                if attempt(candidate):
                    current, changed = candidate, True
                    break
            if changed:
                break
        if changed:
            continue
        for candidate in _statement_faults(current, 0):
            if attempt(candidate):
                current, changed = candidate, True
                break
    return current, trials
