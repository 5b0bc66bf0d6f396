"""Regressions against a baseline: a real slowdown is flagged, noise and tiny shifts are not."""

from __future__ import annotations

import random
from itertools import product

import pytest

from tests import report_factory as rf
from uowstress.report.compare import (
    DEFAULT_MIN_EFFECT,
    cliffs_delta,
    compare,
    compare_all,
    render_comparison,
)
from uowstress.report.model import MemoryProfile, Report


def _draw(seed: int, n: int = 500, sigma: float = 0.5, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [scale * rng.lognormvariate(-4.5, sigma) for _ in range(n)]


def _run(samples: list[float], **fields: object) -> Report:
    """A run of one scenario; throughput and memory the same in every run unless given."""
    fields.setdefault("ops_per_second", 100.0)
    return rf.report([rf.scenario("load", samples=samples, **fields)])


def test_an_injected_slowdown_is_flagged() -> None:
    for seed in range(5):
        before = _draw(seed)
        after = [s * 1.3 for s in _draw(seed + 100)]
        [regression] = compare(_run(before), _run(after), threshold_pct=10)
        assert regression.metric == "latency_p50_s"
        assert regression.regressed
        assert regression.p_value is not None and regression.p_value < 0.01
        assert regression.effect_size is not None and regression.effect_size > DEFAULT_MIN_EFFECT
        assert regression.change == pytest.approx(0.3, abs=0.12)


def test_a_speedup_is_reported_but_not_as_a_regression() -> None:
    [change] = compare(_run(_draw(1)), _run([s / 1.5 for s in _draw(2)]), threshold_pct=10)
    assert not change.regressed and change.change < 0


def test_noise_is_not_flagged() -> None:
    # Two draws from one distribution, many seeds: their medians differ by several percent,
    # sometimes more than 10 %; none may be called a regression.
    for seed in range(20):
        a, b = _draw(seed, n=200), _draw(seed + 1000, n=200)
        assert compare(_run(a), _run(b), threshold_pct=10) == [], seed


def test_noise_beyond_the_threshold_is_still_not_flagged() -> None:
    # Small samples: the medians of two draws differ by more than 5 % ...
    found = 0
    for seed in range(40):
        a, b = _draw(seed, n=12), _draw(seed + 500, n=12)
        [latency, *_] = compare_all(_run(a), _run(b), threshold_pct=5)
        if abs(latency.change) > 0.05:
            found += 1
            # ... which the test does not call significant.
            assert latency.verdict == "unchanged", seed
    assert found >= 10  # the case was really exercised


def test_a_tiny_significant_change_below_the_minimum_effect_is_not_flagged() -> None:
    # 3 % slower with 5,000 tight samples: Mann-Whitney finds it, but it is below 10 %.
    before = _draw(1, n=5000, sigma=0.05)
    after = [s * 1.03 for s in _draw(2, n=5000, sigma=0.05)]
    [latency, *_] = compare_all(_run(before), _run(after), threshold_pct=10)
    assert latency.p_value is not None and latency.p_value < 1e-6
    assert latency.verdict == "unchanged"
    assert "within the threshold" in latency.note
    assert compare(_run(before), _run(after), threshold_pct=10) == []


def test_cliffs_delta_matches_its_definition() -> None:
    rng = random.Random(3)
    a = [rng.choice([1.0, 2.0, 3.0]) for _ in range(30)]
    b = [rng.choice([2.0, 3.0, 4.0]) for _ in range(25)]
    brute = sum((y > x) - (y < x) for x, y in product(a, b)) / (len(a) * len(b))
    assert cliffs_delta(a, b) == pytest.approx(brute)
    assert cliffs_delta([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert cliffs_delta([3.0, 4.0], [1.0, 2.0]) == -1.0


def test_throughput_and_memory_are_single_figures() -> None:
    samples = _draw(1)
    old = _run(samples, ops_per_second=100.0, memory=MemoryProfile(peak_mb=100, growth_mb=0))
    new = _run(samples, ops_per_second=80.0, memory=MemoryProfile(peak_mb=105, growth_mb=0))
    by_metric = {c.metric: c for c in compare_all(old, new, threshold_pct=10)}
    ops, memory = by_metric["ops_per_second"], by_metric["memory_peak_mb"]
    assert (ops.verdict, ops.change, ops.tested, ops.p_value) == ("regressed", 0.2, False, None)
    assert "not tested" in ops.note
    assert memory.verdict == "unchanged" and memory.change == pytest.approx(0.05)
    assert by_metric["latency_p50_s"].verdict == "unchanged"
    assert [r.metric for r in compare(old, new, threshold_pct=10)] == ["ops_per_second"]
    assert compare(old, new, threshold_pct=25) == []


def test_scenarios_match_on_suite_scenario_and_backend() -> None:
    slow = [s * 2 for s in _draw(2)]
    old = rf.report(
        [rf.scenario("a", samples=_draw(1)), rf.scenario("b", samples=_draw(3), backend="mysql")]
    )
    new = rf.report(
        [
            rf.scenario("a", samples=slow, backend="postgresql"),  # another backend
            rf.scenario("a", samples=slow, suite="other_suite"),  # another suite
            rf.scenario("b", samples=slow, backend="mysql"),
        ]
    )
    comparisons = compare_all(old, new)
    assert {c.scenario for c in comparisons} == {"synthetic_suite::b[mysql]"}
    table = render_comparison(comparisons, old, new)
    assert "REGRESSED" in table
    assert "only in the baseline: synthetic_suite::a[sqlite]" in table
    assert "new in this run: other_suite::a[sqlite], synthetic_suite::a[postgresql]" in table


def test_the_table_names_why_a_change_does_not_count() -> None:
    comparisons = compare_all(_run(_draw(1, n=200)), _run(_draw(2, n=200)))
    table = render_comparison(comparisons)
    assert "0 regressions in 3 comparisons" in table
    assert ">= alpha" in table or "< 0.147" in table


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare_all(_run(_draw(1)), _run(_draw(2)), alpha=0)
    with pytest.raises(ValueError, match="threshold_pct"):
        compare_all(_run(_draw(1)), _run(_draw(2)), threshold_pct=-1)


def test_reports_of_other_backends_share_nothing_and_nothing_regresses() -> None:
    old = rf.report([rf.scenario("a", samples=_draw(1), backend="sqlite")])
    new = rf.report([rf.scenario("a", samples=_draw(2, scale=3.0), backend="postgresql")])
    comparisons = compare_all(old, new)
    assert comparisons == [] and compare(old, new) == []
    text = render_comparison(comparisons, old, new)
    assert "nothing to compare: no scenario has figures in both reports" in text
    assert "the baseline holds 1 scenario on sqlite; this run holds 1 scenario on postgresql" in (
        text
    )
    assert "nothing was compared, so nothing was judged" in text and "REGRESSED" not in text


def test_a_report_of_state_machines_only_compared_with_itself() -> None:
    machines_only = rf.report([], machines=[rf.machine_run()])
    comparisons = compare_all(machines_only, machines_only)
    text = render_comparison(comparisons, machines_only, machines_only)
    assert "no performance scenario, 1 state machine run (not compared)" in text
    assert "nothing was compared, so nothing was judged" in text
    assert "nothing to compare" in render_comparison(comparisons)


def test_two_databases_of_one_backend_in_a_run_are_two_scenarios() -> None:
    first = rf.scenario("basic", backend="postgresql")
    slower = [s * 2 for s in first.latency_samples]
    second = rf.scenario(
        "basic",
        backend="postgresql",
        samples=slower,
        id="tests/performance/test_synthetic_suite.py::test_basic[postgresql1]",
    )
    run = rf.report([first, second])
    comparisons = compare_all(run, run)
    assert sorted({c.scenario for c in comparisons}) == [
        "synthetic_suite::basic[postgresql1]",
        "synthetic_suite::basic[postgresql]",
    ]
    assert {c.verdict for c in comparisons} == {"unchanged"}


def test_a_scenario_run_at_other_sizes_is_shown_but_not_judged() -> None:
    base = rf.scenario("basic", workload={"sequential_transactions": 100})
    bigger = rf.scenario(
        "basic",
        samples=[s * 3 for s in base.latency_samples],
        workload={"sequential_transactions": 400},
    )
    comparisons = compare_all(rf.report([base]), rf.report([bigger]))
    assert comparisons and {c.verdict for c in comparisons} == {"not comparable"}
    assert comparisons[0].note == "workload differs: sequential_transactions 100 -> 400"
    same = rf.scenario(
        "basic", samples=bigger.latency_samples, workload={"sequential_transactions": 100}
    )
    judged = compare_all(rf.report([base]), rf.report([same]))
    assert "regressed" in {c.verdict for c in judged}


def test_transaction_times_of_too_few_samples_are_shown_and_never_judged() -> None:
    # Three transactions (json_serialization's default) or a history entry (no samples): the
    # median of so few moved +185 % between two runs of the same code.
    old, new = _run(_draw(4, n=3)), _run([s * 3 for s in _draw(4, n=3)])
    (latency,) = [c for c in compare_all(old, new, threshold_pct=10) if c.metric == "latency_p50_s"]
    assert latency.verdict == "unchanged" and not latency.tested
    assert latency.change == pytest.approx(2.0)  # shown: three times the median
    assert "fewer than 8 samples, not judged" in latency.note
    assert compare(old, new, threshold_pct=10) == []
    enough = _run(_draw(4, n=8)), _run([s * 3 for s in _draw(4, n=8)])
    assert [c.metric for c in compare(*enough, threshold_pct=10)] == ["latency_p50_s"]


def test_a_single_figure_counts_from_the_threshold_on() -> None:
    old = _run(_draw(4, n=50))
    worse = old.model_copy(deep=True)
    assert old.scenarios[0].memory is not None and worse.scenarios[0].memory is not None
    worse.scenarios[0].memory.peak_mb = old.scenarios[0].memory.peak_mb * 1.25
    (memory,) = [
        c for c in compare_all(old, worse, threshold_pct=25) if c.metric == "memory_peak_mb"
    ]
    assert memory.verdict == "regressed"  # exactly 25 % with a threshold of 25 %
    (memory,) = [
        c for c in compare_all(old, worse, threshold_pct=26) if c.metric == "memory_peak_mb"
    ]
    assert memory.verdict == "unchanged"
    assert "moved +25.0 %, within the threshold" in memory.note
    # A threshold of 0 does not make an unchanged figure a regression.
    same = [c for c in compare_all(old, old, threshold_pct=0) if c.metric == "memory_peak_mb"]
    assert [c.verdict for c in same] == ["unchanged"]


def test_the_throughput_of_too_few_transactions_is_shown_and_never_judged() -> None:
    # json_serialization's three transactions: +63.8 % between two runs of the same code.
    old = _run(_draw(4, n=3), ops_per_second=36.6)
    new = _run(_draw(4, n=3), ops_per_second=13.3)
    (throughput,) = [
        c for c in compare_all(old, new, threshold_pct=10) if c.metric == "ops_per_second"
    ]
    assert throughput.verdict == "unchanged" and not throughput.tested
    assert throughput.change == pytest.approx(1 - 13.3 / 36.6)  # shown
    assert "fewer than 8 transactions, not judged" in throughput.note
    enough = _run(_draw(4, n=8), ops_per_second=36.6), _run(_draw(4, n=8), ops_per_second=13.3)
    judged = [c for c in compare_all(*enough, threshold_pct=10) if c.metric == "ops_per_second"]
    assert [c.verdict for c in judged] == ["regressed"]
