"""Password authentication: MD4 and DES against their standards' vectors, MS-CHAPv2 and MPPE
against RFC 2759 §9.2 and RFC 3079 §3.5, CHAP (RFC 1994), PAP hiding (RFC 2865 §5.2, against
pyrad), stored credentials, and the check of whole Access-Requests."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket

from ocs.radius import auth, codec
from ocs.radius.auth import CredentialError, CredentialStorage
from ocs.radius.legacy_crypto import des_encrypt_block, des_key_from_7, md4

H = bytes.fromhex
DICTIONARY = str(Path(__file__).resolve().parents[2] / "dictionaries" / "dictionary")
SECRET = codec.SharedSecret(b"testing123")

# RFC 2759 §9.2 (MS-CHAPv2) and RFC 3079 §3.5.3 (128-bit MPPE keys).
USER = b"User"
PASSWORD = "clientPass"
AUTHENTICATOR_CHALLENGE = H("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = H("21402324255E262A28295F2B3A337C7E")
CHALLENGE = H("D02E4386BCE91226")
PASSWORD_HASH = H("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = H("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
PASSWORD_HASH_HASH = H("41C00C584BD2D91C4017A2A12FA59F3F")
AUTHENTICATOR_RESPONSE = b"S=407A5589115FD0D6209F510FE9C04566932CDA56"
MASTER_KEY = H("FDECE3717A8C838CB388E527AE3CDD31")
SEND_START_KEY_128 = H("8B7CDC149B993A1BA118CB153F56DCCB")


@pytest.mark.parametrize(
    ("message", "digest"),
    [  # RFC 1320 appendix A.5
        (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
        (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
        (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
        (b"message digest", "d9130a8164549fe818874806e1c7014b"),
        (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
        (
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "043f8582f241db351ce627e153e7f0e4",
        ),
        (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
    ],
)
def test_md4_rfc1320_vectors(message: bytes, digest: str) -> None:
    assert md4(message).hex() == digest


@pytest.mark.parametrize(
    ("key", "plain", "cipher"),
    [
        ("133457799BBCDFF1", "0123456789ABCDEF", "85E813540F0AB405"),  # the classic worked case
        ("0101010101010101", "95F8A5E5DD31D900", "8000000000000000"),  # NBS SP 500-20 table
        ("0101010101010101", "0000000000000000", "8CA64DE9C1B123A7"),
        ("FEDCBA9876543210", "0123456789ABCDEF", "ED39D950FA74BCC4"),
    ],
)
def test_des_known_answers(key: str, plain: str, cipher: str) -> None:
    assert des_encrypt_block(H(key), H(plain)).hex().upper() == cipher


def test_des_rejects_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="8-octet"):
        des_encrypt_block(b"short", bytes(8))
    with pytest.raises(ValueError, match="7 octets"):
        des_key_from_7(bytes(8))


def test_mschapv2_rfc2759_vectors() -> None:
    assert auth.challenge_hash(PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER) == CHALLENGE
    assert auth.nt_password_hash(PASSWORD) == PASSWORD_HASH
    assert md4(PASSWORD_HASH) == PASSWORD_HASH_HASH
    assert auth.challenge_response(CHALLENGE, PASSWORD_HASH) == NT_RESPONSE
    assert (
        auth.generate_nt_response(AUTHENTICATOR_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD_HASH)
        == NT_RESPONSE
    )
    assert (
        auth.authenticator_response(
            PASSWORD_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER
        )
        == AUTHENTICATOR_RESPONSE
    )


def test_mppe_rfc3079_vectors() -> None:
    master = auth.mppe_master_key(PASSWORD_HASH, NT_RESPONSE)
    assert master == MASTER_KEY
    assert auth.mppe_start_key(master, send=True, server=True) == SEND_START_KEY_128
    # The server's receive key is the client's send key, and the other way round.
    assert auth.mppe_start_key(master, send=False, server=True) == auth.mppe_start_key(
        master, send=True, server=False
    )
    assert auth.mppe_start_key(master, send=False, server=False) == SEND_START_KEY_128


def test_mppe_key_encryption_round_trip_and_layout() -> None:
    request_authenticator = bytes(range(16))
    value = auth.encrypt_mppe_key(SEND_START_KEY_128, SECRET, request_authenticator, b"\x80\x01")
    assert len(value) == 2 + 32  # salt, then (length octet + 16 key octets) padded to 32
    assert value[:2] == b"\x80\x01"
    # RFC 2548 §2.4.2 by hand: b(1) = MD5(S + R + A), c(1) = p(1) xor b(1).
    plain = bytes((16,)) + SEND_START_KEY_128 + bytes(15)
    pad = hashlib.md5(SECRET.secret + request_authenticator + b"\x80\x01").digest()
    assert value[2:18] == bytes(a ^ b for a, b in zip(plain[:16], pad, strict=True))
    assert auth.decrypt_mppe_key(value, SECRET, request_authenticator) == SEND_START_KEY_128
    with pytest.raises(ValueError, match="high bit"):
        auth.encrypt_mppe_key(SEND_START_KEY_128, SECRET, request_authenticator, b"\x01\x01")
    assert auth.decrypt_mppe_key(value[:-1], SECRET, request_authenticator) is None


def test_chap_rfc1994() -> None:
    # Response = MD5(Identifier || secret || Challenge)
    assert auth.chap_response(7, b"pw", b"challenge") == hashlib.md5(b"\x07pwchallenge").digest()


@pytest.mark.parametrize(
    "password", [b"", b"x", b"sixteen-octets!!", b"a" * 17, b"p\xc3\xa4ss" * 10]
)
def test_pap_hiding_matches_pyrad(password: bytes) -> None:
    authenticator = bytes(range(16, 32))
    packet = AuthPacket(
        dict=Dictionary(DICTIONARY), secret=SECRET.secret, authenticator=authenticator
    )
    ours = auth.hide_password(password, SECRET, authenticator)
    if password:
        assert ours == packet.PwCrypt(password.decode("utf-8"))
    assert auth.reveal_password(ours, SECRET, authenticator) == password


def test_reveal_refuses_bad_lengths() -> None:
    assert auth.reveal_password(b"", SECRET, bytes(16)) is None
    assert auth.reveal_password(bytes(15), SECRET, bytes(16)) is None
    assert auth.reveal_password(bytes(144), SECRET, bytes(16)) is None


# --- stored credentials --------------------------------------------------------------------


def test_stored_forms() -> None:
    assert auth.stored_credential("pw", CredentialStorage.CLEARTEXT) == "cleartext$pw"
    assert auth.stored_credential(PASSWORD, CredentialStorage.NT_HASH) == (
        "nt$" + PASSWORD_HASH.hex()
    )
    hashed = auth.stored_credential("pw", CredentialStorage.HASH, salt=b"salt" * 4, iterations=10)
    expected = hashlib.pbkdf2_hmac("sha256", b"pw", b"salt" * 4, 10)
    assert hashed.split("$")[:2] == ["pbkdf2-sha256", "10"]
    assert base64.b64decode(hashed.split("$")[3]) == expected
    assert auth.is_slow(hashed) and not auth.is_slow("nt$" + "0" * 32)
    for good in (hashed, "cleartext$x", "nt$" + "ab" * 16):
        auth.check_stored_credential(good)
    with pytest.raises(CredentialError, match="empty"):
        auth.stored_credential("", CredentialStorage.HASH)


@pytest.mark.parametrize(
    "bad",
    ["", "pw", "cleartext$", "nt$123", "nt$" + "zz" * 16, "pbkdf2-sha256$x$a$b", "md5$abc"],
)
def test_unreadable_stored_forms_are_refused(bad: str) -> None:
    with pytest.raises(CredentialError):
        auth.check_stored_credential(bad)


# --- whole requests --------------------------------------------------------------------------


def request(
    *attributes: tuple[int, bytes], authenticator: bytes = bytes(range(16))
) -> codec.Packet:
    wire = codec.encode_request(
        codec.ACCESS_REQUEST,
        1,
        SECRET,
        [codec.attr_str(codec.USER_NAME, USER.decode()), *attributes],
        authenticator=authenticator,
    )
    return codec.parse_packet(wire)


def pap(password: bytes, authenticator: bytes = bytes(range(16))) -> codec.Packet:
    hidden = auth.hide_password(password, SECRET, authenticator)
    return request((codec.USER_PASSWORD, hidden), authenticator=authenticator)


def chap(password: bytes, *, ident: int = 5, challenge: bytes | None = None) -> codec.Packet:
    authenticator = bytes(range(16))
    response = auth.chap_response(ident, password, challenge or authenticator)
    extra = [(auth.CHAP_PASSWORD, bytes((ident,)) + response)]
    if challenge is not None:
        extra.append((auth.CHAP_CHALLENGE, challenge))
    return request(*extra, authenticator=authenticator)


def mschapv2(nt_response: bytes = NT_RESPONSE, ident: int = 9) -> codec.Packet:
    response = bytes((ident, 0)) + PEER_CHALLENGE + bytes(8) + nt_response
    return request(
        codec.attr_vsa(311, auth.MS_CHAP_CHALLENGE, AUTHENTICATOR_CHALLENGE),
        codec.attr_vsa(311, auth.MS_CHAP2_RESPONSE, response),
    )


CLEAR = auth.stored_credential(PASSWORD, CredentialStorage.CLEARTEXT)
NT = auth.stored_credential(PASSWORD, CredentialStorage.NT_HASH)
HASHED = auth.stored_credential(PASSWORD, CredentialStorage.HASH, iterations=1000)


# Named ids: the PBKDF2 form has a random salt, and pytest-xdist needs every worker to collect
# the same test names.
@pytest.mark.parametrize("stored", [CLEAR, NT, HASHED], ids=["cleartext", "nt", "pbkdf2"])
def test_pap_against_every_stored_form(stored: str) -> None:
    assert auth.authenticate(stored, pap(PASSWORD.encode()), SECRET, "User").ok
    result = auth.authenticate(stored, pap(b"clientPasS"), SECRET, "User")
    assert (result.ok, result.method) == (False, "pap")
    # The same password hidden under another secret reads as garbage.
    other = codec.SharedSecret(b"other")
    wrong_secret = request(
        (codec.USER_PASSWORD, auth.hide_password(PASSWORD.encode(), other, bytes(range(16))))
    )
    assert not auth.authenticate(stored, wrong_secret, SECRET, "User").ok


def test_chap_needs_the_cleartext() -> None:
    assert auth.authenticate(CLEAR, chap(PASSWORD.encode()), SECRET, "User").ok
    with_challenge = chap(PASSWORD.encode(), challenge=b"a-chap-challenge-17")
    assert auth.authenticate(CLEAR, with_challenge, SECRET, "User").ok
    assert not auth.authenticate(CLEAR, chap(b"wrong"), SECRET, "User").ok
    # An NT hash or a PBKDF2 hash cannot check CHAP: refused, never waved through.
    assert auth.authenticate(NT, chap(PASSWORD.encode()), SECRET, "User") == auth.AuthResult(
        False, "chap"
    )
    assert not auth.authenticate(HASHED, chap(PASSWORD.encode()), SECRET, "User").ok
    bad_length = request((auth.CHAP_PASSWORD, b"\x01short"))
    assert not auth.authenticate(CLEAR, bad_length, SECRET, "User").ok


@pytest.mark.parametrize("stored", [CLEAR, NT])
def test_mschapv2_success_carries_the_authenticator_response_and_mppe_keys(stored: str) -> None:
    packet = mschapv2()
    result = auth.authenticate(stored, packet, SECRET, "User", random_bytes=lambda n: b"\x01" * n)
    assert (result.ok, result.method) == (True, "mschapv2")
    values = {}
    for attribute_type, value in result.reply_attributes:
        assert attribute_type == codec.VENDOR_SPECIFIC
        vendor, vendor_type = int.from_bytes(value[:4], "big"), value[4]
        assert vendor == 311
        values[vendor_type] = value[6:]
    assert values[auth.MS_CHAP2_SUCCESS] == b"\x09" + AUTHENTICATOR_RESPONSE
    send = auth.decrypt_mppe_key(values[auth.MS_MPPE_SEND_KEY], SECRET, packet.authenticator)
    receive = auth.decrypt_mppe_key(values[auth.MS_MPPE_RECV_KEY], SECRET, packet.authenticator)
    assert send == SEND_START_KEY_128
    assert receive == auth.mppe_start_key(MASTER_KEY, send=False, server=True)
    # Two different salts, high bit set.
    salts = {values[auth.MS_MPPE_SEND_KEY][:2], values[auth.MS_MPPE_RECV_KEY][:2]}
    assert len(salts) == 2 and all(s[0] & 0x80 for s in salts)
    assert values[auth.MS_MPPE_ENCRYPTION_POLICY] == (1).to_bytes(4, "big")
    assert values[auth.MS_MPPE_ENCRYPTION_TYPES] == (6).to_bytes(4, "big")


def test_mschapv2_with_a_domain_prefix_hashes_the_bare_name() -> None:
    assert auth.authenticate(NT, mschapv2(), SECRET, "EXAMPLE\\User").ok


def test_mschapv2_failure_says_e691() -> None:
    wrong = bytearray(NT_RESPONSE)
    wrong[0] ^= 1
    result = auth.authenticate(NT, mschapv2(bytes(wrong)), SECRET, "User")
    assert not result.ok
    ((attribute_type, value),) = result.reply_attributes
    assert attribute_type == codec.VENDOR_SPECIFIC and value[4] == auth.MS_CHAP_ERROR
    assert value[6:] == b"\x09E=691 R=0 V=3"
    # A PBKDF2 hash cannot check MS-CHAPv2.
    assert not auth.authenticate(HASHED, mschapv2(), SECRET, "User").ok
    # Without the challenge, or with a short response: refused.
    no_challenge = request(
        codec.attr_vsa(311, auth.MS_CHAP2_RESPONSE, bytes((9, 0)) + PEER_CHALLENGE + bytes(32))
    )
    assert not auth.authenticate(NT, no_challenge, SECRET, "User").ok


def test_a_request_without_any_password_fails() -> None:
    assert auth.authenticate(CLEAR, request(), SECRET, "User") == auth.AuthResult(False, "none")
    with pytest.raises(CredentialError):
        auth.authenticate("garbage", request(), SECRET, "User")
