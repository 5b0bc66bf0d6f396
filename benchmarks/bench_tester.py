"""How many steps per second the single-session ACID machine runs, against a bare Hypothesis
state machine with empty rules in the same run.

Both machines run under the same settings: the same number of examples and of steps per
example (the ci profile's 100 x 40 by default), Hypothesis's generate phase only, no example
database, no deadline. The bare machine is a `RuleBasedStateMachine` whose two rules do
nothing: what Hypothesis itself costs per step. The ACID machine is
`uowstress.stateful.run.run_acid(..., machine="acid")` on the reference system and SQLite
(`sqlite://`: a scratch file, in /dev/shm when the machine has it; see uowstress.scratch), timed
whole, from preparing the scratch database to dropping it. A step is one Hypothesis step (a
rule or an initialize rule); the ACID machine's steps each run one or more actions against
the system and its model, each followed by the checks. Reported: steps, examples, wall and CPU
seconds and steps per second of each, and the ratio of the ACID machine's steps per second to
the bare machine's (wall clock; CPU in brackets, which a busy machine disturbs less).

For scale, two more machines. One draws one small dictionary per step (an integer, a short
text, a float and a choice of three: less than any operation of the reference system draws) and
does nothing with it: what drawing arguments alone costs in Hypothesis. The other is the ACID
machine itself, drawing the same steps and running the same checks, against the reference
system's in-memory Unit of Work (the one its model uses) in place of the database and the
SQLAlchemy Unit of Work, brought in through the Target protocol like any other system (fault
steps commit as plain commits there). What it leaves is the tester's own cost per step plus
a second run of the model; the difference to the ACID machine is what the database and the
real Unit of Work cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the repository root holds the benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from benchmarks import verdicts
from humanoid_training.memory import InMemoryUnitOfWork
from humanoid_training.target import TARGET, HumanoidModel, HumanoidSystem
from uowstress.scratch import default_sqlite_directory
from uowstress.stateful.run import run_acid
from uowstress.target import DEFAULT_TARGET, FaultHook, State

GOAL = 0.40


@dataclass(frozen=True)
class MachineRun:
    steps: int
    examples: int
    wall_s: float
    cpu_s: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s

    @property
    def steps_per_cpu_s(self) -> float:
        return self.steps / self.cpu_s


@dataclass(frozen=True)
class TesterFigures:
    bare: MachineRun
    acid: MachineRun
    drawing: MachineRun
    in_memory: MachineRun
    max_examples: int
    step_count: int
    database: str

    @property
    def ratio(self) -> float:
        return self.acid.steps_per_s / self.bare.steps_per_s

    @property
    def cpu_ratio(self) -> float:
        return self.acid.steps_per_cpu_s / self.bare.steps_per_cpu_s

    def ratio_of(self, machine: MachineRun) -> tuple[float, float]:
        """A machine's steps per second against the bare machine's: wall clock, CPU."""
        return (
            machine.steps_per_s / self.bare.steps_per_s,
            machine.steps_per_cpu_s / self.bare.steps_per_cpu_s,
        )


def bench_settings(examples: int, steps: int) -> settings:
    """What every machine of the benchmarks runs under: generation only, nothing saved."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )


def _bare(examples: int, steps: int) -> MachineRun:
    counts = {"steps": 0, "examples": 0}

    class BareMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            counts["examples"] += 1

        @rule()
        def one(self) -> None:
            counts["steps"] += 1

        @rule()
        def other(self) -> None:
            counts["steps"] += 1

    return _timed(BareMachine, counts, examples, steps)


_SMALL_DICT = st.fixed_dictionaries(
    {
        "count": st.integers(0, 10),
        "name": st.text(max_size=12),
        "score": st.floats(0, 1),
        "kind": st.sampled_from(["a", "b", "c"]),
    }
)


def _drawing(examples: int, steps: int) -> MachineRun:
    counts = {"steps": 0, "examples": 0}

    class DrawingMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            counts["examples"] += 1

        @rule(arguments=_SMALL_DICT)
        def one(self, arguments: dict[str, Any]) -> None:
            counts["steps"] += 1

    return _timed(DrawingMachine, counts, examples, steps)


def _timed(
    machine: type[RuleBasedStateMachine], counts: dict[str, int], examples: int, steps: int
) -> MachineRun:
    """Run `machine`, whose examples and steps count themselves into `counts`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run_state_machine_as_test(machine, settings=bench_settings(examples, steps))
    return MachineRun(
        counts["steps"],
        counts["examples"],
        time.perf_counter() - wall,
        time.process_time() - cpu,
    )


class _CountedUnitOfWork(InMemoryUnitOfWork):
    """The in-memory Unit of Work, counting its commits on the system it belongs to."""

    def __init__(self, system: _InMemorySystem) -> None:
        super().__init__(system.store.store)
        self._system = system

    def commit(self) -> None:
        super().commit()
        self._system.commits += 1


class _InMemorySystem:
    """The reference system with its committed state in memory: units of work of the in-memory
    Unit of Work over a store of its own. The database `connect` set up is not used.

    The committed state is read, and its invariants checked, again only after a commit, as the
    executor does on SQLite (where the database tells it whether anything was committed), so
    that both machines check as often. A fault step commits like a plain commit: there is no
    commit path to inject into."""

    # The executor cannot ask the engine's database about these commits: it asks every step.
    commits_outside_engine = True

    def __init__(self, on_database: HumanoidSystem) -> None:
        self._on_database = on_database
        self.engine = on_database.engine
        self.store = HumanoidModel()
        self.commits = 0
        self._read: tuple[int, State] | None = None
        self._checked: tuple[State, list[str]] | None = None

    def unit_of_work(self, fault_hook: FaultHook | None = None) -> _CountedUnitOfWork:
        return _CountedUnitOfWork(self)

    def new_model(self) -> HumanoidModel:
        return HumanoidModel()

    def committed_state(self) -> State:
        if self._read is None or self._read[0] != self.commits:
            self._read = (self.commits, self.store.state())
        return self._read[1]

    def invariants(self, state: State) -> list[str]:
        if self._checked is None or self._checked[0] is not state:
            self._checked = (state, self._on_database.invariants(state))
        return self._checked[1]

    def reset(self) -> None:
        self.store = HumanoidModel()
        self._read = self._checked = None

    def dispose(self) -> None:
        self._on_database.dispose()


class _InMemoryTarget:
    """The reference target, its systems kept in memory (see _InMemorySystem)."""

    name = TARGET.name
    guarantee = TARGET.guarantee
    operations = TARGET.operations
    queries = TARGET.queries
    tables = TARGET.tables
    options = TARGET.options

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> _InMemorySystem:
        return _InMemorySystem(TARGET.connect(url, options, isolation_level=isolation_level))


IN_MEMORY_TARGET = _InMemoryTarget()


def _acid(examples: int, steps: int, url: str, target: str = DEFAULT_TARGET) -> MachineRun:
    with tempfile.TemporaryDirectory(prefix="uows_bench_") as reproducers:
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_acid(
            url,
            settings=bench_settings(examples, steps),
            machine="acid",
            reproducers_dir=Path(reproducers),
            target_spec=target,
        )
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    if not result.passed:
        raise RuntimeError(
            "the ACID machine did not pass on the reference system:"
            f" {result.finding or result.error}"
        )
    return MachineRun(result.machine_steps, result.examples, wall_s, cpu_s)


def measure_tester(
    *, examples: int = 100, steps: int = 40, url: str = "sqlite://"
) -> TesterFigures:
    """Run the bare machine, the ACID machine, the two machines for scale, and the bare machine
    again (the two bare runs are pooled, so that a load arriving during the run weighs on every
    side)."""
    first = _bare(examples, steps)
    acid = _acid(examples, steps, url)
    in_memory = _acid(examples, steps, url, target=f"{__name__}:IN_MEMORY_TARGET")
    drawing = _drawing(examples, steps)
    second = _bare(examples, steps)
    bare = MachineRun(
        first.steps + second.steps,
        first.examples + second.examples,
        first.wall_s + second.wall_s,
        first.cpu_s + second.cpu_s,
    )
    where = url
    if url == "sqlite://":
        where = f"sqlite:// (scratch in {default_sqlite_directory() or tempfile.gettempdir()})"
    return TesterFigures(bare, acid, drawing, in_memory, examples, steps, where)


def describe(f: TesterFigures) -> list[str]:
    def line(name: str, run: MachineRun) -> str:
        return (
            f"  {name:13s} {run.steps:6d} steps in {run.examples:4d} examples,"
            f" {run.wall_s:6.1f} s wall ({run.cpu_s:6.1f} s CPU):"
            f" {run.steps_per_s:7.0f} steps/s ({run.steps_per_cpu_s:7.0f} per CPU second)"
        )

    drawing, in_memory = f.ratio_of(f.drawing), f.ratio_of(f.in_memory)
    return [
        f"settings: {f.max_examples} examples x {f.step_count} steps; ACID machine on {f.database}",
        line("bare machine", f.bare),
        line("ACID machine", f.acid),
        f"  ratio {f.ratio:.3f} (CPU {f.cpu_ratio:.3f}) {verdicts.at_least(f.ratio, GOAL)}",
        line("drawing only", f.drawing),
        f"  (a machine that only draws one small dictionary per step: ratio {drawing[0]:.3f},"
        f" CPU {drawing[1]:.3f})",
        line("ACID, memory", f.in_memory),
        f"  (the ACID machine against the in-memory Unit of Work, no database: ratio"
        f" {in_memory[0]:.3f}, CPU {in_memory[1]:.3f})",
    ]


def goals(f: TesterFigures) -> list[verdicts.Goal]:
    return [
        verdicts.Goal(
            "ACID machine / bare machine, steps per second",
            f"ratio {f.ratio:.3f} (>= {GOAL:g})",
            f.ratio >= GOAL,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--db-url", default="sqlite://")
    args = parser.parse_args(argv)
    for text in describe(measure_tester(examples=args.examples, steps=args.steps, url=args.db_url)):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
