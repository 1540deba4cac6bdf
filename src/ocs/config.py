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
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocs.core.model import GrantLimits

ENV_PREFIX = "OCS_"
CONFIG_PATH_ENV = "OCS_CONFIG"

Check = Callable[[Any], str | None]


def _spec(
    default: Any, doc: str, *, check: Check | None = None, choices: tuple[str, ...] = ()
) -> Any:
    return field(default=default, metadata={"doc": doc, "check": check, "choices": choices})


def _range(low: float, high: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if value < low or (high is not None and value > high):
            return f"a number from {low} to {high}" if high is not None else f"a number >= {low}"
        return None

    return check


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

    def limits(self) -> GrantLimits:
        return GrantLimits(
            max_time_s=self.max_time_s,
            min_time_s=self.min_time_s,
            max_volume_bytes=self.max_volume_bytes,
            min_volume_bytes=self.min_volume_bytes,
            max_events=self.max_events,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    enabled: bool = _spec(True, "Serve Prometheus metrics over HTTP.")
    listen: str = _spec(
        "127.0.0.1:9812", "Address and port of the /metrics endpoint.", check=check_host_port
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    log: LogConfig = field(default_factory=LogConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    grant: GrantConfig = field(default_factory=GrantConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
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


def _convert(key: str, tp: Any, value: Any, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted, or append a problem."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, inner[0], value, problems)
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        problems.append(f"{key} = {value!r} is not allowed: expected {_describe(tp)}")
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
        value = _convert(key, tp, raw, problems)
        if value is dataclasses.MISSING or value is None:
            if value is None:
                kwargs[f.name] = None
            continue
        choices = f.metadata.get("choices") or ()
        if choices and value not in choices:
            problems.append(f"{key} = {raw!r} is not allowed: expected one of {', '.join(choices)}")
            continue
        check = f.metadata.get("check")
        if check is not None:
            allowed = check(value)
            if allowed is not None:
                problems.append(f"{key} = {raw!r} is not allowed: expected {allowed}")
                continue
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{prefix.rstrip('.') or 'config'}: {exc}")
        return cls()


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
        if tp is str or (
            typing.get_origin(tp) in (types.UnionType,) and str in typing.get_args(tp)
        ):
            value: Any = raw
        else:
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                problems.append(f"{name} = {raw!r} is not allowed: expected {_describe(tp)}")
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
    if problems:
        raise ConfigError(problems, source)
    result: Config = dataclasses.replace(config, source=source)
    return result


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
        else:
            out.append((f"{prefix}{f.name}", f.default, f.metadata.get("doc", "")))
    return out
