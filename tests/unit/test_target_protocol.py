"""Loading and checking targets."""

from __future__ import annotations

import sys
import types
from pathlib import Path

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
        ("humanoid_training.target:OPERATIONS", "is not a uowstress Target"),
        ("humanoid_training.domain:SkillType", "is a class, not a Target object"),
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


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'raise RuntimeError("boom at import")\n',
            "cannot import target module 'uows_broken_mod': RuntimeError: boom at import"
            " (uows_broken_mod.py, line 1)",
        ),
        ("x = 1\ndef f(:\n", "SyntaxError: invalid syntax (uows_broken_mod.py, line 2)"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3 (uows_broken_mod.py, line 2)"),
    ],
)
def test_a_module_that_fails_at_import_is_named_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    _module(tmp_path, monkeypatch, "uows_broken_mod", source)
    with pytest.raises(TargetError) as caught:
        load_target("uows_broken_mod:TARGET")
    assert message in str(caught.value)


def test_a_function_that_needs_arguments_is_not_a_factory() -> None:
    with pytest.raises(TargetError, match=r"needs arguments \(obj\); a target factory must take"):
        load_target("json:dumps")


def test_a_factory_that_raises_is_named_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "def make():\n    raise ValueError('no database')\n"
    _module(tmp_path, monkeypatch, "uows_failing_factory", source)
    with pytest.raises(TargetError) as caught:
        load_target("uows_failing_factory:make")
    assert (
        "target factory 'uows_failing_factory:make' failed: ValueError: no database"
        " (uows_failing_factory.py, line 2)" in str(caught.value)
    )


def test_the_public_api_holds_what_a_target_is_made_of() -> None:
    import uowstress
    from uowstress import target as protocol

    for name in uowstress.__all__:
        assert getattr(uowstress, name) is not None, name
    # The same objects as the protocol module's, so that either import path keeps working.
    assert uowstress.Operation is protocol.Operation and uowstress.Target is protocol.Target
    from uowstress.workload import Workload

    assert uowstress.Workload is Workload
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = uowstress.Nope  # type: ignore[attr-defined]
