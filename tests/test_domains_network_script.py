"""etc/xen/scripts/network-bridge: acts on a Xen dom0, safe elsewhere. These tests never let
it act with a usable `ip` (no XEN_NETWORK_BRIDGE_APPLY=1, no dom0 capabilities file, unless
PATH has no `ip`), so the host network is not touched. (tests/xen: it makes the bridge in
a real dom0.)"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

SCRIPT = Path(__file__).resolve().parent.parent / "etc" / "xen" / "scripts" / "network-bridge"


def run(*args, env=None):
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    base.update(env or {})          # a fresh environment: APPLY only when a test sets it
    return subprocess.run(["/bin/sh", str(SCRIPT), *args], capture_output=True, text=True,
                          env=base, timeout=20)


def test_executable_posix_sh():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["/bin/sh", "-n", str(SCRIPT)]).returncode == 0


def test_start_only_prints_the_plan_by_default():
    p = run("start", "bridge=xbrtest0", "netdev=nosuchdev9", "vifnum=0")
    assert p.returncode == 0, p.stderr
    assert ("plan only (not a Xen control domain and XEN_NETWORK_BRIDGE_APPLY is not 1)"
            in p.stdout)
    assert "would run: ip link add name xbrtest0 type bridge" in p.stdout
    assert "would run: ip link set dev nosuchdev9 master xbrtest0" in p.stdout
    assert "ignoring vifnum=0" in p.stdout
    assert not Path("/sys/class/net/xbrtest0").exists()


def test_stop_and_status_are_harmless():
    assert run("stop", "bridge=xbrtest0", "netdev=nosuchdev9").returncode == 0
    p = run("status", "bridge=xbrtest0", "netdev=nosuchdev9")
    assert p.returncode == 0
    assert "bridge=xbrtest0 netdev=nosuchdev9" in p.stdout


def test_without_bridge_tools_it_reports_the_plan():
    env = {"PATH": "/nonexistent", "XEN_NETWORK_BRIDGE_APPLY": "1"}
    p = run("start", "bridge=xbrtest0", "netdev=eth9", env=env)
    assert p.returncode == 0, p.stderr
    assert "plan only (the ip tool (iproute2) is not installed)" in p.stdout
    assert "would run: ip link add name xbrtest0 type bridge" in p.stdout
    p = run("status", env=env)
    assert p.returncode == 0 and "not installed" in p.stdout


def test_on_a_dom0_it_acts_unless_told_not_to(tmp_path):
    caps = tmp_path / "capabilities"
    caps.write_text("control_d\n")
    dom0 = {"PATH": "/nonexistent", "XEN_CAPABILITIES_FILE": str(caps)}
    p = run("start", "bridge=xbrtest0", "netdev=eth9", env=dom0)
    # it would act: the only thing missing is the ip tool (kept off PATH here)
    assert "plan only (the ip tool (iproute2) is not installed)" in p.stdout, p.stdout
    p = run("start", "bridge=xbrtest0", "netdev=eth9",
            env=dict(dom0, XEN_NETWORK_BRIDGE_APPLY="0"))
    assert "plan only (XEN_NETWORK_BRIDGE_APPLY is 0)" in p.stdout, p.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="as root the script would really act")
def test_apply_needs_root():
    p = run("start", "bridge=xbrtest0", "netdev=nosuchdev9",
            env={"XEN_NETWORK_BRIDGE_APPLY": "1"})
    assert p.returncode == 0
    assert "plan only" in p.stdout


@pytest.mark.parametrize("args", [(), ("bogus",), ("start", "bridge=bad name")])
def test_usage_errors(args):
    p = run(*args)
    assert p.returncode == 1
    assert "Usage: network-bridge {start|stop|status}" in p.stderr or "invalid" in p.stderr


def test_xend_runs_it_as_network_script(tmp_path):
    """What the Node does at start: <scripts>/<word1> start <args>, failure only logged."""
    from xend.node import Node
    from xend.options import Options

    opts = Options.from_dict({"network-script": "network-bridge bridge=xbrtest0",
                              "xend-scripts-path": str(SCRIPT.parent),
                              "logfile": str(tmp_path / "xend.log")})
    node = Node(opts, str(tmp_path / "xend-config.sxp"))
    node.run_network_script()                    # plan only; must not raise
