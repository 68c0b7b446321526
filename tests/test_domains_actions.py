"""on_poweroff / on_reboot / on_crash actions, restart throttling, core dumps (§8.3-§8.5)."""
from __future__ import annotations

import logging
import os
import re

import pytest

from xend.domains.dump import MAGIC, read_core_header
from xend.errors import HypervisorError, VMBadState, XendError
from xend.hypervisor.base import PAGE_SIZE

from tests.test_domains_support import Env, child, make_opts, names, started, vm, wait_for
from tests.test_domains_support import env as shared_env

env = shared_env      # the fixture, shared by the domain test modules

pytestmark = pytest.mark.timeout(60)

CORE_NAME = re.compile(r"^\d{4}-\d{4}-\d{4}\.\d{2}-(?P<name>.+)\.(?P<domid>\d+)\.core$")


@pytest.fixture(autouse=True)
def info_logs(caplog):
    caplog.set_level(logging.DEBUG)


def gone(env, name):
    return name not in names(env.reg)


def domid_of(env, name):
    return child(env.reg.domain(name), "domid")


def restarted(env, name, old):
    try:
        rec = env.reg.domain(name)
    except XendError:
        return None
    new = child(rec, "domid")
    return new if new is not None and new != old and child(rec, "status") == 2 else None


# -- poweroff / reboot ---------------------------------------------------------------------------
def test_poweroff_destroys_by_default(env, caplog):
    domid = started(env.reg, vm("g1", args="sim.shutdown_delay=0.05"))
    env.reg.domain_shutdown("g1", "poweroff")
    wait_for(lambda: gone(env, "g1"))
    assert f"Domain has shutdown: name=g1 id={domid} reason=poweroff." in caplog.text
    assert [i.domid for i in env.hv.list_domains()] == [0]


def test_reboot_restarts_with_same_name_and_uuid(env):
    rec = env.reg.domain_create(vm("g1", args="sim.shutdown_delay=0.05"))
    old, uuid = child(rec, "domid"), child(rec, "uuid")
    env.reg.domain_unpause(old)
    env.reg.domain_shutdown("g1", "reboot")
    new = wait_for(lambda: restarted(env, "g1", old))
    after = env.reg.domain("g1")
    assert child(after, "uuid") == uuid
    assert env.reg.domain_getRestartCount("g1") == "1"
    assert not env.hv.domain_info(new).paused
    with pytest.raises(HypervisorError):
        env.hv.domain_info(old)
    env.reg.domain_shutdown("g1", "reboot")
    wait_for(lambda: restarted(env, "g1", new))
    assert env.reg.domain_getRestartCount("g1") == "2"


def test_halt_destroys(env):
    started(env.reg, vm("g1", args="sim.shutdown_delay=0.05", on_poweroff="restart"))
    env.reg.domain_shutdown("g1", "halt")
    wait_for(lambda: gone(env, "g1"))


def test_poweroff_restart_action(env):
    old = started(env.reg, vm("g1", args="sim.shutdown_delay=0.05", on_poweroff="restart"))
    env.reg.domain_shutdown("g1", "poweroff")
    wait_for(lambda: restarted(env, "g1", old))


# -- crash ---------------------------------------------------------------------------------------
def test_crash_restart(env, caplog):
    old = started(env.reg, vm("g1"))
    env.hv.crash(old)
    wait_for(lambda: restarted(env, "g1", old))
    assert f"Domain has crashed: name=g1 id={old}." in caplog.text


def test_crash_destroy(env):
    domid = started(env.reg, vm("g1", on_crash="destroy"))
    env.hv.crash(domid)
    wait_for(lambda: gone(env, "g1"))


def test_crash_preserve_then_destroy(env, caplog):
    domid = started(env.reg, vm("g1", on_crash="preserve"))
    env.hv.crash(domid)
    wait_for(lambda: f"Preserving dead domain g1 ({domid})." in caplog.text)
    rec = env.reg.domain("g1")
    assert child(rec, "state") == "----c-" and child(rec, "status") == 5
    assert env.hv.store_read(f"/local/domain/{domid}/xend/shutdown_completed") == "True"
    assert names(env.reg, "crashed") == ["g1"]
    # preserved domains are not handled again, not even by a restarted xend
    env.restart()
    env.reg.refresh()
    assert child(env.reg.domain("g1"), "state") == "----c-"
    env.reg.domain_destroy("g1")
    assert gone(env, "g1")


def test_poweroff_preserve(env):
    domid = started(env.reg, vm("g1", args="sim.shutdown_delay=0.05", on_poweroff="preserve"))
    env.reg.domain_shutdown("g1", "poweroff")
    wait_for(lambda: child(env.reg.domain("g1"), "state") == "---s--")
    assert child(env.reg.domain("g1"), "status") == 0
    assert child(env.reg.domain("g1"), "domid") == domid


def test_rename_restart(env, caplog):
    rec = env.reg.domain_create(vm("g1", on_crash="rename_restart"))
    old, uuid = child(rec, "domid"), child(rec, "uuid")
    env.reg.domain_unpause(old)
    env.hv.crash(old)
    new = wait_for(lambda: restarted(env, "g1", old))
    assert child(env.reg.domain("g1"), "uuid") == uuid
    dead = env.reg.domain(old)
    dead_name, dead_uuid = child(dead, "name"), child(dead, "uuid")
    assert dead_name == "Domain-" + dead_uuid and dead_uuid != uuid
    assert child(dead, "state") == "----c-"
    assert f"Renaming dead domain g1 ({old}, {uuid}) to {dead_name} ({dead_uuid})." \
        in caplog.text
    assert env.hv.store_read(f"/local/domain/{old}/name") == dead_name
    assert sorted(names(env.reg)) == sorted(["Domain-0", "g1", dead_name])
    assert new != old


def test_coredump_destroy(env):
    domid = started(env.reg, vm("g1", memory=16, on_crash="coredump-destroy"))
    env.hv.crash(domid)
    wait_for(lambda: gone(env, "g1"))
    files = os.listdir(env.tmp / "dump" / "g1")
    assert len(files) == 1
    m = CORE_NAME.match(files[0])
    assert m and m["name"] == "g1" and int(m["domid"]) == domid
    path = env.tmp / "dump" / "g1" / files[0]
    header = read_core_header(str(path))
    assert header["nr_pages"] == 16 * 256 and header["uuid"]
    assert path.stat().st_size > 16 * 1024 * 1024
    assert oct(os.stat(env.tmp / "dump" / "g1").st_mode & 0o777) == "0o700"


def test_coredump_restart(env):
    old = started(env.reg, vm("g1", memory=16, on_crash="coredump_and_restart"))
    env.hv.crash(old)
    wait_for(lambda: restarted(env, "g1", old))
    assert len(os.listdir(env.tmp / "dump" / "g1")) == 1


def test_enable_dump_dumps_every_crash(tmp_path):
    e = Env(tmp_path, make_opts(tmp_path, enable_dump=True))
    try:
        domid = started(e.reg, vm("g1", memory=16, on_crash="destroy"))
        e.hv.crash(domid)
        wait_for(lambda: "g1" not in names(e.reg))
        assert len(os.listdir(tmp_path / "dump" / "g1")) == 1
    finally:
        e.close()


def test_no_dump_without_enable_dump(env):
    domid = started(env.reg, vm("g1", on_crash="destroy"))
    env.hv.crash(domid)
    wait_for(lambda: gone(env, "g1"))
    assert not (env.tmp / "dump" / "g1").exists()


# -- restart guards ------------------------------------------------------------------------------
def test_restarting_too_fast_is_refused(tmp_path, caplog):
    e = Env(tmp_path, minimum_restart_time=60.0)
    try:
        domid = started(e.reg, vm("g1"))
        e.hv.crash(domid)
        wait_for(lambda: "g1" not in names(e.reg))
        assert re.search(r"VM g1 restarting too fast \(Elapsed time: \d+\.\d{6} seconds\)\. "
                         r"Refusing to restart to avoid loops\.", caplog.text)
        assert [i.domid for i in e.hv.list_domains()] == [0]
    finally:
        e.close()


def test_interrupted_restart_is_not_retried(env, caplog):
    rec = env.reg.domain_create(vm("g1"))
    domid, uuid = child(rec, "domid"), child(rec, "uuid")
    env.reg.domain_unpause(domid)
    env.hv.store_write(f"/vm/{uuid}/xend/restart_in_progress", "True")
    env.hv.crash(domid)
    wait_for(lambda: gone(env, "g1"))
    assert f"Xend failed during restart of domain {domid}.  Refusing to restart to avoid " \
           f"loops." in caplog.text


def test_managed_domain_restarts_and_stays_managed(env):
    env.reg.domain_new(vm("m1", on_crash="restart"))
    env.reg.domain_start("m1", False)
    old = domid_of(env, "m1")
    env.hv.crash(old)
    wait_for(lambda: restarted(env, "m1", old))
    env.reg.domain_destroy("m1")
    assert names(env.reg, "halted") == ["m1"]


def test_domain_destroyed_behind_our_back_is_forgotten(env):
    domid = started(env.reg, vm("g1"))
    env.hv.destroy(domid)
    wait_for(lambda: gone(env, "g1"))


def test_shutdown_while_xend_was_down_is_handled_at_start(env):
    domid = started(env.reg, vm("g1", on_crash="destroy"))
    env.close()
    env.hv = None
    from xend.hypervisor import make_hypervisor
    hv = make_hypervisor(env.opts)
    hv.crash(domid)
    hv.close()
    env.open()
    wait_for(lambda: gone(env, "g1"))


# -- xm dump-core --------------------------------------------------------------------------------
def test_dump_core_default_name_and_pause(env, caplog):
    domid = started(env.reg, vm("g1", memory=8))
    env.reg.domain_dump("g1")
    files = os.listdir(env.tmp / "dump" / "g1")
    assert len(files) == 1 and CORE_NAME.match(files[0])
    assert f"Domain core dump requested for domain g1 ({domid}) live=0 crash=0 reset=0." \
        in caplog.text
    assert not env.hv.domain_info(domid).paused          # paused during, unpaused after
    with open(env.tmp / "dump" / "g1" / files[0], "rb") as f:
        assert f.read(8) == MAGIC


def test_dump_core_to_file_checksums_memory(env, tmp_path):
    domid = started(env.reg, vm("g1", memory=4))
    env.reg.domain_pause("g1")
    target = tmp_path / "core"
    env.reg.domain_dump("g1", str(target))
    import hashlib
    with open(target, "rb") as f:
        f.read(8)
        size = int.from_bytes(f.read(4), "big")
        f.read(size)
        pages = f.read()
    assert len(pages) == 4 * 256 * PAGE_SIZE
    assert hashlib.sha256(pages).hexdigest() == env.hv.memory_checksum(domid)


def test_dump_core_crash_and_reset(env, tmp_path):
    old = started(env.reg, vm("g1", memory=8))
    env.reg.domain_dump("g1", str(tmp_path / "c1"), False, False, True)
    new = child(env.reg.domain("g1"), "domid")
    assert new != old and child(env.reg.domain("g1"), "status") == 2
    env.reg.domain_dump("g1", str(tmp_path / "c2"), True, True)
    assert gone(env, "g1")
    assert (tmp_path / "c1").exists() and (tmp_path / "c2").exists()


def test_dump_core_into_a_directory_refused(env, tmp_path):
    started(env.reg, vm("g1", memory=8))
    with pytest.raises(XendError) as e:
        env.reg.domain_dump("g1", str(tmp_path))
    assert e.value.message == f"Cannot dump core in a directory: {tmp_path}"
    assert child(env.reg.domain("g1"), "status") == 2


def test_dump_core_failure_leaves_incomplete_file(env, tmp_path, monkeypatch):
    domid = started(env.reg, vm("g1", memory=8))
    real = env.hv.read_pages

    def failing(d, pfns):
        pfns = list(pfns)
        if pfns and pfns[0] >= 512:
            raise HypervisorError(5, "I/O error")
        return real(d, pfns)

    monkeypatch.setattr(env.hv, "read_pages", failing)
    target = tmp_path / "core"
    with pytest.raises(XendError) as e:
        env.reg.domain_dump("g1", str(target))
    assert e.value.message.startswith("Failed to dump core: ")
    assert not target.exists() and (tmp_path / "core-incomplete").exists()
    assert not env.hv.domain_info(domid).paused


def test_dump_core_falls_back_to_dump_path(env):
    (env.tmp / "dump").mkdir()
    (env.tmp / "dump" / "g1").write_text("not a directory")
    started(env.reg, vm("g1", memory=8))
    env.reg.domain_dump("g1")
    cores = [f for f in os.listdir(env.tmp / "dump") if f.endswith(".core")]
    assert len(cores) == 1 and CORE_NAME.match(cores[0])


def test_dump_core_of_halted_domain_refused(env):
    env.reg.domain_new(vm("m1"))
    with pytest.raises(VMBadState, match="Domain 'm1' is not started"):
        env.reg.domain_dump("m1")
