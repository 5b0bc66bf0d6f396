"""Finishing and writing a run's report: what the runner calls once it has built the Report.

    report = analyse(report, baseline=load_report(path), threshold_pct=10)
    paths = write_reports(report, Path("performance_reports"), ["all"])

``analyse`` fills in the insights, the recommendations and (given a baseline) the regressions;
``write_reports`` writes the formats asked for and keeps the run in the output folder's
history (``history/``), whose earlier runs the HTML page plots as trends.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from uowstress.errors import ReportError
from uowstress.report.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD_PCT, compare_all
from uowstress.report.history import HISTORY_LIMIT, load_history, record
from uowstress.report.html import render_html
from uowstress.report.insights import insights, recommendations
from uowstress.report.json_report import report_json
from uowstress.report.markdown import render_markdown
from uowstress.report.model import Report
from uowstress.report.passwords import hide_passwords
from uowstress.report.passwords import scrub as _scrub

__all__ = [
    "FORMATS",
    "REPORT_NAMES",
    "analyse",
    "hide_passwords",
    "without_passwords",
    "write_reports",
]

FORMATS: Final = ("markdown", "json", "html")
REPORT_NAMES: Final = {
    "markdown": "uowstress-report.md",
    "json": "uowstress-report.json",
    "html": "uowstress-report.html",
}


def without_passwords(report: Report) -> Report:
    """``report`` with the password of every URL in its text replaced by ``***``.

    Whoever builds a report hides passwords already (``uowstress.scratch.redacted``); this is
    the last guard before anything is written, for URLs inside messages and commands.
    """
    data = report.model_dump(mode="json")
    scrubbed = _scrub(data)
    return report if scrubbed == data else Report.model_validate(scrubbed)


def analyse(
    report: Report,
    *,
    baseline: Report | None = None,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    alpha: float = DEFAULT_ALPHA,
) -> Report:
    """A copy of ``report`` with insights, recommendations and regressions filled in (and
    ``summary.regressions`` and, given a baseline, ``summary.compared`` counted); the report
    given is not changed."""
    compared = report.summary.compared
    if baseline is not None:
        comparisons = compare_all(baseline, report, threshold_pct=threshold_pct, alpha=alpha)
        regressions = [c.regression() for c in comparisons if c.significant]
        # Figures of other workload sizes are shown by compare, never judged: not counted.
        compared = sum(c.verdict != "not comparable" for c in comparisons)
    else:
        regressions = list(report.regressions)
    summary = report.summary.model_copy(
        update={"regressions": sum(r.regressed for r in regressions), "compared": compared}
    )
    return report.model_copy(
        update={
            "insights": insights(report),
            "recommendations": recommendations(report),
            "regressions": regressions,
            "summary": summary,
        }
    )


def _formats(formats: Iterable[str]) -> list[str]:
    chosen: list[str] = []
    for name in formats:
        names = FORMATS if name == "all" else (name,)
        for one in names:
            if one not in FORMATS:
                raise ReportError(
                    f"unknown report format {one!r}; choose from {', '.join(FORMATS)} or all"
                )
            if one not in chosen:
                chosen.append(one)
    return chosen


def write_reports(
    report: Report,
    output_dir: Path,
    formats: Iterable[str] = ("all",),
    *,
    history: bool = True,
    history_limit: int = HISTORY_LIMIT,
) -> dict[str, Path]:
    """Write ``uowstress-report.{md,json,html}`` (those in ``formats``; ``all`` for every one)
    into ``output_dir``, and the run's entry in ``output_dir/history/``.

    Returns the paths written by format name ("markdown", "json", "html", "history").
    Passwords in URLs are hidden first (``without_passwords``). ReportError when the folder
    cannot be written.
    """
    chosen = _formats(formats)
    report = without_passwords(report)
    written: dict[str, Path] = {}
    staged: list[tuple[Path, Path]] = []  # (temporary file, report file)
    target = output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        earlier = load_history(output_dir) if history else None
        renderers: dict[str, Callable[[], str]] = {
            "markdown": lambda: render_markdown(report),
            "json": lambda: report_json(report),
            "html": lambda: render_html(report, history=earlier),
        }
        # Every report is written beside its place first and then moved in, all together:
        # a file that cannot be written leaves the earlier run's reports as they were, not a
        # mix of two runs.
        for name, render in renderers.items():
            if name not in chosen:
                continue
            target = output_dir / REPORT_NAMES[name]
            if target.is_dir():  # found now, before any report is moved in
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(target))
            temporary = output_dir / f".{target.name}.tmp"
            staged.append((temporary, target))
            temporary.write_text(render(), encoding="utf-8")
            written[name] = target
        if history:
            target = output_dir / "history"
            written["history"] = record(report, output_dir, limit=history_limit)
        for temporary, target in staged:
            temporary.replace(target)
    except OSError as error:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        if "history" in written:  # the run is not kept without its reports
            written["history"].unlink(missing_ok=True)
        raise ReportError(
            f"cannot write {target}: {error.strerror or error}; the reports were not written"
            " (those of an earlier run there are as they were): make it writable or choose"
            " another --output-dir"
        ) from None
    return written
