"""RADIUS client profiles: the table, the reply attributes per profile (golden bytes, and decoded
by name with pyrad and the shipped dictionaries), and how [[radius.clients]] resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket

from ocs.config import RADIUS_PROFILES, ConfigError, parse_config
from ocs.core.identity import IdentityKind
from ocs.core.model import CreditDecision, RateLimit, RefusalReason, ServiceUnit
from ocs.radius import codec
from ocs.radius.profiles import (
    H323_RETURN_CODES,
    PROFILES,
    SIP_RESPONSE_CODES,
    AccountingStyle,
    RateLimitStyle,
    ReplySettings,
    VolumeQuota,
    format_credit,
    rate_limit_attributes,
    volume_quota_attributes,
)
from ocs.radius.setup import RadiusSetupError, build_clients, load_dictionary

ROOT = Path(__file__).resolve().parents[2]
DICTIONARY = str(ROOT / "dictionaries" / "dictionary")
SECRET = b"testing123"
AUTHENTICATOR = bytes(range(16))

# A decision with everything a reply can carry: 1000 s, 1.234567 available, a volume quota
# of 5 GiB-words + 7 bytes (the account's tariff prices volume) and a 512/2048 kbit/s limit.
DECISION = CreditDecision(
    admitted=True,
    reason=None,
    unit=ServiceUnit.TIME,
    granted_units=1000,
    available=1_234_567,
    effective_limit=0,
    volume_quota_bytes=5 * 2**32 + 7,
    rate_limit=RateLimit(up_kbps=512, down_kbps=2048),
)
TIME_ONLY = CreditDecision(
    admitted=True,
    reason=None,
    unit=ServiceUnit.TIME,
    granted_units=60,
    available=60_000,
    effective_limit=0,
)


def settings(name: str, **kw: object) -> ReplySettings:
    profile = PROFILES[name]
    defaults: dict[str, object] = {
        "interim_interval_s": profile.interim_interval_s,
        "idle_timeout_s": 600 if profile.acts_on_idle_timeout else None,
        "currency": "EUR",
    }
    defaults.update(kw)
    return ReplySettings(profile=profile, **defaults)  # type: ignore[arg-type]


def wire(attributes: list[tuple[int, bytes]]) -> str:
    return b"".join(bytes((t, len(v) + 2)) + v for t, v in attributes).hex()


def decoded(code: int, attributes: list[tuple[int, bytes]]) -> dict[str, list[object]]:
    """The reply as pyrad reads it with the shipped dictionaries: attribute names and values."""
    reply = codec.encode_reply(code, 1, AUTHENTICATOR, codec.SharedSecret(SECRET), attributes)
    packet = AuthPacket(dict=Dictionary(DICTIONARY), secret=SECRET, packet=reply)
    names = packet.keys()  # (iterating the packet gives raw codes)
    return {key: packet[key] for key in names if key != "Message-Authenticator"}


def test_the_table_has_every_profile_the_config_allows() -> None:
    assert set(PROFILES) == set(RADIUS_PROFILES)
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert profile.documentation
    # Every refusal reason maps to an h323-return-code and a SIP response.
    assert set(H323_RETURN_CODES) == set(RefusalReason)
    assert set(SIP_RESPONSE_CODES) == set(RefusalReason)


# Golden bytes: the attributes after Message-Authenticator, per profile.
ACCEPT_GOLDEN = {
    # Session-Timeout 1000, Idle-Timeout 600, Class "ocs:adm-1"
    "generic": "1b06000003e81c0600000258190b6f63733a61646d2d31",
    # Session-Timeout, Class (echoed through the recipe's dialog variable)
    "kamailio": "1b06000003e8190b6f63733a61646d2d31",
    "opensips": "1b06000003e8190b6f63733a61646d2d31",
    # Session-Timeout, then h323-return-code 0, h323-credit-time 1000, h323-credit-amount
    # 1.23, h323-currency EUR as plain values (FreeSWITCH sets ${h323-credit-time} to them)
    "freeswitch": "1b06000003e81a09000000096703301a0c000000096606313030301a0c000000096506312e"
    "32331a0b000000096e05455552",
    # the same as Cisco IOS reads them: "h323-credit-time=1000"
    "cisco": "1b06000003e8190b6f63733a61646d2d311a1a000000096714683332332d72657475726e2d636f"
    "64653d301a1d000000096617683332332d6372656469742d74696d653d313030301a1f00000009651968"
    "3332332d6372656469742d616d6f756e743d312e32331a19000000096e13683332332d63757272656e63"
    "793d455552",
    # Session-Timeout, Idle-Timeout, Acct-Interim-Interval 300, Class, Mikrotik-Total-Limit 7
    # + Gigawords 5, Mikrotik-Rate-Limit "512k/2048k"
    "mikrotik": "1b06000003e81c060000025855060000012c190b6f63733a61646d2d311a0c00003a8c110600"
    "0000071a0c00003a8c1206000000051a1200003a8c080c3531326b2f323034386b",
    # no volume quota (accel-ppp enforces none); the rate limit as Mikrotik-Rate-Limit
    "accel-ppp": "1b06000003e81c060000025855060000012c190b6f63733a61646d2d311a1200003a8c080c35"
    "31326b2f323034386b",
    # ChilliSpot-Max-Total-Octets 7 + Gigawords 5, WISPr-Bandwidth-Max-Up/Down in bit/s
    "chillispot": "1b06000003e81c060000025855060000012c190b6f63733a61646d2d311a0c000038df03060000"
    "00071a0c000038df1706000000051a0c0000372a07060007d0001a0c0000372a0806001f4000",
}


@pytest.mark.parametrize("name", sorted(ACCEPT_GOLDEN))
def test_accept_attributes_golden_bytes(name: str) -> None:
    assert wire(settings(name).accept_attributes(DECISION, "adm-1")) == ACCEPT_GOLDEN[name]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "generic",
            {"Session-Timeout": [1000], "Idle-Timeout": [600], "Class": [b"ocs:adm-1"]},
        ),
        ("kamailio", {"Session-Timeout": [1000], "Class": [b"ocs:adm-1"]}),
        (
            "cisco",
            {
                "Session-Timeout": [1000],
                "Class": [b"ocs:adm-1"],
                "h323-return-code": ["h323-return-code=0"],
                "h323-credit-time": ["h323-credit-time=1000"],
                "h323-credit-amount": ["h323-credit-amount=1.23"],
                "h323-currency": ["h323-currency=EUR"],
            },
        ),
        (
            "freeswitch",
            {
                "Session-Timeout": [1000],
                "h323-return-code": ["0"],
                "h323-credit-time": ["1000"],
                "h323-credit-amount": ["1.23"],
                "h323-currency": ["EUR"],
            },
        ),
        (
            "mikrotik",
            {
                "Session-Timeout": [1000],
                "Idle-Timeout": [600],
                "Acct-Interim-Interval": [300],
                "Class": [b"ocs:adm-1"],
                "Mikrotik-Total-Limit": [7],
                "Mikrotik-Total-Limit-Gigawords": [5],
                "Mikrotik-Rate-Limit": ["512k/2048k"],
            },
        ),
        (
            "chillispot",
            {
                "Session-Timeout": [1000],
                "Idle-Timeout": [600],
                "Acct-Interim-Interval": [300],
                "Class": [b"ocs:adm-1"],
                "ChilliSpot-Max-Total-Octets": [7],
                "ChilliSpot-Max-Total-Gigawords": [5],
                "WISPr-Bandwidth-Max-Up": [512_000],
                "WISPr-Bandwidth-Max-Down": [2_048_000],
            },
        ),
    ],
)
def test_accept_attributes_decode_by_name(name: str, expected: dict[str, list[object]]) -> None:
    attributes = settings(name).accept_attributes(DECISION, "adm-1")
    assert decoded(codec.ACCESS_ACCEPT, attributes) == expected


@pytest.mark.parametrize("name", ["mikrotik", "chillispot", "accel-ppp", "generic"])
def test_no_volume_quota_or_rate_limit_for_a_time_only_account(name: str) -> None:
    names = set(decoded(codec.ACCESS_ACCEPT, settings(name).accept_attributes(TIME_ONLY, "a")))
    assert not {n for n in names if "Limit" in n or "Octets" in n or "Bandwidth" in n}
    assert "Session-Timeout" in names


@pytest.mark.parametrize(
    ("reason", "sip_code", "h323_code", "text"),
    [
        (RefusalReason.INSUFFICIENT_CREDIT, 402, 4, "insufficient credit"),
        (RefusalReason.UNKNOWN_ACCOUNT, 403, 1, "unknown account"),
        (RefusalReason.BLOCKED, 403, 7, "account blocked"),
        (RefusalReason.CLOSED, 403, 5, "account closed"),
        (RefusalReason.TOO_MANY_SESSIONS, 403, 3, "too many sessions"),
        (RefusalReason.SETUP_RATE_EXCEEDED, 403, 3, "session setup rate exceeded"),
        (RefusalReason.BAD_CREDENTIAL, 403, 2, "authentication failed"),
        (RefusalReason.CREDIT_DATA_UNAVAILABLE, 503, 8, "credit data unavailable"),
        (None, 403, 1, "unknown account"),
    ],
)
def test_reject_attributes_map_each_reason(
    reason: RefusalReason | None, sip_code: int, h323_code: int, text: str
) -> None:
    kamailio = decoded(codec.ACCESS_REJECT, settings("kamailio").reject_attributes(reason))
    assert kamailio == {"Reply-Message": [text], "Sip-Response-Code": [sip_code]}
    cisco = decoded(codec.ACCESS_REJECT, settings("cisco").reject_attributes(reason))
    assert cisco == {"Reply-Message": [text], "h323-return-code": [f"h323-return-code={h323_code}"]}
    freeswitch = decoded(codec.ACCESS_REJECT, settings("freeswitch").reject_attributes(reason))
    assert freeswitch["h323-return-code"] == [str(h323_code)]
    generic = decoded(codec.ACCESS_REJECT, settings("generic").reject_attributes(reason))
    assert generic == {"Reply-Message": [text]}


def test_reject_golden_bytes() -> None:
    kamailio = settings("kamailio").reject_attributes(RefusalReason.INSUFFICIENT_CREDIT)
    assert wire(kamailio) == "1215696e73756666696369656e7420637265646974660600000192"
    cisco = settings("cisco").reject_attributes(RefusalReason.BLOCKED)
    assert wire(cisco) == (
        "12116163636f756e7420626c6f636b65641a1a000000096714683332332d72657475726e2d636f64653d37"
    )


def test_no_currency_configured_sends_none() -> None:
    names = decoded(
        codec.ACCESS_ACCEPT, settings("cisco", currency="").accept_attributes(DECISION, "a")
    )
    assert "h323-currency" not in names and "h323-credit-amount" in names


def test_class_is_cut_to_fit() -> None:
    (klass,) = [v for t, v in settings("generic").accept_attributes(DECISION, "x" * 400) if t == 25]
    assert len(klass) == 253 and klass.startswith(b"ocs:x")


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (1_234_567, "1.23"),
        (9_999, "0.00"),
        (0, "0.00"),
        (-5_000_000, "0.00"),
        (10**12, "1000000.00"),
    ],
)
def test_credit_amount_is_rounded_down_never_negative(micros: int, text: str) -> None:
    assert format_credit(micros) == text


@pytest.mark.parametrize(
    ("quota", "low", "gigawords"),
    [(0, 0, None), (2**32 - 1, 2**32 - 1, None), (2**32, 0, 1), (3 * 2**32 + 5, 5, 3)],
)
def test_volume_quota_splits_into_gigawords(quota: int, low: int, gigawords: int | None) -> None:
    for style, vendor, low_type, high_type in (
        (VolumeQuota.MIKROTIK, 14988, 17, 18),
        (VolumeQuota.CHILLISPOT, 14559, 3, 23),
    ):
        attributes = volume_quota_attributes(style, quota)
        expected = [codec.attr_vsa(vendor, low_type, low.to_bytes(4, "big"))]
        if gigawords is not None:
            expected.append(codec.attr_vsa(vendor, high_type, gigawords.to_bytes(4, "big")))
        assert attributes == expected
    assert volume_quota_attributes(VolumeQuota.NONE, quota) == []
    with pytest.raises(ValueError, match="negative"):
        volume_quota_attributes(VolumeQuota.MIKROTIK, -1)


def test_wispr_bandwidth_saturates_at_32_bits() -> None:
    up, down = rate_limit_attributes(RateLimitStyle.WISPR, 10_000_000, 1)
    assert up == codec.attr_vsa(14122, 7, (2**32 - 1).to_bytes(4, "big"))
    assert down == codec.attr_vsa(14122, 8, (1000).to_bytes(4, "big"))
    assert rate_limit_attributes(RateLimitStyle.NONE, 1, 1) == []


# --- [[radius.clients]] → RadiusClient -----------------------------------------------------


def clients(*entries: dict[str, object], **radius: object) -> list:
    data = {"radius": {"clients": list(entries), **radius}}
    config = parse_config(data, env={}, source="t")
    table = build_clients(config.radius, load_dictionary(DICTIONARY))
    return [table.lookup(str(e["address"])) for e in entries]


def test_a_profile_chooses_identity_accounting_and_replies() -> None:
    (kamailio, cisco, generic, overridden) = clients(
        {"address": "10.0.0.1", "secret": "s", "profile": "kamailio"},
        {"address": "10.0.0.2", "secret": "s", "profile": "cisco"},
        {"address": "10.0.0.3", "secret": "s"},
        {
            "address": "10.0.0.4",
            "secret": "s",
            "profile": "mikrotik",
            "identity_attribute": "Calling-Station-Id",
            "identity_kind": "calling_station_id",
            "acct_interim_interval_s": 60,
            "idle_timeout_s": 900,
            "disconnect_port": 1700,
        },
        identity_kind="nai",
    )
    assert (kamailio.identity.name, kamailio.identity_kind) == ("User-Name", IdentityKind.E164)
    assert kamailio.accounting is AccountingStyle.TRANSACTION
    assert kamailio.disconnect_port is None
    assert kamailio.call_key.name == "Acct-Session-Id"
    assert cisco.identity.name == "Calling-Station-Id" and cisco.disconnect_port == 1700
    # generic keeps the [radius] identity settings
    assert (generic.identity.name, generic.identity_kind) == ("User-Name", IdentityKind.NAI)
    assert generic.reply.interim_interval_s is None
    assert overridden.identity.name == "Calling-Station-Id"
    assert overridden.identity_kind is IdentityKind.CALLING_STATION_ID
    assert overridden.reply.interim_interval_s == 60
    assert overridden.reply.idle_timeout_s == 900
    assert overridden.disconnect_port == 1700
    # the mikrotik default interval, and 0 turns it off
    (mikrotik, quiet) = clients(
        {"address": "10.0.0.5", "secret": "s", "profile": "mikrotik"},
        {
            "address": "10.0.0.6",
            "secret": "s",
            "profile": "chillispot",
            "acct_interim_interval_s": 0,
        },
    )
    assert mikrotik.reply.interim_interval_s == 300
    assert quiet.reply.interim_interval_s is None


def test_freeswitch_calls_are_named_by_h323_conf_id() -> None:
    (freeswitch,) = clients({"address": "10.0.0.1", "secret": "s", "profile": "freeswitch"})
    assert (freeswitch.call_key.name, freeswitch.call_key.vendor) == ("h323-conf-id", 9)
    packet = codec.parse_packet(
        codec.encode_request(
            codec.ACCOUNTING_REQUEST,
            1,
            codec.SharedSecret(b"s"),
            [codec.attr_vsa(9, 24, b"6a1e1c4a-uuid")],
            message_authenticator=False,
        )
    )
    assert freeswitch.call_key.read(packet) == "6a1e1c4a-uuid"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (
            {"profile": "kamailio", "idle_timeout_s": 60},
            "radius.clients[0].idle_timeout_s = 60: profile 'kamailio' does not act on "
            "Idle-Timeout",
        ),
        (
            {"profile": "freeswitch", "acct_interim_interval_s": 60},
            "profile 'freeswitch' does not act on Acct-Interim-Interval",
        ),
        (
            {"profile": "kamailio", "disconnect_port": 3799},
            "profile 'kamailio' takes no Disconnect-Request",
        ),
    ],
)
def test_a_setting_the_profile_does_not_act_on_is_refused(
    entry: dict[str, object], fragment: str
) -> None:
    with pytest.raises(RadiusSetupError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        clients({"address": "10.0.0.1", "secret": "s", **entry})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"clients": [{"address": "10.0.0.1", "secret": "s", "profile": "asterisk"}]},
            "expected one of generic",
        ),
        ({"currency": "eur"}, "radius.currency = 'eur' is not allowed"),
        ({"currency": "EURO"}, "ISO 4217"),
        (
            {"clients": [{"address": "10.0.0.1", "secret": "s", "disconnect_port": 0}]},
            "radius.clients[0].disconnect_port = 0 is not allowed",
        ),
    ],
)
def test_bad_profile_settings_name_the_key(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"radius": data}, env={}, source="t")
    assert fragment in str(caught.value)


def test_a_volume_grant_is_the_quota_and_the_time_is_the_configured_longest() -> None:
    volume = CreditDecision(
        admitted=True,
        reason=None,
        unit=ServiceUnit.VOLUME,
        granted_units=2**32 + 10,
        available=1_000_000,
        effective_limit=0,
    )
    names = decoded(
        codec.ACCESS_ACCEPT,
        settings("mikrotik", idle_timeout_s=None).accept_attributes(
            volume, "a", session_timeout_s=3600
        ),
    )
    assert names["Session-Timeout"] == [3600]
    assert names["Mikrotik-Total-Limit"] == [10]
    assert names["Mikrotik-Total-Limit-Gigawords"] == [1]
