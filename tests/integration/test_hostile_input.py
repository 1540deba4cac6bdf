"""Hostile bytes never reach SQL (issue 14): identities, session ids and origins that are not
text PostgreSQL takes (a NUL, bytes that are not UTF-8, control characters, too long) are
answered as unknown and counted by cause, with no SQL error and no traceback; and a value the
database does refuse as data is never taken for the database being down.

The daemon runs as a subprocess against a real PostgreSQL (RADIUS and Diameter on free
loopback ports); the store-level tests use the real pool."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from support import ROOT, exchange, free_port, metric, write_config

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from diameter_peer import Peer, ccr, result_code

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging, SourceRefused, UsageReport
from ocs.charging.sessions import SessionBook
from ocs.core.identity import IdentityKind
from ocs.core.ledger import Report, ReportKind
from ocs.core.model import GrantLimits, RefusalReason, Tariff, Usage
from ocs.diameter import codec as dcodec
from ocs.metrics import Metrics
from ocs.radius import codec
from ocs.store.source import PostgresAccounts

pytestmark = pytest.mark.integration

SECRET = codec.SharedSecret(b"testing123")

# (User-Name octets, the cause it is counted under)
BAD_NAMES = [
    (b"prepaid-ok\x00", "nul_byte"),
    (b"\x00", "nul_byte"),
    (b"pre\xffpaid", "invalid_utf8"),
    (b"\xc3\x28", "invalid_utf8"),
    (b"\xed\xa0\x80", "invalid_utf8"),  # an encoded surrogate: not UTF-8
    (b"prepaid\x1bok", "control_character"),
    (b"prepaid\x7fok", "control_character"),
    (b"\xc2\x85x", "control_character"),  # U+0085, a C1 control
]


@pytest.fixture
def daemon(dsn: str, daemons, tmp_path: Path):
    auth, acct = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    diameter, metrics = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    config = write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
graceful_timeout_s = 5
[log]
level = "debug"
[metrics]
listen = "127.0.0.1:{metrics}"
[usage]
spool_file = "{tmp_path / "spool" / "usage.spool"}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "testing123"
[diameter]
enabled = true
listen = ["127.0.0.1:{diameter}"]
[[diameter.peers]]
origin_host = "*.localdomain"
""",
    )
    proc = daemons("--config", str(config), "--load-demo", dsn=dsn)
    proc.wait_for("msg='ready")
    yield {"auth": auth, "acct": acct, "diameter": diameter, "metrics": metrics}, proc
    assert proc.stop() == 0
    out = proc.output()
    assert "Traceback" not in out
    assert "database unavailable" not in out
    assert "CharacterNotInRepertoire" not in out


def access(name: bytes, identifier: int) -> bytes:
    return codec.encode_request(
        codec.ACCESS_REQUEST,
        identifier,
        SECRET,
        [(codec.USER_NAME, name), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
        message_authenticator=True,
    )


def accounting(
    status: int,
    name: bytes,
    session: bytes,
    *,
    seconds: int = 0,
    identifier: int = 1,
    nas_id: bytes | None = None,
) -> bytes:
    attributes = [
        (codec.USER_NAME, name),
        codec.attr_int(codec.ACCT_STATUS_TYPE, status),
        (codec.ACCT_SESSION_ID, session),
        (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
        codec.attr_int(codec.ACCT_SESSION_TIME, seconds),
    ]
    if nas_id is not None:
        attributes.append((codec.NAS_IDENTIFIER, nas_id))
    return codec.encode_request(
        codec.ACCOUNTING_REQUEST, identifier, SECRET, attributes, message_authenticator=True
    )


def ready(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
        return int(answer.status)


def test_radius_auth_and_accounting_with_hostile_names(daemon, dsn: str) -> None:
    ports, proc = daemon
    expected: dict[str, int] = {}
    for n, (name, cause) in enumerate(BAD_NAMES):
        reply = exchange(ports["auth"], access(name, n))
        assert reply is not None, name  # answered, not left for the NAS to retry
        assert reply.code == codec.ACCESS_REJECT, name
        assert reply.get(codec.REPLY_MESSAGE) == b"unknown account"
        expected[cause] = expected.get(cause, 0) + 1
    # Accounting: Start and Stop for each, answered; the usage kept, escaped, with its reason.
    for n, (name, cause) in enumerate(BAD_NAMES):
        session = f"hostile-{n}".encode()
        for status, seconds in ((1, 0), (2, 42)):
            request = accounting(status, name, session, seconds=seconds, identifier=n)
            reply = exchange(ports["acct"], request)
            assert reply is not None, name
            assert reply.code == codec.ACCOUNTING_RESPONSE
            expected[cause] += 1
    # A NUL in Acct-Session-Id and in NAS-Identifier (the name is a real account's).
    reply = exchange(ports["acct"], accounting(2, b"postpaid", b"s\x00x", seconds=7))
    assert reply is not None and reply.code == codec.ACCOUNTING_RESPONSE
    reply = exchange(
        ports["acct"], accounting(2, b"postpaid", b"nas-s", seconds=8, nas_id=b"n\x00as")
    )
    assert reply is not None and reply.code == codec.ACCOUNTING_RESPONSE
    # Accounting-On from that NAS: answered, closes nothing, no SQL.
    reply = exchange(ports["acct"], accounting(7, b"postpaid", b"on", nas_id=b"n\x00as"))
    assert reply is not None and reply.code == codec.ACCOUNTING_RESPONSE

    for cause, count in expected.items():
        assert (
            metric(ports["metrics"], "ocs_invalid_identities_total", protocol="radius", cause=cause)
            == count
        ), cause
    assert metric(ports["metrics"], "ocs_database_errors_total") == 0
    assert metric(ports["metrics"], "ocs_database_up") == 1
    assert metric(ports["metrics"], "ocs_stale_policy_applied_total") == 0
    assert ready(ports["metrics"]) == 200

    async def rows() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(
                "SELECT session_key, origin, identity, reason, seconds, final "
                "FROM unmatched_usage ORDER BY id"
            )
        finally:
            await conn.close()

    kept = asyncio.run(rows())
    by_session = {r["session_key"]: r for r in kept}
    assert by_session["hostile-0"]["identity"] == "prepaid-ok\\x00"
    assert by_session["hostile-0"]["reason"] == "identity_nul_byte"
    assert by_session["hostile-2"]["identity"] == "pre\\xffpaid"
    assert by_session["hostile-2"]["reason"] == "identity_invalid_utf8"
    assert by_session["hostile-5"]["reason"] == "identity_control_character"
    assert by_session["s\\x00x"]["reason"] == "session_id_nul_byte"
    assert by_session["s\\x00x"]["seconds"] == 7
    assert by_session["nas-s"]["reason"] == "origin_nul_byte"
    assert by_session["nas-s"]["origin"] == "n\\x00as"
    # Start and Stop of every hostile name, plus the two bad-session Stops: nothing dropped.
    assert len(kept) == 2 * len(BAD_NAMES) + 2
    assert sum(r["seconds"] for r in kept if r["final"]) == 42 * len(BAD_NAMES) + 7 + 8
    assert "Traceback" not in proc.output()


def test_diameter_hostile_identities_and_session_ids(daemon) -> None:
    ports, _proc = daemon

    async def scenario() -> None:
        peer = await Peer.connect("127.0.0.1", ports["diameter"])
        await peer.open()
        for n, (value, expected) in enumerate(
            [
                ("prepaid-ok\x00", 5030),
                ("pre\x1bpaid", 5030),
                ("x" * 300, 5030),
            ]
        ):
            answer = await peer.request(ccr(f"pcef;bad;{n}", 1, 0, user=value))
            assert result_code(answer) == expected, value
            answer = await peer.request(ccr(f"pcef;bad-e164;{n}", 1, 0, e164=value))
            assert result_code(answer) == expected, value
        # A Session-Id that cannot key SQL: 5004 with the AVP named.
        for session in ("pcef;\x00;1", "pcef;\x01", "p" * 2000):
            answer = await peer.request(ccr(session, 1, 0, user="prepaid-ok"))
            assert result_code(answer) == dcodec.DIAMETER_INVALID_AVP_VALUE, session
            failed = answer.find(dcodec.AVP_FAILED_AVP)
            assert failed is not None
            assert failed.grouped()[0].code == dcodec.AVP_SESSION_ID
        # A CCR-E with a NUL identity: 5030 too; the connection still serves good requests.
        answer = await peer.request(ccr("pcef;ev;1", 4, 0, user="\x00", action=0))
        assert result_code(answer) == 5030
        answer = await peer.request(ccr("pcef;good;1", 1, 0, user="postpaid"))
        assert result_code(answer) == 2001
        peer.close()

    asyncio.run(scenario())
    port = ports["metrics"]
    assert metric(port, "ocs_invalid_identities_total", protocol="diameter", cause="nul_byte") == 3
    assert (
        metric(port, "ocs_invalid_identities_total", protocol="diameter", cause="control_character")
        == 2
    )
    assert metric(port, "ocs_invalid_identities_total", protocol="diameter", cause="too_long") == 2
    assert metric(port, "ocs_database_errors_total") == 0
    assert ready(port) == 200


class _Wall:
    def __init__(self) -> None:
        self.mono_now = 1000.0

    def wall(self):  # type: ignore[no-untyped-def]
        from datetime import UTC, datetime

        return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def mono(self) -> float:
        return self.mono_now


async def test_a_data_error_is_not_an_outage(dsn: str) -> None:
    """Past the fronts' checks (a caller that skips them): PostgreSQL refuses the value, and
    that is the input's fault: SourceRefused, counted, the pipeline still healthy."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    metrics = Metrics()
    try:
        source = PostgresAccounts(pool, metrics=metrics)
        with pytest.raises(SourceRefused):
            await source.find_account(IdentityKind.USER_NAME, "a\x00b")
        with pytest.raises(SourceRefused):
            await source.find_account(IdentityKind.USER_NAME, "a\ud800b")
        report = UsageReport(
            source="radius",
            origin="nas\x00",
            session_key="s",
            entry=Report(
                kind=ReportKind.FINAL,
                account_id=0,
                uid="k\x00",
                report_key="stop|1|0",
                received_at=datetime(2026, 11, 22, tzinfo=UTC),
                time_zone=UTC,
                tariff=Tariff(),
                usage=Usage(seconds=1),
            ),
        )
        with pytest.raises(SourceRefused):
            await source.record_unmatched(report, "user_name", "x", "unknown_identity")
        with pytest.raises(SourceRefused):
            await source.session_generations("radius", "nas\x00", "s")
        assert (
            metrics.registry.get_sample_value(
                "ocs_database_refused_total", {"operation": "find_account"}
            )
            == 2
        )
        cache = AccountCache()  # not authoritative: the identity must be asked for
        clock = _Wall()
        charging = Charging(
            cache=cache,
            sessions=SessionBook(),
            source=source,
            sink=source,
            limits=GrantLimits(),
            policy=CachePolicy(),
            clock=clock,
        )
        decision = await charging.admit(IdentityKind.USER_NAME, "evil\x00")
        assert decision.reason is RefusalReason.UNKNOWN_ACCOUNT
        assert charging.source_healthy
        assert charging._source_usable(clock.mono())  # no retry pause: not an outage
        assert charging.stats.source_errors == 0
        assert charging.stats.stale_policy_applied == 0
        assert charging.stats.source_refused == 1
        assert await charging.account(IdentityKind.USER_NAME, "evil\x00") is None
        assert charging.stats.source_refused == 1  # remembered as unknown: not asked again
        assert json.dumps(charging.stats.decisions) == '{"unknown_account": 1}'
    finally:
        await pool.close()
