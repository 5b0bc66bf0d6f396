"""The HTML report in a real browser (headless Chromium): every chart is drawn from the page
alone, with the network unreachable, and hostile strings from the run stay text.

Chromium is Debian's `chromium` package (`apt-get install -y chromium`). Without it the tests
skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests import report_factory as rf
from uowstress.options import in_ci
from uowstress.report import analyse
from uowstress.report.html import render_html
from uowstress.report.model import Report

pytestmark = pytest.mark.slow

_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install -y chromium)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def _rendered_dom(page: Path, profile: Path) -> str:
    """The DOM after the page's scripts ran, with every network request bound to fail."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Offline: any request the page made would go to a dead proxy and resolve nothing.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


@dataclass
class _Chart:
    id: str
    rendered: str | None = None
    svgs: int = 0
    traces: int = 0
    points: int = 0


class _Charts(HTMLParser):
    """Each chart container and what Plotly drew inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, _Chart] = {}
        self._open: list[tuple[str, _Chart | None]] = []
        self.ids: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        if tag == "img":
            self.images.append(values)
        if tag == "script":
            self.scripts.append(values)
        current = next((chart for _, chart in reversed(self._open) if chart), None)
        if values.get("data-chart"):
            current = _Chart(str(values["data-chart"]), values.get("data-rendered"))
            self.charts[current.id] = current
        if current is not None:
            classes = (values.get("class") or "").split()
            current.svgs += tag == "svg" and "main-svg" in classes
            current.traces += tag == "g" and "trace" in classes
            # Plotly draws each bar, marker and box as an element of class "point" or "box",
            # and each line as a "js-line" path.
            current.points += bool({"point", "box", "js-line"} & set(classes))
        if tag not in ("br", "img", "input", "meta", "link", "path", "rect", "line", "circle"):
            self._open.append((tag, current if values.get("data-chart") else None))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break


def _page(report: Report, tmp_path: Path) -> tuple[str, str]:
    page = tmp_path / "report.html"
    page.write_text(render_html(report))
    return page.read_text(), _rendered_dom(page, tmp_path / "profile")


def _expected_traces(source: str, chart_id: str) -> int:
    spec = re.search(
        rf'<script type="application/json" id="{re.escape(chart_id)}-spec">(.*?)</script>',
        source,
        re.DOTALL,
    )
    assert spec is not None, chart_id
    return len(json.loads(spec.group(1))["data"])


def test_every_chart_is_drawn_offline(tmp_path: Path) -> None:
    report = analyse(rf.full_report())
    source, dom = _page(report, tmp_path)
    # Self-contained: no external script, style sheet or image to fetch.
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=", source)
    assert not re.search(r"<link[^>]*stylesheet", source)
    parser = _Charts()
    parser.feed(dom)
    charts = parser.charts
    expected = {"chart-latency", "chart-percentiles", "chart-scalability", "chart-memory"}
    expected |= {
        f"chart-histogram-{i}" for i, s in enumerate(report.scenarios) if len(s.latency_samples) > 1
    }
    assert set(charts) == expected
    for chart in charts.values():
        assert chart.rendered == "true", chart
        assert chart.svgs >= 1, chart
        assert chart.traces == _expected_traces(source, chart.id), chart
        assert chart.points > 0, chart  # bars, box bodies or markers: data, not an empty axis


def test_hostile_strings_are_shown_as_text_and_never_run(tmp_path: Path) -> None:
    report = rf.hostile_report()
    source, dom = _page(report, tmp_path)
    title = _TITLE.search(dom)
    assert title is not None
    assert "pwned" not in title.group(1)
    assert title.group(1).startswith("uowstress report: FAILED")
    parser = _Charts()
    parser.feed(dom)
    assert "pwned" not in parser.ids
    assert all(image.get("src") != "x" for image in parser.images)
    # Only the page's own two scripts, and the charts' JSON data blocks.
    assert [s for s in parser.scripts if s.get("type") != "application/json"] == [{}, {}]
    # The strings are on the page, as text.
    assert source.count("&lt;script&gt;document.title=&#39;pwned-script&#39;&lt;/script&gt;") >= 5
    assert "&lt;img src=x id=pwned" in source
    # Charts whose labels hold a hostile scenario name still draw, and show it as text.
    assert all(chart.rendered == "true" for chart in parser.charts.values())
    assert "&lt;img src=x id=pwned" in dom.split('id="chart-latency"')[1][:200_000]
