"""The durability check against the reference system: a child killed with SIGKILL at drawn
points never loses an acknowledged commit, and the check does report one that is lost."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
from examples import ledger
from hypothesis import strategies as st

from humanoid_training.target import do_register
from tests.integration.support import REGISTER, register_then_kill
from uowstress import reproducers
from uowstress.explore import check_durability
from uowstress.stateful import durability
from uowstress.stateful._durability_child import ACK_EARLY_ENV
from uowstress.stateful.durability import CHILD_MODULE, DurabilityResult, run_durability
from uowstress.stateful.run import replay
from uowstress.target import Operation, Target

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
        # Where it landed is recorded: the acknowledgements, then the steps reported after them.
        landed = kill.killed_at
        assert landed.after_acks == kill.acknowledged, kill
        assert (landed.after_acks, landed.extra_steps) >= (kill.kill_after_acks, kill.extra_steps)
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
        # Each kill records where it landed, never before its planned point; the reproducer
        # kills where the kill of its (shrunk) steps landed, within reach of those steps.
        assert kill.killed_at.after_acks == kill.acknowledged
        assert (kill.killed_at.after_acks, kill.killed_at.extra_steps) >= (
            kill.kill_after_acks,
            kill.extra_steps,
        )
        assert written.step_problems() == []
        assert written.failure.kind == "lost" and path.name == f"{written.id}.json"
        # Made smaller where it could be: never more commits than the kill's workload had.
        commits = [s.action for s in written.steps].count("commit")
        assert 1 <= commits <= kill.commits
        assert written.shrunk_from is not None and written.shrunk_from >= len(written.steps)


def test_a_finding_whose_reproducer_cannot_be_written_keeps_its_steps_in_the_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A full disk, or a file where the folder goes: the finding still says what was run.
    monkeypatch.setenv(ACK_EARLY_ENV, "1")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    run = check_durability(
        "sqlite://",
        node_id="n",
        target_spec=TARGET,
        options={},
        kills=6,
        seed=SEED,
        reproducers_dir=blocker,
    )
    assert run.status == "error" and run.error is not None
    assert "cannot write the reproducer" in run.error
    assert run.findings
    for finding in run.findings:
        assert finding.kind == "lost"
        assert finding.steps_by_session and finding.steps_by_session[0], finding
        assert finding.explanation is not None and "killed with SIGKILL" in finding.explanation
        # No file to replay: no command that would fail to find one.
        assert finding.reproducer_path is None and finding.replay_command is None
    assert not _children_left()


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
    # Says all that was checked after the kill, not only the loss of commits, and that one
    # replay of a kill is not proof.
    assert "every acknowledged commit is there, none is half there and every invariant holds" in (
        fixed.detail
    )
    assert "--repeat 10 tells a fix from a kill that missed" in fixed.detail
    assert "--repeat" not in replay(path, repeat=2).detail
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


def test_a_dispose_that_fails_keeps_the_kills_and_is_an_error_of_the_run() -> None:
    # As when the server stops answering before the check puts the system away.
    result = run_durability(
        "sqlite://",
        target_spec="tests.integration.broken_targets:DISPOSE_RAISES",
        kills=2,
        seed=SEED,
    )
    assert len(result.kills) == 2
    assert result.error == (
        "the system could not be disposed of: RuntimeError: connection refused"
    ), result.error
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


# -- a kill that lands later than planned --------------------------------------------------------


def open_at_once(uow: Any, a: dict[str, Any]) -> Any:
    """Opens an account with a deposit, the account committed at once, apart from its unit of
    work (deliberately wrong): a kill before the commit leaves the account without its
    deposit."""
    if isinstance(uow, ledger.SqlWork):
        with uow.engine.begin() as conn:
            conn.execute(sa.insert(ledger.accounts).values(id=a["account"], balance=0, version=0))
        uow.balances[a["account"]], uow.versions[a["account"]] = 0, 0
    else:
        uow.open(a["account"])
    uow.post(a["entry"], a["account"], a["initial"])
    return a["account"]


def pause(uow: Any, a: dict[str, Any]) -> Any:
    """A step the system takes its time over (the model does not)."""
    if isinstance(uow, ledger.SqlWork):
        time.sleep(a["seconds"])
    return None


class _HastyLedger(ledger.LedgerTarget):
    name = "hasty ledger"
    operations = (
        *ledger.OPERATIONS,
        Operation("open_at_once", ledger.open_args, open_at_once),
        Operation("pause", lambda s, i: st.just({"seconds": 5.0}), pause),
    )


HASTY_LEDGER: Target = _HastyLedger()
HASTY_SPEC = f"{__name__}:HASTY_LEDGER"


def _opening(op: str, account: str, initial: int) -> dict[str, Any]:
    args = {"account": account, "initial": initial, "entry": f"d{account}"}
    return {"action": "apply", "op": op, "args": args}


# A committed transaction, then one whose account is committed at its first operation, and
# whose second operation keeps the worker busy for far longer than any kill takes to land.
HASTY_STEPS: list[dict[str, Any]] = [
    {"action": "begin"},
    _opening("open_account", "a1", 10),
    {"action": "commit"},
    {"action": "begin"},
    _opening("open_at_once", "a2", 5),
    {"action": "apply", "op": "pause", "args": {"seconds": 5.0}},
    {"action": "commit"},
]
# How long the parent takes to send a kill once it is due, made long (a busy machine).
LAG_S = 0.5


def _always(point: reproducers.KillPoint) -> Any:
    """A stand-in for `kill_plans`: every kill a run draws is of HASTY_STEPS at `point`."""

    def plans(target: Target, new_model: Any) -> Any:
        plan = durability.plan_of(target, new_model, HASTY_STEPS, point)
        return st.integers(0, 1000).map(lambda _: plan)

    return plans


def test_a_kill_that_lands_later_than_planned_is_written_and_replayed_where_it_landed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with monkeypatch.context() as patched:
        # Every kill is planned right after the worker connects; the parent is slow to send
        # it, and the worker gets to the pause first: the second account is committed alone.
        kill = durability._kill

        def late(pid: int) -> None:
            time.sleep(LAG_S)
            kill(pid)

        patched.setattr(durability, "_kill", late)
        patched.setattr(durability, "kill_plans", _always(reproducers.KillPoint(after_acks=0)))
        result = run_durability(
            "sqlite://", target_spec=HASTY_SPEC, options={}, kills=1, reproducers_dir=tmp_path
        )
    assert result.error is None, result.error
    [found] = result.kills
    assert (found.kill_after_acks, found.extra_steps) == (0, 0)
    assert found.finding is not None and found.finding.kind == "partial", found
    # It landed after the first commit and the second transaction's begin and open_at_once.
    assert found.acknowledged == 1
    assert (found.killed_at.after_acks, found.killed_at.extra_steps) == (1, 2)
    # Shrunk, and written with the point where the kill of the shrunk workload landed.
    written, path = result.reproducers[found.index]
    assert written.kill is not None and written.failure.kind == "partial"
    ops = [step.op for step in written.steps if step.action == "apply"]
    assert ops[-2:] == ["open_at_once", "pause"], written.steps
    commits_before = [step.action for step in written.steps].count("commit") - 1
    assert (written.kill.after_acks, written.kill.extra_steps) == (commits_before, 2)
    # Replayed without the lag, the kill lands where it did: during the pause.
    again = replay(path, repeat=2)
    assert again.verdict == "FAILED", again.detail
    assert "[partial]" in again.detail and "this differs" not in again.detail
    # Its replays before it was written found it again each time: not said to be racing.
    assert "timing-dependent" not in found.finding.message
    assert not _children_left()


# Where HASTY_STEPS is killed in the tests of confirming a finding: during its pause.
IN_THE_PAUSE = reproducers.KillPoint(after_acks=1, extra_steps=2, delay_us=100_000)


def _first_kill_then(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, later: Callable[[Any], Any]
) -> tuple[durability.DurabilityResult, list[durability.KillResult]]:
    """One kill of HASTY_STEPS in its pause (it finds the transaction half committed); every
    kill after it (shrinking, then the replays before the reproducer is written) is what
    `later` makes of the real one. The run's result, and the real kills."""
    kill_once = durability.kill_once
    kills: list[durability.KillResult] = []

    def first_then_later(*args: Any, **kwargs: Any) -> durability.KillResult:
        kill = kill_once(*args, **kwargs)
        kills.append(kill)
        return kill if len(kills) == 1 else later(kill)  # type: ignore[no-any-return]

    monkeypatch.setattr(durability, "kill_once", first_then_later)
    monkeypatch.setattr(durability, "kill_plans", _always(IN_THE_PAUSE))
    result = run_durability(
        "sqlite://", target_spec=HASTY_SPEC, options={}, kills=1, reproducers_dir=tmp_path
    )
    assert result.error is None, result.error
    return result, kills


def test_a_finding_its_reproducer_seldom_finds_again_is_said_to_be_timing_dependent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The later kills land as if the race went the other way. The finding stands, observed
    # once, and says how seldom it came back.
    result, kills = _first_kill_then(
        monkeypatch, tmp_path, lambda kill: replace(kill, finding=None)
    )
    [found] = result.kills
    assert found.finding is not None and found.finding.kind == "partial", found
    said = (
        f"timing-dependent: replayed {durability.CONFIRMATIONS} times where the kill landed,"
        " it was found again 0 times"
    )
    assert said in found.finding.message
    written, _ = result.reproducers[found.index]
    assert said in written.failure.message
    # The confirmations killed the reproducer's workload where the first kill landed.
    assert len(kills) >= 1 + durability.CONFIRMATIONS
    landed = found.killed_at
    for k in kills[-durability.CONFIRMATIONS :]:
        planned = (k.kill_after_acks, k.extra_steps, round(k.kill_delay_s * 1e6))
        assert planned == (landed.after_acks, landed.extra_steps, landed.delay_us)
    assert not _children_left()


def test_a_finding_whose_confirming_kills_fail_is_still_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fails(kill: Any) -> Any:
        raise RuntimeError("the system could not be reset")

    result, _ = _first_kill_then(monkeypatch, tmp_path, fails)
    [found] = result.kills
    assert found.finding is not None and found.finding.kind == "partial", found
    assert "timing-dependent" not in found.finding.message  # not known: said as found
    written, path = result.reproducers[found.index]
    assert path.is_file() and written.failure.kind == "partial"
    assert not _children_left()
