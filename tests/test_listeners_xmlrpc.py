"""The XML-RPC API of a real xend (reference section 5) with xmlrpc.client over the unix socket,
TCP and TCP+TLS: fault codes, introspection, the string-result quirk, 64-bit values."""
from __future__ import annotations

import codecs
import http.client
import ssl
import subprocess
import xmlrpc.client

import pytest

from tests.daemon_helpers import UnixHTTPConnection, XendInstance, free_port
from xend.server import xmlrpc as xmlrpc_server

pytestmark = pytest.mark.timeout(60)


def make_cert(directory):
    key, cert = directory / "server.key", directory / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


@pytest.fixture(scope="module")
def xend(tmp_path_factory):
    root = tmp_path_factory.mktemp("xmlrpc")
    key, cert = make_cert(root)
    tcp, tls = free_port(), free_port()
    # one xend serves the unix socket and plain TCP; the TLS listener is a second xend
    # (a xend has one TCP XML-RPC listener)
    plain = XendInstance(root / "plain", extra=f"(xend-tcp-xmlrpc-server yes)\n"
                                               f"(xend-tcp-xmlrpc-server-address 127.0.0.1)\n"
                                               f"(xend-tcp-xmlrpc-server-port {tcp})")
    secure = XendInstance(root / "tls", extra=f"(xend-tcp-xmlrpc-server yes)\n"
                                              f"(xend-tcp-xmlrpc-server-address 127.0.0.1)\n"
                                              f"(xend-tcp-xmlrpc-server-port {tls})\n"
                                              f"(xend-tcp-xmlrpc-server-ssl-key-file {key})\n"
                                              f"(xend-tcp-xmlrpc-server-ssl-cert-file {cert})")
    plain.tcp_port, plain.tls_port, plain.cert, plain.secure = tcp, tls, cert, secure
    try:
        plain.start()
        secure.start()
        yield plain
    finally:
        for inst in (plain, secure):
            inst.stop()
            inst.kill()


@pytest.fixture(params=["unix", "tcp", "tls"])
def proxy(request, xend):
    if request.param == "unix":
        return xend.proxy()
    if request.param == "tcp":
        return xmlrpc.client.ServerProxy(f"http://127.0.0.1:{xend.tcp_port}/RPC2",
                                         allow_none=True)
    ctx = ssl.create_default_context(cafile=str(xend.cert))
    return xmlrpc.client.ServerProxy(f"https://localhost:{xend.tls_port}/RPC2",
                                     allow_none=True, context=ctx)


def fault_of(fn, *args) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as info:
        fn(*args)
    return info.value


def test_domains_with_state_answers(proxy):
    records = proxy.xend.domains_with_state(True, "all", False)
    names = [dict((c[0], c[1]) for c in r[1:] if isinstance(c, list) and len(c) == 2)["name"]
             for r in records]
    assert "Domain-0" in names
    assert proxy.xend.domains(False) == sorted(proxy.xend.domains(False))
    assert "Domain-0" in proxy.xend.domains_with_state(False, "running", False)


def test_unknown_domain_is_fault_3_with_the_domain(proxy):
    f = fault_of(proxy.xend.domain, "nosuch")
    assert (f.faultCode, f.faultString) == (3, "nosuch")
    f = fault_of(proxy.xend.domain.pause, "nosuch-either")
    assert (f.faultCode, f.faultString) == (3, "nosuch-either")


def test_xend_error_is_fault_2(proxy):
    f = fault_of(proxy.xend.domain.pause, "Domain-0")
    assert f.faultCode == 2 and "privileged" in f.faultString
    f = fault_of(proxy.xend.domain.configure, "Domain-0")
    assert (f.faultCode, f.faultString) == (2, "Unsupported")


def test_unknown_and_private_methods_are_fault_1(proxy):
    f = fault_of(proxy.xend.nosuch)
    assert (f.faultCode, f.faultString) == (1, 'method "xend.nosuch" is not supported')
    for name in ("_dispatch", "__init__", "xend._private", "xend.domain.__class__",
                 "xend.domain.__init__", "system._listMethods"):
        f = fault_of(proxy.__getattr__(name))   # bypass ServerProxy's own attributes
        assert f.faultCode == 1, name
        assert "not supported" in f.faultString, name


def test_introspection(proxy):
    methods = proxy.system.listMethods()
    for m in ("xend.domain", "xend.domains", "xend.domains_with_state", "xend.domain.create",
              "xend.domain.shutdown", "xend.node.info", "xend.node.log", "system.listMethods",
              "system.methodHelp", "system.methodSignature"):
        assert m in methods
    assert not [m for m in methods if m.startswith("_") or "._" in m]
    assert isinstance(proxy.system.methodHelp("xend.domains"), str)
    assert proxy.system.methodSignature("xend.domains") == "signatures not supported"


def test_top_level_strings_use_the_repr_quirk(proxy):
    log = proxy.xend.node.log()
    assert "\n" not in log and "\\n" in log
    # the client undoes it by reading the escapes back
    text = codecs.decode(log.encode("latin-1", "backslashreplace"), "unicode_escape")
    assert "\n" in text and "Xend" in text
    ring = proxy.xend.node.dmesg.info()
    assert isinstance(ring, str) and "\n" not in ring


def test_node_info_pairs(proxy):
    info = dict(proxy.xend.node.info())
    assert info["system"] == "Linux" and info["xend_config_format"] == 4


def test_wrong_argument_counts_and_types_are_faults(proxy):
    assert fault_of(proxy.xend.domain).faultCode == 1
    assert fault_of(proxy.xend.domain, "Domain-0", 0, 1, 2, 3).faultCode == 1
    f = fault_of(proxy.xend.domain.setMemoryTarget, "Domain-0", {"a": 1})
    assert f.faultCode in (1, 2)
    f = fault_of(proxy.xend.domain.create, "not a config")
    assert f.faultCode in (1, 2)
    assert "Domain-0" in proxy.xend.domains(False)


def test_64_bit_values_travel_as_strings():
    assert xmlrpc_server.to_wire(2 ** 31 - 1) == 2 ** 31 - 1
    assert xmlrpc_server.to_wire(2 ** 40) == str(2 ** 40)
    assert xmlrpc_server.to_wire(-(2 ** 40)) == str(-(2 ** 40))
    assert xmlrpc_server.to_wire(["domain", ["vcpu_avail", 2 ** 63 - 1], ["memory", 5]]) \
        == ["domain", ["memory", 5]]
    xmlrpc.client.dumps((xmlrpc_server.to_wire([2 ** 62, {"k": 2 ** 33}, None]),),
                        methodresponse=True, allow_none=True)


def test_records_marshal_and_none_is_allowed(proxy, xend):
    records = proxy.xend.domains_with_state(True, "all", True)
    assert records
    # None travels as <nil/> in both directions (xend.domain.dump's filename default)
    assert proxy.xend.domain("Domain-0", None)[0] == "domain"


def test_unix_transport_accepts_any_path_and_keeps_the_connection(xend):
    conn = UnixHTTPConnection(str(xend.paths["xend-unix-xmlrpc-path"]))
    try:
        for path in ("/RPC2", "/", "/anything"):
            body = xmlrpc.client.dumps((False,), "xend.domains")
            conn.request("POST", path, body, {"Content-Type": "text/xml"})
            r = conn.getresponse()
            assert r.status == 200 and r.getheader("Content-Type") == "text/xml"
            (result,), _ = xmlrpc.client.loads(r.read())
            assert "Domain-0" in result
    finally:
        conn.close()


def test_tls_listener_refuses_plain_http_and_keeps_serving(xend):
    conn = http.client.HTTPConnection("127.0.0.1", xend.tls_port, timeout=10)
    try:
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("POST", "/RPC2", xmlrpc.client.dumps((), "xend.node.info"))
            conn.getresponse().read()
    finally:
        conn.close()
    ctx = ssl.create_default_context(cafile=str(xend.cert))
    p = xmlrpc.client.ServerProxy(f"https://localhost:{xend.tls_port}/RPC2", context=ctx)
    assert "Domain-0" in p.xend.domains(False)


def test_tls_rejects_an_untrusting_client(xend):
    p = xmlrpc.client.ServerProxy(f"https://localhost:{xend.tls_port}/RPC2",
                                  context=ssl.create_default_context())
    with pytest.raises(ssl.SSLError):
        p.xend.domains(False)
