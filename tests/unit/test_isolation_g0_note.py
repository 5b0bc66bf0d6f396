"""What the register search can say about G0 (dirty writes)."""

from __future__ import annotations

from uowstress.anomalies import analyse
from uowstress.history import r, txn, w
from uowstress.isolation import IsolationReport, render_markdown


def test_a_dirty_write_is_not_named_g0_by_the_checker() -> None:
    # T1 and T2 both write x and y, their writes interleaved (x: T1 then T2, y: T2 then T1),
    # and T3 reads what is left. The checker orders versions by commit, so it cannot see the
    # write cycle; it names what T3 read instead.
    h = [
        txn(1, ops=[w("x", 1), w("y", 11)], commit=1),
        txn(2, ops=[w("x", 2), w("y", 12)], commit=2),
        txn(3, ops=[r("x", 2), r("y", 11)], commit=3),
    ]
    assert "G0" not in {f.anomaly for f in analyse(h)}


def test_the_report_says_g0_cannot_be_observed_by_the_search() -> None:
    report = IsolationReport("sqlite", "SQLite 3", "sqlite://", "ci", 1.0, [], [])
    markdown = render_markdown(report)
    assert "G0 cannot be observed" in markdown
