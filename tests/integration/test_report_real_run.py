"""A report from a real performance run: the suites measure on SQLite, the report is written
in every format and validates against the committed schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests import report_factory as rf
from uowstress.report import analyse, write_reports
from uowstress.report.json_report import SCHEMA_PATH
from uowstress.report.model import ScenarioResult

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_measured_run_is_reported_in_every_format(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/performance/test_simple_uow_performance.py",
            "-k",
            "basic_transaction_performance and sqlite",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "--uowstress-results-json",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    measured = [
        ScenarioResult.model_validate(s) for s in json.loads(results.read_text())["scenarios"]
    ]
    assert [s.scenario for s in measured] == ["basic_transaction_performance"]
    report = analyse(rf.report(measured))
    paths = write_reports(report, tmp_path / "out", ["all"])

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(json.loads(paths["json"].read_text()), schema)
    markdown = paths["markdown"].read_text()
    result = measured[0]
    assert result.latency is not None and result.latency.count == 100
    assert "basic\\_transaction\\_performance on sqlite: passed" in markdown
    assert "| transactions | 100 (100 committed) |" in markdown
    page = paths["html"].read_text()
    assert 'data-chart="chart-latency"' in page and 'data-chart="chart-memory"' in page
