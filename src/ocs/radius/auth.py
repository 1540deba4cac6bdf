"""Password authentication for when ocs is a NAS's only RADIUS server: PAP, CHAP, MS-CHAPv2.

An identity may carry a credential (``account_identities.credential``); an Access-Request for
it must then prove the password, and ``authenticate`` says whether it does. Identities without
one keep the credit-only check (the switch authenticated the caller itself). EAP is not done
here: put FreeRADIUS in front of ocs for that (README, "Authentication").

Stored forms (``stored_credential``), and what each can check:

- ``pbkdf2-sha256$<iterations>$<salt>$<hash>`` (base64): PAP only. A one-way hash; checking it
  costs tens of milliseconds of CPU, so the front runs it off the event loop.
- ``nt$<32 hex>``: the NT hash, MD4 of the UTF-16LE password: PAP and MS-CHAPv2. Unsalted, and
  to MS-CHAP as good as the password itself.
- ``cleartext$<password>``: PAP, CHAP and MS-CHAPv2. CHAP (RFC 1994) needs the password.

Rules of this file:
- Pure apart from randomness (MPPE key salts come from ``random_bytes``): no I/O, no clock.
- A request proves its password with MS-CHAP2-Response (with MS-CHAP-Challenge), else
  CHAP-Password (with CHAP-Challenge, or the Request Authenticator as challenge), else
  User-Password; one without any of them fails. A scheme the stored form cannot check fails.
- Every comparison of secrets is constant-time.
- MS-CHAPv2 success carries MS-CHAP2-Success and the MPPE keys (RFC 2548, RFC 3079), failure
  MS-CHAP-Error "E=691", as Windows and pppd expect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ocs.radius import codec
from ocs.radius.codec import Packet, SharedSecret
from ocs.radius.legacy_crypto import des_encrypt_block, des_key_from_7, md4

VENDOR_MICROSOFT: Final = 311
# RFC 2865 §5, RFC 2869 §5.
CHAP_PASSWORD: Final = 3
CHAP_CHALLENGE: Final = 60
EAP_MESSAGE: Final = 79
# RFC 2548 (vendor 311).
MS_CHAP_ERROR: Final = 2
MS_MPPE_ENCRYPTION_POLICY: Final = 7
MS_MPPE_ENCRYPTION_TYPES: Final = 8
MS_CHAP_CHALLENGE: Final = 11
MS_MPPE_SEND_KEY: Final = 16
MS_MPPE_RECV_KEY: Final = 17
MS_CHAP2_RESPONSE: Final = 25
MS_CHAP2_SUCCESS: Final = 26

PBKDF2_ITERATIONS: Final = 100_000

# RFC 2759 §8.7 and RFC 3079 §3.4 constants.
_MAGIC_SIGN: Final = b"Magic server to client signing constant"
_MAGIC_PAD: Final = b"Pad to make it do more than one iteration"
_MAGIC_MASTER: Final = b"This is the MPPE Master Key"
_MAGIC_CLIENT_SEND: Final = (
    b"On the client side, this is the send key; on the server side, it is the receive key."
)
_MAGIC_CLIENT_RECEIVE: Final = (
    b"On the client side, this is the receive key; on the server side, it is the send key."
)
_SHS_PAD1: Final = b"\x00" * 40
_SHS_PAD2: Final = b"\xf2" * 40


class CredentialStorage(StrEnum):
    """How a password is kept (``ocs identity add --password-storage``)."""

    HASH = "hash"  # PBKDF2-SHA256: PAP only
    NT_HASH = "nt-hash"  # MD4(UTF-16LE): PAP and MS-CHAPv2
    CLEARTEXT = "cleartext"  # PAP, CHAP and MS-CHAPv2


class CredentialError(ValueError):
    """A stored credential that is not one of the forms above."""


def nt_password_hash(password: str) -> bytes:
    """MD4 of the UTF-16LE password (RFC 2759 §8.3), 16 octets."""
    return md4(password.encode("utf-16-le"))


def stored_credential(
    password: str,
    storage: CredentialStorage,
    *,
    salt: bytes | None = None,
    iterations: int = PBKDF2_ITERATIONS,
) -> str:
    """The stored form of ``password``. ``salt`` (16 random octets by default) only for HASH."""
    if not password:
        raise CredentialError("an empty password cannot be stored")
    if storage is CredentialStorage.CLEARTEXT:
        return f"cleartext${password}"
    if storage is CredentialStorage.NT_HASH:
        return f"nt${nt_password_hash(password).hex()}"
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return (
        f"pbkdf2-sha256${iterations}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


@dataclass(frozen=True, slots=True)
class _Parsed:
    scheme: str  # "pbkdf2-sha256", "nt" or "cleartext"
    cleartext: str | None = None
    nt_hash: bytes | None = None
    salt: bytes = b""
    iterations: int = 0
    digest: bytes = b""


def _parse(stored: str) -> _Parsed:
    scheme, sep, rest = stored.partition("$")
    if sep and scheme == "cleartext" and rest:
        return _Parsed("cleartext", cleartext=rest, nt_hash=nt_password_hash(rest))
    if sep and scheme == "nt" and len(rest) == 32:
        try:
            return _Parsed("nt", nt_hash=bytes.fromhex(rest))
        except ValueError:
            pass
    if sep and scheme == "pbkdf2-sha256":
        parts = rest.split("$")
        if len(parts) == 3 and parts[0].isdigit():
            try:
                salt = base64.b64decode(parts[1], validate=True)
                digest = base64.b64decode(parts[2], validate=True)
            except ValueError:
                pass
            else:
                return _Parsed("pbkdf2-sha256", salt=salt, iterations=int(parts[0]), digest=digest)
    raise CredentialError("not a stored credential (pbkdf2-sha256$..., nt$... or cleartext$...)")


def check_stored_credential(stored: str) -> None:
    """Raise ``CredentialError`` unless ``stored`` is a stored form this module can read."""
    _parse(stored)


def is_slow(stored: str) -> bool:
    """Whether checking a password against ``stored`` is slow (PBKDF2): run it in a thread."""
    return stored.startswith("pbkdf2-sha256$")


# --- RFC 2865 §5.2 User-Password -----------------------------------------------------------


def hide_password(password: bytes, secret: SharedSecret, authenticator: bytes) -> bytes:
    """User-Password as sent (RFC 2865 §5.2): for tests and the load generator."""
    blocks = max(1, -(-len(password) // 16))
    padded = password.ljust(16 * blocks, b"\x00")
    out = bytearray()
    previous = authenticator
    for i in range(0, len(padded), 16):
        key = hashlib.md5(secret.secret + previous).digest()
        block = bytes(a ^ b for a, b in zip(padded[i : i + 16], key, strict=True))
        out += block
        previous = block
    return bytes(out)


def reveal_password(hidden: bytes, secret: SharedSecret, authenticator: bytes) -> bytes | None:
    """The password of a User-Password value, trailing NULs removed; None if the value's
    length is not a multiple of 16 from 16 to 128 octets."""
    if not hidden or len(hidden) % 16 or len(hidden) > 128:
        return None
    out = bytearray()
    previous = authenticator
    for i in range(0, len(hidden), 16):
        block = hidden[i : i + 16]
        key = hashlib.md5(secret.secret + previous).digest()
        out += bytes(a ^ b for a, b in zip(block, key, strict=True))
        previous = block
    return bytes(out).rstrip(b"\x00")


# --- CHAP (RFC 1994 §4.1, RFC 2865 §5.3) ---------------------------------------------------


def chap_response(ident: int, password: bytes, challenge: bytes) -> bytes:
    """MD5(Identifier + secret + Challenge), 16 octets."""
    return hashlib.md5(bytes((ident,)) + password + challenge).digest()


# --- MS-CHAPv2 (RFC 2759) ------------------------------------------------------------------


def challenge_hash(
    peer_challenge: bytes, authenticator_challenge: bytes, user_name: bytes
) -> bytes:
    """RFC 2759 §8.2: the 8-octet challenge the NT-Response answers."""
    return hashlib.sha1(peer_challenge + authenticator_challenge + user_name).digest()[:8]


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """RFC 2759 §8.5: three DES encryptions of the challenge under the padded hash, 24 octets."""
    z = password_hash + b"\x00" * 5
    return b"".join(des_encrypt_block(des_key_from_7(z[i : i + 7]), challenge) for i in (0, 7, 14))


def generate_nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, user_name: bytes, password_hash: bytes
) -> bytes:
    """RFC 2759 §8.1 GenerateNTResponse (what the peer sends)."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    return challenge_response(challenge, password_hash)


def authenticator_response(
    password_hash: bytes,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    user_name: bytes,
) -> bytes:
    """RFC 2759 §8.7 GenerateAuthenticatorResponse: "S=" and 40 upper-case hex digits."""
    password_hash_hash = md4(password_hash)
    digest = hashlib.sha1(password_hash_hash + nt_response + _MAGIC_SIGN).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    digest = hashlib.sha1(digest + challenge + _MAGIC_PAD).digest()
    return b"S=" + digest.hex().upper().encode()


def mppe_master_key(password_hash: bytes, nt_response: bytes) -> bytes:
    """RFC 3079 §3.4 GetMasterKey, 16 octets."""
    return hashlib.sha1(md4(password_hash) + nt_response + _MAGIC_MASTER).digest()[:16]


def mppe_start_key(master_key: bytes, *, send: bool, server: bool, length: int = 16) -> bytes:
    """RFC 3079 §3.4 GetAsymmetricStartKey."""
    magic = _MAGIC_CLIENT_RECEIVE if send == server else _MAGIC_CLIENT_SEND
    return hashlib.sha1(master_key + _SHS_PAD1 + magic + _SHS_PAD2).digest()[:length]


def encrypt_mppe_key(
    key: bytes, secret: SharedSecret, request_authenticator: bytes, salt: bytes
) -> bytes:
    """RFC 2548 §2.4.2/2.4.3: MS-MPPE-Send/Recv-Key value = Salt + the key (with its length
    octet, padded to 16) encrypted with MD5 over the secret, request authenticator and salt."""
    if len(salt) != 2 or not salt[0] & 0x80:
        raise ValueError("the salt is 2 octets with the high bit of the first set")
    plain = bytes((len(key),)) + key
    plain += b"\x00" * (-len(plain) % 16)
    out = bytearray(salt)
    previous = request_authenticator + salt
    for i in range(0, len(plain), 16):
        pad = hashlib.md5(secret.secret + previous).digest()
        block = bytes(a ^ b for a, b in zip(plain[i : i + 16], pad, strict=True))
        out += block
        previous = block
    return bytes(out)


def _ms_user_name(user_name: str) -> bytes:
    # RFC 2759 §4: the user name without a "DOMAIN\" prefix.
    return user_name.rpartition("\\")[2].encode()


# --- the check ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Whether the request proved the password; the reply attributes that go with it."""

    ok: bool
    method: str  # "pap", "chap", "mschapv2" or "none"
    reply_attributes: tuple[tuple[int, bytes], ...] = ()


def authenticate(
    stored: str,
    packet: Packet,
    secret: SharedSecret,
    user_name: str,
    *,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> AuthResult:
    """Check the Access-Request's password against the stored credential (module rules).

    ``user_name`` is the User-Name MS-CHAPv2 hashes (the request's, as received).
    Raises ``CredentialError`` for a stored form that cannot be read."""
    credential = _parse(stored)
    ms_challenge = ms_response = None
    for vendor_type, value in packet.vendor_attributes(VENDOR_MICROSOFT):
        if vendor_type == MS_CHAP_CHALLENGE and ms_challenge is None:
            ms_challenge = value
        elif vendor_type == MS_CHAP2_RESPONSE and ms_response is None:
            ms_response = value
    if ms_response is not None:
        return _mschapv2(
            credential,
            packet,
            secret=secret,
            user_name=user_name,
            authenticator_challenge=ms_challenge,
            response=ms_response,
            random_bytes=random_bytes,
        )
    chap = packet.get(CHAP_PASSWORD)
    if chap is not None:
        return _chap(credential, packet, chap)
    hidden = packet.get(codec.USER_PASSWORD)
    if hidden is not None:
        password = reveal_password(hidden, secret, packet.authenticator)
        return AuthResult(password is not None and _pap(credential, password), "pap")
    return AuthResult(False, "none")


def _pap(credential: _Parsed, password: bytes) -> bool:
    if credential.scheme == "cleartext":
        assert credential.cleartext is not None
        return hmac.compare_digest(password, credential.cleartext.encode())
    if credential.scheme == "nt":
        assert credential.nt_hash is not None
        try:
            text = password.decode()
        except UnicodeDecodeError:
            return False
        return hmac.compare_digest(nt_password_hash(text), credential.nt_hash)
    digest = hashlib.pbkdf2_hmac("sha256", password, credential.salt, credential.iterations)
    return hmac.compare_digest(digest, credential.digest)


def _chap(credential: _Parsed, packet: Packet, chap: bytes) -> AuthResult:
    if credential.cleartext is None or len(chap) != 17:
        return AuthResult(False, "chap")
    challenge = packet.get(CHAP_CHALLENGE) or packet.authenticator
    expected = chap_response(chap[0], credential.cleartext.encode(), challenge)
    return AuthResult(hmac.compare_digest(expected, chap[1:]), "chap")


def _mschapv2(
    credential: _Parsed,
    packet: Packet,
    *,
    secret: SharedSecret,
    user_name: str,
    authenticator_challenge: bytes | None,
    response: bytes,
    random_bytes: Callable[[int], bytes],
) -> AuthResult:
    # MS-CHAP2-Response: Ident(1) Flags(1) Peer-Challenge(16) Reserved(8) Response(24).
    ident = response[0] if response else 0
    error = (codec.attr_vsa(VENDOR_MICROSOFT, MS_CHAP_ERROR, bytes((ident,)) + b"E=691 R=0 V=3"),)
    password_hash = credential.nt_hash
    if (
        password_hash is None
        or authenticator_challenge is None
        or len(authenticator_challenge) != 16
        or len(response) != 50
    ):
        return AuthResult(False, "mschapv2", error)
    peer_challenge, nt_response = response[2:18], response[26:50]
    name = _ms_user_name(user_name)
    expected = generate_nt_response(authenticator_challenge, peer_challenge, name, password_hash)
    if not hmac.compare_digest(expected, nt_response):
        return AuthResult(False, "mschapv2", error)
    success = authenticator_response(
        password_hash, nt_response, peer_challenge, authenticator_challenge, name
    )
    master = mppe_master_key(password_hash, nt_response)
    send_key = mppe_start_key(master, send=True, server=True)
    receive_key = mppe_start_key(master, send=False, server=True)
    salts = _two_salts(random_bytes)
    authenticator = packet.authenticator
    return AuthResult(
        True,
        "mschapv2",
        (
            codec.attr_vsa(VENDOR_MICROSOFT, MS_CHAP2_SUCCESS, bytes((ident,)) + success),
            codec.attr_vsa(
                VENDOR_MICROSOFT,
                MS_MPPE_RECV_KEY,
                encrypt_mppe_key(receive_key, secret, authenticator, salts[0]),
            ),
            codec.attr_vsa(
                VENDOR_MICROSOFT,
                MS_MPPE_SEND_KEY,
                encrypt_mppe_key(send_key, secret, authenticator, salts[1]),
            ),
            # Encryption allowed (1), 40- or 128-bit RC4 (6): what FreeRADIUS sends too.
            codec.attr_vsa(VENDOR_MICROSOFT, MS_MPPE_ENCRYPTION_POLICY, (1).to_bytes(4, "big")),
            codec.attr_vsa(VENDOR_MICROSOFT, MS_MPPE_ENCRYPTION_TYPES, (6).to_bytes(4, "big")),
        ),
    )


def _two_salts(random_bytes: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """Two different salts with the high bit set (RFC 2548: unique within a packet)."""
    drawn = random_bytes(2)
    first = bytes((drawn[0] | 0x80, drawn[1]))
    return first, bytes((first[0], first[1] ^ 0x01))


def decrypt_mppe_key(
    value: bytes, secret: SharedSecret, request_authenticator: bytes
) -> bytes | None:
    """The key inside an MS-MPPE-Send/Recv-Key value (for tests and clients); None if bad."""
    if len(value) < 18 or (len(value) - 2) % 16:
        return None
    salt, cipher = value[:2], value[2:]
    plain = bytearray()
    previous = request_authenticator + salt
    for i in range(0, len(cipher), 16):
        block = cipher[i : i + 16]
        pad = hashlib.md5(secret.secret + previous).digest()
        plain += bytes(a ^ b for a, b in zip(block, pad, strict=True))
        previous = block
    length = plain[0]
    if length > len(plain) - 1:
        return None
    return bytes(plain[1 : 1 + length])
