"""Property-based tests of the account API from its own OpenAPI document (schemathesis): a real
``ocs api`` process, the demo data, a token that may do everything. Bounded: 10 examples per
operation and phase, a fixed seed, about 15 s."""

from __future__ import annotations

import subprocess

import pytest
from support import BIN, ROOT, create_token, run_ocs

pytestmark = pytest.mark.integration

CHECKS = (
    "not_a_server_error",  # no 5xx, whatever the input
    "status_code_conformance",  # every status is one the document lists
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",  # every body matches its schema
)


def test_the_api_keeps_its_spec_under_generated_requests(dsn: str, apis, tmp_path) -> None:
    assert run_ocs("demo", "load", dsn=dsn).code == 0
    token = create_token(dsn, "helpdesk", "--manage-operators")
    api = apis(dsn, OCS_API__RATE_LIMIT_PER_S="100000", OCS_API__RATE_BURST_REQUESTS="100000")
    done = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            str(ROOT / "docs" / "openapi.json"),  # equal to the served one (test_api.py)
            "--url",
            api.url,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--workers",  # one: CPython 3.11's ast.parse is not thread-safe (gh-106905), and
            "1",  # hypothesis parses lambdas' source while schemathesis generates cases
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-8000:]
    assert "passed" in report and "Server error" not in report
    assert "Traceback" not in api.output()
