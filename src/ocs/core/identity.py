"""Subscriber identities: the kinds an account can be found by, and their normal form.

Rules of this file:
- An identity is stored and looked up in normal form, so "+1 555-000-0001" from a SIP switch
  finds the account that was given "15550000001", and "<sip:alice@Example.com:5060;transport=udp>"
  from a SIP proxy's Diameter Ro finds the one given "sip:alice@example.com": a SIP URI's normal
  form is user@host, without the scheme, a port, parameters, headers or angle brackets, the
  host in lower case (a tel: URI keeps its scheme: tel:+15550000001).
- What cannot be an identity is refused here, before any lookup, with a cause from a closed
  set (``IdentityProblem``): the fronts answer it as an unknown subscriber and count it by
  cause. Nothing that PostgreSQL would refuse as text (a NUL, bytes that are not UTF-8, a lone
  surrogate) gets past ``identity_from_bytes``/``normalize_identity``, so hostile bytes never
  reach SQL.
- ``printable`` is how a refused value is kept for operators (``unmatched_usage``): every byte
  that is not printable UTF-8 written as ``\\xNN``, bounded in length.
"""

import re
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


class IdentityProblem(StrEnum):
    """Why a value cannot be an identity (a bounded metric label)."""

    EMPTY = "empty"
    INVALID_UTF8 = "invalid_utf8"  # not UTF-8 (or a lone surrogate): PostgreSQL refuses it
    NUL_BYTE = "nul_byte"  # PostgreSQL text cannot hold U+0000
    CONTROL_CHARACTER = "control_character"  # C0, DEL or C1: no subscriber is named so
    TOO_LONG = "too_long"  # more than MAX_IDENTITY_BYTES octets
    MALFORMED = "malformed"  # not a number / URI as its kind requires


# The longest identity in octets (UTF-8): a RADIUS attribute's value can hold no more, and no
# E.164 number, IMSI, SIP URI or NAI a switch sends is longer.
MAX_IDENTITY_BYTES = 253

# What ``printable`` keeps of a refused value, in characters of its escaped form.
MAX_PRINTABLE_CHARS = 1024
# ... of a refused session key or origin: both go into one indexed key (the report's uid,
# "radius|<origin>|<session>|<report>"), which must stay well below a btree row's ~2,700
# octets: the fuzzer found two 1,024-character halves making 2,053.
MAX_PRINTABLE_KEY_CHARS = 600


class IdentityError(ValueError):
    def __init__(self, message: str, problem: IdentityProblem = IdentityProblem.MALFORMED) -> None:
        super().__init__(message)
        self.problem = problem


_DIGIT_KINDS = (IdentityKind.E164, IdentityKind.IMSI)
_CALLING = IdentityKind.CALLING_STATION_ID


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # escapes read by re


def check_text(value: str, *, what: str = "identity") -> None:
    """Raise ``IdentityError`` (with its cause) unless ``value`` is text PostgreSQL takes and a
    person could type: no NUL, no control characters, no lone surrogates, at most
    ``MAX_IDENTITY_BYTES`` octets of UTF-8."""
    if len(value) > MAX_IDENTITY_BYTES:
        raise IdentityError(
            f"the {what} is longer than {MAX_IDENTITY_BYTES} octets", IdentityProblem.TOO_LONG
        )
    if value.isascii():  # the common case: one scan in C, no surrogate possible
        if value.isprintable():
            return
    elif _UNSAFE.search(value) is None:
        if len(value.encode()) > MAX_IDENTITY_BYTES:
            raise IdentityError(
                f"the {what} is longer than {MAX_IDENTITY_BYTES} octets",
                IdentityProblem.TOO_LONG,
            )
        return
    if "\x00" in value:
        raise IdentityError(f"the {what} contains a NUL character", IdentityProblem.NUL_BYTE)
    if any(_is_surrogate(c) for c in value):
        raise IdentityError(f"the {what} is not valid UTF-8", IdentityProblem.INVALID_UTF8)
    raise IdentityError(
        f"the {what} contains a control character", IdentityProblem.CONTROL_CHARACTER
    )


def identity_from_bytes(kind: IdentityKind, raw: bytes) -> str:
    """The normal form of an identity received as octets (a RADIUS attribute, a Diameter AVP).
    Raises ``IdentityError`` with its cause for anything that cannot be one."""
    if raw.isascii() and len(raw) <= MAX_IDENTITY_BYTES:  # the common case: no decode error
        return normalize_identity(kind, raw.decode("ascii"))
    if len(raw) > MAX_IDENTITY_BYTES * 4:  # do not even decode a huge value
        raise IdentityError(
            f"the {kind.value} identity is longer than {MAX_IDENTITY_BYTES} octets",
            IdentityProblem.TOO_LONG,
        )
    if b"\x00" in raw:
        raise IdentityError(
            f"the {kind.value} identity contains a NUL byte", IdentityProblem.NUL_BYTE
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityError(
            f"the {kind.value} identity is not valid UTF-8", IdentityProblem.INVALID_UTF8
        ) from None
    return normalize_identity(kind, text)


def normalize_identity(kind: IdentityKind, value: str) -> str:
    """The stored form of ``value``: trimmed; E.164 and IMSI as bare digits; SIP URIs and NAIs
    with a lower-case scheme and domain. Raises ``IdentityError`` for an unusable value."""
    text = value.strip(" ")  # only spaces: any other character Python calls space is a control
    if not (text.isascii() and text.isprintable() and len(text) <= MAX_IDENTITY_BYTES):
        check_text(text, what=f"{kind.value} identity")  # raises with the cause, or passes
    if not text:
        raise IdentityError(f"an empty {kind.value} identity", IdentityProblem.EMPTY)
    if kind is IdentityKind.USER_NAME or kind is IdentityKind.PRIVATE or kind is _CALLING:
        return text  # the common kinds first: compared by identity, not by the enum's hash
    if kind in _DIGIT_KINDS:
        digits = text.removeprefix("+").replace(" ", "").replace("-", "")
        if not (digits.isascii() and digits.isdigit()) or not 1 <= len(digits) <= 15:
            raise IdentityError(f"{value!r} is not a valid {kind.value} number (1 to 15 digits)")
        return digits
    if kind is IdentityKind.SIP_URI:
        return _sip_uri(value, text)
    if kind is IdentityKind.NAI:
        user, at, realm = text.rpartition("@")
        return f"{user}@{realm.lower()}" if at else text
    return text


def printable(raw: bytes | str, limit: int = MAX_PRINTABLE_CHARS) -> str:
    """``raw`` as text that PostgreSQL and a terminal take: valid UTF-8 kept, every other byte,
    control character and backslash escaped (``\\xNN``, ``\\\\``), at most ``limit``
    characters (cut with ``...``)."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")
    out: list[str] = []
    size = 0
    for char in text:
        code = ord(char)
        if char == "\\":
            piece = "\\\\"
        elif 0xDC80 <= code <= 0xDCFF and not isinstance(raw, str):
            piece = f"\\x{code - 0xDC00:02x}"  # a byte that was not UTF-8
        elif _is_control(char):
            piece = f"\\x{code:02x}"
        elif _is_surrogate(char):
            piece = f"\\u{code:04x}"
        else:
            piece = char
        size += len(piece)
        if size > limit:
            out.append("...")
            break
        out.append(piece)
    return "".join(out)


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
