"""The shared options' values refused before a run starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from uowstress.errors import ConfigError
from uowstress.options import check_directory, check_options, parse_target_options


@pytest.mark.parametrize("kills", ["abc", "-3", "2.5", ""])
def test_a_kill_count_that_is_not_a_whole_number_of_0_or_more_is_refused(kills: str) -> None:
    with pytest.raises(ConfigError, match=r"--kills .* is not a whole number of 0 or more"):
        check_options({"kills": kills})


@pytest.mark.parametrize("kills", [None, "0", "5", 20])
def test_a_kill_count_of_0_or_more_or_none_is_taken(kills: object) -> None:
    check_options({"kills": kills})


def test_the_message_names_the_option_as_the_user_typed_it() -> None:
    with pytest.raises(ConfigError, match=r"^--uowstress-kills 'x'"):
        check_options({"kills": "x"}, lambda spec: spec.pytest_flag)


def test_a_reproducers_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(ConfigError, match=r"--reproducers-dir .*afile: that is a file"):
        check_options({"reproducers_dir": str(afile)})
    assert afile.read_text() == "keep me"


def test_a_folder_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="is a file, so no folder can be made there"):
        check_directory("--output-dir", tmp_path / "afile" / "reports")


def test_a_folder_that_cannot_be_made_is_refused() -> None:
    # /proc takes no new directories, not even from root.
    with pytest.raises(ConfigError, match="--output-dir /proc/nope: cannot write there"):
        check_directory("--output-dir", Path("/proc/nope"))


def test_a_missing_folder_that_can_be_made_is_taken_and_not_made(tmp_path: Path) -> None:
    check_directory("--output-dir", tmp_path / "new" / "reports")
    assert list(tmp_path.iterdir()) == []


def test_a_link_to_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "reports").symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match="that is a link to nothing"):
        check_directory("--output-dir", tmp_path / "reports")


def test_a_folder_given_through_a_link_is_taken(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "reports").symlink_to(tmp_path / "real")
    check_directory("--output-dir", tmp_path / "reports")
    assert list((tmp_path / "real").iterdir()) == []


def test_a_relative_folder_is_probed_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    check_directory("--output-dir", Path("performance_reports"))
    assert list(tmp_path.iterdir()) == []


def test_a_target_option_given_twice_with_two_values_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"weaken is given twice \('a' and 'b'\)"):
        parse_target_options(["weaken=a", "weaken=b"])
    assert parse_target_options(["weaken=a", " weaken = a "]) == {"weaken": "a"}
