"""The report of a run: the model (model.py), its renderers (Markdown, JSON, HTML), insights
and recommendations, regressions against a baseline, and the run history.

The runner builds a ``Report`` and calls ``analyse`` then ``write_reports`` (report/output.py).
They are imported on first use: the pytest plugin imports the model, and should not pay for
the charting and statistics libraries in every test session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uowstress.report.output import FORMATS, REPORT_NAMES, analyse, write_reports

__all__ = ["FORMATS", "REPORT_NAMES", "analyse", "write_reports"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from uowstress.report import output

        return getattr(output, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
