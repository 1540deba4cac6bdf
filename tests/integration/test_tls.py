"""TLS for both protocols (issue 14): Diameter over TLS/TCP (RFC 6733 §13, the peer's
certificate checked against its Origin-Host, TLS 1.2 at the oldest) and RADIUS over TLS
(RadSec, RFC 6614), as options per peer and per client.

Certificates are made by the test with openssl at run time (a CA, ocsd's certificate, peers'
certificates, a stranger's self-signed one); nothing is committed. RadSec is driven by
radsecproxy (Debian) in front of radclient, and by a Python TLS client; Diameter/TLS by a Python
ssl peer speaking our codec.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT, free_port, run_ocs, write_config
from test_session_ledger import assert_ledger, balance, money
from test_workers import sample

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from diameter_peer import Peer, ccr, cer, result_code

from ocs.radius import codec

pytestmark = pytest.mark.integration

OPENSSL = shutil.which("openssl")
RADSECPROXY = shutil.which("radsecproxy") or (
    "/usr/sbin/radsecproxy" if Path("/usr/sbin/radsecproxy").exists() else None
)
RADCLIENT = shutil.which("radclient")


def require(binary: str | None, package: str) -> str:
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{package} (Debian) is required in CI")
        pytest.skip(f"{package} is not installed")
    return binary


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]
    pcef: tuple[Path, Path]
    other: tuple[Path, Path]
    nas: tuple[Path, Path]
    stranger: tuple[Path, Path]
    freediameter: tuple[Path, Path]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [require(OPENSSL, "openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def _issue(directory: Path, name: str, subject: str, san: str, ca: tuple[Path, Path] | None):
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    if ca is None:  # self-signed
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", subject,
            "-addext", f"subjectAltName={san}", cwd=directory,
        )  # fmt: skip
        return key, cert
    csr = directory / f"{name}.csr"
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", subject, cwd=directory,
    )  # fmt: skip
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
        cwd=directory,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2", "-subj", "/CN=ocs test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory,
    )  # fmt: skip
    ca = (ca_key, ca_cert)
    for path in directory.glob("*.key"):
        path.chmod(0o600)
    return Pki(
        ca=ca_cert,
        server=_issue(
            directory, "ocs", "/CN=ocs.localdomain", "DNS:ocs.localdomain,IP:127.0.0.1", ca
        ),
        pcef=_issue(directory, "pcef", "/CN=pcef.localdomain", "DNS:pcef.localdomain", ca),
        other=_issue(directory, "other", "/CN=other.localdomain", "DNS:other.localdomain", ca),
        nas=_issue(directory, "nas", "/CN=nas.localdomain", "DNS:nas.localdomain,IP:127.0.0.1", ca),
        stranger=_issue(
            directory, "stranger", "/CN=pcef.localdomain", "DNS:pcef.localdomain", None
        ),
        freediameter=_issue(directory, "fd", "/CN=fd.relay.net", "DNS:fd.relay.net", ca),
    )


@dataclass
class Ports:
    auth: int
    acct: int
    radsec: int
    diameter: int
    diameter_tls: int
    metrics: int


def radsec_config(
    directory: Path, pki: Pki, ports: Ports, *, daemon: str = "", radius: str = "", extra: str = ""
) -> Path:
    """A daemon with RadSec for one TLS client (127.0.0.1, secret "radsec"); ``daemon`` and
    ``radius`` add lines to those sections, ``extra`` what follows the client."""
    return write_config(
        directory / "ocsd.toml",
        f"""
[daemon]
lock_file = "{directory / "ocsd.lock"}"
{daemon}
[metrics]
listen = "127.0.0.1:{ports.metrics}"
[usage]
spool_file = "{directory / "usage.spool"}"
[tls]
certificate_file = "{pki.server[1]}"
key_file = "{pki.server[0]}"
ca_file = "{pki.ca}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{ports.auth}"]
acct_listen = ["127.0.0.1:{ports.acct}"]
tls_listen = ["127.0.0.1:{ports.radsec}"]
{radius}
[[radius.clients]]
address = "127.0.0.1"
secret = "radsec"
name = "radsec-nas"
tls = true
{extra}
""",
    )


@pytest.fixture
def tls_daemon(dsn: str, daemons, tmp_path: Path, pki: Pki):
    ports = Ports(
        auth=free_port(socket.SOCK_DGRAM),
        acct=free_port(socket.SOCK_DGRAM),
        radsec=free_port(),
        diameter=free_port(),
        diameter_tls=free_port(),
        metrics=free_port(),
    )
    config = radsec_config(
        tmp_path,
        pki,
        ports,
        daemon="graceful_timeout_s = 3",
        radius=f'dictionary = "{ROOT / "dictionaries" / "dictionary"}"',
        extra=f"""
[[radius.clients]]
address = "127.0.0.2"
secret = "testing123"
name = "udp-nas"
[diameter]
enabled = true
listen = ["127.0.0.1:{ports.diameter}"]
tls_listen = ["127.0.0.1:{ports.diameter_tls}"]
[[diameter.peers]]
origin_host = "*.localdomain"
tls = true
[[diameter.peers]]
origin_host = "plain.example.net"
""",
    )
    config.chmod(0o600)
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")
    yield ports, daemon
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


def client_context(pki: Pki, identity: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if identity is not None:
        context.load_cert_chain(str(identity[1]), str(identity[0]))
    return context


async def tls_peer(port: int, context: ssl.SSLContext) -> Peer:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="ocs.localdomain"
    )
    return Peer(reader, writer)


def metric(port: int, line_start: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    )


# --- Diameter over TLS -------------------------------------------------------------------------


def test_diameter_over_tls_with_the_certificate_naming_the_origin_host(
    tls_daemon, pki: Pki
) -> None:
    ports, _ = tls_daemon

    async def scenario() -> None:
        peer = await tls_peer(ports.diameter_tls, client_context(pki, pki.pcef))
        version = peer.writer.get_extra_info("ssl_object").version()
        assert version in ("TLSv1.2", "TLSv1.3")
        answer = await peer.request(cer("pcef.localdomain"))
        assert result_code(answer) == 2001
        answer = await peer.request(ccr("pcef.localdomain;tls;1", 1, 0, user="postpaid"))
        assert result_code(answer) == 2001
        answer = await peer.request(ccr("pcef.localdomain;tls;1", 3, 1, user="postpaid"))
        assert result_code(answer) == 2001
        peer.close()

    asyncio.run(scenario())


def test_diameter_tls_refuses_a_certificate_for_another_host(tls_daemon, pki: Pki) -> None:
    ports, daemon = tls_daemon

    async def scenario() -> None:
        # A certificate from the right CA, but for other.localdomain: CER as pcef → 3010.
        peer = await tls_peer(ports.diameter_tls, client_context(pki, pki.other))
        answer = await peer.request(cer("pcef.localdomain"))
        assert result_code(answer) == 3010
        assert await peer.closed()
        # The same certificate for its own name is accepted.
        peer = await tls_peer(ports.diameter_tls, client_context(pki, pki.other))
        answer = await peer.request(cer("other.localdomain"))
        assert result_code(answer) == 2001
        peer.close()

    asyncio.run(scenario())
    assert "certificate does not name its Origin-Host" in daemon.output()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("who", ["stranger", "no-certificate", "tls-1.1"])
def test_diameter_tls_handshake_refused(tls_daemon, pki: Pki, who: str) -> None:
    ports, _ = tls_daemon
    if who == "stranger":  # self-signed, not from the CA
        context = client_context(pki, pki.stranger)
    elif who == "no-certificate":
        context = client_context(pki, None)
    else:
        context = client_context(pki, pki.pcef)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1

    async def scenario() -> None:
        try:
            peer = await tls_peer(ports.diameter_tls, context)
        except (ssl.SSLError, ConnectionError):
            return  # refused in the handshake
        # TLS 1.3 sends the refusal of a client certificate after the handshake.
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            answer = await peer.request(cer("pcef.localdomain"))
            assert result_code(answer) == 2001

    asyncio.run(scenario())


def test_a_tls_peer_is_refused_over_plain_tcp(tls_daemon) -> None:
    ports, _ = tls_daemon

    async def scenario() -> None:
        peer = await Peer.connect("127.0.0.1", ports.diameter)
        answer = await peer.request(cer("pcef.localdomain"))
        assert result_code(answer) == 3010  # its allow-list entry says tls
        peer = await Peer.connect("127.0.0.1", ports.diameter)
        answer = await peer.request(cer("plain.example.net", realm="example.net"))
        assert result_code(answer) == 2001  # a plain peer is still served
        peer.close()

    asyncio.run(scenario())


# --- RadSec ------------------------------------------------------------------------------------


def radsec_exchange(port: int, context: ssl.SSLContext, packets: list[bytes]) -> list[bytes]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname="ocs.localdomain") as sock:
        sock.sendall(b"".join(packets))
        replies: list[bytes] = []
        buffer = b""
        while len(replies) < len(packets):
            chunk = sock.recv(4096)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 4 and len(buffer) >= int.from_bytes(buffer[2:4], "big"):
                length = int.from_bytes(buffer[2:4], "big")
                replies.append(buffer[:length])
                buffer = buffer[length:]
        return replies


def test_radsec_from_a_python_tls_client(tls_daemon, pki: Pki, dsn: str) -> None:
    ports, _ = tls_daemon
    secret = codec.SharedSecret(b"radsec")
    access = codec.encode_request(
        codec.ACCESS_REQUEST, 1, secret, [codec.attr_str(codec.USER_NAME, "postpaid")]
    )
    start = codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        2,
        secret,
        [
            codec.attr_str(codec.USER_NAME, "postpaid"),
            codec.attr_int(codec.ACCT_STATUS_TYPE, 2),
            codec.attr_str(codec.ACCT_SESSION_ID, "radsec-1"),
            codec.attr_int(codec.ACCT_SESSION_TIME, 60),
        ],
        message_authenticator=False,
    )
    replies = radsec_exchange(ports.radsec, client_context(pki, pki.nas), [access, start])
    codes = sorted(codec.parse_packet(r).code for r in replies)
    assert codes == [codec.ACCESS_ACCEPT, codec.ACCOUNTING_RESPONSE]
    for reply in replies:
        request = access if reply[0] == codec.ACCESS_ACCEPT else start
        assert codec.verify_response_authenticator(codec.parse_packet(reply), request[4:20], secret)
    shown = run_ocs("account", "show", "postpaid", dsn=dsn).out
    assert "balance             -50.06" in shown  # 60 s at 0.06/min


def test_radsec_client_datagrams_over_udp_are_dropped(tls_daemon) -> None:
    ports, _ = tls_daemon
    request = codec.encode_request(
        codec.ACCESS_REQUEST, 3, codec.SharedSecret(b"radsec"), [codec.attr_str(1, "postpaid")]
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        sock.sendto(request, ("127.0.0.1", ports.auth))
        with pytest.raises(TimeoutError):
            sock.recvfrom(4096)
    assert (
        metric(ports.metrics, 'ocs_dropped_packets_total{cause="unknown_client",protocol="radius"}')
        >= 1
    )
    # A UDP client (127.0.0.2) is still served over UDP.
    udp = codec.encode_request(
        codec.ACCESS_REQUEST, 4, codec.SharedSecret(b"testing123"), [codec.attr_str(1, "postpaid")]
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(3.0)
        sock.sendto(udp, ("127.0.0.1", ports.auth))
        assert codec.parse_packet(sock.recvfrom(4096)[0]).code == codec.ACCESS_ACCEPT


def test_radsec_refuses_strangers_and_bad_lengths(tls_daemon, pki: Pki) -> None:
    ports, _ = tls_daemon
    secret = codec.SharedSecret(b"radsec")
    access = codec.encode_request(codec.ACCESS_REQUEST, 1, secret, [codec.attr_str(1, "postpaid")])
    # A certificate the CA did not sign: refused in the handshake (TLS 1.3 tells the client
    # after its side of the handshake, so the refusal may show as a closed connection).
    try:
        replies = radsec_exchange(ports.radsec, client_context(pki, pki.stranger), [access])
    except (ssl.SSLError, ConnectionError):
        replies = []
    assert replies == []
    # The same request with the NAS's certificate is answered.
    assert len(radsec_exchange(ports.radsec, client_context(pki, pki.nas), [access])) == 1
    # A length field below 20 closes the connection: no reply.
    assert radsec_exchange(ports.radsec, client_context(pki, pki.nas), [b"\x01\x01\x00\x05x"]) == []


def test_radsec_through_radsecproxy(tls_daemon, pki: Pki, tmp_path: Path, dsn: str) -> None:
    """radclient → radsecproxy (UDP in, RadSec out with its certificate) → ocsd."""
    proxy_binary = require(RADSECPROXY, "radsecproxy")
    radclient = require(RADCLIENT, "freeradius-utils")
    ports, daemon = tls_daemon
    listen = free_port(socket.SOCK_DGRAM)
    conf = write_config(
        tmp_path / "radsecproxy.conf",
        f"""
ListenUDP 127.0.0.1:{listen}
LogLevel 3
tls default {{
    CACertificateFile {pki.ca}
    CertificateFile {pki.nas[1]}
    CertificateKeyFile {pki.nas[0]}
}}
client udp-in {{
    host 127.0.0.1
    type udp
    secret proxysecret
}}
server ocsd {{
    host 127.0.0.1
    port {ports.radsec}
    type tls
    secret radsec
    StatusServer off
}}
realm * {{
    server ocsd
    accountingServer ocsd
}}
""",
    )
    proxy_log = (tmp_path / "radsecproxy.log").open("w")
    proxy = subprocess.Popen(
        [proxy_binary, "-f", "-d", "4", "-c", str(conf), "-i", str(tmp_path / "radsecproxy.pid")],
        stdout=proxy_log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(0.5)

        def radclient_send(kind: str, text: str) -> str:
            done = subprocess.run(
                [radclient, "-x", "-r", "3", "-t", "3", f"127.0.0.1:{listen}", kind, "proxysecret"],
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return done.stdout + done.stderr

        out = radclient_send(
            "auth", 'User-Name = "postpaid", User-Password = "x", Message-Authenticator = 0x00'
        )
        assert "Access-Accept" in out, out
        out = radclient_send("auth", 'User-Name = "prepaid-empty", Message-Authenticator = 0x00')
        assert "Access-Reject" in out, out
        out = radclient_send(
            "acct",
            'User-Name = "postpaid", Acct-Status-Type = Stop, Acct-Session-Id = "rsp-1", '
            "Acct-Session-Time = 120",
        )
        assert "Accounting-Response" in out, out
        shown = run_ocs("account", "show", "postpaid", dsn=dsn).out
        assert "balance             -50.12" in shown  # 120 s at 0.06/min
        assert "radsec: client connected name=radsec-nas" in daemon.output()
    finally:
        proxy.terminate()
        proxy.wait(10)
        proxy_log.close()


# --- freeDiameter as the TLS peer ---------------------------------------------------------------

FREEDIAMETERD = shutil.which("freeDiameterd")
FD_EXTENSIONS = Path("/usr/lib/freeDiameter")


def test_freediameter_connects_over_tls_and_relays(
    dsn: str, daemons, tmp_path: Path, pki: Pki
) -> None:
    """freeDiameterd (Debian) connects to ocsd's TLS port (RFC 6733 §13: TLS from the first
    octet) with a certificate from our CA naming its identity, and relays a plain client's
    credit control to ocsd over that connection."""
    binary = require(FREEDIAMETERD, "freediameterd")
    if not (FD_EXTENSIONS / "dict_dcca_3gpp.fdx").exists():
        require(None, "freediameter-extensions")
    tls_port, fd_port, metrics_port = free_port(), free_port(), free_port()
    config = write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
graceful_timeout_s = 5
[metrics]
listen = "127.0.0.1:{metrics_port}"
[usage]
spool_file = "{tmp_path / "usage.spool"}"
[tls]
certificate_file = "{pki.server[1]}"
key_file = "{pki.server[0]}"
ca_file = "{pki.ca}"
[diameter]
enabled = true
listen = []
tls_listen = ["127.0.0.1:{tls_port}"]
origin_host = "ocs.localdomain"
origin_realm = "localdomain"
[[diameter.peers]]
origin_host = "fd.relay.net"
realm = "relay.net"
tls = true
""",
    )
    config.chmod(0o600)
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")
    (tmp_path / "acl_wl.conf").write_text("ALLOW_OLD_TLS ALLOW_IPSEC *.clients.net\n")
    (tmp_path / "rt_default.conf").write_text('* : "ocs.localdomain" += 100 ;\n')
    extensions = "\n".join(
        f'LoadExtension = "{FD_EXTENSIONS / name}";'
        for name in ("dict_nasreq.fdx", "dict_rfc5777.fdx", "dict_dcca.fdx", "dict_dcca_3gpp.fdx")
    )
    fd_conf = write_config(
        tmp_path / "freeDiameter.conf",
        f"""
Identity = "fd.relay.net";
Realm = "relay.net";
Port = {fd_port};
SecPort = 0;
No_SCTP;
No_IPv6;
ListenOn = "127.0.0.1";
TwTimer = 30;
AppServThreads = 2;
TLS_Cred = "{pki.freediameter[1]}", "{pki.freediameter[0]}";
TLS_CA = "{pki.ca}";
{extensions}
LoadExtension = "{FD_EXTENSIONS / "rt_default.fdx"}" : "{tmp_path / "rt_default.conf"}";
LoadExtension = "{FD_EXTENSIONS / "acl_wl.fdx"}" : "{tmp_path / "acl_wl.conf"}";
ConnectPeer = "ocs.localdomain" {{ ConnectTo = "127.0.0.1"; Port = {tls_port}; }};
""",
    )
    fd_log = (tmp_path / "freediameter.log").open("w")
    fd = subprocess.Popen(
        [binary, "-c", str(fd_conf)], stdout=fd_log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        daemon.wait_for("peer open origin_host=fd.relay.net", timeout=40)

        async def relay() -> None:
            client = await Peer.connect("127.0.0.1", fd_port)
            cea = await client.request(cer("client.clients.net", "clients.net"))
            assert result_code(cea) == 2001, cea
            request = ccr(
                "client.clients.net;tls;1",
                1,
                0,
                user="postpaid",
                host="client.clients.net",
                realm="clients.net",
            )
            answer = await client.request(request, wait_s=10)
            assert result_code(answer) == 2001
            client.close()

        asyncio.run(relay())
        assert fd.poll() is None, "freeDiameterd exited"
        assert metric(metrics_port, 'ocs_diameter_answers_total{command="CCR-I"') == 1
    finally:
        if fd.poll() is None:
            fd.send_signal(signal.SIGTERM)
            try:
                fd.wait(15)
            except subprocess.TimeoutExpired:
                fd.kill()
                fd.wait(5)
        fd_log.close()
    assert daemon.stop() == 0


def test_radsec_accounting_reaches_the_worker_of_its_admission(
    dsn: str, daemons, tmp_path: Path, pki: Pki
) -> None:
    """Two workers; a RadSec NAS is admitted over one connection, then sends its session's
    Start, Interim-Updates and Stop over connections of their own, which the kernel spreads
    over the workers. Those that reach the other worker are relayed to the admitting one and
    answered over their own TLS connection, correctly signed; the session holds its credit
    throughout and is charged once."""
    require(shutil.which("redis-server"), "redis-server")
    ports = Ports(
        auth=free_port(socket.SOCK_DGRAM),
        acct=free_port(socket.SOCK_DGRAM),
        radsec=free_port(),
        diameter=0,
        diameter_tls=0,
        metrics=free_port(),
    )
    radsec, metrics = ports.radsec, ports.metrics
    config = radsec_config(tmp_path, pki, ports)
    config.chmod(0o600)
    supervisor = daemons("--config", str(config), "--load-demo", dsn=dsn, OCS_DAEMON__WORKERS="2")
    supervisor.wait_for("workers=2'", timeout=90)
    secret = codec.SharedSecret(b"radsec")
    context = client_context(pki, pki.nas)
    before = balance(dsn, "prepaid-ok")
    access = codec.encode_request(
        codec.ACCESS_REQUEST, 1, secret, [codec.attr_str(codec.USER_NAME, "prepaid-ok")]
    )
    [accepted] = radsec_exchange(radsec, context, [access])
    accept = codec.parse_packet(accepted)
    assert accept.code == codec.ACCESS_ACCEPT
    klass = accept.get(codec.CLASS)
    assert klass is not None and klass.startswith(b"ocs:w")

    def accounting(identifier: int, status: int, seconds: int) -> bytes:
        return codec.encode_request(
            codec.ACCOUNTING_REQUEST,
            identifier,
            secret,
            [
                codec.attr_str(codec.USER_NAME, "prepaid-ok"),
                codec.attr_int(codec.ACCT_STATUS_TYPE, status),
                codec.attr_str(codec.ACCT_SESSION_ID, "radsec-relay-1"),
                codec.attr_int(codec.ACCT_SESSION_TIME, seconds),
                (codec.CLASS, klass),
            ],
            message_authenticator=False,
        )

    sent = [accounting(10, 1, 0)] + [accounting(10 + n, 3, 10 * n) for n in range(1, 12)]
    for request in sent:  # each over a connection of its own
        [reply] = radsec_exchange(radsec, context, [request])
        answer = codec.parse_packet(reply)
        assert answer.code == codec.ACCOUNTING_RESPONSE
        assert codec.verify_response_authenticator(answer, request[4:20], secret)
    # Held by the running session, wherever its requests came in.
    again = codec.encode_request(
        codec.ACCESS_REQUEST, 2, secret, [codec.attr_str(codec.USER_NAME, "prepaid-ok")]
    )
    [refused] = radsec_exchange(radsec, context, [again])
    assert codec.parse_packet(refused).code == codec.ACCESS_REJECT
    stop = accounting(40, 2, 120)
    [stopped] = radsec_exchange(radsec, context, [stop])
    assert codec.parse_packet(stopped).code == codec.ACCOUNTING_RESPONSE
    assert_ledger(dsn, "prepaid-ok", before, money("0.12"))  # 120 s at 0.06 a minute
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as page:
        text = page.read().decode()
    relayed = sum(sample(text, "ocs_radius_relayed_total", direction="out"))
    assert relayed == sum(sample(text, "ocs_radius_relayed_total", direction="in")) > 0
    assert supervisor.stop() == 0
    assert "Traceback" not in supervisor.output()
