"""Operations against a real daemon: /metrics, /healthz, /readyz, /status; the dashboard's and
the alert rules' metrics; systemd notification over a fake NOTIFY_SOCKET; the unit file; SIGHUP
reload; ``ocs status`` and ``ocs check-config``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from support import BIN, ROOT, exchange, free_udp_port, run_ocs, write_config

from ocs.radius import codec

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "monitoring" / "grafana-ocs.json"
RULES = ROOT / "monitoring" / "ocs-alerts.yml"
UNIT = ROOT / "systemd" / "ocsd.service"
METRIC_NAME = re.compile(r"\b((?:ocs|process)_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_sum", "_count")


def daemon_config(tmp_path: Path, secret: str = "testing123", extra: str = "") -> Path:
    auth, acct = free_udp_port(), free_udp_port()
    return write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
graceful_timeout_s = 5.0
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{tmp_path / "spool" / "usage.spool"}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "{secret}"
{extra}
""",
    )


def ports(out: str) -> tuple[int, int]:
    """(metrics port, RADIUS auth port) from the daemon's start-up log."""
    metrics = int(out.split("metrics listening address=127.0.0.1 port=")[1].split(maxsplit=1)[0])
    auth = int(
        out.split("radius listening kind=auth address=127.0.0.1 port=")[1].split("'", maxsplit=1)[0]
    )
    return metrics, auth


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def access(port: int, secret: bytes, user: str = "postpaid") -> codec.Packet | None:
    packet = codec.encode_request(
        codec.ACCESS_REQUEST,
        7,
        codec.SharedSecret(secret),
        [codec.attr_str(codec.USER_NAME, user), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return exchange(port, packet, sock, timeout_s=2.0)


def used_metric_names() -> dict[str, set[str]]:
    """Every ocs_/process_ metric name in the dashboard's and the rules' expressions."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    exprs += [
        v["query"]["query"] if isinstance(v.get("query"), dict) else str(v.get("query", ""))
        for v in dashboard["templating"]["list"]
    ]
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return {
        "dashboard": {m for e in exprs for m in METRIC_NAME.findall(e)},
        "rules": {m for e in rules for m in METRIC_NAME.findall(e)},
    }


def exposed_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith(("# TYPE ", "# HELP ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture
def ops_daemon(dsn: str, daemons, tmp_path: Path):
    config = daemon_config(tmp_path)
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    out = daemon.wait_for("msg='ready")
    metrics_port, auth_port = ports(out)
    yield daemon, metrics_port, auth_port, config
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


def test_endpoints_answer_from_the_running_daemon(ops_daemon) -> None:
    _daemon, port, _auth, _config = ops_daemon
    assert get(port, "/healthz") == (200, "ok\n")
    code, body = get(port, "/readyz")
    assert code == 200, body
    assert json.loads(body)["database"] == "up"
    code, body = get(port, "/status")
    status = json.loads(body)
    assert code == 200
    assert status["cache"]["entries"] == 8
    assert status["database"]["up"] is True
    assert status["radius"]["clients"] == 1
    assert [x["kind"] for x in status["radius"]["listeners"]] == ["auth", "acct"]
    assert status["loader"]["last_success_unix"] > 0
    assert get(port, "/nothing")[0] == 404


def test_every_metric_of_the_dashboard_and_the_rules_exists(ops_daemon) -> None:
    _daemon, port, auth, _config = ops_daemon
    assert access(auth, b"testing123") is not None  # some traffic, so the histogram has series
    _code, text = get(port, "/metrics")
    exposed = exposed_names(text)
    used = used_metric_names()
    assert len(used["dashboard"]) > 20 and len(used["rules"]) >= 6
    for where, names in used.items():
        missing = {
            name
            for name in names
            if name not in exposed
            and not (name.endswith(SUFFIXES) and name.rsplit("_", 1)[0] in exposed)
        }
        assert not missing, f"{where} uses metrics the daemon does not expose: {sorted(missing)}"


def test_alert_rules_are_valid() -> None:
    promtool = shutil.which("promtool")
    if promtool is not None:
        done = subprocess.run(
            [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # Without promtool (the Debian package is ~100 MB), a structural check of the rule file.
    data = yaml.safe_load(RULES.read_text())
    assert set(data) == {"groups"}
    names = set()
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Za-z_]\w*", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
            if "for" in rule:
                assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["annotations"]["summary"]
            names.add(rule["alert"])
    expected = {
        "OcsLoaderStale",
        "OcsDatabaseDown",
        "OcsSpoolGrowing",
        "OcsHighDropRate",
        "OcsLatencyP99High",
        "OcsNoDiameterPeers",
    }
    assert expected <= names


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_systemd_notify_ready_watchdog_stopping(dsn: str, daemons, tmp_path: Path) -> None:
    name = f"ocs-notify-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(60)
        daemon = daemons(
            "--config",
            str(daemon_config(tmp_path)),
            dsn=dsn,
            NOTIFY_SOCKET="@" + name,
            WATCHDOG_USEC="200000",
        )
        first = sock.recv(4096).decode()
        # READY=1 comes after the listeners are open and the cache is warm.
        assert first.startswith("READY=1\n"), first
        out = daemon.output()
        assert "msg='ready" in out
        metrics_port, auth = ports(out)
        assert get(metrics_port, "/healthz")[0] == 200
        assert access(auth, b"testing123") is not None
        sock.settimeout(5)
        pings = [sock.recv(4096) for _ in range(3)]
        assert set(pings) == {b"WATCHDOG=1"}  # every WATCHDOG_USEC/2 = 0.1 s
        daemon.proc.send_signal(signal.SIGTERM)
        seen = []
        while b"STOPPING=1" not in seen:
            seen.append(sock.recv(4096))
        assert daemon.stop() == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_file_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "ocsd.service"
    # The unit names /opt/ocs; point it at this venv so the ExecStart= check can pass.
    unit.write_text(UNIT.read_text().replace("/opt/ocs/bin/", f"{BIN}/"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    own = [line for line in done.stderr.splitlines() if "ocsd.service" in line]
    assert done.returncode == 0 and not own, done.stderr
    text = UNIT.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=ocs",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=ocs",
        "OCS_USAGE__SPOOL_FILE=/var/lib/ocs/",
    ):
        assert setting in text, setting


def test_sighup_swaps_the_client_secret_and_refuses_a_bad_file(ops_daemon) -> None:
    daemon, port, auth, config = ops_daemon
    pid = daemon.proc.pid
    assert access(auth, b"testing123").code == codec.ACCESS_ACCEPT
    config.write_text(config.read_text().replace('"testing123"', '"n3w-s3cret"'))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("configuration reloaded changed=radius.clients")
    assert access(auth, b"testing123") is None  # the old secret is dropped now
    assert access(auth, b"n3w-s3cret").code == codec.ACCESS_ACCEPT
    assert daemon.proc.pid == pid and daemon.proc.poll() is None

    good = config.read_text()
    config.write_text(good + "\n[grant]\nmax_time_s = -1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    out = daemon.wait_for("reload refused")
    assert "grant.max_time_s = -1 is not allowed" in out
    assert "n3w-s3cret" not in out and "testing123" not in out  # no secret in the log
    assert access(auth, b"n3w-s3cret").code == codec.ACCESS_ACCEPT  # still serving, old config
    status = json.loads(get(port, "/status")[1])
    assert status["reload"]["result"] == "refused"

    # A listener change is logged as needing a restart; the rest applies.
    config.write_text(
        good.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:1"')
        + "\n[log]\nlevel = 'debug'\n"
    )
    daemon.proc.send_signal(signal.SIGHUP)
    out = daemon.wait_for("configuration reloaded changed=log.level")
    assert "need a restart and keep their old value: metrics.listen" in out
    assert get(port, "/healthz")[0] == 200


def test_ocs_status_and_check_config(ops_daemon, tmp_path: Path) -> None:
    _daemon, port, _auth, config = ops_daemon
    shown = run_ocs("status", "--url", f"http://127.0.0.1:{port}", dsn=None)
    assert shown.code == 0, shown.err
    assert "yes: database reachable" in shown.out
    assert "8 accounts" in shown.out
    assert "auth 127.0.0.1:" in shown.out
    as_json = run_ocs("status", "--url", f"http://127.0.0.1:{port}", "--json", dsn=None)
    assert json.loads(as_json.out)["pid"] == _daemon.proc.pid

    nobody = run_ocs("status", "--url", "http://127.0.0.1:1", dsn=None)
    assert nobody.code == 3 and "no ocsd answers at http://127.0.0.1:1/status" in nobody.err
    fixed = write_config(tmp_path / "fixed.toml", "[metrics]\nlisten = '127.0.0.1:0'\n")
    unknown = run_ocs("--config", str(fixed), "status", dsn=None)
    assert unknown.code == 3 and "--url" in unknown.err

    ok = run_ocs("check-config", str(config), dsn=None)
    assert (ok.code, ok.out.strip()) == (0, f"configuration OK ({config})")
    bad = write_config(tmp_path / "bad.toml", "[grant]\nmax_time_s = -1\n")
    refused = run_ocs("check-config", str(bad), dsn=None)
    assert refused.code == 2
    assert "grant.max_time_s = -1 is not allowed" in refused.err
    missing = run_ocs("check-config", str(tmp_path / "none.toml"), dsn=None)
    assert missing.code == 2 and "does not exist" in missing.err
    assert os.path.exists(config)
