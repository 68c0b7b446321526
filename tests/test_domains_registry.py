"""The registry's calls (reference §5.3) through its in-process API on a simulated host."""
from __future__ import annotations

import logging
import os
import time

import pytest

from xend import sxp
from xend.errors import VMBadState, VmError, XendConfigError, XendError, XendInvalidDomain
from xend.domains.registry import DomainRegistry

from tests.test_domains_support import (HOST_CPUS, Env, child, make_opts, names, started, vm,
                                        wait_for)
from tests.test_domains_support import env as shared_env

env = shared_env      # the fixture, shared by the domain test modules

pytestmark = pytest.mark.timeout(60)


# -- start, dom0, lookup -------------------------------------------------------------------------
def test_dom0_is_there(env):
    rec = env.reg.domain(0)
    assert child(rec, "name") == "Domain-0"
    assert child(rec, "uuid") == "00000000-0000-0000-0000-000000000000"
    assert child(rec, "domid") == 0
    assert child(rec, "status") == 2
    assert child(env.reg.domain("Domain-0"), "domid") == child(env.reg.domain("0"), "domid") == 0


def test_lookup_by_name_id_uuid(env):
    rec = env.reg.domain_create(vm("g1"))
    domid, uuid = child(rec, "domid"), child(rec, "uuid")
    for key in ("g1", domid, str(domid), uuid, uuid.upper(), uuid.replace("-", "")):
        assert child(env.reg.domain(key), "uuid") == uuid
    with pytest.raises(XendInvalidDomain) as e:
        env.reg.domain("nosuch")
    assert str(e.value) == "nosuch" and e.value.fault_code == 3
    with pytest.raises(XendInvalidDomain):
        env.reg.domain(999)


def test_name_lookup_wins_over_id(env):
    first = env.reg.domain_create(vm("g1"))
    # a domain *named* like another's id is found by name first (reference §8.1)
    env.reg.domain_create(vm(str(child(first, "domid") + 100)))
    byname = env.reg.domain(str(child(first, "domid") + 100))
    assert child(byname, "name") == str(child(first, "domid") + 100)


# -- create --------------------------------------------------------------------------------------
def test_create_leaves_domain_paused_and_returns_record(env):
    rec = env.reg.domain_create(vm("g1", memory=96, vcpus=2, args="quiet",
                                   device=["vif", ["mac", "00:16:3e:00:00:01"]]))
    assert rec[0] == "domain"
    assert child(rec, "state") == "--p---" and child(rec, "status") == 1
    assert child(rec, "memory") == 96 and child(rec, "vcpus") == 2
    # vif-script (default vif-bridge) fills in the script the vif's backend runs; the vif
    # gets the uuid, id and backend it keeps from then on
    dev = child(rec, "device")
    assert dev[:3] == ["vif", ["mac", "00:16:3e:00:00:01"], ["script", "vif-bridge"]]
    assert dev[4:] == [["devid", "0"], ["backend", "0"]] and dev[3][0] == "uuid"
    domid = child(rec, "domid")
    assert env.hv.domain_info(domid).paused
    assert env.hv.store_read(f"/local/domain/{domid}/name") == "g1"
    assert env.hv.store_read(f"/local/domain/{domid}/console/limit") == str(1024 * 1024)
    assert env.hv.store_read(f"/local/domain/{domid}/memory/target") == str(96 * 1024)
    assert names(env.reg) == ["Domain-0", "g1"]
    assert names(env.reg, "running") == ["Domain-0"]
    assert names(env.reg, "paused") == ["g1"]
    env.reg.domain_unpause("g1")
    assert names(env.reg, "Running") == ["Domain-0", "g1"]
    assert env.reg.domains(False) == ["Domain-0", "g1"]


def test_duplicate_name_refused(env):
    rec = env.reg.domain_create(vm("g1"))
    before = env.hv.list_domains()
    with pytest.raises(VmError) as e:
        env.reg.domain_create(vm("g1"))
    assert e.value.message == "VM name 'g1' already exists as domain %d" % child(rec, "domid")
    assert len(env.hv.list_domains()) == len(before)


def test_duplicate_uuid_refused(env):
    rec = env.reg.domain_create(vm("g1"))
    with pytest.raises(VmError, match="already exists with ID"):
        env.reg.domain_create(vm("g2", uuid=child(rec, "uuid")))


@pytest.mark.parametrize("config, message", [
    (vm("bad", memory=0), "Invalid memory size: 0 MiB (must be at least 1)"),
    (vm("bad", on_crash="explode"), "Invalid event handling mode: crash"),
    (vm("bad", on_poweroff="explode"), "Invalid event handling mode: shutdown"),
    (vm("bad", vcpus=HOST_CPUS * 8 + 1), "Too many VCPUs: 33 (this host has 4 CPUs; "
                                         "at most 32 VCPUs)"),
    (vm("bad", memory=512, maxmem=128),
     "memory_dynamic_max must be less than or equal to memory_static_max"),
])
def test_bad_config_refused_and_nothing_changes(env, config, message):
    before_hv = [(i.domid, i.mem_kib) for i in env.hv.list_domains()]
    before_names = names(env.reg)
    free = env.hv.physinfo().free_kib
    with pytest.raises(XendConfigError) as e:
        env.reg.domain_create(config)
    assert e.value.message == message
    with pytest.raises(XendConfigError):
        env.reg.domain_new(config)
    assert [(i.domid, i.mem_kib) for i in env.hv.list_domains()] == before_hv
    assert names(env.reg) == before_names
    assert env.hv.physinfo().free_kib == free
    assert os.listdir(env.tmp / "domains") == []


def test_create_that_fails_in_the_hypervisor_leaves_nothing(env):
    free = env.hv.physinfo().free_kib
    with pytest.raises(VmError, match="Creating domain failed"):
        env.reg.domain_create(vm("g1", args="sim.no_such_knob=1"))
    assert names(env.reg) == ["Domain-0"]
    assert [i.domid for i in env.hv.list_domains()] == [0]
    assert env.hv.physinfo().free_kib == free
    env.reg.domain_create(vm("g1"))          # the name is free again


# -- pause, unpause, destroy, dom0 refusals ------------------------------------------------------
def test_pause_unpause(env):
    domid = started(env.reg, vm("g1"))
    assert env.reg.domain_pause("g1", True) == 2
    assert env.hv.domain_info(domid).paused
    assert env.reg.domain_pause("g1", True) == 1
    assert env.reg.domain_pause("g1") is None
    env.reg.domain_unpause(domid)
    assert not env.hv.domain_info(domid).paused


@pytest.mark.parametrize("call, message", [
    (lambda r: r.domain_pause(0), "Cannot pause privileged domain 0"),
    (lambda r: r.domain_unpause("Domain-0"), "Cannot unpause privileged domain Domain-0"),
    (lambda r: r.domain_destroy(0), "Cannot destroy privileged domain 0"),
    (lambda r: r.domain_save(0, "/tmp/x"), "Cannot save privileged domain 0"),
    (lambda r: r.domain_suspend(0), "Cannot suspend privileged domain 0"),
    (lambda r: r.domain_dump(0), "Cannot dump core for privileged domain 0"),
    (lambda r: r.domain_reset(0), "Cannot reset privileged domain 0"),
    (lambda r: r.domain_migrate(0, "h"), "Cannot migrate privileged domain 0"),
    (lambda r: r.domain_shutdown(0, "poweroff"), "Domain 0 cannot be shutdown"),
])
def test_dom0_refusals(env, call, message):
    with pytest.raises(XendError) as e:
        call(env.reg)
    assert e.value.message == message
    assert env.hv.domain_info(0).running or env.hv.domain_info(0).blocked


def test_resume_dom0_refused(env):
    with pytest.raises(XendError, match="Cannot resume privileged domain 0"):
        env.reg.domain_resume(0)


def test_destroy(env):
    domid = started(env.reg, vm("g1"))
    env.reg.domain_destroy("g1")
    assert names(env.reg) == ["Domain-0"]
    assert [i.domid for i in env.hv.list_domains()] == [0]
    assert env.hv.store_list("/local/domain") == ["0"]
    with pytest.raises(XendInvalidDomain):
        env.reg.domain(domid)


def test_operations_on_unknown_domain(env):
    for call in (env.reg.domain_pause, env.reg.domain_destroy, env.reg.domain_getVCPUInfo,
                 env.reg.domain_sched_credit_get, env.reg.domain_getRestartCount):
        with pytest.raises(XendInvalidDomain):
            call("nosuch")


# -- shutdown ------------------------------------------------------------------------------------
def test_shutdown_writes_reason(env):
    domid = started(env.reg, vm("g1", args="sim.ignore_shutdown=1"))
    env.reg.domain_shutdown("g1", "halt")
    assert env.hv.store_read(f"/local/domain/{domid}/control/shutdown") == "halt"


def test_shutdown_guest_goes_away(env, caplog):
    caplog.set_level(logging.INFO)
    domid = started(env.reg, vm("g1", args="sim.shutdown_delay=0.05"))
    env.reg.domain_shutdown("g1", "poweroff")
    wait_for(lambda: names(env.reg) == ["Domain-0"])
    assert f"Domain has shutdown: name=g1 id={domid} reason=poweroff." in caplog.text


def test_shutdown_bad_reason_and_state(env):
    started(env.reg, vm("g1", args="sim.ignore_shutdown=1"))
    with pytest.raises(XendError) as e:
        env.reg.domain_shutdown("g1", "explode")
    assert e.value.message == "Invalid reason: explode"
    env.reg.domain_new(vm("m1"))
    with pytest.raises(XendError) as e:
        env.reg.domain_shutdown("m1", "poweroff")
    assert e.value.message == "Domain cannot be shutdown"


def test_shutdown_timeout_marks_unresponsive(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    e = Env(tmp_path, shutdown_timeout=0.3)
    try:
        domid = started(e.reg, vm("g1", args="sim.ignore_shutdown=1"))
        e.reg.domain_shutdown("g1", "poweroff")
        wait_for(lambda: e.hv.store_read(f"/local/domain/{domid}/xend/unresponsive") == "True")
        assert f"Domain shutdown timeout expired: name=g1 id={domid}" in caplog.text
        assert names(e.reg, "running") == ["Domain-0", "g1"]       # still running
    finally:
        e.close()


# -- memory --------------------------------------------------------------------------------------
def test_mem_set_and_maxmem(env):
    domid = started(env.reg, vm("g1", memory=64, maxmem=256))
    env.reg.domain_setMemoryTarget("g1", 128)
    assert env.hv.domain_info(domid).mem_kib == 128 * 1024
    assert child(env.reg.domain("g1"), "memory") == 128
    assert env.hv.store_read(f"/local/domain/{domid}/memory/target") == str(128 * 1024)
    assert env.hv.store_read(f"/vm/{child(env.reg.domain('g1'), 'uuid')}/memory") == "128"
    with pytest.raises(XendConfigError, match="memory_dynamic_max must be less than"):
        env.reg.domain_setMemoryTarget("g1", 512)
    env.reg.domain_maxmem_set("g1", 512)
    assert env.hv.domain_info(domid).maxmem_kib == 512 * 1024
    env.reg.domain_setMemoryTarget("g1", "300")
    assert child(env.reg.domain("g1"), "memory") == 300
    with pytest.raises(XendConfigError, match="memory_dynamic_max must be less than"):
        env.reg.domain_maxmem_set("g1", 100)


def test_dom0_mem_set_floor(tmp_path):
    e = Env(tmp_path, make_opts(tmp_path, dom0_min_mem=512))
    try:
        cur = child(e.reg.domain(0), "memory")
        with pytest.raises(XendError) as err:
            e.reg.domain_setMemoryTarget(0, 256)
        assert err.value.message == "memory_dynamic_max too small"
        e.reg.domain_setMemoryTarget(0, 600)
        assert e.hv.domain_info(0).mem_kib == 600 * 1024
        assert child(e.reg.domain(0), "memory") == 600 != cur
    finally:
        e.close()


# -- vcpus ---------------------------------------------------------------------------------------
def test_vcpu_set(env):
    domid = started(env.reg, vm("g1", vcpus=4))
    env.reg.domain_setVCpuCount("g1", 2)
    assert env.hv.domain_info(domid).online_vcpus == 2
    assert child(env.reg.domain("g1"), "online_vcpus") == 2
    assert env.hv.store_read(f"/local/domain/{domid}/cpu/3/availability") == "offline"
    with pytest.raises(XendError) as e:
        env.reg.domain_setVCpuCount("g1", 5)
    assert e.value.message == "Cannot set vcpus greater than max vcpus on running domain"
    with pytest.raises(XendError) as e:
        env.reg.domain_setVCpuCount("g1", 0)
    assert e.value.message == "Zero or less VCPUs is invalid"


def test_vcpu_set_inactive_changes_count(env):
    env.reg.domain_new(vm("m1", vcpus=2))
    env.reg.domain_setVCpuCount("m1", 6)
    assert child(env.reg.domain("m1"), "vcpus") == 6


def test_pincpu_and_vcpu_info(env):
    domid = started(env.reg, vm("g1", vcpus=2))
    assert env.reg.domain_pincpu("g1", 1, "0,2") == 0
    info = env.reg.domain_getVCPUInfo("g1")
    assert info[:4] == ["domain", ["domid", domid], ["name", "g1"], ["vcpu_count", 2]]
    vcpus = sxp.children(info, "vcpu")
    assert len(vcpus) == 2
    assert sxp.child_value(vcpus[1], "cpumap") == [0, 2]
    assert sxp.child_value(vcpus[0], "cpumap") == list(range(HOST_CPUS))
    assert sxp.child_value(vcpus[1], "cpu") in (0, 2)
    assert isinstance(sxp.child_value(vcpus[0], "cpu_time"), float)
    env.reg.domain_pincpu("g1", "all", "3")
    assert child(env.reg.domain("g1"), "cpus") == [[3], [3]]
    with pytest.raises(XendError, match=r"Cannot pin vcpu: 0 to cpu: \[9\]"):
        env.reg.domain_pincpu("g1", 0, "9")


def test_vcpu_info_of_inactive_domain(env):
    env.reg.domain_new(vm("m1", vcpus=2, cpus="1"))
    info = env.reg.domain_getVCPUInfo("m1")
    assert info[1] == ["domid", None]
    vcpu = sxp.children(info, "vcpu")[0]
    assert sxp.child_value(vcpu, "cpu") == -1
    assert sxp.child_value(vcpu, "cpu_time") == 0.0
    assert sxp.child_value(vcpu, "cpumap") == [1]


# -- scheduler -----------------------------------------------------------------------------------
def test_sched_credit(env):
    domid = started(env.reg, vm("g1", vcpus=2))
    assert env.reg.domain_sched_credit_get("g1") == {"weight": 256, "cap": 0}
    assert env.reg.domain_sched_credit_set("g1", 512, 50) == 0
    assert env.hv.sched_credit_get(domid) == (512, 50)
    env.reg.domain_sched_credit_set("g1", None, 100)
    assert env.reg.domain_sched_credit_get("g1") == {"weight": 512, "cap": 100}
    with pytest.raises(XendError, match="Cpu weight out of range, valid values are within "
                                        "range from 1 to 65535"):
        env.reg.domain_sched_credit_set("g1", 70000)
    with pytest.raises(XendError, match="Cpu cap out of range, valid range is from 0 to 200 "
                                        "for specified number of vcpus"):
        env.reg.domain_sched_credit_set("g1", None, 201)


def test_sched_credit_from_config(env):
    domid = started(env.reg, vm("g1", cpu_weight=1000, cpu_cap=20))
    assert env.hv.sched_credit_get(domid) == (1000, 20)


# -- names, sysrq, counters, flags ---------------------------------------------------------------
def test_set_name(env):
    domid = started(env.reg, vm("g1"))
    env.reg.domain_create(vm("g2"))
    env.reg.domain_setName("g1", "renamed")
    assert child(env.reg.domain(domid), "name") == "renamed"
    assert env.hv.store_read(f"/local/domain/{domid}/name") == "renamed"
    with pytest.raises(VmError, match="VM name 'g2' already exists as domain"):
        env.reg.domain_setName("renamed", "g2")
    with pytest.raises(VmError, match="Invalid VM Name"):
        env.reg.domain_setName("renamed", "bad name")


def test_sysrq(env):
    domid = started(env.reg, vm("g1"))
    env.reg.domain_send_sysrq("g1", "s")
    assert env.hv.store_read(f"/local/domain/{domid}/control/sysrq") == "s"
    env.reg.domain_new(vm("m1"))
    with pytest.raises(XendError, match="Domain 'm1' is not started"):
        env.reg.domain_send_sysrq("m1", "s")


def test_restart_count_pause_flag_wait_for_devices(env):
    started(env.reg, vm("g1"))
    assert env.reg.domain_getRestartCount("g1") == "0"
    assert env.reg.domain_waitForDevices("g1") is None
    assert env.reg.domain_getpauseflag("g1") is False
    env.reg.domain_setpauseflag("g1", True)
    assert env.reg.domain_getpauseflag("g1") is True
    assert env.reg.domain_setpauseflag("nosuch", True) is None
    assert env.reg.domain_getpauseflag("nosuch") is None


def test_reset(env):
    old = started(env.reg, vm("g1"))
    env.reg.domain_reset("g1")
    new = child(env.reg.domain("g1"), "domid")
    assert new != old and child(env.reg.domain("g1"), "status") == 2
    env.reg.domain_new(vm("m1"))
    with pytest.raises(VMBadState, match="Domain 'm1' is not started"):
        env.reg.domain_reset("m1")


# -- console -------------------------------------------------------------------------------------
def test_console_reads_and_resumes(env):
    started(env.reg, vm("g1"))
    off, data = wait_for(lambda: (lambda r: r if b"login:" in r[1] else None)(
        env.reg.domain_console("g1", 0)))
    assert isinstance(off, str) and int(off) == len(data)
    assert data.startswith(b"[    0.000000] Linux version")
    assert env.reg.domain_console("g1", off) == [off, b""]


def test_console_limit_truncates(tmp_path):
    e = Env(tmp_path, make_opts(tmp_path, console_limit=1))
    try:
        started(e.reg, vm("g1"))
        domid = child(e.reg.domain("g1"), "domid")
        e.reg.consoles.feed(domid, b"x" * 3000)
        off, data = e.reg.domain_console("g1", 0)
        assert len(data) == 1024 and int(off) >= 3000
        assert e.hv.store_read(f"/local/domain/{domid}/console/limit") == "1024"
    finally:
        e.close()


def test_console_of_inactive_domain(env):
    env.reg.domain_new(vm("m1"))
    with pytest.raises(VMBadState, match="Domain 'm1' is not started"):
        env.reg.domain_console("m1", 0)


# -- migration delegation ------------------------------------------------------------------------
def test_migrate_delegates(env):
    started(env.reg, vm("g1"))
    with pytest.raises(XendError) as e:
        env.reg.domain_migrate("g1", "host2")
    assert e.value.message == "Migration is not available"
    calls = []
    env.reg.migrator = lambda *a: calls.append(a)
    assert env.reg.domain_migrate("g1", "host2", True, "8002", 1, None, False) is None
    dom, dst, live, port, node, ssl, chs = calls[0]
    assert (dom.name, dst, live, port, node, ssl, chs) == ("g1", "host2", True, 8002, 1, None,
                                                           False)
    env.reg.domain_pause("g1")
    with pytest.raises(VMBadState, match="Domain is not running"):
        env.reg.domain_migrate("g1", "host2")
    env.reg.domain_unpause("g1")
    with pytest.raises(XendError, match="Domain is not a managed domain"):
        env.reg.domain_migrate("g1", "host2", chs=True)


# -- rediscovery ---------------------------------------------------------------------------------
def test_restart_adopts_running_domains(env):
    domid = started(env.reg, vm("g1", memory=80, vcpus=2, cpu_weight=300))
    env.reg.domain_setMemoryTarget("g1", 72)
    before = env.reg.domain("g1")
    env.restart()
    after = env.reg.domain("g1")
    assert child(after, "domid") == domid
    for key in ("uuid", "memory", "maxmem", "vcpus", "cpu_weight", "image", "start_time"):
        assert child(after, key) == child(before, key), key
    assert child(after, "memory") == 72
    assert names(env.reg) == ["Domain-0", "g1"]


def test_restart_adopts_domain_without_stored_config(env):
    domid = started(env.reg, vm("g1"))
    uuid = child(env.reg.domain("g1"), "uuid")
    env.hv.store_rm(f"/vm/{uuid}")
    env.restart()
    assert child(env.reg.domain(domid), "name") == "g1"      # from /local/domain/<id>/name


def test_dom0_cpus_applied_at_start(tmp_path):
    e = Env(tmp_path, make_opts(tmp_path, dom0_cpus=2))
    try:
        assert e.hv.domain_info(0).online_vcpus == 2
        assert e.hv.store_read("/local/domain/0/cpu/3/availability") == "offline"
        assert child(e.reg.domain(0), "online_vcpus") == 2
    finally:
        e.close()


def test_dom0_cpus_zero_leaves_dom0(env):
    assert env.hv.domain_info(0).online_vcpus == HOST_CPUS


def test_reconfigure_changes_settings_without_stop_actions(env):
    env.reg.domain_new(vm("m1", on_xend_stop="shutdown"))
    env.reg.domain_start("m1", False)
    env.reg.reconfigure(make_opts(env.tmp, console_limit=2, enable_dump=True))
    assert env.reg.settings.console_limit == 2 and env.reg.settings.enable_dump
    assert env.reg.consoles.limit_bytes == 2048
    time.sleep(0.2)
    assert names(env.reg, "running") == ["Domain-0", "m1"]


def test_progress_empty_when_idle(env):
    assert env.reg.progress() == []


def test_registry_accepts_plain_dict_options(tmp_path):
    from xend.hypervisor.simulated import SimulatedHypervisor
    hv = SimulatedHypervisor(str(tmp_path / "sim"), 1024, 2)
    reg = DomainRegistry({"xend-domains-path": str(tmp_path / "d")}, hv, event_interval=0.05)
    reg.start()
    try:
        assert names(reg) == ["Domain-0"]
    finally:
        reg.stop()
        hv.close()


def test_dying_domains_are_ignored_at_start(env, caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    domid = started(env.reg, vm("g1"))
    env.close()
    env.hv = None
    from xend.hypervisor import make_hypervisor
    real = make_hypervisor

    def dying_hypervisor(opts):
        hv = real(opts)
        listing = hv.list_domains

        def list_domains():
            infos = listing()
            for i in infos:
                if i.domid == domid:
                    i.dying = True
            return infos

        hv.list_domains = list_domains
        return hv

    monkeypatch.setattr("tests.test_domains_support.make_hypervisor", dying_hypervisor)
    env.open()
    assert f"Ignoring dying domain {domid} from now on" in caplog.text
    assert names(env.reg) == ["Domain-0"]


def test_every_exported_method_exists(env):
    from xend.server.methods import build_method_table

    from xend.cpupools import CpuPools

    class FakeNode:
        domains = env.reg
        cpupools = CpuPools(env.hv, env.reg, str(env.tmp / "state"))
        info = log_text = dmesg_info = dmesg_clear = progress = pciinfo = send_debug_keys = \
            staticmethod(lambda: None)

    table = build_method_table(FakeNode())
    assert table["xend.domain.create"] == env.reg.domain_create
    assert table["xend.domain.device_create"] == env.reg.domain_device_create
    assert table["xend.cpu_pool.list"] == FakeNode.cpupools.pool_list
    assert all(callable(f) for f in table.values())


def test_results_marshal_as_xmlrpc(env):
    import xmlrpc.client
    from xend.server.xmlrpc import to_wire

    started(env.reg, vm("g1", vcpus=2))
    env.reg.domain_new(vm("m1"))
    results = [env.reg.domains_with_state(True, "all", True), env.reg.domains(True),
               env.reg.domain("g1", 1), env.reg.domain_getVCPUInfo("g1"),
               env.reg.domain_getVCPUInfo("m1"), env.reg.domain_sched_credit_get("g1"),
               env.reg.domain_console("g1", 0), env.reg.progress(),
               env.reg.domain_pause("g1", True), env.reg.domain_getpauseflag("g1")]
    for r in results:
        xmlrpc.client.loads(xmlrpc.client.dumps((to_wire(r),), allow_none=True),
                            use_builtin_types=True)
