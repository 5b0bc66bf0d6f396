"""How figures are written in the reports: durations, rates, memory, counts.

Shared by the Markdown and HTML renderers, the insights and the comparison table, so that one
figure reads the same everywhere.
"""

from __future__ import annotations

import math

__all__ = ["count", "duration", "megabytes", "number", "percent", "ratio", "signed_percent"]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def duration(seconds: float | None) -> str:
    """``0.00123`` -> ``1.23 ms``; three significant figures, the unit chosen by size."""
    if not _finite(seconds):
        return "n/a"
    assert seconds is not None
    size = abs(seconds)
    if size == 0:
        return "0 s"
    if size < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if size < 1:
        return f"{seconds * 1e3:.3g} ms"
    if size < 100:
        return f"{seconds:.3g} s"
    return f"{seconds:,.0f} s"


def percent(fraction: float | None, digits: int = 1) -> str:
    """``0.525`` -> ``52.5 %``."""
    if not _finite(fraction):
        return "n/a"
    assert fraction is not None
    return f"{fraction * 100:.{digits}f} %"


def signed_percent(fraction: float | None) -> str:
    """``0.25`` -> ``+25.0 %``; a relative change."""
    if not _finite(fraction):
        return "n/a"
    assert fraction is not None
    shown = round(fraction * 100, 1) + 0.0  # no "-0.0 %"
    if shown == 0 and fraction != 0:
        # Too small for one decimal: one significant digit keeps the direction it went.
        return f"{fraction * 100:+.1g} %"
    return f"{shown:+.1f} %"


def shortened(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters, an ellipsis saying it was."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def megabytes(mb: float | None) -> str:
    if not _finite(mb):
        return "n/a"
    assert mb is not None
    return f"{mb:,.1f} MB"


def number(value: float | None) -> str:
    """A figure without unit: integers as such, others with three significant figures."""
    if not _finite(value):
        return "n/a"
    assert value is not None
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def count(value: int | float | None) -> str:
    if value is None:
        return "n/a"
    return f"{int(value):,}"


def counted(value: int, word: str) -> str:
    """``1, "kill"`` -> ``1 kill``; ``2, "kill"`` -> ``2 kills``."""
    return f"{count(value)} {word}{'' if value == 1 else 's'}"


def ratio(value: float | None) -> str:
    """``2.13`` -> ``2.1x``."""
    if not _finite(value):
        return "n/a"
    assert value is not None
    return f"{value:.1f}x"
