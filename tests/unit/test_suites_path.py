"""Where `uowstress run` finds its suites: --path as given, else a default."""

from __future__ import annotations

from pathlib import Path

import pytest

from uowstress import runner
from uowstress.errors import ConfigError
from uowstress.options import DEFAULT_PATH
from uowstress.runner import suites_path

SUITES = sorted(p.name for p in runner.CHECKOUT_SUITES.glob("test_*.py"))


def test_the_default_folder_in_the_working_directory_is_used_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / DEFAULT_PATH).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert suites_path(None) == DEFAULT_PATH


def test_without_it_the_packaged_suites_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = tmp_path / "site-packages" / "uowstress" / "_suites"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(runner, "PACKAGED_SUITES", packaged)
    monkeypatch.chdir(tmp_path)
    assert suites_path(None) == str(packaged)


def test_in_a_checkout_without_packaged_suites_the_checkouts_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PACKAGED_SUITES", tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    found = Path(suites_path(None))
    assert found.is_absolute()
    assert sorted(p.name for p in found.glob("test_*.py")) == SUITES
    assert "test_simple_uow_performance.py" in SUITES


def test_with_no_suites_anywhere_the_error_says_to_give_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PACKAGED_SUITES", tmp_path / "missing")
    monkeypatch.setattr(runner, "CHECKOUT_SUITES", tmp_path / "missing too")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="give --path"):
        suites_path(None)


@pytest.mark.parametrize("given", ["my/suites", DEFAULT_PATH])
def test_a_path_the_user_gave_is_kept_even_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    # Even the default's spelling: typed by the user, it must not fall back to other suites.
    monkeypatch.chdir(tmp_path)
    assert suites_path(given) == given
