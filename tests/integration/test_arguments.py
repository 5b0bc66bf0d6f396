"""Arguments an operation's strategy draws must be JSON: one that is not stops the run with an
error naming the operation and what to draw instead, on every machine."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from humanoid_training.target import HumanoidTarget, do_register
from uowstress.stateful.run import run_acid
from uowstress.target import Ids, State


def _with_a_datetime(state: State, ids: Ids) -> st.SearchStrategy[dict[str, Any]]:
    return st.just({"robot_id": "r1", "at": datetime(2026, 1, 1, tzinfo=UTC)})


def _drawing_with(arguments: Any) -> HumanoidTarget:
    """The reference target, every operation's arguments drawn by `arguments`."""

    class Target(HumanoidTarget):
        operations = tuple(
            dataclasses.replace(op, arguments=arguments) for op in HumanoidTarget.operations
        )

    return Target()


NOT_JSON_TARGET = _drawing_with(_with_a_datetime)  # a datetime among the arguments


def _error_of(target: str, machine: str, tmp_path: Path) -> str:
    """The error of a run of `machine` on the target named in this module (no finding)."""
    result = run_acid(
        "sqlite://",
        target_spec=f"{__name__}:{target}",
        machine=machine,
        profile="dev",
        reproducers_dir=tmp_path,
    )
    assert not result.passed and result.finding is None
    assert result.error is not None
    return result.error


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_arguments_that_are_not_json_are_an_error_naming_the_operation(
    machine: str, tmp_path: Path
) -> None:
    error = _error_of("NOT_JSON_TARGET", machine, tmp_path)
    assert "which is not JSON" in error, error
    assert "a datetime as an ISO string" in error
    assert any(f"arguments strategy of {op.name} drew" in error for op in HumanoidTarget.operations)
    assert list(tmp_path.iterdir()) == []


class RobotHandle:
    """What a careless operation might return: an object without __eq__, not JSON."""

    def __init__(self, robot_id: str) -> None:
        self.robot_id = robot_id


def _returning_the_robot(uow: Any, args: dict[str, Any]) -> Any:
    return RobotHandle(do_register(uow, args))


class _ReturnsAnObjectTarget(HumanoidTarget):
    """The reference target, register_robot returning the robot it made."""

    operations = tuple(
        dataclasses.replace(op, apply=_returning_the_robot) if op.name == "register_robot" else op
        for op in HumanoidTarget.operations
    )


RETURNS_AN_OBJECT_TARGET = _ReturnsAnObjectTarget()


def test_an_operation_returning_something_not_json_is_an_error_not_a_finding(
    tmp_path: Path,
) -> None:
    result = run_acid(
        "sqlite://",
        target_spec=f"{__name__}:RETURNS_AN_OBJECT_TARGET",
        profile="dev",
        reproducers_dir=tmp_path,
    )
    # The model's handle and the system's are two objects: by identity they always differ.
    assert not result.passed and result.finding is None, result.finding
    assert result.error is not None
    assert "register_robot returned a RobotHandle on the model, an object compared by identity" in (
        result.error
    )
    assert list(tmp_path.iterdir()) == []


def _raising(state: State, ids: Ids) -> st.SearchStrategy[dict[str, Any]]:
    raise TypeError("_account() missing 1 required positional argument: 'ids'")


RAISING_TARGET = _drawing_with(_raising)


def _invalid(state: State, ids: Ids) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"n": st.integers(5, 1)})


INVALID_TARGET = _drawing_with(_invalid)


def test_an_arguments_strategy_built_wrongly_is_named(tmp_path: Path) -> None:
    error = _error_of("INVALID_TARGET", "acid", tmp_path)
    assert "is not a valid strategy" in error, error
    assert any(
        f"arguments strategy of {op.name} is not" in error for op in HumanoidTarget.operations
    )


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_an_arguments_strategy_that_raises_is_an_error_of_the_target_not_flakiness(
    machine: str, tmp_path: Path
) -> None:
    # The reproducer holds drawn arguments, so a replay never calls the strategy: taken for a
    # failure of the system, it did not fail again and was reported as not repeatable.
    error = _error_of("RAISING_TARGET", machine, tmp_path)
    assert "raised TypeError: _account() missing 1 required" in error, error
    assert "fix the strategy" in error
    assert "answered the same steps differently" not in error
    assert list(tmp_path.iterdir()) == []
