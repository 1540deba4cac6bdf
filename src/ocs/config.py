"""Configuration: one TOML file, validated once into frozen dataclasses.

Rules of this file:
- Every key has a default, a unit in its name where it has one, and a line of documentation
  (``config/ocs.example.toml`` shows them all; a test keeps the two in step).
- A bad value is a ``ConfigError`` naming the key, the value and what is allowed. All problems
  are reported at once, before any socket opens.
- Environment variables override keys: ``OCS_<SECTION>__<KEY>`` (upper case, two underscores
  between section and key), e.g. ``OCS_DATABASE__DSN`` or ``OCS_CACHE__TTL_S=30``. String keys
  take the variable's text as it is; other keys parse it as a TOML value (``30``, ``true``,
  ``["a", "b"]``).
- Relative paths are relative to the directory the process runs in.
- Secrets never appear in an error: a secret key's value is shown as ``***``, and a URL's
  password as ``user:***@`` (``shown``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocs.core.model import GrantLimits
from ocs.core.money import AmountError, parse_amount

ENV_PREFIX = "OCS_"
CONFIG_PATH_ENV = "OCS_CONFIG"

Check = Callable[[Any], str | None]


def _spec(
    default: Any,
    doc: str,
    *,
    check: Check | None = None,
    choices: tuple[str, ...] = (),
    required: bool = False,
    secret: bool = False,
) -> Any:
    meta = {
        "doc": doc,
        "check": check,
        "choices": choices,
        "required": required,
        "secret": secret,
    }
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def _range(low: float, high: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if value < low or (high is not None and value > high):
            return f"a number from {low} to {high}" if high is not None else f"a number >= {low}"
        return None

    return check


def _check_workers(value: Any) -> str | None:
    if value == "auto" or (type(value) is int and 1 <= value <= 64):
        return None
    return '"auto" or a number from 1 to 64'


def check_host_port(value: Any) -> str | None:
    """``host:port`` with an IPv4 address or ``[IPv6]``, port 1..65535 (0 = any free port)."""
    allowed = 'an address and port such as "127.0.0.1:9812" or "[::1]:9812"'
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return allowed
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return allowed
    return None


def check_network(value: Any) -> str | None:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return 'an IP address or network such as "10.0.0.1", "10.0.0.0/24" or "::1"'
    return None


def _amount_problem(value: Any) -> str | None:
    try:
        amount = parse_amount(str(value))
    except AmountError:
        return 'an amount such as "0.50" (at most 6 decimals)'
    return "an amount >= 0" if amount < 0 else None


def _digits_problem(value: Any) -> str | None:
    text = str(value)
    if text and not (text.isascii() and text.isdigit() and len(text) <= 4):
        return "1 to 4 digits (or empty)"
    return None


def check_non_empty(value: Any) -> str | None:
    return "a non-empty string" if not str(value).strip() else None


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def shown(value: Any, *, secret: bool = False) -> str:
    """How a configuration value appears in an error or a log line: a secret as ``'***'``, a
    URL's password as ``***``, anything else as its ``repr``."""
    if secret:
        return "'***'"
    if isinstance(value, str):
        return repr(_URL_PASSWORD.sub(r"\1***@", value))
    return repr(value)


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonConfig:
    lock_file: str = _spec(
        "var/ocsd.lock", "File locked while a daemon runs: a second daemon on it stops at once."
    )
    graceful_timeout_s: float = _spec(
        10.0,
        "On SIGTERM/SIGINT, how long in-flight work may take before exit.",
        check=_range(0, 3600),
    )
    use_uvloop: bool = _spec(True, "Run on uvloop (false: the standard asyncio loop).")
    workers: int | str = _spec(
        "auto",
        'Worker processes sharing the listening ports (SO_REUSEPORT): "auto" (one per core '
        "this process may run on), or a number from 1 to 64; 1 runs in one process. Workers "
        "share holds and session counts through redis.url, or through a local redis-server "
        "the daemon starts itself when redis.url is unset.",
        check=_check_workers,
    )
    instance_name: str | None = _spec(
        None,
        "This daemon's name in the sessions it runs (rebuilt from them at start-up). Unset: "
        "the host name and the lock file. Two daemons sharing a database need different names.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    level: str = _spec("info", "Log level.", choices=("debug", "info", "warning", "error"))
    format: str = _spec(
        "text", "text (key=value) or json, one record a line on stderr.", choices=("text", "json")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    dsn: str | None = _spec(
        None,
        "PostgreSQL DSN (postgresql://user:pass@host:port/db). Unset: an embedded PostgreSQL "
        "is started with its data in embedded_dir.",
    )
    embedded_dir: str = _spec("var/postgres", "Data directory of the embedded PostgreSQL.")
    connect_timeout_s: float = _spec(
        10.0, "Timeout for opening a connection.", check=_range(0.1, 600)
    )
    command_timeout_s: float = _spec(5.0, "Timeout for one query.", check=_range(0.1, 600))
    pool_min_size: int = _spec(1, "Connections kept open.", check=_range(0, 1000))
    pool_max_size: int = _spec(10, "Most connections open at once.", check=_range(1, 1000))
    migrate_on_start: bool = _spec(True, "Apply pending schema migrations when the daemon starts.")
    usage_writers: int = _spec(
        2,
        "Usage is written by group commit: at most this many transactions at once, each "
        "committing every report queued meanwhile (one NOTIFYing commit at a time is "
        "PostgreSQL's limit, so more rarely helps).",
        check=_range(1, 100),
    )
    usage_batch_max: int = _spec(
        256, "Most usage reports committed in one transaction.", check=_range(1, 10000)
    )


IDENTITY_KINDS = ("user_name", "e164", "imsi", "sip_uri", "nai", "calling_station_id", "private")


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    ttl_s: float = _spec(
        60.0,
        "How long an account's figures decide before they are re-read.",
        check=_range(0.1, 86400),
    )
    max_stale_s: float = _spec(
        300.0,
        "With the database unreachable, how long figures older than ttl_s still decide.",
        check=_range(0, 86400),
    )
    on_stale: str = _spec(
        "reject",
        "Past max_stale_s: refuse new sessions (reject) or admit them (accept).",
        choices=("reject", "accept"),
    )
    load_timeout_s: float = _spec(
        2.0, "How long a request waits for an account not in the cache.", check=_range(0.01, 60)
    )
    refresh_interval_s: float = _spec(
        5.0,
        "How often the sidecar polls for changed accounts (notifications are instant; this "
        "catches any that were lost, and confirms the rest of the cache).",
        check=_range(0.1, 3600),
    )
    negative_ttl_s: float = _spec(
        10.0,
        "How long an identity found in no account is remembered as unknown.",
        check=_range(0, 3600),
    )


MESSAGE_AUTHENTICATOR_POLICIES = ("auto", "true", "false")
# The client profiles of ocs.radius.profiles.PROFILES (a test keeps the two in step).
RADIUS_PROFILES = (
    "generic",
    "kamailio",
    "opensips",
    "freeswitch",
    "cisco",
    "mikrotik",
    "accel-ppp",
    "chillispot",
)


def check_currency(value: Any) -> str | None:
    text = str(value)
    if text == "" or (len(text) == 3 and text.isascii() and text.isalpha() and text.isupper()):
        return None
    return 'an ISO 4217 code such as "EUR" or "USD", or "" (none)'


def check_message_authenticator_policy(value: Any) -> str | None:
    """true, false or "auto" (a string "true"/"false" too: environment variables are text)."""
    if isinstance(value, bool) or str(value).lower() in MESSAGE_AUTHENTICATOR_POLICIES:
        return None
    return 'true, false or "auto"'


def message_authenticator_policy(value: bool | str) -> str:
    """The policy as one of ``MESSAGE_AUTHENTICATOR_POLICIES``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class RadiusClientConfig:
    address: str = _spec(
        "", "The NAS's IP address or network (CIDR).", check=check_network, required=True
    )
    secret: str = _spec("", "The shared secret.", check=check_non_empty, required=True, secret=True)
    name: str = _spec("", "A name for logs (default: the address).")
    require_message_authenticator: bool | str | None = _spec(
        None,
        'Message-Authenticator on Access-Request: true (required), false, or "auto" (required '
        "once the client has sent one). Unset: radius.require_message_authenticator.",
        check=check_message_authenticator_policy,
    )
    limit_proxy_state: bool = _spec(
        True, "Drop an Access-Request that has Proxy-State but no Message-Authenticator."
    )
    identity_attribute: str | None = _spec(
        None, "Attribute naming the account for this client (default: radius.identity_attribute)."
    )
    identity_kind: str | None = _spec(
        None,
        "How that attribute's value is looked up (default: radius.identity_kind).",
        choices=IDENTITY_KINDS,
    )
    tls: bool = _spec(
        False,
        "This client speaks RADIUS over TLS (RadSec, RFC 6614) on radius.tls_listen, with a "
        "certificate from tls.ca_file; its datagrams over UDP are dropped. RFC 6614's secret "
        'is "radsec".',
    )
    profile: str = _spec(
        "generic",
        "What kind of client this is: which identity attribute it sends, how its accounting "
        "reads and which reply attributes it acts on (docs/recipes/). With a profile other "
        "than generic, its identity attribute and kind apply unless set here.",
        choices=RADIUS_PROFILES,
    )
    acct_interim_interval_s: int | None = _spec(
        None,
        "Acct-Interim-Interval sent in Access-Accept (0: none). Unset: the profile's (300 for "
        "mikrotik, accel-ppp and chillispot; none otherwise).",
        check=_range(0, 86400),
    )
    idle_timeout_s: int | None = _spec(
        None,
        "Idle-Timeout sent in Access-Accept, for profiles whose clients act on it. Unset: none.",
        check=_range(1, 86400),
    )
    country_code: str | None = _spec(
        None,
        "Rating by destination: the country code of national numbers this client sends (with "
        'national_prefix), e.g. "41". Unset: numbers are international (+ or the '
        "international prefix, else taken as country code first).",
        check=_digits_problem,
    )
    national_prefix: str | None = _spec(
        None,
        'The trunk prefix of national numbers ("0" in most of Europe); needs country_code.',
        check=_digits_problem,
    )
    international_prefix: str = _spec(
        "00",
        'The prefix that starts an international number ("00"; "011" in North America).',
        check=_digits_problem,
    )
    disconnect_port: int | None = _spec(
        None,
        "The client's RFC 5176 Disconnect/CoA port. Unset: the profile's (3799; Cisco 1700).",
        check=_range(1, 65535),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RadiusConfig:
    enabled: bool = _spec(False, "Serve RADIUS authentication and accounting.")
    auth_listen: tuple[str, ...] = _spec(
        ("127.0.0.1:1812",), "Addresses for Access-Request.", check=check_host_port
    )
    acct_listen: tuple[str, ...] = _spec(
        ("127.0.0.1:1813",), "Addresses for Accounting-Request.", check=check_host_port
    )
    dictionary: str = _spec(
        "dictionaries/dictionary", "FreeRADIUS-format dictionary file, loaded at start."
    )
    identity_attribute: str = _spec(
        "User-Name", "Attribute naming the account (Calling-Station-Id for a SIP switch)."
    )
    identity_kind: str = _spec(
        "user_name", "How the identity attribute's value is looked up.", choices=IDENTITY_KINDS
    )
    require_message_authenticator: bool | str = _spec(
        "auto",
        "Message-Authenticator on Access-Request (BlastRADIUS, CVE-2024-3596), for clients that "
        'do not set their own: true drops a request without one, false accepts it, "auto" '
        "requires one from a client address once it has sent one (as FreeRADIUS 3.2.5).",
        check=check_message_authenticator_policy,
    )
    currency: str = _spec(
        "",
        'ISO 4217 code sent as h323-currency beside h323-credit-amount ("": none).',
        check=check_currency,
    )
    queue_size: int = _spec(
        4096,
        "Datagrams waiting per listener; more are dropped and counted.",
        check=_range(1, 1_000_000),
    )
    receive_buffer_bytes: int = _spec(
        4 * 1024 * 1024,
        "Socket receive buffer (SO_RCVBUF).",
        check=_range(65536, 256 * 1024 * 1024),
    )
    duplicate_window_s: float = _spec(
        5.0,
        "A retransmission within this time gets the cached reply (RFC 5080).",
        check=_range(0, 60),
    )
    max_pending: int = _spec(
        1024,
        "Requests waiting for the database at once (cache misses, accounting); more are dropped.",
        check=_range(1, 100_000),
    )
    reuse_port: bool = _spec(False, "SO_REUSEPORT, so several ocsd processes can share the ports.")
    spread_access_requests: bool = _spec(
        False,
        "With several workers, send each Access-Request to worker Identifier mod N (a BPF "
        "program on the shared port) rather than by the kernel's hash of the NAS's address and "
        "port, so one NAS socket uses every worker. Off by default: a repeated attempt of the "
        "same call may then reach another worker and hold credit twice until the ring timeout.",
    )
    tls_listen: tuple[str, ...] = _spec(
        (),
        "Addresses for RADIUS over TLS (RadSec, RFC 6614; port 2083) for clients with "
        "tls = true; needs the [tls] section. Empty: none.",
        check=check_host_port,
    )
    tls_max_connections: int = _spec(
        256, "Most RadSec connections at once.", check=_range(1, 100_000)
    )
    clients: tuple[RadiusClientConfig, ...] = _spec((), "The NAS allowed to send requests.")


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantConfig:
    max_time_s: int = _spec(
        3600,
        "Longest time grant (RADIUS Session-Timeout, Diameter CC-Time).",
        check=_range(1, 86400 * 7),
    )
    min_time_s: int = _spec(
        0, "A new session whose credit buys less time is refused.", check=_range(0, 86400)
    )
    max_volume_bytes: int = _spec(
        100_000_000, "Largest volume grant in bytes.", check=_range(1, 2**62)
    )
    min_volume_bytes: int = _spec(
        0, "A new data session whose credit buys fewer bytes is refused.", check=_range(0, 2**62)
    )
    max_events: int = _spec(1000, "Most events granted at once.", check=_range(1, 2**31))
    ring_timeout_s: float = _spec(
        180.0,
        "An admitted session's grant is held this long for its accounting Start (or its "
        "CCR-Initial's start) to claim: a call may ring this long. A failed attempt (RADIUS "
        "Acct-Status-Type Failed naming its admission by the Class echoed) releases it at once.",
        check=_range(0, 3600),
    )
    admission_hold_s: float | None = _spec(
        None,
        "The former name of ring_timeout_s; when set, it is used instead.",
        check=_range(0, 3600),
    )
    unended_sessions: str = _spec(
        "charge_grant",
        "A session that ends with no Stop or CCR-Termination (its grant plus session_margin_s "
        "ran out): charge_grant charges it the time it was granted (DESIGN §6), charge_reported "
        "only what it reported.",
        choices=("charge_grant", "charge_reported"),
    )
    session_margin_s: float = _spec(
        120.0,
        "A running session with no news is closed (and its hold released) this long after its "
        "grant has run out.",
        check=_range(0, 86400),
    )
    overdraft_s: int = _spec(
        300,
        "Once its credit buys nothing, a running session may still be granted this much time in "
        "all (0: it ends; diameter.strict ends it at once).",
        check=_range(0, 86400),
    )
    overdraft_volume_bytes: int = _spec(
        10_000_000,
        "The same for a data session: the bytes it may still be granted in all.",
        check=_range(0, 2**62),
    )
    overdraft_events: int = _spec(
        0,
        "The same for events: how many more a running session may be granted.",
        check=_range(0, 2**31),
    )
    overdraft_amount: str | None = _spec(
        None,
        'Optional: also no more than this amount (e.g. "0.50") beyond what the credit buys, per '
        "session.",
        check=_amount_problem,
    )

    @property
    def ring_limit_s(self) -> float:
        """How long an admission's hold waits for its session to start."""
        return self.admission_hold_s if self.admission_hold_s is not None else self.ring_timeout_s

    def limits(self) -> GrantLimits:
        return GrantLimits(
            max_time_s=self.max_time_s,
            min_time_s=self.min_time_s,
            max_volume_bytes=self.max_volume_bytes,
            min_volume_bytes=self.min_volume_bytes,
            max_events=self.max_events,
            overdraft_s=self.overdraft_s,
            overdraft_volume_bytes=self.overdraft_volume_bytes,
            overdraft_events=self.overdraft_events,
            overdraft_amount=(
                parse_amount(self.overdraft_amount) if self.overdraft_amount is not None else None
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageConfig:
    spool_file: str = _spec(
        "var/spool/usage.spool",
        "Where usage waits (fsync'd) while PostgreSQL is unreachable; replayed when it is back.",
        check=check_non_empty,
    )
    spool_max_bytes: int = _spec(
        256 * 1024 * 1024,
        "Largest spool; when full, usage is not acknowledged (the client retries).",
        check=_range(4096, 2**40),
    )
    write_behind_s: float = _spec(
        0.5,
        "Session starts, holds and closes that carry no usage reach PostgreSQL this long after "
        "the answer (coalesced); a crash loses at most this much of them (never usage).",
        check=_range(0.01, 60),
    )


def check_peer_pattern(value: Any) -> str | None:
    text = str(value)
    body = text[2:] if text.startswith("*.") else text
    if not body or "*" in body or " " in body:
        return 'a Diameter identity such as "pcef1.example.net" or a pattern "*.example.net"'
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class DiameterPeerConfig:
    origin_host: str = _spec(
        "",
        "The peer's Origin-Host, or a pattern *.domain.",
        check=check_peer_pattern,
        required=True,
    )
    realm: str | None = _spec(None, "The peer's Origin-Realm, if it must match.")
    address: str | None = _spec(
        None, "The peer's source address or network, if it must match.", check=check_network
    )
    tls: bool = _spec(
        False,
        "This peer must connect over TLS (diameter.tls_listen, RFC 6733 §13) with a "
        "certificate from tls.ca_file naming its Origin-Host; over plain TCP it is refused (3010).",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DiameterConfig:
    enabled: bool = _spec(False, "Serve Diameter credit control (RFC 4006, 3GPP Gy/Ro).")
    listen: tuple[str, ...] = _spec(
        ("127.0.0.1:3868",), "Addresses for Diameter over TCP.", check=check_host_port
    )
    tls_listen: tuple[str, ...] = _spec(
        (),
        "Addresses for Diameter over TLS/TCP (RFC 6733 §13; port 5658), TLS from the first "
        "octet; needs the [tls] section. Empty: none.",
        check=check_host_port,
    )
    origin_host: str = _spec("ocs.localdomain", "Our Origin-Host.", check=check_non_empty)
    origin_realm: str = _spec("localdomain", "Our Origin-Realm.", check=check_non_empty)
    max_message_bytes: int = _spec(
        65536, "Largest Diameter message accepted.", check=_range(1024, 16 * 1024 * 1024)
    )
    max_connections: int = _spec(256, "Most peer connections at once.", check=_range(1, 100_000))
    cer_timeout_s: float = _spec(
        10.0, "A connection that sends no CER within this time is closed.", check=_range(0.1, 600)
    )
    read_timeout_s: float = _spec(
        30.0,
        "A partial message that does not complete within this time closes the connection.",
        check=_range(0.1, 3600),
    )
    watchdog_s: float = _spec(
        30.0, "Tw: device watchdog interval (RFC 3539; jittered).", check=_range(6, 3600)
    )
    tcc_s: float = _spec(
        600.0,
        "Tcc: a credit-control session lives at least this long after its last request; it is"
        " closed once this, its grant and its Validity-Time have all run out (plus"
        " grant.session_margin_s) with no request.",
        check=_range(1, 86400),
    )
    validity_time_s: int = _spec(1800, "Validity-Time sent with a grant.", check=_range(0, 86400))
    duplicate_window_s: float = _spec(
        60.0,
        "A retransmitted request (T flag) whose Origin-Host and End-to-End-Id were answered"
        " within this time gets that answer again (RFC 6733 5.5.4). Every answer is kept this"
        " long, at most 200,000 per process, so memory grows with it; a retransmission after it"
        " is handled afresh (a usage report is still charged once).",
        check=_range(1, 3600),
    )
    country_code: str | None = _spec(
        None,
        "Rating by destination: the country code of national numbers in Called-Party-Address "
        '(with national_prefix), e.g. "41". Unset: numbers are international (+ or the '
        "international prefix, else taken as country code first).",
        check=_digits_problem,
    )
    national_prefix: str | None = _spec(
        None,
        'The trunk prefix of national numbers ("0" in most of Europe); needs country_code.',
        check=_digits_problem,
    )
    international_prefix: str = _spec(
        "00",
        'The prefix that starts an international number ("00"; "011" in North America).',
        check=_digits_problem,
    )
    max_pending: int = _spec(
        4096,
        "Requests in progress at once; beyond it the answer is 3004 DIAMETER_TOO_BUSY.",
        check=_range(1, 1_000_000),
    )
    strict: bool = _spec(
        False,
        "End sessions when credit runs out (Final-Unit-Indication) instead of continuing within"
        " the overdraft (grant.overdraft_*).",
    )
    peers: tuple[DiameterPeerConfig, ...] = _spec(
        (), "Peers allowed to connect (the allow-list; an unknown peer gets 3010)."
    )


def check_redis_url(value: Any) -> str | None:
    text = str(value)
    if not text.startswith(("redis://", "rediss://", "unix://")):
        return 'a Redis URL such as "redis://127.0.0.1:6379/0" (or rediss://, unix://)'
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    url: str | None = _spec(
        None,
        "Share session counts and credit reservations between ocsd instances through Redis. "
        "Unset: each instance (each worker) keeps its own.",
        check=check_redis_url,
    )
    key_prefix: str = _spec("ocs", "Prefix of every key ocs writes.", check=check_non_empty)
    sync_interval_s: float = _spec(
        0.05,
        "How often this instance publishes its changes and reads the others' (batched).",
        check=_range(0.005, 10),
    )
    instance_ttl_s: float = _spec(
        15.0,
        "An instance that stops publishing is forgotten after this long.",
        check=_range(1, 3600),
    )
    timeout_s: float = _spec(1.0, "Timeout of one Redis round trip.", check=_range(0.01, 60))
    atomic_below_grants: float = _spec(
        2.0,
        "When an account's available credit is below this many times the price of the largest "
        "grant, an admission is confirmed against the other instances in Redis (one round trip) "
        "before it is answered; above it the batched sync suffices. 0: never.",
        check=_range(0, 1000),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    certificate_file: str | None = _spec(
        None, "PEM certificate (chain) ocsd presents on radius.tls_listen and diameter.tls_listen."
    )
    key_file: str | None = _spec(None, "PEM private key of that certificate (keep it private).")
    ca_file: str | None = _spec(
        None,
        "PEM CA certificates that sign the clients' and peers' certificates (every TLS "
        "client must present one).",
    )
    min_version: str = _spec("1.2", "Oldest TLS version accepted.", choices=("1.2", "1.3"))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    enabled: bool = _spec(True, "Serve Prometheus metrics over HTTP.")
    listen: str = _spec(
        "127.0.0.1:9812", "Address and port of the /metrics endpoint.", check=check_host_port
    )


def check_webhook_url(value: Any) -> str | None:
    text = str(value)
    authority = text.split("/")[2] if text.count("/") >= 2 else ""
    if not text.startswith(("http://", "https://")) or not authority or "@" in authority:
        return 'an http:// or https:// URL without credentials, e.g. "https://billing/cdrs"'
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    listen: str = _spec(
        "127.0.0.1:8080",
        "Address and port of the account API (ocs api). Loopback by default: put a TLS proxy "
        "in front to serve other hosts.",
        check=check_host_port,
    )
    with_daemon: bool = _spec(
        False, "ocsd starts ocs api as a child process and stops it when it stops."
    )
    max_body_bytes: int = _spec(
        65536, "Largest request body; a larger one is refused (413).", check=_range(1024, 2**24)
    )
    rate_limit_per_s: float = _spec(
        50.0,
        "Requests per second each token may make on average; more are refused (429).",
        check=_range(0.1, 100_000),
    )
    rate_burst_requests: int = _spec(
        100, "Requests a token may make at once above the average rate.", check=_range(1, 100_000)
    )
    page_max_items: int = _spec(
        1000, "Most items in one page of a listing (limit=).", check=_range(10, 100_000)
    )
    idempotency_keep_s: float = _spec(
        7 * 86400.0,
        "How long an Idempotency-Key's first answer is kept for repeats.",
        check=_range(3600, 366 * 86400),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrConfig:
    export: str = _spec(
        "none",
        "The daemon's CDR exporter: none, files (rotated CSV files in directory) or webhook "
        "(batches POSTed to webhook_url).",
        choices=("none", "files", "webhook"),
    )
    directory: str = _spec("var/cdr", "Where CSV files go (export = files).", check=check_non_empty)
    interval_s: float = _spec(
        60.0,
        "How often closed sessions are batched and exported: one file (or POST) per batch.",
        check=_range(0.1, 86400),
    )
    batch_max_records: int = _spec(
        10000, "Most CDRs in one file or POST.", check=_range(1, 1_000_000)
    )
    webhook_url: str | None = _spec(
        None, "Where batches are POSTed (export = webhook).", check=check_webhook_url
    )
    webhook_secret: str | None = _spec(
        None, "Signs each POST: X-OCS-Signature: sha256=<HMAC-SHA256 of the body>."
    )
    timeout_s: float = _spec(10.0, "Timeout of one POST.", check=_range(0.1, 600))
    backoff_initial_s: float = _spec(
        1.0, "Wait after the first failed delivery; doubled after each.", check=_range(0.01, 3600)
    )
    backoff_max_s: float = _spec(
        300.0, "Longest wait between delivery attempts.", check=_range(0.01, 86400)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    log: LogConfig = field(default_factory=LogConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    grant: GrantConfig = field(default_factory=GrantConfig)
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    diameter: DiameterConfig = field(default_factory=DiameterConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    cdr: CdrConfig = field(default_factory=CdrConfig)
    source: str = field(default="built-in defaults", compare=False)


class ConfigError(Exception):
    """One or more bad configuration values; ``str()`` lists them all."""

    def __init__(self, problems: list[str], source: str) -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        parts = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts) + " (or unset)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _is_exactly(tp: Any, value: Any) -> bool:
    return (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )


def _convert(key: str, tp: Any, value: Any, problems: list[str], *, secret: bool = False) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted, or append a problem."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(inner) > 1:
            # Several types allowed (``bool | str``): the first that takes the value as it is.
            for candidate in inner:
                if _is_exactly(candidate, value):
                    return _convert(key, candidate, value, problems, secret=secret)
            problems.append(
                f"{key} = {shown(value, secret=secret)} is not allowed: expected {_describe(tp)}"
            )
            return dataclasses.MISSING
        return _convert(key, inner[0], value, problems, secret=secret)
    if not _is_exactly(tp, value):
        problems.append(
            f"{key} = {shown(value, secret=secret)} is not allowed: expected {_describe(tp)}"
        )
        return dataclasses.MISSING
    return float(value) if tp is float else value


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "source"}
    for name in data:
        if name not in known:
            problems.append(
                f"{prefix}{name} is not a known key (known here: {', '.join(sorted(known))})"
            )
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("required") and f.name not in data:
            problems.append(f"{prefix}{f.name} is required: {f.metadata.get('doc', '')}")
        if f.name not in data or f.name == "source":
            continue
        key = f"{prefix}{f.name}"
        raw = data[f.name]
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(raw, Mapping):
                problems.append(f"{key} must be a table ([{key}])")
                continue
            kwargs[f.name] = _build(tp, raw, f"{key}.", problems)
            continue
        if typing.get_origin(tp) is tuple:
            items = _build_list(key, typing.get_args(tp)[0], raw, f.metadata, problems)
            if items is not None:
                kwargs[f.name] = items
            continue
        secret = bool(f.metadata.get("secret"))
        value = _convert(key, tp, raw, problems, secret=secret)
        if value is dataclasses.MISSING or value is None:
            if value is None:
                kwargs[f.name] = None
            continue
        raw_shown = shown(raw, secret=secret)
        choices = f.metadata.get("choices") or ()
        if choices and value not in choices:
            problems.append(
                f"{key} = {raw_shown} is not allowed: expected one of {', '.join(choices)}"
            )
            continue
        check = f.metadata.get("check")
        if check is not None:
            allowed = check(value)
            if allowed is not None:
                problems.append(f"{key} = {raw_shown} is not allowed: expected {allowed}")
                continue
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{prefix.rstrip('.') or 'config'}: {exc}")
        return cls()


def _build_list(
    key: str, item: Any, raw: Any, metadata: Mapping[str, Any], problems: list[str]
) -> tuple[Any, ...] | None:
    """A TOML array: of tables (``[[key]]``) for a dataclass item type, else of plain values."""
    if not isinstance(raw, list):
        kind = f"an array of tables ([[{key}]])" if dataclasses.is_dataclass(item) else "a list"
        problems.append(f"{key} = {raw!r} is not allowed: expected {kind}")
        return None
    before = len(problems)
    out: list[Any] = []
    for i, element in enumerate(raw):
        where = f"{key}[{i}]"
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            if not isinstance(element, Mapping):
                problems.append(f"{where} must be a table")
                continue
            out.append(_build(item, element, f"{where}.", problems))
            continue
        value = _convert(where, item, element, problems)
        if value is dataclasses.MISSING:
            continue
        check = metadata.get("check")
        allowed = check(value) if check is not None else None
        if allowed is not None:
            problems.append(f"{where} = {shown(element)} is not allowed: expected {allowed}")
            continue
        out.append(value)
    return tuple(out) if len(problems) == before else None


def _section_fields() -> dict[str, dict[str, Any]]:
    hints = typing.get_type_hints(Config)
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        section = hints[f.name]
        out[f.name] = typing.get_type_hints(section)
    return out


def env_overrides(env: Mapping[str, str], problems: list[str]) -> dict[str, dict[str, Any]]:
    """``OCS_SECTION__KEY`` variables as a nested mapping of typed values."""
    sections = _section_fields()
    out: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in sections or key not in sections[section]:
            problems.append(f"environment variable {name} names no configuration key")
            continue
        tp = sections[section][key]
        if (
            typing.get_origin(tp) in (types.UnionType,)
            and int in typing.get_args(tp)
            and raw.strip().isdigit()  # OCS_DAEMON__WORKERS=4 is the number, "auto" the text
        ):
            out.setdefault(section, {})[key] = int(raw)
            continue
        if tp is str or (
            typing.get_origin(tp) in (types.UnionType,) and str in typing.get_args(tp)
        ):
            value: Any = raw
        else:
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                problems.append(f"{name} = {shown(raw)} is not allowed: expected {_describe(tp)}")
                continue
        out.setdefault(section, {})[key] = value
    return out


def parse_config(data: Mapping[str, Any], env: Mapping[str, str], source: str) -> Config:
    """Validate a parsed TOML document plus environment overrides into a ``Config``."""
    problems: list[str] = []
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for section, values in env_overrides(env, problems).items():
        target = merged.setdefault(section, {})
        if isinstance(target, dict):
            target.update(values)
    config = _build(Config, merged, "", problems)
    db = config.database
    if db.pool_min_size > db.pool_max_size:
        problems.append(
            f"database.pool_min_size = {db.pool_min_size} is not allowed: "
            f"expected at most database.pool_max_size ({db.pool_max_size})"
        )
    if config.grant.min_time_s > config.grant.max_time_s:
        problems.append(
            f"grant.min_time_s = {config.grant.min_time_s} is not allowed: "
            f"expected at most grant.max_time_s ({config.grant.max_time_s})"
        )
    if config.grant.min_volume_bytes > config.grant.max_volume_bytes:
        problems.append(
            f"grant.min_volume_bytes = {config.grant.min_volume_bytes} is not allowed: "
            f"expected at most grant.max_volume_bytes ({config.grant.max_volume_bytes})"
        )
    problems.extend(_radius_problems(config.radius))
    problems.extend(_tls_problems(config))
    if config.cdr.export == "webhook" and config.cdr.webhook_url is None:
        problems.append("cdr.export = 'webhook' needs cdr.webhook_url")
    if config.cdr.backoff_initial_s > config.cdr.backoff_max_s:
        problems.append(
            f"cdr.backoff_initial_s = {config.cdr.backoff_initial_s} is not allowed: "
            f"expected at most cdr.backoff_max_s ({config.cdr.backoff_max_s})"
        )
    if config.diameter.enabled and not config.diameter.peers:
        problems.append(
            "diameter.enabled = true but no [[diameter.peers]] is configured: every peer "
            "would be refused"
        )
    if problems:
        raise ConfigError(problems, source)
    result: Config = dataclasses.replace(config, source=source)
    return result


def _tls_problems(config: Config) -> list[str]:
    """TLS listeners need a certificate, its key and a CA (all readable); a client or peer
    that must use TLS needs a TLS listener."""
    problems: list[str] = []
    radius, diameter, tls = config.radius, config.diameter, config.tls
    for i, client in enumerate(radius.clients):
        if client.tls and radius.enabled and not radius.tls_listen:
            problems.append(
                f"radius.clients[{i}].tls = true but radius.tls_listen is empty: the "
                "client could never connect"
            )
    if diameter.enabled:
        for i, peer in enumerate(diameter.peers):
            if peer.tls and not diameter.tls_listen:
                problems.append(
                    f"diameter.peers[{i}].tls = true but diameter.tls_listen is empty: the "
                    "peer could never connect"
                )
    wanted = (radius.enabled and radius.tls_listen) or (diameter.enabled and diameter.tls_listen)
    if not wanted:
        return problems
    for key in ("certificate_file", "key_file", "ca_file"):
        value = getattr(tls, key)
        if value is None:
            problems.append(f"tls.{key} is required by radius.tls_listen / diameter.tls_listen")
            continue
        try:
            with Path(value).open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problems.append(f"tls.{key} = {value!r} cannot be read: {exc.strerror or exc}")
    return problems


def _radius_problems(radius: RadiusConfig) -> list[str]:
    problems: list[str] = []
    if radius.enabled and not radius.clients:
        problems.append(
            "radius.enabled = true but no [[radius.clients]] is configured: every packet "
            "would be dropped"
        )
    seen: dict[str, int] = {}
    for i, client in enumerate(radius.clients):
        if check_network(client.address) is not None:
            continue
        network = str(ipaddress.ip_network(client.address, strict=False))
        if network in seen:
            problems.append(
                f"radius.clients[{i}].address = {client.address!r} is not allowed: "
                f"radius.clients[{seen[network]}] has the same network"
            )
        seen[network] = i
    return problems


def secrets_held(data: Mapping[str, Any]) -> list[str]:
    """Which keys of a parsed configuration file hold secrets (for the permission warning)."""
    held: list[str] = []
    radius = data.get("radius")
    clients = radius.get("clients") if isinstance(radius, Mapping) else None
    if isinstance(clients, list):
        held += [
            f"radius.clients[{i}].secret"
            for i, client in enumerate(clients)
            if isinstance(client, Mapping) and client.get("secret")
        ]
    for section, key in (("database", "dsn"), ("redis", "url")):
        table = data.get(section)
        url = table.get(key) if isinstance(table, Mapping) else None
        if isinstance(url, str) and re.search(r"://[^:/@]*:[^@]+@", url):
            held.append(f"{section}.{key}")
    return held


def permission_warning(path: str | Path | None) -> str | None:
    """A warning when the configuration file ``path`` holds secrets and other users may read
    (or write) it, else None."""
    if path is None:
        return None
    file = Path(path)
    try:
        mode = file.stat().st_mode
        if not mode & (stat.S_IROTH | stat.S_IWOTH):
            return None
        with file.open("rb") as handle:
            held = secrets_held(tomllib.load(handle))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not held:
        return None
    keys = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
    return (
        f"config file {file} holds secrets ({keys}) and is readable by other users "
        f"(mode {stat.S_IMODE(mode):04o}); make it private: chmod o-rwx {file}"
    )


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration: ``path``, else ``$OCS_CONFIG``, else the built-in defaults.

    The built-in defaults are what ``make run`` uses for the database: an embedded PostgreSQL
    under ``var/``, so ``ocs`` run from the repository root finds the demo daemon's data.
    """
    env = os.environ if env is None else env
    chosen = path if path is not None else env.get(CONFIG_PATH_ENV) or None
    if chosen is None:
        return parse_config({}, env, "built-in defaults")
    file = Path(chosen)
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"config file {file} does not exist"], str(file)) from None
    except PermissionError:
        raise ConfigError(
            [f"config file {file} cannot be read (permission denied)"], str(file)
        ) from None
    except IsADirectoryError:
        raise ConfigError([f"config file {file} is a directory"], str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(file)) from None
    return parse_config(data, env, str(file))


def iter_keys(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf key as (dotted name, default, doc): for the example file and its test."""
    out: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.extend(iter_keys(tp, f"{prefix}{f.name}."))
            continue
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            out.append((f"{prefix}{f.name}", (), f.metadata.get("doc", "")))
            out.extend(iter_keys(item, f"{prefix}{f.name}[]."))
        else:
            default: Any = f.default
            if default is dataclasses.MISSING and callable(f.default_factory):
                default = f.default_factory()
            out.append((f"{prefix}{f.name}", default, f.metadata.get("doc", "")))
    return out
