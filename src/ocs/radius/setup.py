"""Turning ``[radius]`` configuration into clients: dictionary, profiles, identity attributes,
secrets. A setting the client's profile does not act on is an error naming both."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from ocs.config import RadiusConfig, message_authenticator_policy
from ocs.core.identity import DialPlan, IdentityError, IdentityKind
from ocs.radius.codec import SharedSecret
from ocs.radius.front import AttributeRef, ClientTable, MessageAuthenticatorPolicy, RadiusClient
from ocs.radius.profiles import PROFILES, ReplySettings

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
        profile = PROFILES[client.profile]
        key = f"radius.clients[{i}]"
        ref = default_ref
        kind = IdentityKind(config.identity_kind)
        if profile.name != "generic":
            ref = attribute_ref(dictionary, profile.identity_attribute, f"{key}.profile")
            kind = profile.identity_kind
        if client.identity_attribute is not None:
            ref = attribute_ref(dictionary, client.identity_attribute, f"{key}.identity_attribute")
        if client.identity_kind is not None:
            kind = IdentityKind(client.identity_kind)
        reply = _reply_settings(config, i)
        disconnect_port = client.disconnect_port or profile.disconnect_port
        if client.disconnect_port is not None and profile.disconnect_port is None:
            raise RadiusSetupError(
                f"{key}.disconnect_port = {client.disconnect_port}: profile {profile.name!r} "
                "takes no Disconnect-Request (RFC 5176); leave it unset"
            )
        call_key = profile.call_key
        configured = client.require_message_authenticator
        policy = MessageAuthenticatorPolicy(
            message_authenticator_policy(
                configured if configured is not None else config.require_message_authenticator
            )
        )
        clients.append(
            RadiusClient(
                name=client.name or client.address,
                network=network,
                secret=SharedSecret(client.secret.encode()),
                require_message_authenticator=policy,
                limit_proxy_state=client.limit_proxy_state,
                identity=ref,
                identity_kind=kind,
                reply=reply,
                call_key=AttributeRef(call_key.name, call_key.code, call_key.vendor),
                accounting=profile.accounting,
                disconnect_port=disconnect_port,
                dial_plan=dial_plan_of(client, key),
                tls=client.tls,
            )
        )
        if policy is MessageAuthenticatorPolicy.NOT_REQUIRED:
            log.warning(
                "radius: client %s does not require Message-Authenticator (BlastRADIUS exposure)",
                client.name or client.address,
            )
    return ClientTable(clients)


def dial_plan_of(client: Any, key: str) -> DialPlan:
    """A client's (or the Diameter front's) dial plan from its config keys."""
    try:
        return DialPlan(
            country_code=client.country_code or "",
            international_prefix=client.international_prefix,
            national_prefix=client.national_prefix or "",
        )
    except IdentityError as exc:
        raise RadiusSetupError(f"{key}: {exc}") from None


def _reply_settings(config: RadiusConfig, index: int) -> ReplySettings:
    client = config.clients[index]
    profile = PROFILES[client.profile]
    key = f"radius.clients[{index}]"
    interim = client.acct_interim_interval_s
    if interim is None:
        interim = profile.interim_interval_s
    elif interim and not profile.acts_on_interim_interval:
        raise RadiusSetupError(
            f"{key}.acct_interim_interval_s = {interim}: profile {profile.name!r} does not act on "
            "Acct-Interim-Interval; leave it unset"
        )
    if client.idle_timeout_s is not None and not profile.acts_on_idle_timeout:
        raise RadiusSetupError(
            f"{key}.idle_timeout_s = {client.idle_timeout_s}: profile {profile.name!r} does not "
            "act on Idle-Timeout; leave it unset"
        )
    return ReplySettings(
        profile=profile,
        interim_interval_s=interim or None,
        idle_timeout_s=client.idle_timeout_s,
        currency=config.currency,
    )
