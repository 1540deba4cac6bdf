"""Subscriber identities: the kinds an account can be found by, and their normal form.

An identity is stored and looked up in normal form, so "+1 555-000-0001" from a SIP switch finds
the account that was given "15550000001".
"""

from dataclasses import dataclass
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


# --- called numbers (rating by destination) ---------------------------------------------------

_VISUAL_SEPARATORS = str.maketrans("", "", " -.()/\t")


@dataclass(frozen=True, slots=True, kw_only=True)
class DialPlan:
    """How a client writes the numbers it sends (per RADIUS client or Diameter peer).

    ``+`` always starts an international number. ``international_prefix`` (``00`` in most of
    the world, ``011`` in North America; empty for none) does too. ``national_prefix`` (the
    trunk prefix, ``0`` in most of Europe) followed by a national number means the client's
    ``country_code``. A number with neither is taken as international digits already. The
    international prefix is tested before the national one ("00" before "0").
    """

    country_code: str = ""
    international_prefix: str = "00"
    national_prefix: str = ""

    def __post_init__(self) -> None:
        for name in ("country_code", "international_prefix", "national_prefix"):
            value = getattr(self, name)
            if value and not (value.isascii() and value.isdigit() and len(value) <= 4):
                raise IdentityError(f"dial plan {name} {value!r} is not 1 to 4 digits")
        if self.national_prefix and not self.country_code:
            raise IdentityError("a dial plan with a national prefix needs its country code")


INTERNATIONAL = DialPlan()


def called_number_text(value: str) -> str:
    """The number part of what a client names a destination by: a bare number, or the user
    part of a ``sip:``/``sips:``/``tel:`` URI without parameters (``sip:+41446681800@host;
    user=phone`` → ``+41446681800``)."""
    text = value.strip().strip("<>")
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in ("sip", "sips", "tel"):
        text = rest.partition("@")[0] if "@" in rest else rest
        text = text.partition(";")[0]
    return text


def normalize_destination(value: str, plan: DialPlan = INTERNATIONAL) -> str:
    """A called number as E.164 digits (country code first, no ``+``), for the longest-prefix
    lookup. Raises ``IdentityError`` for anything that is not 1 to 15 digits once the
    client's prefixes are taken off (a ``*`` service code, letters, an empty number)."""
    text = called_number_text(value).translate(_VISUAL_SEPARATORS)
    if text.startswith("+"):
        digits = text[1:]
    elif plan.international_prefix and text.startswith(plan.international_prefix):
        digits = text[len(plan.international_prefix) :]
    elif plan.national_prefix and text.startswith(plan.national_prefix):
        digits = plan.country_code + text[len(plan.national_prefix) :]
    else:
        digits = text
    if not (digits.isascii() and digits.isdigit()) or not 1 <= len(digits) <= 15:
        raise IdentityError(f"{value!r} is not a called number (1 to 15 digits after the prefix)")
    return digits
