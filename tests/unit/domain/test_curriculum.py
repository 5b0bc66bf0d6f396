"""The CurriculumPlan aggregate and its stages: drafting, activation and advancement."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from humanoid_training.domain import (
    CurriculumError,
    CurriculumPlan,
    CurriculumStage,
    InvalidTransition,
    InvalidValue,
    PlanStatus,
    SkillType,
)
from tests.unit.domain.support import (
    INTERMEDIATE,
    NON_FINITE,
    above,
    assert_domain_error,
    assert_refused,
    below,
)

BALANCE = ("postural_control", "static_balance")


def stage(
    name: str = "balance",
    targets: tuple[str, ...] = BALANCE,
    prerequisites: tuple[str, ...] = (),
    **options: Any,
) -> CurriculumStage:
    fields: dict[str, Any] = {
        "name": name,
        "target_skills": targets,
        "prerequisite_skills": prerequisites,
        **options,
    }
    return CurriculumStage(**fields)


def easy_stage(name: str, targets: tuple[str, ...] = ("postural_control",)) -> CurriculumStage:
    """A stage that advances as soon as its target skills are intermediate."""
    return stage(name, targets, min_episodes=0, target_success_rate=0.0)


def plan_in(status: str) -> CurriculumPlan:
    plan = CurriculumPlan(robot_id="robot-1", name="walk")
    plan.add_stage(easy_stage("only"))
    if status != "draft":
        plan.activate()
    if status == "completed":
        plan.advance({SkillType.POSTURAL_CONTROL: 1.0})
    assert plan.status == status
    return plan


def skills(**scores: float) -> dict[SkillType, float]:
    return {SkillType(k): v for k, v in scores.items()}


class TestStage:
    def test_defaults(self) -> None:
        s = stage()
        assert (s.min_episodes, s.target_success_rate, s.episodes, s.successes) == (10, 0.7, 0, 0)
        assert s.target_skills == (SkillType.POSTURAL_CONTROL, SkillType.STATIC_BALANCE)

    @pytest.mark.parametrize(
        "options",
        [
            {"name": ""},
            {"name": "x" * 101},
            {"name": None},
            {"targets": ()},
            {"targets": ("flying",)},
            {"targets": None},
            {"prerequisites": ("flying",)},
            {"min_episodes": -1},
            {"min_episodes": 2.5},
            {"min_episodes": True},
            {"target_success_rate": below(0.0)},
            {"target_success_rate": above(1.0)},
            *({"target_success_rate": v} for v in NON_FINITE),
            {"target_success_rate": "0.7"},
            {"episodes": 1, "successes": 2},
            {"episodes": -1},
            {"successes": -1, "episodes": 3},
            {"episodes": "3"},
            {"episodes": 3, "successes": 1.5},
        ],
    )
    def test_invalid_stages_are_refused(self, options: dict[str, Any]) -> None:
        assert_domain_error(lambda: stage(**options), InvalidValue)

    @pytest.mark.parametrize("name", ["s", "x" * 100], ids=lambda n: f"{len(n)}-chars")
    def test_stage_names_of_1_to_100_characters(self, name: str) -> None:
        assert stage(name).name == name

    def test_success_rate_is_zero_without_episodes(self) -> None:
        assert stage().success_rate == 0.0

    def test_success_rate_is_successes_over_episodes(self) -> None:
        assert stage(episodes=8, successes=6).success_rate == 0.75


class TestPlanCreation:
    @pytest.mark.parametrize("name", ["", "x" * 101, None])
    def test_plan_name_must_have_1_to_100_characters(self, name: Any) -> None:
        assert_domain_error(lambda: CurriculumPlan(robot_id="r", name=name), InvalidValue)

    def test_new_plan_is_an_empty_draft(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="x" * 100)
        assert (plan.status, plan.stages, plan.current_stage_index) == ("draft", [], 0)
        assert plan.current_stage is None

    @pytest.mark.parametrize("index", [-1, 2, 1.0, None])
    def test_a_reloaded_stage_index_must_point_at_a_stage(self, index: Any) -> None:
        stages = [easy_stage("a"), easy_stage("b")]
        assert_domain_error(
            lambda: CurriculumPlan(
                robot_id="r", name="p", stages=stages, current_stage_index=index
            ),
            InvalidValue,
        )


class TestAddStage:
    def test_stages_are_kept_in_the_order_they_are_added(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        names = ["a", "b", "c"]
        for name in names:
            plan.add_stage(easy_stage(name))
        assert [s.name for s in plan.stages] == names

    @pytest.mark.parametrize("status", ["active", "completed"])
    def test_only_in_draft(self, status: str) -> None:
        plan = plan_in(status)
        assert_refused(plan, lambda: plan.add_stage(easy_stage("late")), InvalidTransition)

    def test_a_new_stage_must_have_no_episodes(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        used = stage(episodes=3, successes=1)
        assert_refused(plan, lambda: plan.add_stage(used), CurriculumError)

    def test_first_stage_cannot_have_prerequisites(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        needy = stage("walk", ("forward_walking",), ("dynamic_balance",))
        assert_refused(plan, lambda: plan.add_stage(needy), CurriculumError)

    def test_prerequisites_targeted_by_earlier_stages_are_accepted(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        plan.add_stage(stage("balance", ("postural_control", "static_balance")))
        plan.add_stage(stage("dynamic", ("dynamic_balance",), ("static_balance",)))
        # Any earlier stage counts, not only the one just before.
        plan.add_stage(stage("walk", ("forward_walking",), ("postural_control", "dynamic_balance")))
        assert len(plan.stages) == 3

    def test_a_prerequisite_targeted_only_by_the_same_stage_is_refused(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        plan.add_stage(easy_stage("posture"))
        selfish = stage("turn", ("turning",), ("turning",))
        assert_refused(plan, lambda: plan.add_stage(selfish), CurriculumError)

    def test_a_prerequisite_no_earlier_stage_targets_is_refused(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        plan.add_stage(easy_stage("posture"))
        plan.add_stage(stage("static", ("static_balance",), ("postural_control",)))
        # Earlier stages exist, but none targets dynamic_balance.
        late = stage("walk", ("forward_walking",), ("static_balance", "dynamic_balance"))
        assert_refused(plan, lambda: plan.add_stage(late), CurriculumError)

    def test_stage_order_matters(self) -> None:
        walk = stage("walk", ("forward_walking",), ("dynamic_balance",))
        dynamic = easy_stage("dynamic", ("dynamic_balance",))
        plan = CurriculumPlan(robot_id="r", name="p")
        assert_refused(plan, lambda: plan.add_stage(walk), CurriculumError)
        plan.add_stage(dynamic)
        plan.add_stage(walk)
        assert [s.name for s in plan.stages] == ["dynamic", "walk"]


class TestActivate:
    def test_activation_needs_a_stage(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        assert_refused(plan, plan.activate, CurriculumError)

    def test_draft_with_a_stage_activates(self) -> None:
        plan = plan_in("draft")
        plan.activate()
        assert plan.status == "active"
        assert plan.current_stage is plan.stages[0]

    @pytest.mark.parametrize("status", ["active", "completed"])
    def test_only_a_draft_activates(self, status: str) -> None:
        plan = plan_in(status)
        assert_refused(plan, plan.activate, InvalidTransition)


class TestRecordEpisode:
    def test_counts_on_the_current_stage(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        plan.add_stage(easy_stage("a"))
        plan.add_stage(easy_stage("b"))
        plan.activate()
        plan.record_episode(True)
        plan.record_episode(False)
        plan.advance(skills(postural_control=0.5))
        plan.record_episode(True)
        assert [(s.episodes, s.successes) for s in plan.stages] == [(2, 1), (1, 1)]

    @pytest.mark.parametrize("status", ["draft", "completed"])
    def test_only_in_an_active_plan(self, status: str) -> None:
        plan = plan_in(status)
        assert_refused(plan, lambda: plan.record_episode(True), InvalidTransition)


def active_plan(episodes: int, successes: int, **options: Any) -> CurriculumPlan:
    plan = CurriculumPlan(robot_id="r", name="p")
    plan.add_stage(stage(**options))
    plan.add_stage(easy_stage("next", ("dynamic_balance",)))
    plan.activate()
    for n in range(episodes):
        plan.record_episode(n < successes)
    return plan


GOOD = skills(postural_control=0.5, static_balance=0.5)


class TestAdvance:
    @pytest.mark.parametrize(
        ("episodes", "successes", "robot_skills"),
        [
            pytest.param(
                10,
                7,
                skills(postural_control=INTERMEDIATE, static_balance=INTERMEDIATE),
                id="every-condition-exactly-at-its-boundary",
            ),
            pytest.param(20, 20, skills(postural_control=1.0, static_balance=1.0), id="well-above"),
            pytest.param(10, 10, {**GOOD, SkillType.TURNING: 0.0}, id="other-skills-ignored"),
        ],
    )
    def test_advances_when_every_condition_holds(
        self, episodes: int, successes: int, robot_skills: dict[SkillType, float]
    ) -> None:
        plan = active_plan(episodes, successes)
        assert plan.ready_to_advance(robot_skills)
        plan.advance(robot_skills)
        assert (plan.current_stage_index, plan.status) == (1, "active")
        assert plan.current_stage is plan.stages[1]

    @pytest.mark.parametrize(
        ("episodes", "successes", "robot_skills"),
        [
            pytest.param(9, 9, GOOD, id="too-few-episodes"),
            pytest.param(10, 6, GOOD, id="success-rate-too-low"),
            pytest.param(20, 13, GOOD, id="success-rate-just-too-low"),
            pytest.param(10, 7, skills(postural_control=0.5), id="target-skill-unassessed"),
            pytest.param(
                10,
                7,
                skills(postural_control=below(INTERMEDIATE), static_balance=0.5),
                id="first-target-skill-below-intermediate",
            ),
            pytest.param(
                10,
                7,
                skills(postural_control=0.5, static_balance=below(INTERMEDIATE)),
                id="second-target-skill-below-intermediate",
            ),
        ],
    )
    def test_each_condition_on_its_own_blocks(
        self, episodes: int, successes: int, robot_skills: dict[SkillType, float]
    ) -> None:
        plan = active_plan(episodes, successes)
        assert not plan.ready_to_advance(robot_skills)
        assert_refused(plan, lambda: plan.advance(robot_skills), CurriculumError)

    @pytest.mark.parametrize("score", [*NON_FINITE, above(1.0), -0.5])
    def test_a_robot_score_outside_the_unit_interval_is_refused(self, score: float) -> None:
        plan = active_plan(10, 10)
        robot_skills = {**GOOD, SkillType.STATIC_BALANCE: score}
        assert_refused(plan, lambda: plan.advance(robot_skills), InvalidValue)

    def test_no_episodes_means_success_rate_zero(self) -> None:
        plan = active_plan(0, 0, min_episodes=0)
        assert plan.stages[0].success_rate == 0.0
        assert_refused(plan, lambda: plan.advance(GOOD), CurriculumError)

    def test_no_episodes_pass_a_zero_target(self) -> None:
        plan = active_plan(0, 0, min_episodes=0, target_success_rate=0.0)
        plan.advance(GOOD)
        assert plan.current_stage_index == 1

    def test_custom_thresholds(self) -> None:
        plan = active_plan(3, 2, min_episodes=3, target_success_rate=0.6)
        plan.advance(GOOD)
        assert plan.current_stage_index == 1

    @pytest.mark.parametrize("status", ["draft", "completed"])
    def test_only_an_active_plan_advances(self, status: str) -> None:
        plan = plan_in(status)
        everything = dict.fromkeys(SkillType, 1.0)
        assert not plan.ready_to_advance(everything)
        assert_refused(plan, lambda: plan.advance(everything), InvalidTransition)

    def test_advancing_past_the_last_stage_completes_the_plan(self) -> None:
        plan = CurriculumPlan(robot_id="r", name="p")
        for name in "abc":
            plan.add_stage(easy_stage(name))
        plan.activate()
        ready = skills(postural_control=0.5)
        for expected_index in (1, 2):
            plan.advance(ready)
            assert (plan.current_stage_index, plan.status) == (expected_index, "active")
        plan.advance(ready)
        assert (plan.current_stage_index, plan.status) == (2, "completed")
        assert plan.current_stage is plan.stages[-1]
        assert_refused(plan, lambda: plan.advance(ready), InvalidTransition)


@given(
    stage_count=st.integers(min_value=1, max_value=5),
    advances=st.integers(min_value=0, max_value=8),
)
def test_index_never_passes_the_last_stage(stage_count: int, advances: int) -> None:
    plan = CurriculumPlan(robot_id="r", name="p")
    for n in range(stage_count):
        plan.add_stage(easy_stage(f"s{n}"))
    plan.activate()
    ready = skills(postural_control=1.0)
    for _ in range(advances):
        if plan.status is PlanStatus.COMPLETED:
            assert_refused(plan, lambda: plan.advance(ready), InvalidTransition)
        else:
            plan.advance(ready)
        assert 0 <= plan.current_stage_index <= stage_count - 1
    assert plan.current_stage_index == min(advances, stage_count - 1)
    assert (plan.status is PlanStatus.COMPLETED) is (advances >= stage_count)


optional_scores = (
    st.none()
    | st.floats(min_value=0.0, max_value=1.0)
    | st.sampled_from([INTERMEDIATE, below(INTERMEDIATE)])
)


@given(
    min_episodes=st.integers(min_value=0, max_value=12),
    target=st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0.0, 0.5, 0.7, 1.0]),
    episodes=st.integers(min_value=0, max_value=15),
    success_share=st.floats(min_value=0.0, max_value=1.0),
    first=optional_scores,
    second=optional_scores,
)
def test_advance_iff_every_condition_holds(
    min_episodes: int,
    target: float,
    episodes: int,
    success_share: float,
    first: float | None,
    second: float | None,
) -> None:
    successes = math.floor(episodes * success_share)
    plan = active_plan(episodes, successes, min_episodes=min_episodes, target_success_rate=target)
    robot_skills = {
        skill: score
        for skill, score in (
            (SkillType.POSTURAL_CONTROL, first),
            (SkillType.STATIC_BALANCE, second),
        )
        if score is not None
    }
    rate = successes / episodes if episodes else 0.0
    expected = (
        episodes >= min_episodes
        and rate >= target
        and all(s is not None and s >= INTERMEDIATE for s in (first, second))
    )
    assert plan.ready_to_advance(robot_skills) is expected
    if expected:
        plan.advance(robot_skills)
        assert plan.current_stage_index == 1
    else:
        assert_refused(plan, lambda: plan.advance(robot_skills), CurriculumError)
