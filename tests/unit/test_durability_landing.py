"""Where a durability kill landed: the worker's reports read after the kill was sent count, and
the delay is timed from when the worker wrote its last report."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from uowstress.reproducers import KillPoint
from uowstress.stateful import durability
from uowstress.stateful._durability_child import clock_ns
from uowstress.stateful.durability import KillPlan, run_child

PID = 4242
TWO_TRANSACTIONS: list[dict[str, Any]] = [
    {"action": "begin"},
    {"action": "apply", "op": "a"},
    {"action": "commit"},
] * 2


class _ScriptedServer:
    """A child server whose worker reports `before`, then, once the kill is sent, `after` (what
    it wrote before the signal reached it), and is reaped."""

    def __init__(self, before: list[str], after: list[str]) -> None:
        self.queue = [f"pid {PID}", *before]
        self.after = [*after, f"reaped {PID} killed 9"]
        self.killed = False
        self.lines = self
        self.process = SimpleNamespace(poll=lambda: None)

    def send(self, request: object) -> None:
        pass

    def next(self, timeout_s: float) -> str | None:
        if self.queue:
            return self.queue.pop(0)
        if self.killed and self.after:
            return self.after.pop(0)
        raise TimeoutError

    def stderr_tail(self, scrub: object) -> str:
        return "(nothing on stderr)"

    def kill(self, pid: int) -> None:
        assert pid == PID
        self.killed = True


def _run(
    monkeypatch: pytest.MonkeyPatch, plan: KillPlan, server: _ScriptedServer
) -> durability.ChildReport:
    monkeypatch.setattr(durability, "_kill", server.kill)
    return run_child(
        plan,
        server=server,  # type: ignore[arg-type]
        url="sqlite://",
        target_spec="t:T",
        options={},
        isolation_level=None,
        timeout_s=5.0,
    )


def _plan(acks: int, extra: int, delay_s: float = 0.0) -> KillPlan:
    steps = TWO_TRANSACTIONS
    return KillPlan(steps, [{}] * 3, [None] * len(steps), acks, extra, delay_s)


def test_a_kill_that_lands_later_than_planned_records_where_it_landed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Due when the first commit started; before the signal reached the worker, that commit
    # was acknowledged and the next transaction's begin and operation ran.
    now = clock_ns()
    server = _ScriptedServer(
        [f"ready @{now}", f"step 0 ok @{now}", f"step 1 ok @{now}", f"step 2 commit @{now}"],
        [f"ack 1 @{now + 10**9}", f"step 3 ok @{now + 10**9}", f"step 4 ok @{now + 10**9}"],
    )
    report = _run(monkeypatch, _plan(0, 3), server)
    assert report.acknowledged == 1 and not report.in_commit
    # Right after the last report: written after the kill was sent, it came before the signal.
    assert report.killed_at == KillPoint(after_acks=1, extra_steps=2, delay_us=0)


def test_a_kill_that_lands_where_planned_records_the_delay_after_the_workers_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = clock_ns()
    server = _ScriptedServer(
        [f"ready @{now}", f"step 0 ok @{now}", f"step 1 ok @{now}", f"step 2 commit @{now}"], []
    )
    report = _run(monkeypatch, _plan(0, 3, delay_s=0.02), server)
    assert report.acknowledged == 0 and report.in_commit
    point = report.killed_at
    assert (point.after_acks, point.extra_steps) == (0, 3)
    # 20 ms after the commit started, give or take the parent's own lateness.
    assert 20_000 <= point.delay_us < 1_000_000, point


def test_a_report_read_late_is_not_waited_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker wrote its report 300 ms before the parent read it: the 20 ms of the plan have
    # passed, the kill is sent at once, and it is recorded as sent 300 ms after the report.
    then = clock_ns() - 300 * 10**6
    server = _ScriptedServer([f"ready @{then}", f"step 0 ok @{then}"], [])
    report = _run(monkeypatch, _plan(0, 1, delay_s=0.02), server)
    assert (report.killed_at.after_acks, report.killed_at.extra_steps) == (0, 1)
    assert 300_000 <= report.killed_at.delay_us < 1_000_000, report.killed_at
