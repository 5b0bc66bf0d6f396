"""Switches that weaken the reference system on purpose, so a user can watch uowstress catch
real defects. All are off by default; each names the defect it lets happen."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Weakenings:
    # No version checks: updates no longer check the aggregate's version (lost updates become
    # possible), and the aggregates a unit of work only read are no longer checked at commit
    # (read skew and write skew across aggregates too).
    no_version_check: bool = False
    # start_session neither locks the robot nor bumps its version: write skew becomes possible
    # (two open sessions for one robot).
    no_session_lock: bool = False
    # Outbox events are written and committed on a separate connection before the change:
    # an event can exist for a change that was never committed.
    events_outside_transaction: bool = False
    # The Unit of Work commits what it holds even when the block or a single save failed:
    # partial batches become possible.
    commit_swallows_errors: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls, spec: str) -> Weakenings:
        """`"no_version_check,no_session_lock"` -> Weakenings with those switches on."""
        chosen = {s.strip() for s in spec.split(",") if s.strip()}
        unknown = chosen - set(cls.names())
        if unknown:
            raise ValueError(
                f"unknown weakening switch(es) {sorted(unknown)}; choose from {list(cls.names())}"
            )
        return cls(**{name: True for name in chosen})

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(name for name in self.names() if getattr(self, name))
