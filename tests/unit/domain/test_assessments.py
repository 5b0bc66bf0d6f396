"""A robot's assessment history, held in full or stored and read only when it is used."""

from __future__ import annotations

import copy

import pytest

from humanoid_training.domain import HumanoidRobot, InvalidValue, SkillAssessment
from humanoid_training.domain.assessments import AssessmentHistory
from tests.unit.domain.support import assessment, make_robot


class Storage:
    """Stored entries that count how often they are read and asked about."""

    def __init__(self, entries: list[SkillAssessment]) -> None:
        self.entries = entries
        self.reads = 0
        self.asked: list[str] = []

    def read(self) -> list[SkillAssessment]:
        self.reads += 1
        return list(self.entries)

    def holds(self, assessment_id: str) -> bool:
        self.asked.append(assessment_id)
        return any(a.id == assessment_id for a in self.entries)

    def history(self) -> AssessmentHistory:
        return AssessmentHistory.stored(len(self.entries), self.read, self.holds)


def _stored(count: int) -> Storage:
    return Storage([assessment("postural_control", 0.1, id=f"s{i}") for i in range(count)])


def test_appending_and_counting_do_not_read_the_stored_entries() -> None:
    storage = _stored(3)
    history = storage.history()
    added = assessment("postural_control", 0.5, id="new")
    history.append(added)
    assert len(history) == 4
    # What a save writes: the entries after the stored ones.
    assert history[3:] == [added]
    assert storage.reads == 0 and not history.is_read


def test_holds_asks_the_storage_once_per_id_and_knows_what_was_added() -> None:
    storage = _stored(2)
    history = storage.history()
    history.append(assessment("postural_control", 0.5, id="new"))
    assert history.holds("s1") and history.holds("s1")
    assert not history.holds("other") and not history.holds("other")
    assert history.holds("new")
    assert storage.asked == ["s1", "other"]
    assert storage.reads == 0


def test_reading_gives_the_stored_entries_then_the_added_ones() -> None:
    storage = _stored(2)
    history = storage.history()
    added = assessment("postural_control", 0.5, id="new")
    history.append(added)
    assert list(history) == [*storage.entries, added]
    assert history[0] is storage.entries[0] and history[-1] is added
    assert history == [*storage.entries, added]
    assert history.is_read and storage.reads == 1
    # Once read, nothing more is asked of the storage.
    assert history.holds("s0") and not history.holds("nope")
    assert list(history) == [*storage.entries, added]
    assert storage.reads == 1 and storage.asked == []


def test_a_storage_that_lost_entries_is_an_error_not_a_shorter_history() -> None:
    storage = _stored(3)
    history = storage.history()
    storage.entries.pop()
    with pytest.raises(RuntimeError, match="2 entries where 3 were loaded"):
        list(history)


def test_a_robot_refuses_an_id_its_stored_history_holds_without_reading_it() -> None:
    storage = _stored(5)
    robot = make_robot()
    robot.history = storage.history()
    with pytest.raises(InvalidValue, match="already in the history"):
        robot.assess(assessment("postural_control", 0.9, id="s3"))
    robot.assess(assessment("postural_control", 0.9, id="fresh"))
    with pytest.raises(InvalidValue, match="already in the history"):
        robot.assess_many(
            [
                assessment("postural_control", 0.9, id="x"),
                assessment("postural_control", 1, id="s0"),
            ]
        )
    assert len(robot.history) == 6 and storage.reads == 0


def test_a_trial_of_many_assessments_leaves_the_history_alone_when_one_is_refused() -> None:
    storage = _stored(2)
    robot = make_robot()
    robot.history = storage.history()
    twice = assessment("postural_control", 0.4, id="twice")
    with pytest.raises(InvalidValue):
        robot.assess_many([twice, twice])
    assert len(robot.history) == 2 and not robot.history.holds("twice")
    robot.assess_many([twice, assessment("postural_control", 0.6, id="other")])
    assert [a.id for a in robot.history] == ["s0", "s1", "twice", "other"]


def test_a_list_given_to_a_robot_becomes_a_history_of_its_own() -> None:
    given = [assessment("postural_control", 0.2, id="a")]
    robot = HumanoidRobot(
        name="r", robot_type="custom", configuration=make_robot().configuration, history=given
    )
    robot.assess(assessment("postural_control", 0.3, id="b"))
    assert isinstance(robot.history, AssessmentHistory)
    assert [a.id for a in robot.history] == ["a", "b"] and len(given) == 1


def test_a_deep_copy_is_a_history_held_in_full_that_grows_apart() -> None:
    storage = _stored(2)
    history = storage.history()
    twin = copy.deepcopy(history)
    twin.append(assessment("postural_control", 0.5, id="new"))
    assert twin.is_read and len(twin) == 3 and len(history) == 2
    assert twin[0] is storage.entries[0]


def test_a_history_given_in_full_refuses_an_id_twice() -> None:
    twice = assessment("postural_control", 0.2, id="dup")
    with pytest.raises(InvalidValue, match="unique"):
        AssessmentHistory([twice, twice])
