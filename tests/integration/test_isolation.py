"""`uowstress isolation` against the real servers, with small budgets."""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import URL

import uowstress.isolation as isolation_module
from tests.integration.support import LOST_UPDATE_REGISTERS
from uowstress.anomalies import analyse
from uowstress.cli import main
from uowstress.isolation import ANOMALY_CLASSES, normalize_level, resolve_levels
from uowstress.stateful.registers import (
    PREDICATES,
    validate_steps,
)

RESULT_KEYS = {"level", "anomaly", "observed", "examples", "seconds", "reproducer"}


def isolation(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["isolation", *args])
    return result.exit_code, result.output


def run_matrix(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str, str]:
    json_path, markdown_path = tmp_path / "out" / "m.json", tmp_path / "out" / "m.md"
    code, out = isolation(*args, "--json", str(json_path), "--markdown", str(markdown_path))
    assert code == 0, out
    return json.loads(json_path.read_text()), markdown_path.read_text(), out


def check_shape(report: dict[str, Any], backend: str, levels: list[str]) -> None:
    assert set(report) == {"backend", "server_version", "seed", "results"}
    assert isinstance(report["seed"], int)
    assert report["backend"] == backend and report["server_version"]
    cells = report["results"]
    assert [(c["level"], c["anomaly"]) for c in cells] == [
        (level, anomaly) for level in levels for anomaly in ANOMALY_CLASSES
    ]
    for cell in cells:
        assert set(cell) == RESULT_KEYS
        assert isinstance(cell["examples"], int) and cell["examples"] >= 1
        assert isinstance(cell["seconds"], float | int) and cell["seconds"] >= 0
        if cell["observed"] is True:
            assert validate_steps(cell["reproducer"])
        else:
            assert cell["observed"] is False and cell["reproducer"] is None


def observed(report: dict[str, Any], level: str) -> set[str]:
    return {c["anomaly"] for c in report["results"] if c["level"] == level and c["observed"]}


def test_sqlite_serializable_shows_nothing(tmp_path: Path) -> None:
    report, markdown, out = run_matrix(
        tmp_path, "--db-url", "sqlite://", "--budget-seconds", "4", "--profile", "dev"
    )
    check_shape(report, "sqlite", ["serializable"])
    assert observed(report, "serializable") == set()
    matrix_row = "| serializable |" + " — |" * len(ANOMALY_CLASSES)
    assert matrix_row in markdown and matrix_row in out


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_read_committed_loses_updates_and_serializable_does_not(
    tmp_path: Path, server_url: str, db_url: URL
) -> None:
    report, markdown, _ = run_matrix(
        tmp_path,
        "--db-url",
        server_url,
        "--levels",
        "read committed",
        "--levels",
        "SERIALIZABLE",
        "--budget-seconds",
        "20",
        "--profile",
        "ci",
    )
    check_shape(report, "postgresql", ["read committed", "serializable"])
    assert "P4" in observed(report, "read committed")
    assert observed(report, "serializable") == set()
    assert "### P4 at read committed" in markdown
    # The shrunk reproducer, replayed on a fresh database as the Markdown says, still loses an
    # update.
    lost = next(
        c for c in report["results"] if c["level"] == "read committed" and c["anomaly"] == "P4"
    )
    replay = _replay_the_markdown_names(markdown)
    run = replay(server_url, "read committed", lost["reproducer"])
    assert "P4" in {f.anomaly for f in analyse(run.history.transactions(), PREDICATES)}


def _replay_the_markdown_names(markdown: str) -> Any:
    """The function the Markdown report says replays a reproducer, called as it says."""
    found = re.search(r"`uowstress\.([\w.]+)\.(\w+)\(url, level, steps\)`", markdown)
    assert found, markdown
    return getattr(importlib.import_module(f"uowstress.{found[1]}"), found[2])


def test_a_reproducer_replays_in_one_call_on_a_fresh_database(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    run = isolation_module.replay_reproducer(
        f"sqlite:///{database}", "SERIALIZABLE", LOST_UPDATE_REGISTERS
    )
    # SQLite refuses the second writer: one commits, the other is aborted.
    statuses = sorted(t.status for t in run.history.transactions() if t.id)
    assert statuses == ["aborted", "committed"], statuses
    assert not database.exists()  # made for the replay, and removed with its table


@pytest.mark.mysql
@pytest.mark.parametrize("backend", ["mysql"])
def test_mariadb_matrix_is_written(tmp_path: Path, server_url: str) -> None:
    report, markdown, _ = run_matrix(
        tmp_path,
        "--db-url",
        server_url,
        "--levels",
        "read-uncommitted,serializable",
        "--budget-seconds",
        "8",
        "--profile",
        "dev",
    )
    check_shape(report, "mysql", ["read uncommitted", "serializable"])
    assert report["server_version"].startswith(("MariaDB", "MySQL"))
    assert "| read uncommitted |" in markdown and "| serializable |" in markdown
    for cell in report["results"]:
        if cell["observed"]:
            assert f"### {cell['anomaly']} at {cell['level']}" in markdown


def test_unknown_level_is_a_usage_error() -> None:
    code, out = isolation("--db-url", "sqlite://", "--levels", "snapshot")
    assert code == 2
    assert "'snapshot'" in out and "'serializable'" in out


def test_unreachable_database_is_a_usage_error_without_the_password() -> None:
    code, out = isolation("--db-url", "postgresql://root:s3cret@127.0.0.1:1/test")
    assert code == 2
    assert "cannot connect" in out and "s3cret" not in out


def test_the_replay_profile_is_refused() -> None:
    code, out = isolation("--db-url", "sqlite://", "--profile", "replay")
    assert code == 2 and "replay" in out


def test_a_second_database_is_refused_before_searching() -> None:
    code, out = isolation("--db-url", "sqlite://", "--db-url", "postgresql://u:s3cret@h/test")
    assert code == 2
    assert "--db-url is given more than once" in out and "once per database" in out
    assert "s3cret" not in out and "read uncommitted" not in out


@pytest.mark.parametrize("option", ["--json", "--markdown"])
@pytest.mark.parametrize("where", ["a-file/out.json", "a-folder", "a-file/deeper/out.json"])
def test_a_report_path_that_cannot_be_written_is_refused_before_searching(
    tmp_path: Path, option: str, where: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    path = tmp_path / where
    code, out = isolation("--db-url", "sqlite://", option, str(path), "--budget-seconds", "60")
    assert code == 2, out
    assert f"{option} " in out or f"'{option}'" in out
    assert "is a file, so no folder can be made there" in out or "is a directory" in out
    assert "G0" not in out  # nothing was searched
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_report_path_in_a_folder_that_takes_no_files_says_so() -> None:
    code, out = isolation("--db-url", "sqlite://", "--json", "/proc/x.json")
    assert code == 2, out
    assert "--json /proc/x.json: /proc takes no new files or folders" in out
    assert "G0" not in out  # nothing was searched


def _contents(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("select name from sqlite_master")]
        return {name: conn.execute(f"select * from {name}").fetchall() for name in names}


def test_a_file_holding_tables_is_searched_only_when_allowed_and_left_as_found(
    tmp_path: Path,
) -> None:
    database = tmp_path / "theirs.db"
    with sqlite3.connect(database) as conn:
        conn.execute("create table payroll (id integer)")
        conn.execute("insert into payroll values (7)")
    url = f"sqlite:///{database}"
    code, out = isolation("--db-url", url, "--budget-seconds", "1")
    assert code == 2
    assert "payroll" in out and "--allow-existing-tables" in out
    assert _contents(database) == {"payroll": [(7,)]}
    report, _, _ = run_matrix(
        tmp_path, "--db-url", url, "--budget-seconds", "2", "--allow-existing-tables"
    )
    check_shape(report, "sqlite", ["serializable"])
    # The user's table untouched, the search's register table dropped.
    assert _contents(database) == {"payroll": [(7,)]}


@pytest.mark.parametrize("name", ["uows_registers", "UOWS_Registers"])
def test_a_table_named_like_the_register_table_is_not_overwritten(
    tmp_path: Path, name: str
) -> None:
    # SQLite's names ignore case: UOWS_Registers is the register table's name too.
    database = tmp_path / "theirs.db"
    with sqlite3.connect(database) as conn:
        conn.execute(f"create table {name} (k integer, v integer)")
        conn.execute(f"insert into {name} values (1, 99)")
    code, out = isolation(
        "--db-url", f"sqlite:///{database}", "--budget-seconds", "1", "--allow-existing-tables"
    )
    assert code == 2
    assert f"already holds {name}, which the run creates for itself" in out
    assert _contents(database) == {name: [(1, 99)]}


def test_levels_are_normalized_and_ordered() -> None:
    assert normalize_level(" READ_Committed ") == "read committed"
    assert resolve_levels("postgresql", ["serializable", "read-committed"]) == [
        "read committed",
        "serializable",
    ]
    assert resolve_levels("mysql", None)[0] == "read uncommitted"


def test_an_interrupted_search_says_so_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("stopped by SIGTERM")

    monkeypatch.setattr("uowstress.isolation.search_isolation", stopped)
    code, out = isolation("--db-url", "sqlite://")
    assert code == 2, out
    assert "uowstress: interrupted (stopped by SIGTERM)" in out and "Aborted" not in out


_OBSERVE = isolation_module._LevelState.observe


def _drawn(monkeypatch: pytest.MonkeyPatch, seed: int | None) -> tuple[int, list[Any]]:
    """The seed a SQLite search reports, and the steps of every example it ran."""
    examples: list[Any] = []
    observe = _OBSERVE

    def recording(self: Any, run: Any) -> None:
        examples.append([dict(step) for step in run.steps])
        observe(self, run)

    monkeypatch.setattr(isolation_module._LevelState, "observe", recording)
    report = isolation_module.search_isolation("sqlite://", budget_s=60, profile="dev", seed=seed)
    assert report.seed is not None
    return report.seed, examples


def test_the_same_seed_draws_the_same_examples_again(monkeypatch: pytest.MonkeyPatch) -> None:
    seed, first = _drawn(monkeypatch, None)  # a seed is chosen, and reported
    assert len(first) > 5
    again_seed, again = _drawn(monkeypatch, seed)
    assert again_seed == seed and again == first
    other_seed, other = _drawn(monkeypatch, seed + 1)
    assert other_seed == seed + 1 and other != first


def test_each_batch_of_each_level_draws_with_a_seed_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeds = {isolation_module._batch_seed(7, level, n) for level in ("a", "b") for n in (0, 1)}
    assert len(seeds) == 4
    assert isolation_module._batch_seed(7, "a", 0) == isolation_module._batch_seed(7, "a", 0)
    used: list[int] = []
    seed_of = isolation_module.hypothesis_seed

    def recording(value: int) -> Any:
        used.append(value)
        return seed_of(value)

    monkeypatch.setattr(isolation_module, "hypothesis_seed", recording)
    monkeypatch.setattr(isolation_module, "_BATCH", 5)  # several batches within dev's examples
    isolation_module.search_isolation("sqlite://", budget_s=60, profile="dev", seed=7)
    assert len(used) > 2 and len(set(used)) == len(used), used
    assert used[:2] == [isolation_module._batch_seed(7, "serializable", n) for n in (0, 1)]


@pytest.mark.parametrize(
    ("seed", "said"),
    [("abc", "--seed 'abc' is not a whole number"), (str(2**128), "larger than a seed can be")],
)
def test_a_seed_that_is_not_one_is_a_usage_error(seed: str, said: str) -> None:
    code, out = isolation("--db-url", "sqlite://", "--seed", seed)
    assert code == 2 and said in out, out


def test_the_seed_is_printed_and_in_the_markdown(tmp_path: Path) -> None:
    report, markdown, out = run_matrix(
        tmp_path, "--db-url", "sqlite://", "--budget-seconds", "2", "--profile", "dev",
        "--seed", "42",
    )  # fmt: skip
    assert report["seed"] == 42
    assert "seed 42" in out and ", seed 42." in markdown
