"""Turning ``[radius]`` configuration into clients: dictionary, identity attributes, secrets."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from ocs.config import RadiusConfig
from ocs.core.identity import IdentityKind
from ocs.radius.codec import SharedSecret
from ocs.radius.front import AttributeRef, ClientTable, RadiusClient

log = logging.getLogger("ocs.radius")

SOURCE_DICTIONARIES = Path(__file__).resolve().parents[3] / "dictionaries" / "dictionary"


class RadiusSetupError(RuntimeError):
    """The RADIUS configuration cannot be used; the message says why."""


def resolve_dictionary_path(configured: str) -> Path:
    """The configured dictionary; a relative default falls back to the source checkout's."""
    path = Path(configured)
    if path.exists() or path.is_absolute():
        return path
    if configured == "dictionaries/dictionary" and SOURCE_DICTIONARIES.exists():
        return SOURCE_DICTIONARIES
    return path


def load_dictionary(configured: str) -> object:
    """Load a FreeRADIUS-format dictionary with pyrad; a broken one is a clear error."""
    from pyrad.dictionary import Dictionary, ParseError  # noqa: PLC0415

    path = resolve_dictionary_path(configured)
    if not path.is_file():
        raise RadiusSetupError(f"radius.dictionary: {path} does not exist")
    try:
        return Dictionary(str(path))
    except ParseError as exc:
        raise RadiusSetupError(f"radius.dictionary: broken dictionary: {exc}") from None
    except OSError as exc:
        raise RadiusSetupError(
            f"radius.dictionary: {path}: an $INCLUDEd file cannot be read: {exc}"
        ) from None


def attribute_ref(dictionary: object, name: str, key: str) -> AttributeRef:
    attributes = getattr(dictionary, "attributes", {})
    if name not in attributes:
        raise RadiusSetupError(f"{key} = {name!r}: no such attribute in the RADIUS dictionary")
    attr = attributes[name]
    vendor = 0
    if attr.vendor:
        vendor = int(dictionary.vendors.GetForward(attr.vendor))  # type: ignore[attr-defined]
    if attr.type not in ("string", "octets", "integer", "ipaddr"):
        raise RadiusSetupError(f"{key} = {name!r}: a {attr.type} attribute cannot name an account")
    return AttributeRef(name=name, code=int(attr.code), vendor=vendor)


def build_clients(config: RadiusConfig, dictionary: object) -> ClientTable:
    default_ref = attribute_ref(dictionary, config.identity_attribute, "radius.identity_attribute")
    clients = []
    for i, client in enumerate(config.clients):
        network = ipaddress.ip_network(client.address, strict=False)
        ref = default_ref
        if client.identity_attribute is not None:
            ref = attribute_ref(
                dictionary, client.identity_attribute, f"radius.clients[{i}].identity_attribute"
            )
        kind = IdentityKind(client.identity_kind or config.identity_kind)
        clients.append(
            RadiusClient(
                name=client.name or client.address,
                network=network,
                secret=SharedSecret(client.secret.encode()),
                require_message_authenticator=client.require_message_authenticator,
                limit_proxy_state=client.limit_proxy_state,
                identity=ref,
                identity_kind=kind,
                tls=client.tls,
            )
        )
        if not client.require_message_authenticator:
            log.warning(
                "radius: client %s does not require Message-Authenticator (BlastRADIUS exposure)",
                client.name or client.address,
            )
    return ClientTable(clients)
