"""The xm 4.x commands of issue 17 beside the device ones, through the real daemon on the
simulated host: domstate, reset, trigger, debug-keys, sched-credit2, sched-sedf, top, shell,
list --label, the cpupool-* commands; the commands of xm 4.4 this xm lacks; help for all."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from xend import sxp
from xend.xm import main as xm_main
from tests.daemon_helpers import XendInstance
from tests.test_devices_hotplug import console, fails, ok, write_cfg

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def credit2(tmp_path):
    """A xend on a simulated host that runs credit2, as Xen 4.17 does by default."""
    inst = XendInstance(tmp_path / "host", extra="(simulated-scheduler credit2)").start()
    yield inst
    inst.stop()
    inst.kill()


def create(host, tmp: Path, name: str, body: str = "") -> int:
    ok(host.xm("create", str(write_cfg(tmp, name, body))))
    return int(host.xm("domid", name).stdout)


def test_domstate_reset_trigger_debug_keys(credit2, tmp_path):
    host = credit2
    create(host, tmp_path, "g1")
    host.wait_for(lambda: ok(host.xm("domstate", "g1")) == "idle\n")
    ok(host.xm("pause", "g1"))
    assert ok(host.xm("domstate", "g1")) == "paused by admin\n"
    ok(host.xm("unpause", "g1"))
    ok(host.xm("new", str(write_cfg(tmp_path, "m1"))))
    assert ok(host.xm("domstate", "m1")) == "shutoff\n"
    fails(host.xm("domstate", "nosuch"), r"Domain 'nosuch' does not exist", status=3)
    # an NMI reaches the guest; reset and init are not Xen 4.17's; power is HVM's
    ok(host.xm("trigger", "g1", "nmi"))
    host.wait_for(lambda: "NMI received for unknown reason 00 on CPU 0" in console(host, "g1"))
    fails(host.xm("trigger", "g1", "reset"), r"reset trigger is not implemented by Xen")
    fails(host.xm("trigger", "g1", "power"), r"power trigger is for HVM guests")
    fails(host.xm("trigger", "g1", "nmi", "5"), r"has no vcpu 5")
    fails(host.xm("trigger", "g1", "tickle"), r"Invalid trigger: tickle")
    fails(host.xm("trigger", "m1", "nmi"), r"Domain 'm1' is not started")
    # the ACPI power button of an HVM guest: it powers itself off
    ok(host.xm("create", str(_hvm_cfg(tmp_path, "h1"))))
    ok(host.xm("trigger", "h1", "power"))
    host.wait_for(lambda: host.xm("domid", "h1").returncode != 0, timeout=20)
    # debug keys: the hypervisor answers in its console ring
    ok(host.xm("debug-keys", "hq"))
    dmesg = ok(host.xm("dmesg"))
    assert "(XEN) 'h' pressed -> showing installed handlers" in dmesg
    assert "(XEN) 'q' pressed -> dump domain (and guest debug) info" in dmesg
    # reset: a new domain from the same config, the guest boots again
    old = int(host.xm("domid", "g1").stdout)
    ok(host.xm("reset", "g1"))
    new = int(host.xm("domid", "g1").stdout)
    assert new != old
    host.wait_for(lambda: "login:" in console(host, "g1"))


def _hvm_cfg(tmp: Path, name: str) -> Path:
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nbuilder = "hvm"\nkernel = "hvmloader"\nmemory = 64\n'
                   "extra = 'sim.shutdown_delay=0.1'\n")
    return cfg


def test_sched_credit2_and_sedf(credit2, tmp_path):
    host = credit2
    create(host, tmp_path, "g1")
    out = ok(host.xm("sched-credit2"))
    lines = out.splitlines()
    assert lines[0] == "Name                                ID Weight"
    assert lines[1] == "Domain-0                             0    256"
    assert re.match(r"g1 {30}\s+\d+    256$", lines[2])
    ok(host.xm("sched-credit2", "-d", "g1", "-w", "512"))
    assert ok(host.xm("sched-credit2", "-d", "g1")).splitlines()[1].endswith("   512")
    assert "(cpu_weight 512)" in ok(host.xm("list", "-l", "g1"))
    fails(host.xm("sched-credit2", "-d", "g1", "-w", "0"), r"Cpu weight out of range")
    fails(host.xm("sched-credit2", "-w", "5"), r"No domain given")
    # on a credit2 host, the credit command says so, as the original did
    fails(host.xm("sched-credit"), r"^Error: Xen is running with the credit2 scheduler\n$")
    fails(host.xm("sched-sedf", "g1"),
          r"Xen is running with the credit2 scheduler; the sedf scheduler is not in this Xen")
    import xmlrpc.client
    with pytest.raises(xmlrpc.client.Fault) as e:
        host.proxy().xend.domain.cpu_sedf_get("g1")
    assert "the sedf scheduler is not in this Xen" in e.value.faultString


def test_sched_credit2_on_a_credit_host_says_so(tmp_path):
    inst = XendInstance(tmp_path / "h").start()
    try:
        fails(inst.xm("sched-credit2"), r"^Error: Xen is running with the credit scheduler\n$")
    finally:
        inst.stop()
        inst.kill()


def test_top_in_batch_mode(credit2, tmp_path):
    host = credit2
    create(host, tmp_path, "web1", "extra = 'sim.load=0.5'\n")
    t0 = time.monotonic()
    out = ok(host.xm("top", "-b", "-i", "2", "-d", "0.5"))
    assert time.monotonic() - t0 >= 0.5
    lines = out.splitlines()
    header = ("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS"
              " NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID")
    assert lines[0] == header and lines[3] == header and len(lines) == 6
    rows = {line.split()[0]: line.split() for line in lines[4:]}
    assert rows["web1"][1] == "-----r" and rows["web1"][4] == "65536"
    assert rows["web1"][9:11] == ["1", "0"] and rows["web1"][12] == "1"    # 1 vif, 1 vbd
    assert float(rows["web1"][3]) > 20.0        # its second sample: half a cpu busy
    assert float(lines[2].split()[3]) == 0.0     # the first: no earlier sample
    fails(host.xm("top", "-d", "0"), r"the delay must be positive")


def test_cpupools(credit2, tmp_path):
    host = credit2
    create(host, tmp_path, "g1")
    out = ok(host.xm("cpupool-list"))
    assert out == ("Name               CPUs   Sched     Active   Domain count\n"
                   "Pool-0               4   credit2       y          2\n")
    cfg = tmp_path / "p1.cfg"
    cfg.write_text('name = "p1"\nsched = "credit"\ncpus = "2-3"\n')
    fails(host.xm("cpupool-create", str(cfg)), r"Not enough free CPUs for pool p1: it needs 2, "
                                                r"0 free")
    ok(host.xm("cpupool-cpu-remove", "Pool-0", "3"))
    ok(host.xm("cpupool-cpu-remove", "Pool-0", "2"))
    assert ok(host.xm("info")).count("free_cpus              : 2\n") == 1
    dry = sxp.from_string(ok(host.xm("cpupool-create", "-n", str(cfg))))
    assert dry == ["pool", ["name_label", "p1"], ["sched_policy", "credit"], ["ncpu", "2"],
                   ["proposed_CPUs", "2", "3"], ["other_config"]]
    ok(host.xm("cpupool-create", str(cfg)))
    fails(host.xm("cpupool-create", str(cfg)), r'Pool name "p1" already exists')
    assert ok(host.xm("cpupool-list", "-c")) == ("Name             CPU list\n"
                                                 "Pool-0           0,1\np1               2,3\n")
    ok(host.xm("cpupool-migrate", "g1", "p1"))
    assert ok(host.xm("list", "--pool=p1")).splitlines()[1].startswith("g1 ")
    long = sxp.from_string(ok(host.xm("cpupool-list", "-l", "p1")))
    fields = {k[0]: k[1:] for k in long[1:]}
    assert fields["started_VM_names"] == ["g1"] and fields["host_CPU_numbers"] == ["2", "3"]
    assert fields["sched_policy"] == ["credit"]
    fails(host.xm("cpupool-destroy", "p1"), r"Pool p1 is in use by domain\(s\) g1")
    fails(host.xm("cpupool-cpu-add", "p1", "0"), r'CPU 0 is already assigned to pool "Pool-0"')
    fails(host.xm("cpupool-list", "nosuch"), r"Pool 'nosuch' does not exist")
    # the pool is where xl looks for its name
    store = Path(host.paths["simulated-state-path"]) / "store"
    assert any(re.search(r'"/local/pool/1/name": ?"p1"', p.read_text())
               for p in store.glob("*.json"))
    # the domain keeps its pool in its configuration: a restart puts it back there
    ok(host.xm("cpupool-migrate", "g1", "Pool-0"))
    ok(host.xm("cpupool-destroy", "p1"))
    assert "p1" not in ok(host.xm("cpupool-list"))
    # managed pools: new, start, delete
    ok(host.xm("cpupool-new", str(cfg)))
    assert ok(host.xm("cpupool-list")).splitlines()[-1].split() == ["p1", "2", "credit", "n",
                                                                     "0"]
    ok(host.xm("cpupool-start", "p1"))
    fails(host.xm("cpupool-delete", "p1"), r"Pool p1 is activated: destroy it first")
    ok(host.xm("cpupool-destroy", "p1"))
    ok(host.xm("cpupool-delete", "p1"))
    assert ok(host.xm("cpupool-list", "-c")).splitlines()[1:] == ["Pool-0           0,1"]


def test_a_domain_configured_in_a_pool_starts_there(credit2, tmp_path):
    host = credit2
    ok(host.xm("cpupool-cpu-remove", "Pool-0", "3"))
    cfg = tmp_path / "p2.cfg"
    cfg.write_text('name = "p2"\ncpus = 1\n')
    ok(host.xm("cpupool-new", str(cfg)))
    ok(host.xm("cpupool-start", "p2"))
    create(host, tmp_path, "g2", "pool = 'p2'\n")
    assert ok(host.xm("list", "--pool=p2")).splitlines()[1].startswith("g2 ")
    fails(host.xm("create", str(write_cfg(tmp_path, "g3", "pool = 'nosuch'\n"))),
          r"unknown pool nosuch")
    assert host.xm("domid", "g3").returncode != 0          # nothing left of it


def test_list_label_shell_and_missing_commands(credit2, tmp_path):
    host = credit2
    create(host, tmp_path, "g1")
    fails(host.xm("list", "--label"), r"no domain has a security label")
    r = host.xm("shell", input="domid g1\nfrobnicate\nlist g1\nquit\nlist\n")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].isdigit() and "g1 " in r.stdout.splitlines()[2]
    assert "Error: Subcommand frobnicate not found!" in r.stderr
    assert r.stdout.count("Name ") == 1                     # nothing after quit
    r = host.xm("tmem-list")
    assert (r.returncode, r.stderr) == (1, "Error: xm tmem-list is not in this xm: "
                                           "transcendent memory (tmem) left Xen in 4.13.\n")
    fails(host.xm("help", "vnet-list"), r"vnets needed a kernel module")


def test_help_lists_every_command_and_each_has_its_help():
    from tests.test_xm_cli import run_xm

    out = run_xm("help").stdout
    for name in xm_main.COMMANDS:
        assert f" {name:<20} " in out or f" {name} " in out
        r = run_xm("help", name)
        assert r.returncode == 0 and r.stdout.startswith(f"Usage: xm {name}"), name
    missing = out.rsplit("Commands of xm 4.4 this xm has not (xm CMD says why): ", 1)[1]
    assert set(missing.split()) == set(xm_main.MISSING)
    # every command of xm 4.4 is one of the two
    xm44 = {"block-attach", "block-configure", "block-detach", "block-list", "network-attach",
            "network-detach", "network-list", "pci-attach", "pci-detach", "pci-list",
            "pci-list-assignable-devices", "domstate", "reset", "trigger", "debug-keys",
            "sched-credit2", "sched-sedf", "top", "shell", "cpupool-create", "cpupool-new",
            "cpupool-start", "cpupool-list", "cpupool-destroy", "cpupool-delete",
            "cpupool-cpu-add", "cpupool-cpu-remove", "cpupool-migrate", "vncviewer", "serve",
            "usb-add", "usb-del", "scsi-attach", "tmem-list", "addlabel", "getenforce"}
    assert xm44 <= set(xm_main.COMMANDS) | set(xm_main.MISSING)
