"""Findings that repeat, and systems whose answers do not: a leaked connection is found, shrunk
and replayed alike run after run; a flaky system is reported as not repeatable by the run and by
`uowstress replay --repeat`; replay can change the reproducer's target options."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.report_factory import report as make_report
from uowstress import reproducers
from uowstress.cli import _print_outcome, main
from uowstress.report.html import render_html
from uowstress.report.markdown import render_markdown
from uowstress.report.model import Finding


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def run_acid(tmp_path: Path, target: str, *more: str) -> tuple[int, str]:
    return invoke(
        "run", "--pattern", "test_state_machines.py", "--machine", "acid", "--kills", "0",
        "--target", target, "--format", "json", "--output-dir", str(tmp_path / "out"),
        "--reproducers-dir", str(tmp_path / "rep"), *more,
    )  # fmt: skip


def _report(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "out" / "uowstress-report.json").read_text())
    return data


# A Unit of Work that rolls back when its block raises but never gives its connection back, and
# that sits in a reference cycle (as an ORM repository holding its unit of work makes): the
# connection returns to the pool only when the garbage collector gets to the cycle. Only the
# exception the machine raises inside the block leaks (not a failed commit or service, whose
# smallest failing steps depend on the drawn arguments), so the shrunk steps are known.
LEAKY_TARGET = """
from typing import Any

from examples.ledger import LedgerSystem, LedgerTarget, SqlWork


class LeakyWork(SqlWork):
    def __enter__(self) -> "LeakyWork":
        self.me = self
        return super().__enter__()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None or kind.__name__ != "BlockError":
            return super().__exit__(kind, exc, tb)
        self.rollback()  # the connection is never closed on this path


class LeakySystem(LedgerSystem):
    def unit_of_work(self, fault_hook: Any = None) -> LeakyWork:
        return LeakyWork(self.engine, self.unsafe, fault_hook)


class LeakyTarget(LedgerTarget):
    def connect(self, url: str, options: Any, *, isolation_level: Any = None) -> LeakySystem:
        system = super().connect(url, options, isolation_level=isolation_level)
        return LeakySystem(system.engine, system.unsafe)


TARGET = LeakyTarget()
"""


def test_a_leaked_connection_is_found_shrunk_and_replayed_alike_run_after_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "leaky_target.py").write_text(LEAKY_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # its own example database
    # Each run draws fresh examples, and only a raise inside a unit of work leaks: the machine
    # draws one at about one step in thirty of an open unit of work, and the dev profile's 25
    # examples of up to 20 steps held none in about one run in 80 (which then found nothing).
    # So the first run's search is seeded, and given the ci profile's 100 examples of up to 40
    # steps: a change to how the machine draws is then unlikely to leave the seed without one.
    # The later runs draw with seeds of their own: they find the leak by replaying the example
    # the first one saved.
    for attempt in range(3):
        seeded = ["--seed", "2024"] if attempt == 0 else []
        code, out = run_acid(tmp_path, "leaky_target:TARGET", "--profile", "ci", *seeded)
        assert code == 1, out
        (finding,) = _report(tmp_path)["findings"]
        assert finding["kind"] == "leak"
        assert finding["message"].startswith("1 connection(s) still checked out"), finding
    (written,) = (tmp_path / "rep").glob("*.json")
    # Opening a unit of work and raising inside it is enough; earlier attempts' leaks must not
    # make every candidate fail sooner.
    assert [s.action for s in reproducers.load(written).steps] == ["begin", "raise"]
    code, out = invoke("replay", str(written))
    assert code == 1, out
    assert out.startswith("FAILED") and "[leak] 1 connection(s) still checked out" in out
    assert "differs" not in out


# The system answers the same steps differently from one run to the next: the FAIL_AT-th post of
# a system (counted from its connect or reset) raises, while FAILURES_LEFT lasts. Counters, not
# randomness, so that the test itself is deterministic.
FLAKY_TARGET = """
from typing import Any

from examples.ledger import LedgerError, LedgerSystem, LedgerTarget, SqlWork

FAIL_AT = 3
FAILURES_LEFT = 2


class FlakyWork(SqlWork):
    def post(self, entry: str, account: str, amount: int) -> None:
        global FAILURES_LEFT
        self.balance(account)  # an unknown account is refused as the model refuses it
        self.system.posts += 1
        if self.system.posts == FAIL_AT and FAILURES_LEFT > 0:
            FAILURES_LEFT -= 1
            raise LedgerError("the connection dropped, now and then")
        super().post(entry, account, amount)


class FlakySystem(LedgerSystem):
    posts = 0

    def unit_of_work(self, fault_hook: Any = None) -> FlakyWork:
        work = FlakyWork(self.engine, self.unsafe, fault_hook)
        work.system = self
        return work

    def reset(self) -> None:
        super().reset()
        self.posts = 0


class FlakyTarget(LedgerTarget):
    def connect(self, url: str, options: Any, *, isolation_level: Any = None) -> FlakySystem:
        system = super().connect(url, options, isolation_level=isolation_level)
        return FlakySystem(system.engine, system.unsafe)


TARGET = FlakyTarget()
"""


def test_a_failure_that_does_not_repeat_is_reported_as_such_by_run_and_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flaky_target.py").write_text(FLAKY_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "flaky_target", raising=False)
    # The first example reaching a third post fails, and so does Hypothesis's run of it again;
    # the third run of the same steps, before shrinking, passes.
    code, out = run_acid(tmp_path, "flaky_target:TARGET")
    assert code == 2, out
    report = _report(tmp_path)
    assert report["findings"] == []
    (error,) = report["summary"]["errors"]
    assert "answered the same steps differently when they ran again" in error, error
    assert "[outcome]" in error and "run again on a reset database, they passed every" in error
    (written,) = (tmp_path / "rep").glob("*.json")
    assert str(written) in error and "--repeat" in error
    recorded = reproducers.load(written).failure
    assert recorded.kind == "outcome" and recorded.step is not None

    flaky = sys.modules["flaky_target"]
    monkeypatch.setattr(flaky, "FAILURES_LEFT", 1)
    code, out = invoke("replay", str(written), "--repeat", "3")
    assert code == 2, out
    assert out.startswith("ERROR") and "not repeatable on sqlite://" in out, out
    assert f"1 of 3 runs failed at step {recorded.step} of" in out
    assert "2 of 3 runs passed every check" in out

    # Failing at another step than recorded: FAILED, with both failures described.
    monkeypatch.setattr(flaky, "FAILURES_LEFT", 5)
    monkeypatch.setattr(flaky, "FAIL_AT", 1)
    code, out = invoke("replay", str(written))
    assert code == 1, out
    assert out.startswith("FAILED") and "the connection dropped, now and then" in out
    assert f"this differs from the recorded failure, at step {recorded.step}: [outcome]" in out

    # The same failure every time: FAILED, and said to be the same in each run.
    monkeypatch.setattr(flaky, "FAILURES_LEFT", 5)
    monkeypatch.setattr(flaky, "FAIL_AT", 3)
    code, out = invoke("replay", str(written), "--repeat", "2")
    assert code == 1, out
    assert f"step {recorded.step} on sqlite://" in out and "each of 2 runs" in out
    assert "differs" not in out

    monkeypatch.setattr(flaky, "FAILURES_LEFT", 0)
    code, out = invoke("replay", str(written), "--repeat", "2")
    assert code == 0 and out.startswith("FIXED"), out


def _unsafe_reproducer(folder: Path) -> Path:
    """Steps that fail on the ledger with unsafe_commit=1 (each piece committed on its own, so
    a fault after the flush leaves the new account committed) and pass without it."""
    return reproducers.write(
        reproducers.make_reproducer(
            target="examples.ledger:TARGET",
            target_options={"unsafe_commit": "1"},
            backend="sqlite",
            guarantee="serializable",
            steps=[
                reproducers.Step(action="begin"),
                reproducers.Step(
                    action="apply",
                    op="open_account",
                    args={"account": "acct1", "initial": 5, "entry": "d1"},
                ),
                reproducers.Step(action="fault", fault={"point": "after_flush"}),
            ],
            failure=reproducers.Failure(kind="state", message="recorded", step=3),
        ),
        folder,
    )


def test_replay_can_replace_or_remove_the_reproducers_target_options(tmp_path: Path) -> None:
    written = _unsafe_reproducer(tmp_path)
    code, out = invoke("replay", str(written))
    assert code == 1 and out.startswith("FAILED") and "[state]" in out, out
    code, out = invoke("replay", str(written), "--target-option", "unsafe_commit=0")
    assert code == 0, out
    assert out.startswith("FIXED") and "with target options unsafe_commit=0" in out
    code, out = invoke("replay", str(written), "--target-option", "unsafe_commit=")
    assert code == 0, out
    assert "with target options none" in out
    # The file is left as it was.
    assert reproducers.load(written).target_options == {"unsafe_commit": "1"}
    code, out = invoke("replay", str(written), "--target-option", "weaken=no_version_check")
    assert code == 2, out
    assert "has no option weaken; its options: unsafe_commit" in out
    # An option the target no longer has can be removed: how such a reproducer replays.
    stale = _with_options(written, {"unsafe_commit": "1", "gone": "x"})
    code, out = invoke("replay", str(stale), "--target-option", "gone=")
    assert code == 1 and out.startswith("FAILED"), out
    code, out = invoke("replay", str(written), "--target-option", "unsafe_commit")
    assert code == 2, out
    assert "target option 'unsafe_commit' is not KEY=VALUE" in out


def _with_options(path: Path, options: dict[str, str]) -> Path:
    """A copy of the reproducer at `path` with other target options."""
    data = json.loads(path.read_text())
    data["target_options"] = options
    copy = path.with_name(f"edited-{path.name}")
    copy.write_text(json.dumps(data))
    return copy


def _finding(steps: int, shrunk_from: int) -> Finding:
    return Finding(
        source="acid machine on sqlite",
        kind="leak",
        message="1 connection(s) still checked out",
        reproducer_path=".hypothesis/reproducers/abc.json",
        replay_command="uowstress replay abc",
        steps_by_session=[[f"step {n}" for n in range(steps)]],
        shrunk_from=shrunk_from,
    )


def test_a_finding_that_was_not_shrunk_is_not_said_to_be(
    capsys: pytest.CaptureFixture[str],
) -> None:
    same = make_report(findings=[_finding(16, 16)])
    _print_outcome(same, verbose=False)
    out = capsys.readouterr().out
    assert "not shrunk (16 steps), written to" in out and "shrunk to" not in out
    assert "Steps: 16, not shrunk." in render_markdown(same)
    assert "16 steps, not shrunk:" in render_html(same)
    smaller = make_report(findings=[_finding(2, 16)])
    _print_outcome(smaller, verbose=False)
    assert "shrunk to 2 steps, written to" in capsys.readouterr().out
    assert "Steps: 2, shrunk from 16." in render_markdown(smaller)
    assert "2 steps, shrunk from 16:" in render_html(smaller)


def test_a_machine_that_stopped_before_connecting_is_shown_with_its_servers_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests import report_factory as rf

    stopped = rf.machine_run(status="error", error="no PROCESS privilege", server_version="")
    _print_outcome(make_report(machines=[stopped]), verbose=False)
    out = capsys.readouterr().out
    assert "sessions on sqlite (sqlite://, 3.40.1): 42 examples" in out, out
    assert ", )" not in out
