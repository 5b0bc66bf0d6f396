"""How the machines draw the next operation.

Swarm testing (Groce et al., 2012): each example allows only a random subset of the
operations, so some examples are thick with the two or three operations that must meet for a
defect to show (two sessions assessing the same skill, say) instead of spreading every run
over every operation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, InvalidArgument

from uowstress.stateful.executor import StepError
from uowstress.target import Ids, Operation, Query, State, briefly, described


def swarms(ops: Sequence[Operation]) -> st.SearchStrategy[frozenset[str]]:
    """The operations one example may use (each kept with even odds)."""
    names = [op.name for op in ops]
    return st.lists(st.booleans(), min_size=len(names), max_size=len(names)).map(
        lambda keep: frozenset(n for n, k in zip(names, keep, strict=True) if k)
    )


def choose(
    ops: Sequence[Operation],
    state: State,
    swarm: frozenset[str] | None,
    rng: random.Random,
) -> Operation:
    """An operation of the swarm that can succeed, nine times in ten; any operation otherwise
    (refusals are behaviour too).

    Drawn with a generator seeded from the example's data rather than with `sampled_from`:
    Hypothesis leans towards the first element of a list, which would make one operation
    dominate every run. The seed is part of the example, so the choice is reproducible.
    """
    ops = list(ops)
    ready = [op for op in ops if is_enabled(op, state)]
    chosen = [op for op in ready if swarm is None or op.name in swarm] or ready or ops
    if rng.random() < 0.1:
        return rng.choice(ops)
    return rng.choice(chosen)


def is_enabled(op: Operation, state: State) -> bool:
    """`op.enabled(state)` (True without one), or StepError naming the operation when it
    raises: a defect of the target's predicate, which a replay (given its steps, drawing
    nothing) would never raise again, so it must not be taken for a failure of the system."""
    if op.enabled is None:
        return True
    try:
        return bool(op.enabled(state))
    except Exception as error:
        raise StepError(
            f"the `enabled` of operation {op.name} raised {described(error)}; enabled(state) is"
            " given the model's committed state (the model's state()) and must return True or"
            " False"
        ) from error


_FIX = (
    " fix the strategy (it is called with the committed state and an Ids, and returns a"
    " Hypothesis strategy of a JSON dict)"
)


def draw_arguments(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    what: Operation | Query,
    state: State,
    ids: Ids,
) -> Any:
    """The arguments of one call of `what`, drawn from its strategy: JSON, or StepError saying
    so (a reproducer must hold them, and a value it cannot write would crash the run)."""
    try:
        strategy = what.arguments(state, ids)
        if getattr(strategy, "is_empty", False):
            # Hypothesis would set the example aside without a word: the operation would never
            # run, in the whole run. (Known before drawing: an error raised once the draw has
            # stopped the example is not reported by Hypothesis.)
            raise StepError(
                f"the arguments strategy of {what.name} can draw nothing (it is st.nothing(), or"
                " made of it); to keep an operation out of a state, give it `enabled`"
                " instead;" + _FIX
            )
        args = draw(strategy)
    except StepError:
        raise
    except InvalidArgument as error:
        # A strategy built wrongly (st.integers(5, 1), not a strategy at all): the target's.
        raise StepError(
            f"the arguments strategy of {what.name} is not a valid strategy: {error};{_FIX}"
        ) from error
    except HypothesisException:
        raise  # Hypothesis's own control flow (an assumption not met, a frozen example)
    except Exception as error:
        # A defect of the target's strategy, not of the system: the reproducer holds the drawn
        # arguments, so a replay would not raise it again and would look like flakiness.
        raise StepError(
            f"the arguments strategy of {what.name} raised {type(error).__name__}: {error};{_FIX}"
        ) from error
    if not isinstance(args, dict):
        raise StepError(
            f"the arguments strategy of {what.name} drew {briefly(args, 200)}, not a dict; draw a"
            " dict of the operation's arguments (e.g. st.fixed_dictionaries({...}), or"
            " st.just({}) for none)"
        )
    try:
        json.dumps(args)
    except (TypeError, ValueError) as error:
        raise StepError(
            f"the arguments strategy of {what.name} drew {briefly(args, 200)}, which is not JSON"
            f" ({error}); draw JSON values only (str, int, float, bool, None, lists and dicts"
            " of them): a datetime as an ISO string, a set as a sorted list"
        ) from None
    return args
