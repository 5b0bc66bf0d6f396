"""A run stopped by SIGTERM (a CI timeout, `kill`) drops what it set up on the server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from humanoid_training.persistence.engine import normalize_url


def _scratch_schemas(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'uows%'")
            ).scalars()
            return set(names)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql")]
)
def test_a_run_stopped_by_sigterm_drops_its_scratch_schema(server_url: str, tmp_path: Path) -> None:
    before = _scratch_schemas(server_url)
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from uowstress.cli import main; main()",
            "run",
            "--db-url",
            server_url,
            "--kills",
            "0",
            "--output-dir",
            str(tmp_path / "reports"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _scratch_schemas(server_url) - before:
            assert run.poll() is None, "the run ended before it set up its scratch schema"
            assert time.monotonic() < deadline, "no scratch schema appeared within 120 s"
            time.sleep(0.2)
        time.sleep(1)  # most likely into the run's scenarios; anywhere must clean up
        run.send_signal(signal.SIGTERM)
        _out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    # Ended by the interrupt unwinding (exit 1 or 2, wherever it landed), not by the signal.
    assert run.returncode > 0, err[-2000:]
    assert _scratch_schemas(server_url) - before == set()
