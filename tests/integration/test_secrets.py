"""Configuration secrets (issue 14): the daemon warns at start when the file holding RADIUS
secrets is readable by other users, and a secret never appears in its logs (at debug level,
through traffic with right and wrong secrets and a reload), in /status, /metrics or in an
error."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from support import BIN, ROOT, free_port, ocs_env, write_config

from ocs.radius import codec

pytestmark = pytest.mark.integration

SECRET = "Zq8-very-secret-shared-key"
OTHER = "Xk4-the-next-shared-secret"
DB_PASSWORD = "pw-never-shown-42"


def config_text(tmp_path: Path, auth: int, acct: int, metrics: int, secret: str) -> str:
    return f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
graceful_timeout_s = 3
[log]
level = "debug"
[metrics]
listen = "127.0.0.1:{metrics}"
[usage]
spool_file = "{tmp_path / "usage.spool"}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "{secret}"
"""


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return answer.read().decode()


def send(port: int, secret: str, user: str) -> codec.Packet | None:
    packet = codec.encode_request(
        codec.ACCESS_REQUEST,
        1,
        codec.SharedSecret(secret.encode()),
        [codec.attr_str(codec.USER_NAME, user), codec.attr_str(codec.USER_PASSWORD, SECRET)],
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(packet, ("127.0.0.1", port))
        try:
            return codec.parse_packet(sock.recvfrom(4096)[0])
        except TimeoutError:
            return None


def test_secrets_stay_out_of_logs_status_and_errors(dsn: str, daemons, tmp_path: Path) -> None:
    auth, acct = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    metrics = free_port(socket.SOCK_STREAM)
    path = write_config(tmp_path / "ocsd.toml", config_text(tmp_path, auth, acct, metrics, SECRET))
    path.chmod(0o644)
    proc = daemons("--config", str(path), "--load-demo", dsn=dsn)
    out = proc.wait_for("msg='ready")
    assert "holds secrets (radius.clients[0].secret) and is readable by other users" in out
    assert "mode 0644" in out

    assert send(auth, SECRET, "postpaid").code == codec.ACCESS_ACCEPT
    assert send(auth, "a-wrong-secret", "postpaid") is None  # dropped, logged at debug
    status = get(metrics, "/status")
    json.loads(status)
    scraped = get(metrics, "/metrics")
    # A reload with a new secret: the old one stops working, the new one works.
    path.write_text(config_text(tmp_path, auth, acct, metrics, OTHER))
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and send(auth, OTHER, "postpaid") is None:
        time.sleep(0.1)
    assert send(auth, OTHER, "postpaid").code == codec.ACCESS_ACCEPT
    status += get(metrics, "/status")
    assert proc.stop() == 0
    everything = proc.output() + status + scraped
    for secret in (SECRET, OTHER):
        assert secret not in everything
    assert "bad Message-Authenticator" in proc.output() or "bad_authenticator" in proc.output()


def test_a_private_config_file_is_not_warned_about(dsn: str, daemons, tmp_path: Path) -> None:
    auth, acct = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    metrics = free_port(socket.SOCK_STREAM)
    path = write_config(tmp_path / "ocsd.toml", config_text(tmp_path, auth, acct, metrics, SECRET))
    path.chmod(0o600)
    proc = daemons("--config", str(path), dsn=dsn)
    out = proc.wait_for("msg='ready")
    assert "holds secrets" not in out
    assert proc.stop() == 0


def test_check_config_and_a_bad_dsn_show_no_secret(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "bad.toml",
        '[[radius.clients]]\naddress = "127.0.0.1"\nsecret = 987654321\n'
        f'[database]\ndsn = "postgresql://ocs:{DB_PASSWORD}@127.0.0.1:1/ocs"\n'
        "pool_min_size = 5\npool_max_size = 1\n",
    )
    done = subprocess.run(
        [str(BIN / "ocsd"), "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
        env=ocs_env(None),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "radius.clients[0].secret = '***'" in done.stderr
    assert "987654321" not in done.stderr + done.stdout
    # A DSN whose server is unreachable: the error names it without the password.
    good = write_config(
        tmp_path / "unreachable.toml",
        f'[daemon]\nlock_file = "{tmp_path / "l.lock"}"\n[metrics]\nenabled = false\n'
        f'[database]\ndsn = "postgresql://ocs:{DB_PASSWORD}@127.0.0.1:1/ocs"\n'
        "connect_timeout_s = 1\n",
    )
    done = subprocess.run(
        [str(BIN / "ocsd"), "--config", str(good)],
        capture_output=True,
        text=True,
        env=ocs_env(None),
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert DB_PASSWORD not in done.stderr + done.stdout
    assert "***" in done.stderr
