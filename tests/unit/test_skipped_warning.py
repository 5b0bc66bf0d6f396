"""`uowstress run` warns when everything it collected was skipped."""

from __future__ import annotations

from tests import report_factory as rf
from uowstress.cli import skipped_warning


def test_no_warning_when_something_ran() -> None:
    assert skipped_warning(rf.report(), {"passed": 19}) is None
    assert skipped_warning(rf.report([]), {"passed": 1, "skipped": 2}) is None


def test_every_scenario_skipped_is_a_warning_with_the_reasons() -> None:
    skipped = [
        rf.scenario(f"s{i}", status="skipped", message="target x offers no workload")
        for i in range(3)
    ]
    warning = skipped_warning(rf.report(skipped), {"skipped": 3, "passed": 2})
    assert warning == (
        "WARNING: every performance scenario (3) was skipped, so nothing was measured:"
        " target x offers no workload"
    )


def test_every_collected_test_skipped_is_a_warning() -> None:
    warning = skipped_warning(rf.report([]), {"skipped": 2})
    assert warning is not None
    assert warning.startswith("WARNING: every collected test (2) was skipped")


def test_every_collected_test_skipped_says_each_reason_once() -> None:
    reasons = ["nothing saved to replay", "no durability reproducer", "nothing saved to replay"]
    warning = skipped_warning(rf.report([]), {"skipped": 3}, reasons)
    assert warning == (
        "WARNING: every collected test (3) was skipped, so nothing was checked:"
        "\n  nothing saved to replay"
        "\n  no durability reproducer"
    )
