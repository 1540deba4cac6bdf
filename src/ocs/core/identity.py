"""Subscriber identities: the kinds an account can be found by, and their normal form.

An identity is stored and looked up in normal form, so "+1 555-000-0001" from a SIP switch finds
the account that was given "15550000001".
"""

from enum import StrEnum


class IdentityKind(StrEnum):
    USER_NAME = "user_name"  # RADIUS User-Name, Diameter User-Name
    E164 = "e164"  # MSISDN / phone number (Subscription-Id END_USER_E164)
    IMSI = "imsi"  # END_USER_IMSI
    SIP_URI = "sip_uri"  # END_USER_SIP_URI
    NAI = "nai"  # END_USER_NAI
    CALLING_STATION_ID = "calling_station_id"  # RADIUS Calling-Station-Id
    PRIVATE = "private"  # END_USER_PRIVATE


class IdentityError(ValueError):
    pass


_DIGIT_KINDS = (IdentityKind.E164, IdentityKind.IMSI)


def normalize_identity(kind: IdentityKind, value: str) -> str:
    """The stored form of ``value``: trimmed; E.164 and IMSI as bare digits; SIP URIs and NAIs
    with a lower-case scheme and domain. Raises ``IdentityError`` for an unusable value."""
    text = value.strip()
    if not text:
        raise IdentityError(f"an empty {kind.value} identity")
    if kind in _DIGIT_KINDS:
        digits = text.removeprefix("+").replace(" ", "").replace("-", "")
        if not digits.isdigit() or not 1 <= len(digits) <= 15:
            raise IdentityError(f"{value!r} is not a valid {kind.value} number (1 to 15 digits)")
        return digits
    if kind is IdentityKind.SIP_URI:
        scheme, sep, rest = text.partition(":")
        if not sep or scheme.lower() not in ("sip", "sips", "tel"):
            raise IdentityError(f"{value!r} is not a SIP URI (sip:user@domain)")
        user, at, domain = rest.rpartition("@")
        return f"{scheme.lower()}:{user}@{domain.lower()}" if at else f"{scheme.lower()}:{rest}"
    if kind is IdentityKind.NAI:
        user, at, realm = text.rpartition("@")
        return f"{user}@{realm.lower()}" if at else text
    return text
