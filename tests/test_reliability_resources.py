"""Resources: what one client can make xend hold. Huge request heads and bodies are refused
early (431, 413) and cost little memory; a body's framing must be unambiguous (400); a
malformed call is one log line; a client that trickles its request is cut at the request
deadline; one peer cannot take every slot; xm on the unix socket answers throughout."""
from __future__ import annotations

import re
import socket
import threading
import time
import xmlrpc.client

import pytest

from tests.daemon_helpers import XendInstance, free_port
from tests.flood_helpers import (RssSampler, body_flood, header_flood, in_parallel,
                                 open_tricklers, read_to_end, rss_mib, status_line,
                                 unix_connect)
from xend.server.deadline import REQUEST_DEADLINE
from xend.server.xmlrpc import MAX_BODY, MAX_PER_PEER_TCP


@pytest.fixture
def xend(tmp_path):
    rpc, rel = free_port(), free_port()
    x = XendInstance(tmp_path / "x", extra=(
        "(xend-unix-server yes)(xend-tcp-xmlrpc-server yes)"
        f"(xend-tcp-xmlrpc-server-address 127.0.0.1)(xend-tcp-xmlrpc-server-port {rpc})"
        f"(xend-relocation-server yes)(xend-relocation-address 127.0.0.1)"
        f"(xend-relocation-port {rel})"))
    x.rpc_port, x.rel_port = rpc, rel
    x.start()
    yield x
    x.stop()
    x.kill()


def exchange(connect, data: bytes) -> str:
    s = connect()
    try:
        s.sendall(data)
        return status_line(s)
    finally:
        s.close()


@pytest.mark.timeout(120)
def test_header_flood_is_cut_early_and_costs_little(xend):
    pid = xend.pid()
    for path in (xend.paths["xend-unix-path"], xend.paths["xend-unix-xmlrpc-path"]):
        idle = rss_mib(pid)
        with RssSampler(pid) as sampler:
            replies = in_parallel(16, lambda: header_flood(lambda: unix_connect(str(path))))
        assert {r.split(" ", 2)[1] for r in replies if r.startswith("HTTP/")} <= {"431"}, replies
        assert any(r.startswith("HTTP/1.1 431") for r in replies), replies
        # 16 x 30 MB of headers cost the original's parsing 380 MiB here; now a few MiB
        assert sampler.peak - idle < 32, (path, sampler.peak, idle)
    xend.wait_for(xend.answering, timeout=20)


@pytest.mark.timeout(120)
def test_body_limits_and_memory(xend):
    path = str(xend.paths["xend-unix-xmlrpc-path"])
    connect = lambda: unix_connect(path)       # noqa: E731
    head = b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
    assert " 413 " in exchange(connect, head + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    # a domain config with 256 disks and 64 interfaces fits under the limit
    cfg = ["vm", ["name", "big"], ["memory", "64"], ["vcpus", "1"]]
    cfg += [["device", ["vbd", ["uname", f"phy:/dev/mapper/vg-guest--disk-{i}"],
                        ["dev", f"xvd{i}"], ["mode", "w"]]] for i in range(256)]
    cfg += [["device", ["vif", ["mac", "00:16:3e:00:00:%02x" % i], ["bridge", "xenbr0"]]]
            for i in range(64)]
    assert len(xmlrpc.client.dumps((cfg,), "xend.domain.create")) < MAX_BODY / 4
    # 63 clients each holding a body at the limit: bounded
    pid = xend.pid()
    idle = rss_mib(pid)
    with RssSampler(pid) as sampler:
        held, _ = body_flood(connect, MAX_BODY, 63)
        time.sleep(1)
        # this process holds its share of the slots; xm (another process) gets in
        r = xend.xm("list")
        assert r.returncode == 0 and "Domain-0" in r.stdout, r.stderr
    for s in held:
        s.close()
    assert sampler.peak - idle < 160, (sampler.peak, idle)
    xend.wait_for(xend.answering, timeout=20)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("listener", ["xmlrpc", "http"])
def test_ambiguous_body_framing_is_refused(xend, listener):
    path = str(xend.paths["xend-unix-xmlrpc-path" if listener == "xmlrpc" else "xend-unix-path"])
    connect = lambda: unix_connect(path)       # noqa: E731
    target = b"/RPC2" if listener == "xmlrpc" else b"/xend/domain"
    body = b"op=list"
    for head in (b"Content-Length: 7\r\nContent-Length: 7\r\n",
                 b"Content-Length: 7\r\nContent-Length: 70\r\n",
                 b"Content-Length: 7\r\nTransfer-Encoding: chunked\r\n",
                 b"Transfer-Encoding: identity\r\nContent-Length: 7\r\n"):
        reply = exchange(connect, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + head +
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body)
        assert reply.startswith("HTTP/1.1 400 "), (head, reply)
    assert xend.answering()


@pytest.mark.timeout(60)
def test_a_deeply_nested_call_is_one_log_line(xend, tmp_path):
    log = xend.paths["logfile"]
    before = log.stat().st_size
    depth = 5000        # written by hand: xmlrpc.client itself cannot marshal it
    value = (b"<value><array><data>" * depth + b"<value><string>vm</string></value>"
             + b"</data></array></value>" * depth)
    body = (b"<?xml version='1.0'?><methodCall><methodName>xend.domain.create</methodName>"
            b"<params><param>" + value + b"</param></params></methodCall>")
    rpc = str(xend.paths["xend-unix-xmlrpc-path"])
    s = unix_connect(rpc)
    s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
              % len(body) + body)
    reply = read_to_end(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 200") and b"nested more than" in reply, reply[:300]
    # and through the legacy HTTP interface, as an SXP form field
    path = str(xend.paths["xend-unix-path"])
    form = b"op=create&config=" + b"(" * 4000 + b")" * 4000     # under the 10,000 bytes
    reply = exchange(lambda: unix_connect(path),
                     b"POST /xend/domain HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
                     % len(form) + form)
    assert reply.split()[1] in ("400", "500"), reply    # a failed op, as the original
    assert len(body) > 100000
    grown = log.read_text()[before:]
    assert "Traceback" not in grown, grown[:2000]
    assert len(grown) < 2000, grown[:2000]
    assert xend.answering()


# -- trickling clients ------------------------------------------------------------------------
@pytest.mark.timeout(REQUEST_DEADLINE * 2 + 60)
def test_trickling_clients_are_cut_and_xm_keeps_answering(xend):
    """64 clients on TCP XML-RPC, 16 on relocation, 64 on the unix XML-RPC socket, each sending
    a byte every 5 s (far inside any per-read timeout): the unix socket keeps answering xm, and
    every trickler is cut once its request deadline has passed."""
    unix = str(xend.paths["xend-unix-xmlrpc-path"])
    floods = [(lambda: socket.create_connection(("127.0.0.1", xend.rpc_port), 10),
               b"POST /RPC2 HTTP/1.1\r\n", 64),
              (lambda: socket.create_connection(("127.0.0.1", xend.rel_port), 10), b"(", 16),
              (lambda: unix_connect(unix, 10), b"POST /RPC2 HTTP/1.1\r\n", 64)]
    socks = [s for connect, first, count in floods
             for s in open_tricklers(connect, first, count)]
    t0 = time.monotonic()
    alive = set(range(len(socks)))
    answered = asked = 0
    while alive and time.monotonic() - t0 < REQUEST_DEADLINE + 20:
        r = xend.xm("list", timeout=20)
        asked += 1
        answered += r.returncode == 0 and "Domain-0" in r.stdout
        for i in list(alive):
            try:
                socks[i].sendall(b"a")
                socks[i].settimeout(0.01)
                if socks[i].recv(4096) == b"":
                    alive.discard(i)
            except socket.timeout:
                pass
            except OSError:
                alive.discard(i)
        time.sleep(5)
    elapsed = time.monotonic() - t0
    for s in socks:
        s.close()
    assert answered == asked, f"xm list answered {answered} of {asked} times"
    assert not alive, f"{len(alive)} tricklers still connected after {elapsed:.0f} s"
    assert xend.answering()


@pytest.mark.timeout(60)
def test_one_peer_cannot_take_every_slot(xend):
    """64 idle connections from 127.0.0.1 hold at most MAX_PER_PEER_TCP slots of the TCP
    XML-RPC port; a call from another address (127.0.0.2) is served meanwhile."""
    port = xend.rpc_port
    held = []
    for _ in range(64):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), 10))
        except OSError:
            pass
    time.sleep(0.5)
    still = 0
    for s in held:
        s.settimeout(0.05)
        try:
            still += s.recv(1) != b""
        except socket.timeout:
            still += 1
        except OSError:
            pass
    assert still <= MAX_PER_PEER_TCP, still
    other = socket.socket()
    other.bind(("127.0.0.2", 0))
    other.settimeout(10)
    other.connect(("127.0.0.1", port))
    body = xmlrpc.client.dumps((False,), "xend.domains").encode()
    other.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    reply = read_to_end(other)
    other.close()
    for s in held:
        s.close()
    assert reply.startswith(b"HTTP/1.1 200") and b"Domain-0" in reply, reply[:200]
    assert re.search("Too many connections; refusing one from .*127.0.0.1",
                     xend.paths["logfile"].read_text())
