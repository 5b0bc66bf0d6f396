"""Regressions against a baseline run: which scenarios got slower, slimmer or hungrier.

A baseline is any report JSON a run wrote (``save_baseline`` writes one). Scenarios are matched
on suite, scenario, the test's parameters and database (``history.scenario_key``). For each
pair:

- transaction time: the two runs' samples are compared with a two-sided Mann-Whitney U test
  (scipy) and Cliff's delta. A change counts only when it is significant (p < alpha), its
  effect is at least ``min_effect`` (|delta|: 0.147 is the usual bound of a "small" effect)
  and the median moved by at least ``threshold_pct``. A bare percentage is never enough: two
  draws of the same noisy distribution often differ by more than 10 % in one quantile.
  Samples within a run are not independent (they share a database and its caches), so p is
  an indication, which is why the effect bounds are required as well.
- throughput (ops/s) and memory peak: one figure per run, nothing to test; the relative change
  is shown, and counts when it is beyond ``threshold_pct``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

import numpy as np
from scipy import stats

from uowstress.report import formatting as fmt
from uowstress.report.history import scenario_key
from uowstress.report.json_report import write_json
from uowstress.report.model import Regression, Report, ScenarioResult

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_THRESHOLD_PCT",
    "MIN_SAMPLES",
    "Comparison",
    "cliffs_delta",
    "compare",
    "compare_all",
    "holdings",
    "render_comparison",
    "save_baseline",
    "shown_value",
]

DEFAULT_THRESHOLD_PCT: Final = 10.0
DEFAULT_ALPHA: Final = 0.01
DEFAULT_MIN_EFFECT: Final = 0.147
#: Fewer samples on either side: the latency is compared like a single figure.
MIN_SAMPLES: Final = 8

Verdict = Literal["regressed", "improved", "unchanged", "not comparable"]


@dataclass(frozen=True)
class Comparison:
    """One metric of one scenario in both runs."""

    scenario: str  # suite::scenario[backend], suite::scenario[params][backend] (scenario_key)
    metric: str
    baseline: float
    current: float
    change: float  # relative, positive is worse
    verdict: Verdict
    tested: bool  # compared with a statistical test (latency samples)
    p_value: float | None = None
    effect_size: float | None = None  # Cliff's delta, positive: the current run is slower
    note: str = ""

    @property
    def significant(self) -> bool:
        return self.verdict in ("regressed", "improved")

    def regression(self) -> Regression:
        return Regression(
            scenario=self.scenario,
            metric=self.metric,
            baseline=self.baseline,
            current=self.current,
            change=self.change,
            p_value=self.p_value,
            effect_size=self.effect_size,
            regressed=self.verdict == "regressed",
        )


def save_baseline(report: Report, path: Path) -> Path:
    """Write ``report`` as a baseline (its JSON; any report JSON serves as one)."""
    return write_json(report, path)


def cliffs_delta(baseline: Sequence[float], current: Sequence[float]) -> float:
    """P(current > baseline) - P(current < baseline), from -1 to 1; 0: no shift."""
    old = np.sort(np.asarray(baseline, dtype=float))
    new = np.asarray(current, dtype=float)
    below = np.searchsorted(old, new, side="left")  # old values < each new value
    above = len(old) - np.searchsorted(old, new, side="right")  # old values > it
    return float((below.sum() - above.sum()) / (len(old) * len(new)))


def _relative(old: float, new: float, *, higher_is_better: bool = False) -> float:
    if old == 0:
        return 0.0 if new == 0 else math.inf
    change = (new - old) / abs(old)
    return -change if higher_is_better else change


def _single(
    key: str, metric: str, old: float, new: float, threshold: float, higher_is_better: bool
) -> Comparison:
    change = _relative(old, new, higher_is_better=higher_is_better)
    # A change counts from the threshold on, as for transaction times (and never a change of 0,
    # with a threshold of 0).
    if change > 0 and change >= threshold:
        verdict: Verdict = "regressed"
    elif change < 0 and -change >= threshold:
        verdict = "improved"
    else:
        verdict = "unchanged"
    note = "single figure, not tested"
    if verdict == "unchanged":
        note += f"; moved {fmt.signed_percent(change)}, within the threshold"
    return Comparison(key, metric, old, new, change, verdict, tested=False, note=note)


def _few(key: str, metric: str, old: float, new: float, higher_is_better: bool) -> Comparison:
    """A figure of fewer than MIN_SAMPLES transactions: shown, never judged (the throughput of
    three transactions moves by tens of percent between two runs of the same code)."""
    change = _relative(old, new, higher_is_better=higher_is_better)
    return Comparison(
        key,
        metric,
        old,
        new,
        change,
        "unchanged",
        tested=False,
        note=f"fewer than {MIN_SAMPLES} transactions, not judged",
    )


def _latency(
    key: str,
    old: ScenarioResult,
    new: ScenarioResult,
    *,
    threshold: float,
    alpha: float,
    min_effect: float,
) -> Comparison | None:
    a, b = old.latency_samples, new.latency_samples
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        if old.latency is None or new.latency is None:
            return None
        # Shown, never judged: the median of a few transactions moves by tens of percent
        # between two runs of the same code (a history entry keeps no samples at all).
        p50_old, p50_new = old.latency.p50, new.latency.p50
        return Comparison(
            key,
            "latency_p50_s",
            p50_old,
            p50_new,
            _relative(p50_old, p50_new),
            "unchanged",
            tested=False,
            note=f"fewer than {MIN_SAMPLES} samples, not judged",
        )
    median_old, median_new = statistics.median(a), statistics.median(b)
    change = _relative(median_old, median_new)
    p_value = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    delta = cliffs_delta(a, b)
    verdict: Verdict = "unchanged"
    notes = []
    if p_value >= alpha:
        notes.append(f"p {p_value:.2g} >= alpha {alpha:g}")
    if abs(delta) < min_effect:
        notes.append(f"|effect| {abs(delta):.2f} < {min_effect:g}")
    if abs(change) < threshold:
        notes.append(f"median moved {fmt.signed_percent(change)}, within the threshold")
    if not notes:
        verdict = "regressed" if change > 0 else "improved"
    return Comparison(
        key,
        "latency_p50_s",
        median_old,
        median_new,
        change,
        verdict,
        tested=True,
        p_value=p_value,
        effect_size=delta,
        note="; ".join(notes),
    )


def compare_all(
    old: Report,
    new: Report,
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> list[Comparison]:
    """Every metric compared, for every scenario present in both runs (in ``new``'s order)."""
    if threshold_pct < 0:
        raise ValueError(f"threshold_pct must be >= 0, got {threshold_pct}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    threshold = threshold_pct / 100
    before = {scenario_key(s): s for s in old.scenarios if s.status != "skipped"}
    out: list[Comparison] = []
    for result in new.scenarios:
        key = scenario_key(result)
        base = before.get(key)
        if base is None or result.status == "skipped":
            continue
        start = len(out)
        latency = _latency(
            key, base, result, threshold=threshold, alpha=alpha, min_effect=min_effect
        )
        if latency is not None:
            out.append(latency)
        if base.ops_per_second and result.ops_per_second is not None:
            few = min(base.transactions.total, result.transactions.total) < MIN_SAMPLES
            out.append(
                _few(key, "ops_per_second", base.ops_per_second, result.ops_per_second, True)
                if few
                else _single(
                    key,
                    "ops_per_second",
                    base.ops_per_second,
                    result.ops_per_second,
                    threshold,
                    higher_is_better=True,
                )
            )
        if base.memory is not None and result.memory is not None:
            out.append(
                _single(
                    key,
                    "memory_peak_mb",
                    base.memory.peak_mb,
                    result.memory.peak_mb,
                    threshold,
                    higher_is_better=False,
                )
            )
        sizes = _sizes_differ(base, result)
        if sizes:
            # Figures of different amounts of work: shown, never judged.
            out[start:] = [
                replace(c, verdict="not comparable", note=f"workload differs: {sizes}")
                for c in out[start:]
            ]
    return out


def other_sizes(old: Report, new: Report) -> list[str]:
    """The scenarios of both runs that read different workload sizes, each as
    ``key (workload differs: name old -> new)``: what compare_all shows and does not judge."""
    before = {scenario_key(s): s for s in old.scenarios if s.status != "skipped"}
    found = []
    for result in new.scenarios:
        key = scenario_key(result)
        base = before.get(key)
        sizes = "" if base is None or result.status == "skipped" else _sizes_differ(base, result)
        if sizes:
            found.append(f"{key} (workload differs: {sizes})")
    return sorted(found)


def _sizes_differ(base: ScenarioResult, result: ScenarioResult) -> str:
    """The workload sizes both runs of a scenario read and set differently, as
    ``name old -> new``; empty when they agree (or a report predates recording them)."""
    return ", ".join(
        f"{name} {base.workload[name]} -> {result.workload[name]}"
        for name in sorted(set(base.workload) & set(result.workload))
        if base.workload[name] != result.workload[name]
    )


def compare(
    old: Report,
    new: Report,
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> list[Regression]:
    """The changes beyond every bound, worse (``regressed``) or better."""
    return [
        c.regression()
        for c in compare_all(
            old, new, threshold_pct=threshold_pct, alpha=alpha, min_effect=min_effect
        )
        if c.significant
    ]


def shown_value(metric: str, value: float) -> str:
    """A compared figure with its unit."""
    if metric.endswith("_s"):
        return fmt.duration(value)
    if metric.endswith("_mb"):
        return fmt.megabytes(value)
    return fmt.number(value)


def holdings(report: Report) -> str:
    """What a report has to show, for when none of it matches the other report."""
    compared = [s for s in report.scenarios if s.status != "skipped"]
    parts = []
    if compared:
        backends = sorted({s.backend for s in compared})
        parts.append(
            f"{len(compared)} scenario{'s' if len(compared) != 1 else ''} on {', '.join(backends)}"
        )
    else:
        parts.append("no performance scenario")
    if report.machines:
        count = len(report.machines)
        parts.append(f"{count} state machine run{'s' if count != 1 else ''} (not compared)")
    return ", ".join(parts)


def render_comparison(
    comparisons: Sequence[Comparison], old: Report | None = None, new: Report | None = None
) -> str:
    """A plain-text table of every comparison, then the scenarios only one run has."""
    lines: list[str] = []
    if comparisons:
        lines += _table(comparisons)
    else:
        # Two valid reports that share nothing: say so plainly; there is nothing to regress.
        lines.append("nothing to compare: no scenario has figures in both reports.")
        if old is not None and new is not None:
            lines.append(f"the baseline holds {holdings(old)}; this run holds {holdings(new)}.")
    if old is not None and new is not None:
        old_keys = {scenario_key(s) for s in old.scenarios}
        new_keys = {scenario_key(s) for s in new.scenarios}
        for label, keys in (
            ("only in the baseline", old_keys - new_keys),
            ("new in this run", new_keys - old_keys),
        ):
            if keys:
                lines.append(f"{label}: {', '.join(sorted(keys))}")
    if not comparisons:
        lines.append(
            "nothing was compared, so nothing was judged: compare reports of the same scenarios"
            " on the same backend."
        )
        return "\n".join(lines) + "\n"
    regressed = sum(c.verdict == "regressed" for c in comparisons)
    lines.append(
        f"{regressed} regression{'s' if regressed != 1 else ''} in {len(comparisons)}"
        " comparisons. worse by: the relative change, positive when the figure got worse."
        " latency_p50_s: Mann-Whitney U and Cliff's delta on the transaction times;"
        " ops_per_second and memory_peak_mb: single figures, relative change only."
    )
    return "\n".join(lines) + "\n"


def _table(comparisons: Sequence[Comparison]) -> list[str]:
    header = ("scenario", "metric", "baseline", "now", "worse by", "p", "effect", "verdict", "note")
    rows = [
        (
            c.scenario,
            c.metric,
            shown_value(c.metric, c.baseline),
            shown_value(c.metric, c.current),
            fmt.signed_percent(c.change),
            "-" if c.p_value is None else f"{c.p_value:.2g}",
            "-" if c.effect_size is None else f"{c.effect_size:+.2f}",
            c.verdict.upper() if c.verdict == "regressed" else c.verdict,
            c.note,
        )
        for c in comparisons
    ]
    # A list, not starred arguments: max() of a lone int is a TypeError.
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines
