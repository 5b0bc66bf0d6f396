"""The warning of a run that drew faults only the fault hook can inject, from the count of
faults that did not fire to the console and the report."""

from __future__ import annotations

from tests import report_factory as rf
from uowstress.faults import Fault, unreached_warning
from uowstress.report.html import render_html
from uowstress.report.markdown import render_markdown, text
from uowstress.runner import machine_warnings


def test_no_hook_call_at_all_names_every_fault_it_could_not_inject() -> None:
    said = unreached_warning(set(), {"before_flush": 2, "kill at before_commit": 1})
    assert said == (
        "the Unit of Work never called fault_hook: 3 faults drawn at"
        " before_flush/after_flush/before_commit and kills were not injected (before_flush: 2,"
        " kill at before_commit: 1); call fault_hook(point, connection) at those points (see"
        " examples/README.md)"
    )


def test_one_point_never_called_is_named_alone() -> None:
    called = {"before_flush", "before_commit"}
    unreached = {"after_flush": 1, "kill at after_flush": 0, "before_commit": 4}
    said = unreached_warning(called, unreached)
    assert said is not None
    assert said.startswith("the Unit of Work never called fault_hook at after_flush: 1 fault")
    assert "(after_flush: 1)" in said and "at that point" in said


def test_faults_at_points_the_hook_was_called_at_are_no_warning() -> None:
    # A kill with no transaction begun does not fire either: the hook was called there.
    called = {"before_flush", "after_flush", "before_commit"}
    assert unreached_warning(called, {"kill at before_flush": 3, "after_flush": 1}) is None
    assert unreached_warning(set(), {}) is None


def test_only_faults_at_hook_points_have_one() -> None:
    assert Fault("statement").hook_point is None
    assert Fault("commit").hook_point is None
    assert Fault("after_flush").hook_point == "after_flush"
    assert Fault("kill", kill_at="before_flush").hook_point == "before_flush"


def test_a_machine_runs_warnings_reach_the_console_and_the_report() -> None:
    said = "the Unit of Work never called fault_hook: 2 faults drawn at ..."
    report = rf.report(
        machines=[
            rf.machine_run(machine="acid", status="passed", warnings=[said]),
            rf.machine_run(machine="acid", backend="postgresql", shard=1, shards=2),
        ]
    )
    assert machine_warnings(report) == [f"WARNING: acid machine on sqlite: {said}"]
    assert f"**Warning**: {text(said)}" in render_markdown(report)
    assert f"<strong>Warning</strong>: {said}" in render_html(report)
