"""`uowstress --version`, `--help` and usage errors answer without loading the tester.

Each case runs in a fresh interpreter, so that what it imported is what the command needed, not
what this test session had loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import uowstress

# What `uowstress run` works with, none of which a question to the command line needs.
HEAVY = (
    "humanoid_training",
    "hypothesis",
    "jinja2",
    "jsonschema",
    "numpy",
    "plotly",
    "psutil",
    "psycopg",
    "pydantic",
    "pymysql",
    "pytest",
    "rich",
    "scipy",
    "sqlalchemy",
    "yaml",
)
# What a run refused by its first checks still does without: pytest and the tester behind
# it, the statistics and the report renderers.
AFTER_THE_CHECKS = ("hypothesis", "jinja2", "numpy", "plotly", "pytest", "scipy")

_PROBE = textwrap.dedent(
    """
    import json, sys
    from uowstress.cli import main

    try:
        code = main(sys.argv[1:], prog_name="uowstress", standalone_mode=False)
    except SystemExit as stop:
        code = stop.code
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
    """
)


@dataclass(frozen=True)
class Answer:
    code: int | None  # None: the command returned without an exit status
    out: str
    err: str
    loaded: frozenset[str]  # the top-level packages the command imported

    def heavy(self, names: tuple[str, ...] = HEAVY) -> list[str]:
        return sorted(self.loaded.intersection(names))


def uowstress_command(*args: str, cwd: Path) -> Answer:
    """`uowstress ARGS` run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    *err, last = done.stderr.strip().splitlines()
    probe = json.loads(last)
    return Answer(probe["code"], done.stdout, "\n".join(err), frozenset(probe["loaded"]))


def test_importing_the_command_line_loads_none_of_the_tester(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, uowstress.cli; print(' '.join(sys.modules))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = {name.split(".")[0] for name in done.stdout.split()}
    assert sorted(loaded.intersection(HEAVY)) == []


def test_version_prints_the_version_without_loading_the_tester(tmp_path: Path) -> None:
    answer = uowstress_command("--version", cwd=tmp_path)
    assert answer.code == 0
    assert answer.out.strip() == f"uowstress, version {uowstress.__version__}"
    assert answer.heavy() == []


@pytest.mark.parametrize(
    "command", [[], ["run"], ["replay"], ["isolation"], ["compare"], ["cleanup"]]
)
def test_help_is_given_without_loading_the_tester(tmp_path: Path, command: list[str]) -> None:
    answer = uowstress_command(*command, "--help", cwd=tmp_path)
    assert answer.code == 0
    assert answer.out.startswith(" ".join(["Usage: uowstress", *command]) + " [OPTIONS]")
    assert answer.heavy() == []


def test_a_run_refused_by_its_first_checks_loads_neither_pytest_nor_the_renderers(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("bogus_key: 1\n")
    for args, said in (
        (["--kills", "abc"], "--kills 'abc' is not a whole number"),
        (["--config", str(config)], "unknown key 'bogus_key'"),
    ):
        answer = uowstress_command("run", *args, cwd=tmp_path)
        assert answer.code == 2
        assert said in answer.err
        assert answer.heavy(AFTER_THE_CHECKS) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--kills", "abc"], "--kills 'abc' is not a whole number"),
        (["--seed", "-1"], "--seed '-1' is not a whole number"),
        (["--reproducers-dir", "afile"], "--reproducers-dir afile: that is a file"),
    ],
)
def test_a_run_refused_by_an_option_value_loads_none_of_the_tester(
    tmp_path: Path, args: list[str], said: str
) -> None:
    (tmp_path / "afile").write_text("kept")
    answer = uowstress_command("run", *args, cwd=tmp_path)
    assert answer.code == 2
    assert said in answer.err
    assert answer.heavy() == []
    assert (tmp_path / "afile").read_text() == "kept"
