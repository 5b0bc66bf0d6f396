"""Findings that repeat: a leaked connection is found, shrunk and replayed alike run after run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from uowstress import reproducers
from uowstress.cli import main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def run_acid(tmp_path: Path, target: str) -> tuple[int, str]:
    return invoke(
        "run", "--pattern", "test_state_machines.py", "--machine", "acid", "--kills", "0",
        "--target", target, "--format", "json", "--output-dir", str(tmp_path / "out"),
        "--reproducers-dir", str(tmp_path / "rep"),
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
    for _ in range(3):  # later runs replay the saved example first: it must fail the same way
        code, out = run_acid(tmp_path, "leaky_target:TARGET")
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
