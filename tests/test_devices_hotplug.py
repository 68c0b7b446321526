"""Devices after a domain started (issue 17), through the real daemon on the simulated host:
xm block-*/network-*/pci-*, their XML-RPC calls, libvirt's HTTP ops, managed domains,
restarts, save/restore, failures that leave nothing behind, the Xen-API's plug/unplug."""
from __future__ import annotations

import http.client
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from xend import sxp
from tests.daemon_helpers import XendInstance, installed_command

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def host(tmp_path):
    inst = XendInstance(tmp_path / "host", extra="(xend-unix-server yes)").start()
    yield inst
    inst.stop()
    inst.kill()


def ok(r) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    return r.stdout


def fails(r, pattern: str, status: int = 1) -> str:
    assert r.returncode == status, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    assert re.search(pattern, r.stderr), r.stderr
    return r.stderr


def write_cfg(tmp: Path, name: str, body: str = "") -> Path:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"\0" * 64)
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nkernel = "{kernel}"\nmemory = 64\n'
                   "disk = ['phy:/dev/vg/g1,xvda,w']\n"
                   "vif = ['mac=00:16:3e:00:00:01']\n" + body)
    return cfg


def started(host, tmp: Path, name: str = "g1", body: str = "") -> int:
    ok(host.xm("create", str(write_cfg(tmp, name, body))))
    domid = int(host.xm("domid", name).stdout)
    # the guest has booted (its boot lines are out): a hot-plug is a hot-plug to it
    host.wait_for(lambda: "login:" in console(host, name), timeout=20)
    return domid


def console(host, name: str) -> str:
    return host.xm("console", name, input="").stdout


def record(host, name: str) -> list:
    return sxp.from_string(ok(host.xm("list", "-l", name)))


def devices_of(rec: list, cls: str) -> list:
    return [d[1] for d in rec[1:] if isinstance(d, list) and d and d[0] == "device"
            and isinstance(d[1], list) and d[1][0] == cls]


def value(body: list, key: str):
    return next((e[1] for e in body[1:] if isinstance(e, list) and e[0] == key), None)


def xend_sim(host, *args: str) -> str:
    cmd = installed_command("xend-sim")
    assert cmd, "xend-sim is not installed"
    r = subprocess.run([cmd, "--state-path", str(host.paths["simulated-state-path"]), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def block_rows(out: str) -> dict:
    lines = out.splitlines()
    assert lines[0] == "Vdev  BE handle state evt-ch ring-ref BE-path"
    return {int(line.split()[0]): line.split() for line in lines[1:]}


# -- block devices ------------------------------------------------------------------------------
def test_block_attach_list_detach_on_a_running_guest(host, tmp_path):
    domid = started(host, tmp_path)
    out = ok(host.xm("block-list", "g1"))
    assert list(block_rows(out)) == [51712]
    row = out.splitlines()[1]
    assert row.startswith("51712  0    0     4      ") and row.endswith("  ")
    assert row.split()[6] == f"/local/domain/0/backend/vbd/{domid}/51712"
    image = tmp_path / "data.img"
    image.write_bytes(b"\0" * 4096)
    ok(host.xm("block-attach", "g1", f"file:{image}", "xvdb", "w"))
    rows = block_rows(ok(host.xm("block-list", "g1")))
    assert sorted(rows) == [51712, 51728] and rows[51728][3] == "4"      # connected
    # the guest saw the disk come (its console, its simulated state)
    host.wait_for(lambda: "sim: disks now: xvda xvdb" in console(host, "g1"))
    assert xend_sim(host, "devices", str(domid)).splitlines()[0] == "disks: xvda xvdb"
    # the device is in the domain's record with its uuid, id and backend
    vbd = [d for d in devices_of(record(host, "g1"), "vbd") if value(d, "dev") == "xvdb"][0]
    assert value(vbd, "uname") == f"file:{image}" and value(vbd, "mode") == "w"
    assert value(vbd, "devid") == "51728" and value(vbd, "backend") == "0"
    assert re.match(r"[0-9a-f-]{36}$", value(vbd, "uuid"))
    # a second one with the same name is refused, nothing changes
    fails(host.xm("block-attach", "g1", "phy:/dev/vg/other", "xvdb", "r"),
          r"Device xvdb \(51728, vbd\) is already connected\.")
    fails(host.xm("block-attach", "g1", "phy:/dev/vg/x", "xvdc", "rw"), r"Invalid mode")
    fails(host.xm("block-attach", "g1", "bogus:/x", "xvdc", "r"),
          r'Block device type "bogus" is invalid')
    fails(host.xm("block-attach", "g1", "phy:/dev/x", "nonsense", "r"),
          r"Unable to find number for device \(nonsense\)")
    assert sorted(block_rows(ok(host.xm("block-list", "g1")))) == [51712, 51728]
    # -l: the frontends' entries as SXP
    long = sxp.parse_all(ok(host.xm("block-list", "--long", "g1")))
    assert [d[0] for d in long] == ["51712", "51728"]
    assert ["device-type", "disk"] in long[1][1]
    # detach by name: gone from the guest, the store and the config
    ok(host.xm("block-detach", "g1", "xvdb"))
    assert list(block_rows(ok(host.xm("block-list", "g1")))) == [51712]
    host.wait_for(lambda: console(host, "g1").rstrip().endswith("sim: disks now: xvda"))
    assert [value(d, "dev") for d in devices_of(record(host, "g1"), "vbd")] == ["xvda"]
    fails(host.xm("block-detach", "g1", "xvdb"), r"Device xvdb not connected")
    # tap:aio: is a tap device; detached through its class (getBlockDeviceClass)
    ok(host.xm("block-attach", "g1", f"tap:aio:{image}", "xvdc", "r"))
    assert host.proxy().xend.domain.getBlockDeviceClass("g1", "xvdc") == "tap"
    ok(host.xm("block-detach", "g1", "51744", "--force"))
    assert list(block_rows(ok(host.xm("block-list", "g1")))) == [51712]


def test_block_commands_check_their_arguments(host, tmp_path):
    started(host, tmp_path)
    r = host.xm("block-attach", "g1", "phy:/dev/x")
    assert r.returncode == 1
    assert r.stderr == "Error: 'xm block-attach' requires between 4 and 5 arguments.\n\n"
    assert r.stdout.startswith("Usage: xm block-attach <Domain> <BackDev> <FrontDev> <Mode>")
    fails(host.xm("block-list"), r"No domain parameter given")
    fails(host.xm("block-list", "g1", "g2"), r"No multiple domain parameters allowed")
    fails(host.xm("block-list", "nosuch"), r"Domain 'nosuch' does not exist", status=3)
    assert ok(host.xm("block-list", "Domain-0")) == ""        # no disks: nothing at all


def test_cdrom_medium_change(host, tmp_path):
    domid = started(host, tmp_path, body="disk = ['phy:/dev/vg/g1,xvda,w', ',hdc:cdrom,r']\n")
    iso = tmp_path / "debian.iso"
    iso.write_bytes(b"\0" * 4096)
    ok(host.xm("block-configure", "g1", f"file:{iso}", "hdc:cdrom", "r"))
    host.wait_for(lambda: f"sim: cdrom hdc now holds {iso}" in console(host, "g1"))
    store = host.paths["simulated-state-path"]
    cd = [d for d in devices_of(record(host, "g1"), "vbd") if value(d, "dev") == "hdc:cdrom"]
    assert value(cd[0], "uname") == f"file:{iso}" and value(cd[0], "devid") == "5632"
    assert store.is_dir()
    # a disk is no cdrom: refused, unchanged
    fails(host.xm("block-configure", "g1", "phy:/dev/vg/other", "xvda", "w"),
          r"Refusing to reconfigure device vbd:51712")
    ok(host.xm("block-configure", "g1", "", "hdc:cdrom", "r"))         # eject
    host.wait_for(lambda: "sim: cdrom hdc is empty" in console(host, "g1"))
    assert domid == int(host.xm("domid", "g1").stdout)


# -- network interfaces -------------------------------------------------------------------------
def test_network_attach_list_detach(host, tmp_path):
    domid = started(host, tmp_path)
    ok(host.xm("network-attach", "g1", "mac=00:16:3e:00:00:02", "bridge=xenbr0",
               "ip=10.0.0.2", "vifname=g1-eth1", "rate=10MB/s", "model=e1000"))
    out = ok(host.xm("network-list", "g1"))
    lines = out.splitlines()
    assert lines[0] == "Idx BE     MAC Addr.     handle state evt-ch tx-/rx-ring-ref BE-path"
    assert [line[:3].strip() for line in lines[1:]] == ["0", "1"]
    assert lines[2].startswith("1   0  00:16:3e:00:00:02    1     4  ")
    assert f"/local/domain/0/backend/vif/{domid}/1" in lines[2]
    host.wait_for(lambda: "sim: nics now: eth0 eth1" in console(host, "g1"))
    vif = devices_of(record(host, "g1"), "vif")[1]
    assert [value(vif, k) for k in ("mac", "bridge", "ip", "vifname", "rate", "model",
                                    "script", "devid", "backend")] == \
        ["00:16:3e:00:00:02", "xenbr0", "10.0.0.2", "g1-eth1", "10MB/s", "e1000",
         "vif-bridge", "1", "0"]
    # a third one gets the next id and a random MAC of Xen's range
    ok(host.xm("network-attach", "g1"))
    third = devices_of(record(host, "g1"), "vif")[2]
    assert value(third, "devid") == "2" and value(third, "mac").startswith("00:16:3e:")
    fails(host.xm("network-attach", "g1", "colour=blue"), r"Invalid argument: colour=blue")
    fails(host.xm("network-attach", "g1", "mac=zz:16:3e:00:00:02"), r"MAC address is not valid")
    # detach by MAC and by id; the ids of the others stay
    ok(host.xm("network-detach", "g1", "00:16:3E:00:00:02"))
    ok(host.xm("network-detach", "g1", "0"))
    lines = ok(host.xm("network-list", "g1")).splitlines()
    assert [line[:3].strip() for line in lines[1:]] == ["2"]
    assert [value(v, "devid") for v in devices_of(record(host, "g1"), "vif")] == ["2"]
    host.wait_for(lambda: console(host, "g1").rstrip().endswith("sim: nics now: eth2"))
    fails(host.xm("network-detach", "g1", "00:16:3e:99:99:99"),
          r"Cannot find device '00:16:3e:99:99:99' in domain 'g1'")
    # a new one takes the lowest free id again
    ok(host.xm("network-attach", "g1"))
    assert sorted(value(v, "devid") for v in devices_of(record(host, "g1"), "vif")) == ["0", "2"]


# -- persistence: xend restarts, save/restore, managed domains ----------------------------------
def test_devices_survive_a_restart_and_travel_with_save_restore(host, tmp_path):
    started(host, tmp_path)
    ok(host.xm("block-attach", "g1", "phy:/dev/vg/data", "xvdb", "w"))
    ok(host.xm("network-attach", "g1", "mac=00:16:3e:00:00:07"))
    before = {value(d, "uuid"): value(d, "devid") for cls in ("vbd", "vif")
              for d in devices_of(record(host, "g1"), cls)}
    assert len(before) == 4
    host.stop()
    host.start()
    after = {value(d, "uuid"): value(d, "devid") for cls in ("vbd", "vif")
             for d in devices_of(record(host, "g1"), cls)}
    assert after == before
    assert sorted(block_rows(ok(host.xm("block-list", "g1")))) == [51712, 51728]
    image = tmp_path / "g1.save"
    ok(host.xm("save", "g1", str(image)))
    ok(host.xm("restore", str(image)))
    restored = {value(d, "uuid"): value(d, "devid") for cls in ("vbd", "vif")
                for d in devices_of(record(host, "g1"), cls)}
    assert restored == before
    # the restored guest has them: its frontends are there and connected
    assert sorted(block_rows(ok(host.xm("block-list", "g1")))) == [51712, 51728]
    lines = ok(host.xm("network-list", "g1")).splitlines()
    assert "00:16:3e:00:00:07" in lines[2]


def test_managed_inactive_domain_devices_change_its_stored_config(host, tmp_path):
    ok(host.xm("new", str(write_cfg(tmp_path, "m1"))))
    ok(host.xm("block-attach", "m1", "phy:/dev/vg/m1-data", "xvdb", "r"))
    ok(host.xm("network-detach", "m1", "0"))
    stored = next(Path(host.paths["xend-domains-path"]).glob("*/config.sxp")).read_text()
    assert "phy:/dev/vg/m1-data" in stored and "00:16:3e:00:00:01" not in stored
    # block-list of a domain that does not run: its configured disks
    rows = sxp.parse_all(ok(host.xm("block-list", "-l", "m1")))
    assert [r[0] for r in rows] == ["51712", "51728"]
    assert ok(host.xm("network-list", "m1")) == ""
    # started, the guest has the disk it was given
    ok(host.xm("start", "m1"))
    assert sorted(block_rows(ok(host.xm("block-list", "m1")))) == [51712, 51728]
    # and survives a restart of xend as configured
    host.stop()
    host.start()
    assert [value(d, "dev") for d in devices_of(record(host, "m1"), "vbd")] == ["xvda", "xvdb"]


# -- failures leave nothing behind ---------------------------------------------------------------
def _published(host, domid: int) -> set:
    store = Path(host.paths["simulated-state-path"]) / "store"
    text = "".join(p.read_text() for p in store.glob("*.json"))
    return set(re.findall(rf"/backend/(?:vbd|vif)/{domid}/(\d+)", text))


def test_a_device_that_does_not_connect_is_not_added(tmp_path):
    inst = XendInstance(tmp_path / "x", extra="(device-create-timeout 1)\n"
                                              "(device-destroy-timeout 1)").start()
    try:
        cfg = tmp_path / "h1.cfg"
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"\0")
        cfg.write_text(f'name = "h1"\nkernel = "{kernel}"\nmemory = 64\n'
                       "extra = 'sim.hotplug_hang sim.unplug_hang'\n")
        ok(inst.xm("create", str(cfg)))
        domid = int(inst.xm("domid", "h1").stdout)
        fails(inst.xm("block-attach", "h1", "phy:/dev/vg/h1", "xvda", "w"),
              r"Device 51712 \(vbd\) could not be connected.*device-create-timeout")
        assert devices_of(record(inst, "h1"), "vbd") == []
        assert _published(inst, domid) == set()
        assert ok(inst.xm("block-list", "h1")) == ""
    finally:
        inst.stop()
        inst.kill()


def test_a_device_the_guest_keeps_is_not_removed(tmp_path):
    inst = XendInstance(tmp_path / "x", extra="(device-destroy-timeout 1)").start()
    try:
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"\0")
        cfg = tmp_path / "u1.cfg"
        cfg.write_text(f'name = "u1"\nkernel = "{kernel}"\nmemory = 64\n'
                       "disk = ['phy:/dev/vg/u1,xvda,w']\nextra = 'sim.unplug_hang'\n")
        ok(inst.xm("create", str(cfg)))
        fails(inst.xm("block-detach", "u1", "xvda"),
              r"Device 51712 \(vbd\) could not be disconnected")
        assert [value(d, "dev") for d in devices_of(record(inst, "u1"), "vbd")] == ["xvda"]
        # forced: taken away at once, whatever the backend does
        ok(inst.xm("block-detach", "u1", "xvda", "-f"))
        assert devices_of(record(inst, "u1"), "vbd") == []
        assert ok(inst.xm("block-list", "u1")) == ""
    finally:
        inst.stop()
        inst.kill()


# -- PCI -----------------------------------------------------------------------------------------
def test_pci_where_the_host_cannot_pass_devices_through(host, tmp_path):
    fails(host.xm("pci-list-assignable-devices"), r"pciback/pci-stub not loaded\?")
    started(host, tmp_path)
    fails(host.xm("pci-attach", "g1", "0000:00:1f.2"),
          r"cannot pass PCI devices through to a guest: no pciback driver")
    assert ok(host.xm("pci-list", "g1")) == ""
    assert devices_of(record(host, "g1"), "pci") == []
    # a managed domain that does not run keeps them in its configuration
    ok(host.xm("new", str(write_cfg(tmp_path, "m1"))))
    ok(host.xm("pci-attach", "m1", "00:1f.2"))
    ok(host.xm("pci-attach", "m1", "0000:01:00.0", "7"))
    # ordered by virtual slot (automatic last), then address
    assert ok(host.xm("pci-list", "m1")) == "Vdev Device\n07.0 0000:01:00.0\n-    0000:00:1f.2\n"
    fails(host.xm("pci-attach", "m1", "00:1f.2"), r"pci: device 0000:00:1f\.2 has been attached")
    ok(host.xm("pci-detach", "m1", "0000:00:1f.2"))
    assert ok(host.xm("pci-list", "m1")) == "Vdev Device\n07.0 0000:01:00.0\n"
    fails(host.xm("pci-detach", "m1", "00:1f.2"), r"pci: device 0000:00:1f\.2 is not attached")
    # and starting it is refused while the host cannot pass them through (strict check)
    fails(host.xm("start", "m1"), r"cannot pass 0000:01:00\.0 through")


# -- the calls themselves: XML-RPC shapes, libvirt's HTTP ops ------------------------------------
def test_xmlrpc_device_calls_answer_as_the_original(host, tmp_path):
    domid = started(host, tmp_path)
    x = host.proxy().xend.domain
    assert x.device_create("g1", ["vbd", ["uname", "phy:/dev/vg/d"], ["dev", "xvdb"],
                                  ["mode", "r"]]) == ["vbd", ["dom", domid, "id", 51728]]
    assert x.device_create("g1", ["vif"]) == ["vif", ["dom", domid, "id", 1]]
    sxprs = x.getDeviceSxprs("g1", "vbd")
    assert [s[0] for s in sxprs] == ["51712", "51728"]
    assert dict((k, v) for k, v in sxprs[1][1])["virtual-device"] == "51728"
    assert x.getBlockDeviceClass("g1", "51728") == "vbd"
    assert x.destroyDevice("g1", "vif", "1", False, True) is None
    # a domain that does not run: (class, [dom None, id None])
    ok(host.xm("new", str(write_cfg(tmp_path, "m1"))))
    assert x.device_create("m1", ["vif"]) == ["vif", ["dom", None, "id", None]]


def test_xmlrpc_device_configure_refuses_a_disk(host, tmp_path):
    started(host, tmp_path)
    import xmlrpc.client
    with pytest.raises(xmlrpc.client.Fault) as e:
        host.proxy().xend.domain.device_configure(
            "g1", ["vbd", ["dev", "xvda"], ["uname", "phy:/dev/vg/e"], ["mode", "w"]])
    assert e.value.faultCode == 2 and "Refusing to reconfigure device vbd:51712" in \
        e.value.faultString


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def _post(host, path: str, **fields: str):
    conn = _UnixHTTP(str(host.paths["xend-unix-path"]))
    body = urllib.parse.urlencode(fields)
    conn.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def test_libvirt_http_device_ops(host, tmp_path):
    """What libvirt's xend driver sends: device_create with a (vbd ...), device_configure
    changing a cdrom's medium, device_destroy type=vbd dev=... force=0 rm_cfg=1."""
    started(host, tmp_path, body="disk = ['phy:/dev/vg/g1,xvda,w', ',hdc:cdrom,r']\n")
    status, body = _post(host, "/xend/domain/g1", op="device_create",
                         config="(vbd (dev 'xvdb') (uname 'file:/srv/d.img') (mode 'w'))")
    assert status == 200, body
    status, body = _post(host, "/xend/domain/g1", op="device_configure",
                         config="(vbd (dev 'hdc:cdrom') (uname 'file:/srv/x.iso') (mode 'r'))",
                         dev="hdc")
    assert status == 200, body
    status, body = _post(host, "/xend/domain/g1", op="device_destroy", type="vbd", dev="xvdb",
                         force="0", rm_cfg="1")
    assert status == 200, body
    # the domain record (GET /xend/domain/g1, as libvirt reads it) reflects them
    conn = _UnixHTTP(str(host.paths["xend-unix-path"]))
    conn.request("GET", "/xend/domain/g1?detail=1")
    rec = sxp.from_string(conn.getresponse().read().decode())
    vbds = {value(d, "dev"): d for d in devices_of(rec, "vbd")}
    assert set(vbds) == {"xvda", "hdc:cdrom"}
    assert value(vbds["hdc:cdrom"], "uname") == "file:/srv/x.iso"
    assert all(value(d, "uuid") and value(d, "backend") == "0" for d in vbds.values())
    # an op on a device that is not there is a 500 with the reason
    status, body = _post(host, "/xend/domain/g1", op="device_destroy", type="vbd", dev="xvdq",
                         force="0", rm_cfg="1")
    assert status == 500 and "Device xvdq not connected" in body
    # the devices op lists a class
    status, body = _post(host, "/xend/domain/g1", op="devices", type="vbd")
    assert status == 200 and [d[0] for d in sxp.from_string(body)] == ["5632", "51712"]


# -- the Xen-API: VBD/VIF plug and unplug, media_change ------------------------------------------
def test_xenapi_plug_unplug_and_media_change(xenapi_host):
    host = xenapi_host
    ok(host.xm("create", str(host.vm_config("g1", extra=(
        "disk = ['phy:/dev/vg/g1,xvda,w', ',hdc:cdrom,r']\nvif = ['mac=00:16:3e:00:00:01']\n")))))
    x = host.session().xenapi
    [vm] = x.VM.get_by_name_label("g1")
    sr = x.SR.get_all()[0]
    vdi = x.VDI.create({"SR": sr, "name_label": "data", "virtual_size": "0", "type": "user",
                        "sharable": False, "read_only": False,
                        "other_config": {"location": "phy:/dev/vg/g1-data"}})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "device": "xvdb", "bootable": False,
                        "mode": "RW", "type": "Disk", "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    # in the configuration, not yet in the guest
    assert x.VBD.get_currently_attached(vbd) is False
    assert sorted(block_rows(ok(host.xm("block-list", "g1")))) == [5632, 51712]
    x.VBD.plug(vbd)
    assert x.VBD.get_currently_attached(vbd) is True
    assert sorted(block_rows(ok(host.xm("block-list", "g1")))) == [5632, 51712, 51728]
    with pytest.raises(Exception, match="DEVICE_ALREADY_ATTACHED"):
        x.VBD.plug(vbd)
    x.VBD.unplug(vbd)
    assert x.VBD.get_currently_attached(vbd) is False
    assert sorted(block_rows(ok(host.xm("block-list", "g1")))) == [5632, 51712]
    assert "phy:/dev/vg/g1-data" in ok(host.xm("list", "-l", "g1"))     # still configured
    with pytest.raises(Exception, match="DEVICE_ALREADY_DETACHED"):
        x.VBD.unplug(vbd)
    # the vif of the config: out of the guest and back
    [vif] = x.VM.get_VIFs(vm)
    x.VIF.unplug(vif)
    assert ok(host.xm("network-list", "g1")) == ""
    x.VIF.plug(vif)
    assert "00:16:3e:00:00:01" in ok(host.xm("network-list", "g1"))
    # a CD's medium
    iso = x.VDI.create({"SR": sr, "name_label": "iso", "virtual_size": "0", "type": "user",
                        "sharable": True, "read_only": True,
                        "other_config": {"location": "file:/srv/debian.iso"}})
    [cd] = [b for b in x.VM.get_VBDs(vm) if x.VBD.get_type(b) == "CD"]
    x.VBD.media_change(cd, iso)
    cdrom = [d for d in devices_of(record(host, "g1"), "vbd") if value(d, "dev") == "hdc:cdrom"]
    assert value(cdrom[0], "uname") == "file:/srv/debian.iso"
