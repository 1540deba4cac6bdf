"""Checks for the whole suite."""

from __future__ import annotations

import pytest

import ocs
import ocs.charging.pipeline
import ocs.diameter.server
import ocs.radius.front


def pytest_sessionstart(session: pytest.Session) -> None:
    """An edited module must not be tested through its older compiled form."""
    stale = ocs.stale_compiled()
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}; run "
            "`.venv/bin/python scripts/build_native.py` (make test does) or set OCS_NATIVE=0",
            returncode=4,
        )
