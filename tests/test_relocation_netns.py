"""Migration between network namespaces with their own addresses (root only).

Three namespaces on this machine: the destination, and two sources, each joined to the
destination by a veth pair with addresses 10.250.<n>.0/24 that exist only inside the
namespaces. The destination's hosts-allow admits 10.250.1.0/24 only: the first source
migrates, the second is refused by address. Everything is removed in a finally.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import xend_command, xm_command
from tests.relocation_helpers import Host, create, memory_digest, running

pytestmark = [pytest.mark.root]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class NsHost(Host):
    """A Host whose xend (and xm) run inside network namespace ``netns``."""

    def __init__(self, root: Path, netns: str, **kw):
        self.netns = netns
        super().__init__(root, **kw)

    def xend(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, *xend_command(), "-c",
                               str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env)

    def xm(self, *args: str, timeout: float = 120, input=None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, *xm_command(), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env,
                              input=input)


def stop_all(hosts) -> None:
    for h in hosts:
        try:
            h.stop()
        finally:
            h.kill()
    time.sleep(0.2)


@pytest.fixture
def namespaces():
    if os.geteuid() != 0:
        pytest.skip("needs root (ip netns)")
    if not shutil.which("ip"):
        pytest.skip("iproute2 not installed")
    tag = f"xrl{os.getpid() % 100000}"
    names = {"dst": f"{tag}-d", "src1": f"{tag}-s1", "src2": f"{tag}-s2"}
    created = []
    try:
        for ns in names.values():
            r = ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot create network namespaces: {r.stderr.strip()}")
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for n, src in ((1, "src1"), (2, "src2")):
            a, b = f"{tag}d{n}", f"{tag}s{n}"          # at most 15 characters
            ip("link", "add", a, "netns", names["dst"], "type", "veth", "peer", "name", b,
               "netns", names[src])
            ip("-n", names["dst"], "addr", "add", f"10.250.{n}.1/24", "dev", a)
            ip("-n", names[src], "addr", "add", f"10.250.{n}.2/24", "dev", b)
            ip("-n", names["dst"], "link", "set", a, "up")
            ip("-n", names[src], "link", "set", b, "up")
        yield names
    finally:
        for ns in created:
            ip("netns", "del", ns, check=False)     # takes its veth ends with it


@pytest.mark.timeout(240)
def test_hosts_allow_by_address_between_namespaces(namespaces, tmp_path):
    hosts = []
    try:
        dst = NsHost(tmp_path / "dst", namespaces["dst"], address="",
                     extra="(xend-relocation-hosts-allow '10.250.1.0/24')")
        src1 = NsHost(tmp_path / "src1", namespaces["src1"], address="10.250.1.2")
        src2 = NsHost(tmp_path / "src2", namespaces["src2"], address="10.250.2.2")
        for h in (dst, src1, src2):
            hosts.append(h)
            h.start()
        create(src1, tmp_path, "g1", memory=64, args="sim.dirty_rate=0")
        create(src2, tmp_path, "g2", memory=64, args="sim.dirty_rate=0")
        digest = memory_digest(src1.sim_state(), src1.domid("g1"))

        r = src1.xm("migrate", "-l", "g1", "10.250.1.1", "-p", str(dst.port))
        assert r.returncode == 0, r.stderr + src1.log_tail()
        assert "g1" not in src1.guests()
        assert running(dst.guests()["g1"])
        assert memory_digest(dst.sim_state(), dst.domid("g1")) == digest

        r = src2.xm("migrate", "g2", "10.250.2.1", "-p", str(dst.port))
        assert r.returncode != 0
        assert "closed the connection without answering" in r.stderr, r.stderr
        assert running(src2.guests()["g2"])
        assert "g2" not in dst.guests() and len(dst.sim_domids()) == 1
        assert "Rejected connection from 10.250.2.2 (" in dst.log()
        # and the address really is the namespace's: the host cannot reach it
        assert ip("-n", namespaces["src2"], "route", "get", "10.250.1.1",
                  check=False).returncode != 0
    finally:
        stop_all(hosts)


@pytest.mark.timeout(240)
def test_callers_from_another_host(namespaces, tmp_path):
    """From another host (a namespace of its own): TCP XML-RPC only over TLS with a client
    certificate the CA signed; HTTP never; relocation by hosts-allow, and on the SSL port with
    a certificate too; a sender presents its relocation certificate when it migrates."""
    from tests.tcp_probe import tcp_probe
    from tests.tls_helpers import CA, self_signed
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3")
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = CA(certs)
    dst_key, dst_cert = ca.issue("dst", "subjectAltName=IP:10.250.1.1,IP:10.250.2.1")
    src_key, src_cert = ca.issue("src1", "subjectAltName=IP:10.250.1.2")
    stranger_key, stranger_cert = self_signed(certs, "stranger")
    rpc, web, ssl_port = 8106, 8100, 8103      # free in a fresh namespace
    tls = (f"(xend-relocation-ssl-server yes)(xend-relocation-server-ssl-key-file {dst_key})"
           f"(xend-relocation-server-ssl-cert-file {dst_cert})(xend-relocation-ssl-ca-file "
           f"{ca.cert})(xend-relocation-hosts-allow '10.250.0.0/16')")
    rpc_tls = (f"(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address '')"
               f"(xend-tcp-xmlrpc-server-port {rpc})"
               f"(xend-tcp-xmlrpc-server-ssl-key-file {dst_key})"
               f"(xend-tcp-xmlrpc-server-ssl-cert-file {dst_cert})")
    hosts = []
    try:
        dst = NsHost(tmp_path / "dst", namespaces["dst"], address="", ssl_port=ssl_port,
                     extra=tls + rpc_tls + f"(xend-tcp-xmlrpc-server-ssl-ca-file {ca.cert})"
                     f"(xend-http-server yes)(xend-port {web})")
        src1 = NsHost(tmp_path / "src1", namespaces["src1"], address="10.250.1.2",
                      extra=f"(xend-relocation-server-ssl-key-file {src_key})"
                            f"(xend-relocation-server-ssl-cert-file {src_cert})"
                            f"(xend-relocation-ssl-ca-file {ca.cert})")
        src2 = NsHost(tmp_path / "src2", namespaces["src2"], address="10.250.2.2")
        for h in (dst, src1, src2):
            hosts.append(h)
            h.start()
        far = "10.250.1.1"
        targets = [f"xmlrpc:{far}:{rpc}:tls", f"http:{far}:{web}",
                   f"relocation:{far}:{dst.port}", f"relocation:{far}:{ssl_port}:tls"]
        src = namespaces["src1"]
        assert tcp_probe(*targets, netns=src) == dict.fromkeys(targets, "REFUSED") | {
            f"relocation:{far}:{dst.port}": "SERVED"}
        signed = tcp_probe(*targets, netns=src, cert=src_cert, key=src_key)
        assert signed == dict.fromkeys(targets, "SERVED") | {f"http:{far}:{web}": "REFUSED"}
        stranger = tcp_probe(*targets, netns=src, cert=stranger_cert, key=stranger_key)
        assert stranger[f"xmlrpc:{far}:{rpc}:tls"] == "REFUSED"
        assert stranger[f"relocation:{far}:{ssl_port}:tls"] == "REFUSED"
        log = dst.log()
        assert re.search(r"XMLRPCServer-tcp: refused connection from 10\.250\.1\.2:\d+: a "
                         r"caller from another host without a client certificate", log), log
        assert re.search(r"HttpServer-tcp: refused connection from 10\.250\.1\.2:\d+: "
                         r"callers from other hosts are served only", log), log

        # an SSL migration: src1 presents its certificate and is received; src2 has none
        create(src1, tmp_path, "g1", memory=64, args="sim.dirty_rate=0")
        r = src1.xm("migrate", "--ssl", "g1", far, "-p", str(ssl_port))
        assert r.returncode == 0, r.stderr + src1.log_tail() + dst.log_tail()
        assert running(dst.guests()["g1"])
        create(src2, tmp_path, "g2", memory=64, args="sim.dirty_rate=0")
        r = src2.xm("migrate", "--ssl", "g2", "10.250.2.1", "-p", str(ssl_port))
        assert r.returncode != 0
        assert running(src2.guests()["g2"]) and "g2" not in dst.guests()
        assert re.search(r"RelocationServer-ssl: refused connection from 10\.250\.2\.2",
                         dst.log()), dst.log_tail()

        # a plain TCP XML-RPC port serves no caller from another host
        plain = NsHost(tmp_path / "plain", namespaces["dst"], address="",
                       extra=f"(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address '')"
                             f"(xend-tcp-xmlrpc-server-port {rpc + 1})")
        hosts.append(plain)
        plain.start()
        target = f"xmlrpc:{far}:{rpc + 1}"
        assert tcp_probe(target, netns=src)[target] == "REFUSED"
    finally:
        stop_all(hosts)
