"""xm's lean XML-RPC proxy on a unix socket (xend.xm.lean_rpc): the same results, faults and
errors as xmlrpc.client's ServerProxy with xm's transport, without importing it."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import xmlrpc.client

import pytest

from xend.xm.client import make_proxy, standard_proxy
from xend.xm.lean_rpc import LeanUnixProxy, request_body

from tests.daemon_helpers import XendInstance

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def xend(tmp_path_factory):
    x = XendInstance(tmp_path_factory.mktemp("lean"))
    x.start()
    yield x
    x.stop()


def uri(x) -> str:
    return "httpu://" + str(x.paths["xend-unix-xmlrpc-path"])


CALLS = [("xend.domains", (False,)), ("xend.domains_with_state", (True, "all", True)),
         ("xend.domain", ("Domain-0", 1)), ("xend.node.info", ()), ("xend.node.log", ()),
         ("xend.domains_brief", ("all",)), ("system.listMethods", ())]


def call(proxy, method, params):
    return getattr(proxy, method)(*params)


def steady(value):
    """``value`` without what changes from one call to the next (a domain's cpu_time)."""
    if isinstance(value, list):
        return [steady(v) for v in value if not (isinstance(v, list) and v[:1] == ["cpu_time"])]
    return value


def test_results_are_the_standard_proxys(xend):
    lean, std = make_proxy(uri(xend)), standard_proxy(uri(xend))
    assert isinstance(lean, LeanUnixProxy)
    for method, params in CALLS:
        assert steady(call(lean, method, params)) == steady(call(std, method, params)), \
            method


def test_faults_and_errors_are_the_standard_proxys(xend):
    lean, std = make_proxy(uri(xend)), standard_proxy(uri(xend))
    for method, params in [("xend.domain", ("nosuch",)), ("xend.nosuch", ()),
                           ("xend.domain", (xmlrpc.client.Binary(b"bad\x00"),))]:
        with pytest.raises(xmlrpc.client.Fault) as ours:
            call(lean, method, params)
        with pytest.raises(xmlrpc.client.Fault) as theirs:
            call(std, method, params)
        assert (ours.value.faultCode, ours.value.faultString) == \
            (theirs.value.faultCode, theirs.value.faultString)
    with pytest.raises(OverflowError):
        lean.xend.domain(2 ** 40)


def test_xm_list_imports_no_xmlrpc_client(xend):
    code = ("import sys; from xend.xm.main import main; rc = main(['list']); "
            "print(sorted(m for m in ('xmlrpc.client', 'http.client', 'email', 'ssl') "
            "if m in sys.modules)); sys.exit(rc)")
    env = {"XM_SERVER": uri(xend), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "Domain-0" in r.stdout and r.stdout.rstrip().endswith("[]")


def test_request_is_what_the_stdlib_writes():
    params = ("a <&> b", 5, -1.5, True, None, ["x", [1]], {"k": "v"})
    assert xmlrpc.client.loads(request_body("m.n", params)) == \
        xmlrpc.client.loads(xmlrpc.client.dumps(params, "m.n", allow_none=True))


class CannedServer:
    """Answers each request with the next canned response, then closes the connection
    when told to (without saying so: as a server whose keep-alive timed out)."""

    def __init__(self, path, responses):
        self.responses = list(responses)
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.responses:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn, conn.makefile("rb") as f:     # both: the file holds the socket open
                while self.responses:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        byte = f.read(1)
                        if not byte:
                            break
                        head += byte
                    if not head:
                        break
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r")[0])
                    f.read(length)
                    response, close = self.responses.pop(0)
                    conn.sendall(response)
                    if close:
                        break


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_a_kept_alive_connection_the_server_closed_is_made_again(tmp_path):
    body = xmlrpc.client.dumps((["Domain-0"],), methodresponse=True).encode()
    server = CannedServer(str(tmp_path / "s"), [(ok(body), True), (ok(body), False)])
    proxy = LeanUnixProxy(str(tmp_path / "s"), lambda: None)
    assert proxy.xend.domains(False) == ["Domain-0"]
    assert proxy.xend.domains(False) == ["Domain-0"]
    assert server.connections == 2


def test_an_http_error_is_a_protocol_error(tmp_path):
    CannedServer(str(tmp_path / "s"), [(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                                        False)])
    with pytest.raises(xmlrpc.client.ProtocolError) as e:
        LeanUnixProxy(str(tmp_path / "s"), lambda: None).xend.domains(False)
    assert e.value.errcode == 500 and e.value.errmsg == "Oops"
