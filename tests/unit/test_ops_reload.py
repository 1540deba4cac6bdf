"""Which changed keys a SIGHUP applies, and which keep their old value until a restart."""

from __future__ import annotations

from ocs.config import parse_config
from ocs.ops.reload import changed_keys, plan_reload

BASE = {
    "radius": {
        "enabled": True,
        "auth_listen": ["127.0.0.1:1812"],
        "clients": [{"address": "10.0.0.1", "secret": "old-secret"}],
    },
    "grant": {"max_time_s": 3600},
    "log": {"level": "info"},
}


def _config(**changes):
    data = {k: dict(v) for k, v in BASE.items()}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return parse_config(data, {}, "test.toml")


def test_nothing_changed() -> None:
    plan = plan_reload(_config(), _config())
    assert plan.live == () and plan.restart == ()


def test_live_keys_are_applied() -> None:
    new = _config(
        radius__clients=[{"address": "10.0.0.1", "secret": "new-secret"}],
        grant__max_time_s=600,
        log__level="debug",
        cache__ttl_s=30.0,
    )
    plan = plan_reload(_config(), new)
    assert set(plan.live) == {"radius.clients", "grant.max_time_s", "log.level", "cache.ttl_s"}
    assert plan.restart == ()
    assert plan.config.radius.clients[0].secret == "new-secret"
    assert plan.config.grant.max_time_s == 600
    assert plan.changed("radius.") and plan.changed("log.")


def test_listener_changes_need_a_restart_and_keep_the_old_value() -> None:
    new = _config(
        radius__auth_listen=["127.0.0.1:11812"],
        metrics__listen="127.0.0.1:9999",
        grant__max_time_s=60,
    )
    plan = plan_reload(_config(), new)
    assert set(plan.restart) == {"radius.auth_listen", "metrics.listen"}
    assert plan.live == ("grant.max_time_s",)
    assert plan.config.radius.auth_listen == ("127.0.0.1:1812",)
    assert plan.config.metrics.listen == "127.0.0.1:9812"
    assert plan.config.grant.max_time_s == 60


def test_changed_keys_lists_dotted_names() -> None:
    assert changed_keys(_config(), _config(database__command_timeout_s=9.0)) == [
        "database.command_timeout_s"
    ]
