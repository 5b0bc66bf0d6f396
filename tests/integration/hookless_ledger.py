"""The example ledger with a Unit of Work that takes the fault hook and never calls it, as a
user's own Unit of Work may: uowstress must still inject its statement and commit faults.

Options on top of the ledger's `unsafe_commit`: `swallow_errors=1` makes the commit swallow any
error (it rolls back and reports success).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.ledger import FaultHook, LedgerSystem, LedgerTarget, SqlWork
from sqlalchemy import Engine

from uowstress.target import Target


class HooklessWork(SqlWork):
    def __init__(self, engine: Engine, unsafe: bool, swallow: bool) -> None:
        super().__init__(engine, unsafe, hook=None)  # the hook is taken, and dropped
        self.swallow = swallow

    def commit(self) -> None:
        if not self.swallow:
            super().commit()
            return
        try:
            super().commit()
        except Exception:
            self.rollback()  # Deliberately wrong: the caller is told the commit succeeded.


class HooklessSystem(LedgerSystem):
    def __init__(self, engine: Engine, unsafe: bool, swallow: bool) -> None:
        super().__init__(engine, unsafe)
        self.swallow = swallow

    def unit_of_work(self, fault_hook: FaultHook | None = None) -> HooklessWork:
        return HooklessWork(self.engine, self.unsafe, self.swallow)


class HooklessTarget(LedgerTarget):
    name = "hookless-ledger"
    options: Mapping[str, str] = {
        **LedgerTarget.options,
        "swallow_errors": "1: the commit swallows any error and reports success; default 0",
    }

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> Any:
        chosen = dict(options)
        swallow = chosen.pop("swallow_errors", "0")
        if swallow not in ("0", "1"):
            raise ValueError(f"swallow_errors is 0 or 1, not {swallow!r}")
        base = super().connect(url, chosen, isolation_level=isolation_level)
        return HooklessSystem(base.engine, base.unsafe, swallow == "1")


TARGET: Target = HooklessTarget()
