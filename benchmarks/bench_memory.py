"""How much the process's resident memory grows while the ACID machine runs many examples,
against a bare Hypothesis state machine running as many in the same run.

One `run_acid(..., machine="acid")` on the reference system and `sqlite://` runs
`warmup + examples` examples (dev profile's 20 steps each by default; generate phase only, no
example database). The executor records the resident set size (RSS, from /proc) after every
step and keeps each example's peak. Growth is the highest peak among the 20 examples ending the
measured ones minus the highest among the 20 examples ending the warm-up: the growth over
exactly `examples` examples. The warm-up (300 examples) lets the one-time growth settle first:
imports, the connection pool, SQLAlchemy's compiled-statement cache, and Hypothesis's example
cache, which uowstress bounds at 256 examples (see uowstress.stateful.example_cache); the RSS
before the first example is printed too. The bare machine (two empty rules, RSS read in its
teardown) runs as many examples with the same settings: Hypothesis keeps a record of every
example it ran, so some growth is its own. Reported: both growths in MB and per 1,000
examples, against the goal of at most 20 MB for the ACID machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the repository root holds the benchmarks package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from benchmarks import verdicts
from benchmarks.bench_tester import bench_settings
from uowstress.stateful.run import run_acid

GOAL_MB = 20.0
WINDOW = 20  # examples whose peaks are compared at each end
MB = 2**20


@dataclass(frozen=True)
class Growth:
    examples: int  # examples run after the warm-up
    start_mb: float
    end_mb: float

    @property
    def growth_mb(self) -> float:
        return self.end_mb - self.start_mb

    @property
    def per_1000_mb(self) -> float:
        return self.growth_mb * 1000 / max(self.examples, 1)


@dataclass(frozen=True)
class MemoryFigures:
    acid: Growth
    bare: Growth
    warmup: int
    step_count: int
    before_mb: float  # RSS before the ACID machine's first example


def _growth(peaks: list[int], warmup: int, examples: int) -> Growth:
    """From the examples ending the warm-up to those ending `examples` later (Hypothesis may run
    a few more examples than it counts as valid: those past the window are left out)."""
    end_at = warmup + examples
    if len(peaks) < end_at or examples < WINDOW:
        raise RuntimeError(
            f"only {len(peaks)} examples ran; the measurement needs {end_at}, and at least"
            f" {WINDOW} after the warm-up"
        )
    start = max(peaks[max(0, warmup - WINDOW) : warmup])
    end = max(peaks[end_at - WINDOW : end_at])
    return Growth(examples, start / MB, end / MB)


def _bare_peaks(examples: int, steps: int) -> list[int]:
    process = psutil.Process()
    peaks: list[int] = []

    class BareMachine(RuleBasedStateMachine):
        @rule()
        def one(self) -> None:
            return None

        @rule()
        def other(self) -> None:
            return None

        def teardown(self) -> None:
            peaks.append(process.memory_info().rss)

    run_state_machine_as_test(BareMachine, settings=bench_settings(examples, steps))
    return peaks


def measure_memory(
    *, examples: int = 2000, warmup: int = 300, steps: int = 20, url: str = "sqlite://"
) -> MemoryFigures:
    total = warmup + examples
    before = psutil.Process().memory_info().rss / MB
    with tempfile.TemporaryDirectory(prefix="uows_bench_") as reproducers:
        result = run_acid(
            url,
            settings=bench_settings(total, steps),
            machine="acid",
            reproducers_dir=Path(reproducers),
        )
    if not result.passed:
        raise RuntimeError(
            "the ACID machine did not pass on the reference system:"
            f" {result.finding or result.error}"
        )
    acid = _growth(result.memory_peaks, warmup, examples)
    bare = _growth(_bare_peaks(total, steps), warmup, examples)
    return MemoryFigures(acid, bare, warmup, steps, before)


def describe(f: MemoryFigures) -> list[str]:
    def line(name: str, g: Growth) -> str:
        return (
            f"  {name:13s} RSS {g.start_mb:6.1f} MB after the warm-up, {g.end_mb:6.1f} MB after"
            f" {g.examples} more examples: growth {g.growth_mb:+6.1f} MB"
            f" ({g.per_1000_mb:+.2f} MB per 1,000 examples)"
        )

    ratio = (
        f"{f.acid.growth_mb / f.bare.growth_mb:.2f} times the bare machine's"
        if f.bare.growth_mb > 0
        else "the bare machine did not grow"
    )
    return [
        f"settings: {f.warmup} warm-up examples, then the measured ones; {f.step_count} steps each;"
        f" RSS {f.before_mb:.1f} MB before the first",
        line("ACID machine", f.acid),
        line("bare machine", f.bare),
        f"  growth {f.acid.growth_mb:.1f} MB, {ratio}"
        f" {verdicts.at_most(f.acid.growth_mb, GOAL_MB, ' MB')}",
    ]


def goals(f: MemoryFigures) -> list[verdicts.Goal]:
    return [
        verdicts.Goal(
            f"RSS growth over {f.acid.examples:,} ACID examples",
            f"{f.acid.growth_mb:.1f} MB (<= {GOAL_MB:g} MB)",
            f.acid.growth_mb <= GOAL_MB,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    figures = measure_memory(examples=args.examples, warmup=args.warmup, steps=args.steps)
    for text in describe(figures):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
