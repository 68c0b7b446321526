"""The Xen-API through the PyPI ``XenAPI`` client, against a real xend (simulated hypervisor):
logins on the unix socket and a TCP port, hosts and VMs, VM records with their VBDs and
VIFs, the lifecycle, events, tasks, errors in the documented shapes, and one state shared
with the legacy interface (``xm``)."""
from __future__ import annotations

import subprocess
import time
import xmlrpc.client

import pytest
import XenAPI

from tests.xenapi_helpers import XenAPIHost, vm_record

MIB = 1 << 20


@pytest.fixture
def host(xenapi_host):
    return xenapi_host


def xm_row(h: XenAPIHost, name: str) -> list:
    r = h.xm("list", name)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[1].split()


def wait_events(x, want, timeout: float = 20) -> list:
    """Events from event.next until ``want(events)`` holds (all of them, in order)."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while not want(seen):
        assert time.monotonic() < deadline, seen
        seen += x.event.next()
    return seen


def vm_events(events, ref):
    return [(e["operation"], e["snapshot"].get("power_state")) for e in events
            if e["class"] == "VM" and e["ref"] == ref]


# -- logging in, hosts, VMs ----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_login_on_unix_socket_and_tcp_port_lists_hosts_and_vms(host):
    for s in (host.session(), host.tcp_session()):
        x = s.xenapi
        [h] = x.host.get_all()
        rec = x.host.get_record(h)
        assert rec["API_version_major"] == "1" and rec["enabled"] is True
        assert rec["cpu_configuration"]["nr_cpus"] == "4"
        assert x.session.get_this_host(s.handle) == h
        assert x.pool.get_master(x.pool.get_all()[0]) == h
        assert s.API_version == "1.0"
        metrics = x.host_metrics.get_record(rec["metrics"])
        assert int(metrics["memory_total"]) == 4096 * MIB
        assert len(rec["host_CPUs"]) == 4
        assert x.host_cpu.get_record(rec["host_CPUs"][0])["host"] == h
        vms = x.VM.get_all_records()
        [dom0] = [r for r in vms.values() if r["domid"] == "0"]
        assert dom0["name_label"] == "Domain-0" and dom0["is_control_domain"] is True
        assert dom0["uuid"] == "00000000-0000-0000-0000-000000000000"
        assert dom0["power_state"] == "Running" and dom0["resident_on"] == h
        x.session.logout()


@pytest.mark.timeout(60)
def test_xm_created_vm_in_get_all_records_with_its_vbds_and_vifs(host):
    data = host.root / "g1-data.img"           # xm create refuses a file: disk not there
    data.write_bytes(b"\0" * 512)
    cfg = host.vm_config("g1", memory=96, extra=(
        f'vcpus = 2\ndisk = ["phy:/dev/vg/g1,xvda,w", "file:{data},xvdb,r"]\n'
        'vif = ["mac=00:16:3e:11:22:33,bridge=xenbr7"]\n'))
    r = host.xm("create", str(cfg))
    assert r.returncode == 0, r.stderr
    legacy = host.proxy().xend.domain("g1", True)
    uuid = next(v[1] for v in legacy[1:] if v[0] == "uuid")
    x = host.session().xenapi
    recs = x.VM.get_all_records()
    assert uuid in recs
    vm = recs[uuid]
    assert vm["name_label"] == "g1" and vm["power_state"] == "Running"
    assert int(vm["memory_dynamic_max"]) == 96 * MIB == int(vm["memory_static_max"])
    assert vm["VCPUs_max"] == "2" and vm["domid"] == xm_row(host, "g1")[1]
    assert x.VM.get_by_name_label("g1") == [uuid] and x.VM.get_by_uuid(uuid) == uuid
    vbds = [x.VBD.get_record(ref) for ref in vm["VBDs"]]
    assert [(b["device"], b["mode"], b["VM"], b["currently_attached"]) for b in vbds] == [
        ("xvda", "RW", uuid, True), ("xvdb", "RO", uuid, True)]
    assert [x.VDI.get_record(b["VDI"])["location"] for b in vbds] == [
        "phy:/dev/vg/g1", f"file:{data}"]
    [vif] = [x.VIF.get_record(ref) for ref in vm["VIFs"]]
    assert vif["MAC"] == "00:16:3e:11:22:33" and vif["VM"] == uuid
    assert x.network.get_record(vif["network"])["name_label"] == "xenbr7"
    assert x.VM_metrics.get_record(vm["metrics"])["VCPUs_number"] == "2"
    assert [c["protocol"] for c in (x.console.get_record(c) for c in vm["consoles"])] == \
        ["vt100"]
    assert x.SR.get_record(x.VDI.get_record(vbds[0]["VDI"])["SR"])["VDIs"]


@pytest.mark.timeout(120)
def test_lifecycle_through_the_xenapi_with_events_and_the_same_vm_in_xm_list(host):
    s = host.session()
    x = s.xenapi
    x.event.register(["VM"])
    vm = x.VM.create(vm_record("api1", host.kernel, memory_mib=80, vcpus=2))
    assert vm_events(wait_events(x, lambda ev: vm_events(ev, vm)), vm) == [("add", "Halted")]
    sr = x.SR.get_all()[0]
    vdi = x.VDI.create({"SR": sr, "name_label": "api1 disk", "virtual_size": str(8 * MIB),
                        "type": "user", "sharable": False, "read_only": False,
                        "other_config": {}})
    assert x.VDI.get_record(vdi)["virtual_size"] == str(8 * MIB)
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "device": "xvda", "mode": "RW", "type": "Disk",
                        "bootable": True, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    net = x.network.create({"name_label": "xenbr3", "name_description": "", "other_config": {},
                            "default_gateway": "", "default_netmask": ""})
    vif = x.VIF.create({"VM": vm, "network": net, "MAC": "00:16:3e:00:00:09", "MTU": "1500",
                        "device": "0", "qos_algorithm_type": "", "qos_algorithm_params": {}})
    rec = x.VM.get_record(vm)
    assert rec["VBDs"] == [vbd] and rec["VIFs"] == [vif]
    assert x.VBD.get_VDI(vbd) == vdi and x.VIF.get_network(vif) == net

    # the VM is a managed domain of the registry: xm sees it, halted
    assert host.xm("list", "api1").stdout.splitlines()[1].split() == ["api1", "80", "2", "0.0"]
    x.VM.start(vm, False)
    assert x.VM.get_power_state(vm) == "Running"
    row = xm_row(host, "api1")
    assert row[:4] == ["api1", x.VM.get_domid(vm), "80", "2"] and row[4] in ("r-----", "-b----")
    legacy = host.proxy().xend.domain("api1")
    assert next(v[1] for v in legacy[1:] if v[0] == "uuid") == vm
    x.VM.pause(vm)
    assert xm_row(host, "api1")[4] == "--p---"
    x.VM.unpause(vm)
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VM.get_domid(vm) == "-1"
    x.VM.destroy(vm)
    assert "api1" not in host.xm("list").stdout
    states = [("add", "Halted"), ("mod", "Running"), ("mod", "Paused"), ("mod", "Running"),
              ("mod", "Halted"), ("del", None)]
    events = wait_events(x, lambda ev: ("del", None) in vm_events(ev, vm))
    got = vm_events(events, vm)
    # every power state the VM went through, in order (setters may add mods in between)
    it = iter(got)
    assert all(any(e == want for e in it) for want in states[1:]), got
    with pytest.raises(XenAPI.Failure) as f:
        x.VM.get_record(vm)
    assert f.value.details == ["HANDLE_INVALID", "VM", vm]
    x.event.unregister(["VM"])


@pytest.mark.timeout(90)
def test_async_calls_make_tasks_that_report_through_events(host):
    x = host.session().xenapi
    x.event.register(["task"])
    vm = x.VM.create(vm_record("task1", host.kernel))
    task = x.Async.VM.start(vm, True)
    events = wait_events(x, lambda ev: any(e["ref"] == task and e["operation"] == "mod"
                                           for e in ev))
    assert [e["operation"] for e in events if e["ref"] == task][:2] == ["add", "mod"]
    rec = x.task.get_record(task)
    assert rec["status"] == "success" and rec["progress"] == "100"
    assert rec["name_label"] == "Async.VM.start" and rec["error_info"] == []
    assert x.VM.get_power_state(vm) == "Paused"
    # a failing one: the error is in the task, in the documented shape
    bad = x.Async.VM.start(vm, False)
    wait_events(x, lambda ev: any(e["ref"] == bad and e["operation"] == "mod" for e in ev))
    assert x.task.get_status(bad) == "failure"
    assert x.task.get_error_info(bad) == ["VM_BAD_POWER_STATE", vm, "Halted", "Paused"]
    created = x.Async.VM.create(vm_record("task2", host.kernel))
    host.wait_for(lambda: x.task.get_status(created) != "pending")
    assert x.task.get_type(created) == "VM"
    assert x.VM.get_name_label(x.task.get_result(created)) == "task2"
    with pytest.raises(XenAPI.Failure) as f:
        x.task.cancel(task)
    assert f.value.details[0] == "OPERATION_NOT_ALLOWED"
    x.task.destroy(task)
    assert task not in x.task.get_all()


# -- setters and the other lifecycle calls ---------------------------------------------------------
@pytest.mark.timeout(120)
def test_setters_change_the_domain_that_xm_shows_and_survive_a_restart(host):
    x = host.session().xenapi
    vm = x.VM.create(vm_record("set1", host.kernel, memory_mib=64, vcpus=4))
    x.VM.set_name_label(vm, "set2")
    x.VM.set_memory_static_max(vm, str(256 * MIB))
    x.VM.set_memory_dynamic_max(vm, str(128 * MIB))
    x.VM.set_VCPUs_at_startup(vm, "2")
    x.VM.set_actions_after_crash(vm, "coredump_and_restart")
    x.VM.add_to_other_config(vm, "owner", "tests")
    x.VM.set_PV_args(vm, "console=hvc0")
    x.VM.set_auto_power_on(vm, True)
    rec = x.VM.get_record(vm)
    assert (rec["name_label"], rec["memory_static_max"], rec["memory_dynamic_max"],
            rec["VCPUs_at_startup"], rec["actions_after_crash"], rec["other_config"],
            rec["PV_args"], rec["auto_power_on"]) == \
        ("set2", str(256 * MIB), str(128 * MIB), "2", "coredump_and_restart",
         {"owner": "tests"}, "console=hvc0", True)
    legacy = host.proxy().xend.domain("set2")
    assert ["maxmem", 256] in legacy and ["memory", 128] in legacy
    assert ["on_crash", "coredump-restart"] in legacy and ["on_xend_start", "start"] in legacy
    with pytest.raises(XenAPI.Failure) as f:
        x.VM.set_memory_dynamic_max(vm, str(512 * MIB))
    assert f.value.details[0] == "VALUE_NOT_SUPPORTED"
    with pytest.raises(XenAPI.Failure) as f:
        x.VM.set_actions_after_shutdown(vm, "explode")
    assert f.value.details[:2] == ["VALUE_NOT_SUPPORTED", "actions_after_shutdown"]
    host.stop()
    host.start()            # auto_power_on: started by xend at start
    x = host.session().xenapi
    rec = x.VM.get_record(vm)
    assert rec["other_config"] == {"owner": "tests"} and rec["name_label"] == "set2"
    assert rec["power_state"] == "Running" and rec["VCPUs_at_startup"] == "2"
    assert x.VM_metrics.get_VCPUs_number(rec["metrics"]) == "2"


@pytest.mark.timeout(120)
def test_suspend_resume_hard_reboot_and_hard_shutdown(host):
    x = host.session().xenapi
    vm = x.VM.create(vm_record("life1", host.kernel))
    x.VM.start(vm, False)
    first = x.VM.get_domid(vm)
    x.VM.hard_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) != first
    x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    assert "life1" in host.xm("list").stdout
    x.VM.resume(vm, False)
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    with pytest.raises(XenAPI.Failure) as f:
        x.VM.hard_shutdown(vm)
    assert f.value.details == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_errors_have_the_documented_codes(host):
    raw = host.raw()
    login = getattr(raw, "session.login_with_password")("root", "")
    assert login["Status"] == "Success"
    ref = login["Value"]
    call = lambda name, *a: getattr(raw, name)(*a)  # noqa: E731
    assert call("VM.get_all", "nope") == {"Status": "Failure",
                                          "ErrorDescription": ["SESSION_INVALID", "nope"]}
    assert call("VM.no_such_call", ref)["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN",
                                                                  "VM.no_such_call"]
    assert call("VM.get_record", ref)["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "2", "1"]
    assert call("VM.get_record", ref, "00000000-1111-2222-3333-444444444444")[
        "ErrorDescription"] == ["HANDLE_INVALID", "VM", "00000000-1111-2222-3333-444444444444"]
    assert call("VBD.get_record", ref, "x")["ErrorDescription"] == ["HANDLE_INVALID", "VBD", "x"]
    assert call("event.next", ref)["ErrorDescription"] == ["SESSION_NOT_REGISTERED", ref]
    dom0 = "00000000-0000-0000-0000-000000000000"
    assert call("VM.start", ref, dom0, False)["ErrorDescription"] == [
        "VM_BAD_POWER_STATE", dom0, "Halted", "Running"]
    assert call("VM.pause", ref, dom0)["ErrorDescription"] == [
        "INTERNAL_ERROR", "Cannot pause privileged domain " + dom0]
    assert call("VM.set_VCPUs_at_startup", ref, dom0, [])["ErrorDescription"][0] == \
        "VALUE_NOT_SUPPORTED"
    # the legacy interface answers too on a listener without authentication
    assert call("xend.domains_with_state", False, "all", False) == ["Domain-0"]
    # ints travel as strings, a result is always a Status struct
    assert call("VM.get_VCPUs_max", ref, dom0) == {"Status": "Success", "Value": "4"}
    call("session.logout", ref)
    assert call("VM.get_all", ref)["ErrorDescription"] == ["SESSION_INVALID", ref]


@pytest.mark.timeout(60)
def test_a_session_is_valid_only_on_the_listener_that_made_it(host):
    unix = host.session()
    tcp = host.tcp_session()
    raw = host.raw()
    assert raw.VM.get_all(tcp.handle)["ErrorDescription"] == ["SESSION_INVALID", tcp.handle]
    assert raw.VM.get_all(unix.handle)["Status"] == "Success"


@pytest.mark.timeout(60)
def test_xenapi_socket_is_owner_only(host):
    import stat
    st = host.xenapi_path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(host.xenapi_path.parent.stat().st_mode) == 0o700


# -- TLS, hosts, reload ---------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_tls_listener_serves_https_only(tmp_path):
    from tests.tls_helpers import self_signed
    key, cert = self_signed(tmp_path, "localhost")
    h = XenAPIHost(tmp_path / "x", entries=None, tcp=False)
    h.extra = f"(xen-api-server ((unix) (127.0.0.1:{h.port} none '' {key} {cert})))"
    h.write_config(h.extra)
    h.start()
    try:
        s = h.tcp_session(https=True)
        assert s.xenapi.VM.get_all() == ["00000000-0000-0000-0000-000000000000"]
        plain = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{h.port}/")
        with pytest.raises((OSError, xmlrpc.client.ProtocolError,
                            xmlrpc.client.Fault, Exception)):
            getattr(plain, "session.login_with_password")("root", "")
        assert h.answering()
    finally:
        h.cleanup()


@pytest.mark.timeout(60)
def test_hosts_of_an_entry_refuse_other_peers(tmp_path):
    h = XenAPIHost(tmp_path / "x", entries=None, tcp=False)
    h.extra = f"(xen-api-server ((unix) ({h.port} pam '^192\\\\.0\\\\.2\\\\.7$')))"
    h.write_config(h.extra)
    h.start()
    try:
        with pytest.raises((OSError, xmlrpc.client.ProtocolError)):
            h.tcp_session()
        h.wait_for(lambda: "refused by the entry's hosts" in h.log_tail(20)
                   or "Rejected connection from 127.0.0.1" in h.log_tail(20))
        assert h.session().xenapi.VM.get_all()         # the unix socket still serves
    finally:
        h.cleanup()


@pytest.mark.timeout(90)
def test_reload_moves_a_tcp_listener_and_keeps_unix_sessions(host):
    s = host.session()
    from tests.daemon_helpers import free_port
    old, new = host.port, free_port()
    host.extra = f"(xen-api-server ((unix) ({new} none)))"
    host.write_config(host.extra)
    r = host.xend("reload")
    assert r.returncode == 0, r.stderr
    host.wait_for(lambda: _answers(new))
    assert not _answers(old)
    assert s.xenapi.VM.get_all()                     # same session, after the reload
    assert host.tcp_session(port=new).xenapi.host.get_all()


def _answers(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- migration through the relocation code ---------------------------------------------------------
@pytest.mark.timeout(180)
def test_vm_migrate_goes_through_the_relocation_server(tmp_path):
    from tests.relocation_helpers import Host

    dst = Host(tmp_path / "dst")
    src = XenAPIHost(tmp_path / "src")
    dst.start()
    src.start()
    try:
        r = src.xm("create", str(src.vm_config("mig1")))
        assert r.returncode == 0, r.stderr
        x = src.session().xenapi
        [vm] = x.VM.get_by_name_label("mig1")
        x.VM.migrate(vm, "127.0.0.1", True, {"port": str(dst.port)})
        assert "mig1" not in src.xm("list").stdout
        assert dst.guests().get("mig1") in ("r-----", "-b----")
        assert x.VM.get_all() == ["00000000-0000-0000-0000-000000000000"]
    finally:
        src.cleanup()
        dst.stop()
        dst.kill()


# -- who gets in ---------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_non_root_local_user_on_the_tcp_port_is_refused(tmp_path):
    """As root, a client that setuid()s to 65534 before connecting: refused on the plain and
    the TLS Xen-API ports (and logged with its uid); root is served. (The probe asks for
    ``xend.domains``, which a Xen-API listener without authentication answers.)"""
    import os
    import re

    from tests.test_reliability_security import tcp_probe
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as uid 65534")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3")
    from tests.tls_helpers import self_signed
    key, cert = self_signed(tmp_path, "localhost")
    h = XenAPIHost(tmp_path / "x", entries=None, tcp=False)
    from tests.daemon_helpers import free_port
    tls_port = free_port()
    h.extra = (f"(xen-api-server ((unix) (127.0.0.1:{h.port} none) "
               f"(127.0.0.1:{tls_port} none '' {key} {cert})))")
    h.write_config(h.extra)
    h.start()
    try:
        plain, tls = f"xmlrpc:127.0.0.1:{h.port}", f"xmlrpc:127.0.0.1:{tls_port}:tls"
        assert tcp_probe(plain, tls) == {plain: "SERVED", tls: "SERVED"}          # root
        assert tcp_probe(plain, tls, uid=65534) == {plain: "REFUSED", tls: "REFUSED"}
        log = h.paths["logfile"].read_text()
        assert re.search(r"XenAPIServer-tcp-127\.0\.0\.1:\d+: refused connection from "
                         r"127\.0\.0\.1:\d+: local user \S+ \(uid 65534\)", log), log[-2000:]
        assert re.search(r"XenAPIServer-tls-127\.0\.0\.1:\d+: refused connection", log)
        assert h.session().xenapi.VM.get_all()
    finally:
        h.cleanup()
