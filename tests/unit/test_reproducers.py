"""Reproducer files: written, read back, and refused when malformed or foreign."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from uowstress import reproducers
from uowstress.errors import ReproducerError, UowstressError
from uowstress.faults import FAULT_POINTS, KILL_AT, Fault


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


@pytest.mark.parametrize("spec", ["/no/such/folder/abc", "no/such/abc", "abc.json"])
def test_a_path_that_names_no_file_is_said_to_be_missing(tmp_path: Path, spec: str) -> None:
    # Taken as a path by its form, not looked up as an id (an absolute one cannot be).
    path = reproducers.resolve(spec, tmp_path)
    assert path == Path(spec)
    with pytest.raises(ReproducerError, match="no such reproducer file"):
        reproducers.load(path)


def test_an_id_is_found_from_a_folder_below_the_one_the_run_started_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = reproducers.write(sample(), tmp_path / reproducers.REPRODUCERS_DIR)
    reports = tmp_path / "performance_reports" / "history"
    reports.mkdir(parents=True)
    monkeypatch.chdir(reports)
    found = reproducers.resolve(written.stem[:8])
    assert found.resolve() == written.resolve()
    # A folder of that name in the working directory is where ids are looked up first.
    (reports / reproducers.REPRODUCERS_DIR).mkdir(parents=True)
    with pytest.raises(ReproducerError, match="no reproducer"):
        reproducers.resolve(written.stem[:8])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a uowstress reproducer"),
        (json.dumps({"format": "hypothesis"}), "not a uowstress reproducer"),
        (json.dumps({"format": "uowstress.reproducer", "version": 1}), "malformed reproducer"),
        # Hostile files: more nesting than the parser recurses through, an integer longer
        # than Python reads.
        ("[" * 100_000 + "]" * 100_000, r"not valid JSON \(arrays or objects nested too deeply"),
        (
            '{"format": "uowstress.reproducer", "version": ' + "9" * 5000 + "}",
            r"not valid JSON \(a number of more than 4300 digits\)",
        ),
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


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            '{\n  "format": "uowstress.reproducer",\n  "target": "humanoid',
            "(Unterminated string starting at line 3, column 13)",
        ),
        ('{\n  "target": "humanoid\n"}', "(Invalid control character at line 2, column 22)"),
    ],
)
def test_a_json_error_is_said_in_plain_words(tmp_path: Path, content: str, said: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ReproducerError) as raised:
        reproducers.load(path)
    assert said in str(raised.value), str(raised.value)
    assert " at at " not in str(raised.value)


@pytest.mark.parametrize("step", [0, 3, 99])
def test_a_failure_at_a_step_the_reproducer_does_not_have_is_refused(
    tmp_path: Path, step: int
) -> None:
    path = _write_raw(
        tmp_path / "x.json",
        [{"action": "begin"}, {"action": "commit"}],
        failure={"kind": "state", "message": "m", "step": step},
    )
    with pytest.raises(ReproducerError, match="malformed reproducer") as raised:
        reproducers.load(path)
    assert f"failure.step is {step}, but the reproducer has 2 step(s)" in str(raised.value)


def test_a_failure_at_the_last_step_or_at_none_loads(tmp_path: Path) -> None:
    steps: list[dict[str, object]] = [{"action": "begin"}, {"action": "commit"}]
    for step in (1, 2, None):
        failure = {"kind": "state", "message": "m", "step": step}
        path = _write_raw(tmp_path / f"{step}.json", steps, failure=failure)
        assert reproducers.load(path).failure.step == step


def test_a_reproducer_too_deep_for_its_checks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = reproducers.write(sample(), tmp_path)

    def too_deep(self: reproducers.Reproducer) -> list[str]:
        raise RecursionError("maximum recursion depth exceeded")

    # Data the parser read within its limit, walked again deeper in the stack.
    monkeypatch.setattr(reproducers.Reproducer, "step_problems", too_deep)
    with pytest.raises(ReproducerError, match="malformed reproducer: nested too deeply"):
        reproducers.load(path)


def test_a_hostile_file_among_the_replay_profiles_reproducers_is_named(tmp_path: Path) -> None:
    written = reproducers.write(sample(), tmp_path)
    hostile = tmp_path / "0000.json"
    hostile.write_text("[" * 100_000 + "]" * 100_000)
    found, broken = reproducers.written_for(tmp_path, {"target": sample().target})
    assert found == [(written, sample())]
    assert len(broken) == 1 and str(hostile) in broken[0] and "nested too deeply" in broken[0]


@pytest.mark.parametrize("version", [2, 0, pytest.param(int("9" * 4000), id="huge")])
def test_a_reproducer_of_another_version_says_so_and_what_to_do(
    tmp_path: Path, version: int
) -> None:
    data = sample().model_dump(mode="json")
    data["version"] = version
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReproducerError) as raised:
        reproducers.load(path)
    said = str(raised.value)
    assert said.startswith(f"{path}: reproducer version {str(version)[:3]}")
    assert f"this uowstress reads version {reproducers.VERSION}" in said
    assert "written by another version of uowstress" in said
    assert "replay it with the uowstress that wrote it, or run again" in said
    assert len(said) < 500  # a huge number is cut short


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


def _write_raw(path: Path, steps: list[dict[str, object]], **changes: object) -> Path:
    """A reproducer file as a hand edit would leave it: fields not checked on the way out."""
    data = sample().model_dump(mode="json")
    data.update(steps=steps, **changes)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("step", "sessions", "message"),
    [
        ({"action": "fault", "fault": {}}, 1, "step 2: a fault needs 'point' (one of before_flush"),
        ({"action": "fault"}, 1, "step 2: a 'fault' step needs a 'fault' object"),
        (
            {"action": "fault", "fault": {"point": "nonsense"}},
            1,
            "step 2: a fault's 'point' is 'nonsense'; it must be one of before_flush",
        ),
        (
            {"action": "fault", "fault": {"point": "statement", "statement": "abc"}},
            1,
            "step 2: a fault's 'statement' is 'abc'; it must be a whole number from 1",
        ),
        (
            {"action": "fault", "fault": {"point": "statement", "statement": 0}},
            1,
            "step 2: a fault's 'statement' is 0",
        ),
        (
            {"action": "fault", "fault": {"point": "statement", "statement": True}},
            1,
            "step 2: a fault's 'statement' is True",
        ),
        (
            {"action": "fault", "fault": {"point": "kill", "kill_at": "commit"}},
            1,
            "step 2: a fault's 'kill_at' is 'commit'; it must be one of before_flush",
        ),
        (
            {"action": "fault", "fault": {"point": "statement", "statment": 3}},
            1,
            "step 2: a fault has unknown field(s) statment",
        ),
        (
            {"session": 3, "action": "commit"},
            1,
            "step 2: session 3 does not exist; the reproducer declares 1 session(s)",
        ),
        (
            {"session": 2, "action": "commit"},
            2,
            "step 2: session 2 does not exist; the reproducer declares 2 session(s)",
        ),
    ],
)
def test_a_step_the_replay_cannot_run_faithfully_is_refused_and_named(
    tmp_path: Path, step: dict[str, object], sessions: int, message: str
) -> None:
    path = _write_raw(tmp_path / "x.json", [{"action": "begin"}, step], sessions=sessions)
    before = path.read_text()
    with pytest.raises(ReproducerError, match="malformed reproducer") as raised:
        reproducers.load(path)
    assert message in str(raised.value)
    assert path.read_text() == before


def test_fault_specs_as_written_load_and_a_bad_one_is_refused_by_name(tmp_path: Path) -> None:
    specs: list[dict[str, object]] = [{"point": point} for point in FAULT_POINTS]
    specs += [{"point": "statement", "statement": 6}]
    specs += [{"point": "kill", "kill_at": at} for at in KILL_AT]
    specs += [Fault(point="statement", statement=4).to_json()]
    steps: list[dict[str, object]] = []
    for spec in specs:
        steps += [{"action": "begin"}, {"action": "fault", "fault": spec}]
    rep = reproducers.load(_write_raw(tmp_path / "ok.json", steps))
    defaults = {"statement": 1, "kill_at": "before_commit"}
    assert [Fault.from_json(s.fault).to_json() for s in rep.steps if s.fault] == [
        {**defaults, **spec} for spec in specs
    ]
    # Reached without load's check (a step built in code): a named error, not a KeyError.
    with pytest.raises(UowstressError, match="a fault needs 'point'"):
        Fault.from_json({})


def test_a_directory_is_not_called_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReproducerError, match="is a directory, not a reproducer file"):
        reproducers.load(tmp_path)


def test_replay_of_every_reproducer_works_from_a_folder_below_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = reproducers.write(sample(), tmp_path / reproducers.REPRODUCERS_DIR)
    (tmp_path / "performance_reports").mkdir()
    monkeypatch.chdir(tmp_path / "performance_reports")
    found = reproducers.nearest(reproducers.REPRODUCERS_DIR)
    assert [p.resolve() for p in reproducers.all_paths(found)] == [written.resolve()]


_TWO_COMMITS: list[dict[str, object]] = [
    {"action": "begin"},
    {"action": "apply", "op": "register_robot", "args": {}},
    {"action": "commit"},
    {"action": "begin"},
    {"action": "commit"},
]


@pytest.mark.parametrize(
    ("steps", "changes", "message"),
    [
        (_TWO_COMMITS, {}, "a durability reproducer needs 'kill', where the worker is killed"),
        (
            [{"action": "begin"}, {"action": "rollback"}],
            {"kill": {"after_acks": 0}},
            "step 2: 'rollback' where the worker's transactions need 'apply' or 'commit'",
        ),
        (
            [{"action": "apply", "op": "register_robot"}],
            {"kill": {"after_acks": 0}},
            "step 1: 'apply' where the worker's transactions need 'begin'",
        ),
        (
            [{"action": "begin"}],
            {"kill": {"after_acks": 0}},
            "the last transaction has no 'commit'",
        ),
        (
            _TWO_COMMITS,
            {"kill": {"after_acks": 3}},
            "kill.after_acks is 3, but the steps commit only 2 time(s)",
        ),
        (
            _TWO_COMMITS,
            {"kill": {"after_acks": 1, "extra_steps": 3}},
            "kill.extra_steps is 3, but the transaction after 1 acknowledged commit(s) has 2",
        ),
        (
            _TWO_COMMITS,
            {"kill": {"after_acks": 2, "extra_steps": 1}},
            "kill.extra_steps is 1, but the transaction after 2 acknowledged commit(s) has 0",
        ),
    ],
)
def test_a_durability_reproducer_the_worker_cannot_run_is_refused_and_named(
    tmp_path: Path, steps: list[dict[str, object]], changes: dict[str, object], message: str
) -> None:
    path = _write_raw(tmp_path / "x.json", steps, machine="durability", **changes)
    with pytest.raises(ReproducerError, match="malformed reproducer") as raised:
        reproducers.load(path)
    assert message in str(raised.value)


def test_a_durability_reproducer_loads_and_its_kill_counts_in_its_id(tmp_path: Path) -> None:
    kill = {"after_acks": 1, "extra_steps": 2, "delay_us": 300}
    path = _write_raw(tmp_path / "x.json", _TWO_COMMITS, machine="durability", kill=kill)
    loaded = reproducers.load(path)
    assert loaded.kill == reproducers.KillPoint(after_acks=1, extra_steps=2, delay_us=300)
    later = loaded.model_copy(update={"kill": reproducers.KillPoint(after_acks=2)})
    assert later.content_id() != loaded.content_id()
    # A kill on another machine's reproducer is an edit that cannot mean anything.
    acid = _write_raw(tmp_path / "y.json", [{"action": "begin"}], kill=kill)
    with pytest.raises(ReproducerError, match="'kill' belongs to a durability reproducer"):
        reproducers.load(acid)


def test_git_keeps_the_reproducers_in_a_folder_hypothesis_ignores(tmp_path: Path) -> None:
    # What Hypothesis writes when it makes .hypothesis: everything in it ignored.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    hypothesis_dir = tmp_path / ".hypothesis"
    hypothesis_dir.mkdir()
    (hypothesis_dir / ".gitignore").write_text("# automatically created by Hypothesis\n\n*\n")
    written = reproducers.write(sample(), hypothesis_dir / "reproducers")
    reproducers.write(sample(backend="postgresql"), hypothesis_dir / "reproducers")

    def ignored(path: Path) -> bool:
        done = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", str(path)])
        return done.returncode == 0

    assert not ignored(written)
    assert ignored(hypothesis_dir / "examples" / "abc")  # the rest stays ignored
    assert (hypothesis_dir / ".gitignore").read_text().count("!reproducers/**") == 1


def test_a_failure_found_again_keeps_the_file_already_written(tmp_path: Path) -> None:
    # The replay profile finds a committed reproducer's failure again on every run: the file
    # keeps the seed, profile and time it was found with, and the corpus stays unchanged.
    first = sample(profile="ci", seed="1", created_at="2026-01-01T00:00:00+00:00")
    path = reproducers.write(first, tmp_path)
    before = path.read_bytes()
    again = sample(profile="replay", seed=None, created_at="2026-02-02T00:00:00+00:00")
    assert again.id == first.id
    assert reproducers.write(again, tmp_path) == path
    assert path.read_bytes() == before
    assert reproducers.load(path).seed == "1"


def test_a_damaged_file_of_the_same_name_is_written_anew(tmp_path: Path) -> None:
    rep = sample()
    path = tmp_path / f"{rep.id}.json"
    path.write_text("{not json")
    assert reproducers.write(rep, tmp_path) == path
    assert reproducers.load(path) == rep


def test_the_same_steps_failing_another_way_are_written_anew(tmp_path: Path) -> None:
    first = sample(profile="ci", seed="1")
    path = reproducers.write(first, tmp_path)
    other = sample(failure=reproducers.Failure(kind="invariant", message="m2", step=2))
    assert other.id == first.id
    assert reproducers.write(other, tmp_path) == path
    assert reproducers.load(path).failure.kind == "invariant"
