"""The ``ocs`` CLI and the ``ocsd`` daemon as an operator runs them, against a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from support import ROOT, run_ocs, write_config

pytestmark = pytest.mark.integration

DEMO_EXPECTED = {
    "prepaid-ok": "admitted, grant 1000 s",
    "prepaid-empty": "refused: insufficient credit",
    "postpaid": "admitted, grant 3600 s",
    "buffer": "refused: insufficient credit",
    "min-balance": "refused: insufficient credit",
    "temp-increase": "admitted, grant 3600 s",
    "temp-expired": "refused: insufficient credit",
    "blocked": "refused: account blocked",
}


@pytest.mark.dates
def test_demo_load_and_account_show_for_every_demo_row(dsn: str) -> None:
    loaded = run_ocs("demo", "load", dsn=dsn)
    assert loaded.code == 0, loaded.err
    for name, verdict in DEMO_EXPECTED.items():
        shown = run_ocs("account", "show", name, dsn=dsn)
        assert shown.code == 0, shown.err
        assert f"new session now     {verdict}" in shown.out, shown.out
        assert f"demo load: {name}" not in shown.out
    show = run_ocs("account", "show", "temp-increase", dsn=dsn).out
    assert "effective limit     220.00" in show
    assert "available credit    20.00" in show


@pytest.mark.dates
def test_account_lifecycle_through_the_cli(dsn: str) -> None:
    assert (
        run_ocs(
            "tariff",
            "set",
            "voice",
            "--per-minute",
            "0.12",
            "--increment",
            "6",
            "--minimum",
            "60",
            dsn=dsn,
        ).code
        == 0
    )
    created = run_ocs(
        "account",
        "create",
        "acme",
        "--credit-limit",
        "100",
        "--tariff",
        "voice",
        "--time-zone",
        "Europe/Zurich",
        dsn=dsn,
    )
    assert created.code == 0, created.err
    assert "new session now     admitted, grant 3600 s" in created.out
    assert run_ocs("identity", "add", "acme", "e164", "+41 44 000 00 00", dsn=dsn).out.strip() == (
        "account acme: e164 41440000000"
    )
    # 10.00 paid twice with the same external id is recorded once.
    first = run_ocs("payment", "add", "acme", "10.00", "--external-id", "inv-1", dsn=dsn)
    again = run_ocs("payment", "add", "acme", "10.00", "--external-id", "inv-1", dsn=dsn)
    assert "balance now 10.00" in first.out
    assert "was recorded before" in again.out and again.code == 0
    assert run_ocs("credit-limit", "set", "acme", "0", dsn=dsn).code == 0
    blocked = run_ocs("account", "update", "acme", "--status", "blocked", dsn=dsn)
    assert "refused: account blocked" in blocked.out
    temp = run_ocs(
        "credit-limit",
        "set",
        "acme",
        "20",
        "--temporary",
        "--until",
        "+7d",
        "--reason",
        "payment on its way",
        dsn=dsn,
    )
    assert temp.code == 0, temp.err
    history = run_ocs("credit-limit", "history", "acme", dsn=dsn).out
    assert "payment on its way" in history and "temporary" in history
    listing = run_ocs("account", "list", dsn=dsn).out
    assert "acme" in listing and "(1 account)" in listing
    assert "voice" in run_ocs("tariff", "list", dsn=dsn).out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["account", "show", "nobody"], 1, "no account named 'nobody'"),
        (["payment", "add", "nobody", "5"], 1, "no account named 'nobody'"),
        (["payment", "add", "x", "5.0000001"], 2, "more than 6 decimal places"),
        (["payment", "add", "x", "-5"], 2, "must be a positive amount"),
        (["account", "create", "tz", "--time-zone", "Mars/Base"], 1, "unknown time zone"),
        (["account", "create", "t", "--tariff", "nope"], 1, "no tariff named 'nope'"),
        (["credit-limit", "set", "x", "10%"], 2, "only allowed for a --temporary increase"),
        (["identity", "add", "x", "e164", "not-a-number"], 2, "is not a valid e164 number"),
        (["tariff", "set", "t", "--increment", "0"], 2, "--increment must be at least 1"),
    ],
)
def test_cli_errors_are_clear_and_exit_non_zero(
    dsn: str, args: list[str], code: int, message: str
) -> None:
    run_ocs("account", "create", "x", dsn=dsn)
    result = run_ocs(*args, dsn=dsn)
    assert result.code == code, (result.out, result.err)
    assert message in result.err
    assert "Traceback" not in result.err


def test_duplicate_account_and_identity_conflicts(dsn: str) -> None:
    assert run_ocs("account", "create", "a", dsn=dsn).code == 0
    dup = run_ocs("account", "create", "a", dsn=dsn)
    assert (dup.code, "exists already" in dup.err) == (1, True)
    run_ocs("account", "create", "b", dsn=dsn)
    run_ocs("identity", "add", "a", "user_name", "shared", dsn=dsn)
    clash = run_ocs("identity", "add", "b", "user_name", "shared", dsn=dsn)
    assert clash.code == 1 and "belongs to account 'a'" in clash.err


def test_unreachable_dsn_is_a_clear_error(tmp_path: Path) -> None:
    result = run_ocs(
        "account",
        "list",
        dsn="postgresql://ocs:hunter2@127.0.0.1:1/ocs",
        OCS_DATABASE__CONNECT_TIMEOUT_S="3",
    )
    assert result.code == 3
    assert "cannot connect to PostgreSQL at postgresql://ocs:***@127.0.0.1:1/ocs" in result.err
    assert "hunter2" not in result.err
    assert "Traceback" not in result.err


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", "[grant]\nmax_time_s = -1\n[log]\nlevel = 'x'\n")
    for program in ("ocs", "ocsd"):
        args = ["--config", str(config)] + (["account", "list"] if program == "ocs" else [])
        import subprocess
        import sys

        done = subprocess.run(
            [str(Path(sys.executable).parent / program), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"invalid configuration ({config})" in done.stderr
        assert "grant.max_time_s = -1 is not allowed" in done.stderr
        assert "log.level = 'x' is not allowed" in done.stderr
        assert "Traceback" not in done.stderr


def _daemon_config(tmp_path: Path, extra: str = "") -> Path:
    return write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
graceful_timeout_s = 5.0
[metrics]
listen = "127.0.0.1:0"
{extra}
""",
    )


def test_daemon_starts_serves_metrics_and_stops_on_sigterm(
    dsn: str, daemons, tmp_path: Path
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    daemon = daemons("--config", str(_daemon_config(tmp_path)), dsn=dsn)
    out = daemon.wait_for("msg='ready")
    assert "cache warm accounts=8 identities=16" in out
    port = int(out.split("metrics listening address=127.0.0.1 port=")[1].split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    assert "ocs_cache_entries 8.0" in metrics
    assert 'ocs_build_info{version="' in metrics
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    assert "msg='stopped'" in daemon.output()
    assert "Traceback" not in daemon.output()


def test_second_daemon_on_the_same_lock_stops_with_a_message(
    dsn: str, daemons, tmp_path: Path
) -> None:
    config = str(_daemon_config(tmp_path))
    first = daemons("--config", config, dsn=dsn)
    first.wait_for("msg='ready")
    second = daemons("--config", config, dsn=dsn)
    assert second.proc.wait(30) == 1
    assert "another ocsd is already running with lock file" in second.output()
    assert f"(pid {first.proc.pid})" in second.output()
    assert "Traceback" not in second.output()
    assert first.proc.poll() is None  # the first one is unharmed
    assert first.stop() == 0


def test_daemon_with_unreachable_dsn_says_so(daemons, tmp_path: Path) -> None:
    daemon = daemons(
        "--config",
        str(_daemon_config(tmp_path)),
        dsn="postgresql://ocs:pw@127.0.0.1:1/ocs",
        OCS_DATABASE__CONNECT_TIMEOUT_S="3",
    )
    assert daemon.proc.wait(30) == 3
    assert "cannot connect to PostgreSQL at postgresql://ocs:***@127.0.0.1:1/ocs" in daemon.output()
    assert "Traceback" not in daemon.output()


def test_daemon_metrics_port_in_use_is_a_clear_error(dsn: str, daemons, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _daemon_config(tmp_path).read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}")
        path = write_config(tmp_path / "busy.toml", config)
        daemon = daemons("--config", str(path), dsn=dsn)
        assert daemon.proc.wait(30) == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in daemon.output()
    assert "Traceback" not in daemon.output()


def test_embedded_default_is_shared_reused_and_stopped(daemons, tmp_path: Path) -> None:
    """No DSN: ocs and ocsd share one embedded server under var/, which stops with the last user."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = str(_daemon_config(tmp_path, '[database]\nembedded_dir = "var/postgres"\n'))
    # The CLI alone starts the server, and stops it when done.
    loaded = run_ocs("--config", config, "demo", "load", dsn=None, cwd=workdir)
    assert loaded.code == 0, loaded.err
    pgdata = workdir / "var" / "postgres"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()
    # The daemon starts it again (reusing the data), and the CLI works beside it.
    daemon = daemons("--config", config, "--load-demo", dsn=None, cwd=workdir)
    daemon.wait_for("msg='ready")
    shown = run_ocs("--config", config, "account", "show", "prepaid-ok", dsn=None, cwd=workdir)
    assert "new session now     admitted, grant 1000 s" in shown.out, shown.err
    run_ocs("--config", config, "payment", "add", "prepaid-empty", "2", dsn=None, cwd=workdir)
    assert (pgdata / "postmaster.pid").exists()  # the CLI leaving did not stop the daemon's server
    assert daemon.stop() == 0
    deadline = time.monotonic() + 10
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (pgdata / "postmaster.pid").exists(), "the embedded server outlived its last user"
    # The data survived the restart.
    again = run_ocs("--config", config, "account", "show", "prepaid-empty", dsn=None, cwd=workdir)
    assert "balance             2.00" in again.out


def test_embedded_server_of_a_killed_daemon_is_taken_over(daemons, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = str(_daemon_config(tmp_path))
    daemon = daemons("--config", config, "--load-demo", dsn=None, cwd=workdir)
    daemon.wait_for("msg='ready")
    daemon.kill()  # SIGKILL: no clean-up ran; its server is still up
    pgdata = workdir / "var" / "postgres"
    assert (pgdata / "postmaster.pid").exists()
    result = run_ocs("--config", config, "account", "show", "prepaid-ok", dsn=None, cwd=workdir)
    assert result.code == 0, result.err
    # The CLI was the last live user: it stopped the orphaned server on the way out.
    assert not (pgdata / "postmaster.pid").exists()


def test_embedded_server_stops_after_a_killed_worker(daemons, tmp_path: Path) -> None:
    """A worker killed (SIGKILL) takes the whole daemon down (the service manager restarts
    it); the last process to leave stops the embedded server although the dead worker never
    let go of it."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI (scripts/install-test-deps.sh)")
        pytest.skip("no redis-server: workers need it")
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = str(_daemon_config(tmp_path))
    daemon = daemons("--config", config, dsn=None, cwd=workdir, OCS_DAEMON__WORKERS="2")
    out = daemon.wait_for("workers=2'", timeout=60)
    worker = int(out.split("worker started index=0 pid=")[1].split("'")[0].split()[0])
    pgdata = workdir / "var" / "postgres"
    assert (pgdata / "postmaster.pid").exists()
    os.kill(worker, signal.SIGKILL)
    assert daemon.proc.wait(30) == 1
    deadline = time.monotonic() + 15
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (pgdata / "postmaster.pid").exists(), "the embedded server outlived the daemon"


def test_make_run_config_is_what_the_readme_says() -> None:
    demo = (ROOT / "config" / "ocs.demo.toml").read_text()
    assert 'listen = "127.0.0.1:9812"' in demo
    assert "dsn" not in demo.replace("# No dsn", "")
