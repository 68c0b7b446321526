"""Malformed and hostile input to every listener of a real xend: each gets an error reply or a
closed connection, never a dead (or stuck) listener. After each case the daemon still answers
``xend.domains_with_state(True, 'all', False)``."""
from __future__ import annotations

import http.client
import socket
import ssl
import struct
import subprocess
import time
import xmlrpc.client

import pytest

from tests.daemon_helpers import UnixHTTPConnection, XendInstance, free_port

pytestmark = pytest.mark.timeout(60)

REPLY_TIMEOUT = 15   # a case must be answered or closed well before the server's idle timeout


@pytest.fixture(scope="module")
def xend(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    key, cert = root / "k.pem", root / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    rpc, web, tls = free_port(), free_port(), free_port()
    main = XendInstance(root / "main", extra=(
        f"(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address 127.0.0.1)"
        f"(xend-tcp-xmlrpc-server-port {rpc})"
        f"(xend-unix-server yes)(xend-http-server yes)(xend-address 127.0.0.1)(xend-port {web})"))
    secure = XendInstance(root / "tls", extra=(
        f"(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address 127.0.0.1)"
        f"(xend-tcp-xmlrpc-server-port {tls})(xend-tcp-xmlrpc-server-ssl-key-file {key})"
        f"(xend-tcp-xmlrpc-server-ssl-cert-file {cert})"))
    main.endpoints = {"xmlrpc-unix": str(main.paths["xend-unix-xmlrpc-path"]),
                      "xmlrpc-tcp": ("127.0.0.1", rpc),
                      "http-unix": str(main.paths["xend-unix-path"]),
                      "http-tcp": ("127.0.0.1", web)}
    main.tls_port, main.cert, main.secure = tls, cert, secure
    try:
        main.start()
        secure.start()
        yield main
    finally:
        for inst in (main, secure):
            inst.stop()
            inst.kill()


XMLRPC = ["xmlrpc-unix", "xmlrpc-tcp"]
HTTP = ["http-unix", "http-tcp"]


def open_socket(endpoint, timeout: float = REPLY_TIMEOUT) -> socket.socket:
    family = socket.AF_UNIX if isinstance(endpoint, str) else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(endpoint)
    return s


def outcome(endpoint, data: bytes, shut: bool = False):
    """Send ``data``; (status, body) of the reply, or None if the server closed without one.
    A server that does neither within REPLY_TIMEOUT fails the test (socket.timeout)."""
    s = open_socket(endpoint)
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = http.client.HTTPResponse(s)
        try:
            r.begin()
            return r.status, r.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
    finally:
        s.close()


def xmlrpc_call(endpoint, method: str, params: tuple = ()):
    if isinstance(endpoint, str):
        conn = UnixHTTPConnection(endpoint, timeout=REPLY_TIMEOUT)
    else:
        conn = http.client.HTTPConnection(*endpoint, timeout=REPLY_TIMEOUT)
    try:
        conn.request("POST", "/RPC2", xmlrpc.client.dumps(params, method, allow_none=True),
                     {"Content-Type": "text/xml"})
        return xmlrpc.client.loads(conn.getresponse().read())[0][0]
    finally:
        conn.close()


def assert_alive(xend, name=None) -> None:
    """The daemon answers over its unix XML-RPC socket, and so does listener ``name``."""
    start = time.monotonic()
    records = xend.proxy(timeout=REPLY_TIMEOUT).xend.domains_with_state(True, "all", False)
    assert records and records[0][0] == "domain"
    if name is not None and name.startswith("http"):
        assert outcome(xend.endpoints[name], b"GET /xend/ HTTP/1.0\r\n\r\n")[0] == 200
    elif name is not None:
        assert "Domain-0" in xmlrpc_call(xend.endpoints[name], "xend.domains", (False,))
    assert time.monotonic() - start < 10


def raw_outcome(name: str, endpoint, data: bytes, shut: bool = True) -> bytes:
    """Send ``data`` and read until the server closes: an error reply or nothing.

    The HTTP/SXP server always answers with an ``HTTP/1.1`` status line; the XML-RPC listeners
    (the stdlib's handler) answer a request line they cannot parse with an HTTP/0.9-style
    error page, body only."""
    s = open_socket(endpoint)
    out = b""
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    finally:
        s.close()
    allowed = (b"HTTP/1.1 ",) if name.startswith("http") else (b"HTTP/1.", b"<!DOCTYPE HTML")
    assert out == b"" or out.startswith(allowed), out[:200]
    return out


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nConnection: close\r\n"
            + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def fault_code(reply) -> int:
    status, body = reply
    assert status == 200
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(body)
    return info.value.faultCode


# -- XML-RPC ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", XMLRPC)
def test_bad_xml_is_a_fault(xend, name):
    ep = xend.endpoints[name]
    for body in (b"<methodCall><methodName>xend.domains", b"not xml at all \x00\xff",
                 b"<methodCall><methodName>xend.domain</methodName><params><param><value>"
                 b"<int>notanint</int></value></param></params></methodCall>",
                 b"<methodResponse><params/></methodResponse>", b""):
        assert fault_code(outcome(ep, post(body))) == 1, body
        assert_alive(xend, name)


@pytest.mark.parametrize("name", XMLRPC)
def test_unknown_method_wrong_types_and_counts_are_faults(xend, name):
    ep = xend.endpoints[name]
    for method, params in (("xend.nosuch", ()), ("__class__", ()), ("xend.domain", ()),
                           ("xend.domain", ("Domain-0", 1, 2, 3, 4, 5)),
                           ("xend.domain", ([1, [2]],)), ("xend.domain", ({"a": 1},)),
                           ("xend.domain.setMemoryTarget", ("Domain-0", "lots")),
                           ("xend.domain.create", (None,)), ("xend.domain.create", (3.5,)),
                           ("xend.domains_with_state", (True, ["x"], False)),
                           ("xend.domain.shutdown", ("Domain-0", {"r": "x"}))):
        body = xmlrpc.client.dumps(params, method, allow_none=True).encode()
        status, reply = outcome(ep, post(body))
        assert status == 200
        try:
            xmlrpc.client.loads(reply)     # some are accepted: a well-formed answer
        except xmlrpc.client.Fault as f:
            assert f.faultCode in (1, 2, 3), (method, params)
    assert_alive(xend, name)


@pytest.mark.parametrize("name", XMLRPC)
def test_deeply_nested_arguments(xend, name):
    ep = xend.endpoints[name]
    depth = 3000
    value = b"<value><array><data>" * depth + b"<value><int>1</int></value>" + \
        b"</data></array></value>" * depth
    body = (b"<?xml version='1.0'?><methodCall><methodName>xend.domain.create</methodName>"
            b"<params><param>" + value + b"</param></params></methodCall>")
    reply = outcome(ep, post(body))
    assert reply is None or fault_code(reply) in (1, 2)
    assert_alive(xend, name)


@pytest.mark.parametrize("name", XMLRPC)
def test_oversized_body_and_missing_length(xend, name):
    ep = xend.endpoints[name]
    reply = outcome(ep, b"POST /RPC2 HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n<x>")
    assert reply is None or reply[0] == 413
    assert_alive(xend, name)
    reply = outcome(ep, b"POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\n\r\n<methodCall>")
    assert reply is None or reply[0] in (400, 411)
    assert_alive(xend, name)
    reply = outcome(ep, b"POST /RPC2 HTTP/1.1\r\nContent-Length: banana\r\n\r\n")
    assert reply is None or reply[0] in (400, 411)
    assert_alive(xend, name)


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize("name", XMLRPC)
def test_request_heads_as_http_requires(xend, name):
    """The XML-RPC listeners' own header parser: names in any case, keep-alive and close,
    100-continue, and the statuses of the standard library's for what it refuses."""
    ep = xend.endpoints[name]
    body = xmlrpc.client.dumps((False,), "xend.domains").encode()
    head = (b"POST /RPC2 HTTP/1.1\r\nhOsT: x\r\ncontent-LENGTH: " + str(len(body)).encode()
            + b"\r\n")
    s = open_socket(ep)
    with s:
        s.sendall(head + b"\r\n" + body + head + b"Connection: close\r\n\r\n" + body)
        replies = read_all(s)       # the server closes after the second, as asked
    assert replies.count(b"HTTP/1.1 200 OK\r\n") == 2 and replies.count(b"Domain-0") == 2
    s = open_socket(ep)
    with s:
        s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        reply = read_all(s)         # HTTP/1.0: one request, then closed
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"Domain-0" in reply
    s = open_socket(ep)
    with s:
        s.sendall(head + b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += s.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(body)
        assert b"Domain-0" in read_all(s)
    for request, status in ((b"POST /RPC2 HTTP/1.1\r\nno colon\r\n\r\n", 400),
                            (b"POST /RPC2 HTTP/1.1\r\n Folded: x\r\n\r\n", 400),
                            (b"POST /RPC2 HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
                            (b"POST /RPC2 HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n", 431)):
        reply = outcome(ep, request)
        assert reply is not None and reply[0] == status, (request[:40], reply)
    # as the standard library's: an unsupported version is told in a page without a head
    assert b"505" in raw_outcome(name, ep, b"POST /RPC2 HTTP/2.0\r\n\r\n")
    assert_alive(xend, name)


@pytest.mark.parametrize("name", XMLRPC + HTTP)
def test_garbage_bytes(xend, name):
    ep = xend.endpoints[name]
    for data in (b"\x00\xff\xfe\x80garbage\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03",
                 b"GET\r\n\r\n", b"\r\n\r\n", b"POST / HTTP/9.9\r\n\r\n",
                 b"GET / HTTP/1.1\r\nno colon here\r\n\x01\x02: \xff\r\n\r\n",
                 b"G" * 70000 + b"\r\n\r\n",
                 b"GET / HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n"):
        raw_outcome(name, ep, data)
        assert_alive(xend, name)


@pytest.mark.parametrize("name", XMLRPC + HTTP)
def test_half_closed_connections(xend, name):
    ep = xend.endpoints[name]
    for data in (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 500\r\n\r\n<methodCall><meth",
                 b"POST /xend/domain HTTP/1.1\r\nContent-Le", b"GET /xend/", b""):
        raw_outcome(name, ep, data)
        assert_alive(xend, name)
    # a client that goes away without reading its reply (reset, not a clean close)
    if name.startswith("xmlrpc"):
        request = post(xmlrpc.client.dumps((True, "all", True), "xend.domains_with_state").encode())
    else:
        request = b"GET /xend/domain?detail=1 HTTP/1.1\r\n\r\n"
    for _ in range(5):
        s = open_socket(ep)
        s.sendall(request)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert_alive(xend, name)


@pytest.mark.parametrize("name", XMLRPC + HTTP)
def test_silent_clients_do_not_block_others(xend, name):
    ep = xend.endpoints[name]
    holders = [open_socket(ep) for _ in range(8)]
    partial = open_socket(ep)
    partial.sendall(b"POST /RPC2 HTTP/1.1\r\nContent-Length: 100\r\n\r\n<meth")
    try:
        for _ in range(3):
            assert_alive(xend, name)
    finally:
        for s in holders + [partial]:
            s.close()
    assert_alive(xend, name)


@pytest.mark.parametrize("name", HTTP)
def test_http_oversized_and_unterminated(xend, name):
    ep = xend.endpoints[name]
    big = b"op=list&pad=" + b"x" * 50000
    reply = outcome(ep, b"POST /xend/domain HTTP/1.1\r\nContent-Length: " + str(len(big)).encode()
                    + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n" + big)
    assert reply is None or reply[0] == 413
    assert_alive(xend, name)
    reply = outcome(ep, b"POST /xend/domain HTTP/1.1\r\n\r\n")      # no Content-Length
    assert reply is not None and reply[0] == 406
    reply = outcome(ep, b"POST /xend/domain HTTP/1.1\r\nContent-Length: 7\r\n"
                        b"Content-Length: 70\r\n\r\nop=list")       # which one? neither
    assert reply is not None and reply[0] == 400
    reply = outcome(ep, b"POST /xend/domain HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"4\r\nop=l\r\n0\r\n\r\n")
    assert reply is None or reply[0] in (400, 411)
    reply = outcome(ep, b"POST /xend/domain HTTP/1.1\r\nContent-Type: multipart/form-data; "
                        b"boundary=zz\r\nContent-Length: 10\r\n\r\n--zz\r\n\x00\xff\r\n")
    assert reply is not None and reply[0] in (400, 406)
    assert_alive(xend, name)


# -- TLS --------------------------------------------------------------------------------------

def tls_proxy(xend, timeout: float = 10):
    ctx = ssl.create_default_context(cafile=str(xend.cert))

    class T(xmlrpc.client.SafeTransport):
        def make_connection(self, host):
            conn = super().make_connection(host)
            conn.timeout = timeout
            return conn
    return xmlrpc.client.ServerProxy(f"https://localhost:{xend.tls_port}/RPC2",
                                     transport=T(context=ctx), allow_none=True)


def test_silent_tls_client_never_handshaking_does_not_block_others(xend):
    silent = [socket.create_connection(("127.0.0.1", xend.tls_port), timeout=30)
              for _ in range(4)]
    try:
        start = time.monotonic()
        assert "Domain-0" in tls_proxy(xend).xend.domains(False)
        assert time.monotonic() - start < 5
        assert xend.secure.proxy().xend.domains_with_state(True, "all", False)
    finally:
        for s in silent:
            s.close()


def test_garbage_to_the_tls_listener(xend):
    for data in (b"POST /RPC2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
                 b"\x16\x03\x01\x00\x05hello", b"\x00" * 1000):
        with socket.create_connection(("127.0.0.1", xend.tls_port), timeout=REPLY_TIMEOUT) as s:
            s.sendall(data)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        assert "Domain-0" in tls_proxy(xend).xend.domains(False)
    assert xend.secure.proxy().xend.domains_with_state(True, "all", False)
