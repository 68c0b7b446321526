"""The legacy HTTP/SXP server (reference section 6) of a real xend, on its unix path and its TCP
port: the resource tree, the requests libvirt's old xend driver sent, SXP that parses, the
original statuses and limits, keep-alive and the browser (HTML) format."""
from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from urllib.parse import urlencode

import pytest

from tests.daemon_helpers import UnixHTTPConnection, XendInstance, free_port
from xend import sxp

pytestmark = pytest.mark.timeout(60)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def xend(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    port = free_port()
    inst = XendInstance(root / "xend", extra=f"(xend-unix-server yes)\n(xend-http-server yes)\n"
                                             f"(xend-address 127.0.0.1)\n(xend-port {port})")
    inst.http_port = port
    inst.kernel = root / "vmlinuz"
    inst.kernel.write_bytes(b"\0" * 4096)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()
        inst.kill()


@pytest.fixture(params=["unix", "tcp"])
def endpoint(request, xend):
    if request.param == "unix":
        return str(xend.paths["xend-unix-path"])
    return ("127.0.0.1", xend.http_port)


def connect(endpoint, timeout: float = 20) -> http.client.HTTPConnection:
    if isinstance(endpoint, str):
        return UnixHTTPConnection(endpoint, timeout)
    return http.client.HTTPConnection(*endpoint, timeout=timeout)


def call(endpoint, method, path, body=None, headers=None):
    """(status, reason, headers, body bytes) of one request on a fresh connection."""
    conn = connect(endpoint)
    try:
        if isinstance(body, dict):
            body = urlencode(body)
            headers = {**FORM, **(headers or {})}
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw(endpoint, data: bytes, timeout: float = 20) -> bytes:
    """Send ``data`` as is and read until the server closes (how libvirt's driver read)."""
    if isinstance(endpoint, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    with s:
        s.connect(endpoint)
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def parse_sxp(body: bytes):
    assert not body.endswith(b"\n"), body
    return sxp.from_string(body.decode())


def vm_config(xend, name: str, memory: int = 32) -> str:
    return sxp.to_string(["vm", ["name", name], ["memory", str(memory)], ["vcpus", "1"],
                          ["image", ["linux", ["kernel", str(xend.kernel)]]]])


def running_names(endpoint):
    status, _, _, body = call(endpoint, "GET", "/xend/domain")
    assert status == 200
    return parse_sxp(body)


# -- the resource tree ------------------------------------------------------------------------

def test_directories_list_their_children(endpoint):
    status, _, headers, body = call(endpoint, "GET", "/")
    assert (status, headers["content-type"], body) == (200, "application/sxp", b"(ls )")
    status, _, _, body = call(endpoint, "GET", "/xend/")
    assert (status, body) == (200, b"(ls  node domain vnet)")
    assert call(endpoint, "GET", "/xend/vnet")[3] == b"()"


def test_get_node_as_libvirt_sent_it(endpoint, xend):
    # libvirt's xend driver: HTTP/1.1, no User-Agent, no Accept, reads until the server closes
    req = (b"GET /xend/node/ HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
    reply = raw(endpoint, req)
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-type"] == "application/sxp"
    assert headers["Content-length"] == str(len(body))
    assert headers["Pragma"] == "no-cache" and headers["Expires"] == "-1"
    node = parse_sxp(body)
    assert node[0] == "node"
    assert sxp.child_value(node, "system") == "Linux"
    assert sxp.child_value(node, "xend_config_format") == "4"
    assert dict(xend.proxy().xend.node.info())["nr_cpus"] == int(sxp.child_value(node, "nr_cpus"))


def test_domain_list_names_and_detail(endpoint):
    assert "Domain-0" in running_names(endpoint)
    status, _, _, body = call(endpoint, "GET", "/xend/domain?detail=1")
    assert status == 200
    records = parse_sxp(body)
    assert all(sxp.elementp(r, "domain") for r in records)
    dom0 = [r for r in records if sxp.child_value(r, "name") == "Domain-0"]
    assert dom0 and sxp.child_value(dom0[0], "domid") == "0"
    status, _, _, body = call(endpoint, "GET", "/xend/domain?state=all")
    assert status == 200 and "Domain-0" in parse_sxp(body)


def test_domain_record_by_name_and_id(endpoint):
    for key in ("Domain-0", "0"):
        status, _, _, body = call(endpoint, "GET", f"/xend/domain/{key}")
        assert status == 200
        rec = parse_sxp(body)
        assert rec[0] == "domain" and sxp.child_value(rec, "name") == "Domain-0"


def test_create_then_shutdown_as_libvirt_did(endpoint, xend):
    name = "http-" + ("u" if isinstance(endpoint, str) else "t")
    status, _, headers, body = call(endpoint, "POST", "/xend/domain",
                                    {"op": "create", "config": vm_config(xend, name)})
    assert status == 201, body
    assert headers["location"].endswith(f"/xend/domain/{name}")
    rec = parse_sxp(body)
    assert rec[0] == "domain" and sxp.child_value(rec, "name") == name
    # the new domain is visible over XML-RPC too
    assert name in xend.proxy().xend.domains_with_state(False, "all", False)
    xend.proxy().xend.domain.unpause(name)

    status, _, _, body = call(endpoint, "GET", f"/xend/domain/{name}")
    assert status == 200 and sxp.child_value(parse_sxp(body), "name") == name

    form = urlencode({"op": "shutdown", "reason": "poweroff"}).encode()
    reply = raw(endpoint, b"POST /xend/domain/" + name.encode() + b" HTTP/1.1\r\n"
                b"Host: localhost\r\nAccept-Encoding: identity\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 202 Accepted", reply
    assert f"/xend/domain/{name}/..".encode() in rest
    xend.wait_for(lambda: name not in xend.proxy().xend.domains(False), timeout=20)


def test_per_domain_ops_map_onto_the_registry(endpoint, xend):
    name = "ops-" + ("u" if isinstance(endpoint, str) else "t")
    assert call(endpoint, "POST", "/xend/domain",
                {"op": "create", "config": vm_config(xend, name)})[0] == 201
    try:
        assert call(endpoint, "POST", f"/xend/domain/{name}", {"op": "unpause"})[0] == 200
        assert name in running_names(endpoint)
        assert call(endpoint, "POST", f"/xend/domain/{name}", {"op": "pause"})[0] == 200
        assert name not in running_names(endpoint)
        status, _, _, body = call(endpoint, "GET", "/xend/domain?state=paused")
        assert status == 200 and name in parse_sxp(body)
        status, _, _, body = call(endpoint, "POST", f"/xend/domain/{name}", {"op": "vcpuinfo"})
        assert status == 200 and parse_sxp(body)[0] == "domain"
        status, _, _, body = call(endpoint, "GET", f"/xend/domain/{name}?op=vcpuinfo")
        assert status == 200 and sxp.child(parse_sxp(body), "vcpu") is not None
        status, _, _, _ = call(endpoint, "POST", f"/xend/domain/{name}",
                               {"op": "mem_target_set", "target": "16"})
        assert status == 200
        assert xend.wait_for(lambda: sxp.child_value(xend.proxy().xend.domain(name),
                                                     "memory") == 16)
    finally:
        status, _, headers, _ = call(endpoint, "POST", f"/xend/domain/{name}", {"op": "destroy"})
    assert status == 202 and headers["location"].endswith(f"/xend/domain/{name}/..")
    assert name not in xend.proxy().xend.domains_with_state(False, "all", False)


def test_node_dmesg_and_log_are_plain_text(endpoint):
    status, _, headers, body = call(endpoint, "GET", "/xend/node/dmesg")
    assert status == 200 and headers["content-type"] == "text/plain" and body
    status, _, headers, body = call(endpoint, "GET", "/xend/node/log")
    assert status == 200 and headers["content-type"] == "text/plain"
    assert b"Xend" in body or b"xend" in body
    status, _, _, body = call(endpoint, "POST", "/xend/node", {"op": "reboot"})
    assert (status, body) == (200, b"0")


def test_save_restore_and_managed_domains(xend, tmp_path):
    ep = str(xend.paths["xend-unix-path"])
    assert call(ep, "POST", "/xend/domain", {"op": "create",
                                             "config": vm_config(xend, "sr")})[0] == 201
    assert call(ep, "POST", "/xend/domain/sr", {"op": "unpause"})[0] == 200
    image = tmp_path / "sr.img"
    status, _, headers, _ = call(ep, "POST", "/xend/domain/sr", {"op": "save", "file": str(image)})
    assert status == 202 and headers["location"].endswith("/xend/domain/sr/..")
    assert image.stat().st_size > 0 and "sr" not in running_names(ep)
    status, _, headers, body = call(ep, "POST", "/xend/domain", {"op": "restore",
                                                                 "file": str(image)})
    assert status == 201 and headers["location"].endswith("/xend/domain/sr")
    assert sxp.child_value(parse_sxp(body), "name") == "sr" and "sr" in running_names(ep)
    assert call(ep, "POST", "/xend/domain/sr", {"op": "rename", "name": "sr2"})[0] == 202
    assert "sr2" in running_names(ep)
    assert call(ep, "POST", "/xend/domain/sr2", {"op": "destroy"})[0] == 202

    # managed domains: new, start (running unless paused=1), destroy, delete
    status, _, _, _ = call(ep, "POST", "/xend/domain", {"op": "new",
                                                        "config": vm_config(xend, "mg")})
    assert status == 200
    status, _, _, body = call(ep, "GET", "/xend/domain/mg")
    assert status == 200 and sxp.child(parse_sxp(body), "domid") is None
    assert call(ep, "POST", "/xend/domain/mg", {"op": "start"})[0] == 202
    assert "mg" in running_names(ep)
    assert call(ep, "POST", "/xend/domain/mg", {"op": "destroy"})[0] == 202
    assert call(ep, "POST", "/xend/domain/mg", {"op": "delete"})[0] == 202
    assert call(ep, "GET", "/xend/domain/mg")[0] == 404


def test_failed_migrate_keeps_200_with_xend_err(xend):
    ep = str(xend.paths["xend-unix-path"])
    assert call(ep, "POST", "/xend/domain", {"op": "create",
                                             "config": vm_config(xend, "mig")})[0] == 201
    assert call(ep, "POST", "/xend/domain/mig", {"op": "unpause"})[0] == 200
    try:
        status, _, _, body = call(ep, "POST", "/xend/domain/mig",
                                  {"op": "migrate", "destination": "127.0.0.1",
                                   "port": str(free_port())})
        err = parse_sxp(body)
        assert status == 200 and err[0] == "xend.err" and "connect" in err[1]
    finally:
        call(ep, "POST", "/xend/domain/mig", {"op": "destroy"})


# -- errors -----------------------------------------------------------------------------------

def test_unknown_path_and_unknown_domain_are_404(endpoint):
    status, _, headers, body = call(endpoint, "GET", "/xend/nothing")
    assert (status, headers["content-type"], body) == (404, "text/plain", b"Not found: nothing")
    status, _, _, body = call(endpoint, "GET", "/xend/domain/nosuch")
    assert (status, body) == (404, b"<Fault 3: 'nosuch'>")
    status, _, _, body = call(endpoint, "POST", "/xend/domain/nosuch",
                              {"op": "shutdown", "reason": "poweroff"})
    assert status == 404


def test_post_without_one_op_is_406_and_unknown_op_501(endpoint):
    status, reason, _, body = call(endpoint, "POST", "/xend/domain/Domain-0", {"reason": "x"})
    assert (status, reason, body) == (406, "Invalid request", b"")
    status, _, _, _ = call(endpoint, "POST", "/xend/domain/Domain-0?op=pause", {"op": "unpause"})
    assert status == 406
    status, _, headers, body = call(endpoint, "POST", "/xend/domain/Domain-0", {"op": "frob"})
    assert (status, headers["content-type"]) == (501, "text/plain")
    assert body == b"Operation not implemented: frob"
    assert call(endpoint, "POST", "/xend/", {"op": "x"})[0] == 501


def test_failed_op_is_500_with_xend_err(endpoint):
    status, reason, headers, body = call(endpoint, "POST", "/xend/domain/Domain-0",
                                         {"op": "shutdown"})
    assert (status, reason) == (500, "Request failed: shutdown")
    assert headers["content-type"] == "application/sxp"
    assert parse_sxp(body) == ["xend.err", "Missing parameter: reason"]
    body = call(endpoint, "POST", "/xend/domain/Domain-0",
                "op=shutdown&reason=a&reason=b", FORM)[3]
    assert parse_sxp(body) == ["xend.err", "Too many values for reason"]
    status, _, _, body = call(endpoint, "POST", "/xend/domain/Domain-0",
                              {"op": "mem_target_set", "target": "lots"})
    assert status == 500 and "lots" in parse_sxp(body)[1]
    status, _, _, body = call(endpoint, "POST", "/xend/domain",
                              {"op": "create", "config": "(vm (name broken"})
    assert status == 500 and parse_sxp(body)[0] == "xend.err"
    status, _, _, body = call(endpoint, "POST", "/xend/domain/Domain-0",
                              {"op": "pause"})
    err = parse_sxp(body)
    assert status == 500 and err[0] == "xend.err" and "privileged" in err[1]


def test_failed_save_keeps_202_with_xend_err(endpoint, tmp_path):
    # the original's threaded ops answered with their status already chosen
    status, _, _, body = call(endpoint, "POST", "/xend/domain/Domain-0",
                              {"op": "save", "file": str(tmp_path / "no" / "such" / "img")})
    assert status == 202 and parse_sxp(body)[0] == "xend.err"


def test_body_limit_is_10000_bytes(endpoint):
    ok = {"op": "frob", "pad": "x" * (10000 - len("op=frob&pad="))}
    assert call(endpoint, "POST", "/xend/domain/Domain-0", ok)[0] == 501
    big = {"op": "frob", "pad": "x" * 10000}
    status, _, headers, _ = call(endpoint, "POST", "/xend/domain/Domain-0", big)
    assert status == 413 and headers["connection"] == "close"


def test_version_header_and_method_limits(endpoint):
    assert raw(endpoint, b"GET /xend/node HTTP/3.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert raw(endpoint, b"GET /xend/ HTTP/1.0\r\n\r\n").endswith(b"(ls  node domain vnet)")
    # HTTP/0.9: no version, no headers
    assert raw(endpoint, b"GET /xend/\r\n").endswith(b"(ls  node domain vnet)")
    many = b"GET /xend/ HTTP/1.1\r\n" + b"X-Pad: 1\r\n" * 499 + b"\r\n"
    assert raw(endpoint, many).startswith(b"HTTP/1.1 200 ")
    too_many = b"GET /xend/ HTTP/1.1\r\n" + b"X-Pad: 1\r\n" * 501 + b"\r\n"
    assert raw(endpoint, too_many).startswith(b"HTTP/1.1 431 ")
    too_big = b"GET /xend/ HTTP/1.1\r\n" + (b"X-Pad: " + b"1" * 1000 + b"\r\n") * 66 + b"\r\n"
    assert raw(endpoint, too_big).startswith(b"HTTP/1.1 431 ")
    status, _, headers, _ = call(endpoint, "DELETE", "/xend/domain/Domain-0")
    assert status == 501 and "POST" in headers["allow"]
    status, _, headers, body = call(endpoint, "HEAD", "/xend/")
    assert status == 200 and body == b"" and headers["content-length"] == "22"


def test_multipart_form_is_parsed(endpoint):
    boundary = "xendboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"op\"\r\n\r\nlist\r\n"
            f"--{boundary}--\r\n").encode()
    status, _, _, reply = call(endpoint, "POST", "/xend/domain", body,
                               {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200
    assert "Domain-0" in [sxp.child_value(r, "name") for r in parse_sxp(reply)]


# -- connections and formats ------------------------------------------------------------------

def test_keep_alive_only_when_asked(endpoint):
    conn = connect(endpoint)
    try:
        for _ in range(3):
            conn.request("GET", "/xend/", headers={"Connection": "keep-alive"})
            r = conn.getresponse()
            assert r.read() == b"(ls  node domain vnet)"
            assert r.getheader("Connection") == "keep-alive" and not r.will_close
        conn.request("GET", "/xend/")
        r = conn.getresponse()
        r.read()
        assert r.getheader("Connection") == "close" and r.will_close
    finally:
        conn.close()


def test_browser_gets_html(endpoint):
    browser = {"User-Agent": "Mozilla/5.0", "Accept": "text/html,*/*"}
    status, _, headers, body = call(endpoint, "GET", "/xend/domain", headers=browser)
    assert status == 200 and headers["content-type"] == "text/html"
    assert b"<html>" in body and b"Domain-0" in body
    sxp_too = {**browser, "Accept": "text/html, application/sxp"}
    assert call(endpoint, "GET", "/xend/domain", headers=sxp_too)[2]["content-type"] == \
        "application/sxp"
    status, _, headers, body = call(endpoint, "POST", "/xend/domain/Domain-0",
                                    {"op": "shutdown"}, headers=browser)
    assert status == 500 and body == b"<p>Missing parameter: reason</p>"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_over_the_unix_socket_and_tcp(xend):
    unix = ["curl", "-sS", "--unix-socket", str(xend.paths["xend-unix-path"])]
    base = "http://localhost"
    tcp_base = f"http://127.0.0.1:{xend.http_port}"
    for cmd, url in ((unix, base), (["curl", "-sS"], tcp_base)):
        r = subprocess.run(cmd + ["-H", "Accept: application/sxp", url + "/xend/node/"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert sxp.from_string(r.stdout)[0] == "node"
        # curl's own Accept (*/*) and User-Agent make it a browser: HTML
        r = subprocess.run(cmd + [url + "/xend/domain"], capture_output=True, text=True,
                           timeout=30)
        assert "<html>" in r.stdout
        r = subprocess.run(cmd + ["-w", "%{http_code}", "-o", "/dev/null", "-d", "op=frob",
                                  url + "/xend/domain/Domain-0"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout == "501"


def test_many_clients_at_once(endpoint):
    start = time.monotonic()
    conns = [connect(endpoint) for _ in range(20)]
    try:
        for c in conns:
            c.request("GET", "/xend/domain", headers={"Connection": "keep-alive"})
        for c in conns:
            r = c.getresponse()
            assert r.status == 200 and "Domain-0" in parse_sxp(r.read())
    finally:
        for c in conns:
            c.close()
    assert time.monotonic() - start < 20


# -- the form layer on its own (no daemon) ----------------------------------------------------

def test_typed_fields_convert_like_the_original():
    from xend.server.http_forms import ArgError, Field, convert, opt
    fields = (Field("n", "int"), opt("flag", "bool", False), opt("cfg", "sxpr"), opt("k", "key"))
    assert convert(fields, {"n": ["3"], "flag": ["YES"], "cfg": ["(vm (name a))"],
                            "k": ["104"], "unknown": ["ignored"]}) == \
        [3, True, ["vm", ["name", "a"]], "h"]
    assert convert(fields, {"n": ["0"], "flag": ["off"]}) == [0, False, None, None]
    with pytest.raises(ArgError, match="^Missing parameter: n$"):
        convert(fields, {})
    with pytest.raises(ArgError, match="^Too many values for n$"):
        convert(fields, {"n": ["1", "2"]})
    with pytest.raises(ArgError, match="invalid literal for int"):
        convert(fields, {"n": ["x"]})
    with pytest.raises(ArgError, match="unclosed"):
        convert(fields, {"n": ["1"], "cfg": ["(vm"]})


def test_form_bodies_parse():
    from xend.server.http_forms import FormError, parse_body
    assert parse_body(b"op=create&config=&x=%28a%29", "application/x-www-form-urlencoded") == \
        {"op": ["create"], "config": [""], "x": ["(a)"]}
    body = (b"--b\r\nContent-Disposition: form-data; name=\"op\"\r\n\r\nsave\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
            b"Content-Type: text/plain\r\n\r\n/tmp/a b\r\n--b--\r\n")
    assert parse_body(body, "multipart/form-data; boundary=b") == \
        {"op": ["save"], "file": ["/tmp/a b"]}
    assert parse_body(b"op=x", "text/plain") == {}
    with pytest.raises(FormError):
        parse_body(b"garbage", "multipart/form-data")
