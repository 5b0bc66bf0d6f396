"""Value objects: SkillType, MasteryLevel, SkillAssessment, RobotConfiguration, EpisodeMetrics."""

from __future__ import annotations

import copy
import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from humanoid_training.domain import (
    ActiveSessionExists,
    CurriculumError,
    DomainError,
    EpisodeInProgress,
    EpisodeLimitReached,
    EpisodeMetrics,
    HumanoidRobot,
    InvalidTransition,
    InvalidValue,
    MasteryLevel,
    NotFound,
    PrerequisiteNotMet,
    RobotConfiguration,
    RobotType,
    SkillAssessment,
    SkillType,
)
from tests.unit.domain.support import (
    BEGINNER,
    EXPECTED_PREREQUISITES,
    EXPERT,
    INTERMEDIATE,
    NON_FINITE,
    PREREQUISITE_EDGES,
    TOO_LARGE_FOR_FLOAT,
    above,
    assert_domain_error,
    below,
)

unit_floats = st.floats(min_value=0.0, max_value=1.0)
outside_unit = st.one_of(
    st.floats(allow_nan=True).filter(lambda x: not 0.0 <= x <= 1.0),
    st.integers().filter(lambda x: not 0 <= x <= 1),
)
# Values no float field of a value object may take: wrong types and non-finite numbers.
NOT_A_NUMBER: list[Any] = [
    True,
    False,
    "0.5",
    None,
    [0.5],
    pytest.param(TOO_LARGE_FOR_FLOAT, id="int-too-large-for-float"),
]

LEVELS = ["novice", "beginner", "intermediate", "advanced", "expert"]


@pytest.mark.parametrize(
    "error",
    [
        InvalidValue,
        PrerequisiteNotMet,
        InvalidTransition,
        EpisodeLimitReached,
        EpisodeInProgress,
        ActiveSessionExists,
        CurriculumError,
        NotFound,
    ],
)
def test_every_domain_error_is_a_domain_error_and_no_builtin_value_error(
    error: type[DomainError],
) -> None:
    assert issubclass(error, DomainError)
    assert not issubclass(error, ValueError | TypeError)


class TestSkillType:
    def test_the_nine_skills_of_the_spec(self) -> None:
        assert {s.value for s in SkillType} == set(EXPECTED_PREREQUISITES)

    @pytest.mark.parametrize("skill", sorted(EXPECTED_PREREQUISITES))
    def test_prerequisites_of_each_skill_are_exactly_those_of_the_spec(self, skill: str) -> None:
        assert {p.value for p in SkillType(skill).prerequisites} == EXPECTED_PREREQUISITES[skill]

    @pytest.mark.parametrize(("skill", "needed"), PREREQUISITE_EDGES)
    def test_prerequisite_edge(self, skill: str, needed: str) -> None:
        assert SkillType(needed) in SkillType(skill).prerequisites

    def test_the_spec_table_has_the_ten_edges(self) -> None:
        # Guards the hand-written table itself against a lost line.
        assert len(PREREQUISITE_EDGES) == 10


class TestRobotType:
    def test_the_three_robot_types(self) -> None:
        assert {t.value for t in RobotType} == {"unitree_g1", "generic_humanoid", "custom"}


class TestMasteryLevel:
    @pytest.mark.parametrize(
        ("score", "level"),
        [
            (0.0, "novice"),
            (0, "novice"),
            (below(BEGINNER), "novice"),
            (BEGINNER, "beginner"),
            (below(INTERMEDIATE), "beginner"),
            (INTERMEDIATE, "intermediate"),
            (below(0.625), "intermediate"),
            (0.625, "advanced"),
            (below(EXPERT), "advanced"),
            (EXPERT, "expert"),
            (1.0, "expert"),
            (1, "expert"),
        ],
    )
    def test_boundaries(self, score: float, level: str) -> None:
        assert MasteryLevel.from_score(score) == level

    @pytest.mark.parametrize(
        "score", [below(0.0), -1, above(1.0), 2, *NON_FINITE, -math.inf, *NOT_A_NUMBER]
    )
    def test_scores_outside_the_unit_interval_are_refused(self, score: Any) -> None:
        assert_domain_error(lambda: MasteryLevel.from_score(score), InvalidValue)

    @given(outside_unit)
    def test_any_score_outside_the_unit_interval_is_refused(self, score: float) -> None:
        assert_domain_error(lambda: MasteryLevel.from_score(score), InvalidValue)

    @given(unit_floats)
    def test_level_follows_the_thresholds(self, score: float) -> None:
        expected = sum(score >= bound for bound in (0.125, 0.375, 0.625, 0.875))
        assert MasteryLevel.from_score(score) == LEVELS[expected]

    @given(unit_floats, unit_floats)
    def test_level_is_monotone_in_score(self, a: float, b: float) -> None:
        low, high = sorted((a, b))
        low_level, high_level = MasteryLevel.from_score(low), MasteryLevel.from_score(high)
        assert LEVELS.index(low_level) <= LEVELS.index(high_level)
        assert high_level.at_least(low_level)
        assert low_level.rank <= high_level.rank

    def test_levels_are_ordered_novice_to_expert(self) -> None:
        assert [level.value for level in sorted(MasteryLevel, key=lambda m: m.rank)] == LEVELS


def make_assessment(**overrides: Any) -> SkillAssessment:
    fields: dict[str, Any] = {
        "id": "a-1",
        "skill": "turning",
        "score": 0.5,
        "confidence": 0.8,
        "evidence": 0.7,
    }
    fields.update(overrides)
    return SkillAssessment(**fields)


class TestSkillAssessment:
    def test_valid_assessment(self) -> None:
        at = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        a = make_assessment(assessed_at=at)
        assert a.skill is SkillType.TURNING
        assert (a.score, a.confidence, a.evidence) == (0.5, 0.8, 0.7)
        assert a.assessed_at == at
        assert a.assessed_at.tzinfo == UTC
        assert a.level == "intermediate"

    def test_assessed_at_defaults_to_now_in_utc(self) -> None:
        before = datetime.now(UTC)
        a = make_assessment()
        assert before <= a.assessed_at <= datetime.now(UTC)

    @pytest.mark.parametrize("field", ["score", "confidence", "evidence"])
    @pytest.mark.parametrize("value", [0.0, 0, 1.0, 1])
    def test_fields_accept_the_ends_of_the_unit_interval(self, field: str, value: float) -> None:
        assert getattr(make_assessment(**{field: value}), field) == value

    @pytest.mark.parametrize("field", ["score", "confidence", "evidence"])
    @pytest.mark.parametrize(
        "value", [below(0.0), above(1.0), -0.5, 1.5, *NON_FINITE, *NOT_A_NUMBER]
    )
    def test_fields_outside_the_unit_interval_are_refused(self, field: str, value: Any) -> None:
        assert_domain_error(lambda: make_assessment(**{field: value}), InvalidValue)

    @pytest.mark.parametrize("skill", ["flying", "", None, 3])
    def test_unknown_skill_is_refused(self, skill: Any) -> None:
        assert_domain_error(lambda: make_assessment(skill=skill), InvalidValue)

    @pytest.mark.parametrize("bad_id", ["", None, 17])
    def test_id_must_be_a_non_empty_string(self, bad_id: Any) -> None:
        assert_domain_error(lambda: make_assessment(id=bad_id), InvalidValue)

    def test_naive_timestamp_is_refused(self) -> None:
        assert_domain_error(
            lambda: make_assessment(assessed_at=datetime(2024, 5, 1, 12)), InvalidValue
        )

    def test_is_immutable(self) -> None:
        a = make_assessment()
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.score = 0.9  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("confidence", "evidence", "reliable"),
        [
            (0.7, 0.6, True),
            (1.0, 1.0, True),
            (below(0.7), 0.6, False),
            (0.7, below(0.6), False),
            (below(0.7), below(0.6), False),
            (0.0, 1.0, False),
            (1.0, 0.0, False),
        ],
    )
    def test_reliability_boundaries(
        self, confidence: float, evidence: float, reliable: bool
    ) -> None:
        assert make_assessment(confidence=confidence, evidence=evidence).reliable is reliable

    @given(unit_floats, unit_floats)
    def test_reliable_iff_confidence_and_evidence_reach_their_thresholds(
        self, confidence: float, evidence: float
    ) -> None:
        a = make_assessment(confidence=confidence, evidence=evidence)
        assert a.reliable is (confidence >= 0.7 and evidence >= 0.6)

    @given(unit_floats)
    def test_level_is_derived_from_the_score(self, score: float) -> None:
        assert make_assessment(score=score).level == MasteryLevel.from_score(score)


def make_config(**overrides: Any) -> RobotConfiguration:
    fields: dict[str, Any] = {
        "joint_count": 23,
        "height_m": 1.32,
        "weight_kg": 35.0,
        "max_joint_velocity": 10.0,
    }
    fields.update(overrides)
    return RobotConfiguration(**fields)


POSITIVE_FIELDS = ["joint_count", "height_m", "weight_kg", "max_joint_velocity"]


class TestRobotConfiguration:
    def test_smallest_positive_values_are_accepted(self) -> None:
        tiny = math.ulp(0.0)
        config = make_config(joint_count=1, height_m=tiny, weight_kg=tiny, max_joint_velocity=tiny)
        assert config.joint_count == 1
        assert config.height_m == config.weight_kg == config.max_joint_velocity == tiny

    @pytest.mark.parametrize("field", POSITIVE_FIELDS)
    @pytest.mark.parametrize("value", [0, 0.0, -0.0, -1, -1e-300, *NON_FINITE, *NOT_A_NUMBER])
    def test_every_field_must_be_a_finite_number_above_zero(self, field: str, value: Any) -> None:
        assert_domain_error(lambda: make_config(**{field: value}), InvalidValue)

    def test_joint_count_must_be_an_integer(self) -> None:
        assert_domain_error(lambda: make_config(joint_count=2.5), InvalidValue)

    @given(
        st.integers(min_value=1, max_value=10**6),
        st.floats(min_value=0.0, exclude_min=True, allow_infinity=False),
        st.floats(min_value=0.0, exclude_min=True, allow_infinity=False),
        st.floats(min_value=0.0, exclude_min=True, allow_infinity=False),
    )
    def test_any_positive_configuration_is_accepted_and_survives_json(
        self, joints: int, height: float, weight: float, velocity: float
    ) -> None:
        config = make_config(
            joint_count=joints, height_m=height, weight_kg=weight, max_joint_velocity=velocity
        )
        assert RobotConfiguration.from_json(config.to_json()) == config

    @pytest.mark.parametrize(
        "extra",
        [
            {"gains": math.nan},
            {"gains": [1.0, math.inf]},
            {"deep": {"deeper": {"x": -math.inf}}},
            {"when": datetime.now(UTC)},
            {1: "not a string key"},
        ],
    )
    def test_extra_payload_must_be_finite_json(self, extra: dict[Any, Any]) -> None:
        assert_domain_error(lambda: make_config(extra=extra), InvalidValue)

    def test_extra_must_be_a_mapping(self) -> None:
        assert_domain_error(lambda: make_config(extra=[1, 2]), InvalidValue)

    def test_finite_extra_payload_is_kept(self) -> None:
        config = make_config(extra={"gains": [1.5, 2], "hands": None, "model": "g1"})
        assert RobotConfiguration.from_json(config.to_json()).extra == config.extra

    @pytest.mark.parametrize("payload", [{}, {"joint_count": 1}, {"height_m": 1.0}])
    def test_malformed_json_payload_is_refused(self, payload: dict[str, Any]) -> None:
        assert_domain_error(lambda: RobotConfiguration.from_json(payload), InvalidValue)


def build_metrics(**fields: Any) -> EpisodeMetrics:
    # Untyped on purpose: the tests hand in raw values (string keys, wrong types).
    return EpisodeMetrics(**fields)


class TestEpisodeMetrics:
    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_any_finite_reward_is_accepted(self, reward: float) -> None:
        assert EpisodeMetrics(success_rate=0.5, reward=reward).reward == reward

    @pytest.mark.parametrize("reward", [0, -5, 1e308, -1e308, math.ulp(0.0)])
    def test_extreme_finite_rewards_are_accepted(self, reward: float) -> None:
        m = EpisodeMetrics(success_rate=0.5, reward=reward)
        assert m.reward == reward
        assert isinstance(m.reward, float)

    @pytest.mark.parametrize(
        "reward",
        [*NON_FINITE, *NOT_A_NUMBER, pytest.param(-TOO_LARGE_FOR_FLOAT, id="-int-too-large")],
    )
    def test_non_finite_reward_is_refused(self, reward: Any) -> None:
        assert_domain_error(lambda: build_metrics(success_rate=0.5, reward=reward), InvalidValue)

    @pytest.mark.parametrize("rate", [0.0, 1.0, 0.5])
    def test_success_rate_in_unit_interval_is_accepted(self, rate: float) -> None:
        assert EpisodeMetrics(success_rate=rate, reward=0.0).success_rate == rate

    @pytest.mark.parametrize("rate", [below(0.0), above(1.0), *NON_FINITE, *NOT_A_NUMBER])
    def test_success_rate_outside_unit_interval_is_refused(self, rate: Any) -> None:
        assert_domain_error(lambda: build_metrics(success_rate=rate, reward=0.0), InvalidValue)

    @pytest.mark.parametrize("score", [0.0, 1.0, BEGINNER])
    def test_skill_scores_in_unit_interval_are_accepted(self, score: float) -> None:
        m = build_metrics(success_rate=0.5, reward=0.0, skill_scores={"turning": score})
        assert m.skill_scores == {SkillType.TURNING: score}

    @pytest.mark.parametrize("score", [below(0.0), above(1.0), *NON_FINITE, *NOT_A_NUMBER])
    def test_skill_score_outside_unit_interval_is_refused(self, score: Any) -> None:
        assert_domain_error(
            lambda: build_metrics(success_rate=0.5, reward=0.0, skill_scores={"turning": score}),
            InvalidValue,
        )

    def test_unknown_skill_in_scores_is_refused(self) -> None:
        assert_domain_error(
            lambda: build_metrics(success_rate=0.5, reward=0.0, skill_scores={"flying": 0.5}),
            InvalidValue,
        )

    @pytest.mark.parametrize("scores", [None, [0.5], "turning"])
    def test_skill_scores_must_be_a_mapping(self, scores: Any) -> None:
        assert_domain_error(
            lambda: build_metrics(success_rate=0.5, reward=0.0, skill_scores=scores),
            InvalidValue,
        )

    @pytest.mark.parametrize(
        "details",
        [
            {"x": math.nan},
            {"x": [0.0, [math.inf]]},
            {"a": {"b": {"c": -math.inf}}},
            {"x": {1, 2}},
        ],
    )
    def test_details_anywhere_non_finite_or_non_json_are_refused(
        self, details: dict[str, Any]
    ) -> None:
        assert_domain_error(
            lambda: build_metrics(success_rate=0.5, reward=0.0, details=details), InvalidValue
        )

    def test_details_must_be_a_mapping(self) -> None:
        assert_domain_error(
            lambda: build_metrics(success_rate=0.5, reward=0.0, details=[1]), InvalidValue
        )

    def test_survives_json(self) -> None:
        m = build_metrics(
            success_rate=0.25,
            reward=-3.5,
            skill_scores={"turning": 0.4, SkillType.SPEED_CONTROL: 1.0},
            details={"steps": 120, "falls": [1, 2], "note": "windy"},
        )
        assert EpisodeMetrics.from_json(m.to_json()) == m

    @pytest.mark.parametrize("payload", [{}, {"reward": 1.0}, {"success_rate": 0.5}])
    def test_malformed_json_payload_is_refused(self, payload: dict[str, Any]) -> None:
        assert_domain_error(lambda: EpisodeMetrics.from_json(payload), InvalidValue)


@given(
    score=st.floats(0, 1),
    confidence=st.floats(0, 1),
    evidence=st.floats(0, 1),
    skill=st.sampled_from(list(SkillType)),
)
def test_a_restored_assessment_equals_the_one_that_was_stored(
    score: float, confidence: float, evidence: float, skill: SkillType
) -> None:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    made = SkillAssessment("a1", skill, score, confidence, evidence, at)
    restored = SkillAssessment.restored("a1", skill, score, confidence, evidence, at)
    assert restored == made
    assert hash(restored) == hash(made)
    assert restored.level == made.level and restored.reliable == made.reliable
    with pytest.raises(dataclasses.FrozenInstanceError):
        restored.score = 0.0  # type: ignore[misc]


def test_a_copied_robot_shares_its_immutable_assessments_but_not_its_history() -> None:
    robot = HumanoidRobot.create("Atlas", id="r1")
    robot.assess(SkillAssessment("a1", SkillType.POSTURAL_CONTROL, 0.5, 0.9, 0.9))
    twin = copy.deepcopy(robot)
    assert twin == robot
    assert twin.history[0] is robot.history[0]
    twin.assess(SkillAssessment("a2", SkillType.POSTURAL_CONTROL, 0.9, 0.9, 0.9))
    assert len(robot.history) == 1 and robot.skills[SkillType.POSTURAL_CONTROL] == 0.5
