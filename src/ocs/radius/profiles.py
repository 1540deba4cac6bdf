"""RADIUS client profiles: what each kind of NAS sends, and which reply attributes it acts on.

A profile is chosen per client (``[[radius.clients]] profile = "kamailio"``). The clients' own
documentation is the specification; docs/recipes/ shows each client's configuration beside its
ocs entry. Pure: the table, and functions from a ``CreditDecision`` to reply attributes.

Rules of this file:
- ``PROFILES`` is a frozen table: one ``ClientProfile`` per name, nothing computed at run time.
- Session-Timeout (the grant) is in every Access-Accept, whatever the profile; Reply-Message
  (why) in every Access-Reject. Everything else a profile adds is listed in its row, and
  ``accept_attributes`` / ``reject_attributes`` add exactly that, in a fixed order (golden
  bytes in tests/unit/test_radius_profiles.py).
- Volume quotas go out only for an account whose tariff prices volume (a volume grant, or
  ``CreditDecision.volume_quota_bytes`` beside a time grant); rate limits only for an account
  that has one.
- Amounts in text attributes (h323-credit-amount) are the available credit rounded down to the
  cent: a NAS is never told more than there is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from ocs.core.identity import IdentityKind
from ocs.core.model import REFUSAL_TEXT, CreditDecision, RefusalReason, ServiceUnit
from ocs.radius import codec

# Vendor ids (IANA Private Enterprise Numbers) of the vendor attributes below.
VENDOR_CISCO: Final = 9
VENDOR_MICROSOFT: Final = 311
VENDOR_WISPR: Final = 14122
VENDOR_CHILLISPOT: Final = 14559
VENDOR_MIKROTIK: Final = 14988
VENDOR_FREESWITCH: Final = 27880

# Cisco VoIP VSAs (Cisco "RADIUS VSA Voice Implementation Guide"); values are text.
CISCO_H323_CONF_ID: Final = 24
CISCO_H323_CREDIT_AMOUNT: Final = 101
CISCO_H323_CREDIT_TIME: Final = 102
CISCO_H323_RETURN_CODE: Final = 103
CISCO_H323_CURRENCY: Final = 110
# MikroTik RouterOS (wiki "Manual:RADIUS Client", vendor dictionary).
MIKROTIK_RATE_LIMIT: Final = 8
MIKROTIK_TOTAL_LIMIT: Final = 17
MIKROTIK_TOTAL_LIMIT_GIGAWORDS: Final = 18
# ChilliSpot / CoovaChilli.
CHILLISPOT_MAX_TOTAL_OCTETS: Final = 3
CHILLISPOT_MAX_TOTAL_GIGAWORDS: Final = 23
# WISPr (Wi-Fi Alliance), bits per second.
WISPR_BANDWIDTH_MAX_UP: Final = 7
WISPR_BANDWIDTH_MAX_DOWN: Final = 8
# draft-schulzrinne-sipping-radius-accounting / Kamailio's dictionary: the SIP final response.
SIP_RESPONSE_CODE: Final = 102

_GIGAWORD: Final = 1 << 32
_U32_MAX: Final = _GIGAWORD - 1  # WISPr's bit/s in 32 bits: about 4.29 Gbit/s at most
_CENT: Final = Decimal("0.01")


class AccountingStyle(StrEnum):
    """How a client's accounting reads (what ``front`` records from it)."""

    # Interim-Update and Stop carry the session's cumulative Acct-Session-Time and octets.
    INTERVAL = "interval"
    # Start when the call is answered, Stop when it ends, no Acct-Session-Time: the duration
    # is the time between the two (acc_radius of Kamailio and OpenSIPS).
    TRANSACTION = "transaction"


class VolumeQuota(StrEnum):
    """How a client takes a volume quota, if it does."""

    NONE = "none"
    MIKROTIK = "mikrotik"  # Mikrotik-Total-Limit + Mikrotik-Total-Limit-Gigawords
    CHILLISPOT = "chillispot"  # ChilliSpot-Max-Total-Octets + ChilliSpot-Max-Total-Gigawords


class RateLimitStyle(StrEnum):
    """How a client takes an account's bandwidth limit, if it does."""

    NONE = "none"
    MIKROTIK = "mikrotik"  # Mikrotik-Rate-Limit "up/down" in k (accel-ppp reads it too)
    WISPR = "wispr"  # WISPr-Bandwidth-Max-Up / -Down in bit/s


class H323Format(StrEnum):
    """How h323-* values are written."""

    NONE = "none"
    CISCO = "cisco"  # "h323-credit-time=3600", as Cisco IOS expects
    PLAIN = "plain"  # "3600": FreeSWITCH mod_xml_radius sets ${h323-credit-time} to the value


@dataclass(frozen=True, slots=True, kw_only=True)
class CallKey:
    """The attribute that names one call or session in accounting (Acct-Session-Id unless the
    client puts its id elsewhere): a standard attribute (vendor 0) or a vendor's."""

    name: str
    code: int
    vendor: int = 0


ACCT_SESSION_ID_KEY: Final = CallKey(name="Acct-Session-Id", code=codec.ACCT_SESSION_ID)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientProfile:
    """One row of the table: what a kind of client sends and which reply attributes it acts on.

    ``identity_attribute``/``identity_kind``: where the account is named (a client entry may
    override both). ``disconnect_port``: where it takes RFC 5176 Disconnect-Request (None:
    it takes none). ``interim_interval_s``/``idle_timeout_s``: what is sent unless the client
    entry says otherwise (None: not sent; ``sends_interim``/``sends_idle`` say whether the
    client acts on them at all). ``sip_response_code``: an Access-Reject carries the SIP code
    to answer the caller with (Kamailio/OpenSIPS turn reply attributes into AVPs).
    ``class_attribute``: Access-Accept carries a Class naming the admission, which the client
    echoes in its accounting (RFC 2865 §5.25).
    """

    name: str
    identity_attribute: str
    identity_kind: IdentityKind
    accounting: AccountingStyle
    call_key: CallKey
    disconnect_port: int | None
    h323: H323Format
    sip_response_code: bool
    class_attribute: bool
    acts_on_interim_interval: bool
    interim_interval_s: int | None
    acts_on_idle_timeout: bool
    volume_quota: VolumeQuota
    rate_limit: RateLimitStyle
    documentation: str


_E164, _USER = IdentityKind.E164, IdentityKind.USER_NAME

PROFILES: Final[Mapping[str, ClientProfile]] = MappingProxyType(
    {
        p.name: p
        for p in (
            ClientProfile(
                name="generic",
                identity_attribute="User-Name",
                identity_kind=_USER,
                accounting=AccountingStyle.INTERVAL,
                call_key=ACCT_SESSION_ID_KEY,
                disconnect_port=3799,
                h323=H323Format.NONE,
                sip_response_code=False,
                class_attribute=True,
                acts_on_interim_interval=True,
                interim_interval_s=None,
                acts_on_idle_timeout=True,
                volume_quota=VolumeQuota.NONE,
                rate_limit=RateLimitStyle.NONE,
                documentation="RFC 2865/2866: Session-Timeout, interim accounting",
            ),
            ClientProfile(
                name="kamailio",
                identity_attribute="User-Name",
                identity_kind=_E164,
                accounting=AccountingStyle.TRANSACTION,
                call_key=ACCT_SESSION_ID_KEY,  # acc_radius: the Call-ID
                disconnect_port=None,
                h323=H323Format.NONE,
                sip_response_code=True,
                class_attribute=True,  # the recipe echoes it through a dialog variable
                acts_on_interim_interval=False,
                interim_interval_s=None,
                acts_on_idle_timeout=False,
                volume_quota=VolumeQuota.NONE,
                rate_limit=RateLimitStyle.NONE,
                documentation="misc_radius, dialog timeout_avp, acc_radius: docs/recipes/kamailio",
            ),
            ClientProfile(
                name="opensips",
                identity_attribute="User-Name",
                identity_kind=_E164,
                accounting=AccountingStyle.TRANSACTION,
                call_key=ACCT_SESSION_ID_KEY,
                disconnect_port=None,
                h323=H323Format.NONE,
                sip_response_code=True,
                class_attribute=True,
                acts_on_interim_interval=False,
                interim_interval_s=None,
                acts_on_idle_timeout=False,
                volume_quota=VolumeQuota.NONE,
                rate_limit=RateLimitStyle.NONE,
                documentation="aaa_radius, dialog, acc: docs/recipes/opensips.md",
            ),
            ClientProfile(
                name="freeswitch",
                identity_attribute="Calling-Station-Id",
                identity_kind=_E164,
                accounting=AccountingStyle.INTERVAL,  # Stop carries Acct-Session-Time (billsec)
                call_key=CallKey(name="h323-conf-id", code=CISCO_H323_CONF_ID, vendor=VENDOR_CISCO),
                disconnect_port=None,
                h323=H323Format.PLAIN,
                sip_response_code=False,
                class_attribute=False,
                acts_on_interim_interval=False,
                interim_interval_s=None,
                acts_on_idle_timeout=False,
                volume_quota=VolumeQuota.NONE,
                rate_limit=RateLimitStyle.NONE,
                documentation="mod_xml_radius radius_auth: docs/recipes/freeswitch.md",
            ),
            ClientProfile(
                name="cisco",
                identity_attribute="Calling-Station-Id",
                identity_kind=_E164,
                accounting=AccountingStyle.INTERVAL,
                call_key=ACCT_SESSION_ID_KEY,
                disconnect_port=1700,
                h323=H323Format.CISCO,
                sip_response_code=False,
                class_attribute=True,
                acts_on_interim_interval=True,
                interim_interval_s=None,
                acts_on_idle_timeout=False,
                volume_quota=VolumeQuota.NONE,
                rate_limit=RateLimitStyle.NONE,
                documentation="Cisco IOS voice gateway (h323 VSAs): docs/recipes/cisco.md",
            ),
            ClientProfile(
                name="mikrotik",
                identity_attribute="User-Name",
                identity_kind=_USER,
                accounting=AccountingStyle.INTERVAL,
                call_key=ACCT_SESSION_ID_KEY,
                disconnect_port=3799,
                h323=H323Format.NONE,
                sip_response_code=False,
                class_attribute=True,
                acts_on_interim_interval=True,
                interim_interval_s=300,
                acts_on_idle_timeout=True,
                volume_quota=VolumeQuota.MIKROTIK,
                rate_limit=RateLimitStyle.MIKROTIK,
                documentation="RouterOS PPP/Hotspot: docs/recipes/mikrotik.md",
            ),
            ClientProfile(
                name="accel-ppp",
                identity_attribute="User-Name",
                identity_kind=_USER,
                accounting=AccountingStyle.INTERVAL,
                call_key=ACCT_SESSION_ID_KEY,
                disconnect_port=3799,
                h323=H323Format.NONE,
                sip_response_code=False,
                class_attribute=True,
                acts_on_interim_interval=True,
                interim_interval_s=300,
                acts_on_idle_timeout=True,
                volume_quota=VolumeQuota.NONE,
                rate_limit=RateLimitStyle.MIKROTIK,  # [shaper] vendor=Mikrotik
                documentation="accel-ppp [radius] and [shaper]: docs/recipes/accel-ppp.md",
            ),
            ClientProfile(
                name="chillispot",
                identity_attribute="User-Name",
                identity_kind=_USER,
                accounting=AccountingStyle.INTERVAL,
                call_key=ACCT_SESSION_ID_KEY,
                disconnect_port=3799,
                h323=H323Format.NONE,
                sip_response_code=False,
                class_attribute=True,
                acts_on_interim_interval=True,
                interim_interval_s=300,
                acts_on_idle_timeout=True,
                volume_quota=VolumeQuota.CHILLISPOT,
                rate_limit=RateLimitStyle.WISPR,
                documentation="ChilliSpot / CoovaChilli hotspot: docs/recipes/chillispot.md",
            ),
        )
    }
)
PROFILE_NAMES: Final = tuple(PROFILES)

# Each refusal reason → Cisco h323-return-code (Cisco IVR script codes: 1 invalid account,
# 2 invalid password, 3 account in use / call limit, 4 zero balance, 5 card expired,
# 7 user denied, 8 service not available).
H323_RETURN_CODES: Final[Mapping[RefusalReason, int]] = MappingProxyType(
    {
        RefusalReason.UNKNOWN_ACCOUNT: 1,
        RefusalReason.BAD_CREDENTIAL: 2,
        RefusalReason.TOO_MANY_SESSIONS: 3,
        RefusalReason.SETUP_RATE_EXCEEDED: 3,
        RefusalReason.INSUFFICIENT_CREDIT: 4,
        RefusalReason.CREDIT_HELD: 3,  # the credit is held by running calls: account in use
        RefusalReason.CLOSED: 5,
        RefusalReason.BLOCKED: 7,
        RefusalReason.CREDIT_DATA_UNAVAILABLE: 8,
        RefusalReason.NO_RATE: 9,  # called number blocked: nothing prices it
    }
)
H323_SUCCESS: Final = 0

# Each refusal reason → the SIP final response a proxy should answer the INVITE with.
SIP_RESPONSE_CODES: Final[Mapping[RefusalReason, int]] = MappingProxyType(
    {
        RefusalReason.INSUFFICIENT_CREDIT: 402,  # Payment Required
        RefusalReason.CREDIT_HELD: 402,
        RefusalReason.UNKNOWN_ACCOUNT: 403,
        RefusalReason.BAD_CREDENTIAL: 403,
        RefusalReason.BLOCKED: 403,
        RefusalReason.CLOSED: 403,
        RefusalReason.TOO_MANY_SESSIONS: 403,
        RefusalReason.SETUP_RATE_EXCEEDED: 403,
        RefusalReason.CREDIT_DATA_UNAVAILABLE: 503,  # the caller may retry elsewhere or later
        RefusalReason.NO_RATE: 403,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplySettings:
    """One client's reply attributes: its profile, and the values its entry configures.

    ``interim_interval_s`` / ``idle_timeout_s``: sent when set (and the profile acts on them);
    ``currency``: the ISO 4217 code sent as h323-currency ("" sends none).
    """

    profile: ClientProfile
    interim_interval_s: int | None = None
    idle_timeout_s: int | None = None
    currency: str = ""
    # What never changes between replies, encoded once (the hot path builds every Accept).
    _fixed: tuple[tuple[int, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fixed = []
        if self.idle_timeout_s is not None:
            fixed.append(codec.attr_int(codec.IDLE_TIMEOUT, self.idle_timeout_s))
        if self.interim_interval_s is not None:
            fixed.append(codec.attr_int(codec.ACCT_INTERIM_INTERVAL, self.interim_interval_s))
        object.__setattr__(self, "_fixed", tuple(fixed))

    def accept_attributes(
        self,
        decision: CreditDecision,
        admission: str | None = None,
        *,
        session_timeout_s: int | None = None,
    ) -> list[tuple[int, bytes]]:
        """An Access-Accept's attributes after Message-Authenticator: Session-Timeout first,
        then what the profile acts on. ``admission`` names the admission for Class;
        ``session_timeout_s`` is the session's time (default: a time grant's seconds). A volume
        grant (``decision.unit`` VOLUME) is the volume quota itself."""
        profile = self.profile
        seconds = decision.granted_units if session_timeout_s is None else session_timeout_s
        out = [codec.attr_int(codec.SESSION_TIMEOUT, seconds), *self._fixed]
        if profile.class_attribute and admission is not None:
            out.append((codec.CLASS, class_value(admission)))
        if profile.h323 is not H323Format.NONE:
            out.extend(self._h323(decision, H323_SUCCESS))
        quota = (
            decision.granted_units
            if decision.unit is ServiceUnit.VOLUME
            else decision.volume_quota_bytes
        )
        if quota is not None and profile.volume_quota is not VolumeQuota.NONE:
            out.extend(volume_quota_attributes(profile.volume_quota, quota))
        limit = decision.rate_limit
        if limit is not None and profile.rate_limit is not RateLimitStyle.NONE:
            out.extend(rate_limit_attributes(profile.rate_limit, limit.up_kbps, limit.down_kbps))
        return out

    def reject_attributes(
        self, reason: RefusalReason | None, *, text: str | None = None
    ) -> list[tuple[int, bytes]]:
        """An Access-Reject's attributes after Message-Authenticator: Reply-Message first
        (``text``, else the reason's own text). ``reason`` None: the request named no usable
        identity (an unknown account)."""
        why = reason if reason is not None else RefusalReason.UNKNOWN_ACCOUNT
        out = [codec.attr_str(codec.REPLY_MESSAGE, text or REFUSAL_TEXT[why])]
        profile = self.profile
        if profile.sip_response_code:
            out.append(codec.attr_int(SIP_RESPONSE_CODE, SIP_RESPONSE_CODES[why]))
        if profile.h323 is not H323Format.NONE:
            out.append(self._h323_text(CISCO_H323_RETURN_CODE, str(H323_RETURN_CODES[why])))
        return out

    def _h323(self, decision: CreditDecision, return_code: int) -> list[tuple[int, bytes]]:
        out = [
            self._h323_text(CISCO_H323_RETURN_CODE, str(return_code)),
            self._h323_text(CISCO_H323_CREDIT_TIME, str(decision.granted_units)),
            self._h323_text(CISCO_H323_CREDIT_AMOUNT, format_credit(decision.available)),
        ]
        if self.currency:
            out.append(self._h323_text(CISCO_H323_CURRENCY, self.currency))
        return out

    def _h323_text(self, vendor_type: int, value: str) -> tuple[int, bytes]:
        if self.profile.h323 is H323Format.CISCO:
            value = f"{_H323_NAMES[vendor_type]}={value}"
        return codec.attr_vsa(VENDOR_CISCO, vendor_type, value.encode("ascii"))


_H323_NAMES: Final = {
    CISCO_H323_CREDIT_AMOUNT: "h323-credit-amount",
    CISCO_H323_CREDIT_TIME: "h323-credit-time",
    CISCO_H323_RETURN_CODE: "h323-return-code",
    CISCO_H323_CURRENCY: "h323-currency",
}


def format_credit(micros: int) -> str:
    """Available credit (micro-units) as text with two decimals, rounded down; never below 0."""
    amount = (Decimal(max(micros, 0)) / 1_000_000).quantize(_CENT, rounding=ROUND_DOWN)
    return f"{amount:f}"


def class_value(admission: str) -> bytes:
    """The Class attribute naming an admission: what the client echoes in its accounting
    (RFC 2865 §5.25), at most 253 octets."""
    value = ("ocs:" + admission).encode()
    return value if len(value) <= codec.MAX_ATTRIBUTE_VALUE_LENGTH else value[:253]


def volume_quota_attributes(style: VolumeQuota, quota_bytes: int) -> list[tuple[int, bytes]]:
    """A volume quota (bytes, both directions together) split into a 32-bit count and
    Gigawords, as the client reads it."""
    if quota_bytes < 0:
        raise ValueError(f"a volume quota cannot be negative, got {quota_bytes}")
    low, gigawords = quota_bytes % _GIGAWORD, quota_bytes // _GIGAWORD
    if style is VolumeQuota.MIKROTIK:
        vendor, low_type, high_type = (
            VENDOR_MIKROTIK,
            MIKROTIK_TOTAL_LIMIT,
            MIKROTIK_TOTAL_LIMIT_GIGAWORDS,
        )
    elif style is VolumeQuota.CHILLISPOT:
        vendor, low_type, high_type = (
            VENDOR_CHILLISPOT,
            CHILLISPOT_MAX_TOTAL_OCTETS,
            CHILLISPOT_MAX_TOTAL_GIGAWORDS,
        )
    else:
        return []
    out = [codec.attr_vsa(vendor, low_type, low.to_bytes(4, "big"))]
    if gigawords:
        out.append(codec.attr_vsa(vendor, high_type, gigawords.to_bytes(4, "big")))
    return out


def rate_limit_attributes(
    style: RateLimitStyle, up_kbps: int, down_kbps: int
) -> list[tuple[int, bytes]]:
    """An account's bandwidth limit as the client reads it. MikroTik's "rx/tx" is from the
    router's side: rx is what the subscriber sends (up), tx what it receives (down)."""
    if style is RateLimitStyle.MIKROTIK:
        text = f"{up_kbps}k/{down_kbps}k"
        return [codec.attr_vsa(VENDOR_MIKROTIK, MIKROTIK_RATE_LIMIT, text.encode("ascii"))]
    if style is RateLimitStyle.WISPR:
        up, down = min(up_kbps * 1000, _U32_MAX), min(down_kbps * 1000, _U32_MAX)
        return [
            codec.attr_vsa(VENDOR_WISPR, WISPR_BANDWIDTH_MAX_UP, up.to_bytes(4, "big")),
            codec.attr_vsa(VENDOR_WISPR, WISPR_BANDWIDTH_MAX_DOWN, down.to_bytes(4, "big")),
        ]
    return []
