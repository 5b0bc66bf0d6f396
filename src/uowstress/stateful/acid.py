"""The single-session ACID machine: a Hypothesis rule-based state machine over a Target.

Rules open a Unit of Work, apply the target's operations, commit, roll back, leave without
commit, raise inside the block, commit with an injected fault, run whole-transaction services
and queries. After every step the executor checks the committed state against the model, the
invariants and the connection pool (see executor.py).
"""

from __future__ import annotations

import random
import tracemalloc
from array import array
from typing import Any, ClassVar

from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from uowstress.faults import FAULT_POINTS, KILL_AT, HookUse, unreached_warning
from uowstress.interrupts import raise_if_lost
from uowstress.stateful.drawing import choose, draw_arguments, swarms
from uowstress.stateful.executor import (
    Finding,
    SingleSessionExecutor,
    StepError,
    reset_for_example,
)
from uowstress.target import Operation, Query, System, Target, described


class _Noted:
    """A step as a Hypothesis failure report shows it, formatted only when it is shown (note()
    formats it only then, and formatting every step of every example is not free)."""

    __slots__ = ("number", "step")

    def __init__(self, number: int, step: dict[str, Any]) -> None:
        self.number = number
        self.step = step

    def __repr__(self) -> str:
        return f"step {self.number}: {self.step}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class RunRecorder:
    """What the machine leaves behind for the report: the last example's steps (after a failure,
    Hypothesis replays the shrunk example last), step timings and fault counts of all examples."""

    def __init__(self) -> None:
        self.last_steps: list[dict[str, Any]] = []
        self.examples = 0
        # Hypothesis steps (rules and initialize rules) run by the ACID machine, all examples.
        self.machine_steps = 0
        # Raw 64-bit integers: a run keeps every sample for the budgets, and a list of int
        # objects would cost four times the memory.
        self.step_ns: dict[str, array[int]] = {}
        self.fault_counts: dict[str, int] = {}
        # Where the system's Unit of Work calls the fault hook, learnt over every example (and
        # shared with the executors that shrink and replay for this run), and the faults at hook
        # points that did not fire.
        self.hook_use = HookUse()
        self.unreached: dict[str, int] = {}
        # Per example: the Python heap peak (tracemalloc) when traced, else the process's
        # resident peak observed after each step; and the growth, that peak less the size when
        # the example began (tracemalloc's peak is already relative to its start).
        self.memory_peaks: list[int] = []
        self.memory_growth: list[int] = []
        # The last step that failed, with the steps of its example up to it; and why the
        # system could not be reset for an example after the run's first, if it could not.
        # Hypothesis runs a failing example again to report it: when the failure left the
        # system broken, that run fails in reset() before drawing anything, which Hypothesis
        # takes for data generation that depends on outside state (see `broken_by`).
        self.failed: tuple[Exception, list[dict[str, Any]]] | None = None
        self.reset_error: Exception | None = None

    def reset(self, system: System) -> None:
        """Reset `system` for the next example, keeping why it could not be."""
        try:
            reset_for_example(system, first=self.examples == 0)
        except StepError:
            raise
        except Exception as error:
            self.reset_error = error
            raise

    def run_step(self, executor: Any, step: dict[str, Any]) -> Any:
        """`executor.run(step)`, keeping the failure and its steps should it fail."""
        try:
            return executor.run(step)
        except Exception as error:
            self.failed = (error, list(executor.steps))
            raise

    def broken_by(self) -> tuple[Exception, list[dict[str, Any]]] | None:
        """When the system could not be reset after an example: the failure that example
        found, with its steps, or else the reset's failure itself, as a finding of the steps
        that ran last (they left the system so). None when every reset succeeded."""
        if self.reset_error is None:
            return None
        if self.failed is not None:
            return self.failed
        error = self.reset_error
        return (
            Finding(
                "error",
                f"the system could not be reset after an example: reset() raised"
                f" {described(error)}; the example left its database or connection pool"
                " broken",
            ),
            self.last_steps,
        )

    def absorb(
        self, executor: SingleSessionExecutor, memory_peak: int | None, growth: int | None = None
    ) -> None:
        self.examples += 1
        self.last_steps = list(executor.steps)
        for label, samples in executor.timings.samples.items():
            self.step_ns.setdefault(label, array("q")).extend(samples)
        for point, count in executor.fault_counts.items():
            self.fault_counts[point] = self.fault_counts.get(point, 0) + count
        for what, count in executor.unreached.items():
            self.unreached[what] = self.unreached.get(what, 0) + count
        if memory_peak is not None:
            self.memory_peaks.append(memory_peak)
        if growth is not None:
            self.memory_growth.append(growth)

    def warnings(self) -> list[str]:
        """What the run must say besides its outcome: faults drawn at hook points the system's
        Unit of Work never called the hook at, which were not injected."""
        said = unreached_warning(self.hook_use.points, self.unreached)
        return [] if said is None else [said]


def acid_machine(
    target: Target,
    system: System,
    recorder: RunRecorder,
    *,
    trace_memory: bool = False,
) -> type[RuleBasedStateMachine]:
    """A machine class bound to one system set up on one database."""
    step_ops = [op for op in target.operations if op.scope == "step"]
    transaction_ops = [op for op in target.operations if op.scope == "transaction"]
    queries = list(target.queries)
    # Built once: a strategy built afresh for each draw is validated afresh too.
    query_strategy = st.sampled_from(queries) if queries else st.nothing()
    abandon_strategy = st.sampled_from(["rollback", "leave", "raise"])
    fault_point_strategy = st.sampled_from(FAULT_POINTS)
    statement_strategy = st.integers(1, 6)
    kill_at_strategy = st.sampled_from(KILL_AT)

    class AcidMachine(RuleBasedStateMachine):
        recorded: ClassVar[RunRecorder] = recorder

        def __init__(self) -> None:
            super().__init__()
            recorder.reset(system)
            self.executor = SingleSessionExecutor(target, system, hook_use=recorder.hook_use)
            self._tracing = trace_memory and not tracemalloc.is_tracing()
            self.swarm: frozenset[str] | None = None
            self.rng = random.Random(0)
            if self._tracing:
                tracemalloc.start()

        def _run(self, step: dict[str, Any]) -> None:
            note(_Noted(len(self.executor.steps) + 1, step))
            self.recorded.run_step(self.executor, step)

        def _draw_args(self, data: st.DataObject, what: Operation | Query) -> Any:
            return draw_arguments(data.draw, what, self.executor.model_state(), self.executor.ids)

        @initialize(
            data=st.data(),
            count=st.integers(0, 3),
            swarm=swarms(target.operations),
            rng=st.randoms(use_true_random=True),
        )
        def seed_state(
            self, data: st.DataObject, count: int, swarm: frozenset[str], rng: random.Random
        ) -> None:
            self.recorded.machine_steps += 1
            self.swarm = swarm
            self.rng = rng
            # Start most examples from some committed state: a run that must first build
            # every robot from nothing spends its steps before reaching interesting ones.
            if count == 0 or not step_ops:
                return
            self._run({"action": "begin"})
            for _ in range(count):
                op = choose(step_ops, self.executor.model_state(), self.swarm, self.rng)
                args = self._draw_args(data, op)
                self._run({"action": "apply", "op": op.name, "args": args})
            self._run({"action": "commit"})

        @rule(data=st.data(), roll=st.integers(0, 19))
        def step(self, data: st.DataObject, roll: int) -> None:
            # One rule that looks at the executor's state, rather than two rules with opposite
            # preconditions: Hypothesis's own swarm testing disables rules at random, and an
            # example whose only enabled rule has a failing precondition is thrown away
            # (about four examples in ten were, work done included).
            raise_if_lost()
            self.recorded.machine_steps += 1
            if self.executor.is_open:
                self._work(data, roll % 10)
            else:
                self._idle(data, roll)

        def _idle(self, data: st.DataObject, roll: int) -> None:
            # Weighted by hand: a run of queries on an empty database tests little. Mostly
            # open a unit of work.
            if roll >= 17 and queries:
                query = data.draw(query_strategy)
                args = self._draw_args(data, query)
                self._run({"action": "query", "query": query.name, "args": args})
            elif roll >= 12 and transaction_ops:
                op = choose(transaction_ops, self.executor.model_state(), self.swarm, self.rng)
                args = self._draw_args(data, op)
                self._run({"action": "transaction", "op": op.name, "args": args})
            else:
                self._run({"action": "begin"})

        def _work(self, data: st.DataObject, roll: int) -> None:
            # Several operations per transaction (atomicity is about more than one change),
            # then one way of ending it.
            if roll < 6 and step_ops:
                op = choose(step_ops, self.executor.model_state(), self.swarm, self.rng)
                args = self._draw_args(data, op)
                self._run({"action": "apply", "op": op.name, "args": args})
                return
            # Ending: commit (rolls 6, 7), a fault on the commit path (8), or abandon (9).
            if roll < 8:
                self._run({"action": "commit"})
                return
            if roll == 9:
                self._run({"action": data.draw(abandon_strategy)})
                return
            point = data.draw(fault_point_strategy)
            spec: dict[str, Any] = {"point": point}
            if point == "statement":
                spec["statement"] = data.draw(statement_strategy)
            if point == "kill":
                spec["kill_at"] = data.draw(kill_at_strategy)
            event(f"fault point: {point}")
            self._run({"action": "fault", "fault": spec})

        @invariant()
        def nothing_left_behind(self) -> None:
            # Checks run after every step inside the executor; this only keeps Hypothesis
            # aware that the machine has invariants (its statistics show them).
            return None

        def teardown(self) -> None:
            self.executor.close()
            peak: int | None = self.executor.rss_peak or None
            growth = self.executor.rss_peak - self.executor.rss_start
            if self._tracing:
                peak = growth = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            self.recorded.absorb(self.executor, peak, growth)

    AcidMachine.__name__ = f"AcidMachine[{target.name}]"
    return AcidMachine
