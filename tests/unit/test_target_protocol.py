"""Loading and checking targets."""

from __future__ import annotations

import types

import pytest

from uowstress.target import DEFAULT_TARGET, Ids, TargetError, check_target, load_target


def test_the_reference_target_loads_and_keeps_the_protocol() -> None:
    target = load_target(DEFAULT_TARGET)
    assert target.name == "humanoid_training"
    assert target.guarantee == "serializable"
    assert {op.name for op in target.operations} >= {"register_robot", "start_session"}
    assert "ht_robots" in target.tables


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("humanoid_training.target", "not of the form"),
        ("no_such_module_xyz:TARGET", "cannot import"),
        ("humanoid_training.target:NOPE", "has no attribute 'NOPE'"),
        ("humanoid_training.domain:SkillType", "is not a uowstress Target"),
    ],
)
def test_bad_target_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        load_target(spec)


def test_a_target_with_an_unknown_guarantee_is_refused() -> None:
    fake = types.SimpleNamespace(
        name="x",
        guarantee="mostly serializable",
        operations=[],
        queries=[],
        tables=frozenset(),
        options={},
        connect=lambda *a, **k: None,
    )
    with pytest.raises(TargetError, match="guarantee 'mostly serializable'"):
        check_target(fake, "fake")


def test_ids_are_fresh_per_prefix_and_deterministic() -> None:
    ids = Ids()
    assert [ids.fresh("r"), ids.fresh("r"), ids.fresh("s")] == ["r1", "r2", "s1"]
    assert Ids().fresh("r") == "r1"
