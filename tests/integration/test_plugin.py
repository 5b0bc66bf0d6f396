"""The pytest plugin end to end: a performance test with the `perf` fixture, judged against
performance_config.yaml, on a real database; results kept and written as JSON."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

TEST_FILE = '''
from uowstress.scenario import Scenario

def test_deposits(perf: Scenario) -> None:
    """A few deposits."""
    keys = perf.create(3)
    perf.run([[perf.change(k) for k in keys * 3]])
    perf.check_tally()
'''

THRESHOLDS = """
thresholds:
  critical: {{avg_transaction_s: {critical}}}
  warning: {{avg_transaction_s: {warning}}}
  optimal: {{avg_transaction_s: {optimal}}}
"""


def _run(
    pytester: pytest.Pytester, server_url: str, critical: str, warning: str
) -> pytest.RunResult:
    pytester.makepyfile(test_perf=TEST_FILE)
    pytester.makefile(
        ".yaml",
        performance_config=THRESHOLDS.format(
            critical=critical, warning=warning, optimal="0.000001"
        ),
    )
    return pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--uowstress-target",
        "examples.ledger:TARGET",
        "--uowstress-db-url",
        server_url,
        "--uowstress-results-json",
        "results.json",
    )


def test_a_critical_breach_fails_the_scenario_naming_metric_value_and_threshold(
    pytester: pytest.Pytester, server_url: str
) -> None:
    result = _run(pytester, server_url, critical="0.000001", warning="0.000001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*deposits on *: avg_transaction_s = * s exceeds the critical threshold 0.0 s*",
            "*uowstress: performance budgets*",
            "CRITICAL *test_deposits*avg_transaction_s*",
        ]
    )
    data = json.loads((pytester.path / "results.json").read_text())
    (scenario,) = data["scenarios"]
    assert scenario["status"] == "failed"
    assert scenario["transactions"]["committed"] == 9
    assert scenario["checks"][0]["passed"] is True


def test_a_warning_is_reported_and_does_not_fail(
    pytester: pytest.Pytester, server_url: str
) -> None:
    result = _run(pytester, server_url, critical="60.0", warning="0.000001")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["WARNING  *test_deposits*avg_transaction_s*warning threshold*"])
    (scenario,) = json.loads((pytester.path / "results.json").read_text())["scenarios"]
    assert scenario["status"] == "passed"
    tiers = {v["metric"]: v["tier"] for v in scenario["verdicts"]}
    assert tiers["avg_transaction_s"] == "warning"


def test_an_invalid_config_is_a_usage_error_naming_the_key(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_perf=TEST_FILE)
    pytester.makefile(".yaml", performance_config="workloads:\n  writers: -3\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*workloads.writers: found -3 (int); expected an integer >= 1*"])
