"""How every benchmark states a figure against its goal: the figure, the goal, MET or NOT MET.

Benchmarks print; they assert nothing about time (machines are shared and noisy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def at_most(value: float, goal: float, unit: str = "") -> str:
    """E.g. "(goal <= 1.5): MET"."""
    return f"(goal <= {goal:g}{unit}): {'MET' if value <= goal else 'NOT MET'}"


def at_least(value: float, goal: float, unit: str = "") -> str:
    return f"(goal >= {goal:g}{unit}): {'MET' if value >= goal else 'NOT MET'}"


def machine_load() -> str:
    """The 1-minute load average and the CPU count: figures from a busy machine read slower."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return f"{os.cpu_count()} CPUs"
    return f"load average {load:.2f} on {os.cpu_count()} CPUs"


@dataclass(frozen=True)
class Goal:
    """One goal's line in the summary: what was measured, the figure, and whether it met."""

    name: str
    figure: str
    met: bool | None  # None: not measured (e.g. the server was unavailable)

    def line(self) -> str:
        state = "not measured" if self.met is None else ("MET" if self.met else "NOT MET")
        return f"  {self.name:54s} {self.figure:30s} {state}"
