"""The LearningSession aggregate and its episodes: life cycles, limits and counters."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from humanoid_training.domain import (
    MAX_EPISODES,
    DomainError,
    EpisodeInProgress,
    EpisodeLimitReached,
    EpisodeMetrics,
    EpisodeOutcome,
    EpisodeStatus,
    InvalidTransition,
    InvalidValue,
    LearningEpisode,
    LearningSession,
    SessionStatus,
)
from tests.unit.domain.support import (
    TOO_LARGE_FOR_FLOAT,
    assert_refused,
    metrics,
    session_in,
)

STATUSES = ["created", "active", "paused", "completed", "failed"]
ACTIONS = ["start", "pause", "resume", "complete", "fail"]
# The session life cycle of docs/domain.md: created -> active -> (paused <-> active) -> completed;
# any non-completed -> failed. Failed is final as well. Every pair not listed is refused.
ALLOWED: dict[tuple[str, str], str] = {
    ("created", "start"): "active",
    ("active", "pause"): "paused",
    ("paused", "resume"): "active",
    ("active", "complete"): "completed",
    ("paused", "complete"): "completed",
    ("created", "fail"): "failed",
    ("active", "fail"): "failed",
    ("paused", "fail"): "failed",
}
TRANSITIONS = [(s, a, ALLOWED.get((s, a))) for s in STATUSES for a in ACTIONS]


def act(session: LearningSession, action: str) -> Callable[[], object]:
    method: Callable[[], object] = getattr(session, action)
    return method


@pytest.mark.parametrize(("status", "action", "after"), TRANSITIONS)
def test_session_transition_table(status: str, action: str, after: str | None) -> None:
    session = session_in(status)
    if after is None:
        assert_refused(session, act(session, action), InvalidTransition)
        assert session.status == status
    else:
        act(session, action)()
        assert session.status == after
        assert session.is_open is (after in ("active", "paused"))


def test_pause_and_resume_can_alternate() -> None:
    session = session_in("active")
    for _ in range(3):
        session.pause()
        assert session.status == "paused"
        session.resume()
        assert session.status == "active"
    session.complete()
    assert session.status == "completed"


def session_with_episode(state: str) -> LearningSession:
    """An active session whose last episode is in `state`, reached through the actions."""
    session = session_in("active")
    session.new_episode()
    if state == "pending":
        return session
    session.start_episode()
    if state == "completed":
        session.complete_episode("success", 1.0, metrics())
    elif state == "failed":
        session.fail_episode()
    elif state == "terminated":
        session.pause()
        session.resume()
    assert session.episodes[-1].status == state
    return session


class TestComplete:
    @pytest.mark.parametrize("state", ["pending", "running"])
    def test_refused_while_an_episode_is_in_progress(self, state: str) -> None:
        session = session_with_episode(state)
        assert_refused(session, session.complete, EpisodeInProgress)

    def test_refused_while_paused_with_a_pending_episode(self) -> None:
        session = session_with_episode("pending")
        session.pause()
        assert session.episodes[-1].status == "pending"
        assert_refused(session, session.complete, EpisodeInProgress)

    @pytest.mark.parametrize("state", ["completed", "failed", "terminated"])
    def test_allowed_once_every_episode_has_ended(self, state: str) -> None:
        session = session_with_episode(state)
        session.complete()
        assert session.status == "completed"


class TestPause:
    def test_pause_terminates_the_running_episode(self) -> None:
        session = session_with_episode("running")
        episode = session.episodes[-1]
        assert episode.ended_at is None
        session.pause()
        assert episode.status == "terminated"
        assert episode.ended_at is not None
        assert session.current_episode is None
        # A terminated episode is not completed: the counters do not move.
        assert (session.episodes_completed, session.episodes_successful) == (0, 0)

    def test_pause_leaves_a_pending_episode_pending(self) -> None:
        session = session_with_episode("pending")
        session.pause()
        assert session.episodes[-1].status == "pending"
        session.resume()
        session.start_episode()
        assert session.episodes[-1].status == "running"

    def test_pause_does_not_touch_ended_episodes(self) -> None:
        session = session_with_episode("completed")
        before = list(session.episodes)
        session.pause()
        assert session.episodes == before


class TestFail:
    @pytest.mark.parametrize("state", ["pending", "running"])
    def test_fail_ends_the_episode_in_progress(self, state: str) -> None:
        session = session_with_episode(state)
        session.fail()
        assert session.status == "failed"
        assert session.episodes[-1].status == "terminated"
        assert session.current_episode is None


class TestNewEpisode:
    @pytest.mark.parametrize("status", STATUSES)
    def test_only_while_active(self, status: str) -> None:
        session = session_in(status)
        if status == "active":
            episode = session.new_episode()
            assert episode.status == "pending" and episode.number == 1
            assert session.episodes == [episode]
        else:
            assert_refused(session, session.new_episode, InvalidTransition)

    @pytest.mark.parametrize("state", ["pending", "running"])
    def test_refused_while_an_episode_is_in_progress(self, state: str) -> None:
        session = session_with_episode(state)
        assert_refused(session, session.new_episode, EpisodeInProgress)

    @pytest.mark.parametrize("state", ["completed", "failed", "terminated"])
    def test_allowed_once_the_last_episode_has_ended(self, state: str) -> None:
        session = session_with_episode(state)
        episode = session.new_episode("my-episode")
        assert (episode.id, episode.number, episode.status) == ("my-episode", 2, "pending")

    def test_at_most_1000_episodes(self) -> None:
        assert MAX_EPISODES == 1000
        # Reloading a session with 999 ended episodes is much faster than playing them.
        ended = [
            LearningEpisode(id=f"e{n}", number=n, status=EpisodeStatus.FAILED)
            for n in range(1, 1000)
        ]
        session = LearningSession(robot_id="robot-1", status=SessionStatus.ACTIVE, episodes=ended)
        last = session.new_episode()
        assert last.number == 1000
        session.start_episode()
        session.fail_episode()
        assert len(session.episodes) == 1000
        assert_refused(session, session.new_episode, EpisodeLimitReached)


EPISODE_STATES = ["pending", "running", "completed", "failed", "terminated"]
EPISODE_ACTIONS = ["start_episode", "complete_episode", "fail_episode"]
# pending -> running -> completed | failed | terminated (terminated comes from pause).
EPISODE_ALLOWED = {
    ("pending", "start_episode"): "running",
    ("running", "complete_episode"): "completed",
    ("running", "fail_episode"): "failed",
}


def episode_action(session: LearningSession, action: str) -> Callable[[], object]:
    if action == "complete_episode":
        return lambda: session.complete_episode("partial_success", 0.5, metrics())
    return act(session, action)


@pytest.mark.parametrize(
    ("state", "action", "after"),
    [(s, a, EPISODE_ALLOWED.get((s, a))) for s in EPISODE_STATES for a in EPISODE_ACTIONS],
)
def test_episode_transition_table(state: str, action: str, after: str | None) -> None:
    session = session_with_episode(state)
    if after is None:
        assert_refused(session, episode_action(session, action), InvalidTransition)
    else:
        episode = episode_action(session, action)()
        assert isinstance(episode, LearningEpisode)
        assert episode is session.episodes[-1]
        assert episode.status == after


@pytest.mark.parametrize("action", EPISODE_ACTIONS)
def test_episode_actions_are_refused_outside_an_active_session(action: str) -> None:
    session = session_with_episode("pending")
    session.pause()
    assert_refused(session, episode_action(session, action), InvalidTransition)


class TestCompleteEpisode:
    @pytest.mark.parametrize(
        ("outcome", "successful"),
        [("success", 1), ("partial_success", 1), ("failure", 0)],
    )
    def test_outcome_counts(self, outcome: str, successful: int) -> None:
        session = session_with_episode("running")
        m = EpisodeMetrics(success_rate=0.3, reward=-2.0)
        episode = session.complete_episode(outcome, -2, m)
        assert episode.outcome == outcome
        assert episode.reward == -2.0 and isinstance(episode.reward, float)
        assert episode.metrics == m
        assert episode.started_at is not None and episode.ended_at is not None
        assert episode.started_at <= episode.ended_at
        assert (session.episodes_completed, session.episodes_successful) == (1, successful)

    @pytest.mark.parametrize(
        ("outcome", "reward", "episode_metrics"),
        [
            ("great", 1.0, metrics()),
            (None, 1.0, metrics()),
            ("success", math.nan, metrics()),
            ("success", math.inf, metrics()),
            ("success", -math.inf, metrics()),
            pytest.param("success", TOO_LARGE_FOR_FLOAT, metrics(), id="int-too-large-for-float"),
            ("success", True, metrics()),
            ("success", "1.0", metrics()),
            ("success", 1.0, {"success_rate": 1.0, "reward": 1.0}),
            ("success", 1.0, None),
        ],
    )
    def test_invalid_arguments_are_refused(
        self, outcome: Any, reward: Any, episode_metrics: Any
    ) -> None:
        session = session_with_episode("running")
        assert_refused(
            session,
            lambda: session.complete_episode(outcome, reward, episode_metrics),
            InvalidValue,
        )


SESSION_ACTIONS = [
    "start",
    "pause",
    "resume",
    "complete",
    "fail",
    "new_episode",
    "start_episode",
    "complete_episode",
    "fail_episode",
]
outcomes = st.sampled_from(["success", "partial_success", "failure"])
finite_rewards = st.floats(allow_nan=False, allow_infinity=False)


class SessionMachine(RuleBasedStateMachine):
    """Random valid and invalid actions, each checked against an independent model.

    `any_action` tries any action in any state (mostly refusals). The preconditioned rules take
    only allowed steps that move episodes forward, so that runs complete many episodes before
    the session ends (ending and pausing come from `any_action` alone, hence less often).
    """

    def __init__(self) -> None:
        super().__init__()
        self.new_session()

    def new_session(self) -> None:
        self.session = LearningSession(robot_id="robot-1")
        self.status = "created"
        self.states: list[str] = []  # one per episode
        self.outcomes: list[str | None] = []
        self.event_names: list[str] = []

    def in_progress(self) -> bool:
        return any(s in ("pending", "running") for s in self.states)

    def last_state(self) -> str | None:
        return self.states[-1] if self.states else None

    def refusal(self, action: str) -> type[DomainError] | None:
        """What the model says the action must raise; None when it is allowed."""
        status, last = self.status, self.last_state()
        allowed = {
            "start": status == "created",
            "pause": status == "active",
            "resume": status == "paused",
            "fail": status in ("created", "active", "paused"),
            "start_episode": status == "active" and last == "pending",
            "complete_episode": status == "active" and last == "running",
            "fail_episode": status == "active" and last == "running",
        }
        if action == "complete":
            if status not in ("active", "paused"):
                return InvalidTransition
            return EpisodeInProgress if self.in_progress() else None
        if action == "new_episode":
            if status != "active":
                return InvalidTransition
            if self.in_progress():
                return EpisodeInProgress
            return EpisodeLimitReached if len(self.states) >= MAX_EPISODES else None
        return None if allowed[action] else InvalidTransition

    def perform(self, action: str, outcome: str = "success", reward: float = 0.0) -> None:
        call: Callable[[], object] = (
            partial(self.session.complete_episode, outcome, reward, metrics())
            if action == "complete_episode"
            else getattr(self.session, action)
        )
        refusal = self.refusal(action)
        if refusal is not None:
            assert_refused(self.session, call, refusal)
            return
        call()
        if action in ("start", "resume"):
            self.status = "active"
        elif action == "pause":
            self.status = "paused"
            self.states = ["terminated" if s == "running" else s for s in self.states]
        elif action == "complete":
            self.status = "completed"
        elif action == "fail":
            self.status = "failed"
            self.states = ["terminated" if s in ("pending", "running") else s for s in self.states]
        elif action == "new_episode":
            self.states.append("pending")
            self.outcomes.append(None)
        elif action == "start_episode":
            self.states[-1] = "running"
        elif action == "complete_episode":
            self.states[-1] = "completed"
            self.outcomes[-1] = outcome
        elif action == "fail_episode":
            self.states[-1] = "failed"
        event = {
            "start": "SessionStarted",
            "complete": "SessionCompleted",
            "complete_episode": "EpisodeCompleted",
        }.get(action)
        if event:
            self.event_names.append(event)

    @rule(action=st.sampled_from(SESSION_ACTIONS), outcome=outcomes, reward=finite_rewards)
    def any_action(self, action: str, outcome: str, reward: float) -> None:
        self.perform(action, outcome, reward)

    @precondition(lambda self: self.status in ("completed", "failed"))
    @rule()
    def fresh_session(self) -> None:
        self.new_session()

    @precondition(lambda self: self.refusal("start") is None)
    @rule()
    def start(self) -> None:
        self.perform("start")

    @precondition(lambda self: self.refusal("resume") is None)
    @rule()
    def resume(self) -> None:
        self.perform("resume")

    @precondition(lambda self: self.refusal("new_episode") is None)
    @rule()
    def new_episode(self) -> None:
        self.perform("new_episode")

    @precondition(lambda self: self.refusal("start_episode") is None)
    @rule()
    def start_episode(self) -> None:
        self.perform("start_episode")

    @precondition(lambda self: self.refusal("complete_episode") is None)
    @rule(outcome=outcomes, reward=finite_rewards)
    def complete_episode(self, outcome: str, reward: float) -> None:
        self.perform("complete_episode", outcome, reward)

    @precondition(lambda self: self.refusal("fail_episode") is None)
    @rule()
    def fail_episode(self) -> None:
        self.perform("fail_episode")

    @precondition(lambda self: self.refusal("complete_episode") is None)
    @rule(reward=st.sampled_from([math.nan, math.inf, -math.inf]))
    def complete_episode_with_a_non_finite_reward(self, reward: float) -> None:
        call = partial(self.session.complete_episode, "success", reward, metrics())
        assert_refused(self.session, call, InvalidValue)

    @invariant()
    def counters_equal_what_the_episodes_say(self) -> None:
        episodes = self.session.episodes
        completed = [e for e in episodes if e.status is EpisodeStatus.COMPLETED]
        successful = [
            e
            for e in completed
            if e.outcome in (EpisodeOutcome.SUCCESS, EpisodeOutcome.PARTIAL_SUCCESS)
        ]
        assert self.session.episodes_completed == len(completed)
        assert self.session.episodes_successful == len(successful)

    @invariant()
    def session_matches_the_model(self) -> None:
        episodes = self.session.episodes
        assert self.session.status == self.status
        assert [e.status.value for e in episodes] == self.states
        assert [e.outcome for e in episodes] == self.outcomes
        assert [e.number for e in episodes] == list(range(1, len(episodes) + 1))
        assert sum(e.in_progress for e in episodes) <= 1
        assert [e.name for e in self.session.events] == self.event_names


SessionMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_session_state_machine = SessionMachine.TestCase
