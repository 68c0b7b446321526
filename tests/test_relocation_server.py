"""The relocation server and connection over real sockets, with a stand-in domain registry:
the protocol, hosts-allow at the socket, slow and silent peers, TLS with and without a CA."""
from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from xend import errors
from xend.relocation import acl, connection, protocol, server
from xend.relocation.receiver import Receiver
from xend.relocation.acl import PeerName
from xend.server.xmlrpc import server_tls_context

pytestmark = pytest.mark.timeout(60)


class FakeRegistry:
    """Reads ``FAKE`` + length + payload; ``FAIL`` + message raises VmError."""

    def __init__(self):
        self.domains = []
        self.discarded = []
        self.lock = threading.Lock()

    def restore_from_stream(self, rfile, relocating, paused):
        assert relocating and paused
        head = rfile.read(4)
        if head == b"FAIL":
            raise errors.VmError(rfile.read(struct.unpack(">i", rfile.read(4))[0]).decode())
        if head != b"FAKE":
            raise errors.VmError(f"not a valid guest state file: found {head!r}")
        size = struct.unpack(">i", rfile.read(4))[0]
        data = rfile.read(size)
        if len(data) != size:
            raise errors.VmError("not a valid guest state file: config read")
        dom = {"name": data[:16].decode(errors="replace"), "size": size, "paused": True}
        with self.lock:
            self.domains.append(dom)
        return dom

    def unpause_restored(self, dom):
        dom["paused"] = False

    def discard_restored(self, dom):
        with self.lock:
            self.domains.remove(dom)
            self.discarded.append(dom)


def fake_image(payload: bytes) -> bytes:
    return b"FAKE" + struct.pack(">i", len(payload)) + payload


@pytest.fixture
def registry():
    return FakeRegistry()


def serve(srv):
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return srv


@pytest.fixture
def tcp_server(registry):
    servers = []

    def make(hosts_allow="", resolver=None, ssl_context=None):
        srv = server.TCPRelocationServer(("127.0.0.1", 0), Receiver(lambda: registry),
                                         lambda: hosts_allow, ssl_context=ssl_context,
                                         resolver=resolver or (lambda ip: PeerName(ip, False)),
                                         bind_retry=0)
        servers.append(serve(srv))
        return srv

    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def talk(port, data: bytes, timeout=5.0) -> bytes:
    """Send ``data``, then everything the server answers until it closes ('' if it closed
    or reset the connection without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


def test_help_quit_and_invalid_operations(tcp_server):
    port = tcp_server().server_address[1]
    out = talk(port, b"help\n(help)\nfoo\n(bar 1 2)\nquit\nhelp\n")
    assert out.decode().splitlines() == [
        "(ok (help quit receive sslreceive))",
        "(ok (help quit receive sslreceive))",
        "(err (type \"<class 'xend.errors.XendError'>\") (value 'Invalid operation: foo'))",
        "(err (type \"<class 'xend.errors.XendError'>\") (value 'Invalid operation: bar'))",
    ]


def test_bad_and_oversized_requests_get_an_error_and_the_door(tcp_server):
    port = tcp_server().server_address[1]
    assert b"bad request" in talk(port, b")\n")
    assert b"longer than" in talk(port, b"x" * 100000)


def test_receive_restores_unpauses_and_answers_ok(tcp_server, registry):
    port = tcp_server().server_address[1]
    with connection.RelocationConnection("127.0.0.1", port) as conn:
        conn.ready()
        assert conn.reply == ["ready", "receive"]
        conn.out.write(fake_image(b"guest-one" + b"\0" * 100000))
        conn.verdict()
        assert conn.reply == ["ok"]
    assert [d["name"].rstrip("\0") for d in registry.domains] == ["guest-one"]
    assert registry.domains[0]["paused"] is False


def test_restore_failure_comes_back_as_the_destinations_message(tcp_server, registry):
    port = tcp_server().server_address[1]
    msg = b"Not enough free memory on the destination"
    with connection.RelocationConnection("127.0.0.1", port) as conn:
        conn.ready()
        conn.out.write(b"FAIL" + struct.pack(">i", len(msg)) + msg)
        with pytest.raises(protocol.RemoteError) as e:
            conn.verdict()
    assert e.value.message == msg.decode()
    assert registry.domains == []


def test_receiver_error_mid_stream_stops_the_sender(tcp_server, registry):
    """The receiver fails at the first bytes; the sender notices while it still streams
    megabytes and reports the receiver's reason, not a broken pipe."""
    port = tcp_server().server_address[1]
    with connection.RelocationConnection("127.0.0.1", port) as conn:
        conn.ready()
        with pytest.raises((connection.PeerSpoke, OSError)):
            conn.out.write(b"JUNK" + b"\0" * (64 * 1024 * 1024))
            conn.out.flush()
        err = conn.error_reply()
    assert err is not None and err.message.startswith("not a valid guest state file")


def test_cut_stream_leaves_nothing(tcp_server, registry):
    port = tcp_server().server_address[1]
    with connection.RelocationConnection("127.0.0.1", port) as conn:
        conn.ready()
        conn.out.write(fake_image(b"x" * 1000000)[:500000])
        conn.out.flush()
    time.sleep(0.3)
    assert registry.domains == []


def test_silent_peer_mid_stream_times_out(tcp_server, registry, monkeypatch):
    monkeypatch.setattr(server, "STREAM_TIMEOUT", 0.5)
    port = tcp_server().server_address[1]
    with connection.RelocationConnection("127.0.0.1", port) as conn:
        conn.ready()
        conn.out.write(fake_image(b"x" * 1000)[:100])
        conn.out.flush()
        t0 = time.monotonic()
        err = conn.error_reply(timeout=5)
        assert time.monotonic() - t0 < 4
    assert err is not None and "timed out" in err.message
    assert registry.domains == []


def test_silent_peers_do_not_block_the_listener(tcp_server, registry, monkeypatch):
    monkeypatch.setattr(server, "REQUEST_TIMEOUT", 2)
    port = tcp_server().server_address[1]
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        t0 = time.monotonic()
        assert talk(port, b"help\n").startswith(b"(ok (help")
        assert time.monotonic() - t0 < 1
    finally:
        for s in silent:
            s.close()


def test_connections_are_bounded(tcp_server, registry, monkeypatch):
    monkeypatch.setattr(server.TCPRelocationServer, "max_connections", 2)
    port = tcp_server().server_address[1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        assert talk(port, b"help\n") == b""     # closed at once, nothing read
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert talk(port, b"help\n").startswith(b"(ok")


def test_hosts_allow_refuses_with_silence_and_a_log_line(tcp_server, caplog):
    caplog.set_level(logging.INFO, logger="xend.relocate")
    resolver = lambda ip: PeerName("localhost.attacker.example", True)  # noqa: E731
    port = tcp_server(hosts_allow="^localhost 10.0.0.0/8", resolver=resolver).server_address[1]
    assert talk(port, b"help\n") == b""
    assert "Rejected connection from 127.0.0.1 (localhost.attacker.example)." in caplog.text


def test_hosts_allow_admits_by_address_and_by_confirmed_name(tcp_server):
    port = tcp_server(hosts_allow="127.0.0.0/8").server_address[1]
    assert talk(port, b"help\n").startswith(b"(ok")
    port = tcp_server(hosts_allow=r"^localhost$",
                      resolver=lambda ip: PeerName("localhost", True)).server_address[1]
    assert talk(port, b"help\n").startswith(b"(ok")


def test_slow_name_lookup_delays_only_that_peer(tcp_server, registry):
    release = threading.Event()

    def slow(ip):
        release.wait(3)
        return PeerName("x", False)

    resolver = acl.NameResolver(budget=2.5, lookup=slow)
    srv = tcp_server(hosts_allow="^nobody$", resolver=resolver)
    port = srv.server_address[1]
    first = socket.create_connection(("127.0.0.1", port))
    try:
        time.sleep(0.1)
        # the accept loop is free: a second connection is accepted and looked up too
        second = socket.create_connection(("127.0.0.1", port), timeout=1)
        second.close()
    finally:
        release.set()
        first.close()


def test_hosts_allow_follows_the_option_without_restart(registry):
    current = {"v": "^nobody$"}
    srv = serve(server.TCPRelocationServer(("127.0.0.1", 0), Receiver(lambda: registry),
                                           lambda: current["v"],
                                           resolver=lambda ip: PeerName(ip, False), bind_retry=0))
    try:
        port = srv.server_address[1]
        assert talk(port, b"help\n") == b""
        current["v"] = r"127\.0\.0\.1"
        assert talk(port, b"help\n").startswith(b"(ok")
    finally:
        srv.shutdown()
        srv.server_close()


def test_unix_socket_server(registry, tmp_path):
    path = str(tmp_path / "relocation-socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(5)
    srv = serve(server.UnixRelocationServer(sock, Receiver(lambda: registry)))
    try:
        with connection.RelocationConnection(path, 0) as conn:
            conn.ready()
            conn.out.write(fake_image(b"local"))
            conn.verdict()
        assert registry.domains[0]["name"] == "local"
    finally:
        srv.shutdown()
        srv.server_close()


def test_connect_errors_read_like_the_original():
    port = free_tcp_port()
    with pytest.raises(connection.ConnectFailed, match=r"^can't connect: \(111, 'Connection "
                                                      r"refused'\)$"):
        connection.RelocationConnection("127.0.0.1", port, connect_timeout=2)


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- TLS ----------------------------------------------------------------------------------------
def make_cert(tmp_path, name="srv"):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(key), str(cert)


@pytest.fixture
def tls_server(tcp_server, tmp_path):
    key, cert = make_cert(tmp_path)
    srv = tcp_server(ssl_context=server_tls_context(cert, key))
    return srv, cert


def test_tls_receive_with_ca_verification(tls_server, registry):
    srv, cert = tls_server
    port = srv.server_address[1]
    with connection.RelocationConnection("127.0.0.1", port, use_ssl=True, ca_file=cert) as conn:
        conn.ready()
        assert conn.reply == ["ready", "sslreceive"]
        conn.out.write(fake_image(b"tls-guest" + b"\1" * 3000000))
        conn.verdict()
    assert registry.domains[0]["name"].startswith("tls-guest")


def test_tls_wrong_ca_is_refused_and_no_ca_is_logged(tls_server, tmp_path, caplog):
    srv, _ = tls_server
    port = srv.server_address[1]
    _, other = make_cert(tmp_path, "other")
    with pytest.raises(connection.ConnectFailed, match="certificate verification failed"):
        connection.RelocationConnection("127.0.0.1", port, use_ssl=True, ca_file=other)
    caplog.set_level(logging.WARNING, logger="xend.relocate")
    with connection.RelocationConnection("127.0.0.1", port, use_ssl=True) as conn:
        conn.ready()
    assert "NOT verified" in caplog.text


def test_tls_silent_peer_does_not_block_handshakes(tls_server):
    srv, cert = tls_server
    port = srv.server_address[1]
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        t0 = time.monotonic()
        with connection.RelocationConnection("127.0.0.1", port, use_ssl=True, ca_file=cert,
                                             connect_timeout=3) as conn:
            conn.ready()
        assert time.monotonic() - t0 < 2
    finally:
        silent.close()


def test_sslreceive_on_plain_port_is_an_error(tcp_server):
    port = tcp_server().server_address[1]
    assert b"needs an SSL connection" in talk(port, b"sslreceive\n")
