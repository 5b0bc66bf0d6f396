"""The uowstress command line: exit codes and messages."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.integration.support import REGISTER, register_then_kill
from uowstress import reproducers
from uowstress.cli import main
from uowstress.database import DEFAULT_URLS
from uowstress.stateful._durability_child import ACK_EARLY_ENV


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


def run_suite(tmp_path: Path, name: str, source: str, *args: str) -> tuple[int, str]:
    """`uowstress run` of one test file written to tmp_path/suite/<name>.py, JSON report in
    tmp_path/out. Names differ between tests: pytest imports each file by its name."""
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / f"{name}.py").write_text(textwrap.dedent(source))
    return invoke(
        "run", "--path", str(suite), "--format", "json", "--output-dir", str(tmp_path / "out"),
        *args,
    )  # fmt: skip


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


def test_a_database_error_that_stops_a_machine_or_the_durability_check_is_an_error_not_a_finding(
    tmp_path: Path,
) -> None:
    # The server goes away between two tests: the target's connect fails with the driver's
    # error. Exit 2 with the errors listed, not exit 1 as for a failed check.
    source = """
        import os

        import pytest

        from tests.integration.broken_targets import CONNECT_FAILS_ENV


        @pytest.fixture(autouse=True)
        def server_gone(monkeypatch):
            monkeypatch.setenv(CONNECT_FAILS_ENV, "1")


        def test_machine_when_the_server_is_gone(uowstress_explorer):
            uowstress_explorer.machine("acid")


        def test_durability_when_the_server_is_gone(uowstress_explorer):
            uowstress_explorer.durability()
    """
    code, out = run_suite(
        tmp_path, "test_server_gone_between_tests", source,
        "--target", "tests.integration.broken_targets:CONNECT_FAILS_WHEN_TOLD", "--kills", "1",
    )  # fmt: skip
    assert code == 2, out
    summary = _report(tmp_path / "out")["summary"]
    assert summary["exit_status"] == 2 and summary["failed_tests"] == [], summary
    said = "OperationalError: (builtins.Exception) server closed the connection unexpectedly"
    assert len(summary["errors"]) == 2 and all(said in e for e in summary["errors"]), summary


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
        (["--fail-on-regression", "10"], "pass --baseline PATH"),
        (["--db-url", "postgresql://root:s3cret@/test"], "names no server host"),
        (["--db-url", "postgresql://root:s3cret@127.0.0.1:x/test"], "port must be a number"),
        (["--target-option", "max_payload_bytes=abc"], "max_payload_bytes 'abc' is not a whole"),
        (["--kills", "abc"], "--kills 'abc' is not a whole number of 0 or more"),
        (["--kills", "-3"], "--kills '-3' is not a whole number of 0 or more"),
        (["--reproducers-dir", "{tmp}/afile"], "afile: that is a file; give a folder"),
        (["--db-url", "sqlite:///{tmp}/afile"], "afile is not a SQLite database"),
        (["--db-url", "sqlite:///{tmp}"], "names a directory"),
        (
            ["--db-url", "mysql://root:s3cret@127.0.0.1:3306/test?charset=bogus"],
            "the URL's parameter charset=bogus is not one PyMySQL accepts",
        ),
        (
            ["--db-url", "mysql://root:s3cret@127.0.0.1:3306/test?read_timeout=-1"],
            "parameter read_timeout=-1 is not one PyMySQL accepts: ValueError: read_timeout",
        ),
        (["--db-url", "sqlite://root:s3cret@localhost/x.db"], "sqlite:///relative/path.db"),
        (
            [
                "--db-url",
                "sqlite:///{tmp}/a.db",
                "--db-url",
                "sqlite://",
                "--db-url",
                "sqlite:///{tmp}/a.db",
            ],
            "--db-url values 1 and 3 name the same database (sqlite:///",
        ),
    ],
)
def test_run_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "afile").write_text("keep me")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    code, out = invoke("run", *args, "--output-dir", str(tmp_path))
    assert code == 2, out
    assert not (tmp_path / "uowstress-report.json").exists()
    assert message in out
    assert "s3cret" not in out
    assert (tmp_path / "afile").read_text() == "keep me"


def test_run_refuses_an_output_folder_it_could_not_write_before_running(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep me")
    code, out = invoke("run", "--output-dir", str(tmp_path / "afile" / "reports"))
    assert code == 2, out
    assert "--output-dir" in out and "no folder can be made there" in out
    assert "passed" not in out  # refused before any suite ran


def test_run_refuses_a_sqlite_database_holding_foreign_tables(tmp_path: Path) -> None:
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


def test_replay_of_a_reproducer_of_another_version_says_which_and_what_to_do(
    tmp_path: Path,
) -> None:
    path = _fixed_reproducer(tmp_path)
    path.write_text(path.read_text().replace('"version": 1', '"version": 2'))
    code, out = invoke("replay", str(path))
    assert code == 2, out
    assert out.startswith("ERROR") and "reproducer version 2, this uowstress reads version 1" in out
    assert "replay it with the uowstress that wrote it" in out and "malformed" not in out


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
    assert "all 2 steps pass on sqlite://" in out  # where it ran: a default, unless given
    code, out = invoke("replay", "--dir", str(tmp_path), "--db-url", "sqlite://", "--db-url",
                       f"sqlite:///{tmp_path}/other.db")  # fmt: skip
    assert code == 2 and "--db-url names two sqlite databases" in out, out


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="nested-too-deeply"),
        pytest.param('{"format": "uowstress.reproducer", "version": ' + "9" * 5000 + "}",
                     id="huge-integer"),
    ],
)  # fmt: skip
def test_replay_of_a_hostile_file_is_an_error_and_the_others_are_replayed(
    tmp_path: Path, content: str
) -> None:
    hostile = tmp_path / "a.json"
    hostile.write_text(content)
    code, out = invoke("replay", str(hostile))
    assert code == 2, out
    assert out.startswith(f"ERROR  {hostile}: not valid JSON"), out
    # Named to sort after the hostile file: it must be replayed all the same.
    good_path = _fixed_reproducer(tmp_path).rename(tmp_path / "b.json")
    code, out = invoke("replay", "--dir", str(tmp_path))
    assert code == 2, out
    lines = out.splitlines()
    assert lines[0].startswith(f"ERROR  {hostile}:") and "not valid JSON" in lines[0]
    assert lines[1].startswith(f"FIXED  {good_path}:"), out
    assert hostile.read_text() == content


def test_replay_with_nothing_to_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    code, out = invoke("replay", "--dir", str(tmp_path / "empty"))
    assert code == 0 and "no reproducers" in out
    monkeypatch.chdir(tmp_path)  # no .hypothesis/reproducers, where none was written yet
    code, out = invoke("replay")
    assert code == 0 and "no reproducers" in out


def test_run_can_put_an_isolation_matrix_in_the_report(tmp_path: Path) -> None:
    code, out = run_machines(
        tmp_path, "--machine", "acid", "--kills", "0", "--isolation", "5", "--seed", "7"
    )
    assert code == 0, out
    (matrix,) = _report(tmp_path / "out")["isolation"]
    assert matrix["backend"] == "sqlite"
    assert matrix["seed"] == 7  # the run's seed: the whole run is drawn again with it
    levels = {cell["level"] for cell in matrix["results"]}
    anomalies = {cell["anomaly"] for cell in matrix["results"]}
    assert levels and {"G0", "G2"} <= anomalies
    assert all(cell["examples"] > 0 for cell in matrix["results"])


def test_a_run_with_workers_leaves_nothing_in_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr("tempfile.tempdir", str(temporary))
    code, out = run_suite(
        tmp_path, "test_two", "def test_one():\n    pass\ndef test_two():\n    pass\n",
        "--workers", "2",
    )  # fmt: skip
    assert code == 0, out
    assert sorted(p.name for p in temporary.iterdir()) == []


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
    # The reference target reports footprints: the checker judged histories in each shard.
    assert all(m["anomaly_checks"] > 0 for m in machines)
    # One seed for the run, chosen and reported; each shard draws with it plus its index.
    seed = _report(tmp_path / "out")["options"]["seed"]
    assert isinstance(seed, int)
    by_shard = {m["shard"]: m["seed"] for m in machines}
    assert by_shard == {0: seed, 1: seed + 1}


def _drawn(machine: dict[str, Any]) -> tuple[int, dict[str, int], dict[str, int]]:
    """What a machine run drew: its examples, its steps by rule or action, its faults."""
    steps = {label: stats["count"] for label, stats in machine["step_latency"].items()}
    return machine["examples"], steps, machine["fault_counts"]


def test_the_same_seed_draws_the_same_steps(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("first", "2718"), ("again", "2718"), ("other", "3141")):
        # The last --format wins: every report of the first run, JSON of the others.
        formats = ("--format", "all" if name == "first" else "json")
        code, out = run_machines(
            tmp_path / name, "--machine", "acid", "--kills", "1", "--seed", seed, *formats
        )
        assert code == 0, out
        # The console's last line names it as well.
        assert f"; seed {seed}\n" in out, out
        runs[name] = _report(tmp_path / name / "out")
    first, again, other = runs["first"], runs["again"], runs["other"]
    assert first["options"]["seed"] == 2718
    (machine,) = first["machines"]
    (durability,) = first["durability"]
    # The durability check draws its plans from the seed too (its outcome, how many commits
    # were acknowledged before the kill landed, is the kill's timing: not compared).
    assert machine["seed"] == 2718 and durability["seed"] == 2718
    markdown = (tmp_path / "first" / "out" / "uowstress-report.md").read_text()
    assert "| seed | 2718 (`--seed 2718` draws the same again) |" in markdown
    html = (tmp_path / "first" / "out" / "uowstress-report.html").read_text()
    assert "<code>--seed 2718</code> draws the same again" in html
    assert _drawn(again["machines"][0]) == _drawn(machine)
    assert _drawn(other["machines"][0]) != _drawn(machine)


@pytest.mark.parametrize("seed", ["abc", "-3", "1.5", ""])
def test_run_refuses_a_seed_that_is_not_a_whole_number(tmp_path: Path, seed: str) -> None:
    code, out = invoke("run", "--seed", seed, "--output-dir", str(tmp_path / "out"))
    assert code == 2, out
    assert f"--seed {seed!r} is not a whole number of 0 or more" in out
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_malformed_baseline_before_running(tmp_path: Path) -> None:
    baseline = tmp_path / "old.json"
    baseline.write_text('{"format": "uowstress.report", "schema_version": 1')
    code, out = invoke("run", "--baseline", str(baseline), "--output-dir", str(tmp_path / "out"))
    assert code == 2, out
    assert str(baseline) in out
    assert not (tmp_path / "out").exists()
    assert baseline.read_text() == '{"format": "uowstress.report", "schema_version": 1'
    code, out = invoke("run", "--baseline", str(tmp_path), "--output-dir", str(tmp_path / "out"))
    assert code == 2, out
    assert f"{tmp_path} is a folder without a uowstress-report.json" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": "uowstress.report", "version": ' + "9" * 5000 + "}", "more than 4300 digits"),
    ],
)
def test_run_refuses_a_hostile_baseline_before_running(
    tmp_path: Path, content: str, problem: str
) -> None:
    baseline = tmp_path / "old.json"
    baseline.write_text(content)
    code, out = invoke("run", "--baseline", str(baseline), "--output-dir", str(tmp_path / "out"))
    assert code == 2, out
    assert f"{baseline}: not valid JSON" in out and problem in out
    assert not (tmp_path / "out").exists()


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
    # The console says why the run failed: the regressions are counted and each is named.
    count = len(regressed)
    (summary,) = [line for line in out.splitlines() if line.startswith("FAILED: scenarios")]
    assert f", {count} regression{'s' if count != 1 else ''}; " in summary, out
    for regression in regressed:
        assert f"REGRESSED {regression['scenario']} {regression['metric']}: " in out
    # Without --fail-on-regression the same comparison is reported and does not fail the run.
    # The baseline may be given as the folder of its report, as the run wrote it.
    folder = tmp_path / "faster"
    folder.mkdir()
    faster.rename(folder / "uowstress-report.json")
    code, out = invoke(*args, "--baseline", str(folder), "--output-dir", str(tmp_path / "third"))
    assert code == 0, out
    assert any(r["regressed"] for r in _report(tmp_path / "third")["regressions"])


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("def test_x(:\n    pass\n", ["SyntaxError: invalid syntax", "def test_x(:"]),
        (
            "import no_such_module_here\n\ndef test_x():\n    pass\n",
            ["ModuleNotFoundError: No module named 'no_such_module_here'"],
        ),
    ],
    ids=["syntax-error", "import-error"],
)
def test_a_suite_that_cannot_be_collected_is_named_with_its_error(
    tmp_path: Path, source: str, said: list[str]
) -> None:
    name = f"test_uncollectable_{len(said)}"
    code, out = run_suite(tmp_path, name, source)
    assert code == 2, out
    assert "could not collect" in out
    assert str(tmp_path / "suite" / f"{name}.py") in out
    for line in said:
        assert line in out
    assert "Traceback" not in out and "importlib" not in out
    assert not (tmp_path / "out").exists()


ERRORS_SUITE = """
    import pytest

    from uowstress.report.model import DurabilityRun, Finding, MachineRun

    def _run(status, **fields):
        return MachineRun(
            id="m", machine="acid", backend="postgresql", database="postgresql://app:***@db/x",
            status=status, **fields,
        )

    def test_a_machine_that_could_not_run(uowstress_results):
        uowstress_results.machines.append(
            _run("error", error="OperationalError: postgresql://app:hunter2@db/x closed it")
        )
        pytest.fail("acid machine could not run", pytrace=False)

    def test_a_durability_check_that_could_not_run(uowstress_results):
        uowstress_results.durability.append(
            DurabilityRun(
                id="d", backend="sqlite", database="sqlite://", status="error",
                error="the child process could not start",
            )
        )
        pytest.fail("durability could not run", pytrace=False)

    def test_a_machine_that_found_something(uowstress_results):
        finding = Finding(source="acid machine on postgresql", kind="state", message="lost")
        uowstress_results.machines.append(_run("failed", finding=finding))
        pytest.fail("FINDING", pytrace=False)

    @pytest.fixture
    def server():
        raise ConnectionError("postgresql://app:hunter2@db/x refused the connection")

    def test_that_cannot_be_set_up(server):
        pass

    def test_that_passes():
        pass
"""


def test_errors_during_the_run_are_reported_and_outweigh_a_finding(tmp_path: Path) -> None:
    code, out = run_suite(tmp_path, "test_run_errors", ERRORS_SUITE, "--format", "all")
    assert code == 2, out
    assert "hunter2" not in out
    summary = _report(tmp_path / "out")["summary"]
    assert (summary["status"], summary["exit_status"], summary["findings"]) == ("error", 2, 1)
    assert summary["errors"] == [
        "acid machine on postgresql (m): OperationalError: postgresql://app:***@db/x closed it",
        "durability on sqlite (d): the child process could not start",
        "test_run_errors.py::test_that_cannot_be_set_up: error in setup: ConnectionError:"
        " postgresql://app:***@db/x refused the connection",
    ]
    for error in summary["errors"]:
        assert error in out
    for written in (tmp_path / "out").glob("uowstress-report.*"):
        assert "hunter2" not in written.read_text(), written
    assert "## Errors" in (tmp_path / "out" / "uowstress-report.md").read_text()


def _foreign_file(path: Path, *tables: str) -> Path:
    """A SQLite file holding the user's tables, one row each."""
    with sqlite3.connect(path) as conn:
        for table in tables:
            conn.execute(f"create table {table} (name text)")
            conn.execute(f"insert into {table} values ('theirs')")
    return path


def _contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        tables = conn.execute("select name from sqlite_master where type = 'table'")
        names = [row[0] for row in tables]
        return {name: conn.execute(f"select * from {name}").fetchall() for name in names}


def test_a_failed_isolation_search_keeps_the_report_and_exits_2(tmp_path: Path) -> None:
    # The file holds a table of the user's named like the search's register table: the suites
    # run on it (--allow-existing-tables), the search refuses to overwrite that table.
    database = _foreign_file(tmp_path / "theirs.db", "payroll", "uows_registers")
    code, out = run_suite(
        tmp_path, "test_isolation_fails", "def test_passes():\n    pass\n",
        "--db-url", f"sqlite:///{database}", "--allow-existing-tables", "--isolation", "1",
    )  # fmt: skip
    assert code == 2, out
    report = _report(tmp_path / "out")
    assert report["isolation"] == []
    (error,) = report["summary"]["errors"]
    assert error.startswith(f"isolation search on sqlite:///{database} failed: UnsafeDatabase:")
    assert "uows_registers" in error
    assert report["summary"]["exit_status"] == 2
    assert error in out
    assert _contents(database) == {"payroll": [("theirs",)], "uows_registers": [("theirs",)]}


def test_the_isolation_search_of_a_run_takes_allow_existing_tables(tmp_path: Path) -> None:
    database = _foreign_file(tmp_path / "theirs.db", "payroll")
    code, out = run_suite(
        tmp_path, "test_isolation_allowed", "def test_passes():\n    pass\n",
        "--db-url", f"sqlite:///{database}", "--allow-existing-tables", "--isolation", "1",
    )  # fmt: skip
    assert code == 0, out
    (matrix,) = _report(tmp_path / "out")["isolation"]
    assert matrix["results"] and all(cell["examples"] > 0 for cell in matrix["results"])
    # The user's table untouched, the search's own table gone.
    assert _contents(database) == {"payroll": [("theirs",)]}


def test_a_run_on_a_users_file_leaves_its_statistics_and_journal_mode(tmp_path: Path) -> None:
    database = _foreign_file(tmp_path / "theirs.db", "payroll")
    with sqlite3.connect(database) as conn:
        conn.execute("create index payroll_name on payroll (name)")
        conn.execute("analyze")
        # Statistics of the user's own, stale now: a run must not bring them up to date.
        conn.executemany("insert into payroll values (?)", [(f"n{i}",) for i in range(50)])
    before = _contents(database)
    assert "sqlite_stat1" in before
    code, out = run_suite(
        tmp_path, "test_explains", "def test_explains(perf):\n    perf.create(5)\n"
        "    assert perf.check_indexes()\n",
        "--db-url", f"sqlite:///{database}", "--allow-existing-tables",
    )  # fmt: skip
    assert code == 0, out
    # ANALYZE ran on the target's tables only, whose statistics went with them.
    assert _contents(database) == before
    with sqlite3.connect(database) as conn:
        assert conn.execute("pragma journal_mode").fetchone() == ("delete",)


def test_the_machines_and_durability_run_on_a_users_file_when_allowed(tmp_path: Path) -> None:
    database = _foreign_file(tmp_path / "theirs.db", "payroll")
    before = _contents(database)
    url = f"sqlite:///{database}"
    code, out = run_machines(
        tmp_path, "--machine", "acid", "--kills", "1", "--db-url", url, "--allow-existing-tables"
    )
    assert code == 0, out
    # The judged figures' tiers, said so: pytest counts warnings of its own.
    assert "; 0 findings, 0 critical figures, 0 figures at warning; " in out
    report = _report(tmp_path / "out")
    assert report["summary"]["errors"] == []
    (durability,) = report["durability"]
    assert durability["status"] == "passed" and durability["kills"] == 1
    assert _contents(database) == before
    with sqlite3.connect(database) as conn:
        assert conn.execute("pragma journal_mode").fetchone() == ("delete",)
    # Without the flag, the durability check is refused like the rest, and says so.
    code, out = run_machines(tmp_path, "--machine", "acid", "--kills", "1", "--db-url", url)
    assert code == 2 and "payroll" in out, out


def test_a_users_table_named_like_one_of_the_targets_is_never_taken_over(
    tmp_path: Path,
) -> None:
    # --allow-existing-tables shares the file; a table the target creates (and empties and
    # drops at the end) must not be the user's own.
    database = _foreign_file(tmp_path / "theirs.db", "payroll", "ht_robots")
    before = _contents(database)
    code, out = run_machines(
        tmp_path, "--kills", "1", "--db-url", f"sqlite:///{database}", "--allow-existing-tables"
    )
    assert code == 2, out
    assert "already holds ht_robots, which the run creates for itself" in out
    assert _contents(database) == before


TEARDOWN_SUITE = """
    import pytest

    @pytest.fixture
    def cleanup():
        yield
        raise RuntimeError("could not remove the fixture's files")

    def test_measured(cleanup, perf):
        perf.run([[perf.change(key) for key in perf.create(2)]])

    def test_plain(cleanup):
        pass
"""


def test_a_failed_teardown_is_one_error(tmp_path: Path) -> None:
    code, out = run_suite(tmp_path, "test_teardown_fails", TEARDOWN_SUITE)
    assert code == 2, out
    report = _report(tmp_path / "out")
    (scenario,) = report["scenarios"]
    assert scenario["status"] == "error"
    said = "RuntimeError: could not remove the fixture's files"
    # Once for the scenario (its result says so), once for the test without one.
    assert report["summary"]["errors"] == [
        f"test_teardown_fails.py::test_measured[sqlite]: teardown failed: {said}",
        f"test_teardown_fails.py::test_plain: error in teardown: {said}",
    ]
    assert report["summary"]["exit_status"] == 2
    assert out.count("teardown failed") == 2  # the scenario's line, and its one error
    assert out.count("error in teardown") == 1  # test_plain's only


CRASH_SUITE = """
    import os

    import pytest

    from uowstress.report.model import MachineRun

    ran = []

    @pytest.mark.parametrize("n", range(6))
    def test_records(uowstress_results, n):
        # One worker dies, in its second test: the result of its first has been handed over.
        if ran:
            try:
                os.close(os.open({mark!r}, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        ran.append(n)
        uowstress_results.machines.append(
            MachineRun(id=f"run{{n}}", machine="acid", backend="sqlite", database="sqlite://")
        )
"""


def test_a_crashed_worker_is_reported_and_its_finished_tests_kept(tmp_path: Path) -> None:
    source = CRASH_SUITE.format(mark=str(tmp_path / "crashed"))
    code, out = run_suite(tmp_path, "test_worker_crash", source, "--workers", "2")
    assert code == 2, out
    report = _report(tmp_path / "out")
    (error,) = report["summary"]["errors"]
    match = re.fullmatch(
        r"worker gw\d+ crashed \(.+\) while running test_worker_crash\.py::test_records\[(\d)\]",
        error,
    )
    assert match, error
    # Every test but the one that died recorded its result, on whichever worker it ran.
    recorded = sorted(m["id"] for m in report["machines"])
    assert recorded == [f"run{n}" for n in range(6) if n != int(match.group(1))]


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
    # The working directory has no performance_config.yaml: the built-in thresholds, not the
    # file beside uowstress's own suites (pytest's rootdir then), which is not the user's.
    assert report["options"]["config"] is None


def test_a_path_the_user_gave_is_not_replaced_by_the_packaged_suites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no tests/performance here
    code, out = invoke("run", "--path", "tests/performance", "--output-dir", "out")
    assert code == 2, out
    assert "--path tests/performance: no such file or folder" in out
    assert not (tmp_path / "out").exists()


def test_the_report_names_the_config_file_the_suites_were_judged_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No performance_config.yaml in the working directory; the suites' ini names one.
    (tmp_path / "pytest.ini").write_text("[pytest]\nuowstress_config = sizes.yaml\n")
    (tmp_path / "sizes.yaml").write_text("workloads:\n  writers: 3\n")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, out = run_suite(tmp_path, "test_judged_by", "def test_ok():\n    pass\n")
    assert code == 0, out
    assert _report(tmp_path / "out")["options"]["config"] == str(tmp_path / "sizes.yaml")


@pytest.mark.parametrize("kind", ["folder", "broken link"])
def test_a_default_config_that_is_not_a_file_is_an_error_not_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if kind == "folder":
        (tmp_path / "performance_config.yaml").mkdir()
    else:
        (tmp_path / "performance_config.yaml").symlink_to(tmp_path / "gone.yaml")
    code, out = invoke("run", "--pattern", "test_state_machines.py", "--output-dir", "out")
    assert code == 2, out
    assert "performance_config.yaml" in out
    assert not (tmp_path / "out").exists()


def _fixed_reproducer(tmp_path: Path) -> Path:
    """A reproducer that replays FIXED: its steps pass on the unweakened target."""
    return reproducers.write(
        reproducers.make_reproducer(
            target="humanoid_training.target:TARGET",
            backend="sqlite",
            guarantee="serializable",
            steps=[reproducers.Step(action="begin"), reproducers.Step(action="commit")],
            failure=reproducers.Failure(kind="state", message="old", step=2),
        ),
        tmp_path,
    )


def _with_steps(path: Path, steps: list[dict[str, Any]], **changes: Any) -> Path:
    """A copy of `path` with other steps, as a hand edit would make it."""
    data = json.loads(path.read_text())
    data.update(steps=steps, **changes)
    copy = path.with_name(f"000-edited-{path.name}")  # sorts before the ids: replayed first
    copy.write_text(json.dumps(data))
    return copy


def test_a_fault_without_a_point_is_malformed_and_the_batch_goes_on(tmp_path: Path) -> None:
    good = _fixed_reproducer(tmp_path)
    bad = _with_steps(good, [{"action": "begin"}, {"session": 0, "action": "fault", "fault": {}}])
    content = bad.read_text()
    code, out = invoke("replay", "--dir", str(tmp_path))
    assert code == 2, out
    assert "Traceback" not in out
    lines = out.splitlines()
    assert lines[0].startswith(f"ERROR  {bad}: malformed reproducer: step 2:")
    assert "a fault needs 'point' (one of before_flush" in lines[0]
    assert lines[1].startswith(f"FIXED  {good}")
    assert bad.read_text() == content


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"action": "begin"}, {"action": "fault", "fault": {"point": "nonsense"}}],
            "step 2: a fault's 'point' is 'nonsense'",
        ),
        (
            [
                {"action": "begin"},
                {"action": "fault", "fault": {"point": "statement", "statement": "abc"}},
            ],
            "step 2: a fault's 'statement' is 'abc'",
        ),
        (
            [{"session": 3, "action": "begin"}, {"session": 3, "action": "commit"}],
            "step 1: session 3 does not exist; the reproducer declares 1 session(s)",
        ),
    ],
    ids=["unknown-point", "statement-not-a-number", "session-out-of-range"],
)
def test_a_malformed_step_is_not_replayed_as_fixed(
    tmp_path: Path, steps: list[dict[str, Any]], message: str
) -> None:
    bad = _with_steps(_fixed_reproducer(tmp_path), steps, sessions=1)
    code, out = invoke("replay", str(bad))
    assert code == 2, out
    assert out.startswith("ERROR") and "malformed reproducer" in out and message in out


def test_replay_of_a_directory_points_to_dir(tmp_path: Path) -> None:
    folder = tmp_path / "batch dir"
    folder.mkdir()
    _fixed_reproducer(folder)
    code, out = invoke("replay", str(folder))
    assert code == 2, out
    assert f"{folder} is a directory, not a reproducer file" in out
    assert f"use --dir '{folder}'" in out
    assert "no such reproducer file" not in out


def test_the_replay_profile_with_nothing_saved_skips_and_writes_no_reproducer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty example database; uowstress's own suites
    code, out = run_machines(tmp_path, "--profile", "replay", "--kills", "0", "--verbose")
    assert code == 0, out
    assert "nothing saved to replay for the acid machine" in out
    assert "FINDING" not in out
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_the_skipped_durability_check_of_the_replay_profile_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run_machines(tmp_path, "--profile", "replay", "--verbose")
    assert code == 0, out
    # No --kills was given: the profile replays saved kills, and there are none.
    assert "the replay profile replays saved failures only, and" in out
    assert "holds no durability reproducer for this target" in out
    assert "--kills 0" not in out


def test_a_run_where_every_test_was_skipped_says_why_without_verbose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing saved: the replay profile skips every test
    code, out = run_machines(tmp_path, "--profile", "replay")
    assert code == 0, out
    warning = out[out.index("WARNING: every collected test (3) was skipped") :]
    reasons = warning.splitlines()[1:4]
    assert all(line.startswith("  ") for line in reasons), warning
    assert "nothing saved to replay for the acid machine" in reasons[0]
    assert "nothing saved to replay for the sessions machine" in reasons[1]
    assert "holds no durability reproducer" in reasons[2]
    assert "--verbose" not in warning


def test_the_replay_profile_replays_the_written_durability_reproducers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # The worker acknowledges each commit before making it: lost commits are found.
    monkeypatch.setenv(ACK_EARLY_ENV, "1")
    code, out = run_machines(tmp_path, "--machine", "acid", "--kills", "8")
    assert code == 1, out
    written = sorted((tmp_path / "rep").glob("*.json"))
    assert written, out
    code, out = run_machines(tmp_path, "--machine", "acid", "--profile", "replay")
    (durability,) = _report(tmp_path / "out")["durability"]
    assert durability["kills"] == len(written), out
    # Replayed, not written again: each finding names the file it came from.
    assert sorted((tmp_path / "rep").glob("*.json")) == written
    paths = {f["reproducer_path"] for f in durability["findings"]}
    assert paths <= {str(path) for path in written}
    # Once the commits are made before they are acknowledged, every one replays as passed.
    monkeypatch.delenv(ACK_EARLY_ENV)
    code, out = run_machines(tmp_path, "--machine", "acid", "--profile", "replay")
    assert code == 0, out
    (durability,) = _report(tmp_path / "out")["durability"]
    assert durability["status"] == "passed" and durability["kills"] == len(written)


def test_the_replay_profile_replays_the_written_reproducers_of_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    weak = ("--machine", "acid", "--kills", "0", "--target-option", "weaken=commit_swallows_errors")
    code, out = run_machines(tmp_path, *weak)
    assert code == 1, out
    (written,) = (tmp_path / "rep").glob("*.json")
    # A fresh clone: the reproducers committed, no example database.
    shutil.rmtree(tmp_path / ".hypothesis")
    code, out = run_machines(tmp_path, *weak, "--profile", "replay")
    assert code == 1, out
    assert "nothing saved" not in out
    # Nothing was drawn: no seed is reported, as if one would draw the same again.
    report = _report(tmp_path / "out")
    assert report["options"]["seed"] is None and report["machines"][0]["seed"] is None
    assert "; seed" not in out
    (finding,) = report["findings"]
    # (From outside the project, under `uv run`, the command names the project: see uv_run.)
    assert finding["replay_command"] == f"{reproducers.uv_run()}uowstress replay {written}"
    assert list((tmp_path / "rep").glob("*.json")) == [written]  # replayed, not written again
    # The same reproducer once the failure is gone (its steps now pass): replayed, passed.
    recorded = json.loads(written.read_text())["failure"]
    _with_steps(
        written, [{"action": "begin"}, {"action": "commit"}], failure={**recorded, "step": 2}
    ).replace(written)
    code, out = run_machines(tmp_path, *weak, "--profile", "replay")
    assert code == 0, out
    (acid,) = _report(tmp_path / "out")["machines"]
    assert acid["status"] == "passed" and acid["examples"] == 1
    # Another configuration's reproducers are not replayed as this one's.
    code, out = run_machines(
        tmp_path, "--machine", "acid", "--kills", "0", "--profile", "replay", "--verbose"
    )
    assert code == 0, out
    assert "nothing saved to replay for the acid machine" in out


def test_a_document_over_the_payload_limit_is_reported_as_refused_not_misread(
    tmp_path: Path,
) -> None:
    config = tmp_path / "big.yaml"
    config.write_text("workloads:\n  payload_kb: [2048]\n")
    code, out = invoke(
        "run", "--config", str(config), "--pattern", "test_unit_of_work_performance.py",
        "--kills", "0", "--format", "json", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 1, out
    assert "2048 KB document read back exactly: 2097193 bytes: the write was refused" in out
    assert "PayloadError" in out and "it differs" not in out


UNDECLARED_TABLE_TARGET = """
import sqlalchemy as sa
from examples.ledger import LedgerTarget


class WithAudit(LedgerTarget):
    # connect creates a table that `tables` does not name
    def connect(self, url, options, *, isolation_level=None):
        system = super().connect(url, options, isolation_level=isolation_level)
        with system.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE ledger_audit (note VARCHAR(20))"))
        return system


TARGET = WithAudit()
"""


def test_a_table_connect_creates_and_tables_does_not_name_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "audit_target.py").write_text(UNDECLARED_TABLE_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    database = _foreign_file(tmp_path / "theirs.db", "payroll")
    before = _contents(database)
    code, out = invoke(
        "run", "--target", "audit_target:TARGET", "--db-url", f"sqlite:///{database}",
        "--allow-existing-tables", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2, out
    assert "created table ledger_audit that its `tables` does not name" in out
    assert "ledger_accounts, ledger_entries" in out
    # Refused before anything ran, and the table it made is gone from the user's file.
    assert not (tmp_path / "out").exists()
    assert _contents(database) == before


PARTIAL_TABLES_TARGET = """
from examples.ledger import LedgerTarget


class Partial(LedgerTarget):
    tables = frozenset({"ledger_accounts"})  # connect creates ledger_entries too


TARGET = Partial()
"""


def test_a_users_table_that_tables_forgets_to_name_is_not_taken_over_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Creating the schema would skip the user's ledger_entries and take it for the target's:
    # what the target creates is found on a file of uowstress's own first.
    (tmp_path / "partial_target.py").write_text(PARTIAL_TABLES_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    database = _foreign_file(tmp_path / "theirs.db", "payroll", "ledger_entries")
    before = _contents(database)
    code, out = run_machines(
        tmp_path, "--target", "partial_target:TARGET", "--kills", "1",
        "--db-url", f"sqlite:///{database}", "--allow-existing-tables",
    )  # fmt: skip
    assert code == 2, out
    assert "created table ledger_entries that its `tables` does not name" in out
    assert _contents(database) == before


def test_a_users_view_named_like_a_table_of_the_target_is_refused(tmp_path: Path) -> None:
    database = _foreign_file(tmp_path / "theirs.db", "payroll")
    with sqlite3.connect(database) as conn:
        conn.execute("create view ht_robots as select name from payroll")
    code, out = run_machines(
        tmp_path, "--db-url", f"sqlite:///{database}", "--allow-existing-tables"
    )
    assert code == 2, out
    assert "already holds ht_robots, which the run creates for itself" in out
    assert "Traceback" not in out
    assert _contents(database) == {"payroll": [("theirs",)]}
    with sqlite3.connect(database) as conn:
        assert conn.execute(
            "select type from sqlite_master where name = 'ht_robots'"
        ).fetchall() == [("view",)]


PARAMETRIZED_SUITE = """
    import pytest

    @pytest.mark.parametrize("threads", [10, 1])
    def test_hot(perf, threads):
        keys = perf.create(2)
        perf.run([[perf.change(key) for key in keys] for _ in range(threads)])
"""


def test_each_parameter_of_a_scenario_is_its_own_scenario(tmp_path: Path) -> None:
    code, out = run_suite(tmp_path, "test_parametrized", PARAMETRIZED_SUITE)
    assert code == 0, out
    first = tmp_path / "first.json"
    (tmp_path / "out" / "uowstress-report.json").rename(first)
    scenarios = json.loads(first.read_text())["scenarios"]
    assert [(s["params"], s["threads"]) for s in scenarios] == [("10", 10), ("1", 1)]
    # Against itself as the baseline: each parameter compared with its own, every figure.
    code, out = run_suite(
        tmp_path, "test_parametrized", PARAMETRIZED_SUITE, "--baseline", str(first)
    )
    assert code == 0, out
    code, out = invoke("compare", str(first), str(tmp_path / "out"))
    assert "parametrized::hot[10][sqlite]" in out and "parametrized::hot[1][sqlite]" in out
    assert "only in the baseline" not in out


def test_a_baseline_sharing_no_scenario_cannot_judge_the_run(tmp_path: Path) -> None:
    code, out = run_suite(tmp_path, "test_elsewhere", PARAMETRIZED_SUITE)
    assert code == 0, out
    # The same scenarios measured on PostgreSQL: nothing of this SQLite run to compare with.
    baseline = _report(tmp_path / "out")
    for scenario in baseline["scenarios"]:
        scenario["backend"] = "postgresql"
    other = tmp_path / "postgresql.json"
    other.write_text(json.dumps(baseline))
    args = ["--baseline", str(other), "--format", "all"]
    code, out = run_suite(tmp_path, "test_elsewhere", PARAMETRIZED_SUITE, *args)
    assert code == 0, out
    assert "WARNING: nothing to compare: the baseline" in out
    assert (
        "the baseline holds 2 scenarios on postgresql; this run holds 2 scenarios on sqlite" in out
    )
    assert "No significant change" not in (tmp_path / "out" / "uowstress-report.md").read_text()
    code, out = run_suite(
        tmp_path, "test_elsewhere", PARAMETRIZED_SUITE, *args, "--fail-on-regression", "5"
    )
    assert code == 2, out
    report = _report(tmp_path / "out")
    assert report["summary"]["compared"] == 0 and report["summary"]["status"] == "error"
    (error,) = report["summary"]["errors"]
    assert error.startswith(f"nothing to compare: the baseline {other} shares no scenario run")
    assert "ERRORS:" in out and "nothing to compare" in out
    markdown = (tmp_path / "out" / "uowstress-report.md").read_text()
    assert "**Nothing to compare**" in markdown and "No significant change" not in markdown
    assert "Nothing to compare</strong>" in (tmp_path / "out" / "uowstress-report.html").read_text()


def test_a_machine_failed_by_its_step_budgets_and_the_shards_of_one_are_told_apart(
    tmp_path: Path,
) -> None:
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        "thresholds:\n"
        "  critical: {step_p95_s: 1.0e-7}\n"
        "  warning: {step_p95_s: 1.0e-7}\n"
        "  optimal: {step_p95_s: 1.0e-7}\n"
    )
    code, out = run_machines(
        tmp_path, "--machine", "acid", "--kills", "0", "--workers", "2", "--config", str(tight),
        "--format", "all",
    )  # fmt: skip
    assert code == 1, out
    machines = _report(tmp_path / "out")["machines"]
    assert sorted((m["shard"], m["shards"]) for m in machines) == [(0, 2), (1, 2)]
    assert all(m["status"] == "failed" and m["finding"] is None for m in machines)
    for shard in (1, 2):
        (line,) = [
            line for line in out.splitlines() if f"acid on sqlite, shard {shard} of 2" in line
        ]
        assert "PASSED" not in line and "FAILED, " in line and "critical figure" in line, out
    assert "  CRITICAL step " in out
    markdown = (tmp_path / "out" / "uowstress-report.md").read_text()
    assert "| acid machine, shard 1 of 2 | sqlite | **FAILED** |" in markdown
    assert "| acid machine, shard 2 of 2 | sqlite | **FAILED** |" in markdown
    assert "### acid machine on sqlite, shard 2 of 2: **FAILED**" in markdown


ASSERTING_SUITE = """
    import pytest

    @pytest.fixture
    def made():
        made = 1
        assert made == 2, f"the fixture expected 2, made {made}"

    def test_commits(perf):
        perf.run([[perf.change(key) for key in perf.create(2)]])
        committed = 1
        assert committed == 2, f"expected 2 commits, the system made {committed}"

    def test_set_up(made):
        pass
"""


def test_an_assertion_of_a_suite_is_reported_with_its_message(tmp_path: Path) -> None:
    code, out = run_suite(tmp_path, "test_asserting", ASSERTING_SUITE)
    assert code == 2, out
    report = _report(tmp_path / "out")
    (scenario,) = report["scenarios"]
    assert scenario["message"] == (
        "AssertionError: expected 2 commits, the system made 1\nassert 1 == 2"
    )
    assert report["summary"]["errors"] == [
        "test_asserting.py::test_set_up: error in setup: AssertionError: the fixture expected 2,"
        " made 1; assert 1 == 2"
    ]
    assert (
        "FAILED test_asserting.py::test_commits[sqlite]: AssertionError: expected 2 commits,"
        " the system made 1\n  assert 1 == 2\n" in out
    )


def test_replay_of_a_fixed_failure_of_one_step_says_so_in_the_singular(tmp_path: Path) -> None:
    reproducers.write(
        reproducers.make_reproducer(
            target="humanoid_training.target:TARGET",
            backend="sqlite",
            guarantee="serializable",
            steps=[reproducers.Step(action="begin")],
            failure=reproducers.Failure(kind="state", message="old", step=1),
        ),
        tmp_path,
    )
    code, out = invoke("replay", "--dir", str(tmp_path))
    assert code == 0, out
    assert "the 1 step passes on sqlite://" in out and "all 1 steps" not in out


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_replay_of_a_dir_that_is_not_a_folder_is_an_error(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "reproducers"
    if kind == "file":
        folder.write_text("x")
    code, out = invoke("replay", "--dir", str(folder))
    assert code == 2, out
    assert f"--dir {folder}: {'a file' if kind == 'file' else 'no such folder'}" in out


def test_a_reproducer_without_steps_is_an_error_not_fixed(tmp_path: Path) -> None:
    empty = _with_steps(_fixed_reproducer(tmp_path), [])
    code, out = invoke("replay", str(empty))
    assert code == 2, out
    assert out.startswith("ERROR") and "it has no steps" in out


@pytest.mark.parametrize(
    ("args", "replayed"),
    [
        ({"robot_id": "r1", "name": "Atlas"}, "FIXED"),  # the arguments as drawn
        ({"robot_idd": "r1", "name": "Atlas"}, "ERROR"),  # a misspelt name
        ({"robot_id": ["r1"], "name": "Atlas"}, "ERROR"),  # a value of another type
        # A value of another type that the domain refuses as it refuses a wrong value, on the
        # model as on the system; an argument the operation does not take.
        ({"robot_id": "r1", "name": 7}, "ERROR"),
        ({"robot_id": "r1", "name": "Atlas", "nickname": "A"}, "ERROR"),
    ],
)
def test_a_step_whose_arguments_fit_no_operation_is_an_error_not_fixed(
    tmp_path: Path, args: dict[str, Any], replayed: str
) -> None:
    steps = [
        {"action": "begin"},
        REGISTER,
        {"action": "commit"},
        {"action": "begin"},
        {"action": "apply", "op": "rename_robot", "args": args},
        {"action": "commit"},
    ]
    edited = _with_steps(_fixed_reproducer(tmp_path), steps)
    code, out = invoke("replay", str(edited))
    assert out.startswith(replayed), out
    if replayed == "ERROR":
        assert code == 2
        assert "the arguments of step 5 do not fit rename_robot: the model raised" in out
        assert "was the reproducer edited?" in out
    else:
        assert code == 0


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("many", "argument joint_count must be a whole number, got a string 'many'"),
        (3.5, "argument joint_count must be a whole number, got a number 3.5"),
        (True, "argument joint_count must be a whole number, got a boolean True"),
    ],
)
def test_a_value_of_another_type_the_model_refuses_by_its_rules_is_an_error_naming_the_step(
    tmp_path: Path, value: Any, said: str
) -> None:
    register = {**REGISTER, "args": {**REGISTER["args"], "joint_count": value}}
    steps = [{"action": "begin"}, register, {"action": "commit"}]
    edited = _with_steps(_fixed_reproducer(tmp_path), steps)
    code, out = invoke("replay", str(edited))
    assert code == 2, out
    assert out.startswith(
        f"ERROR  {edited}: the arguments of step 2 do not fit register_robot: the model raised"
        f" TypeError: {said}"
    ), out


def test_a_replay_error_names_the_file_once(tmp_path: Path) -> None:
    edited = _with_steps(
        _fixed_reproducer(tmp_path),
        [{"action": "begin"}, {"action": "commit"}],
        failure={"kind": "state", "message": "old", "step": 99},
    )
    code, out = invoke("replay", str(edited))
    assert code == 2, out
    assert out == (
        f"ERROR  {edited}: malformed reproducer: failure.step is 99, but the reproducer has 2"
        " step(s) (the failing step is counted from 1)\n"
    ), out
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "uowstress.reproducer", "target": "unterminated')
    code, out = invoke("replay", str(damaged))
    assert code == 2, out
    assert out.startswith(
        f"ERROR  {damaged}: not valid JSON (Unterminated string starting at line 1, column 46)"
    ), out
    assert out.count(str(damaged)) == 1


def test_replay_takes_allow_existing_tables_as_its_advice_says(tmp_path: Path) -> None:
    reproducer = _fixed_reproducer(tmp_path)
    database = _foreign_file(tmp_path / "theirs.db", "precious")
    before = _contents(database)
    url = f"sqlite:///{database}"
    code, out = invoke("replay", str(reproducer), "--db-url", url)
    assert code == 2 and "--allow-existing-tables" in out, out
    code, out = invoke("replay", str(reproducer), "--db-url", url, "--allow-existing-tables")
    assert code == 0 and out.startswith("FIXED"), out
    assert _contents(database) == before


def test_a_plain_failing_test_of_a_suite_is_named_with_its_message(tmp_path: Path) -> None:
    code, out = run_suite(
        tmp_path,
        "test_plain_failure",
        """
        def test_numbers():
            total = 1
            assert total == 2, f"expected 2, got {total}"


        def test_fine():
            pass
        """,
        "--kills", "0",
    )  # fmt: skip
    assert code == 1, out
    assert "FAILED test " in out and "test_plain_failure.py::test_numbers" in out
    assert "expected 2, got 1" in out
    (failed,) = _report(tmp_path / "out")["summary"]["failed_tests"]
    assert failed.endswith("test_numbers: AssertionError: expected 2, got 1; assert 1 == 2")


def test_a_baseline_run_at_other_workload_sizes_is_not_judged(tmp_path: Path) -> None:
    args = ["run", "--pattern", "test_simple_uow_performance.py", "--format", "json"]
    code, out = invoke(*args, "--output-dir", str(tmp_path / "first"))
    assert code == 0, out
    # The same run, as if its basic scenario had run 400 transactions three times faster.
    baseline = _report(tmp_path / "first")
    (basic,) = [s for s in baseline["scenarios"] if "sequential_transactions" in s["workload"]]
    basic["latency_samples"] = [t / 3 for t in basic["latency_samples"]]
    basic["workload"]["sequential_transactions"] = 400
    other = tmp_path / "other-sizes.json"
    other.write_text(json.dumps(baseline))
    code, out = invoke(
        *args, "--baseline", str(other), "--fail-on-regression", "1000",
        "--output-dir", str(tmp_path / "second"),
    )  # fmt: skip
    assert code == 0, out
    assert "not judged against the baseline, run at other workload sizes" in out
    differs = "(workload differs: sequential_transactions 400 -> 100)"
    assert f"{basic['scenario']}[sqlite] {differs}" in out
    report = _report(tmp_path / "second")
    # Three figures (latency, throughput, memory) of each scenario but the basic one.
    assert report["summary"]["compared"] == 3 * (len(report["scenarios"]) - 1)
    assert basic["scenario"] not in {r["scenario"].split("::")[1] for r in report["regressions"]}


def test_a_scenario_that_met_no_contention_says_which_sizes_to_raise(tmp_path: Path) -> None:
    code, out = run_suite(
        tmp_path,
        "test_no_contention",
        """
        def test_each_thread_its_own(perf):
            threads = perf.workloads.concurrent_threads
            own = perf.create(threads)
            perf.run([[perf.change(own[t])] for t in range(threads)])
            perf.check_contention()
        """,
        "--kills", "0",
    )  # fmt: skip
    assert code == 1, out
    (scenario,) = _report(tmp_path / "out")["scenarios"]
    (check,) = [c for c in scenario["checks"] if c["name"] == "conflicts or deadlocks happened"]
    assert not check["passed"]
    threads = scenario["workload"]["concurrent_threads"]
    assert check["detail"].startswith(f"0 conflicts and 0 deadlocks in {threads} attempts: the")
    assert f"at the sizes it read (concurrent_threads {threads}," in check["detail"]
    assert "raise its thread and transaction counts in performance_config.yaml" in check["detail"]


def test_the_replay_profile_names_a_saved_durability_reproducer_it_cannot_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    saved = register_then_kill(tmp_path / "rep")
    data = json.loads(saved.read_text())
    data["kill"]["extra_steps"] = 4  # past the steps the worker runs: it would never be killed
    saved.write_text(json.dumps(data))
    code, out = run_machines(tmp_path, "--machine", "acid", "--profile", "replay")
    # Not a pass, nor a skip "no durability reproducer": the one there cannot be replayed.
    assert code == 2, out
    (durability,) = _report(tmp_path / "out")["durability"]
    assert durability["status"] == "error"
    assert f"{saved}: malformed reproducer: kill.extra_steps is 4" in durability["error"]


def test_the_replay_profile_reports_what_a_saved_kill_found_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    register_then_kill(tmp_path / "rep", kind="partial", message="RECORDED half a transaction")
    # Killed in the pause between its early acknowledgement and its COMMIT, every time.
    monkeypatch.setenv(ACK_EARLY_ENV, "1")
    code, out = run_machines(tmp_path, "--machine", "acid", "--profile", "replay")
    assert code == 1, out
    (finding,) = _report(tmp_path / "out")["durability"][0]["findings"]
    assert finding["kind"] == "lost"
    assert finding["message"].startswith("commit 1 was acknowledged but is missing")
    assert finding["message"].endswith(
        "this differs from the recorded failure: [partial] RECORDED half a transaction"
    )


def test_a_run_keeps_its_tests_in_its_own_process_whatever_the_ini_file_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suites' ini file asks for pytest-xdist workers; without --workers the run stays in
    # one process, so that no worker shares the CPU with the scenarios the budgets judge.
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-n 2"\n')
    monkeypatch.setenv("UOWSTRESS_TEST_RUNNER_PID", str(os.getpid()))
    source = """
        import os

        def test_in_the_runners_process():
            assert os.getpid() == int(os.environ["UOWSTRESS_TEST_RUNNER_PID"])
    """
    code, out = run_suite(tmp_path, "test_one_process", source)
    assert code == 0, out
    assert "1 passed" in out, out


@pytest.fixture
def user_without_process(server_url: str) -> Iterator[str]:
    """A MariaDB user who may use uowstress's scratch databases but not see other sessions'
    lock waits (no PROCESS privilege); the URL of a database of its own. Dropped afterwards."""
    root = make_url(server_url)
    engine = create_engine(root)
    name, home = "uows_noproc_user", "uows_noproc_home"
    statements = [f"CREATE DATABASE IF NOT EXISTS {home}"]
    # Each %% is a % once the driver has formatted the statement with its (empty) parameters.
    for host in ("%%", "localhost"):
        statements += [
            f"CREATE USER IF NOT EXISTS '{name}'@'{host}' IDENTIFIED BY 'pw'",
            f"GRANT ALL ON `uows\\_%%`.* TO '{name}'@'{host}'",
        ]
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
        yield root.set(username=name, password="pw", database=home).render_as_string(
            hide_password=False
        )
    finally:
        with engine.begin() as conn:
            for host in ("%%", "localhost"):
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'{host}'")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {home}")
        engine.dispose()


@pytest.mark.mysql
@pytest.mark.parametrize("backend", ["mysql"])  # overrides the fixture: MariaDB's privilege
def test_a_machine_that_cannot_start_is_an_error_of_the_run_not_a_finding(
    tmp_path: Path, user_without_process: str
) -> None:
    code, out = run_machines(
        tmp_path, "--machine", "sessions", "--kills", "0", "--db-url", user_without_process
    )
    assert code == 2, out
    report = _report(tmp_path / "out")
    assert report["summary"]["status"] == "error"
    assert report["summary"]["findings"] == 0
    (machine,) = report["machines"]
    assert machine["status"] == "error" and machine["machine"] == "sessions"
    assert "GRANT PROCESS ON *.* TO <user>" in machine["error"]
    (error,) = report["summary"]["errors"]
    assert error.startswith("sessions machine on mysql (") and "PROCESS" in error
    # Named by the server and user the run was given, not by the run's scratch database,
    # which is gone by the time anyone reads this.
    assert "the scheduler cannot read lock waits on the mysql server at" in error, error
    assert f" as {make_url(user_without_process).username}:" in error, error
    assert re.search(r"uows_[0-9a-f]{12}", error) is None, error
    # The user's password stays out of the report and the console.
    assert ":pw@" not in json.dumps(report) and ":pw@" not in out


def test_an_interrupt_dropped_after_the_last_test_still_stops_the_run(tmp_path: Path) -> None:
    # As when SIGTERM lands in a garbage collector callback of a run whose workers run the
    # tests: no later test's setup raises it again, and the run ended as if never stopped.
    source = """
        import uowstress.interrupts as interrupts

        def test_last():
            interrupts._pending = KeyboardInterrupt("stopped by SIGTERM")
    """
    code, out = run_suite(tmp_path, "test_dropped_interrupt", source)
    assert code == 2, out
    assert "the run was interrupted; no report written" in out, out
    assert not (tmp_path / "out" / "uowstress-report.json").exists()


def test_a_run_with_seed_0_reports_its_seed(tmp_path: Path) -> None:
    # 0 is a seed like any other: the report and the console name it.
    source = """
        def test_nothing():
            pass
    """
    code, out = run_suite(tmp_path, "test_seed_zero", source, "--seed", "0")
    assert code == 0, out
    assert "; seed 0\n" in out, out
    assert _report(tmp_path / "out")["options"]["seed"] == 0


def test_a_run_keeps_to_one_process_where_the_ini_file_disables_pytest_xdist(
    tmp_path: Path,
) -> None:
    # pytest knows no `-n` there: the run must not pass one.
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-p no:xdist"\n')
    source = """
        def test_without_xdist():
            pass
    """
    code, out = run_suite(tmp_path, "test_without_xdist", source)
    assert code == 0, out
    assert "1 passed" in out, out


def test_replay_from_a_folder_below_imports_a_target_of_the_project(tmp_path: Path) -> None:
    # The run started in the project, whose own module is the target; the replay command is
    # run from the reports' folder below it.
    (tmp_path / "lab_target_of_this_project.py").write_text(
        "from humanoid_training.target import TARGET\n"
    )
    written = reproducers.write(
        reproducers.make_reproducer(
            target="lab_target_of_this_project:TARGET",
            backend="sqlite",
            guarantee="serializable",
            steps=[reproducers.Step(action="begin"), reproducers.Step(action="commit")],
            failure=reproducers.Failure(kind="state", message="old", step=2),
        ),
        tmp_path / reproducers.REPRODUCERS_DIR,
    )
    below = tmp_path / "performance_reports"
    below.mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "uowstress"), "replay", written.stem],
        cwd=below,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("FIXED"), done.stdout


def test_a_reproducer_that_cannot_be_written_leaves_the_finding_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an example database of its own: the second run replays it
    weak = ("--machine", "acid", "--kills", "0", "--target-option", "weaken=commit_swallows_errors")
    code, out = run_machines(tmp_path, *weak, "--seed", "1")
    assert code == 1, out
    (written,) = (tmp_path / "rep").glob("*.json")
    assert json.loads(written.read_text())["seed"] == "1"  # what the run drew with
    # The same failure again, with a folder where its file goes.
    written.unlink()
    written.mkdir()
    code, out = run_machines(tmp_path, *weak, "--seed", "1")
    assert code == 2, out
    assert "FINDING" in out and "cannot write the reproducer" in out, out
    report = _report(tmp_path / "out")
    (finding,) = report["findings"]
    assert finding["steps_by_session"] and finding["replay_command"] is None
    assert finding["reproducer_path"] is None
    (machine,) = report["machines"]
    assert machine["status"] == "error" and "cannot write the reproducer" in machine["error"]
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [written.name]  # no .tmp


@pytest.mark.parametrize(
    ("place", "said"),
    [
        ("uowstress-report.json", "is a folder, where the json report goes"),
        ("history", "is not a folder, where the run's history goes"),
    ],
)
def test_a_report_place_taken_is_refused_before_the_run(
    tmp_path: Path, place: str, said: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if place == "history":
        (out / place).write_text("not a folder")
    else:
        (out / place).mkdir()
    code, output = run_suite(tmp_path, "test_never_run", "def test_x():\n    1 / 0\n")
    assert code == 2, output
    assert said in output and "remove it or give another --output-dir" in output
    assert "ZeroDivisionError" not in output  # refused before anything ran


def test_a_history_folder_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    # Without its history entry no report is written: found at the end, the run is lost.
    out = tmp_path / "out"
    out.mkdir()
    (out / "history").symlink_to("/proc")  # a folder that takes no new files, even from root
    code, output = run_suite(tmp_path, "test_never_run_h", "def test_x():\n    1 / 0\n")
    assert code == 2, output
    assert f"the run's history goes in {out / 'history'}, which cannot be written" in output
    assert "takes no new files or folders" in output
    assert "make it writable or give another --output-dir" in output
    assert "ZeroDivisionError" not in output  # refused before anything ran


def test_a_history_entry_that_cannot_be_read_is_said_on_the_console_and_kept(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "out" / "history" / "20261001T050000.000000Z.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{ not json")
    code, output = run_suite(tmp_path, "test_history_h", "def test_x():\n    pass\n")
    assert code == 0, output
    assert f"WARNING: a history entry cannot be read: {broken}: not valid JSON" in output
    assert "left out of the trends and left in place" in output
    assert broken.read_text() == "{ not json"


def test_reports_that_cannot_be_written_at_the_end_leave_the_outcome_on_the_console(
    tmp_path: Path,
) -> None:
    # The place is taken during the run, after the checks: the outcome is still told.
    source = f"""
        from pathlib import Path

        def test_takes_the_place():
            Path({str(tmp_path / "out" / "uowstress-report.json")!r}).mkdir(parents=True)
            assert False, "what the run found"
    """
    code, output = run_suite(tmp_path, "test_takes_the_place", source)
    assert code == 2, output
    assert "what the run found" in output
    assert "ERRORS: part of the run could not go to its end" in output
    assert "a folder is in the way; the reports were not written" in output


def test_what_a_run_could_not_put_back_is_said_on_the_console_and_in_the_report(
    tmp_path: Path,
) -> None:
    database = _foreign_file(tmp_path / "theirs.db", "payroll")
    # The suite keeps the file open in WAL mode to the end: its journal mode cannot go back.
    source = f"""
        import sqlite3

        HOLDERS = []

        def test_holds_the_file(perf):
            perf.create(1)
            holder = sqlite3.connect({str(database)!r})
            holder.execute("select count(*) from payroll").fetchone()
            holder.execute("begin")
            holder.execute("select count(*) from payroll").fetchone()
            HOLDERS.append(holder)
    """
    code, out = run_suite(
        tmp_path, "test_holds_the_file", source,
        "--db-url", f"sqlite:///{database}", "--allow-existing-tables", "--format", "all",
    )  # fmt: skip
    assert code == 0, out  # the run's results stand
    assert "LEFT UNDONE: the run could not put back as it was:" in out, out
    assert f"could not put {database} back" in out and "PRAGMA journal_mode = DELETE" in out
    (undone,) = _report(tmp_path / "out")["summary"]["left_undone"]
    assert f"could not put {database} back" in undone
    assert "## Left undone" in (tmp_path / "out" / "uowstress-report.md").read_text()
    assert 'id="left-undone"' in (tmp_path / "out" / "uowstress-report.html").read_text()


def _reproducer_on(tmp_path: Path, backend: str) -> Path:
    return reproducers.write(
        reproducers.make_reproducer(
            target="humanoid_training.target:TARGET",
            backend=backend,
            guarantee="serializable",
            steps=[reproducers.Step(action="begin"), reproducers.Step(action="commit")],
            failure=reproducers.Failure(kind="state", message="old", step=2),
        ),
        tmp_path,
    )


@pytest.mark.parametrize(
    ("url", "backend", "message"),
    [
        (
            "sqlite://root:s3cret@localhost/x.db",
            "sqlite",
            "the SQLite URL sqlite://root:***@localhost/x.db names a user, a password and a"
            " host, but SQLite opens a file, not a server; write it as sqlite:// for a scratch"
            " file, sqlite:///relative/path.db or sqlite:////absolute/path.db",
        ),
        (
            "mysql://root:s3cret@127.0.0.1:3306/test?connect_timeout=abc",
            "mysql",
            "cannot connect to mysql+pymysql://root:***@127.0.0.1:3306/test?connect_timeout=abc:"
            " the URL's parameter connect_timeout=abc is not one PyMySQL accepts: ValueError:"
            " invalid literal for int() with base 10: 'abc'; fix the URL",
        ),
    ],
)
@pytest.mark.parametrize("command", ["replay", "isolation", "cleanup"])
def test_a_url_that_cannot_work_is_refused_by_every_command_with_exit_2(
    tmp_path: Path, command: str, url: str, backend: str, message: str
) -> None:
    args = [command, "--db-url", url]
    if command == "replay":
        args.append(str(_reproducer_on(tmp_path, backend)))
    code, out = invoke(*args)
    assert code == 2, out
    assert message in out
    assert "s3cret" not in out and "Traceback" not in out
    assert not (tmp_path / "x.db").exists()


def test_run_names_every_database_that_cannot_be_used_at_once(tmp_path: Path) -> None:
    code, out = invoke(
        "run", "--db-url", "postgresql://root:s3cret@127.0.0.1:1/test", "--db-url", "sqlite://",
        "--db-url", "mysql://root:s3cret@127.0.0.1:1/test", "--db-url",
        "sqlite://root:s3cret@localhost/x.db", "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 2, out
    assert "3 of the 4 --db-url databases cannot be used:" in out
    assert "postgresql server at 127.0.0.1:1" in out and "mysql server at 127.0.0.1:1" in out
    assert "the SQLite URL sqlite://root:***@localhost/x.db" in out
    assert "s3cret" not in out
    assert not (tmp_path / "uowstress-report.json").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "mysql://root:s3cret@127.0.0.1:1/test",
            "UOWSTRESS_PG_URL holds mysql+pymysql://root:***@127.0.0.1:1/test: a mysql URL, not"
            " a postgresql one; set it to a postgresql URL such as postgresql://user@host/db, or"
            " unset it for the local server",
        ),
        ("notaurl", "UOWSTRESS_PG_URL holds 'notaurl': not a URL uowstress can use; set it"),
        ("postgresql://root:s3cret@/test", "UOWSTRESS_PG_URL cannot be used: the postgresql URL"),
    ],
)
def test_replay_refuses_a_default_url_variable_that_names_no_server_of_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setitem(DEFAULT_URLS, "postgresql", value)  # as UOWSTRESS_PG_URL sets it
    code, out = invoke("replay", str(_reproducer_on(tmp_path, "postgresql")))
    assert code == 2, out
    assert out.startswith("ERROR") and message in out, out
    assert "s3cret" not in out


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_a_document_beyond_the_servers_statement_limit_names_that_limit(
    tmp_path: Path, server_url: str
) -> None:
    # MariaDB closes the connection on a statement over max_allowed_packet (16 MB by default)
    # with "server has gone away", which names no limit: the check's detail does.
    config = tmp_path / "big.yaml"
    config.write_text("workloads:\n  payload_kb: [17000]\n")
    suite = Path(__file__).parents[1] / "performance" / "test_unit_of_work_performance.py"
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", str(suite),
            "-k", "json_serialization", "--uowstress-db-url", server_url,
            "--uowstress-config", str(config),
            "--uowstress-target-option", "max_payload_bytes=40000000",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the write was refused" in done.stdout, done.stdout[-3000:]
    assert "(max_allowed_packet): raise it" in done.stdout, done.stdout[-3000:]


def test_replay_prints_its_verdicts_without_the_systems_log_lines(tmp_path: Path) -> None:
    weak = ("--machine", "acid", "--kills", "0", "--target-option", "weaken=commit_swallows_errors")
    code, out = run_machines(tmp_path, *weak)
    assert code == 1, out
    (written,) = (tmp_path / "rep").glob("*.json")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "uowstress"), "replay", str(written)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout.startswith("FAILED"), done.stdout + done.stderr
    # The weakened Unit of Work logs each error it swallows; that is the system's own output.
    assert "swallowed" not in done.stderr, done.stderr
