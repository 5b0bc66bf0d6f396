"""The wheel ships what `uowstress run` needs to work from an installed package."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the wheel")
def test_the_wheel_holds_the_performance_suites(tmp_path: Path) -> None:
    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("uowstress-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    suites = sorted((ROOT / "tests" / "performance").glob("*.py"))
    assert any(p.name == "test_state_machines.py" for p in suites)
    for suite in suites:
        assert f"uowstress/_suites/{suite.name}" in names
    # Only the suites: nothing else of the tests comes along.
    assert not any(name.startswith(("tests/", "uowstress/_suites/__pycache__")) for name in names)
