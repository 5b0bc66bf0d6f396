"""The HumanoidRobot aggregate: name, type, configuration, prerequisites, assessment history."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from humanoid_training.domain import (
    HumanoidRobot,
    InvalidValue,
    MasteryLevel,
    PrerequisiteNotMet,
    RobotConfiguration,
    RobotType,
    SkillAssessed,
    SkillAssessment,
    SkillMastered,
    SkillType,
)
from tests.unit.domain.support import (
    BEGINNER,
    EXPECTED_PREREQUISITES,
    EXPERT,
    PREREQUISITE_EDGES,
    assert_domain_error,
    assert_refused,
    assessment,
    below,
    make_robot,
)

CONFIG = RobotConfiguration(joint_count=29, height_m=1.8, weight_kg=70.0, max_joint_velocity=8.0)


class TestCreation:
    @pytest.mark.parametrize(
        "name", ["a", "x" * 100, "Unitree G1 #7"], ids=lambda n: f"{len(n)}-chars"
    )
    def test_names_of_1_to_100_characters(self, name: str) -> None:
        assert HumanoidRobot.create(name).name == name

    @pytest.mark.parametrize("name", ["", "x" * 101, None, 7])
    def test_other_names_are_refused(self, name: Any) -> None:
        assert_domain_error(lambda: HumanoidRobot.create(name), InvalidValue)

    @pytest.mark.parametrize("kind", ["unitree_g1", "generic_humanoid", "custom"])
    def test_robot_types(self, kind: str) -> None:
        robot = HumanoidRobot.create("r", robot_type=kind, configuration=CONFIG, id="robot-9")
        assert robot.robot_type is RobotType(kind)
        assert (robot.id, robot.configuration, robot.version) == ("robot-9", CONFIG, 0)
        assert robot.skills == {} and robot.history == [] and robot.events == []

    @pytest.mark.parametrize("kind", ["quadruped", "", None])
    def test_unknown_robot_type_is_refused(self, kind: Any) -> None:
        assert_domain_error(lambda: HumanoidRobot.create("r", robot_type=kind), InvalidValue)

    def test_configuration_must_be_a_robot_configuration(self) -> None:
        assert_domain_error(
            lambda: HumanoidRobot(
                name="r",
                robot_type=RobotType.CUSTOM,
                configuration={"joint_count": 3},  # type: ignore[arg-type]
            ),
            InvalidValue,
        )

    def test_reloaded_history_with_duplicate_ids_is_refused(self) -> None:
        twice = [assessment("postural_control", 0.2, id="dup")] * 2
        assert_domain_error(
            lambda: HumanoidRobot(
                name="r", robot_type=RobotType.CUSTOM, configuration=CONFIG, history=twice
            ),
            InvalidValue,
        )


class TestRenameAndReconfigure:
    @pytest.mark.parametrize("name", ["b", "y" * 100], ids=lambda n: f"{len(n)}-chars")
    def test_rename(self, name: str) -> None:
        robot = make_robot()
        robot.rename(name)
        assert robot.name == name

    @pytest.mark.parametrize("name", ["", "y" * 101, None])
    def test_rename_to_an_invalid_name_is_refused(self, name: Any) -> None:
        robot = make_robot()
        assert_refused(robot, lambda: robot.rename(name), InvalidValue)

    def test_reconfigure(self) -> None:
        robot = make_robot()
        robot.reconfigure(CONFIG)
        assert robot.configuration == CONFIG

    def test_reconfigure_with_a_raw_payload_is_refused(self) -> None:
        robot = make_robot()
        assert_refused(
            robot,
            lambda: robot.reconfigure(CONFIG.to_json()),  # type: ignore[arg-type]
            InvalidValue,
        )


def robot_with_prerequisites_of(skill: str, score: float = BEGINNER) -> HumanoidRobot:
    return make_robot(dict.fromkeys(EXPECTED_PREREQUISITES[skill], score))


class TestPrerequisites:
    @pytest.mark.parametrize(("skill", "needed"), PREREQUISITE_EDGES)
    @pytest.mark.parametrize("missing_score", [None, 0.0, below(BEGINNER)])
    def test_each_prerequisite_below_beginner_blocks_the_skill(
        self, skill: str, needed: str, missing_score: float | None
    ) -> None:
        robot = robot_with_prerequisites_of(skill)
        if missing_score is None:
            del robot.skills[SkillType(needed)]
        else:
            robot.skills[SkillType(needed)] = missing_score
        refusal = assert_refused(
            robot, lambda: robot.assess(assessment(skill, 0.5)), PrerequisiteNotMet
        )
        assert needed in str(refusal)
        assert not robot.can_assess(SkillType(skill))
        assert robot.missing_prerequisites(SkillType(skill)) == [SkillType(needed)]

    @pytest.mark.parametrize("skill", sorted(EXPECTED_PREREQUISITES))
    @pytest.mark.parametrize("level_score", [BEGINNER, 0.5, 1.0])
    def test_the_spec_prerequisites_at_beginner_or_above_are_enough(
        self, skill: str, level_score: float
    ) -> None:
        # Only the spec's prerequisites are set: an extra edge in the code would refuse this.
        robot = robot_with_prerequisites_of(skill, level_score)
        assert robot.can_assess(SkillType(skill))
        robot.assess(assessment(skill, 0.3))
        assert robot.score(SkillType(skill)) == 0.3

    def test_a_fresh_robot_can_only_start_with_postural_control(self) -> None:
        assessable = {s.value for s in SkillType if make_robot().can_assess(s)}
        assert assessable == {"postural_control"}


class TestAssess:
    def test_assess_appends_and_sets_the_score(self) -> None:
        robot = make_robot()
        a = assessment("postural_control", 0.4)
        robot.assess(a)
        assert robot.history == [a]
        assert robot.score(SkillType.POSTURAL_CONTROL) == 0.4
        assert robot.level(SkillType.POSTURAL_CONTROL) == "intermediate"

    def test_a_lower_score_is_recorded_but_never_lowers_the_skill(self) -> None:
        robot = make_robot()
        high, low = assessment("postural_control", 0.6), assessment("postural_control", 0.2)
        robot.assess(high)
        robot.assess(low)
        assert robot.history == [high, low]
        assert robot.score(SkillType.POSTURAL_CONTROL) == 0.6

    def test_an_equal_or_higher_score_raises_the_skill(self) -> None:
        robot = make_robot()
        for score in (0.3, 0.3, 0.7):
            robot.assess(assessment("postural_control", score))
            assert robot.score(SkillType.POSTURAL_CONTROL) == score
        assert len(robot.history) == 3

    def test_history_is_append_only(self) -> None:
        robot = make_robot()
        seen: list[SkillAssessment] = []
        for score in (0.5, 0.1, 0.9, 0.0):
            before = list(robot.history)
            a = assessment("postural_control", score)
            robot.assess(a)
            seen.append(a)
            assert robot.history[:-1] == before
            assert robot.history[-1] is a
        assert robot.history == seen

    def test_duplicate_assessment_id_is_refused(self) -> None:
        robot = make_robot({"postural_control": 0.5})
        robot.assess(assessment("postural_control", 0.5, id="same"))
        # Same id on another skill is still the same assessment.
        assert_refused(
            robot,
            lambda: robot.assess(assessment("static_balance", 0.9, id="same")),
            InvalidValue,
        )

    @pytest.mark.parametrize("thing", [None, "postural_control", {"skill": "turning"}])
    def test_only_skill_assessments_are_accepted(self, thing: Any) -> None:
        robot = make_robot()
        assert_refused(robot, lambda: robot.assess(thing), InvalidValue)

    def test_level_is_derived_from_the_score(self) -> None:
        robot = make_robot()
        assert robot.level(SkillType.POSTURAL_CONTROL) is None
        for score, level in ((0.1, "novice"), (0.2, "beginner"), (EXPERT, "expert")):
            robot.assess(assessment("postural_control", score))
            assert robot.level(SkillType.POSTURAL_CONTROL) == level

    def test_history_is_unbounded(self) -> None:
        # The original system broke near 450 assessments; the domain has no limit.
        robot = make_robot()
        count = 5_000
        for i in range(count):
            robot.assess(assessment("postural_control", (i % 1000) / 1000, id=f"h{i}"))
        assert len(robot.history) == count
        assert robot.history[0].id == "h0" and robot.history[-1].id == f"h{count - 1}"
        assert robot.score(SkillType.POSTURAL_CONTROL) == 0.999


class TestAssessMany:
    def test_earlier_assessments_satisfy_later_prerequisites(self) -> None:
        robot = make_robot()
        batch = [assessment("postural_control", 0.5), assessment("static_balance", 0.2)]
        robot.assess_many(batch)
        assert robot.history == batch
        assert robot.score(SkillType.STATIC_BALANCE) == 0.2

    def test_one_refused_assessment_refuses_the_whole_batch(self) -> None:
        robot = make_robot()
        batch = [
            assessment("postural_control", 0.5),
            assessment("static_balance", 0.05),
            assessment("dynamic_balance", 0.5),  # static_balance stays below beginner
        ]
        assert_refused(robot, lambda: robot.assess_many(batch), PrerequisiteNotMet)

    def test_a_duplicate_id_inside_the_batch_refuses_the_whole_batch(self) -> None:
        robot = make_robot()
        batch = [
            assessment("postural_control", 0.5, id="x"),
            assessment("postural_control", 0.9, id="x"),
        ]
        assert_refused(robot, lambda: robot.assess_many(batch), InvalidValue)


skill_names = st.sampled_from(sorted(EXPECTED_PREREQUISITES))
scores = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([BEGINNER, EXPERT]))


@given(st.lists(st.tuples(skill_names, scores), max_size=40))
def test_random_assessments_follow_an_independent_model(steps: list[tuple[str, float]]) -> None:
    """Refusals match the spec table; scores are the max of the accepted history; no regression."""
    robot = make_robot()
    accepted: list[SkillAssessment] = []
    for skill, score in steps:
        a = assessment(skill, score)
        current = {s.value: v for s, v in robot.skills.items()}
        allowed = all(current.get(p, 0.0) >= BEGINNER for p in EXPECTED_PREREQUISITES[skill])
        if allowed:
            robot.assess(a)
            accepted.append(a)
        else:
            assert_refused(robot, partial(robot.assess, a), PrerequisiteNotMet)
    assert robot.history == accepted
    for skill_type in SkillType:
        own = [a.score for a in accepted if a.skill is skill_type]
        assert robot.score(skill_type) == (max(own) if own else None)
        mastered = [
            e for e in robot.events if isinstance(e, SkillMastered) and e.skill == skill_type
        ]
        assert len(mastered) == (1 if own and max(own) >= EXPERT else 0)
    assessed = [e for e in robot.events if isinstance(e, SkillAssessed)]
    assert [e.assessment_id for e in assessed] == [a.id for a in accepted]


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30))
def test_score_is_the_max_of_the_history_when_all_are_accepted(values: list[float]) -> None:
    robot = make_robot()
    for value in values:
        robot.assess(assessment("postural_control", value))
        history_scores = [a.score for a in robot.history]
        assert robot.score(SkillType.POSTURAL_CONTROL) == max(history_scores)
        assert robot.level(SkillType.POSTURAL_CONTROL) == MasteryLevel.from_score(
            max(history_scores)
        )
    assert [a.score for a in robot.history] == values
