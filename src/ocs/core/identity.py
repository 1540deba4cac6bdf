"""Subscriber identities: the kinds an account can be found by, and their normal form.

An identity is stored and looked up in normal form, so "+1 555-000-0001" from a SIP switch finds
the account that was given "15550000001", and "<sip:alice@Example.com:5060;transport=udp>" from
a SIP proxy's Diameter Ro finds the one given "sip:alice@example.com": a SIP URI's normal form
is user@host, without the scheme, a port, parameters, headers or angle brackets, the host in
lower case (a tel: URI keeps its scheme: tel:+15550000001).
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
        return _sip_uri(value, text)
    if kind is IdentityKind.NAI:
        user, at, realm = text.rpartition("@")
        return f"{user}@{realm.lower()}" if at else text
    return text


_SIP_SCHEMES = ("sip", "sips", "tel")


def _sip_uri_parts(text: str) -> tuple[str, str, str, bool] | None:
    """(scheme, user, host, had extras) of a SIP or tel URI, or None if it is not one.
    ``text`` may be a name-addr ("Alice" <sip:a@b>;tag=x); extras are a port, parameters or
    headers."""
    if "<" in text:
        start = text.index("<") + 1
        end = text.find(">", start)
        text = text[start : end if end >= 0 else len(text)].strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in _SIP_SCHEMES:
        if "@" not in text or "/" in text:
            return None
        # Already in normal form (user@host): the normal form must normalize to itself.
        scheme, rest = "sip", text
    scheme = scheme.lower()
    user, at, hostport = rest.rpartition("@")
    if not at:
        user, hostport = "", rest
    extras = False
    for mark in (";", "?"):
        if mark in hostport:
            hostport, extras = hostport.split(mark, 1)[0], True
        if mark in user and scheme == "tel":
            user = user.split(mark, 1)[0]
    if scheme == "tel":
        if ";" in hostport:
            hostport = hostport.split(";", 1)[0]
        return scheme, "", hostport, extras
    if hostport.startswith("["):  # an IPv6 reference, maybe with a port after "]"
        close = hostport.find("]")
        if close < 0:
            return None
        host, port = hostport[: close + 1], hostport[close + 1 :]
    else:
        host, _, port = hostport.partition(":")
        port = ":" + port if port else ""
    if port:
        extras = True
    return scheme, user, host.lower(), extras


def _sip_uri(value: str, text: str) -> str:
    parts = _sip_uri_parts(text)
    if parts is None or not parts[2] or " " in parts[2]:
        raise IdentityError(f"{value!r} is not a SIP URI (sip:user@domain)")
    scheme, user, host, _extras = parts
    if scheme == "tel":  # a number, not a host: the scheme says so and stays
        return f"tel:{host}"
    return f"{user}@{host}" if user else host


def sip_uri_has_extras(value: str) -> bool:
    """Whether a SIP URI carries a port, parameters, headers or angle brackets that its normal
    form drops (clients that send them are counted)."""
    parts = _sip_uri_parts(value.strip())
    return parts is not None and (parts[3] or "<" in value)
