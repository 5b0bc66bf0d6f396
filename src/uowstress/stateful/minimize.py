"""Shrinking a failing step list on its concrete JSON steps.

Hypothesis shrinks the choices that generated a run; with preconditions and identifiers that
depend on earlier draws, deleting one step there changes the meaning of the ones after it. Here
the steps are concrete (ids written out), so whole transactions and single operations can be
deleted freely: delta debugging on the structure, each candidate replayed from an empty
database. A candidate counts only if it fails with the same kind of finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Steps = list[dict[str, Any]]


def blocks(steps: Steps) -> list[tuple[int, int]]:
    """Half-open index ranges: a `begin` with everything up to its ending step, or one step."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(steps):
        if steps[i].get("action") == "begin":
            j = i + 1
            while j < len(steps) and steps[j].get("action") == "apply":
                j += 1
            end = min(j + 1, len(steps))
            out.append((i, end))
            i = end
        else:
            out.append((i, i + 1))
            i += 1
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
        # Whole blocks first, from the end: the failing step is last and must stay.
        spans = blocks(current)
        for start, end in reversed(spans[:-1]):
            candidate = current[:start] + current[end:]
            if attempt(candidate):
                current, changed = candidate, True
        # Then single operations inside the remaining transactions.
        index = len(current) - 2
        while index >= 0:
            if current[index].get("action") == "apply":
                candidate = current[:index] + current[index + 1 :]
                if attempt(candidate):
                    current, changed = candidate, True
            index -= 1
    return current, trials
