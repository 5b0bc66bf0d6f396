"""What a failed test said, as a result keeps it: the exception's own lines, trimmed."""

from __future__ import annotations

from uowstress.pytest_plugin import exception_lines, reported_exception


def test_an_assertion_keeps_its_message_and_its_comparison() -> None:
    said = "AssertionError: expected 2 commits, the system made 1\nassert 1 == 2"
    assert exception_lines(said) == [
        "AssertionError: expected 2 commits, the system made 1",
        "assert 1 == 2",
    ]


def test_a_bare_assertion_reads_as_pytest_shows_it_without_the_explanation() -> None:
    said = "AssertionError: assert [1] == [2]\n  \n  At index 0 diff: 1 != 2\n  Use -v"
    assert exception_lines(said) == ["assert [1] == [2]"]


def test_the_report_text_of_tb_line_and_of_a_long_traceback() -> None:
    # --tb=line marks the first line only; a long traceback marks each and names the place.
    short = "E   AssertionError: expected 2 commits,\n       the system made 1\n    assert 1 == 2"
    long = (
        "def test_b():\n>       assert committed == 2, 'expected'\n"
        "E       AssertionError: expected 2 commits,\nE          the system made 1\n"
        "E       assert 1 == 2\n\ntest_a.py:10: AssertionError"
    )
    expected = ["AssertionError: expected 2 commits,", "the system made 1", "assert 1 == 2"]
    assert reported_exception(short) == expected
    assert reported_exception(long) == expected
    assert reported_exception("something went wrong\n   at the end  ") == ["at the end"]


def test_of_a_chained_exception_the_one_raised_is_kept_not_its_cause() -> None:
    text = (
        "    def prepare():\n>       raise KeyError('inner')\nE       KeyError: 'inner detail'\n\n"
        "conftest.py:3: KeyError\n\nThe above exception was the direct cause of the following"
        " exception:\n\n>       raise Wrapped('prepared') from error\n"
        "E       Wrapped: the database could not be prepared: check the URL\n\n"
        "conftest.py:5: Wrapped"
    )
    assert reported_exception(text) == [
        "Wrapped: the database could not be prepared: check the URL"
    ]
