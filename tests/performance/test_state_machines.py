"""The state machines and the durability check, on each database: what `uowstress run`
explores besides the performance suites (the ACID machine with its model and faults, the
concurrent sessions machine, and SIGKILLs of a child process)."""

from __future__ import annotations

import pytest

from uowstress.pytest_plugin import Explorer


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_state_machine(uowstress_explorer: Explorer, machine: str, uowstress_shard: int) -> None:
    """Hypothesis explores the target; a finding fails the test with its reproducer."""
    run = uowstress_explorer.machine(machine, shard=uowstress_shard)
    assert run.examples > 0


def test_durability(uowstress_explorer: Explorer) -> None:
    """Every commit a killed child process acknowledged is there afterwards."""
    run = uowstress_explorer.durability()
    assert run.kills > 0
