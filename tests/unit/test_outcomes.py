"""Which answers of an operation the executor may compare: values compared by value are, an
object its class compares by identity (no __eq__) is not, wherever it sits in the answer."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from uowstress.stateful.executor import _by_identity


class Handle:
    def __init__(self, key: str) -> None:
        self.key = key


class Colour(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    ("value", "by_identity"),
    [
        (None, False),
        ("r1", False),
        (3, False),
        (Decimal("9.00"), False),
        (datetime(2026, 1, 1, tzinfo=UTC), False),
        ({"a", "b"}, False),
        (Colour.RED, False),
        ({"robots": ["r1", 2.5]}, False),
        (Handle("r1"), True),
        ([1, Handle("r1")], True),
        ({"robot": Handle("r1")}, True),
    ],
)
def test_objects_compared_by_identity_are_told_apart(value: Any, by_identity: bool) -> None:
    assert _by_identity(value) is by_identity
