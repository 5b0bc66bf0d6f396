"""Reproducer files: written, read back, and refused when malformed or foreign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uowstress import reproducers
from uowstress.errors import ReproducerError


def sample(**changes: object) -> reproducers.Reproducer:
    fields: dict[str, object] = {
        "target": "humanoid_training.target:TARGET",
        "target_options": {"weaken": "commit_swallows_errors"},
        "backend": "sqlite",
        "guarantee": "serializable",
        "steps": [reproducers.Step(action="begin"), reproducers.Step(action="commit")],
        "failure": reproducers.Failure(kind="state", message="m", step=2),
    }
    fields.update(changes)
    return reproducers.make_reproducer(**fields)


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    rep = sample()
    path = reproducers.write(rep, tmp_path)
    assert path.name == f"{rep.id}.json"
    assert reproducers.load(path) == rep
    assert not list(tmp_path.glob("*.tmp"))


def test_the_id_names_the_content_not_the_time() -> None:
    assert sample().id == sample(created_at="2020-01-01T00:00:00").id
    other = sample(steps=[reproducers.Step(action="begin"), reproducers.Step(action="leave")])
    assert other.id != sample().id


def test_resolve_by_id_prefix_and_refuse_ambiguity(tmp_path: Path) -> None:
    a = reproducers.write(sample(), tmp_path)
    assert reproducers.resolve(a.stem[:6], tmp_path) == a
    b = reproducers.write(sample(backend="postgresql"), tmp_path)
    common = ""
    for x, y in zip(a.stem, b.stem, strict=True):
        if x != y:
            break
        common += x
    with pytest.raises(ReproducerError, match="matches 2"):
        reproducers.resolve(common, tmp_path)
    with pytest.raises(ReproducerError, match="no reproducer"):
        reproducers.resolve("zzzz", tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a uowstress reproducer"),
        (json.dumps({"format": "hypothesis"}), "not a uowstress reproducer"),
        (json.dumps({"format": "uowstress.reproducer", "version": 1}), "malformed reproducer"),
    ],
)
def test_malformed_or_foreign_files_are_refused_and_left_alone(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ReproducerError, match=message):
        reproducers.load(path)
    assert path.read_text() == content


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    data = sample().model_dump(mode="json")
    data["stepz"] = []
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReproducerError, match="stepz"):
        reproducers.load(path)


def test_an_oversized_file_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reproducers, "MAX_REPRODUCER_BYTES", 10)
    path = reproducers.write(sample(), tmp_path)
    with pytest.raises(ReproducerError, match="larger than"):
        reproducers.load(path)


def test_steps_by_session_keep_global_order() -> None:
    rep = sample(
        steps=[
            reproducers.Step(session=1, action="begin"),
            reproducers.Step(session=0, action="begin"),
            reproducers.Step(session=1, action="commit"),
        ]
    )
    grouped = rep.steps_by_session()
    assert [i for i, _ in grouped[1]] == [1, 3]
    assert [i for i, _ in grouped[0]] == [2]
