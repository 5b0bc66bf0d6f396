"""What every aggregate root shares: identity, an optimistic-concurrency version, pending events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from humanoid_training.domain.events import DomainEvent


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(eq=False, kw_only=True)
class Aggregate:
    id: str = field(default_factory=new_id)
    # 0 until first saved; the persistence layer increments it on every committed change.
    version: int = 0
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    def _raise(self, event: DomainEvent) -> None:
        self.events.append(event)
