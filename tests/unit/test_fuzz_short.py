"""The short coverage-guided run of ``make test`` (issue 14): both receive paths under atheris
for a few seconds each, from the committed seed corpus. ``make fuzz`` runs a million inputs
per path. A missing atheris fails in CI (it is a dev dependency)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS_PER_PATH = 9


def test_both_receive_paths_under_the_fuzzer(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("atheris is a dev dependency: pip install -e '.[dev]'")
        pytest.skip("atheris is not installed")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "run.py"),
            "radius",
            "diameter",
            "--seconds",
            str(SECONDS_PER_PATH),
            "--work",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["target"] for r in results] == ["radius", "diameter"]
    for result in results:
        print(f"\n{result}")
        assert result["exit_code"] == 0, result
        assert result["inputs"] > 1000, result
        assert result["coverage_edges"] > 300, result
