"""What xend does differently where the host's own daemons and libraries do the work (real
Xen), checked on the simulated hypervisor by switching the capability on: the console that
xenconsoled serves (xm becomes its client), the /vm/<uuid>/xend entries a rebuild must not
lose (libxl clears /vm/<uuid>), and the store entries handed to the build."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest

from xend.errors import XendError
from xend.xm import xenconsole
from xend.xm.xenconsole import SERVED_BY_XENCONSOLED

from tests.test_domains_support import started, vm
from tests.test_domains_support import env as shared_env

env = shared_env
pytestmark = pytest.mark.timeout(60)


def test_a_console_xenconsoled_serves_is_not_read_by_xend(env):
    started(env.reg, vm("g1"))
    env.hv.console_server = "xenconsoled"
    with pytest.raises(XendError, match=SERVED_BY_XENCONSOLED):
        env.reg.domain_console("g1", 0)


def test_xm_console_becomes_xenconsole(tmp_path):
    """attach() on a domain whose console xenconsoled serves replaces xm with `xenconsole
    DOMID` (found on PATH here; /usr/lib/xen-*/bin first on a Xen host)."""
    fake = tmp_path / "bin" / "xenconsole"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"XENCONSOLE $*\"\n")
    fake.chmod(0o755)
    program = textwrap.dedent(f"""
        import io, sys, xmlrpc.client
        from xend.xm.commands import Context
        from xend.xm.commands.console import attach
        class Domain:
            def __call__(self, dom):
                return ["domain", ["domid", 7], ["name", dom]]
            def console(self, dom, offset):
                raise xmlrpc.client.Fault(2, "The console of domain g1 (7) "
                                             "{SERVED_BY_XENCONSOLED}: attach with its client")
        class Server:
            class xend:
                domain = Domain()
        ctx = Context(lambda: "unused")
        ctx._server = Server()
        attach(ctx, "g1")
        print("not replaced")
        """)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    if any(glob.glob(pattern) for pattern in xenconsole.PLACES):
        pytest.skip("a real xenconsole is installed here (it would be found first)")
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.stdout.strip() == "XENCONSOLE 7", (r.stdout, r.stderr)


def test_entries_a_rebuild_clears_are_put_back(env):
    """A restart on real Xen: libxl removes /vm/<uuid> when it destroys the old domain and
    again when it creates the new one; xend's restart bookkeeping survives both."""
    started(env.reg, vm("g1"))
    dom = env.reg._get("g1")
    dom.write_vm("xend/restart_count", "3")
    dom.write_vm("xend/last_shutdown_reason", "reboot")
    kept = dom.xend_vm_entries()
    env.hv.store_rm(dom.vm_path())              # what libxl's destroy and create do
    assert dom.read_vm("xend/restart_count") is None
    dom.restore_vm_entries(kept)
    assert dom.read_vm("xend/restart_count") == "3"
    assert dom.read_vm("xend/last_shutdown_reason") == "reboot"
    # an entry written since is not overwritten with the old value
    dom.write_vm("xend/restart_count", "4")
    dom.restore_vm_entries(kept)
    assert dom.read_vm("xend/restart_count") == "4"
