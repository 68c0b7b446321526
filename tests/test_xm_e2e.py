"""The installed `xm` command against a real xend (simulated hypervisor) in a temp dir."""
from __future__ import annotations

import re
import time

import pytest

from tests.daemon_helpers import XendInstance

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def host(tmp_path):
    inst = XendInstance(tmp_path / "host").start()
    yield inst
    inst.stop()
    inst.kill()


def write_cfg(tmp_path, name="guest1", memory=256, vcpus=2, extra=""):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 64)
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nkernel = "{kernel}"\nmemory = {memory}\nvcpus = {vcpus}\n'
                   "disk = ['phy:/dev/vg0/g1,xvda,w']\nvif = ['']\nroot = '/dev/xvda ro'\n"
                   + extra)
    return cfg


def ok(r):
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    return r.stdout


def list_rows(out):
    """{name: (id, mem, vcpus, state, time)} from `xm list` output."""
    lines = out.splitlines()
    assert lines[0].split() == ["Name", "ID", "Mem", "VCPUs", "State", "Time(s)"]
    rows = {}
    for line in lines[1:]:
        name = line[:40].strip()
        rows[name] = (line[41:46].strip(), line[47:52].strip(), line[53:58].strip(),
                      line[59:69].strip(), line[69:].strip())
    return rows


def state(host, name):
    return list_rows(ok(host.xm("list")))[name][3]


def test_domain_lifecycle_through_xm(host, tmp_path):
    cfg = write_cfg(tmp_path)
    out = ok(host.xm("create", str(cfg)))
    assert re.fullmatch(rf'Using config file "{cfg}".\nStarted domain guest1 \(id=\d+\)\n', out)
    rows = list_rows(ok(host.xm("list")))
    assert set(rows) == {"Domain-0", "guest1"}
    assert rows["Domain-0"][0] == "0"
    domid, mem, vcpus, st, _ = rows["guest1"]
    assert mem == "256" and vcpus == "2" and st[2] == "-"  # not paused
    assert ok(host.xm("domid", "guest1")).strip() == domid
    assert ok(host.xm("domname", domid)).strip() == "guest1"

    ok(host.xm("pause", "guest1"))
    assert state(host, "guest1")[2] == "p"
    ok(host.xm("unpause", "guest1"))
    assert state(host, "guest1")[2] == "-"

    ok(host.xm("mem-set", "guest1", "200"))
    assert list_rows(ok(host.xm("list")))["guest1"][1] == "200"
    ok(host.xm("vcpu-set", "guest1", "1"))
    assert list_rows(ok(host.xm("list")))["guest1"][2] == "1"

    image = tmp_path / "guest1.save"
    ok(host.xm("save", "guest1", str(image)))
    assert image.exists() and image.read_bytes()[:16] == b"LinuxGuestRecord"
    assert "guest1" not in list_rows(ok(host.xm("list")))
    ok(host.xm("restore", str(image)))
    assert "guest1" in list_rows(ok(host.xm("list")))

    ok(host.xm("shutdown", "-w", "guest1"))
    assert "guest1" not in list_rows(ok(host.xm("list")))

    ok(host.xm("create", str(cfg)))
    ok(host.xm("destroy", "guest1"))
    assert "guest1" not in list_rows(ok(host.xm("list")))


def test_errors_as_the_original(host, tmp_path):
    r = host.xm("pause", "nosuch")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[0] == "Error: Domain 'nosuch' does not exist."
    r = host.xm("destroy", "0")
    assert r.returncode == 1 and r.stderr.startswith("Error: ")


def test_managed_domain_new_start_delete(host, tmp_path):
    cfg = write_cfg(tmp_path, name="managed1", memory=128, vcpus=1)
    ok(host.xm("new", str(cfg)))
    rows = list_rows(ok(host.xm("list")))
    assert rows["managed1"][0] == "" and rows["managed1"][3] == ""
    ok(host.xm("start", "managed1"))
    assert list_rows(ok(host.xm("list")))["managed1"][0] != ""
    ok(host.xm("destroy", "managed1"))
    assert list_rows(ok(host.xm("list")))["managed1"][0] == ""
    ok(host.xm("delete", "managed1"))
    assert "managed1" not in list_rows(ok(host.xm("list")))


def test_console_shows_guest_output(host, tmp_path):
    ok(host.xm("create", str(write_cfg(tmp_path, name="talker"))))
    time.sleep(1.0)
    r = host.xm("console", "talker", input="", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "the guest printed nothing on its console"


def test_log_and_info_and_dmesg(host):
    assert "Xend Daemon started" in ok(host.xm("log"))
    info = ok(host.xm("info"))
    keys = [line.split(":")[0].strip() for line in info.splitlines() if ":" in line]
    assert keys[:5] == ["host", "release", "version", "machine", "nr_cpus"]
    assert "xend_config_format" in keys
    assert ok(host.xm("dmesg")).strip()


def test_list_long_is_pretty_sxp(host, tmp_path):
    ok(host.xm("create", str(write_cfg(tmp_path, name="longone"))))
    out = ok(host.xm("list", "-l", "longone"))
    from xend import sxp
    rec = sxp.parse_all(out)[0]
    assert rec[0] == "domain" and sxp.child_value(rec, "name") == "longone"
    assert out.splitlines()[1].startswith("    (")


def test_brief_listing_prints_exactly_what_the_full_records_print(host, tmp_path):
    from xend.xm import formats
    ok(host.xm("create", str(write_cfg(tmp_path, name="b1"))))
    ok(host.xm("new", str(write_cfg(tmp_path, name="b2", memory=64, vcpus=1))))
    ok(host.xm("pause", "b1"))
    proxy = host.proxy()
    for state in ("all", "running", "paused", "halted"):
        brief = formats.list_brief(proxy.xend.domains_brief(state))
        full = formats.list_brief(proxy.xend.domains_with_state(True, state, False))
        # cpu time moves between the two calls; every other column must be identical
        strip = lambda text: [line[:69] for line in text.splitlines()]  # noqa: E731
        assert strip(brief) == strip(full), state


def test_domain_made_by_another_tool_is_adopted_while_xend_runs(host):
    """As the original did on @introduceDomain: xl (here: a second client of the same
    simulated hypervisor) creates a domain; xend lists it and can act on it."""
    import uuid as uuidmod
    from xend.hypervisor.base import DomainSpec
    from xend.hypervisor.simulated import SimulatedHypervisor
    other_tool = SimulatedHypervisor(str(host.paths["simulated-state-path"]), create=False)
    domid = other_tool.create_domain(DomainSpec(name="byxl", uuid=str(uuidmod.uuid4()),
                                                memory_kib=64 * 1024, maxmem_kib=64 * 1024))
    other_tool.store_write(f"/local/domain/{domid}/name", "byxl")
    other_tool.unpause(domid)
    time.sleep(1.0)  # half-built (no memory target yet): not adopted
    assert "byxl" not in list_rows(ok(host.xm("list")))
    other_tool.store_write(f"/local/domain/{domid}/memory/target", str(64 * 1024))
    rows = host.wait_for(lambda: list_rows(ok(host.xm("list"))).get("byxl"))
    assert rows[0] == str(domid) and rows[1] == "64"
    ok(host.xm("pause", "byxl"))
    assert state(host, "byxl")[2] == "p"
    ok(host.xm("destroy", "byxl"))
    host.wait_for(lambda: "byxl" not in list_rows(ok(host.xm("list"))))
    assert all(i.domid != domid for i in other_tool.list_domains())


def _foreign_guest(host, name):
    """A long-running guest another toolstack built (a second client of the simulated host,
    as xl is of Xen): what it writes to the store, a start two minutes ago."""
    import uuid as uuidmod
    from xend.hypervisor.base import DomainSpec
    from xend.hypervisor.simulated import SimulatedHypervisor
    other_tool = SimulatedHypervisor(str(host.paths["simulated-state-path"]), create=False)
    uid = str(uuidmod.uuid4())
    domid = other_tool.create_domain(DomainSpec(name=name, uuid=uid, memory_kib=64 * 1024,
                                                maxmem_kib=64 * 1024,
                                                cmdline="sim.shutdown_delay=0.05"))
    for key, value in (("name", name), ("vm", f"/vm/{uid}"), ("memory/target", "65536")):
        other_tool.store_write(f"/local/domain/{domid}/{key}", value)
    other_tool.store_write(f"/vm/{uid}/start_time", repr(time.time() - 120))
    other_tool.unpause(domid)
    host.wait_for(lambda: list_rows(ok(host.xm("list"))).get(name))
    return other_tool, domid, uid


@pytest.mark.timeout(120)
def test_a_foreign_guest_that_reboots_is_left_to_its_toolstack_then_rebuilt(host):
    """xm reboot of a guest xl started: its own toolstack gets FOREIGN_GRACE to act (xl's
    monitor would); none did, so xend runs the guest's on_reboot (restart) itself."""
    from xend.domains.events import FOREIGN_GRACE
    other_tool, domid, uid = _foreign_guest(host, "byxl2")
    t0 = time.monotonic()
    ok(host.xm("reboot", "byxl2"))
    # shut down (reason reboot) and, within the grace, left as it is
    host.wait_for(lambda: any(i.domid == domid and i.shutdown for i in other_tool.list_domains()))
    time.sleep(max(0.0, FOREIGN_GRACE / 2 - (time.monotonic() - t0)))
    assert list_rows(ok(host.xm("list")))["byxl2"][0] == str(domid)
    # then rebuilt by xend: same name and uuid, a new domain
    row = host.wait_for(lambda: (lambda r: r if r and r[0] != str(domid) else None)(
        list_rows(ok(host.xm("list"))).get("byxl2")), timeout=FOREIGN_GRACE + 20)
    assert time.monotonic() - t0 >= FOREIGN_GRACE
    assert int(row[0]) != domid
    assert uid in ok(host.xm("list", "-l", "byxl2"))
    assert all(i.domid != domid for i in other_tool.list_domains())
    assert [line.split()[0] for line in ok(host.xm("list")).splitlines()].count("byxl2") == 1


@pytest.mark.timeout(120)
def test_a_foreign_guest_its_toolstack_restarts_is_not_restarted_twice(host):
    """xl's monitor destroys the rebooted domain and builds a new one at once: xend adopts
    the new one and builds nothing itself."""
    from xend.domains.events import FOREIGN_GRACE
    other_tool, domid, uid = _foreign_guest(host, "byxl3")
    ok(host.xm("reboot", "byxl3"))
    host.wait_for(lambda: any(i.domid == domid and i.shutdown for i in other_tool.list_domains()))
    other_tool.destroy(domid)                       # what xl's monitor does ...
    other_tool2, newid, _ = _foreign_guest(host, "byxl3b")      # ... and its new instance
    time.sleep(FOREIGN_GRACE + 3)
    names = [line.split()[0] for line in ok(host.xm("list")).splitlines()[1:]]
    assert "byxl3" not in names and names.count("byxl3b") == 1, names
    assert len(other_tool.list_domains()) == 2      # dom0 and the toolstack's new instance
