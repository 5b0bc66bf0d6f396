"""Small pieces of the runner and the report: redaction, thinning, step descriptions."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from uowstress.explore import describe_step, replay_command
from uowstress.report.model import Distribution, thin
from uowstress.reproducers import Failure, Reproducer, Step, make_reproducer, uv_run
from uowstress.runner import redacted_command


def test_the_command_shown_hides_every_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)  # started without uv
    shown = redacted_command(
        [
            "uowstress",
            "run",
            "--db-url",
            "postgresql://root:s3cret@db.example:5432/test",
            "--db-url=mysql://app:hunter2@127.0.0.1/test",
            "--target-option",
            "weaken=no_version_check",
        ]
    )
    assert "s3cret" not in shown and "hunter2" not in shown
    # The URLs as written, to be pasted again.
    assert shown.startswith("uowstress run --db-url 'postgresql://root:***@db.example:5432/test'")
    assert "'--db-url=mysql://app:***@127.0.0.1/test'" in shown
    assert "weaken=no_version_check" in shown


def test_the_command_shown_is_started_as_the_run_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")  # started by `uv run`
    shown = redacted_command(["uowstress", "run", "--seed", "1"])
    assert shown == f"{uv_run()}uowstress run --seed 1"
    assert shown.startswith("uv run ")


def test_thinning_keeps_order_and_bounds_the_count() -> None:
    samples = [float(i) for i in range(12_000)]
    kept = thin(samples, 5000)
    assert len(kept) == 5000
    assert kept == sorted(kept) and kept[0] == 0.0 and kept[-1] > 11_990
    assert thin([3.0, 1.0], 5000) == [3.0, 1.0]


def test_a_distribution_of_nothing_is_none_and_of_something_its_statistics() -> None:
    assert Distribution.of([]) is None
    stats = Distribution.of([1.0, 2.0, 3.0, 4.0])
    assert stats is not None
    assert (stats.count, stats.min, stats.max, stats.mean, stats.p50) == (4, 1.0, 4.0, 2.5, 2.5)


def test_steps_read_as_actions_with_their_arguments() -> None:
    assert describe_step(Step(action="begin")) == "begin"
    assert (
        describe_step(Step(action="apply", op="assess", args={"robot_id": "r1"}))
        == 'apply assess {"robot_id": "r1"}'
    )
    assert (
        describe_step(Step(action="fault", fault={"point": "statement", "statement": 2}))
        == 'commit with a fault at {"point": "statement", "statement": 2}'
    )


def _reproducer(backend: str) -> Reproducer:
    return make_reproducer(
        target="humanoid_training.target:TARGET",
        backend=backend,
        guarantee="serializable",
        steps=[Step(action="begin")],
        failure=Failure(kind="state", message="x", step=1),
    )


def test_the_replay_command_names_a_server_url_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")  # the run was started with `uv run`
    rep = _reproducer("postgresql")
    path = tmp_path / f"{rep.id}.json"
    command = replay_command(rep, path, "postgresql://root:pw@10.0.0.9/test")
    assert command.startswith(f"uv run uowstress replay {path} --db-url ")
    assert "pw@" not in command and "***" in command
    # The hidden password must be put back for the command to work: a comment says so.
    assert command.endswith("  # the password is hidden: put it back in place of ***")
    # An empty password hides nothing: no "***" (which a server takes as the password).
    empty = replay_command(rep, path, "postgresql://root:@10.0.0.9/test")
    assert (
        empty == f"uv run uowstress replay {path} --db-url postgresql+psycopg://root@10.0.0.9/test"
    )
    # SQLite needs no URL: replay makes a fresh file.
    sqlite = replay_command(rep, path, "sqlite://")
    assert sqlite == f"uv run uowstress replay {path}"
    # Started without uv (an installed uowstress, a folder with no uv project): said so too.
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH")
    assert replay_command(rep, path, "sqlite://") == f"uowstress replay {path}"


def test_the_replay_command_names_the_uv_project_when_run_from_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `uv run --project /opt/uowstress uowstress run` from a team's own folder: a bare
    # `uv run uowstress replay` there fails ("Failed to spawn: uowstress").
    checkout, own = tmp_path / "uowstress checkout", tmp_path / "own"
    (checkout / ".venv").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    own.mkdir()
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")
    monkeypatch.setattr("sys.prefix", str(checkout / ".venv"))
    rep = _reproducer("sqlite")
    monkeypatch.chdir(own)
    assert rep.replay_command() == f"uv run --project '{checkout}' uowstress replay {rep.id}"
    monkeypatch.chdir(checkout)  # inside the project (or below it): as before
    assert rep.replay_command() == f"uv run uowstress replay {rep.id}"
    # An environment that is not a project's .venv: nothing to name.
    monkeypatch.setattr("sys.prefix", str(tmp_path / "env"))
    monkeypatch.chdir(own)
    assert rep.replay_command() == f"uv run uowstress replay {rep.id}"


def test_the_replay_command_leaves_out_the_default_server_however_it_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("uowstress.database.DEFAULT_URLS", {"mysql": "mysql://root@127.0.0.1/test"})
    rep = _reproducer("mysql")
    for url in ("mysql://root:@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test"):
        assert "--db-url" not in replay_command(rep, None, url), url
    assert "--db-url" in replay_command(rep, None, "mysql://root@127.0.0.1/other")


def test_the_replay_command_names_the_database_when_the_default_cannot_be_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("uowstress.database.DEFAULT_URLS", {"postgresql": "notaurl"})
    rep = _reproducer("postgresql")
    command = replay_command(rep, None, "postgresql://root@127.0.0.1/test")
    assert command.endswith(" --db-url postgresql+psycopg://root@127.0.0.1/test"), command


def test_the_replay_command_quotes_a_path_outside_the_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)
    monkeypatch.chdir(tmp_path)
    rep = _reproducer("sqlite")
    # Relative to where the run started: said absolute, so that it works from anywhere.
    path = Path("my repro") / f"{rep.id}.json"
    command = replay_command(rep, path, "sqlite://")
    assert command == f"uowstress replay '{tmp_path / path}'"
    assert shlex.split(command)[2] == str(tmp_path / path)


def test_an_anomaly_finding_names_its_class() -> None:
    from uowstress.explore import _anomaly_named

    message = (
        "G2 (phantom write skew): T3's predicate read ... The target declares 'serializable',"
        " which forbids G2"
    )
    assert _anomaly_named("anomaly", message) == "G2"
    assert _anomaly_named("invariant", message) is None
    # The class alone, when the message goes on (a rule broken too, say).
    tail = " which forbids P4. The committed state breaks a rule too: robot r1: skill scores"
    assert _anomaly_named("anomaly", "P4 (lost update): ..." + tail) == "P4"
    assert _anomaly_named("anomaly", "... which forbids G-single, and ...") == "G-single"
    assert _anomaly_named("anomaly", "no class named") is None


def test_a_password_in_the_query_string_is_hidden_too() -> None:
    from humanoid_training.persistence.engine import redacted as engine_redacted
    from uowstress.report.output import _scrub
    from uowstress.scratch import redacted

    url = "postgresql://root@127.0.0.1:5432/test?password=s3cret&sslmode=disable"
    for shown in (redacted(url), engine_redacted(url)):
        assert "s3cret" not in shown
        assert shown.endswith("/test?password=***&sslmode=disable")
    assert "hunter2" not in redacted("mysql://app:hunter2@db/test?passwd=hunter2")
    text = _scrub("ran on mysql://app@db/test?sslpassword=zz9&charset=utf8 and failed")
    assert text == "ran on mysql://app@db/test?sslpassword=***&charset=utf8 and failed"
    assert "s3cret" not in redacted_command(["uowstress", "run", "--db-url", url])


def test_shards_replaying_one_saved_failure_report_it_once_in_shard_order() -> None:
    from tests import report_factory as rf
    from uowstress.pytest_plugin import ResultStore
    from uowstress.report.model import Finding
    from uowstress.runner import _findings, _machines

    def shard(n: int, reproducer: str) -> Any:
        finding = Finding(
            source="acid machine on sqlite", kind="state", message="m", reproducer_id=reproducer
        )
        return rf.machine_run(
            id=f"t.py::test_acid[sqlite1-acid-shard{n}]", shard=n, shards=11, finding=finding
        )

    # Finished in any order: shard 10 before 2 (pytest-xdist), 2 and 10 replaying one failure.
    store = ResultStore(machines=[shard(10, "abc"), shard(2, "abc"), shard(1, "def")])
    assert [m.shard for m in _machines(store)] == [1, 2, 10]
    assert [f.reproducer_id for f in _findings(store)] == ["def", "abc"]
