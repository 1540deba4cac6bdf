"""The operations endpoint on the loop: routes, status codes, limits; and ``ocs status``'s
formatting. Loopback only; the daemon end to end is tests/integration/test_ops.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry, Counter

from ocs.config import parse_config
from ocs.ops.http import OpsEndpoint, Readiness
from ocs.ops.status_client import StatusUnavailable, format_status, status_url


async def _get(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def endpoint():
    registry = CollectorRegistry()
    Counter("ocs_test_requests_total", "test", registry=registry).inc(3)
    state = {"ready": True}
    ops = OpsEndpoint(
        registry=registry,
        readiness=lambda: Readiness(ready=state["ready"], detail={"ready": state["ready"]}),
        status=lambda: {"version": "x", "pid": 1},
    )
    port = await ops.start("127.0.0.1", 0)
    yield port, state
    await ops.close(1.0)


async def test_metrics_healthz_status(endpoint) -> None:
    port, _ = endpoint
    code, headers, body = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 200 and b"ocs_test_requests_total 3.0" in body
    assert headers["Content-Type"].startswith("text/plain")
    code, _, body = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert (code, body) == (200, b"ok\n")
    code, headers, body = await _get(port, b"GET /status HTTP/1.0\r\n\r\n")
    assert code == 200 and json.loads(body) == {"version": "x", "pid": 1}
    assert headers["Content-Type"] == "application/json"


async def test_openmetrics_when_asked(endpoint) -> None:
    port, _ = endpoint
    accept = b"Accept: application/openmetrics-text; version=1.0.0\r\n"
    code, headers, body = await _get(port, b"GET /metrics HTTP/1.1\r\n" + accept + b"\r\n")
    assert code == 200 and "openmetrics" in headers["Content-Type"] and body.endswith(b"# EOF\n")


async def test_readyz_follows_readiness(endpoint) -> None:
    port, state = endpoint
    assert (await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n"))[0] == 200
    state["ready"] = False
    code, _, body = await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n")
    assert code == 503 and json.loads(body) == {"ready": False}


async def test_errors(endpoint) -> None:
    port, _ = endpoint
    assert (await _get(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
    assert (await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await _get(port, b"garbage\r\n\r\n"))[0] == 400
    code, headers, body = await _get(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert code == 200 and body == b"" and headers["Content-Length"] == "3"


async def test_a_silent_client_does_not_block_others(endpoint) -> None:
    port, _ = endpoint
    _reader, idle = await asyncio.open_connection("127.0.0.1", port)  # sends nothing
    try:
        assert (await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
    finally:
        idle.close()


def test_status_url_from_metrics_listen() -> None:
    config = parse_config({"metrics": {"listen": "0.0.0.0:9812"}}, {}, "t.toml")
    assert status_url(config) == "http://127.0.0.1:9812/status"
    config = parse_config({"metrics": {"listen": "[::1]:9900"}}, {}, "t.toml")
    assert status_url(config) == "http://[::1]:9900/status"
    with pytest.raises(StatusUnavailable, match="picks a free port"):
        status_url(parse_config({"metrics": {"listen": "127.0.0.1:0"}}, {}, "t.toml"))
    with pytest.raises(StatusUnavailable, match=r"metrics\.enabled = false"):
        status_url(parse_config({"metrics": {"enabled": False}}, {}, "t.toml"))


def test_format_status_tolerates_missing_parts() -> None:
    text = format_status(
        {
            "version": "0.1.0",
            "pid": 42,
            "uptime_s": 7300.0,
            "ready": {"ready": True, "reason": "database reachable"},
            "database": {"up": True},
            "cache": {"entries": 8, "identities": 16, "oldest_age_s": 1.5, "max_stale_s": 300},
            "loader": {"last_success_unix": 1_700_000_000, "last_success_age_s": 2.0},
            "spool": {"bytes": 0},
            "sessions": {"active": 3, "reservations": 1},
            "radius": {"listeners": [{"kind": "auth", "address": "127.0.0.1:1812"}], "clients": 2},
            "diameter": {"listeners": ["127.0.0.1:3868"], "peers_by_state": {"open": 2}},
        }
    )
    assert "ready" in text and "yes: database reachable" in text
    assert "8 accounts, 16 identities" in text
    assert "auth 127.0.0.1:1812; 2 clients" in text
    assert "peers: 2 open" in text
    assert "2.0 h" in text  # uptime
    assert format_status({})  # nothing known: still a summary, no exception
