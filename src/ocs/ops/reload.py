"""SIGHUP: which configuration changes take effect at once, and which need a restart.

Pure: compares two validated ``Config`` objects. The daemon applies the live part (log level,
grant limits, cache policy, RADIUS clients and secrets, Diameter peers) without touching its
sockets or sessions, and logs the rest as needing a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from ocs.config import Config, ConfigError, load_config
from ocs.logs import set_level
from ocs.radius.setup import RadiusSetupError, build_clients, load_dictionary

log = logging.getLogger("ocs.reload")

BUILT_IN = "built-in defaults"

# Dotted keys (or whole sections, ending in ".") applied by a reload.
LIVE_KEYS = (
    "log.level",
    "grant.",
    "cache.ttl_s",
    "cache.max_stale_s",
    "cache.on_stale",
    "cache.load_timeout_s",
    "radius.clients",
    "radius.identity_attribute",
    "radius.identity_kind",
    "radius.dictionary",
    "diameter.peers",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadPlan:
    config: Config
    live: tuple[str, ...]  # changed keys applied now
    restart: tuple[str, ...]  # changed keys that keep their old value until a restart

    def changed(self, *prefixes: str) -> bool:
        return any(key.startswith(prefixes) for key in self.live)


def _is_live(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in LIVE_KEYS)


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of every top-level key whose value differs (lists compare as a whole)."""
    out = []
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        before: Any = getattr(old, section.name)
        after: Any = getattr(new, section.name)
        for key in dataclasses.fields(before):
            if getattr(before, key.name) != getattr(after, key.name):
                out.append(f"{section.name}.{key.name}")
    return out


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What to apply from ``new``. Keys that need a restart keep their ``old`` value in
    ``plan.config``, so what the daemon reports is what it runs."""
    live: list[str] = []
    restart: list[str] = []
    for key in changed_keys(old, new):
        (live if _is_live(key) else restart).append(key)
    config = old
    for key in live:
        section, name = key.split(".", 1)
        part = dataclasses.replace(getattr(config, section), **{name: _get(new, key)})
        config = dataclasses.replace(config, **{section: part})
    config = dataclasses.replace(config, source=new.source)
    return ReloadPlan(config=config, live=tuple(live), restart=tuple(restart))


def _get(config: Config, key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)


async def apply_reload(daemon: Any) -> bool:
    """Re-read the daemon's configuration file and apply what can change live; an invalid file
    is refused with one log line and the running configuration stays. Returns True if applied.

    Reads and sets the daemon's ``config``, ``config_view``, ``charging``, ``radius``,
    ``diameter``, ``sidecar``, ``metrics`` and ``reload_state``.
    """
    old: Config = daemon.config
    path = None if old.source == BUILT_IN else old.source
    try:
        new = daemon.config_view(load_config(path))
        plan = plan_reload(old, new)
        clients = None
        radius = getattr(daemon, "radius", None)
        if radius is not None and plan.changed("radius."):
            radius_cfg = plan.config.radius
            clients = build_clients(radius_cfg, load_dictionary(radius_cfg.dictionary))
    except (ConfigError, RadiusSetupError) as exc:
        problems = "; ".join(getattr(exc, "problems", None) or [str(exc)])
        log.error("reload refused, the running configuration stays: %s", problems)
        daemon.metrics.config_reloads.labels("refused").inc()
        daemon.reload_state = {"at": time.time(), "result": "refused", "error": problems}
        return False

    cfg = plan.config
    if plan.changed("log."):
        set_level(cfg.log.level)
    charging = getattr(daemon, "charging", None)
    if charging is not None:
        charging.limits = cfg.grant.limits()
        charging.charge_unended = cfg.grant.unended_sessions == "charge_grant"
        charging.policy = dataclasses.replace(
            charging.policy,
            ttl_s=cfg.cache.ttl_s,
            max_stale_s=cfg.cache.max_stale_s,
            on_stale=cfg.cache.on_stale,
            load_timeout_s=cfg.cache.load_timeout_s,
            pending_reservation_ttl_s=cfg.grant.ring_limit_s,
            session_ttl_margin_s=cfg.grant.session_margin_s,
            write_behind_s=cfg.usage.write_behind_s,
        )
    if radius is not None and clients is not None:
        radius.clients = clients  # the sockets stay; the next datagram sees the new table
    if plan.changed("diameter.peers"):
        _reload_diameter_peers(getattr(daemon, "diameter", None), cfg)
    queued = 0
    sidecar = getattr(daemon, "sidecar", None)
    if sidecar is not None:
        queued = sidecar.reload_all()  # tariffs and limits edited in the database
    if plan.restart:
        log.warning(
            "reload: changed keys need a restart and keep their old value: %s",
            ", ".join(plan.restart),
        )
    daemon.config = cfg
    daemon.metrics.config_reloads.labels("applied").inc()
    daemon.metrics.config_last_reload.set(time.time())
    daemon.reload_state = {
        "at": time.time(),
        "result": "applied",
        "changed": list(plan.live),
        "need_restart": list(plan.restart),
    }
    log.info(
        "configuration reloaded changed=%s accounts_rereading=%d",
        ",".join(plan.live) or "nothing",
        queued,
    )
    return True


def _reload_diameter_peers(server: Any, config: Config) -> None:
    setter = getattr(server, "set_peers", None)
    if callable(setter):
        setter(config.diameter.peers)
        log.info("diameter peers reloaded peers=%d", len(config.diameter.peers))
    elif server is not None or config.diameter.enabled:
        log.warning("reload: diameter.peers changed; the Diameter front needs a restart for it")
