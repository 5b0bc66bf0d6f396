"""The report as one self-contained HTML page: every style and script inline, so it opens
offline from an artifact store or a mail attachment.

The page is a Jinja2 template with autoescaping on: every string of the report is escaped when
it is written, whatever its source (a robot name inside a reproducer step, an error message of
the system under test, a target option). The only unescaped inserts are plotly.js itself and
the charts' JSON, which ``charts.chart_json`` makes safe inside a script element.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
import plotly.offline  # type: ignore[import-untyped]
from markupsafe import Markup

from uowstress.report import charts, views
from uowstress.report import formatting as fmt
from uowstress.report.history import History, database_id, scenario_key, scenario_name, trend
from uowstress.report.model import MachineRun, Report, ScenarioResult

__all__ = ["TREND_METRICS", "render_html"]

#: Metrics the page follows across the runs of the history, when there is one.
TREND_METRICS = ("p95_s", "ops_per_second")


@dataclass(frozen=True)
class _Figure:
    chart: charts.Chart
    json: Markup


@dataclass(frozen=True)
class _ScenarioSection:
    result: ScenarioResult
    name: str  # the scenario with its parameters
    where: str  # its database: the backend, numbered for a run's second one of a backend
    anchor: str
    rows: list[views.MetricRow]
    scans: list[Any]
    histogram: _Figure | None


@dataclass(frozen=True)
class _MachineSection:
    run: MachineRun
    rows: list[views.MetricRow]
    steps: list[Any]


def _figure(chart: charts.Chart | None) -> _Figure | None:
    if chart is None:
        return None
    return _Figure(chart, Markup(charts.chart_json(chart)))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("uowstress.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=fmt.duration,
        percent=fmt.percent,
        signed_percent=fmt.signed_percent,
        megabytes=fmt.megabytes,
        number=fmt.number,
        count=fmt.count,
        counted=fmt.counted,
    )
    env.globals.update(machine_label=views.machine_label, machine_details=views.machine_details)
    return env


@cache
def _plotly_js() -> Markup:
    # The library's own bundle, as plotly's include_plotlyjs=True inlines it.
    return Markup(plotly.offline.get_plotlyjs())


def _trend_figures(history: History | None, report: Report) -> list[_Figure]:
    if history is None:
        return []
    runs = list(history.runs)
    if not runs or runs[-1].created_at != report.created_at:
        runs.append(report)
    if len(runs) < 2:
        return []
    ids = {scenario_key(s): s.id for s in report.scenarios}
    shown = charts.scenario_labels(report.scenarios)
    figures = []
    for metric in TREND_METRICS:
        series = {
            shown[ids[key]]: points
            for key, points in trend(runs, metric).items()
            if key in ids  # scenarios of this run only
        }
        figure = _figure(charts.trend(series, metric))
        if figure is not None:
            figures.append(figure)
    return figures


def _scenario_sections(report: Report) -> list[_ScenarioSection]:
    sections = []
    for index, result in enumerate(report.scenarios):
        anchor = f"scenario-{index}"
        sections.append(
            _ScenarioSection(
                result=result,
                name=scenario_name(result),
                where=database_id(result),
                anchor=anchor,
                rows=views.metric_rows(result),
                scans=views.full_scans(result),
                histogram=_figure(charts.histogram(result, f"chart-histogram-{index}")),
            )
        )
    return sections


def render_html(report: Report, *, history: History | None = None) -> str:
    """The page; ``history`` (earlier runs) adds trend charts when it holds another run."""
    overview = [f for f in (_figure(c) for c in charts.overview_charts(report)) if f]
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report,
        summary=report.summary,
        suite_rows=views.suite_rows(report),
        tiers=views.tier_counts(report),
        overview=overview,
        trends=_trend_figures(history, report),
        unreadable_history=[] if history is None else history.unreadable,
        scenarios=_scenario_sections(report),
        machines=[
            _MachineSection(run, views.machine_rows(run), views.machine_step_rows(run))
            for run in report.machines
        ],
        isolation=[
            (
                table,
                [
                    (cell, views.isolation_steps(cell.reproducer))
                    for cell in table.cells.values()
                    if cell.observed and cell.reproducer
                ],
            )
            for table in views.isolation_tables(report)
        ],
        plotly_js=_plotly_js(),
    )
