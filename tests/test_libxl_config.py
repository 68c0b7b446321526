"""The real-Xen build's pure pieces: a domain's spec as libxl's JSON configuration (and back),
the host checks made before anything is built, and the config <-> spec translation of the
domain layer. The library itself is exercised in the real-Xen suite (tests/xen)."""
from __future__ import annotations

import json
import os

import pytest

from xend.domains import buildspec
from xend.domains.config import parse_config
from xend.domains.settings import Settings
from xend.hypervisor import hostcheck, libxl_config as L
from xend.hypervisor.base import DeviceSpec, DomainSpec, Hypervisor
from xend.options import parse_options

UUID = "1fb86fc9-3f39-40fb-8975-d12f184d506c"


def spec(**kw) -> DomainSpec:
    base = dict(name="g1", uuid=UUID, memory_kib=128 * 1024, maxmem_kib=256 * 1024,
                kernel="/boot/vmlinuz", ramdisk="/boot/initrd", cmdline="console=hvc0")
    base.update(kw)
    return DomainSpec(**base)


def vbd(uname: str, dev: str, mode: str = "w", devid: int = 51712) -> DeviceSpec:
    return DeviceSpec("vbd", devid, 0, {"uname": uname, "dev": dev, "mode": mode})


def vif(devid: int = 0, **details) -> DeviceSpec:
    return DeviceSpec("vif", devid, 0, details)


def test_a_pv_guest_as_xl_would_write_it():
    cfg = L.domain_config(spec(
        vcpus=2, online_vcpus=1, affinity=((0,), (1,)), cpu_weight=512, cpu_cap=50,
        on_poweroff="destroy", on_reboot="restart", on_crash="coredump-restart",
        devices=(vbd("file:/srv/g1.img", "xvda"), vif(mac="00:16:3e:11:22:33",
                                                      bridge="xenbr0",
                                                      script="/etc/xen/scripts/vif-bridge"))))
    assert cfg["c_info"] == {"type": "pv", "name": "g1", "uuid": UUID}
    b = cfg["b_info"]
    assert (b["max_vcpus"], b["avail_vcpus"]) == (2, [0])
    assert (b["max_memkb"], b["target_memkb"]) == (256 * 1024, 128 * 1024)
    assert b["vcpu_hard_affinity"] == [[0], [1]]
    assert b["sched_params"] == {"weight": 512, "cap": 50}
    assert (b["kernel"], b["ramdisk"], b["cmdline"]) == ("/boot/vmlinuz", "/boot/initrd",
                                                         "console=hvc0")
    assert b["type.pv"] == {}
    assert cfg["disks"] == [{"backend_domid": 0, "pdev_path": "/srv/g1.img", "vdev": "xvda",
                             "format": "raw", "readwrite": 1, "is_cdrom": 0}]
    assert cfg["nics"] == [{"backend_domid": 0, "devid": 0, "mac": "00:16:3e:11:22:33",
                            "bridge": "xenbr0", "script": "/etc/xen/scripts/vif-bridge",
                            "nictype": "vif"}]
    assert (cfg["on_poweroff"], cfg["on_reboot"], cfg["on_crash"]) == \
        ("destroy", "restart", "coredump_restart")
    json.loads(L.domain_json(spec()))       # serialisable


def test_pvh_and_hvm_types():
    assert L.domain_config(spec(pvh=True))["c_info"]["type"] == "pvh"
    assert "type.pvh" in L.domain_config(spec(pvh=True))["b_info"]
    hvm = L.domain_config(spec(hvm=True, kernel="", image=(("boot", "dc"), ("vnc", "1"),
                                                           ("vnclisten", "0.0.0.0"),
                                                           ("acpi", "1"))))
    assert hvm["c_info"]["type"] == "hvm"
    part = hvm["b_info"]["type.hvm"]
    assert part["boot"] == "dc" and part["acpi"] == "True"
    assert part["vnc"] == {"enable": "True", "listen": "0.0.0.0", "findunused": "True"}
    assert hvm["b_info"]["device_model_version"] == "qemu_xen"


def test_tsc_mode_as_xm_numbers_it():
    assert "tsc_mode" not in L.domain_config(spec(image=(("tsc_mode", "0"),)))["b_info"]
    for number, name in (("1", "always_emulate"), ("2", "native"), ("3", "native_paravirt")):
        assert L.domain_config(spec(image=(("tsc_mode", number),)))["b_info"]["tsc_mode"] == name
    with pytest.raises(L.LibxlConfigError, match="tsc_mode '7'"):
        L.domain_config(spec(image=(("tsc_mode", "7"),)))


@pytest.mark.parametrize("uname,dev,mode,expect", [
    ("phy:/dev/vg/g1", "xvda", "w", {"pdev_path": "/dev/vg/g1", "backend": "phy",
                                     "readwrite": 1}),
    ("phy:sdb1", "sda1", "r", {"pdev_path": "/dev/sdb1", "vdev": "sda1", "readwrite": 0}),
    ("tap:aio:/srv/x.img", "xvdb", "w", {"pdev_path": "/srv/x.img", "format": "raw"}),
    ("tap2:qcow2:/srv/x.qcow2", "xvdc", "w", {"format": "qcow2", "backend": "qdisk"}),
    ("file:/iso/d.iso", "hdc:cdrom", "r", {"vdev": "hdc", "is_cdrom": 1, "readwrite": 0}),
    ("", "hdc:cdrom", "r", {"format": "empty", "is_cdrom": 1, "pdev_path": ""}),
])
def test_disks(uname, dev, mode, expect):
    got = L.disk_json(vbd(uname, dev, mode))
    assert {k: got.get(k) for k in expect} == expect


def test_bad_disks_are_refused():
    with pytest.raises(L.LibxlConfigError, match="unknown disk type 'nbd'"):
        L.disk_json(vbd("nbd:host:1234", "xvda"))
    with pytest.raises(L.LibxlConfigError, match="no virtual device"):
        L.disk_json(vbd("file:/x", ""))
    with pytest.raises(L.LibxlConfigError, match="cannot be built"):
        L.domain_config(spec(devices=(DeviceSpec("vtpm", 0, 0, {}),)))


@pytest.mark.parametrize("rate,expect", [
    ("10MB/s", (500000, 50000)), ("100Mb/s@20ms", (250000, 20000)),
    ("1kB/s@1s", (1000, 1000000)), ("8b/s@1s", (1, 1000000)),
])
def test_vif_rates_as_xl_reads_them(rate, expect):
    assert L.parse_rate(rate) == expect


def test_a_bad_rate_is_refused():
    with pytest.raises(L.LibxlConfigError, match="vif rate"):
        L.parse_rate("fast")


def test_what_libxl_keeps_becomes_a_spec_again():
    original = spec(vcpus=2, online_vcpus=1, cpu_weight=300, cpu_cap=0,
                    on_reboot="rename-restart",
                    devices=(vbd("phy:/dev/vg/g1", "xvda"), vif(3, mac="00:16:3e:00:00:03",
                                                                bridge="br1", vifname="g1e")))
    back = L.spec_from_config(json.loads(L.domain_json(original)))
    for field in ("name", "uuid", "memory_kib", "maxmem_kib", "vcpus", "online_vcpus",
                  "kernel", "ramdisk", "cmdline", "cpu_weight", "on_reboot"):
        assert getattr(back, field) == getattr(original, field), field
    disk, nic = back.devices
    assert disk.backend == {"uname": "phy:/dev/vg/g1", "dev": "xvda:disk", "mode": "w"}
    assert (nic.devid, nic.backend) == (3, {"mac": "00:16:3e:00:00:03", "bridge": "br1",
                                            "vifname": "g1e"})


# -- host checks -----------------------------------------------------------------------------
@pytest.fixture
def host(tmp_path):
    net = tmp_path / "net"
    (net / "xenbr0" / "bridge").mkdir(parents=True)
    (net / "eth0").mkdir()
    layout = hostcheck.HostLayout(4, 17, sys_net=str(net))
    layout.lib = str(tmp_path / "xenlib")          # no hvmloader, no device model there
    return layout


def test_a_buildable_guest_has_no_problems(host, tmp_path):
    kernel, disk = tmp_path / "vmlinuz", tmp_path / "disk.img"
    kernel.write_bytes(b"k")
    disk.write_bytes(b"\0" * 512)
    s = spec(kernel=str(kernel), ramdisk="", devices=(vbd(f"file:{disk}", "xvda"),
                                                      vif(bridge="xenbr0")))
    assert hostcheck.problems(s, host) == []


def test_each_missing_piece_is_named(host, tmp_path):
    s = spec(kernel=str(tmp_path / "nokernel"), ramdisk="",
             devices=(vbd(f"file:{tmp_path}/nodisk.img", "xvda"), vif(bridge="eth0"),
                      vif(1), DeviceSpec("vfb", 0, 0, {"vnc": "1"})))
    found = hostcheck.problems(s, host)
    assert f"its kernel {tmp_path}/nokernel does not exist" in found
    assert f"its disk xvda: {tmp_path}/nodisk.img does not exist" in found
    assert "its vif's bridge eth0 does not exist" in found       # a device, not a bridge
    assert "its vif's bridge xenbr0 does not exist" not in found   # the default one is there
    assert any("need a device model" in p and "vfb" in p for p in found)
    assert hostcheck.problems(spec(kernel="", ramdisk=""), host) == \
        ["it has neither a kernel nor a bootloader"]


def test_hvm_needs_firmware_and_a_device_model(host):
    if any(os.path.exists(p) for p in hostcheck.DEVICE_MODELS[:1]):
        pytest.skip("this host has a device model")
    found = hostcheck.problems(spec(hvm=True, kernel="", ramdisk=""), host)
    assert any("HVM guests need the firmware hvmloader" in p for p in found)
    assert any("HVM guests need a device model" in p for p in found)


def test_a_phy_disk_must_be_a_block_device(host, tmp_path):
    (tmp_path / "notadev").mkdir()
    found = hostcheck.problems(spec(kernel="", ramdisk="", bootloader="/bin/true",
                                    devices=(vbd(f"phy:{tmp_path}/notadev", "xvda"),)), host)
    assert found == [f"its disk xvda: {tmp_path}/notadev is not a block device"]


def test_a_missing_bootloader_is_named(host):
    found = hostcheck.problems(spec(kernel="", ramdisk="", bootloader="no-such-grub"), host)
    assert found == ["its bootloader no-such-grub is not installed on this host"]


# -- the domain layer's translation ------------------------------------------------------------
class _Builder:
    """Stands for a backend that builds devices (buildspec only reads the flag)."""
    builds_devices = True


def test_a_domain_config_becomes_a_spec_with_its_devices():
    settings = Settings.from_opts(parse_options(""))
    cfg = parse_config(["vm", ["name", "g1"], ["memory", "96"], ["maxmem", "128"],
                        ["vcpus", "2"], ["vcpu_avail", "1"], ["cpu_weight", "512"],
                        ["image", ["linux", ["kernel", "/k"], ["ramdisk", "/r"],
                                   ["root", "/dev/xvda1"], ["args", "quiet"], ["pvh", "1"]]],
                        ["device", ["vbd", ["uname", "file:/d.img"], ["dev", "xvda"],
                                    ["mode", "w"]]],
                        ["device", ["vif", ["mac", "00:16:3e:00:00:01"]]],
                        ["device", ["vfb", ["vnc", "1"]]]])
    s = buildspec.spec_for(cfg, settings, _Builder())
    assert (s.memory_kib, s.maxmem_kib, s.vcpus, s.online_vcpus) == (96 * 1024, 128 * 1024,
                                                                     2, 1)
    assert (s.kernel, s.ramdisk, s.cmdline, s.pvh) == ("/k", "/r", "root=/dev/xvda1 quiet",
                                                        True)
    assert s.cpu_weight == 512 and s.cpu_cap == 0
    assert [(d.cls, d.devid) for d in s.devices] == [("vbd", 51712), ("vif", 0), ("vfb", 0)]
    assert s.devices[1].backend == {"mac": "00:16:3e:00:00:01", "handle": "0"}
    plain = buildspec.spec_for(cfg, settings, Hypervisor)    # a backend that does not build
    assert plain.devices == ()


def test_a_domain_built_elsewhere_becomes_a_config():
    native = spec(vcpus=2, online_vcpus=1, on_crash="preserve",
                  devices=(vbd("file:/d.img", "xvda"), vif(mac="00:16:3e:00:00:09",
                                                           bridge="xenbr0")))
    cfg = buildspec.config_from_spec(native, "byxl")
    assert (cfg.name, cfg.uuid, cfg.memory, cfg.maxmem, cfg.vcpus) == ("byxl", UUID, 128, 256,
                                                                       2)
    assert cfg.online_vcpus == 1 and cfg.on_crash == "preserve"
    assert (cfg.kernel, cfg.ramdisk, cfg.args) == ("/boot/vmlinuz", "/boot/initrd",
                                                   "console=hvc0")
    assert cfg.devices == (["vbd", ["uname", "file:/d.img"], ["dev", "xvda"], ["mode", "w"]],
                           ["vif", ["mac", "00:16:3e:00:00:09"], ["bridge", "xenbr0"]])


def test_xm_s_pygrub_path_is_found_where_the_host_keeps_it(tmp_path):
    """xm writes bootloader pygrub as /usr/lib/xen/bin/pygrub (the original's path); a host
    that keeps it in /usr/lib/xen-4.17/bin has it there."""
    layout = hostcheck.HostLayout(4, 17)
    layout.lib = str(tmp_path / "xen-4.17")
    (tmp_path / "xen-4.17" / "bin").mkdir(parents=True)
    loader = tmp_path / "xen-4.17" / "bin" / "pygrub"
    loader.write_text("#!/bin/sh\n")
    loader.chmod(0o755)
    assert layout.bootloader("/usr/lib/xen/bin/pygrub") in (str(loader),
                                                            "/usr/lib/xen/bin/pygrub")
    assert layout.bootloader("pygrub") is not None
    assert layout.bootloader("/nowhere/no-such-loader") is None


def test_a_libxl_failure_is_reported_by_its_first_errors():
    """What libxl said during a failed call: its first errors (the cause: a hotplug script's
    own hotplug-error) before the messages of its undoing the half-built domain, and
    warnings only after the errors."""
    from xend.hypervisor.libxl_toolstack import WARNING_MARK, LibxlToolstack
    ts = object.__new__(LibxlToolstack)          # no context: _fail reads nothing else
    messages = [WARNING_MARK + "bootloader='/usr/bin/pygrub' is deprecated",
                "script: xenvm: this vif is refused",
                "libxl_device.c:1299:device_hotplug_child_death_cb: script: /etc/xen/scripts/"
                "vif-bridge failed; error detected.",
                "libxl_create.c:1676:domcreate_attach_devices: unable to add nic devices",
                "script: xenvm: this vif is refused",
                "libxl_domain.c:1183:libxl__destroy_domid: Domain 3:Non-existant domain",
                "libxl_domain.c:1137:domain_destroy_callback: Unable to destroy guest"]
    err = ts._fail(-3, "building domain bad failed", messages)
    assert err.message.startswith("building domain bad failed: script: xenvm: this vif is "
                                  "refused; ")
    assert "pygrub" not in err.message            # 4 errors came first
    assert err.message.count("this vif is refused") == 1
    only_warning = ts._fail(-6, "x", [WARNING_MARK + "a warning"])
    assert only_warning.message == "x: a warning" and only_warning.errno == 22
    assert ts._fail(-21, "y", []).message == "y: domain not found"
