"""The options that used to have no effect, each shown to do what it says (the project rule:
every option of xend-config.sxp has a visible effect).

Through the real daemon where a user sees the effect (``xm list -l``, ``xm create`` errors,
files, xend.log, ``xend check-config``); in-process (a registry on a simulated host) for the
finer points.
"""
from __future__ import annotations

import re
import stat
import time
from pathlib import Path

import pytest

from xend import sxp
from xend.domains import devicemodel, devices
from xend.domains.config import parse_config
from xend.domains.settings import Settings
from xend.errors import VmError, XendError
from xend.hypervisor.simulated import SimulatedHypervisor
from xend.options import defaults, parse_options, render_check_config

from tests.daemon_helpers import XendInstance
from tests.test_domains_support import Env, child, make_opts, vm

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cr3t-vnc"


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def instances():
    started = []

    def start(root: Path, extra: str = "", **kw) -> XendInstance:
        inst = XendInstance(root, extra=extra, **kw).start()
        started.append(inst)
        return inst

    yield start
    for inst in started:
        inst.stop()
        inst.kill()


def ok(r) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    return r.stdout


def write_cfg(tmp: Path, name: str, body: str) -> Path:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"\0" * 64)
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nkernel = "{kernel}"\nmemory = 64\n' + body)
    return cfg


def write_hvm_cfg(tmp: Path, name: str, body: str = "") -> Path:
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nbuilder = "hvm"\nkernel = "hvmloader"\nmemory = 64\n'
                   + body)
    return cfg


def long_record(inst: XendInstance, name: str) -> list:
    """The domain's record as ``xm list -l NAME`` prints it."""
    [rec] = sxp.parse_all(ok(inst.xm("list", "-l", name)))
    return rec


def devices_of(rec: list, cls: str) -> list:
    return [d[1] for d in rec[1:] if isinstance(d, list) and d[:1] == ["device"]
            and d[1][0] == cls]


def image_of(rec: list) -> list:
    return sxp.child_value(rec, "image")


def sim_store(inst: XendInstance) -> SimulatedHypervisor:
    """The simulated host's state, read from outside xend (as ``xend-sim`` does)."""
    return SimulatedHypervisor(str(inst.paths["simulated-state-path"]), create=False)


def xend_log(inst: XendInstance) -> str:
    return inst.paths["logfile"].read_text()


# -- vif-script ---------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_vif_script_fills_vifs_without_a_script(tmp_path, instances):
    inst = instances(tmp_path / "x", "(vif-script vif-route)")
    cfg = write_cfg(tmp_path, "g1", "vif = ['mac=00:16:3e:00:00:01', 'script=vif-nat']\n")
    ok(inst.xm("create", str(cfg)))

    first, second = devices_of(long_record(inst, "g1"), "vif")
    assert sxp.child_value(first, "script") == "vif-route"     # the option
    assert sxp.child_value(second, "script") == "vif-nat"      # the vif's own wins
    rec = inst.proxy().xend.domain("g1", 1)                    # xend.domain(dom, 1) alike
    assert [sxp.child_value(d, "script") for d in devices_of(rec, "vif")] == \
        ["vif-route", "vif-nat"]

    # ... and the backend got the script's path, as the original wrote it for the hotplug
    domid = int(sxp.child_value(rec, "domid"))
    hv = sim_store(inst)
    try:
        assert hv.store_read(f"/local/domain/0/backend/vif/{domid}/0/script") == \
            "/etc/xen/scripts/vif-route"
        assert hv.store_read(f"/local/domain/0/backend/vif/{domid}/1/script") == \
            "/etc/xen/scripts/vif-nat"
        assert hv.store_read(f"/local/domain/0/backend/vif/{domid}/0/hotplug-status") == \
            "connected"
    finally:
        hv.close()


def test_vif_script_default_and_empty(tmp_path):
    cfg = parse_config(vm("g", device=["vif", ["mac", "00:16:3e:00:00:02"]]))
    dflt = devices.apply_defaults(cfg, Settings.from_opts(defaults()))
    ids = [["uuid", devices.device_uuid(cfg.uuid, "vif", 0)], ["devid", "0"], ["backend", "0"]]
    assert dflt.devices == (["vif", ["mac", "00:16:3e:00:00:02"], ["script", "vif-bridge"]]
                            + ids,)
    none = devices.apply_defaults(cfg, Settings.from_opts(parse_options("(vif-script '')")))
    assert none.devices == (["vif", ["mac", "00:16:3e:00:00:02"]] + ids,)  # '' adds no script
    assert devices.apply_defaults(none, Settings.from_opts(parse_options("(vif-script '')"))) \
        is none
    assert devices.apply_defaults(dflt, Settings.from_opts(defaults())) is dflt   # idempotent


# -- vnc-listen, vncpasswd, keymap --------------------------------------------------------------
@pytest.mark.timeout(120)
def test_vnc_and_keymap_defaults_fill_hvm_images_and_vfbs(tmp_path, instances):
    inst = instances(tmp_path / "x", f"(vnc-listen 0.0.0.0)\n(vncpasswd '{SECRET}')\n"
                                     "(keymap de)")
    ok(inst.xm("create", str(write_hvm_cfg(tmp_path, "h1", "vnc = 1\n"))))
    ok(inst.xm("create", str(write_hvm_cfg(tmp_path, "h2", "vnc = 0\nsdl = 1\n"))))
    ok(inst.xm("create", str(write_cfg(
        tmp_path, "p1", "vfb = ['type=vnc', 'vnc=1,vncpasswd=mine,vnclisten=10.0.0.1,"
                        "keymap=fr', 'sdl=1']\n"))))

    image = image_of(long_record(inst, "h1"))[1:]
    assert sxp.child_value(["i"] + image, "vnclisten") == "0.0.0.0"
    assert sxp.child_value(["i"] + image, "vncpasswd") == SECRET
    assert sxp.child_value(["i"] + image, "keymap") == "de"     # xm sent (keymap '')
    sdl_only = ["i"] + image_of(long_record(inst, "h2"))[1:]
    assert sxp.child_value(sdl_only, "vnclisten") is None      # no VNC: no VNC settings
    assert sxp.child_value(sdl_only, "vncpasswd") is None
    assert sxp.child_value(sdl_only, "keymap") == "de"

    plain, own, sdl = devices_of(long_record(inst, "p1"), "vfb")
    assert [sxp.child_value(plain, k) for k in ("vnclisten", "vncpasswd", "keymap")] == \
        ["0.0.0.0", SECRET, "de"]
    assert [sxp.child_value(own, k) for k in ("vnclisten", "vncpasswd", "keymap")] == \
        ["10.0.0.1", "mine", "fr"]
    assert [sxp.child_value(sdl, k) for k in ("vnclisten", "vncpasswd", "keymap")] == \
        [None, None, "de"]

    # the password is in the records (as the original showed it), never in a log
    logs = [inst.paths["logfile"], inst.paths["xend-debug-logfile"],
            *inst.paths["logfile"].parent.glob("qemu-dm-*.log")]
    assert len(logs) >= 5
    for path in logs:
        assert SECRET not in path.read_text(errors="replace"), path
    assert "vnc 0.0.0.0:0,password" in (inst.paths["logfile"].parent /
                                        "qemu-dm-h1.log").read_text()


def test_vnc_defaults_keep_the_guests_own_values():
    s = Settings.from_opts(parse_options(f"(vncpasswd {SECRET})\n(vnc-listen 0.0.0.0)"))
    cfg = parse_config(["vm", ["name", "h"], ["image", ["hvm", ["kernel", "hvmloader"],
                                                        ["vnc", "1"], ["vncpasswd", ""],
                                                        ["vnclisten", "127.0.0.2"]]]])
    assert devices.apply_defaults(cfg, s) is cfg        # '' = no password, kept
    # no default password configured: none added; vnclisten still is
    s2 = Settings.from_opts(defaults())
    cfg2 = parse_config(["vm", ["name", "h"], ["device", ["vfb", ["type", "vnc"]]]])
    assert devices.apply_defaults(cfg2, s2).devices == (
        ["vfb", ["type", "vnc"], ["vnclisten", "127.0.0.1"]],)
    assert SECRET not in repr(s)                        # settings never show it


# -- vnc-tls, vnc-x509-cert-dir, vnc-x509-verify -------------------------------------------------
@pytest.mark.timeout(120)
def test_vnc_tls_settings_reach_the_device_model_and_need_the_cert_dir(tmp_path, instances):
    certs = tmp_path / "vnc-certs"
    certs.mkdir()
    inst = instances(tmp_path / "x", f"(vnc-tls 1)\n(vnc-x509-cert-dir {certs})\n"
                                     "(vnc-x509-verify 1)")
    ok(inst.xm("create", str(write_hvm_cfg(tmp_path, "h1", "vnc = 1\n"))))
    text = (inst.paths["logfile"].parent / "qemu-dm-h1.log").read_text()
    assert f"vnc 127.0.0.1:0,tls,x509verify={certs}" in text



def test_vnc_tls_refuses_a_vnc_guest_without_the_cert_dir(tmp_path):
    certs = tmp_path / "vnc-certs"
    certs.mkdir()              # must exist when the option is read (as in the original) ...
    e = Env(tmp_path, make_opts(tmp_path, vnc_tls="1", vnc_x509_cert_dir=str(certs)))
    try:
        certs.rmdir()          # ... and when a guest using VNC starts
        hvm = ["vm", ["name", "h2"], ["memory", "32"],
               ["image", ["hvm", ["kernel", "hvmloader"], ["vnc", "1"]]]]
        with pytest.raises(VmError, match=f"VNC x509 certificate dir {certs} does not exist"):
            e.reg.domain_create(hvm)
        assert len(e.hv.list_domains()) == 1
        hvm[1][1], hvm[3][1][2][1] = "h3", "0"       # without VNC it needs no certificates
        e.reg.domain_create(hvm)
    finally:
        e.close()


def test_vnc_tls_without_verify_is_x509():
    cfg = parse_config(["vm", ["name", "h"], ["image", ["hvm", ["kernel", "hvmloader"],
                                                        ["vnc", "1"], ["vncdisplay", "3"]]]])
    s = Settings.from_opts(parse_options("(vnc-tls yes)"))
    cfg = devices.apply_defaults(cfg, s)
    assert devicemodel.display_settings(cfg, s) == ["vnc 127.0.0.1:3,tls,x509=/etc/xen/vnc"]
    off = Settings.from_opts(defaults())
    assert devicemodel.display_settings(cfg, off) == ["vnc 127.0.0.1:3"]


# -- qemu-dm-logrotate-count --------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_qemu_dm_log_is_rotated_before_each_start(tmp_path, instances):
    inst = instances(tmp_path / "x", "(qemu-dm-logrotate-count 2)")
    cfg = write_hvm_cfg(tmp_path, "h1", "vnc = 1\n")
    logdir = inst.paths["logfile"].parent
    domids = []
    for _ in range(4):
        ok(inst.xm("create", str(cfg)))
        domids.append(ok(inst.xm("domid", "h1")).strip())
        ok(inst.xm("destroy", "h1"))
    names = sorted(p.name for p in logdir.glob("qemu-dm-h1.log*"))
    assert names == ["qemu-dm-h1.log", "qemu-dm-h1.log.1", "qemu-dm-h1.log.2"]
    # newest first: the current file is the 4th start, .1 the 3rd, .2 the 2nd
    for suffix, domid in (("", domids[3]), (".1", domids[2]), (".2", domids[1])):
        text = (logdir / f"qemu-dm-h1.log{suffix}").read_text()
        assert f"domain h1 (id {domid}): the device model is simulated" in text
        assert text.count("device model is simulated") == 1
    # a PV guest with a vfb had a device model too; one without had none
    ok(inst.xm("create", str(write_cfg(tmp_path, "p1", "vfb = ['type=vnc']\n"))))
    ok(inst.xm("create", str(write_cfg(tmp_path, "p2", ""))))
    assert (logdir / "qemu-dm-p1.log").exists() and not (logdir / "qemu-dm-p2.log").exists()


def test_qemu_dm_logrotate_count_zero_appends(tmp_path):
    e = Env(tmp_path, make_opts(tmp_path, logfile=str(tmp_path / "log" / "xend.log"),
                                qemu_dm_logrotate_count=0))
    (tmp_path / "log").mkdir()
    try:
        hvm = ["vm", ["name", "h1"], ["memory", "32"],
               ["image", ["hvm", ["kernel", "hvmloader"]]]]
        for _ in range(3):
            e.reg.domain_create(hvm)
            e.reg.domain_destroy("h1")
        files = sorted(p.name for p in (tmp_path / "log").iterdir())
        assert files == ["qemu-dm-h1.log"]
        text = (tmp_path / "log" / "qemu-dm-h1.log").read_text()
        assert text.count("the device model is simulated") == 3
    finally:
        e.close()


def test_rotate_keeps_count_files(tmp_path):
    log = tmp_path / "q.log"
    for n in range(5):
        devicemodel.rotate(str(log), 3)
        log.write_text(f"run {n}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.log", "q.log.1", "q.log.2",
                                                          "q.log.3"]
    assert [(tmp_path / f"q.log{s}").read_text() for s in ("", ".1", ".2", ".3")] == \
        ["run 4\n", "run 3\n", "run 2\n", "run 1\n"]


# -- device-create-timeout / device-destroy-timeout ---------------------------------------------
@pytest.mark.timeout(120)
def test_device_create_timeout_bounds_the_wait_for_backends(tmp_path, instances):
    inst = instances(tmp_path / "x", "(device-create-timeout 2)")
    # sim.hotplug_hang: the simulated host's hotplug scripts never answer for this guest
    cfg = write_cfg(tmp_path, "g1", "vif = ['']\nextra = 'sim.hotplug_hang'\n")
    t0 = time.monotonic()
    r = inst.xm("create", str(cfg))
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert "Device 0 (vif) could not be connected. Hotplug scripts not working " \
           "(no answer within 2 s, device-create-timeout)" in r.stderr
    assert 2.0 <= elapsed < 30, elapsed          # the option's 2 s, not the default 100
    assert "g1" not in ok(inst.xm("list"))       # xm create destroyed it
    # a guest whose backends answer starts at once
    t0 = time.monotonic()
    ok(inst.xm("create", str(write_cfg(tmp_path, "g2", "vif = ['']\n"))))
    assert time.monotonic() - t0 < 10


@pytest.mark.timeout(120)
def test_device_destroy_timeout_bounds_the_wait_for_teardown(tmp_path, instances):
    inst = instances(tmp_path / "x", "(device-destroy-timeout 2)")
    cfg = write_cfg(tmp_path, "g1", "vif = ['']\nextra = 'sim.unplug_hang'\n")
    ok(inst.xm("create", str(cfg)))
    domid = int(ok(inst.xm("domid", "g1")).strip())
    t0 = time.monotonic()
    ok(inst.xm("destroy", "g1"))
    elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed < 30, elapsed
    assert re.search(r"Device 0 \(vif\) of domain %d could not be disconnected within 2 s "
                     r"\(device-destroy-timeout\)" % domid, xend_log(inst))
    hv = sim_store(inst)
    try:
        assert hv.store_list(f"/local/domain/0/backend/vif/{domid}") == []   # removed
    finally:
        hv.close()


@pytest.fixture
def quick_env(tmp_path):
    e = Env(tmp_path, make_opts(tmp_path, device_create_timeout=1, device_destroy_timeout=1))
    yield e
    e.close()


def test_managed_start_fails_when_devices_do_not_connect(quick_env):
    reg = quick_env.reg
    reg.domain_new(vm("m1", args="sim.hotplug_hang", device=["vif"]))
    t0 = time.monotonic()
    with pytest.raises(VmError, match=r"Device 0 \(vif\) could not be connected"):
        reg.domain_start("m1", False)
    assert time.monotonic() - t0 >= 1.0
    rec = reg.domain("m1")
    assert child(rec, "domid") is None and child(rec, "status") == 0    # halted, not half-up
    assert len(quick_env.hv.list_domains()) == 1


def test_restore_fails_when_devices_do_not_connect(quick_env, tmp_path):
    reg = quick_env.reg
    # created (xm create would then wait and give up), run, saved: its devices never connected
    reg.domain_create(vm("r1", args="sim.hotplug_hang",
                         device=["vbd", ["uname", "phy:/dev/vg/r1"], ["dev", "xvda"],
                                 ["mode", "w"]]))
    reg.domain_unpause("r1")
    path = tmp_path / "r1.save"
    reg.domain_save("r1", str(path))
    t0 = time.monotonic()
    with pytest.raises(XendError, match=r"Device 51712 \(vbd\) could not be connected"):
        reg.domain_restore(str(path))
    assert time.monotonic() - t0 >= 1.0
    assert reg.domains_with_state(False, "all", False) == ["Domain-0"]
    assert len(quick_env.hv.list_domains()) == 1     # nothing left behind


def test_hotplug_error_is_reported(quick_env):
    reg = quick_env.reg
    reg.domain_create(vm("e1", args="sim.hotplug_error", device=["vif"]))
    with pytest.raises(VmError, match=r"Device 0 \(vif\) could not be connected\. "
                                      r"simulated hotplug script failed"):
        reg.domain_waitForDevices("e1")


def test_no_device_backends_no_entries_no_wait(tmp_path):
    """A host without device backends: xend keeps the devices as configuration only (with
    the defaults the options and the original give them) and has nothing to wait for."""
    e = Env(tmp_path, make_opts(tmp_path, device_create_timeout=30))
    try:
        e.hv.device_backends = False
        rec = e.reg.domain_create(vm("g1", args="sim.hotplug_hang", device=["vif"]))
        domid = child(rec, "domid")
        t0 = time.monotonic()
        e.reg.domain_waitForDevices("g1")
        assert time.monotonic() - t0 < 1
        assert e.hv.store_list(f"/local/domain/{domid}/device") == []
        vif = child(rec, "device")
        assert vif[0] == "vif" and ["script", "vif-bridge"] in vif[1:], vif
        assert re.fullmatch(r"00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}",
                            sxp.child_value(vif, "mac")), vif
    finally:
        e.close()


def test_block_device_numbers():
    assert [devices.blkdev_number(n) for n in ("xvda", "xvdb1", "hda", "hdc", "sda1",
                                                "hda:cdrom", "ioemu:hdb", "51713", "floppy")] \
        == [51712, 51729, 768, 5632, 2049, 768, 832, 51713, None]


# -- pci-passthrough-strict-check ---------------------------------------------------------------
@pytest.mark.timeout(120)
def test_pci_devices_refused_with_strict_check(tmp_path, instances):
    inst = instances(tmp_path / "x")                      # default: yes
    cfg = write_cfg(tmp_path, "g1", "pci = ['0000:01:00.0']\n")
    r = inst.xm("create", str(cfg))
    assert r.returncode != 0
    assert "pci: cannot pass 0000:01:00.0 through to domain g1" in r.stderr
    assert "g1" not in ok(inst.xm("list"))


@pytest.mark.timeout(120)
def test_pci_devices_left_out_without_strict_check(tmp_path, instances):
    inst = instances(tmp_path / "x", "(pci-passthrough-strict-check no)")
    cfg = write_cfg(tmp_path, "g1", "pci = ['0000:01:00.0']\n")
    ok(inst.xm("create", str(cfg)))
    [pci] = devices_of(long_record(inst, "g1"), "pci")     # kept in its configuration
    assert sxp.child_value(sxp.child(pci, "dev"), "key") == "0000:01:00.0"
    assert "PCI device(s) 0000:01:00.0 not passed through" in xend_log(inst)


# -- total_available_memory ---------------------------------------------------------------------
BALLOON = "(dom0-min-mem 512)\n(enable-dom0-ballooning yes)\n"


def mem_of(inst: XendInstance, name: str) -> int:
    for line in ok(inst.xm("list")).splitlines()[1:]:
        if line[:40].strip() == name:
            return int(line[47:52])
    raise AssertionError(name)


def free_mib(inst: XendInstance) -> int:
    out = ok(inst.xm("info"))
    return int(re.search(r"^free_memory\s*:\s*(\d+)", out, re.M).group(1))


@pytest.mark.timeout(120)
def test_total_available_memory_is_kept_free(tmp_path, instances):
    # host 4096 MiB, dom0 starts with a quarter (1024): 3072 MiB free
    plain = instances(tmp_path / "plain", BALLOON)
    ok(plain.xm("create", str(write_cfg(tmp_path, "big", "memory = 1536\n"))))
    assert mem_of(plain, "Domain-0") == 1024             # fitted without ballooning

    pool = instances(tmp_path / "pool", BALLOON + "(total_available_memory 2)")
    ok(pool.xm("create", str(write_cfg(tmp_path, "big", "memory = 1536\n"))))
    assert mem_of(pool, "Domain-0") == 512               # shrunk to keep 2 GiB free
    assert free_mib(pool) >= 2048
    r = pool.xm("create", str(write_cfg(tmp_path, "small", "memory = 256\n")))
    assert r.returncode != 0
    assert "total_available_memory keeps free" in r.stderr
    assert free_mib(pool) >= 2048


def test_total_available_memory_needs_ballooning():
    assert Settings.from_opts(parse_options("(total_available_memory 4)")) \
        .total_available_memory == 0
    assert Settings.from_opts(parse_options("(total_available_memory 4)\n"
                                            "(enable-dom0-ballooning yes)")) \
        .total_available_memory == 4


# -- xend-state-path, xend-storage-path, xend-security-path -------------------------------------
@pytest.mark.timeout(60)
def test_state_storage_and_security_dirs_are_created_0700(tmp_path, instances):
    inst = instances(tmp_path / "x")
    for name in ("xend-state-path", "xend-storage-path", "xend-security-path"):
        path = inst.paths[name]
        assert path.is_dir(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, name


# -- settings this xend has no subsystem for -----------------------------------------------------
UNSUPPORTED = ("(xsm_module_name flask)\n"
               "(xend-udev-event-server yes)\n(resource-label-change-script relabel)\n"
               "(pscsi-device-mask ('16:0:0:0'))\n")


@pytest.mark.timeout(60)
def test_unsupported_settings_are_reported_at_start_and_by_check_config(tmp_path, instances):
    inst = instances(tmp_path / "x", UNSUPPORTED)
    log = xend_log(inst)
    cc = inst.xend("check-config")
    assert cc.returncode == 0
    for name, why in (("xsm_module_name", "flask is not supported"),
                      ("xend-udev-event-server", "does not listen to udev events"),
                      ("resource-label-change-script", "is never run by this xend"),
                      ("pscsi-device-mask", "has no effect in this xend")):
        pattern = re.compile(r"%s:\d+: option %s: .*%s" % (re.escape(str(inst.config)),
                                                          re.escape(name), re.escape(why)))
        assert re.search(r"WARNING .*" + pattern.pattern, log), name
        assert pattern.search(cc.stderr), name


@pytest.mark.timeout(60)
def test_defaults_stay_quiet(tmp_path, instances):
    inst = instances(tmp_path / "x")
    cc = inst.xend("check-config")
    assert cc.returncode == 0 and "Warning" not in cc.stderr
    assert "option xen-api-server" not in xend_log(inst)


def test_unsupported_only_for_values_written():
    assert defaults().unsupported == []
    quiet = parse_options("(xsm_module_name dummy)\n(xend-udev-event-server no)\n"
                          "(xen-api-server ())\n(resource-label-change-script '')\n", "f")
    assert quiet.unsupported == [] and quiet.warnings == []
    loud = parse_options(UNSUPPORTED + "(xsm_module_name acm)\n", "f")
    assert [n.split(": ")[1] for n in loud.unsupported] == [
        "option xsm_module_name", "option xend-udev-event-server",
        "option resource-label-change-script", "option pscsi-device-mask"]
    assert loud.warnings[0].startswith("f:5: option xsm_module_name given again")
    # the Xen-API is served: a written value is no longer reported
    assert parse_options("(xen-api-server ((unix) (9363 pam)))", "g").unsupported == []
    text = render_check_config(loud, show_warnings=True)
    assert "warning: f:1: option xsm_module_name: flask is not supported" in text


def test_every_option_is_used_outside_the_option_table():
    """Each option name appears in xend/ outside options.py (or is reported as unsupported
    there): the guard that found the options this file is about."""
    from xend.options import OPTIONS
    root = Path(__file__).resolve().parent.parent / "xend"
    text = "\n".join(p.read_text() for p in root.rglob("*.py") if p.name != "options.py")
    for opt in OPTIONS:
        used = f'"{opt.name}"' in text or f"'{opt.name}'" in text
        assert used or opt.unsupported is not None, opt.name
