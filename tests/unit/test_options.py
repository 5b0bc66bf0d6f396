"""The shared options' values refused before a run starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from uowstress.errors import ConfigError
from uowstress.options import (
    MAX_SEED,
    check_directory,
    check_options,
    check_output_file,
    parse_seed,
    parse_target_options,
)
from uowstress.scratch import repeated_database


@pytest.mark.parametrize("kills", ["abc", "-3", "2.5", ""])
def test_a_kill_count_that_is_not_a_whole_number_of_0_or_more_is_refused(kills: str) -> None:
    with pytest.raises(ConfigError, match=r"--kills .* is not a whole number of 0 or more"):
        check_options({"kills": kills})


@pytest.mark.parametrize("kills", [None, "0", "5", 20])
def test_a_kill_count_of_0_or_more_or_none_is_taken(kills: object) -> None:
    check_options({"kills": kills})


@pytest.mark.parametrize("seed", [str(MAX_SEED + 1), "9" * 5000, "0" * 5000 + "1" * 40])
def test_a_seed_too_large_to_be_one_is_refused_with_a_usage_error(seed: str) -> None:
    # Thousands of digits would make int() raise ValueError (Python's conversion limit).
    with pytest.raises(ConfigError, match=r"--seed .* is larger than a seed can be"):
        check_options({"seed": seed})
    assert parse_seed(seed) is None


@pytest.mark.parametrize("seed", ["0", "007", str(MAX_SEED), "0" * 5000 + "12"])
def test_a_seed_of_up_to_128_bits_is_taken(seed: str) -> None:
    check_options({"seed": seed})
    assert parse_seed(seed) == int(seed.lstrip("0") or "0")


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
    with pytest.raises(
        ConfigError, match=r"^--output-dir /proc/nope: /proc takes no new files or folders"
    ):
        check_directory("--output-dir", Path("/proc/nope"))


def test_a_file_that_cannot_be_made_names_the_path_given_and_why() -> None:
    # Creating anything in /proc fails with "No such file or directory", though /proc exists.
    with pytest.raises(ConfigError) as refused:
        check_output_file("--json", Path("/proc/x.json"))
    message = str(refused.value)
    assert message.startswith("--json /proc/x.json: /proc takes no new files or folders"), message
    assert "--json /proc:" not in message


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


@pytest.mark.parametrize(
    ("urls", "repeated"),
    [
        (["sqlite://", "sqlite://"], None),  # two scratch files
        (["sqlite:///a.db", "sqlite:///b.db", "sqlite:///a.db"], (0, 2)),
        (["postgresql://root@h/test", "postgresql://root@h:5432/test"], (0, 1)),
        (["postgresql://root@h/test", "postgresql://root@h/other"], None),
        (["mysql://root:@h/test", "mysql+pymysql://root@h:3306/test"], (0, 1)),
        (["postgresql://root@h:5433/test", "postgresql://root@h/test"], None),
        (["nonsense", "nonsense"], None),  # not URLs: the URL check says why
    ],
)
def test_a_database_named_twice_is_found(urls: list[str], repeated: tuple[int, int] | None) -> None:
    assert repeated_database(urls) == repeated
