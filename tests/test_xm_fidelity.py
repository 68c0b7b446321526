"""Details of the existing xm commands made as the original 4.4 xm had them (issue 17):
create/new's messages, the dry run's SXP, refusals before anything is built, mem-set's
units, dmesg, list -l's floats, info's fields, HVM framebuffers, vcpu-list."""
from __future__ import annotations

import re
import sys
import xmlrpc.client

import pytest

from xend import sxp
from tests.test_devices_hotplug import _post, fails, ok
from tests.test_devices_hotplug import host  # noqa: F401 - the fixture
from tests.test_xm_cli import run_xm

pytestmark = pytest.mark.timeout(180)


def dry_run(tmp_path, body: str) -> list:
    cfg = tmp_path / "d.cfg"
    cfg.write_text(body)
    r = run_xm("create", "-n", "-q", str(cfg),
               env={"XM_SERVER": f"httpu://{tmp_path}/none.sock"})
    assert r.returncode == 0, r.stderr
    return sxp.from_string(r.stdout)


def child(value, key):
    return next((c for c in value[1:] if isinstance(c, list) and c and c[0] == key), None)


def test_dry_run_carries_what_xm_4_4_sent(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    pv = dry_run(tmp_path, f'name = "p"\nkernel = "{kernel}"\n')
    assert child(pv, "on_xend_start") == ["on_xend_start", "ignore"]
    assert child(pv, "on_xend_stop") == ["on_xend_stop", "ignore"]
    assert child(child(pv, "image")[1], "videoram") == ["videoram", "4"]
    pv = dry_run(tmp_path, f'name = "p"\nkernel = "{kernel}"\non_xend_stop = "suspend"\n')
    assert child(pv, "on_xend_stop") == ["on_xend_stop", "suspend"]
    hvm = child(dry_run(tmp_path, 'name = "h"\nbuilder = "hvm"\nkernel = "hvmloader"\n'
                                  'watchdog = "i6300esb"\n'), "image")[1]
    assert hvm[0] == "hvm"
    for key in ("cpuid", "cpuid_check", "pci"):
        assert child(hvm, key) == [key, []], key              # (cpuid ()) ...
    assert child(hvm, "videoram") == ["videoram", "4"]
    assert child(hvm, "nestedhvm") == ["nestedhvm", "0"]
    assert child(hvm, "watchdog") is None and child(hvm, "watchdog_action") is None
    keys = [c[0] for c in hvm[1:]]
    assert keys.index("cpuid_check") < keys.index("nestedhvm") < keys.index("pci")
    hvm = child(dry_run(tmp_path, 'name = "h"\nbuilder = "hvm"\nkernel = "hvmloader"\n'
                                  'pci = ["00:1f.2"]\n'), "image")[1]
    assert child(hvm, "pci") == ["pci", [["0x0000", "0x00", "0x1f", "0x2", "0x100", [],
                                          "0000:00:1f.2"]]]


def test_vmx_passes_the_dry_run_and_create_refuses_it(tmp_path):
    loader = tmp_path / "hvmloader-3.0"
    loader.write_bytes(b"l")
    image = child(dry_run(tmp_path, f'name = "v"\nbuilder = "vmx"\nkernel = "{loader}"\n'),
                  "image")[1]
    assert image[0] == "vmx" and child(image, "acpi") is None
    cfg = tmp_path / "v.cfg"
    cfg.write_text(f'name = "v"\nbuilder = "vmx"\nkernel = "{loader}"\n')
    r = run_xm("create", str(cfg), env={"XM_SERVER": f"httpu://{tmp_path}/none.sock"})
    assert r.returncode == 1 and r.stderr == ('Error: Unknown builder "vmx": use "linux" or '
                                              '"hvm" ("vmx" was renamed "hvm" in Xen 3.0.3)\n')
    assert "Usage: xm create <ConfigFile> [options] [vars]" in r.stdout


def test_create_refusals_and_messages(host, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    cfg = tmp_path / "n1.cfg"
    cfg.write_text('name = "n1"\nmemory = 64\n')
    r = fails(host.xm("create", str(cfg)), r"A PV guest needs a kernel or a bootloader")
    assert "Usage: xm create" in host.xm("create", str(cfg)).stdout
    cfg.write_text(f'name = "n1"\nkernel = "{kernel}"\ndisk = ["file:{tmp_path}/no.img,xvda,w"]\n')
    fails(host.xm("create", str(cfg)), rf"Disk image does not exist: {tmp_path}/no\.img")
    assert host.xm("domid", "n1").returncode == 3             # nothing was built
    # new: the error only, no usage
    cfg.write_text(f'name = "Domain-0"\nkernel = "{kernel}"\n')
    r = host.xm("new", str(cfg))
    assert r.returncode == 1 and "already exists" in r.stderr
    assert r.stdout == f'Using config file "{cfg}".\n'
    # a typo gets a warning naming the closest variable
    cfg.write_text(f'name = "t1"\nkernel = "{kernel}"\nmemroy = 96\n')
    r = host.xm("create", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f"Warning: {cfg}: unknown variable 'memroy', ignored (did you mean "
                        "'memory'?)\n")
    assert r.stdout.startswith(f'Using config file "{cfg}".\n')


def test_the_server_refuses_boot_files_that_are_not_there(host, tmp_path):
    x = host.proxy().xend.domain
    for image, message in ((["linux", ["kernel", "/no/such/vmlinuz"]],
                            "Kernel image does not exist: /no/such/vmlinuz"),
                           (["linux", ["kernel", sys.executable], ["ramdisk", "/no/initrd"]],
                            "Kernel ramdisk does not exist: /no/initrd")):
        with pytest.raises(xmlrpc.client.Fault) as e:
            x.create(["vm", ["name", "k1"], ["memory", "64"], ["image", image]])
        assert e.value.faultString == message
    with pytest.raises(xmlrpc.client.Fault) as e:
        x.create(["vm", ["name", "k1"], ["memory", "64"], ["bootloader", "/no/pygrub"],
                  ["image", ["linux"]]])
    assert "Bootloader isn't executable" in e.value.faultString
    status, body = _post(host, "/xend/domain", op="create",
                         config="(vm (name k2) (memory 64) (image (linux (kernel /nope))))")
    assert status == 500 and "Kernel image does not exist: /nope" in body
    assert ok(host.xm("list")).count("\n") == 2               # only Domain-0


def test_hvm_vnc_gets_its_vfb(host, tmp_path):
    cfg = tmp_path / "h1.cfg"
    cfg.write_text('name = "h1"\nbuilder = "hvm"\nkernel = "hvmloader"\nmemory = 64\n'
                   'vnc = 1\nvncdisplay = 3\nvncpasswd = "s3cret"\n')
    ok(host.xm("create", str(cfg)))
    rec = sxp.from_string(ok(host.xm("list", "-l", "h1")))
    vfbs = [d[1] for d in rec[1:] if isinstance(d, list) and d[0] == "device"
            and d[1][0] == "vfb"]
    assert len(vfbs) == 1 and child(vfbs[0], "vnc") == ["vnc", "1"]
    assert child(vfbs[0], "vncdisplay") == ["vncdisplay", "3"]
    assert child(vfbs[0], "vncpasswd") == ["vncpasswd", "s3cret"]


def test_mem_set_dmesg_list_floats_info_and_vcpus(host, tmp_path):
    cfg = tmp_path / "g1.cfg"
    cfg.write_text(f'name = "g1"\nkernel = "{sys.executable}"\nvcpus = 2\n')
    ok(host.xm("create", str(cfg)))
    r = host.xm("mem-set", "g1", "10x")
    assert r.returncode == 1 and r.stdout.startswith("ignoring unknown unit\n")
    assert r.stderr.startswith("Error: Invalid memory size: 0 MiB")
    ok(host.xm("dmesg", "-c"))
    assert ok(host.xm("dmesg")) == "\n"                        # an empty ring: one empty line
    # floats as the original's Python 2 showed them: 12 significant digits
    long = ok(host.xm("list", "-l", "g1"))
    start = re.search(r"\(start_time ([0-9.]+)\)", long).group(1)
    assert len(start.replace(".", "")) <= 12
    assert float(start) == pytest.approx(float(host.proxy().xend.domain("g1")[
        [c[0] for c in host.proxy().xend.domain("g1")].index("start_time")][1]), abs=0.01)
    # xm info: the fields of the original, each at its column
    info = ok(host.xm("info"))
    fields = dict(line.split(":", 1) for line in info.splitlines() if line[23:24] == ":")
    assert fields["sockets_per_node".ljust(23)] == " 1"
    assert fields["node_to_cpu".ljust(23)] == " node0:0-3"
    assert fields["cpu_mhz".ljust(23)] == " 2400.000"
    assert fields["virt_caps".ljust(23)].split()[:2] == ["pv", "hvm"]
    assert all(line[23] == ":" for line in info.splitlines()), info
    numa = ok(host.xm("info", "-n"))
    assert "cpu_topology           : \ncpu:    core    socket     node\n  0:       0" in numa
    assert "numa_info              : \nnode: TotalMemory FreeMemory dma32Memory NodeDist:" in numa
    # an offline vcpu: blank CPU and State
    ok(host.xm("vcpu-set", "g1", "1"))
    rows = ok(host.xm("vcpu-list", "g1")).splitlines()
    assert rows[2][39:44].strip() == "1"
    assert rows[2][45:50].strip() == "" and rows[2][51:56].strip() == ""
    assert rows[1][45:50].strip().isdigit() and rows[1][51:56].strip()
