"""The durability check against the reference system: a child killed with SIGKILL at drawn
points never loses an acknowledged commit, and the check does report one that is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psutil
import pytest

from humanoid_training.target import do_register
from tests.integration.support import REGISTER, register_then_kill
from uowstress import reproducers
from uowstress.explore import check_durability
from uowstress.stateful._durability_child import ACK_EARLY_ENV
from uowstress.stateful.durability import CHILD_MODULE, DurabilityResult, run_durability
from uowstress.stateful.run import replay

TARGET = "humanoid_training.target:TARGET"
KILLS = 5
SEED = 20240611


def _children_left() -> list[str]:
    """Durability children of this process still alive (zombies included: not reaped)."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            command = CHILD_MODULE  # a zombie has no command line left to read
        except psutil.AccessDenied:
            continue
        if CHILD_MODULE in command:
            left.append(f"{child.pid}: {command}")
    return left


def _assert_sound(result: DurabilityResult) -> None:
    assert result.error is None, result.error
    assert len(result.kills) == KILLS, result.summary()
    assert result.passed, [k.finding for k in result.findings]
    for kill in result.kills:
        # The kill is never sent before the drawn point, and nothing past the workload is acked.
        assert kill.kill_after_acks <= kill.acknowledged <= kill.commits, kill
        assert kill.landed in (kill.acknowledged, kill.acknowledged + 1), kill
    summary = result.summary()
    assert summary["commits_acknowledged"] == sum(k.acknowledged for k in result.kills)
    assert summary["kills"] == KILLS
    assert not _children_left()


def test_kills_lose_no_acknowledged_commit(server_url: str, backend: str) -> None:
    # SQLite with the reference system's default, synchronous FULL.
    result = run_durability(server_url, target_spec=TARGET, options={}, kills=KILLS, seed=SEED)
    assert result.backend == backend
    _assert_sound(result)
    # The seed draws kill points after some acknowledged commits: the check saw real commits.
    assert result.acknowledged > 0


def test_sqlite_synchronous_normal_survives_process_kills() -> None:
    # NORMAL in WAL mode may lose commits on power loss, not on a process crash: the data is
    # in the operating system's cache, which the kill does not touch.
    result = run_durability(
        "sqlite://",
        target_spec=TARGET,
        options={"sqlite_synchronous": "NORMAL"},
        kills=KILLS,
        seed=SEED,
    )
    _assert_sound(result)


def test_the_check_reports_a_commit_acknowledged_before_it_was_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Self-test of the checker: the child acknowledges each commit before making it.
    monkeypatch.setenv(ACK_EARLY_ENV, "1")
    result = run_durability(
        "sqlite://", target_spec=TARGET, options={}, kills=6, seed=SEED, reproducers_dir=tmp_path
    )
    assert result.error is None, result.error
    lost = [k for k in result.kills if k.finding is not None and k.finding.kind == "lost"]
    assert lost, f"no lost commit reported over {len(result.kills)} kills: {result.kills}"
    assert not result.passed
    for kill in lost:
        assert kill.finding is not None
        assert kill.landed is not None and kill.landed < kill.acknowledged, kill
        assert f"commit {kill.acknowledged} was acknowledged but is missing" in (
            kill.finding.message
        )
    # An early acknowledgement loses whole commits; no transaction is ever half there.
    assert all(k.finding is None or k.finding.kind == "lost" for k in result.kills)
    assert not _children_left()
    # Each finding is written as a reproducer of its steps and kill point.
    assert sorted(result.reproducers) == [k.index for k in lost]
    assert sorted(tmp_path.iterdir()) == sorted(path for _, path in result.reproducers.values())
    for kill in lost:
        written, path = result.reproducers[kill.index]
        assert written.machine == "durability" and written.kill is not None
        assert written.kill.after_acks <= kill.kill_after_acks
        assert written.failure.kind == "lost" and path.name == f"{written.id}.json"
        # Made smaller where it could be: never more commits than the kill's workload had.
        commits = [s.action for s in written.steps].count("commit")
        assert 1 <= commits <= kill.commits
        assert written.shrunk_from is not None and written.shrunk_from >= len(written.steps)


def test_a_durability_finding_replays_failed_while_the_bug_is_there_and_fixed_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Killed right after its first acknowledgement: with the early acknowledgement the worker
    # is then still pausing before its COMMIT, every time (a kill inside a commit would race).
    path = register_then_kill(tmp_path)
    monkeypatch.setenv(ACK_EARLY_ENV, "1")
    again = replay(path, repeat=2)
    assert again.verdict == "FAILED", again.detail
    assert "the kill on sqlite://: [lost] commit 1 was acknowledged but is missing" in again.detail
    assert "this differs" not in again.detail
    monkeypatch.delenv(ACK_EARLY_ENV)
    fixed = replay(path)
    assert fixed.verdict == "FIXED", fixed.detail
    assert "every acknowledged commit survived the kill" in fixed.detail
    assert not _children_left()


def test_a_silent_child_is_killed_and_reported() -> None:
    # No child can even import its target in a millisecond: it counts as hung.
    result = run_durability(
        "sqlite://", target_spec=TARGET, options={}, kills=2, seed=SEED, child_timeout_s=0.001
    )
    assert result.error is not None
    assert "sent nothing for" in result.error
    assert result.kills == []
    assert not _children_left()


def test_a_durability_check_that_cannot_start_is_an_error_of_the_run(tmp_path: Path) -> None:
    database = tmp_path / "theirs.db"
    with sqlite3.connect(database) as conn:
        conn.execute("create table payroll (id integer)")
    run = check_durability(
        f"sqlite:///{database}", node_id="n", target_spec=TARGET, options={}, kills=1
    )
    assert run.status == "error" and run.kills == 0
    assert run.error is not None and "payroll" in run.error
    allowed = check_durability(
        f"sqlite:///{database}",
        node_id="n",
        target_spec=TARGET,
        options={},
        kills=1,
        allow_existing_tables=True,
    )
    assert allowed.status == "passed" and allowed.kills == 1, allowed.error


def test_a_kill_whose_worker_failed_leaves_nothing_for_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker that committed and then failed before its kill point (a shrinking trial can):
    # the next kill must start on an empty database all the same.
    from humanoid_training.target import TARGET as REFERENCE
    from uowstress import database
    from uowstress.stateful import durability

    def committed_then_failed(plan: durability.KillPlan, **_: object) -> None:
        with system.unit_of_work() as uow:
            do_register(uow, REGISTER["args"])
            uow.commit()
        raise durability.DurabilityError("the worker failed before its kill point")

    with database.prepared_database("sqlite://") as db:
        system = REFERENCE.connect(db.url, {})
        try:
            empty = system.committed_state()
            monkeypatch.setattr(durability, "run_child", committed_then_failed)
            plan = durability.plan_of(
                REFERENCE, system.new_model, [], reproducers.KillPoint(after_acks=0)
            )
            with pytest.raises(durability.DurabilityError):
                durability.kill_once(
                    plan, 1, target=REFERENCE, system=system, url=db.url,
                    target_spec=TARGET, options={}, server=None,  # type: ignore[arg-type]
                )  # fmt: skip
            assert system.committed_state() == empty
        finally:
            system.dispose()


def test_a_replayed_durability_reproducer_with_misfit_arguments_is_an_error(
    tmp_path: Path,
) -> None:
    args = {**REGISTER["args"], "robot_idd": REGISTER["args"]["robot_id"]}
    del args["robot_id"]
    path = register_then_kill(tmp_path, register=args)
    again = replay(path)
    assert again.verdict == "ERROR", again.detail
    assert "the arguments of step 2 do not fit register_robot: the model raised KeyError" in (
        again.detail
    )


def test_a_single_kill_is_drawn_from_the_seed() -> None:
    # Hypothesis tries the simplest plan first whatever its seed; a run of one kill must still
    # kill where its seed says, not at the same point in every run.
    kills = [
        run_durability("sqlite://", target_spec=TARGET, options={}, kills=1, seed=seed).kills
        for seed in (1, 2, 3)
    ]
    assert all(len(k) == 1 for k in kills), kills
    drawn = {
        (k[0].commits, k[0].kill_after_acks, k[0].extra_steps, k[0].kill_delay_s) for k in kills
    }
    assert len(drawn) > 1, kills
