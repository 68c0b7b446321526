"""The xm command line: errors and usage without a daemon, `create -n`, and every command's
XML-RPC calls and output against a small scripted XML-RPC server on a unix socket (a stand-in
that answers like xend, including the top-level string quirk; not a daemon)."""
from __future__ import annotations

import io
import os
import socketserver
import subprocess
import sys
import threading
import xmlrpc.client
from pathlib import Path
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

import pytest
from hypothesis import given, strategies as st

from xend import sxp
from xend.xm import client, formats, main as xm_main, progress

REPO = Path(__file__).resolve().parent.parent
CONNECT_ERROR = "Error: Unable to connect to xend: No such file or directory. Is xend running?\n"


def run_xm(*args, env=None, input=None, timeout=60, cwd=None):
    full_env = dict(os.environ)
    full_env.pop("XEND_CONFIG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "xend.xm.main", *args], cwd=cwd or REPO,
                          env=full_env, capture_output=True, text=True, input=input,
                          timeout=timeout)


# -- without any server ------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_list_without_daemon_reports_connection_error(tmp_path):
    r = run_xm("list", env={"XM_SERVER": f"httpu://{tmp_path}/missing.sock"})
    assert (r.returncode, r.stdout, r.stderr) == (1, "", CONNECT_ERROR)


@pytest.mark.timeout(60)
def test_socket_comes_from_the_xend_config(tmp_path):
    conf = tmp_path / "xend-config.sxp"
    conf.write_text(f"(xend-unix-xmlrpc-path {tmp_path}/xmlrpc.sock)\n")
    r = run_xm("list", env={"XEND_CONFIG": str(conf), "XM_SERVER": ""})
    assert (r.returncode, r.stderr) == (1, CONNECT_ERROR)
    r = run_xm("-c", str(conf), "info", env={"XM_SERVER": f"httpu://{tmp_path}/other.sock"})
    assert (r.returncode, r.stderr) == (1, CONNECT_ERROR)


@pytest.mark.timeout(60)
def test_usage_and_unknown_command():
    r = run_xm()
    assert r.returncode == 1 and r.stdout.startswith("Usage: xm <subcommand> [args]\n")
    assert " list                 List information about all/some domains.\n" in r.stdout
    for args in (("help",), ("-h",), ("--help",)):
        r = run_xm(*args)
        assert r.returncode == 0 and "xm full list of subcommands:" in r.stdout
        assert all(f" {name:<20} " in r.stdout for name in xm_main.COMMANDS)
    for args in (("frobnicate",), ("help", "frobnicate")):
        r = run_xm(*args)
        assert r.returncode == 1 and r.stderr == "Error: Subcommand frobnicate not found!\n"
        assert r.stdout.startswith("Usage: xm <subcommand> [args]")
    r = run_xm("help", "li")
    assert r.returncode == 0 and r.stdout.startswith("Usage: xm list [options] [Domain, ...]\n")
    r = run_xm("list", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: xm list [options] [Domain, ...]\n")
    assert "  -l, --long" in r.stdout


@pytest.mark.timeout(60)
def test_create_dry_run_prints_the_sxp_and_needs_no_daemon(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    cfg = tmp_path / "g1.cfg"
    cfg.write_text(f'kernel = "{kernel}"\nmemory = 256\ndisk = ["phy:/dev/vg/g1,xvda,w"]\n'
                   "vif = ['']\n")
    r = run_xm("create", "-n", str(cfg), "vcpus=2",
               env={"XM_SERVER": f"httpu://{tmp_path}/missing.sock"})
    assert r.returncode == 0, r.stderr
    expected = ["vm", ["name", "g1.cfg"], ["memory", 256], ["on_xend_start", "ignore"],
                ["on_xend_stop", "ignore"], ["vcpus", 2], ["oos", 1],
                ["image", ["linux", ["kernel", str(kernel)], ["videoram", 4], ["tsc_mode", 0],
                           ["nomigrate", 0]]],
                ["s3_integrity", 1],
                ["device", ["vbd", ["uname", "phy:/dev/vg/g1"], ["dev", "xvda"], ["mode", "w"]]],
                ["device", ["vif"]]]
    using = f'Using config file "{cfg}".\n'
    assert r.stdout == using + sxp.prettyprint(expected)
    assert r.stdout.startswith(using + "(vm\n    (name g1.cfg)\n    (memory 256)\n")
    assert r.stdout.endswith("\n    (device (vif))\n)\n")
    # a bare name found in the current directory is shown as ./NAME
    r = run_xm("create", "-n", "g1.cfg", env={"XM_SERVER": f"httpu://{tmp_path}/missing.sock"},
               cwd=tmp_path)
    assert r.stdout.startswith('Using config file "./g1.cfg".\n(vm\n'), r.stderr
    assert run_xm("create", "-n", "-q", str(cfg)).stdout.startswith("(vm\n")
    r = run_xm("create", "--dryrun", str(tmp_path / "nope.cfg"))
    assert (r.returncode, r.stderr) == (1, f"Error: Unable to open config file: {tmp_path}/nope.cfg\n")
    bad = tmp_path / "bad.cfg"
    bad.write_text("memory = 256\ndisk = [\n")
    r = run_xm("create", "-n", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith(f"Error: Errors were found at line 2 while processing {bad}:\n")


# -- a scripted server -------------------------------------------------------------------------
class _Handler(SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False
    rpc_paths = ()


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    logRequests = False

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None):
        return self.dispatcher._marshaled_dispatch(data, dispatch_method, path)


class FakeXend:
    """Answers methods from ``self.replies`` (value, or function of the arguments); records calls."""

    def __init__(self, path: Path):
        self.path = path
        self.calls = []
        self.replies = {}
        self.dispatcher = SimpleXMLRPCDispatcher(allow_none=True)
        self.dispatcher._dispatch = self._dispatch
        self.server = _UnixServer(str(path), _Handler)
        self.server.dispatcher = self.dispatcher
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def _dispatch(self, method, params):
        self.calls.append((method, *params))
        if method not in self.replies:
            raise xmlrpc.client.Fault(1, f'method "{method}" is not supported')
        reply = self.replies[method]
        result = reply(*params) if callable(reply) else reply
        if isinstance(result, str):  # the original server's top-level string quirk
            result = repr(result)[1:-1]
        return result

    def method_calls(self, *names):
        return [c for c in self.calls if not names or c[0] in names]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    server = FakeXend(tmp_path / "xmlrpc.sock")
    monkeypatch.setenv("XM_SERVER", f"httpu://{server.path}")
    monkeypatch.delenv("XEND_CONFIG", raising=False)
    yield server
    server.close()


def xm(capsys, *args):
    rc = xm_main.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def rec(name, domid=None, memory=256, state="-b----", **more):
    r = ["domain"]
    if domid is not None:
        r.append(["domid", domid])
    r += [["name", name], ["memory", memory], ["vcpus", 1], ["online_vcpus", 1]]
    if domid is not None:
        r.append(["state", state])
    r += [["cpu_time", "12.34"]] + [[k, v] for k, v in more.items()]
    return r


DOMS = [rec("Domain-0", 0, 1024, "r-----"), rec("guest1", 3, 512), rec("managed1")]


@pytest.mark.timeout(30)
def test_list_calls_and_output(fake, capsys):
    fake.replies["xend.domains_with_state"] = DOMS
    fake.replies["xend.domain"] = lambda dom, full=False: DOMS[1]
    assert xm(capsys, "list") == (0, formats.list_brief(DOMS), "")
    # the brief listing first; a server without it says "not supported": the original call
    assert fake.method_calls() == [("xend.domains_brief", "all"),
                                   ("xend.domains_with_state", True, "all", False)]
    fake.replies["xend.domains_brief"] = DOMS
    assert xm(capsys, "list") == (0, formats.list_brief(DOMS), "")
    assert fake.calls[-1] == ("xend.domains_brief", "all")
    del fake.replies["xend.domains_brief"]
    rc, out, _ = xm(capsys, "list", "--state=running")
    assert fake.calls[-1] == ("xend.domains_with_state", True, "running", False)
    rc, out, _ = xm(capsys, "list", "-l", "guest1")
    assert (rc, out) == (0, sxp.prettyprint(DOMS[1]))
    assert fake.calls[-1] == ("xend.domain", "guest1", True)
    rc, out, err = xm(capsys, "list", "--state=running", "guest1")
    assert rc == 1 and err == ("Error: You may specify either a state or a particular VM, "
                               "but not both\n")
    assert out.startswith("Usage: xm list")


@pytest.mark.timeout(30)
def test_faults_map_to_messages_and_exit_codes(fake, capsys):
    def pause(dom, *rest):
        if dom == "nosuch":
            raise xmlrpc.client.Fault(3, dom)
        raise xmlrpc.client.Fault(2, "Cannot pause privileged domain 0")

    fake.replies["xend.domain.pause"] = pause
    assert xm(capsys, "pause", "nosuch") == (3, "", "Error: Domain 'nosuch' does not exist.\n")
    rc, out, err = xm(capsys, "pause", "0")
    assert (rc, err) == (1, "Error: Cannot pause privileged domain 0\n")
    assert out == xm_main.command_help("pause")
    rc, out, err = xm(capsys, "pause")
    assert rc == 1 and err.startswith("Error: the following arguments are required")


@pytest.mark.timeout(30)
def test_string_results_are_unquoted(fake, capsys):
    log = "2013-01-01 [2222] INFO (SrvDaemon:332) Xend Daemon started\nit's a \"log\"\t\\ é\n"
    fake.replies["xend.node.log"] = log
    fake.replies["xend.node.dmesg.info"] = "(XEN) Xen version 4.4\n"
    fake.replies["xend.node.dmesg.clear"] = "(XEN) cleared\n"
    assert xm(capsys, "log") == (0, log + "\n", "")
    assert xm(capsys, "dmesg") == (0, "(XEN) Xen version 4.4\n", "")
    assert xm(capsys, "dmesg", "-c") == (0, "(XEN) cleared\n", "")


@pytest.mark.timeout(30)
def test_info(fake, capsys):
    pairs = [["system", "Linux"], ["host", "h"], ["nr_cpus", 4], ["cc_compile_domain"],
             ["xend_hypervisor_backend", "simulated"]]
    fake.replies["xend.node.info"] = pairs
    assert xm(capsys, "info") == (0, formats.info(pairs), "")
    assert fake.calls[-1] == ("xend.node.info", 0)
    xm(capsys, "info", "-n")
    assert fake.calls[-1] == ("xend.node.info", 1)


@pytest.mark.timeout(30)
def test_global_config_flag_reaches_the_configured_socket(fake, capsys, tmp_path, monkeypatch):
    conf = tmp_path / "xend-config.sxp"
    conf.write_text(f"(xend-unix-xmlrpc-path {fake.path})\n")
    monkeypatch.setenv("XM_SERVER", "httpu:///nonexistent/socket")
    fake.replies["xend.node.log"] = "hello"
    assert xm(capsys, "-c", str(conf), "log") == (0, "hello\n", "")
    assert xm(capsys, "--config", str(conf), "log") == (0, "hello\n", "")
    monkeypatch.delenv("XM_SERVER")
    monkeypatch.setenv("XEND_CONFIG", str(conf))
    assert xm(capsys, "log") == (0, "hello\n", "")
    rc, out, err = xm(capsys, "info", "-c")
    assert rc == 0 and ("%-38s: %s\n" % ("xend-unix-xmlrpc-path", fake.path)) in out


@pytest.mark.timeout(30)
def test_create_calls_in_order(fake, capsys, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    cfg = tmp_path / "g1.cfg"
    cfg.write_text(f'name = "g1"\nkernel = "{kernel}"\n')
    fake.replies.update({"xend.domain.create": lambda config: ["domain", ["domid", 5],
                                                               ["name", "g1"]],
                         "xend.domain.waitForDevices": None, "xend.domain.unpause": None,
                         "xend.domain.destroy": None})
    using = f'Using config file "{cfg}".\n'
    assert xm(capsys, "create", str(cfg)) == (0, using + "Started domain g1 (id=5)\n", "")
    assert [c[0] for c in fake.calls] == ["xend.domain.create", "xend.domain.waitForDevices",
                                          "xend.domain.unpause"]
    assert fake.calls[0][1] == xmconfig_sxp(cfg)
    assert fake.calls[1:] == [("xend.domain.waitForDevices", "g1"), ("xend.domain.unpause", "g1")]

    fake.calls.clear()
    assert xm(capsys, "create", "-p", "-q", str(cfg)) == (0, "", "")
    assert [c[0] for c in fake.calls] == ["xend.domain.create", "xend.domain.waitForDevices"]

    fake.calls.clear()

    def wait(dom):
        raise xmlrpc.client.Fault(2, "Device 0 (vif) could not be connected. Hotplug scripts "
                                     "not working.")

    fake.replies["xend.domain.waitForDevices"] = wait
    rc, out, err = xm(capsys, "create", str(cfg))
    # a failing create: the error, then the command's usage
    assert (rc, out) == (1, using + xm_main.command_help("create"))
    assert err == "Error: Device 0 (vif) could not be connected. Hotplug scripts not working.\n"
    assert fake.calls[-1] == ("xend.domain.destroy", "g1")

    fake.replies["xend.domain.create"] = lambda config: (_ for _ in ()).throw(
        xmlrpc.client.Fault(2, "VM name 'g1' already exists as domain 5"))
    assert xm(capsys, "create", str(cfg)) == (
        1, using + xm_main.command_help("create"),
        "Error: VM name 'g1' already exists as domain 5\n")
    # a failing new: the error only
    fake.replies["xend.domain.new"] = lambda config: (_ for _ in ()).throw(
        xmlrpc.client.Fault(2, "VM name 'g1' already exists as domain 5"))
    assert xm(capsys, "new", "-q", str(cfg)) == (
        1, "", "Error: VM name 'g1' already exists as domain 5\n")


def xmconfig_sxp(cfg):
    from xend.xm import xmconfig

    return xmconfig.load(str(cfg))[1]


@pytest.mark.timeout(30)
def test_new_start_delete_suspend_resume(fake, capsys, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    cfg = tmp_path / "m1.cfg"
    cfg.write_text(f'kernel = "{kernel}"\n')
    for m in ("new", "start", "delete", "suspend", "resume"):
        fake.replies[f"xend.domain.{m}"] = None
    started = {"yes": True}
    fake.replies["xend.domain"] = lambda dom, full=False: (
        rec(dom, 7) if started["yes"] else rec(dom))
    assert xm(capsys, "new", str(cfg)) == (0, f'Using config file "{cfg}".\n', "")
    assert fake.calls[-1] == ("xend.domain.new", xmconfig_sxp(cfg))
    assert xm(capsys, "start", "-p", "m1.cfg") == (0, "", "")
    assert fake.method_calls("xend.domain.start") == [("xend.domain.start", "m1.cfg", True)]
    started["yes"] = False
    rc, out, err = xm(capsys, "start", "m1.cfg")
    assert (rc, err) == (1, "Error: Domain 'm1.cfg' is not started\n")
    assert xm(capsys, "delete", "m1.cfg")[0] == 0
    assert xm(capsys, "suspend", "m1.cfg")[0] == 0
    assert xm(capsys, "resume", "-p", "m1.cfg")[0] == 0
    assert fake.calls[-3:] == [("xend.domain.delete", "m1.cfg"), ("xend.domain.suspend", "m1.cfg"),
                               ("xend.domain.resume", "m1.cfg", True)]


@pytest.mark.timeout(30)
def test_simple_domain_commands(fake, capsys):
    for m in ("destroy", "pause", "unpause", "setpauseflag", "setName", "send_sysrq",
              "setMemoryTarget", "maxmem_set", "setVCpuCount", "pincpu", "dump"):
        fake.replies[f"xend.domain.{m}"] = 0
    fake.replies["xend.domain"] = lambda dom, full=False: rec("guest1", 3)
    expectations = [
        (("destroy", "guest1"), [("xend.domain.destroy", "guest1")]),
        (("pause", "guest1"), [("xend.domain.pause", "guest1"),
                               ("xend.domain.setpauseflag", "guest1", True)]),
        (("unpause", "3"), [("xend.domain.unpause", "3"),
                            ("xend.domain.setpauseflag", "3", False)]),
        (("rename", "guest1", "guest2"), [("xend.domain.setName", "guest1", "guest2")]),
        (("sysrq", "guest1", "s"), [("xend.domain.send_sysrq", "guest1", "s")]),
        (("mem-set", "guest1", "1g"), [("xend.domain.setMemoryTarget", "guest1", 1024)]),
        (("mem-set", "guest1", "262144k"), [("xend.domain.setMemoryTarget", "guest1", 256)]),
        (("mem-set", "guest1", "300"), [("xend.domain.setMemoryTarget", "guest1", 300)]),
        (("mem-max", "guest1", "2G"), [("xend.domain.maxmem_set", "guest1", 2048)]),
        (("vcpu-set", "guest1", "2"), [("xend.domain.setVCpuCount", "guest1", 2)]),
        (("vcpu-pin", "guest1", "0", "0-3,^1"), [("xend.domain.pincpu", "guest1", 0, "0,2,3")]),
        (("vcpu-pin", "guest1", "all", "all"),
         [("xend.domain.pincpu", "guest1", "all", ",".join(str(i) for i in range(64)))]),
        (("dump-core", "-L", "guest1"), [("xend.domain.dump", "guest1", None, True, False, False)]),
    ]
    for args, calls in expectations:
        fake.calls.clear()
        rc, out, err = xm(capsys, *args)
        assert (rc, err) == (0, ""), args
        assert fake.calls == calls, args
    assert xm(capsys, "domid", "guest1") == (0, "3\n", "")
    assert xm(capsys, "domname", "3") == (0, "guest1\n", "")
    # an unknown unit is a unit of bytes, as the original took it (xend refuses 0 MiB)
    fake.calls.clear()
    rc, out, err = xm(capsys, "mem-set", "guest1", "12q")
    assert (rc, out, err) == (0, "ignoring unknown unit\n", "")
    assert fake.calls == [("xend.domain.setMemoryTarget", "guest1", 0)]
    rc, out, err = xm(capsys, "mem-set", "guest1", "2^10")
    assert (rc, err) == (1, "Error: Invalid argument.\n") and out.startswith("Usage: xm mem-set")
    rc, out, err = xm(capsys, "dump-core", "-C", "-R", "guest1")
    assert (rc, err) == (1, "Error: You may not specify more than one '-CR' option\n")


@pytest.mark.timeout(30)
def test_save_restore_migrate(fake, capsys, tmp_path, monkeypatch):
    for m in ("save", "restore", "migrate"):
        fake.replies[f"xend.domain.{m}"] = None
    monkeypatch.chdir(tmp_path)
    assert xm(capsys, "save", "guest1", "g.save") == (0, "", "")
    assert fake.calls[-1] == ("xend.domain.save", "guest1", str(tmp_path / "g.save"), False)
    xm(capsys, "save", "-c", "guest1", "g.save")
    assert fake.calls[-1] == ("xend.domain.save", "guest1", str(tmp_path / "g.save"), True)
    rc, out, err = xm(capsys, "save", "guest1", "/nonexistent/dir/g.save")
    assert (rc, out, err) == (1, "", "Error: xm save: Unable to create file "
                                     "/nonexistent/dir/g.save: No such file or directory\n")
    (tmp_path / "g.save").write_bytes(b"LinuxGuestRecord")
    assert xm(capsys, "restore", "-p", "g.save") == (0, "", "")
    assert fake.calls[-1] == ("xend.domain.restore", str(tmp_path / "g.save"), True)
    rc, out, err = xm(capsys, "restore", "missing.save")
    assert (rc, err) == (1, f"Error: xm restore: Unable to read file {tmp_path}/missing.save\n")
    xm(capsys, "migrate", "guest1", "host2")
    assert fake.calls[-1] == ("xend.domain.migrate", "guest1", "host2", False, 0, -1, None, False)
    xm(capsys, "migrate", "-l", "-p", "8002", "-n", "1", "-s", "-c", "guest1", "host2")
    assert fake.calls[-1] == ("xend.domain.migrate", "guest1", "host2", True, 8002, 1, True, True)
    assert not fake.method_calls("xend.node.progress")  # stdout is not a terminal


@pytest.mark.timeout(30)
def test_shutdown_and_reboot_wait(fake, capsys, monkeypatch):
    alive = ["Domain-0", "guest1", "guest2"]
    counts = {"guest1": "0", "guest2": "0"}

    def shutdown(dom, reason):
        if reason == "reboot":
            counts[dom] = str(int(counts[dom]) + 1)
        else:
            alive.remove(dom)

    fake.replies.update({"xend.domain.shutdown": shutdown,
                         "xend.domain.getRestartCount": lambda dom: counts[dom],
                         "xend.domains": lambda detail: list(alive),
                         "xend.domain": lambda dom, full=False: rec(
                             "Domain-0" if str(dom) == "0" else dom, 0 if str(dom) == "0" else 3)})
    monkeypatch.setattr("time.sleep", lambda s: None)
    assert xm(capsys, "shutdown", "-w", "guest1") == (
        0, "Domain guest1 terminated\nAll domains terminated\n", "")
    assert ("xend.domain.shutdown", "guest1", "poweroff") in fake.calls
    assert xm(capsys, "reboot", "-w", "-a") == (
        0, "Domain guest2 rebooted\nAll domains rebooted\n", "")
    assert ("xend.domain.shutdown", "guest2", "reboot") in fake.calls
    xm(capsys, "shutdown", "-H", "guest2")
    assert fake.calls[-1] == ("xend.domain.shutdown", "guest2", "halt")
    rc, out, err = xm(capsys, "shutdown", "-H", "-R", "guest2")
    assert (rc, err) == (1, "Error: Can't specify halt and reboot\n")
    rc, out, err = xm(capsys, "shutdown")
    assert (rc, err) == (1, "Error: No domain parameter given\n")


@pytest.mark.timeout(30)
def test_uptime_vcpu_list_sched_credit(fake, capsys):
    fake.replies["xend.domains_with_state"] = lambda detail, state, full: (
        DOMS if detail else ["Domain-0", "guest1"])
    fake.replies["xend.node.info"] = [["system", "Linux"], ["nr_cpus", 2],
                                      ["xen_scheduler", "credit"]]
    vinfo = ["domain", ["domid", 3], ["name", "guest1"], ["vcpu_count", 1],
             ["vcpu", ["number", 0], ["online", 1], ["blocked", 1], ["running", 0],
              ["cpu_time", "1.5"], ["cpu", 1], ["cpumap", [0, 1]]]]
    fake.replies["xend.domain.getVCPUInfo"] = lambda dom: vinfo
    fake.replies["xend.domain.sched_credit_get"] = lambda dom: {"weight": 256, "cap": 0}
    fake.replies["xend.domain.sched_credit_set"] = 0
    rc, out, _ = xm(capsys, "uptime")
    assert rc == 0 and out.splitlines()[0] == formats.UPTIME_HEADER
    rc, out, _ = xm(capsys, "vcpu-list")
    assert rc == 0 and out == formats.vcpu_list([vinfo, vinfo], 2)
    assert fake.method_calls("xend.domain.getVCPUInfo") == [
        ("xend.domain.getVCPUInfo", "Domain-0"), ("xend.domain.getVCPUInfo", "guest1")]
    rc, out, _ = xm(capsys, "sched-credit")
    assert rc == 0 and out.splitlines() == [
        formats.CREDIT_HEADER,
        "%-32s %5s %6d %4d" % ("Domain-0", "0", 256, 0),
        "%-32s %5s %6d %4d" % ("guest1", "3", 256, 0),
        "%-32s %5s %6d %4d" % ("managed1", "", 256, 0)]
    rc, out, _ = xm(capsys, "sched-credit", "-d", "guest1")
    assert len(out.splitlines()) == 2
    assert xm(capsys, "sched-credit", "-d", "guest1", "-w", "512") == (0, "", "")
    assert fake.calls[-1] == ("xend.domain.sched_credit_set", "guest1", 512, None)
    fake.replies["xend.node.info"] = [["system", "Linux"], ["xen_scheduler", "credit2"]]
    assert xm(capsys, "sched-credit")[2] == "Error: Xen is running with the credit2 scheduler\n"


@pytest.mark.timeout(30)
def test_console_prints_buffered_output_and_leaves_at_end_of_stdin(fake, capsys, monkeypatch):
    buffered = [b"Linux version 3.2.0\r\n", b"login: "]

    def console(dom, offset):
        i = int(offset)
        if i < len(buffered):
            return [str(i + 1), xmlrpc.client.Binary(buffered[i])]
        return [offset, xmlrpc.client.Binary(b"")]

    fake.replies["xend.domain.console"] = console
    fake.replies["xend.domain"] = lambda dom, full=False: rec(dom, 4)
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)
        rc, out, err = xm(capsys, "console", "guest1")
    assert (rc, out, err) == (0, "Linux version 3.2.0\r\nlogin: ", "")
    assert fake.method_calls("xend.domain.console")[0] == ("xend.domain.console", "guest1", "0")
    fake.replies["xend.domain"] = lambda dom, full=False: rec(dom)
    rc, out, err = xm(capsys, "console", "guest1")
    assert (rc, err) == (1, "Error: Domain 'guest1' is not started\n")


@pytest.mark.timeout(30)
def test_console_leaves_when_the_domain_is_gone(fake, capsys, monkeypatch):
    state = {"n": 0}

    def console(dom, offset):
        state["n"] += 1
        if state["n"] > 2:
            raise xmlrpc.client.Fault(3, dom)
        return [str(state["n"]), xmlrpc.client.Binary(b"x" if state["n"] == 1 else b"")]

    fake.replies["xend.domain.console"] = console
    fake.replies["xend.domain"] = lambda dom, full=False: rec(dom, 4)
    r, w = os.pipe()  # stdin that stays open: only the domain's end stops xm
    try:
        with os.fdopen(r) as stdin:
            monkeypatch.setattr(sys, "stdin", stdin)
            assert xm(capsys, "console", "guest1") == (0, "x", "")
    finally:
        os.close(w)


# -- pieces ------------------------------------------------------------------------------------
@given(st.text())
def test_string_quirk_round_trip(text):
    assert client.unquote_string_result(repr(text)[1:-1]) == text


def test_string_quirk_examples():
    assert client.unquote_string_result("a\\nb") == "a\nb"
    assert client.unquote_string_result("it's") == "it's"
    assert client.unquote_string_result("a' 'b") == "a' 'b"
    assert client.unquote_string_result('say \\\'hi\\\' "x"') == "say 'hi' \"x\""


_xml_text = st.text(st.characters(blacklist_categories=("Cs",)))
_xmlrpc_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 31, 2 ** 31 - 1)
    | st.floats(allow_nan=False) | _xml_text,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_xml_text, inner, max_size=4)),
    max_leaves=25)


@given(_xmlrpc_values)
def test_fast_response_decoder_agrees_with_xmlrpc_client(value):
    body = xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()
    try:
        expected = xmlrpc.client.loads(body)[0]
    except Exception:  # text XML cannot carry (control characters): the parser refuses it
        return
    fast = client.fast_loads(body)
    assert fast is None or fast == expected


def test_fast_response_decoder_takes_the_common_path_and_declines_the_rest():
    record = ["domain", ["domid", 3], ["name", "a&b <c> \"d\" 'e'"], ["cpu_time", "1.5"],
              ["x", 2.5], ["y", None], ["z", True], ["s", {"weight": 256}]]
    body = xmlrpc.client.dumps(([record, record],), methodresponse=True, allow_none=True)
    assert client.fast_loads(body.encode()) == ([record, record],)
    crlf = body.replace("<string>1.5</string>", "<string>a\r\nb\rc&#13;</string>").encode()
    assert client.fast_loads(crlf) == xmlrpc.client.loads(crlf)[0]
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(3, "x"), methodresponse=True).encode()
    assert client.fast_loads(fault) is None
    binary = xmlrpc.client.dumps((["1", xmlrpc.client.Binary(b"\0x")],), methodresponse=True)
    assert client.fast_loads(binary.encode()) is None
    assert client.fast_loads(body.replace("&amp;", "&nbsp;").encode()) is None
    assert client.fast_loads(b"<methodResponse><params><param><value><string>x</string>"
                             b"</value></param></params>") is None  # truncated


def test_uri_resolution(tmp_path):
    conf = tmp_path / "x.sxp"
    conf.write_text("(xend-unix-xmlrpc-path /run/x.sock)\n")
    assert client.resolve_uri(None, {}) == "httpu:///var/run/xend/xmlrpc.sock"
    assert client.resolve_uri(None, {"XM_SERVER": "http://h:8006"}) == "http://h:8006"
    assert client.resolve_uri(None, {"XEND_CONFIG": str(conf)}) == "httpu:///run/x.sock"
    assert client.resolve_uri(str(conf), {"XM_SERVER": "http://h:8006"}) == "httpu:///run/x.sock"
    with pytest.raises(client.ClientError, match="Unsupported server URI"):
        client.make_proxy("ssh://host")


def test_connection_error_messages(monkeypatch):
    ctx = type("Ctx", (), {"out": io.StringIO(), "err": io.StringIO()})()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert xm_main._rpc_error(ctx, "list", PermissionError(13, "Permission denied")) == 1
    assert ctx.err.getvalue() == "Error: Most commands need root access. Please try again as root.\n"
    ctx.err = io.StringIO()
    assert xm_main._rpc_error(ctx, "list", ConnectionRefusedError(111, "Connection refused")) == 1
    assert ctx.err.getvalue() == "Error: Unable to connect to xend: Connection refused. " \
                                 "Is xend running?\n"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    ctx.err = io.StringIO()
    xm_main._rpc_error(ctx, "list", PermissionError(13, "Permission denied"))
    assert ctx.err.getvalue() == "Error: Unable to connect to xend: Permission denied. " \
                                 "Is xend running?\n"


def test_progress_line_and_reporter():
    entry = {"operation": "save", "domain": "g1", "uuid": "u", "done": str(300 * 2 ** 20),
             "total": str(600 * 2 ** 20)}
    assert progress.progress_line(entry, 3.0) == "Saving g1:  50% (300.0/600.0 MB, 100.0 MB/s)"
    assert progress.pick([{"operation": "migrate", "domain": "g1"}, entry], "save", "g1") is entry
    assert progress.pick([entry], "save", "u") is entry
    assert progress.pick([entry, dict(entry, domain="g2")], "save", "g3") is None
    assert progress.pick([entry], "restore", None) is None

    out = io.StringIO()
    polled = threading.Event()

    def poll():
        polled.set()
        return [entry]

    reporter = progress.ProgressReporter(poll, "save", "g1", out, interval=0.01).start()
    assert polled.wait(5)
    reporter.finish()
    text = out.getvalue()
    assert text.startswith("\rSaving g1:  50% (300.0/600.0 MB, ") and text.endswith("\n")
