"""CDR export by the daemon: every closed session once, to rotated CSV files or a webhook with
retries, across restarts; and the account API started and stopped with the daemon."""

from __future__ import annotations

import asyncio
import csv
import http.server
import json
import os
import signal
import threading
import time
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from support import free_port, write_config
from test_api import close_session, sql

from ocs.billing.cdr_export import CdrExporter, ExportSettings

pytestmark = pytest.mark.integration

BASE = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def _config(tmp_path: Path, extra: str) -> Path:
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


def _exported_ids(directory: Path) -> list[int]:
    ids: list[int] = []
    for path in sorted(directory.glob("cdr-*.csv")):
        with path.open(newline="") as handle:
            ids += [int(row["cdr_id"]) for row in csv.DictReader(handle)]
    return ids


def _wait(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_files_every_closed_session_once_across_a_restart(
    dsn: str, daemons, tmp_path: Path
) -> None:
    sql(dsn, "SELECT 1")
    from support import run_ocs

    assert run_ocs("demo", "load", dsn=dsn).code == 0
    out = tmp_path / "cdr"
    config = _config(
        tmp_path,
        f'[cdr]\nexport = "files"\ndirectory = "{out}"\ninterval_s = 0.2\nbatch_max_records = 3\n',
    )
    for n in range(5):
        close_session(
            dsn, "prepaid-ok", f"a{n}", seconds=60, amount="0.06", at=BASE + timedelta(minutes=n)
        )
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")
    _wait(lambda: len(_exported_ids(out)) == 5)
    assert len(list(out.glob("cdr-*.csv"))) == 2  # batches of at most 3
    assert daemon.stop() == 0
    # Closed while the daemon was down, and after it is back: exported once each, nothing again.
    for n in range(4):
        close_session(
            dsn,
            "postpaid",
            f"b{n}",
            seconds=30,
            amount="0.03",
            at=BASE + timedelta(hours=1, minutes=n),
        )
    again = daemons("--config", str(config), dsn=dsn)
    again.wait_for("msg='ready")
    close_session(dsn, "postpaid", "late", seconds=5, amount="0.01", at=BASE + timedelta(hours=2))
    _wait(lambda: len(_exported_ids(out)) == 10)
    time.sleep(1)  # a few more rounds: nothing is exported twice
    ids = _exported_ids(out)
    closed = sql(dsn, "SELECT array_agg(id ORDER BY id) FROM sessions WHERE closed_at IS NOT NULL")
    assert sorted(ids) == list(closed)
    assert not list(out.glob("*.tmp"))
    assert again.stop() == 0
    with sorted(out.glob("cdr-*.csv"))[0].open(newline="") as handle:
        first = next(csv.DictReader(handle))
    assert first["account"] == "prepaid-ok" and first["charged"] == "0.06"
    assert first["termination_cause"] == "stop" and first["duration_s"] == "60"


class _Receiver(http.server.BaseHTTPRequestHandler):
    failures_left = 0
    received: typing.ClassVar[list[tuple[str, dict]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_batches_retried_until_accepted(dsn: str, daemons, tmp_path: Path) -> None:
    from support import run_ocs

    assert run_ocs("demo", "load", dsn=dsn).code == 0
    _Receiver.failures_left = 2
    _Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cdrs"
        config = _config(
            tmp_path,
            f'[cdr]\nexport = "webhook"\nwebhook_url = "{url}"\ninterval_s = 0.2\n'
            "backoff_initial_s = 0.1\nbackoff_max_s = 0.4\n",
        )
        for n in range(3):
            close_session(
                dsn,
                "prepaid-ok",
                f"w{n}",
                seconds=60,
                amount="0.06",
                at=BASE + timedelta(minutes=n),
            )
        daemon = daemons("--config", str(config), dsn=dsn)
        daemon.wait_for("msg='ready")
        _wait(lambda: sum(len(b["cdrs"]) for _, b in _Receiver.received) == 3)
        close_session(dsn, "postpaid", "w9", seconds=9, amount="0.01", at=BASE + timedelta(hours=1))
        _wait(lambda: sum(len(b["cdrs"]) for _, b in _Receiver.received) == 4)
        time.sleep(1)
        assert daemon.stop() == 0
    finally:
        server.shutdown()
    keys = [k for k, _ in _Receiver.received]
    assert len(keys) == len(set(keys)) == 2 and all(k.startswith("ocs-cdr-batch-") for k in keys)
    cdr_ids = [c["cdr_id"] for _, b in _Receiver.received for c in b["cdrs"]]
    assert len(cdr_ids) == len(set(cdr_ids)) == 4
    first = _Receiver.received[0][1]["cdrs"][0]
    assert first["charged"] == "0.06" and isinstance(first["charged"], str)
    attempts = sql(dsn, "SELECT attempts FROM cdr_batches ORDER BY id LIMIT 1")
    assert attempts == 3  # two refusals, then delivered
    assert "cdr export failed" in daemon.output()


async def test_a_batch_written_but_not_marked_is_written_again_to_the_same_file(
    dsn: str, tmp_path: Path
) -> None:
    """A crash between writing a batch's file and marking it delivered: the next run replaces
    that file with the same content; no CDR lands in two files."""
    from support import run_ocs

    await asyncio.to_thread(run_ocs, "demo", "load", dsn=dsn)
    for n in range(2):
        await asyncio.to_thread(
            close_session, dsn, "prepaid-ok", f"c{n}", seconds=1, amount="0.01", at=BASE
        )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        settings = ExportSettings(
            sink="files",
            directory=tmp_path / "cdr",
            webhook_url=None,
            webhook_secret=None,
            interval_s=1,
            batch_max_records=100,
            timeout_s=5,
            db_timeout_s=5,
            backoff_initial_s=1,
            backoff_max_s=2,
        )
        exporter = CdrExporter(pool, settings)
        assert await exporter.form_batches() == 1
        batch = await pool.fetchrow("SELECT id, created_at FROM cdr_batches")
        from ocs.store.cdrs import closed_sessions

        cdrs = await closed_sessions(pool, limit=10)
        written = await exporter._deliver(batch["id"], batch["created_at"], cdrs)  # then "crash"
        before = await asyncio.to_thread(Path(written).read_bytes)
        assert await exporter.run_once() == 2
        assert [p.name for p in (tmp_path / "cdr").iterdir()] == [Path(written).name]
        assert await asyncio.to_thread(Path(written).read_bytes) == before
        assert await exporter.run_once() == 0
        assert (
            await pool.fetchval("SELECT count(*) FROM cdr_batches WHERE delivered_at IS NULL") == 0
        )
    finally:
        await pool.close()


def test_daemon_starts_the_api_with_a_demo_token_and_stops_it(
    dsn: str, daemons, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, f'[api]\nlisten = "127.0.0.1:{port}"\nwith_daemon = true\n')
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    out = daemon.wait_for("api started pid=")
    token = out.split("api demo token for operator helpdesk (valid one day): ")[1].split()[0]
    token = token.rstrip("'")
    api_pid = int(out.split("api started pid=")[1].split()[0])
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: _answers(url))
    balance = httpx.get(
        f"{url}/accounts/prepaid-ok/balance", headers={"Authorization": f"Bearer {token}"}
    )
    assert balance.status_code == 200, balance.text
    assert balance.json()["decision"]["admitted"] is True
    assert daemon.stop() == 0
    assert not _alive(api_pid), "the API outlived the daemon"
    assert "Traceback" not in daemon.output()

    # Killed with SIGKILL, the daemon cannot stop its child: the kernel tells the child.
    again = daemons("--config", str(config), dsn=dsn)
    out = again.wait_for("api started pid=")
    api_pid = int(out.split("api started pid=")[1].split()[0])
    _wait(lambda: _answers(url))
    os.kill(again.proc.pid, signal.SIGKILL)
    again.proc.wait(10)
    _wait(lambda: not _alive(api_pid))


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_radius_calls_become_cdrs_through_the_real_usage_writer(
    dsn: str, daemons, tmp_path: Path
) -> None:
    """Start and Stop through ocsd's RADIUS front: the usage writer's rows reach the files, a key
    used again after its Stop is a second CDR (a new generation), and ocs cdr export agrees."""
    from support import ROOT, free_udp_port, run_ocs
    from test_radius import accounting, exchange

    from ocs.radius import codec

    auth, acct = free_udp_port(), free_udp_port()
    out = tmp_path / "cdr"
    config = _config(
        tmp_path,
        f"""[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "testing123"
[cdr]
export = "files"
directory = "{out}"
interval_s = 0.2
""",
    )
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")
    for seconds in (61, 30):  # the same Acct-Session-Id twice: two calls
        assert exchange(acct, accounting(1, "postpaid", "call-1")).code == (
            codec.ACCOUNTING_RESPONSE
        )
        stop = accounting(2, "postpaid", "call-1", seconds=seconds)
        assert exchange(acct, stop).code == codec.ACCOUNTING_RESPONSE
    _wait(lambda: len(_exported_ids(out)) == 2)
    rows = []
    for path in sorted(out.glob("cdr-*.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    assert sorted((r["session_key"], r["generation"], r["duration_s"]) for r in rows) == [
        ("call-1", "1", "61"),
        ("call-1", "2", "30"),
    ]
    assert {r["account"] for r in rows} == {"postpaid"}
    assert sorted(r["charged"] for r in rows) == ["0.03", "0.061"]
    assert daemon.stop() == 0
    exported = run_ocs("cdr", "export", "--since", "1d", "--format", "jsonl", dsn=dsn)
    assert sorted(json.loads(line)["cdr_id"] for line in exported.out.splitlines()) == sorted(
        int(r["cdr_id"]) for r in rows
    )
