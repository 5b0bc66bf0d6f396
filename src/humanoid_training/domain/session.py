"""The LearningSession aggregate and its LearningEpisode entities."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from humanoid_training.domain.aggregate import Aggregate, new_id
from humanoid_training.domain.errors import (
    EpisodeInProgress,
    EpisodeLimitReached,
    InvalidTransition,
    InvalidValue,
)
from humanoid_training.domain.events import EpisodeCompleted, SessionCompleted, SessionStarted
from humanoid_training.domain.values import EpisodeMetrics, is_finite, utc_now

MAX_EPISODES = 1000


class SessionStatus(StrEnum):
    CREATED = "created"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


OPEN_STATUSES = frozenset({SessionStatus.ACTIVE, SessionStatus.PAUSED})


class EpisodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TERMINATED = "terminated"


class EpisodeOutcome(StrEnum):
    SUCCESS = "success"
    PARTIAL_SUCCESS = "partial_success"
    FAILURE = "failure"

    @property
    def successful(self) -> bool:
        return self is not EpisodeOutcome.FAILURE


@dataclass(eq=True, kw_only=True)
class LearningEpisode:
    id: str = field(default_factory=new_id)
    number: int
    status: EpisodeStatus = EpisodeStatus.PENDING
    outcome: EpisodeOutcome | None = None
    reward: float | None = None
    metrics: EpisodeMetrics | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def in_progress(self) -> bool:
        return self.status in (EpisodeStatus.PENDING, EpisodeStatus.RUNNING)

    @property
    def successful(self) -> bool:
        return self.status is EpisodeStatus.COMPLETED and bool(
            self.outcome and self.outcome.successful
        )


@dataclass(eq=False, kw_only=True)
class LearningSession(Aggregate):
    robot_id: str
    plan_id: str | None = None
    status: SessionStatus = SessionStatus.CREATED
    episodes: list[LearningEpisode] = field(default_factory=list, repr=False)
    episodes_completed: int = 0
    episodes_successful: int = 0
    created_at: datetime = field(default_factory=utc_now)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LearningSession):
            return NotImplemented
        return (
            self.id == other.id
            and self.version == other.version
            and self.robot_id == other.robot_id
            and self.plan_id == other.plan_id
            and self.status == other.status
            and self.episodes == other.episodes
            and self.episodes_completed == other.episodes_completed
            and self.episodes_successful == other.episodes_successful
            and self.created_at == other.created_at
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def is_open(self) -> bool:
        """Active or paused: the state the one-open-session-per-robot rule counts."""
        return self.status in OPEN_STATUSES

    @property
    def current_episode(self) -> LearningEpisode | None:
        for episode in reversed(self.episodes):
            if episode.in_progress:
                return episode
        return None

    def _require(self, *allowed: SessionStatus, action: str) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"cannot {action} session {self.id} while it is {self.status}"
                f" (allowed from: {', '.join(allowed)})"
            )

    def start(self) -> None:
        self._require(SessionStatus.CREATED, action="start")
        self.status = SessionStatus.ACTIVE
        self._raise(SessionStarted(aggregate_id=self.id, robot_id=self.robot_id))

    def pause(self) -> None:
        self._require(SessionStatus.ACTIVE, action="pause")
        episode = self.current_episode
        if episode is not None and episode.status is EpisodeStatus.RUNNING:
            episode.status = EpisodeStatus.TERMINATED
            episode.ended_at = utc_now()
        self.status = SessionStatus.PAUSED

    def resume(self) -> None:
        self._require(SessionStatus.PAUSED, action="resume")
        self.status = SessionStatus.ACTIVE

    def complete(self) -> None:
        self._require(SessionStatus.ACTIVE, SessionStatus.PAUSED, action="complete")
        episode = self.current_episode
        if episode is not None:
            raise EpisodeInProgress(
                f"cannot complete session {self.id}: episode {episode.number} is {episode.status}"
            )
        self.status = SessionStatus.COMPLETED
        self._raise(
            SessionCompleted(
                aggregate_id=self.id,
                robot_id=self.robot_id,
                episodes_completed=self.episodes_completed,
                episodes_successful=self.episodes_successful,
            )
        )

    def fail(self) -> None:
        self._require(
            SessionStatus.CREATED, SessionStatus.ACTIVE, SessionStatus.PAUSED, action="fail"
        )
        now = utc_now()
        for episode in self.episodes:
            if episode.in_progress:
                episode.status = EpisodeStatus.TERMINATED
                episode.ended_at = now
        self.status = SessionStatus.FAILED

    def new_episode(self, episode_id: str | None = None) -> LearningEpisode:
        self._require(SessionStatus.ACTIVE, action="add an episode to")
        current = self.current_episode
        if current is not None:
            raise EpisodeInProgress(
                f"session {self.id} already has episode {current.number} {current.status}"
            )
        if len(self.episodes) >= MAX_EPISODES:
            raise EpisodeLimitReached(
                f"session {self.id} already has {MAX_EPISODES} episodes; start a new session"
            )
        episode = LearningEpisode(id=episode_id or new_id(), number=len(self.episodes) + 1)
        self.episodes.append(episode)
        return episode

    def _episode(self, status: EpisodeStatus, action: str) -> LearningEpisode:
        episode = self.current_episode
        if episode is None or episode.status is not status:
            found = "no episode in progress" if episode is None else f"episode is {episode.status}"
            raise InvalidTransition(f"cannot {action} in session {self.id}: {found}")
        return episode

    def start_episode(self) -> LearningEpisode:
        self._require(SessionStatus.ACTIVE, action="start an episode in")
        episode = self._episode(EpisodeStatus.PENDING, "start an episode")
        episode.status = EpisodeStatus.RUNNING
        episode.started_at = utc_now()
        return episode

    def complete_episode(
        self, outcome: EpisodeOutcome | str, reward: float, metrics: EpisodeMetrics
    ) -> LearningEpisode:
        try:
            result = EpisodeOutcome(outcome)
        except ValueError:
            raise InvalidValue(f"unknown episode outcome {outcome!r}") from None
        if isinstance(reward, bool) or not isinstance(reward, int | float):
            raise InvalidValue(f"reward must be a finite number, got {reward!r}")
        if not is_finite(reward):
            raise InvalidValue(f"reward must be finite, got {reward!r}")
        if not isinstance(metrics, EpisodeMetrics):
            raise InvalidValue("metrics must be EpisodeMetrics")
        self._require(SessionStatus.ACTIVE, action="complete an episode in")
        episode = self._episode(EpisodeStatus.RUNNING, "complete an episode")
        episode.status = EpisodeStatus.COMPLETED
        episode.outcome = result
        episode.reward = float(reward)
        episode.metrics = metrics
        episode.ended_at = utc_now()
        self.episodes_completed += 1
        if result.successful:
            self.episodes_successful += 1
        self._raise(
            EpisodeCompleted(
                aggregate_id=self.id, episode_id=episode.id, outcome=str(result), reward=reward
            )
        )
        return episode

    def fail_episode(self) -> LearningEpisode:
        self._require(SessionStatus.ACTIVE, action="fail an episode in")
        episode = self._episode(EpisodeStatus.RUNNING, "fail an episode")
        episode.status = EpisodeStatus.FAILED
        episode.ended_at = utc_now()
        return episode
