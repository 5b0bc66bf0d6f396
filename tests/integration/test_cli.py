"""The uowstress command line: exit codes and messages."""

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


def run_machines(tmp_path: Path, *args: str) -> tuple[int, str]:
    """`uowstress run` of the state machines only, JSON report in tmp_path/out, reproducers in
    tmp_path/rep."""
    return invoke(
        "run",
        "--pattern",
        "test_state_machines.py",
        "--format",
        "json",
        "--output-dir",
        str(tmp_path / "out"),
        "--reproducers-dir",
        str(tmp_path / "rep"),
        *args,
    )


def _report(out_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir / "uowstress-report.json").read_text())
    return data


def test_run_explores_with_the_machines_and_writes_the_report(tmp_path: Path) -> None:
    code, out = run_machines(tmp_path)
    assert code == 0, out
    assert "PASSED" in out
    assert "WARNING" not in out
    report = _report(tmp_path / "out")
    assert report["summary"]["exit_status"] == 0
    assert [m["machine"] for m in report["machines"]] == ["acid", "sessions"]
    assert all(m["status"] == "passed" and m["backend"] == "sqlite" for m in report["machines"])
    assert all(m["examples"] > 0 for m in report["machines"])
    assert report["durability"][0]["status"] == "passed"
    assert report["durability"][0]["kills"] == 5
    # Step budgets were judged: per rule of the ACID machine, p95 and slowest step.
    (acid,) = [m for m in report["machines"] if m["machine"] == "acid"]
    assert {v["metric"] for v in acid["verdicts"]} == {
        "step_p95_s",
        "step_max_s",
        "example_memory_mb",
    }


def test_run_with_a_weakening_switch_exits_1_and_reports_the_replay_command(
    tmp_path: Path,
) -> None:
    code, out = run_machines(
        tmp_path, "--machine", "acid", "--kills", "0", "--target-option",
        "weaken=commit_swallows_errors",
    )  # fmt: skip
    assert code == 1, out
    assert "FINDING" in out and "uv run uowstress replay" in out
    written = list((tmp_path / "rep").glob("*.json"))
    assert len(written) == 1
    (finding,) = _report(tmp_path / "out")["findings"]
    assert finding["replay_command"] == f"uv run uowstress replay {written[0]}"
    assert finding["steps_by_session"] and all(finding["steps_by_session"])
    code, out = invoke("replay", str(written[0]))
    assert code == 1 and out.startswith("FAILED"), out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope.nope:X"], "cannot import target module"),
        (["--target-option", "weaken"], "not KEY=VALUE"),
        (["--target-option", "weaken=no_such_switch"], "unknown weakening switch"),
        (["--db-url", "postgresql://root:s3cret@127.0.0.1:1/test"], "cannot connect"),
        (["--db-url", "postgresql://root:s3cret@/test"], "names no server host"),
    ],
)
def test_run_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, out = invoke("run", *args, "--output-dir", str(tmp_path))
    assert code == 2, out
    assert not (tmp_path / "uowstress-report.json").exists()
    assert message in out
    assert "s3cret" not in out


def test_run_refuses_a_sqlite_database_holding_foreign_tables(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table payroll (id integer)")
    code, out = invoke("run", "--db-url", f"sqlite:///{path}", "--output-dir", str(tmp_path))
    assert code == 2
    assert "payroll" in out and "--allow-existing-tables" in out
    with sqlite3.connect(path) as conn:
        assert conn.execute("select name from sqlite_master").fetchall() == [("payroll",)]


def test_replay_of_a_malformed_file_is_an_error_and_touches_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "uowstress.reproducer", "steps": 3}')
    code, out = invoke("replay", str(bad))
    assert code == 2
    assert out.startswith("ERROR") and "malformed" in out
    assert bad.read_text() == '{"format": "uowstress.reproducer", "steps": 3}'


def test_replay_of_a_fixed_failure_says_fixed(tmp_path: Path) -> None:
    rep = reproducers.make_reproducer(
        target="humanoid_training.target:TARGET",
        backend="sqlite",
        guarantee="serializable",
        steps=[reproducers.Step(action="begin"), reproducers.Step(action="commit")],
        failure=reproducers.Failure(kind="state", message="old", step=2),
    )
    path = reproducers.write(rep, tmp_path)
    code, out = invoke("replay", "--dir", str(tmp_path))
    assert code == 0, out
    assert out.startswith("FIXED") and str(path) in out


def test_replay_with_nothing_to_replay(tmp_path: Path) -> None:
    code, out = invoke("replay", "--dir", str(tmp_path / "none"))
    assert code == 0 and "no reproducers" in out


def test_run_can_put_an_isolation_matrix_in_the_report(tmp_path: Path) -> None:
    code, out = run_machines(tmp_path, "--machine", "acid", "--kills", "0", "--isolation", "5")
    assert code == 0, out
    (matrix,) = _report(tmp_path / "out")["isolation"]
    assert matrix["backend"] == "sqlite"
    levels = {cell["level"] for cell in matrix["results"]}
    anomalies = {cell["anomaly"] for cell in matrix["results"]}
    assert levels and {"G0", "G2"} <= anomalies
    assert all(cell["examples"] > 0 for cell in matrix["results"])


def test_run_splits_exploration_across_workers(tmp_path: Path) -> None:
    code, out = run_machines(tmp_path, "--machine", "sessions", "--kills", "0", "--workers", "2")
    assert code == 0, out
    machines = _report(tmp_path / "out")["machines"]
    # Results came back from both worker processes, each shard with its half of the examples.
    assert sorted(m["id"].split("[")[1] for m in machines) == [
        "sqlite-shard0-sessions]",
        "sqlite-shard1-sessions]",
    ]
    assert all(m["examples"] > 0 and m["status"] == "passed" for m in machines)


def test_run_refuses_a_malformed_baseline_before_running(tmp_path: Path) -> None:
    baseline = tmp_path / "old.json"
    baseline.write_text('{"format": "uowstress.report", "schema_version": 1')
    code, out = invoke("run", "--baseline", str(baseline), "--output-dir", str(tmp_path / "out"))
    assert code == 2, out
    assert str(baseline) in out
    assert not (tmp_path / "out").exists()
    assert baseline.read_text() == '{"format": "uowstress.report", "schema_version": 1'


def test_run_against_a_faster_baseline_fails_on_the_regression(tmp_path: Path) -> None:
    args = ["run", "--pattern", "test_simple_uow_performance.py", "--format", "json"]
    code, out = invoke(*args, "--output-dir", str(tmp_path / "first"))
    assert code == 0, out
    # The same run, as if it had been three times faster: the next run is then a regression.
    baseline = _report(tmp_path / "first")
    for scenario in baseline["scenarios"]:
        scenario["latency_samples"] = [t / 3 for t in scenario["latency_samples"]]
    faster = tmp_path / "faster.json"
    faster.write_text(json.dumps(baseline))
    code, out = invoke(
        *args,
        "--baseline",
        str(faster),
        "--fail-on-regression",
        "20",
        "--output-dir",
        str(tmp_path / "second"),
    )
    assert code == 1, out
    report = _report(tmp_path / "second")
    regressed = [r for r in report["regressions"] if r["regressed"]]
    assert regressed and report["summary"]["regressions"] == len(regressed)
    assert "latency_p50_s" in {r["metric"] for r in regressed}
    # Without --fail-on-regression the same comparison is reported and does not fail the run.
    code, out = invoke(*args, "--baseline", str(faster), "--output-dir", str(tmp_path / "third"))
    assert code == 0, out
    assert any(r["regressed"] for r in _report(tmp_path / "third")["regressions"])


NO_WORKLOAD_TARGET = """
from examples.ledger import LedgerTarget


class NoWorkload(LedgerTarget):
    workload = None


TARGET = NoWorkload()
"""


def test_run_elsewhere_uses_its_own_suites_and_warns_when_every_scenario_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "no_workload_target.py").write_text(NO_WORKLOAD_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no tests/performance here
    code, out = invoke(
        "run", "--target", "no_workload_target:TARGET", "--pattern",
        "test_simple_uow_performance.py", "--format", "json", "--output-dir", "out",
    )  # fmt: skip
    assert code == 0, out
    assert (
        "WARNING: every performance scenario (4) was skipped, so nothing was measured:"
        " target ledger offers no workload"
    ) in out
    report = _report(tmp_path / "out")
    assert report["summary"]["scenarios"] == {"skipped": 4}
    assert Path(report["options"]["path"]).is_absolute()
