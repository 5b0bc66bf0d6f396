"""The uowstress command line: exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from uowstress import reproducers
from uowstress.cli import main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_run_passes_on_sqlite_and_writes_its_summary(tmp_path: Path) -> None:
    code, out = invoke(
        "run",
        "--output-dir",
        str(tmp_path / "out"),
        "--reproducers-dir",
        str(tmp_path / "rep"),
    )
    assert code == 0, out
    assert "PASSED" in out
    summary = json.loads((tmp_path / "out" / "uowstress-run.json").read_text())
    assert [m["machine"] for m in summary["machines"]] == ["acid", "sessions"]
    assert all(m["passed"] and m["backend"] == "sqlite" for m in summary["machines"])
    assert summary["durability"][0]["passed"] is True
    assert summary["durability"][0]["kills"] == 5


def test_run_with_a_weakening_switch_exits_1_and_prints_the_replay_command(
    tmp_path: Path,
) -> None:
    code, out = invoke(
        "run",
        "--target-option",
        "weaken=commit_swallows_errors",
        "--output-dir",
        str(tmp_path / "out"),
        "--reproducers-dir",
        str(tmp_path / "rep"),
    )
    assert code == 1, out
    assert "FINDING" in out and "uv run uowstress replay" in out
    written = list((tmp_path / "rep").glob("*.json"))
    assert len(written) == 1
    code, out = invoke("replay", str(written[0]))
    assert code == 1 and out.startswith("FAILED"), out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope.nope:X"], "cannot import target module"),
        (["--target-option", "weaken"], "not KEY=VALUE"),
        (["--target-option", "weaken=no_such_switch"], "unknown weakening switch"),
        (["--db-url", "postgresql://root:s3cret@127.0.0.1:1/test"], "cannot connect"),
    ],
)
def test_run_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, out = invoke("run", *args, "--output-dir", str(tmp_path))
    assert code == 2, out
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
