"""TLS for the RadSec and Diameter/TLS listeners: one server context from ``[tls]``, and the
check that a peer's certificate names the identity it claims.

Rules of this file:
- Mutual TLS: every client and peer presents a certificate signed by ``tls.ca_file``
  (``CERT_REQUIRED``); TLS 1.2 at the oldest (``tls.min_version``), no compression, no
  renegotiation.
- A certificate names a host by its subjectAltName DNS entries (the common name only when it
  has none, RFC 6125 §6.4.4); a wildcard stands for exactly one left-most label.
"""

from __future__ import annotations

import ssl
from typing import Any

from ocs.config import TlsConfig

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsSetupError(RuntimeError):
    pass


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """The context of every TLS listener. Raises ``TlsSetupError`` with the file at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.min_version]
    context.verify_mode = ssl.CERT_REQUIRED
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if config.certificate_file is None or config.key_file is None or config.ca_file is None:
        raise TlsSetupError("tls.certificate_file, tls.key_file and tls.ca_file are required")
    try:
        context.load_cert_chain(config.certificate_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"tls.certificate_file / tls.key_file ({config.certificate_file}, "
            f"{config.key_file}) cannot be used: {exc}"
        ) from None
    try:
        context.load_verify_locations(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"tls.ca_file ({config.ca_file}) cannot be used: {exc}") from None
    return context


def certificate_names(peercert: dict[str, Any] | None) -> list[str]:
    """The DNS names a verified peer certificate (``getpeercert()``) stands for."""
    if not peercert:
        return []
    names = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"]
    if names:
        return names
    return [
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching of one certificate name against ``host`` (case-insensitive)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:] and "*" not in rest
    return pattern == host


def certificate_matches(peercert: dict[str, Any] | None, host: str) -> bool:
    """Does the verified certificate name ``host`` (a Diameter Origin-Host)?"""
    return any(name_matches(name, host) for name in certificate_names(peercert))
