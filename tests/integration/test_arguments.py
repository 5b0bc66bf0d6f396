"""Arguments an operation's strategy draws must be JSON: one that is not stops the run with an
error naming the operation and what to draw instead, on every machine."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from humanoid_training.target import HumanoidTarget
from uowstress.stateful.run import run_acid
from uowstress.target import Ids, State


def _with_a_datetime(state: State, ids: Ids) -> st.SearchStrategy[dict[str, Any]]:
    return st.just({"robot_id": "r1", "at": datetime(2026, 1, 1, tzinfo=UTC)})


class _NotJsonTarget(HumanoidTarget):
    """The reference target, every operation drawing a datetime among its arguments."""

    operations = tuple(
        dataclasses.replace(op, arguments=_with_a_datetime) for op in HumanoidTarget.operations
    )


NOT_JSON_TARGET = _NotJsonTarget()


@pytest.mark.parametrize("machine", ["acid", "sessions"])
def test_arguments_that_are_not_json_are_an_error_naming_the_operation(
    machine: str, tmp_path: Path
) -> None:
    result = run_acid(
        "sqlite://",
        target_spec=f"{__name__}:NOT_JSON_TARGET",
        machine=machine,
        profile="dev",
        reproducers_dir=tmp_path,
    )
    assert not result.passed and result.finding is None
    assert result.error is not None
    assert "which is not JSON" in result.error, result.error
    assert "a datetime as an ISO string" in result.error
    assert any(
        f"arguments strategy of {op.name} drew" in result.error for op in _NotJsonTarget.operations
    )
    assert list(tmp_path.iterdir()) == []
