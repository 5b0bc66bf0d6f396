"""The charts of the HTML report, as Plotly figures.

Plotly, because its figures are interactive (hover for the exact figure, zoom into a tail)
and plotly.js can be inlined so the page works offline. The cost is the page size: plotly.js
is about 5 MB, included once per page. Data is kept small instead: histograms and box
statistics are computed here from the samples, memory timelines are thinned, so a report of
many scenarios adds kilobytes, not megabytes, to the library.

Plotly renders a small subset of HTML in its labels (<b>, <br>, <a>); every label that comes
from the run (scenario, suite and backend names) is entity-escaped first, so it shows as the
characters it holds.
"""

from __future__ import annotations

import html
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.io as pio  # type: ignore[import-untyped]

from uowstress.report.history import database_id, scenario_name
from uowstress.report.model import Report, ScenarioResult

__all__ = [
    "Chart",
    "chart_json",
    "histogram",
    "latency_boxes",
    "memory_timelines",
    "overview_charts",
    "percentiles",
    "scalability",
    "scenario_labels",
    "trend",
]

# Points per memory timeline drawn; the JSON keeps them all.
_TIMELINE_POINTS = 400
_HISTOGRAM_BINS = 40
_LAYOUT: dict[str, Any] = {
    "template": "none",
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "hovermode": "closest",
}


@dataclass(frozen=True)
class Chart:
    """A figure and where it goes: ``id`` names its container in the page."""

    id: str
    title: str
    figure: go.Figure
    caption: str = ""


def label_text(value: str) -> str:
    """``value`` as Plotly text: its pseudo-HTML is entity-escaped, so it shows verbatim."""
    return html.escape(value, quote=False)


def scenario_labels(scenarios: Sequence[ScenarioResult]) -> dict[str, str]:
    """A short, unique, escaped label per scenario id: ``name[params] [backend]``, with the
    suite when two suites share a scenario name. Unique because Plotly draws the traces of one
    label as one category: two scenarios under one label would show as one, summed."""
    short = {s.id: f"{scenario_name(s)} [{database_id(s)}]" for s in scenarios}
    counts = Counter(short.values())
    labels: dict[str, str] = {}
    for s in scenarios:
        label = short[s.id] if counts[short[s.id]] == 1 else f"{s.suite}/{short[s.id]}"
        if label in labels.values():  # the same scenario twice (two databases of a backend)
            label = f"{label} ({s.id})"
        labels[s.id] = label
    return {key: label_text(label) for key, label in labels.items()}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {**_LAYOUT, "title": {"text": label_text(title)}, **extra}


def chart_json(chart: Chart) -> str:
    """The figure as JSON that is safe inside <script type="application/json">."""
    text: str = pio.to_json(chart.figure, validate=False, pretty=False)
    # plotly already writes "<" as \u003c; kept here so the page does not rely on it.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _ms(values: Sequence[float]) -> list[float]:
    return [round(v * 1000, 6) for v in values]


def latency_boxes(scenarios: Sequence[ScenarioResult]) -> Chart | None:
    """One box per scenario (quartiles, whiskers at 1.5 IQR, mean), samples beyond the
    whiskers as points; log scale, since tails span orders of magnitude."""
    timed = [s for s in scenarios if s.latency_samples]
    if not timed:
        return None
    labels = scenario_labels(timed)
    figure = go.Figure(layout=_layout("Transaction time per scenario (ms, log scale)"))
    for s in timed:
        samples = np.asarray(s.latency_samples, dtype=float) * 1000
        q1, median, q3 = (float(x) for x in np.percentile(samples, [25, 50, 75]))
        iqr = q3 - q1
        inside = samples[(samples >= q1 - 1.5 * iqr) & (samples <= q3 + 1.5 * iqr)]
        outliers = samples[(samples < q1 - 1.5 * iqr) | (samples > q3 + 1.5 * iqr)]
        if len(outliers) > 200:  # the extremes matter most; keep the 200 largest
            outliers = np.sort(outliers)[-200:]
        figure.add_trace(
            go.Box(
                name=labels[s.id],
                y=[labels[s.id]],
                orientation="h",
                q1=[q1],
                median=[median],
                q3=[q3],
                lowerfence=[float(inside.min())],
                upperfence=[float(inside.max())],
                mean=[float(samples.mean())],
                boxmean=True,
                showlegend=False,
                hoverinfo="x",
            )
        )
        if len(outliers):
            figure.add_trace(
                go.Scatter(
                    x=[round(float(v), 4) for v in outliers],
                    y=[labels[s.id]] * len(outliers),
                    mode="markers",
                    marker={"size": 4, "opacity": 0.5},
                    name=f"{labels[s.id]} beyond the whiskers",
                    showlegend=False,
                )
            )
    figure.update_layout(
        xaxis={"type": "log", "title": {"text": "ms"}},
        yaxis={"automargin": True, "autorange": "reversed"},
        height=max(260, 60 + 32 * len(timed)),
    )
    return Chart(
        "chart-latency",
        "Latency distribution",
        figure,
        "Box: quartiles and median, whiskers at 1.5 IQR, dashed line the mean; points are the"
        " transactions beyond the whiskers.",
    )


def percentiles(scenarios: Sequence[ScenarioResult]) -> Chart | None:
    timed = [s for s in scenarios if s.latency is not None]
    if not timed:
        return None
    labels = scenario_labels(timed)
    y = [labels[s.id] for s in timed]
    figure = go.Figure(layout=_layout("p50 / p95 / p99 transaction time (ms, log scale)"))
    for name in ("p50", "p95", "p99"):
        figure.add_trace(
            go.Bar(
                name=name,
                y=y,
                x=[round(getattr(s.latency, name) * 1000, 4) for s in timed if s.latency],
                orientation="h",
            )
        )
    figure.update_layout(
        barmode="group",
        xaxis={"type": "log", "title": {"text": "ms"}},
        yaxis={"automargin": True, "autorange": "reversed"},
        height=max(300, 60 + 48 * len(timed)),
    )
    return Chart("chart-percentiles", "Percentiles per scenario", figure)


def scalability(scenarios: Sequence[ScenarioResult]) -> Chart | None:
    swept = [s for s in scenarios if s.scalability]
    if not swept:
        return None
    labels = scenario_labels(swept)
    figure = go.Figure(layout=_layout("Throughput against threads"))
    for s in swept:
        points = sorted(s.scalability, key=lambda p: p.threads)
        threads = [p.threads for p in points]
        figure.add_trace(
            go.Scatter(
                x=threads,
                y=[round(p.ops_per_second, 3) for p in points],
                mode="lines+markers",
                name=labels[s.id],
                customdata=[round(p.efficiency * 100) for p in points],
                hovertemplate="%{x} threads: %{y:.1f} ops/s, %{customdata} % efficiency",
            )
        )
        single = next((p.ops_per_second for p in points if p.threads == 1), None)
        if single:
            figure.add_trace(
                go.Scatter(
                    x=threads,
                    y=[round(single * t, 3) for t in threads],
                    mode="lines",
                    line={"dash": "dot"},
                    name=f"{labels[s.id]}: linear scaling",
                )
            )
    figure.update_layout(
        xaxis={"title": {"text": "threads"}, "type": "log", "dtick": math.log10(2)},
        yaxis={"title": {"text": "committed transactions / s"}},
    )
    return Chart(
        "chart-scalability",
        "Throughput against threads",
        figure,
        "Dotted: what perfect scaling from one thread would give.",
    )


def _thinned(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return list(points)
    step = len(points) / limit
    kept = [points[int(i * step)] for i in range(limit)]
    peak = max(points, key=lambda p: p[1])
    return sorted({*kept, peak, points[-1]})


def memory_timelines(scenarios: Sequence[ScenarioResult]) -> Chart | None:
    sampled = [s for s in scenarios if s.memory is not None and s.memory.timeline]
    if not sampled:
        return None
    labels = scenario_labels(sampled)
    figure = go.Figure(layout=_layout("Resident memory during each scenario (MB)"))
    for s in sampled:
        assert s.memory is not None
        points = _thinned(s.memory.timeline, _TIMELINE_POINTS)
        figure.add_trace(
            go.Scatter(
                x=[round(t, 3) for t, _ in points],
                y=[round(mb, 2) for _, mb in points],
                mode="lines",
                name=labels[s.id],
            )
        )
    figure.update_layout(
        xaxis={"title": {"text": "seconds since the scenario started"}},
        yaxis={"title": {"text": "MB"}},
    )
    return Chart("chart-memory", "Memory over time", figure)


def histogram(result: ScenarioResult, chart_id: str) -> Chart | None:
    """The scenario's transaction times in logarithmic bins."""
    if len(result.latency_samples) < 2:
        return None
    samples = np.asarray(result.latency_samples, dtype=float) * 1000
    low, high = float(samples.min()), float(samples.max())
    if low > 0 and high > low:
        edges = np.geomspace(low, high, _HISTOGRAM_BINS + 1)
    else:
        edges = np.linspace(low, high if high > low else low + 1, _HISTOGRAM_BINS + 1)
    counts, edges = np.histogram(samples, bins=edges)
    centres = np.sqrt(edges[:-1] * edges[1:]) if low > 0 else (edges[:-1] + edges[1:]) / 2
    pairs = itertools.pairwise(edges)
    figure = go.Figure(
        go.Bar(
            x=[round(float(c), 4) for c in centres],
            y=[int(n) for n in counts],
            width=[float(w) for w in np.diff(edges)],
            customdata=[[round(float(a), 4), round(float(b), 4)] for a, b in pairs],
            hovertemplate="%{customdata[0]}-%{customdata[1]} ms: %{y} transactions",
            name="transactions",
        ),
        layout=_layout(
            f"{scenario_name(result)} [{result.backend}]: transaction times",
            xaxis={"type": "log" if low > 0 else "linear", "title": {"text": "ms"}},
            yaxis={"title": {"text": "transactions"}},
            height=280,
            bargap=0,
        ),
    )
    return Chart(chart_id, "Latency histogram", figure)


def trend(series: Mapping[str, Sequence[tuple[str, float]]], metric: str) -> Chart | None:
    """``series``: escaped label -> (run time, value) of each run in the history."""
    drawn = {label: points for label, points in series.items() if len(points) >= 2}
    if not drawn:
        return None
    figure = go.Figure(layout=_layout(f"{metric} across runs"))
    for label, points in drawn.items():
        figure.add_trace(
            go.Scatter(
                x=[when for when, _ in points],
                y=[value for _, value in points],
                mode="lines+markers",
                name=label,
            )
        )
    figure.update_layout(xaxis={"title": {"text": "run"}}, yaxis={"title": {"text": metric}})
    return Chart(f"chart-trend-{metric}".replace(" ", "-").replace("/", "-"), "Trend", figure)


def overview_charts(report: Report) -> list[Chart]:
    charts = [
        latency_boxes(report.scenarios),
        percentiles(report.scenarios),
        scalability(report.scenarios),
        memory_timelines(report.scenarios),
    ]
    return [c for c in charts if c is not None]
