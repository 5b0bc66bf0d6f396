"""Domain events: each is raised by the action that should raise it, never by a refused one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from humanoid_training.domain import (
    EVENT_TYPES,
    CurriculumError,
    CurriculumPlan,
    CurriculumStage,
    CurriculumStageAdvanced,
    DomainError,
    DomainEvent,
    EpisodeCompleted,
    EpisodeInProgress,
    InvalidTransition,
    InvalidValue,
    PrerequisiteNotMet,
    SessionCompleted,
    SessionStarted,
    SkillAssessed,
    SkillMastered,
    SkillType,
)
from humanoid_training.domain.aggregate import Aggregate
from tests.unit.domain.support import (
    EXPERT,
    assert_refused,
    assessment,
    below,
    make_robot,
    metrics,
    session_in,
)


def test_the_six_event_types_of_the_spec() -> None:
    assert set(EVENT_TYPES) == {
        "EpisodeCompleted",
        "SkillAssessed",
        "SkillMastered",
        "CurriculumStageAdvanced",
        "SessionStarted",
        "SessionCompleted",
    }
    for name, cls in EVENT_TYPES.items():
        assert cls.__name__ == name and issubclass(cls, DomainEvent)


def new_events(aggregate: Aggregate, action: Callable[[], object]) -> list[DomainEvent]:
    before = len(aggregate.events)
    action()
    return aggregate.events[before:]


class TestRobotEvents:
    def test_assess_raises_skill_assessed(self) -> None:
        robot = make_robot()
        a = assessment("postural_control", 0.3)
        [event] = new_events(robot, lambda: robot.assess(a))
        assert isinstance(event, SkillAssessed)
        assert (event.aggregate_id, event.assessment_id, event.skill, event.score) == (
            robot.id,
            a.id,
            "postural_control",
            0.3,
        )

    def test_a_lower_score_is_still_assessed_but_not_mastered(self) -> None:
        robot = make_robot({"postural_control": 0.95})
        events = new_events(robot, lambda: robot.assess(assessment("postural_control", 0.9)))
        assert [e.name for e in events] == ["SkillAssessed"]

    @pytest.mark.parametrize("score", [EXPERT, 1.0])
    def test_reaching_expert_raises_skill_mastered_after_skill_assessed(self, score: float) -> None:
        robot = make_robot()
        events = new_events(robot, lambda: robot.assess(assessment("postural_control", score)))
        assert [e.name for e in events] == ["SkillAssessed", "SkillMastered"]
        mastered = events[1]
        assert isinstance(mastered, SkillMastered)
        assert (mastered.aggregate_id, mastered.skill, mastered.score) == (
            robot.id,
            "postural_control",
            score,
        )

    def test_just_below_expert_is_not_mastered(self) -> None:
        robot = make_robot()
        events = new_events(
            robot, lambda: robot.assess(assessment("postural_control", below(EXPERT)))
        )
        assert [e.name for e in events] == ["SkillAssessed"]

    def test_skill_mastered_is_raised_once_per_skill(self) -> None:
        robot = make_robot()
        for score in (0.3, 0.9, 0.95, 0.9, 1.0, EXPERT):
            robot.assess(assessment("postural_control", score))
        robot.assess(assessment("static_balance", 0.99))
        mastered = [e for e in robot.events if isinstance(e, SkillMastered)]
        assert [(e.skill, e.score) for e in mastered] == [
            ("postural_control", 0.9),
            ("static_balance", 0.99),
        ]

    @given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=25))
    def test_skill_mastered_comes_with_the_first_expert_score(self, scores: list[float]) -> None:
        robot = make_robot()
        mastered_at: list[int] = []
        for i, score in enumerate(scores):
            if any(
                isinstance(e, SkillMastered)
                for e in new_events(
                    robot, partial(robot.assess, assessment("postural_control", score))
                )
            ):
                mastered_at.append(i)
        first_expert = next((i for i, s in enumerate(scores) if s >= EXPERT), None)
        assert mastered_at == ([] if first_expert is None else [first_expert])
        assert sum(isinstance(e, SkillAssessed) for e in robot.events) == len(scores)

    def test_refused_assessments_raise_nothing(self) -> None:
        robot = make_robot()
        robot.assess(assessment("postural_control", 0.9, id="seen"))
        assert_refused(robot, lambda: robot.assess(assessment("turning", 1.0)), PrerequisiteNotMet)
        assert_refused(
            robot,
            lambda: robot.assess(assessment("postural_control", 1.0, id="seen")),
            InvalidValue,
        )
        assert_refused(
            robot,
            lambda: robot.assess_many(
                [assessment("static_balance", 1.0), assessment("forward_walking", 1.0)]
            ),
            PrerequisiteNotMet,
        )
        assert [e.name for e in robot.events] == ["SkillAssessed", "SkillMastered"]

    def test_rename_and_reconfigure_raise_nothing(self) -> None:
        robot = make_robot()
        robot.rename("Other")
        robot.reconfigure(robot.configuration)
        assert robot.events == []


class TestSessionEvents:
    def test_start_raises_session_started(self) -> None:
        session = session_in("created")
        [event] = new_events(session, session.start)
        assert isinstance(event, SessionStarted)
        assert (event.aggregate_id, event.robot_id) == (session.id, "robot-1")

    def test_complete_episode_raises_episode_completed(self) -> None:
        session = session_in("active")
        episode = session.new_episode()
        session.start_episode()
        [event] = new_events(
            session, lambda: session.complete_episode("partial_success", -1.5, metrics())
        )
        assert isinstance(event, EpisodeCompleted)
        assert (event.aggregate_id, event.episode_id, event.outcome, event.reward) == (
            session.id,
            episode.id,
            "partial_success",
            -1.5,
        )

    def test_complete_raises_session_completed_with_the_counters(self) -> None:
        session = session_in("active")
        for outcome in ("success", "failure", "partial_success"):
            session.new_episode()
            session.start_episode()
            session.complete_episode(outcome, 0.0, metrics())
        session.new_episode()
        session.start_episode()
        session.fail_episode()
        [event] = new_events(session, session.complete)
        assert isinstance(event, SessionCompleted)
        assert (event.robot_id, event.episodes_completed, event.episodes_successful) == (
            "robot-1",
            3,
            2,
        )

    def test_actions_without_an_event_of_their_own_raise_nothing(self) -> None:
        session = session_in("active")
        quiet: list[Callable[[], object]] = [
            session.new_episode,
            session.start_episode,
            session.fail_episode,
            session.new_episode,
            session.start_episode,
            session.pause,  # terminates the running episode: not an EpisodeCompleted
            session.resume,
            session.fail,
        ]
        for action in quiet:
            assert new_events(session, action) == []
        assert [e.name for e in session.events] == ["SessionStarted"]

    def test_refused_actions_raise_nothing(self) -> None:
        refusals: list[tuple[str, Callable[..., object], type[DomainError]]] = [
            ("active", lambda s: s.start(), InvalidTransition),
            ("completed", lambda s: s.start(), InvalidTransition),
            ("created", lambda s: s.complete(), InvalidTransition),
            ("failed", lambda s: s.complete(), InvalidTransition),
            ("active", lambda s: s.complete_episode("success", 1.0, metrics()), InvalidTransition),
        ]
        for status, call, error in refusals:
            session = session_in(status)
            assert_refused(session, partial(call, session), error)

    def test_refused_completions_with_work_in_progress_raise_nothing(self) -> None:
        session = session_in("active")
        session.new_episode()
        assert_refused(session, session.complete, EpisodeInProgress)
        session.start_episode()
        assert_refused(session, session.complete, EpisodeInProgress)
        assert_refused(
            session,
            lambda: session.complete_episode("success", float("nan"), metrics()),
            InvalidValue,
        )
        assert [e.name for e in session.events] == ["SessionStarted"]


class TestPlanEvents:
    def plan(self) -> CurriculumPlan:
        plan = CurriculumPlan(robot_id="r", name="p")
        for name in ("a", "b"):
            plan.add_stage(
                CurriculumStage(
                    name=name,
                    target_skills=(SkillType.POSTURAL_CONTROL,),
                    min_episodes=1,
                    target_success_rate=1.0,
                )
            )
        plan.activate()
        return plan

    def test_advance_raises_curriculum_stage_advanced(self) -> None:
        plan = self.plan()
        ready = {SkillType.POSTURAL_CONTROL: 0.5}
        plan.record_episode(True)
        [first] = new_events(plan, lambda: plan.advance(ready))
        plan.record_episode(True)
        [last] = new_events(plan, lambda: plan.advance(ready))
        assert isinstance(first, CurriculumStageAdvanced)
        assert isinstance(last, CurriculumStageAdvanced)
        assert (first.aggregate_id, first.from_stage, first.to_stage, first.completed) == (
            plan.id,
            0,
            1,
            False,
        )
        assert (last.from_stage, last.to_stage, last.completed) == (1, 1, True)

    def test_refused_advances_and_other_actions_raise_nothing(self) -> None:
        plan = self.plan()
        ready = {SkillType.POSTURAL_CONTROL: 0.5}
        assert_refused(plan, lambda: plan.advance(ready), CurriculumError)
        plan.record_episode(False)
        assert_refused(plan, lambda: plan.advance(ready), CurriculumError)
        assert plan.events == []


def test_each_aggregate_collects_its_own_events_and_leaves_its_version_alone() -> None:
    robot = make_robot()
    session = session_in("created")
    plan = CurriculumPlan(robot_id=robot.id, name="p")
    plan.add_stage(
        CurriculumStage(
            name="a",
            target_skills=(SkillType.POSTURAL_CONTROL,),
            min_episodes=0,
            target_success_rate=0.0,
        )
    )
    plan.activate()
    robot.assess(assessment("postural_control", 0.5))
    session.start()
    plan.advance(robot.skills)
    # The version is the persistence layer's to increment, on commit.
    for aggregate, kind in ((robot, "robot"), (session, "session"), (plan, "plan")):
        assert aggregate.version == 0
        assert len(aggregate.events) == 1
        assert all(e.aggregate_id == aggregate.id for e in aggregate.events)
        assert all(e.aggregate_type == kind for e in aggregate.events)


class TestEventShape:
    def events(self) -> list[DomainEvent]:
        robot = make_robot()
        robot.assess(assessment("postural_control", 0.9))
        session = session_in("active")
        session.new_episode()
        session.start_episode()
        session.complete_episode("success", 2.5, metrics())
        session.complete()
        plan = CurriculumPlan(robot_id="r", name="p")
        plan.add_stage(
            CurriculumStage(
                name="a",
                target_skills=(SkillType.POSTURAL_CONTROL,),
                min_episodes=0,
                target_success_rate=0.0,
            )
        )
        plan.activate()
        plan.advance({SkillType.POSTURAL_CONTROL: 0.5})
        return [*robot.events, *session.events, *plan.events]

    def test_every_event_type_is_raised_by_some_action(self) -> None:
        assert {e.name for e in self.events()} == set(EVENT_TYPES)

    def test_identity_time_and_payload(self) -> None:
        events = self.events()
        assert len({e.event_id for e in events}) == len(events)
        expected_type = {
            "SkillAssessed": "robot",
            "SkillMastered": "robot",
            "EpisodeCompleted": "session",
            "SessionStarted": "session",
            "SessionCompleted": "session",
            "CurriculumStageAdvanced": "plan",
        }
        for event in events:
            assert event.occurred_at.tzinfo is not None
            assert event.occurred_at.utcoffset() == UTC.utcoffset(None)
            assert event.aggregate_type == expected_type[event.name]
            payload = event.payload()
            assert not {"aggregate_id", "event_id", "occurred_at"} & payload.keys()
            assert json.loads(json.dumps(payload)) == payload
            assert (
                EVENT_TYPES[event.name](
                    aggregate_id=event.aggregate_id,
                    event_id=event.event_id,
                    occurred_at=event.occurred_at,
                    **payload,
                )
                == event
            )
