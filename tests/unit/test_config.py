"""Configuration: defaults, the example file, env overrides, and clear errors for bad values."""

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from ocs.config import (
    Config,
    ConfigError,
    iter_keys,
    load_config,
    parse_config,
    permission_warning,
)

ROOT = Path(__file__).resolve().parents[2]


def test_no_file_gives_the_built_in_defaults() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.database.dsn is None
    assert config.database.embedded_dir == "var/postgres"
    assert config.grant.max_time_s == 3600
    assert config.metrics.listen == "127.0.0.1:9812"


def test_example_file_shows_every_key_with_its_default() -> None:
    data = tomllib.loads((ROOT / "config" / "ocs.example.toml").read_text())
    text = (ROOT / "config" / "ocs.example.toml").read_text()
    for key, default, _doc in iter_keys():
        section, name = key.split(".")[:2]
        if "[]." in key:
            # A key of an array of tables ([[radius.clients]]): shown in the example entry.
            assert f"{key.split('.')[-1]} = " in text, f"{key} is not shown in ocs.example.toml"
            continue
        if key in ("radius.clients", "diameter.peers"):
            assert f"[[{key}]]" in text
            continue
        if default is None:
            # Unset by default: shown commented out.
            assert f"# {name} = " in text, f"{key} is not shown in ocs.example.toml"
            continue
        shown_value = data[section][name]
        if isinstance(shown_value, list):
            shown_value = tuple(shown_value)
        assert shown_value == default, f"{key} in ocs.example.toml differs from the default"
    shown = {f"{s}.{k}" for s, table in data.items() for k in table}
    assert shown <= {k for k, _, _ in iter_keys()}
    example = load_config(ROOT / "config" / "ocs.example.toml", env={})
    assert example.radius.clients  # the example shows one client ...
    assert example == Config(
        radius=replace(Config().radius, clients=example.radius.clients),
        diameter=replace(Config().diameter, peers=example.diameter.peers),
    )


@pytest.mark.parametrize("name", ["ocs.example.toml", "ocs.demo.toml"])
def test_shipped_files_are_valid(name: str) -> None:
    load_config(ROOT / "config" / name, env={})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"grant": {"max_time_s": 0}},
            "grant.max_time_s = 0 is not allowed: expected a number from 1",
        ),
        (
            {"grant": {"max_time_s": "1h"}},
            "grant.max_time_s = '1h' is not allowed: expected an integer",
        ),
        (
            {"grant": {"max_time_s": 1.5}},
            "grant.max_time_s = 1.5 is not allowed: expected an integer",
        ),
        ({"grant": {"max_time_s": True}}, "expected an integer"),
        (
            {"log": {"level": "loud"}},
            "log.level = 'loud' is not allowed: expected one of debug, info",
        ),
        (
            {"metrics": {"listen": "localhost:9812"}},
            "metrics.listen = 'localhost:9812' is not allowed",
        ),
        ({"metrics": {"listen": "127.0.0.1:70000"}}, "metrics.listen = '127.0.0.1:70000'"),
        ({"database": {"pool_min_size": 20}}, "database.pool_min_size = 20 is not allowed"),
        ({"database": {"dsn": 5}}, "database.dsn = 5 is not allowed: expected a string"),
        (
            {"database": {"usage_writers": 0}},
            "database.usage_writers = 0 is not allowed: expected a number from 1 to 100",
        ),
        ({"database": {"usage_batch_max": 0}}, "database.usage_batch_max = 0 is not allowed"),
        (
            {"daemon": {"workers": "many"}},
            "daemon.workers = 'many' is not allowed: expected \"auto\" or a number from 1 to 64",
        ),
        ({"daemon": {"workers": 0}}, "daemon.workers = 0 is not allowed"),
        (
            {"radius": {"spread_access_requests": "yes"}},
            "radius.spread_access_requests = 'yes' is not allowed",
        ),
        ({"daemon": {"workers": 65}}, "daemon.workers = 65 is not allowed"),
        (
            {"diameter": {"national_prefix": "0x"}},
            "diameter.national_prefix = '0x' is not allowed",
        ),
        (
            {"diameter": {"duplicate_window_s": 0}},
            "diameter.duplicate_window_s = 0 is not allowed: expected a number from 1 to 3600",
        ),
        ({"diameter": {"duplicate_window_s": 3601}}, "diameter.duplicate_window_s = 3601"),
        ({"grant": {"min_time_s": 100, "max_time_s": 50}}, "grant.min_time_s = 100"),
        ({"cache": {"ttl": 60}}, "cache.ttl is not a known key"),
        ({"caches": {}}, "caches is not a known key"),
        ({"grant": {"max_time": 60}}, "grant.max_time is not a known key (known here:"),
        ({"grant": 5}, "grant must be a table"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env={}, source="test.toml")
    assert fragment in str(caught.value)
    assert "test.toml" in str(caught.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"grant": {"max_time_s": 0}, "log": {"level": "x"}}, env={}, source="t")
    assert len(caught.value.problems) == 2


def test_environment_overrides() -> None:
    env = {
        "OCS_DATABASE__DSN": "postgresql://ocs:secret@db:5432/ocs",
        "OCS_GRANT__MAX_TIME_S": "1800",
        "OCS_METRICS__ENABLED": "false",
        "OCS_DAEMON__GRACEFUL_TIMEOUT_S": "2.5",
        "OCS_CONFIG": "ignored-here",
        "OCSX_NOT_OURS__A": "1",
    }
    config = parse_config({"grant": {"max_time_s": 60}}, env=env, source="t")
    assert config.database.dsn == "postgresql://ocs:secret@db:5432/ocs"
    assert config.grant.max_time_s == 1800
    assert config.metrics.enabled is False
    assert config.daemon.graceful_timeout_s == 2.5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"OCS_GRANT__MAX_TIME": "5"}, "OCS_GRANT__MAX_TIME names no configuration key"),
        ({"OCS_GRANT__MAX_TIME_S": "soon"}, "OCS_GRANT__MAX_TIME_S = 'soon' is not allowed"),
        ({"OCS_GRANT__MAX_TIME_S": "0"}, "grant.max_time_s = 0 is not allowed"),
    ],
)
def test_bad_environment_overrides(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config({}, env=env, source="t")


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "ocs.toml"
    file.write_text('[grant]\nmax_time_s = 120\n[log]\nformat = "json"\n')
    config = load_config(None, env={"OCS_CONFIG": str(file)})
    assert (config.grant.max_time_s, config.log.format, config.source) == (120, "json", str(file))
    # --config wins over $OCS_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text("[grant]\nmax_time_s = 30\n")
    assert load_config(other, env={"OCS_CONFIG": str(file)}).grant.max_time_s == 30


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "does not exist"), ("[grant\n", "not valid TOML")],
)
def test_unreadable_files(tmp_path: Path, content: str | None, fragment: str) -> None:
    file = tmp_path / "broken.toml"
    if content is not None:
        file.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_config(file, env={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.grant.max_time_s = 1  # type: ignore[misc]


SECRET_TEXT = "s3cr3t-Shared-Key"


@pytest.mark.parametrize(
    "data",
    [
        {"radius": {"clients": [{"address": "10.0.0.1", "secret": 12345}]}},
        {"radius": {"clients": [{"address": "10.0.0.1", "secret": "   "}]}},
        {"radius": {"clients": [{"address": "nonsense", "secret": SECRET_TEXT}]}},
        {"database": {"dsn": f"postgresql://ocs:{SECRET_TEXT}@db:5432/ocs", "pool_min_size": -1}},
        {"redis": {"url": f"http://ocs:{SECRET_TEXT}@redis:6379/0"}},
    ],
)
def test_secrets_never_appear_in_configuration_errors(data: dict) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(data, {}, "test")
    text = str(refused.value)
    assert SECRET_TEXT not in text
    assert "12345" not in text
    assert "is not allowed" in text or "is required" in text


def test_a_secret_with_a_wrong_type_is_named_but_not_shown() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(
            {"radius": {"clients": [{"address": "10.0.0.1", "secret": 12345}]}}, {}, "test"
        )
    assert "radius.clients[0].secret = '***' is not allowed: expected a string" in str(
        refused.value
    )


def test_a_config_file_with_secrets_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "ocs.toml"
    path.write_text(f'[[radius.clients]]\naddress = "10.0.0.1"\nsecret = "{SECRET_TEXT}"\n')
    path.chmod(0o644)
    warning = permission_warning(path)
    assert warning is not None
    assert "radius.clients[0].secret" in warning and "0644" in warning
    assert SECRET_TEXT not in warning
    path.chmod(0o640)
    assert permission_warning(path) is None
    path.chmod(0o600)
    assert permission_warning(path) is None
    # Without secrets in it, a world-readable file is fine.
    plain = tmp_path / "plain.toml"
    plain.write_text("[cache]\nttl_s = 30\n")
    plain.chmod(0o644)
    assert permission_warning(plain) is None
    # A DSN with a password is a secret too.
    dsn = tmp_path / "dsn.toml"
    dsn.write_text('[database]\ndsn = "postgresql://ocs:pw@db/ocs"\n')
    dsn.chmod(0o604)
    assert "database.dsn" in (permission_warning(dsn) or "")


def test_message_authenticator_policy_per_client_and_default() -> None:
    client = {"address": "10.0.0.1", "secret": "s"}
    config = parse_config({"radius": {"clients": [client]}}, env={}, source="t")
    assert config.radius.require_message_authenticator == "auto"
    assert config.radius.clients[0].require_message_authenticator is None  # the default applies
    for value in (True, False, "auto", "AUTO"):
        data = {"radius": {"clients": [{**client, "require_message_authenticator": value}]}}
        parsed = parse_config(data, env={}, source="t")
        assert parsed.radius.clients[0].require_message_authenticator == value
    # Environment variables are text: "false" is the policy false.
    env = {"OCS_RADIUS__REQUIRE_MESSAGE_AUTHENTICATOR": "false"}
    assert parse_config({}, env=env, source="t").radius.require_message_authenticator == "false"


@pytest.mark.parametrize("value", ["yes", 1, 0.5, ""])
def test_message_authenticator_policy_refuses_other_values(value: object) -> None:
    data = {"radius": {"clients": [{"address": "10.0.0.1", "secret": "s"}]}}
    data["radius"]["clients"][0]["require_message_authenticator"] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env={}, source="t")
    assert f"radius.clients[0].require_message_authenticator = {value!r} is not allowed" in str(
        caught.value
    )
    with pytest.raises(ConfigError, match=r"radius\.require_message_authenticator = "):
        parse_config({"radius": {"require_message_authenticator": value}}, env={}, source="t")


@pytest.mark.parametrize("section", ["radius client", "diameter"])
def test_a_national_prefix_needs_its_country_code(section: str) -> None:
    """Each key is valid alone; together they must make a dial plan. The RADIUS clients and
    the Diameter front build theirs with one function (``radius.setup.dial_plan_of``), and the
    daemon refuses to start with its message."""
    from types import SimpleNamespace

    from ocs.radius.setup import RadiusSetupError, dial_plan_of

    keys = SimpleNamespace(country_code=None, national_prefix="0", international_prefix="00")
    with pytest.raises(RadiusSetupError, match=f"^{section}: .*national prefix needs"):
        dial_plan_of(keys, section)
    keys.country_code = "41"
    plan = dial_plan_of(keys, section)
    assert (plan.country_code, plan.national_prefix, plan.international_prefix) == ("41", "0", "00")
