"""Migration between network namespaces with their own addresses (root only).

Three namespaces on this machine: the destination, and two sources, each joined to the
destination by a veth pair with addresses 10.250.<n>.0/24 that exist only inside the
namespaces. The destination's hosts-allow admits 10.250.1.0/24 only: the first source
migrates, the second is refused by address. Everything is removed in a finally.
"""
from __future__ import annotations

import os
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
        for h in hosts:
            try:
                h.stop()
            finally:
                h.kill()
        time.sleep(0.2)
