"""The concurrent-sessions machine against the reference system."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import settings

from humanoid_training.target import TARGET
from uowstress import reproducers
from uowstress.database import prepared_database
from uowstress.profiles import machine_settings
from uowstress.stateful.acid import RunRecorder
from uowstress.stateful.concurrent import ConcurrentExecutor, concurrent_machine
from uowstress.stateful.executor import Finding
from uowstress.stateful.run import replay, run_acid

SPEC = "humanoid_training.target:TARGET"


def ci() -> settings:
    return settings(machine_settings("ci"), derandomize=True, database=None)


# On SQLite too: a unit of work reads in a deferred transaction and takes the write lock only
# to commit, so two sessions can both pass a check on what they read before either writes.
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize(
    ("weaken", "named"),
    # A write skew through the one-open-session query is a phantom (G2); what the history
    # shows is what is named, so an item-level cycle would be accepted too. Without the version
    # check, two units of work that each write what the other read are a write skew (G2-item)
    # as often as one overwriting the other's update is a lost update (P4): which the search
    # meets first depends on the examples saved by earlier runs. A longer history can hold a
    # cycle whose anti-dependencies are apart, named first as G-nonadjacent.
    [
        ("no_session_lock", "G2|G2-item|G-single|G-nonadjacent"),
        ("no_version_check", "P4|G2-item|G-nonadjacent"),
    ],
)
def test_each_concurrency_defect_is_found_named_and_judged(
    server_url: str, tmp_path: Path, weaken: str, named: str
) -> None:
    # A random search (see test_acid.py): the ci profile first, then longer fresh runs, so that
    # a miss is rare enough for CI.
    for attempt in range(4):
        result = run_acid(
            server_url,
            target_spec=SPEC,
            options={"weaken": weaken},
            settings=settings(
                ci(), derandomize=attempt == 0, max_examples=100 if attempt == 0 else 200
            ),
            reproducers_dir=tmp_path,
            machine="sessions",
        )
        if result.finding is not None:
            break
    assert result.finding is not None, f"no finding in {result.examples} examples"
    finding = result.finding
    # Judged against the declared guarantee: serializable forbids it, so it fails the run.
    assert finding.kind == "anomaly", finding.message
    assert re.match(rf"({named}) \(", finding.message), finding.message
    assert "The target declares 'serializable'" in finding.message
    explanation, _, legend = finding.message.partition("(values are aggregate versions; ")
    # The explanation names both units of work, and the legend says which session ran each.
    units = dict(re.findall(r"(T\d+) = session (\d+)", legend))
    assert len(units) >= 2 and len(set(units.values())) == 2, finding.message
    for txn in units:
        assert re.search(rf"\b{txn}\b", explanation), (txn, finding.message)
    if weaken == "no_session_lock":
        assert re.search(r"open sessions of robot r\d+", explanation), finding.message
    else:
        assert re.search(r"(robot|session|plan):\w+", explanation), finding.message
    assert result.reproducer is not None and result.reproducer_path is not None
    assert result.reproducer.sessions == 2
    assert len({s.session for s in result.reproducer.steps}) == 2
    assert len(result.reproducer.steps) <= 14
    again = replay(result.reproducer_path, db_urls={result.backend: server_url})
    assert again.verdict == "FAILED", again.detail
    assert re.search(rf"\[anomaly\] ({named}) \(", again.detail), again.detail
    data = json.loads(result.reproducer_path.read_text())
    data["target_options"] = {}
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(data))
    assert replay(fixed, db_urls={result.backend: server_url}).verdict == "FIXED"


def test_the_reference_system_shows_no_forbidden_anomaly_under_the_dev_profile(
    server_url: str, tmp_path: Path
) -> None:
    result = run_acid(
        server_url,
        target_spec=SPEC,
        settings=settings(machine_settings("dev"), database=None),
        reproducers_dir=tmp_path,
        machine="sessions",
    )
    assert result.error is None
    assert result.finding is None, (result.finding, result.reproducer)
    # The checker did judge the units of work (one history per commit).
    assert result.anomaly_checks > 0, result


@pytest.mark.nightly
def test_the_reference_system_shows_no_forbidden_anomaly_under_the_nightly_profile(
    server_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The reference system at its default guarantee shows no forbidden anomaly on any backend
    under the nightly profile."""
    result = run_acid(
        server_url,
        target_spec=SPEC,
        profile="nightly",
        reproducers_dir=tmp_path,
        machine="sessions",
    )
    # The figures of the run, shown by --junitxml (examples, seconds, histories checked).
    for name in ("examples", "seconds", "anomaly_checks", "permitted_anomalies"):
        request.node.user_properties.append((name, getattr(result, name)))
    assert result.error is None
    assert result.finding is None, (result.finding, result.reproducer)
    assert result.anomaly_checks > 0, result


LOST_UPDATE = [
    {"session": 0, "action": "begin"},
    {
        "session": 0,
        "action": "apply",
        "op": "register_robot",
        "args": {
            "robot_id": "r1",
            "name": "x",
            "robot_type": "custom",
            "joint_count": 3,
            "height_m": 1.0,
        },
    },
    {
        "session": 0,
        "action": "apply",
        "op": "assess",
        "args": {
            "robot_id": "r1",
            "assessments": [
                {
                    "id": "a1",
                    "skill": "postural_control",
                    "score": 0.2,
                    "confidence": 0.5,
                    "evidence": 0.5,
                    "at": 1,
                }
            ],
        },
    },
    {"session": 0, "action": "commit"},
    {"session": 0, "action": "begin"},
    {"session": 1, "action": "begin"},
    {
        "session": 0,
        "action": "apply",
        "op": "assess",
        "args": {
            "robot_id": "r1",
            "assessments": [
                {
                    "id": "a2",
                    "skill": "postural_control",
                    "score": 0.9,
                    "confidence": 0.5,
                    "evidence": 0.5,
                    "at": 2,
                }
            ],
        },
    },
    {
        "session": 1,
        "action": "apply",
        "op": "assess",
        "args": {
            "robot_id": "r1",
            "assessments": [
                {
                    "id": "a3",
                    "skill": "postural_control",
                    "score": 0.5,
                    "confidence": 0.5,
                    "evidence": 0.5,
                    "at": 3,
                }
            ],
        },
    },
    {"session": 0, "action": "commit"},
    {"session": 1, "action": "commit"},
]


@pytest.mark.parametrize("weaken", ["", "no_version_check"])
def test_a_lost_update_is_caught_only_without_the_version_check(
    server_url: str, backend: str, weaken: str
) -> None:
    with prepared_database(server_url) as db:
        system = TARGET.connect(db.url, {"weaken": weaken})
        executor = ConcurrentExecutor(TARGET, system, 2)
        try:
            if weaken:
                with pytest.raises(Finding, match=r"P4 \(lost update\)|not the best scores"):
                    for step in LOST_UPDATE:
                        executor.run(step)
            else:
                for step in LOST_UPDATE:
                    executor.run(step)
                last = executor.completions[-1][1]
                # The second writer is refused: a version conflict.
                assert not last.outcome.ok
                assert "Conflict" in type(last.outcome.error).__name__
        finally:
            executor.close()
            system.dispose()


def _edited(step: int, edit: Any) -> list[dict[str, Any]]:
    """LOST_UPDATE with step `step` (1-based) changed by `edit`, as a hand edit would."""
    steps = json.loads(json.dumps(LOST_UPDATE))
    edit(steps[step - 1])
    return cast(list[dict[str, Any]], steps)


def _misspelt(step: dict[str, Any]) -> None:
    step["args"]["robot_idd"] = step["args"].pop("robot_id")


def _many_joints(step: dict[str, Any]) -> None:
    step["args"]["joint_count"] = "many"


def _no_args(step: dict[str, Any]) -> None:
    step["args"] = None


def _a_word_for_a_score(step: dict[str, Any]) -> None:
    step["args"]["assessments"][0]["score"] = "high"


@pytest.mark.parametrize(
    ("step", "edit", "raised"),
    [
        (2, _misspelt, "KeyError: 'robot_id'"),
        (2, _many_joints, "TypeError: argument joint_count must be a whole number"),
        (2, _no_args, "KeyError: 'robot_id'"),
        # A step of the second session, after the other has begun.
        (7, _a_word_for_a_score, "TypeError: argument assessments[0].score must be a number"),
    ],
)
def test_a_sessions_reproducer_whose_arguments_fit_no_operation_is_an_error_naming_the_step(
    tmp_path: Path, step: int, edit: Any, raised: str
) -> None:
    # The machine has no model to compare the system with, and the system failing on such a
    # step is no finding: the steps would pass, the reproducer edited or damaged.
    def written(steps: list[dict[str, Any]]) -> Path:
        return reproducers.write(
            reproducers.make_reproducer(
                machine="sessions",
                sessions=2,
                target=SPEC,
                backend="sqlite",
                guarantee="serializable",
                steps=[reproducers.Step(**s) for s in steps],
                failure=reproducers.Failure(kind="anomaly", message="old", step=9),
            ),
            tmp_path,
        )

    assert replay(written(LOST_UPDATE)).verdict == "FIXED"
    again = replay(written(_edited(step, edit)))
    assert again.verdict == "ERROR", again.detail
    assert again.detail.startswith(
        f"the arguments of step {step} do not fit {LOST_UPDATE[step - 1]['op']}: the model"
        f" raised {raised}"
    ), again.detail
    assert "was the reproducer edited?" in again.detail


class _VersionsOnly:
    """The reference system as a system that reports `versions(uow)` but no footprints."""

    def __init__(self, system: Any) -> None:
        self._system = system

    def __getattr__(self, name: str) -> Any:
        if name == "footprints":
            raise AttributeError(name)
        return getattr(self._system, name)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_a_system_with_versions_only_still_has_its_lost_update_named(server_url: str) -> None:
    with prepared_database(server_url) as db:
        system = TARGET.connect(db.url, {"weaken": "no_version_check"})
        executor = ConcurrentExecutor(TARGET, cast(Any, _VersionsOnly(system)), 2)
        try:
            assert executor.aggregates is None
            with pytest.raises(Finding, match=r"P4 \(lost update\): commit \d+ \(session 0\)"):
                for step in LOST_UPDATE:
                    executor.run(step)
        finally:
            executor.close()
            system.dispose()


def test_what_an_open_unit_of_work_applied_is_offered_to_the_other_sessions(
    tmp_path: Path,
) -> None:
    with prepared_database(f"sqlite:///{tmp_path / 'contended.db'}") as db:
        system = TARGET.connect(db.url, {})
        executor = ConcurrentExecutor(TARGET, system, 2)
        try:
            for step in LOST_UPDATE[:3]:  # session 0 registers r1 and assesses it
                executor.run(step)
            # Session 0's unit of work is still open: what it applied is held.
            assert executor.contended(1) == ["r1", "a1", "postural_control", "x", "custom"]
            assert executor.contended_operations(1) == ["assess", "register_robot"]
            assert executor.contended(0) == [] and executor.contended_operations(0) == []
            executor.run({"session": 0, "action": "commit"})
            assert executor.contended(1) == [] and executor.contended_operations(1) == []
            executor.run({"session": 0, "action": "begin"})
            assert executor.contended(1) == []  # a unit of work that applied nothing holds nothing
            executor.run(LOST_UPDATE[6])  # session 0 assesses r1 again
            assert executor.contended(1)[0] == "r1"
            executor.run({"session": 0, "action": "rollback"})
            assert executor.contended(1) == []
        finally:
            executor.close()
            system.dispose()


def test_what_other_sessions_hold_comes_latest_first_across_sessions(tmp_path: Path) -> None:
    def rename(session: int, robot: str, name: str) -> dict[str, Any]:
        args = {"robot_id": robot, "name": name}
        return {"session": session, "action": "apply", "op": "rename_robot", "args": args}

    with prepared_database(f"sqlite:///{tmp_path / 'latest.db'}") as db:
        system = TARGET.connect(db.url, {})
        executor = ConcurrentExecutor(TARGET, system, 3)
        try:
            for step in LOST_UPDATE[:4]:  # r1, committed
                executor.run(step)
            for session in (1, 2):
                executor.run({"session": session, "action": "begin"})
            executor.run(rename(2, "r1", "older"))
            executor.run(rename(1, "r1", "newer"))
            executor.run(
                {
                    "session": 1,
                    "action": "apply",
                    "op": "assess",
                    "args": {"robot_id": "r1", "assessments": []},
                }
            )
            # Session 1's steps came last, though session 2 is the higher number.
            assert executor.contended(0) == ["r1", "newer", "older"]
            assert executor.contended_operations(0) == ["assess", "rename_robot", "rename_robot"]
            assert executor.contended(2) == ["r1", "newer"]
        finally:
            executor.close()
            system.dispose()


def test_the_machine_hands_the_arguments_what_the_other_sessions_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import humanoid_training.target as reference

    seen: list[tuple[str, ...]] = []
    existing = reference._existing

    def recording(draw: Any, ids: Any, contended: Any = ()) -> str:
        seen.append(tuple(contended))
        return existing(draw, ids, contended)

    monkeypatch.setattr(reference, "_existing", recording)
    result = run_acid(
        "sqlite://",
        target_spec=SPEC,
        settings=settings(ci(), max_examples=20),
        reproducers_dir=tmp_path,
        machine="sessions",
    )
    assert result.passed, result.finding or result.error
    held = [c for c in seen if c]
    # Some draws came while the other session's unit of work held a robot, and were told so.
    assert held, f"none of {len(seen)} draws was told what another session holds"
    assert any(any(v.startswith("r") for v in c) for c in held), held[:5]
    seen.clear()
    acid = run_acid(
        "sqlite://",
        target_spec=SPEC,
        settings=settings(ci(), max_examples=10),
        reproducers_dir=tmp_path,
    )
    assert acid.passed and seen and not any(seen)  # one session: nothing is ever contended


class _Answers:
    """A data object whose draws answer, in turn, the given values."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def draw(self, strategy: Any, label: str | None = None) -> int:
        bounds = strategy.wrapped_strategy
        assert (bounds.start, bounds.end) == (0, 5)  # two sessions besides the last: 0..5
        return self.values.pop(0)


def test_the_next_step_goes_to_another_session_than_the_last_two_times_in_three(
    tmp_path: Path,
) -> None:
    with prepared_database(f"sqlite:///{tmp_path / 'next.db'}") as db:
        system = TARGET.connect(db.url, {})
        machine = concurrent_machine(TARGET, system, RunRecorder(), sessions=3)()
        try:
            machine.last_session = 1
            # Of 0..5, 0 and 1 stay with the last session (one third); 2-5 go to the others.
            chosen = []
            for value in (0, 1, 2, 3, 4, 5):
                machine.last_session = 1
                chosen.append(machine._next_session(_Answers(value)))
            assert chosen == [1, 1, 0, 2, 0, 2]
            assert machine.last_session == 2  # the last one chosen
        finally:
            machine.executor.close()
            system.dispose()
