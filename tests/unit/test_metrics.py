"""Unit tests of uowstress.metrics against known inputs."""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uowstress.metrics import (
    LatencyStats,
    MemorySampler,
    OutcomeCounts,
    ResourceDelta,
    ResourceSnapshot,
    Stopwatch,
    cpu_times,
    normalise_statement,
    percentile,
    scalability,
    throughput,
    timed,
)

MB = 1024 * 1024

samples_strategy = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=50
)


# --------------------------------------------------------------------------- percentile


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 25, 1.75),
        ([1.0, 2.0, 3.0, 4.0], 95, 3.85),  # h = 3 * 0.95 = 2.85: 3 + 0.85 * (4 - 3)
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),  # unsorted input
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([10.0, 20.0], 90, 19.0),
        ([7.5], 99, 7.5),
        ([0.0, 10.0, 10.0, 100.0], 75, 32.5),  # h = 2.25: 10 + 0.25 * 90
    ],
)
def test_percentile_hand_computed(samples: list[float], q: float, expected: float) -> None:
    assert percentile(samples, q) == pytest.approx(expected)


def test_percentile_rejects_empty_samples() -> None:
    with pytest.raises(ValueError, match="empty sample"):
        percentile([], 50)


@pytest.mark.parametrize("q", [-0.1, 100.5, math.nan])
def test_percentile_rejects_q_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0, 2.0], q)


@given(samples=samples_strategy, q=st.integers(min_value=1, max_value=99))
def test_percentile_matches_statistics_inclusive_quantiles(samples: list[float], q: int) -> None:
    # statistics' "inclusive" method is the same linear interpolation, computed differently.
    if len(samples) < 2:
        assert percentile(samples, q) == samples[0]
        return
    reference = statistics.quantiles(samples, n=100, method="inclusive")[q - 1]
    assert percentile(samples, q) == pytest.approx(reference, rel=1e-9, abs=1e-6)


@given(samples=samples_strategy, q=st.floats(min_value=0, max_value=100))
def test_percentile_lies_between_its_closest_ranks(samples: list[float], q: float) -> None:
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = ordered[math.floor(position)]
    high = ordered[math.ceil(position)]
    assert low - 1e-9 <= percentile(samples, q) <= high + 1e-9


@given(samples=samples_strategy, q1=st.floats(0, 100), q2=st.floats(0, 100))
def test_percentile_is_monotonic_in_q(samples: list[float], q1: float, q2: float) -> None:
    low_q, high_q = sorted((q1, q2))
    assert percentile(samples, low_q) <= percentile(samples, high_q) + 1e-9


@given(samples=samples_strategy)
def test_percentile_extremes_are_min_and_max(samples: list[float]) -> None:
    assert percentile(samples, 0) == min(samples)
    assert percentile(samples, 100) == max(samples)


# --------------------------------------------------------------------------- latency stats


def test_latency_stats_from_known_samples() -> None:
    stats = LatencyStats.from_samples([0.5, 0.1, 0.3, 0.2, 0.4])
    assert stats.count == 5
    assert stats.mean == pytest.approx(0.3)
    assert stats.min == 0.1
    assert stats.max == 0.5
    assert stats.p50 == pytest.approx(0.3)
    assert stats.p95 == pytest.approx(0.48)  # h = 3.8
    assert stats.p99 == pytest.approx(0.496)  # h = 3.96
    assert stats.stdev == pytest.approx(math.sqrt(0.02))  # population stdev


def test_latency_stats_single_sample_has_zero_stdev() -> None:
    stats = LatencyStats.from_samples([0.25])
    assert (stats.count, stats.min, stats.p99, stats.max, stats.stdev) == (1, 0.25, 0.25, 0.25, 0)


def test_latency_stats_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one duration"):
        LatencyStats.from_samples([])


# --------------------------------------------------------------------------- outcomes


def test_outcome_rates() -> None:
    counts = OutcomeCounts(committed=14, conflicts=4, deadlocks=1, errors=1)
    assert counts.total == 20
    assert counts.failed == 6
    assert counts.success_rate == pytest.approx(0.7)
    assert counts.conflict_rate == pytest.approx(0.2)
    assert counts.deadlock_rate == pytest.approx(0.05)
    assert counts.error_rate == pytest.approx(0.05)


def test_outcome_rates_of_nothing_are_zero() -> None:
    counts = OutcomeCounts()
    assert counts.total == 0
    rates = (counts.success_rate, counts.error_rate, counts.conflict_rate, counts.deadlock_rate)
    assert rates == (0.0, 0.0, 0.0, 0.0)


def test_outcome_counts_add_up() -> None:
    merged = OutcomeCounts(committed=3, errors=1) + OutcomeCounts(committed=1, deadlocks=2)
    assert merged == OutcomeCounts(committed=4, conflicts=0, deadlocks=2, errors=1)


def test_outcome_counts_reject_negative() -> None:
    with pytest.raises(ValueError, match="conflicts"):
        OutcomeCounts(conflicts=-1)


@given(
    committed=st.integers(0, 1000),
    conflicts=st.integers(0, 1000),
    deadlocks=st.integers(0, 1000),
    errors=st.integers(0, 1000),
)
def test_outcome_rates_are_fractions_summing_to_one(
    committed: int, conflicts: int, deadlocks: int, errors: int
) -> None:
    counts = OutcomeCounts(committed, conflicts, deadlocks, errors)
    rates = [counts.success_rate, counts.conflict_rate, counts.deadlock_rate, counts.error_rate]
    assert all(0.0 <= rate <= 1.0 for rate in rates)
    assert math.fsum(rates) == pytest.approx(1.0 if counts.total else 0.0)


# --------------------------------------------------------------------------- throughput


def test_throughput() -> None:
    assert throughput(150, 3.0) == 50.0
    assert throughput(0, 1.0) == 0.0


@pytest.mark.parametrize(("operations", "seconds"), [(10, 0.0), (10, -1.0), (-1, 1.0)])
def test_throughput_rejects_bad_input(operations: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="throughput"):
        throughput(operations, seconds)


def test_scalability_efficiency() -> None:
    points = scalability({8: 400.0, 1: 100.0, 4: 300.0, 2: 180.0})
    assert [point.threads for point in points] == [1, 2, 4, 8]
    assert [point.ops_per_second for point in points] == [100.0, 180.0, 300.0, 400.0]
    assert [point.efficiency for point in points] == pytest.approx([1.0, 0.9, 0.75, 0.5])


def test_scalability_needs_one_thread_baseline() -> None:
    with pytest.raises(ValueError, match=r"1-thread throughput.*\[2, 4\]"):
        scalability({2: 10.0, 4: 20.0})


def test_scalability_rejects_zero_baseline() -> None:
    with pytest.raises(ValueError, match="positive 1-thread"):
        scalability({1: 0.0, 2: 5.0})


def test_scalability_rejects_bad_thread_count() -> None:
    with pytest.raises(ValueError, match="thread counts must be >= 1"):
        scalability({0: 5.0, 1: 5.0})


# --------------------------------------------------------------------------- timers


def test_timed_measures_a_sleep() -> None:
    with timed() as watch:
        time.sleep(0.02)
    assert not watch.running
    assert 0.02 <= watch.elapsed_s < 1.0
    assert watch.elapsed_ns == pytest.approx(watch.elapsed_s * 1e9)


def test_timed_stops_when_the_block_raises() -> None:
    captured: list[Stopwatch] = []
    with pytest.raises(RuntimeError, match="boom"), timed() as running:
        captured.append(running)
        raise RuntimeError("boom")
    (watch,) = captured
    assert not watch.running
    frozen = watch.elapsed_ns
    time.sleep(0.005)
    assert watch.elapsed_ns == frozen


def test_stopwatch_accumulates_and_guards_misuse() -> None:
    watch = Stopwatch()
    with pytest.raises(RuntimeError, match="not running"):
        watch.stop()
    watch.start()
    time.sleep(0.01)
    first = watch.stop()
    with watch:
        time.sleep(0.01)
        with pytest.raises(RuntimeError, match="running stopwatch"):
            watch.start()
    assert first >= 0.01
    assert watch.elapsed_s >= first + 0.01


# --------------------------------------------------------------------------- memory


def test_memory_sampler_sees_a_50_mb_allocation() -> None:
    with MemorySampler(interval_s=0.01) as sampler:
        # Written byte by byte, so the pages are really resident.
        blob = b"\x5a" * (50 * MB)
        time.sleep(0.05)  # give the background thread time to take samples
    assert len(blob) == 50 * MB
    assert not sampler.running
    samples = sampler.samples
    assert len(samples) >= 3  # entry, at least one background sample, exit
    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert sampler.growth >= 40 * MB
    assert sampler.peak_rss >= samples[0][1] + 40 * MB
    assert not any(t.name == "uowstress-memory-sampler" for t in threading.enumerate())
    del blob


def test_memory_sampler_traces_python_allocations_when_asked() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this process")
    with MemorySampler(trace_python=True) as sampler:
        blob = bytearray(20 * MB)
    assert sampler.python_peak is not None
    assert sampler.python_peak >= 20 * MB
    assert not tracemalloc.is_tracing()  # it started tracing, so it stopped it
    del blob


def test_memory_sampler_leaves_foreign_tracing_running() -> None:
    tracemalloc.start()
    try:
        with MemorySampler(trace_python=True) as sampler:
            blob = bytearray(5 * MB)
        assert tracemalloc.is_tracing()
        assert sampler.python_peak is not None
        assert sampler.python_peak >= 5 * MB
        del blob
    finally:
        tracemalloc.stop()


def test_memory_sampler_without_tracing_has_no_python_peak() -> None:
    with MemorySampler() as sampler:
        pass
    assert sampler.python_peak is None
    assert len(sampler.samples) >= 2


def test_memory_sampler_rejects_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval_s must be positive"):
        MemorySampler(interval_s=0)


# --------------------------------------------------------------------------- resources


def test_resource_delta_counts_descriptors_threads_and_cpu(tmp_path: Path) -> None:
    # The snapshot counts the process's threads as the system does: a thread an earlier test
    # joined may still be leaving the system (join returns first) and end during the
    # measurement, cancelling the one started here. Measure again then; a count that never
    # shows the new thread still fails.
    for _attempt in range(5):
        release = threading.Event()
        worker = threading.Thread(target=release.wait)
        with contextlib.ExitStack() as files:
            before = ResourceSnapshot.take()
            for index in range(5):
                files.enter_context((tmp_path / f"f{index}").open("w"))
            worker.start()
            deadline = time.process_time() + 0.05
            while time.process_time() < deadline:  # burn CPU on purpose
                pass
            after = ResourceSnapshot.take()
            release.set()
            worker.join()
        if after.threads - before.threads == 1:
            break
        time.sleep(0.2)

    delta = after - before
    assert isinstance(delta, ResourceDelta)
    assert delta.open_fds == 5
    assert delta.threads == 1
    # psutil counts CPU in clock ticks (10 ms here): 0.05 s burnt shows as at least 0.04;
    # rounded, because user + system of tick multiples is not exact in floating point.
    assert round(delta.cpu_s, 6) >= 0.04
    assert delta.wall_s >= delta.cpu_s * 0.5
    assert delta.cpu_utilisation > 0
    assert before.rss_bytes > 0


def test_cpu_times_grow_with_work() -> None:
    before = cpu_times()
    # psutil counts in clock ticks (10 ms): spin long enough that a tick or two either way
    # does not matter.
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after = cpu_times()
    assert after.total_s - before.total_s >= 0.07
    assert after.total_s == pytest.approx(after.user_s + after.system_s)


# --------------------------------------------------------------------------- statements


@pytest.mark.parametrize(
    ("statement", "key"),
    [
        ("SELECT a, b FROM t WHERE id = ?", "SELECT a, b FROM t WHERE id = ?"),
        ("\n\n   SELECT robots.id,\n robots.name \nFROM robots", "SELECT robots.id,"),
        ("INSERT  INTO\tt (a)   VALUES (?)", "INSERT INTO t (a) VALUES (?)"),
        ("   \n  ", ""),
    ],
)
def test_normalise_statement(statement: str, key: str) -> None:
    assert normalise_statement(statement) == key


def test_normalise_statement_truncates_to_200_characters() -> None:
    statement = "SELECT " + ", ".join(f"column_{n}" for n in range(100))
    key = normalise_statement(statement)
    assert len(key) == 200
    assert statement.startswith(key)


def test_a_descriptor_held_for_an_instant_by_another_thread_is_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The memory sampler's thread opens /proc/self/statm every 50 ms: a count that meets it is
    # one too many, the next a moment later is not.
    counts = iter([11, 10, 10])
    monkeypatch.setattr(psutil.Process, "num_fds", lambda self: next(counts), raising=False)
    assert ResourceSnapshot.take().open_fds == 10
