"""Pure pieces of issue 17: device ids and uuids, device checks, the xm tables of devices,
the simulated guest's hot-plug console lines, libxl's JSON of a PCI device."""
from __future__ import annotations

import pytest

from xend.domains import devices
from xend.errors import VmError
from xend.hypervisor import simguest
from xend.hypervisor.base import DeviceSpec, DomainSpec
from xend.hypervisor.libxl_config import LibxlConfigError, disk_json, pci_json
from xend.xm import formats

VM = "4f77abd2-3019-58e8-3bab-6fbf2118f880"


def ids(devs):
    return [devices.details(d).get("devid") for d in devs]


def test_devices_get_ids_uuids_and_backends_once_and_keep_them():
    devs = (["vbd", ["uname", "phy:/x"], ["dev", "xvda"]], ["vif"], ["vif", ["mac", "00:16:3e:0a:0b:0c"]],
            ["vfb", ["vnc", "1"]], ["vbd", ["dev", "hdc:cdrom"]])
    given = devices.assign_ids(devs, VM)
    assert ids(given) == ["51712", "0", "1", None, "5632"]
    assert [devices.details(d).get("backend") for d in given] == ["0", "0", "0", None, "0"]
    assert devices.details(given[1])["uuid"] == devices.device_uuid(VM, "vif", 0)
    assert devices.assign_ids(given, VM) == given                       # idempotent
    # vif 0 goes: vif 1 keeps its id and uuid; a new vif takes the free 0, a fresh uuid
    after = devices.assign_ids(given[:1] + given[2:] + (["vif"],), VM)
    assert ids(after) == ["51712", "1", None, "5632", "0"]
    uuids = [devices.details(d).get("uuid") for d in after if devices.details(d).get("uuid")]
    assert len(set(uuids)) == len(uuids) == 4
    assert devices.find_device(after, "vif", "0") == 4
    assert devices.find_device(after, "vbd", "xvda") == 0
    assert devices.find_device(after, "tap", "51712") == 0
    assert devices.find_device(after, "vbd", "hdc") == 3
    assert devices.find_device(after, "vif", "00:16:3E:0A:0B:0C") == 1  # by MAC, any case
    assert devices.find_device(after, "vif", "7") is None


@pytest.mark.parametrize("body, message", [
    (["vbd", ["uname", "phy:/x"]], "must have virtual details"),
    (["vbd", ["dev", "xvdb"]], "must have physical details"),
    (["vbd", ["uname", "nfs:/x"], ["dev", "xvdb"]], 'type "nfs" is invalid'),
    (["vbd", ["uname", "phy:/x"], ["dev", "xvdb"], ["mode", "rw"]], "Invalid mode"),
    (["vbd", ["uname", "phy:/x"], ["dev", "foo"]], r"Unable to find number for device \(foo\)"),
    (["vif", ["colour", "red"]], "Invalid vif option: colour"),
    (["vif", ["mac", "00:16:3e:00:00"]], "MAC address is not valid"),
    (["vtpm"], "cannot be added"),
])
def test_bad_devices_are_refused(body, message):
    with pytest.raises(VmError, match=message):
        devices.check_new_device(body)


def test_a_cdrom_may_be_empty_and_tap_uname_is_fine():
    assert devices.check_new_device(["vbd", ["dev", "hdc:cdrom"], ["mode", "r"]])
    assert devices.check_new_device(["tap", ["uname", "tap:aio:/x"], ["dev", "xvdb"]])


def test_device_spec_gives_frontend_and_backend_entries(tmp_path):
    from xend.domains.settings import Settings
    from xend.options import Options
    s = Settings.from_opts(Options.from_dict({"xend-scripts-path": "/etc/xen/scripts"}))
    cd = devices.device_spec(["vbd", ["uname", "file:/i.iso"], ["dev", "hdc:cdrom"],
                              ["mode", "r"], ["devid", "5632"]], 5632, s)
    assert cd.backend["dev"] == "hdc" and cd.backend["type"] == "file"
    assert cd.frontend == {"virtual-device": "5632", "device-type": "cdrom"}
    assert "devid" not in cd.backend
    assert disk_json(cd)["is_cdrom"] == 1 and disk_json(cd)["vdev"] == "hdc"
    tap = devices.device_spec(["tap", ["uname", "tap:aio:/d"], ["dev", "xvdb"]], 51728, s)
    assert DeviceSpec.frontend_path(3, tap.cls, tap.devid) == "/local/domain/3/device/vbd/51728"
    assert tap.backend_path(3) == "/local/domain/0/backend/tap/3/51728"


def test_pci_json():
    dev = DeviceSpec("pci", 0, 0, {"domain": "0x0000", "bus": "0x01", "slot": "0x1f",
                                   "func": "0x2", "vdevfn": "0x38", "msitranslate": "1"})
    assert pci_json(dev) == {"domain": 0, "bus": 1, "dev": 0x1f, "func": 2, "vdevfn": 0x38,
                             "msitranslate": True}
    with pytest.raises(LibxlConfigError):
        pci_json(DeviceSpec("pci", 0, 0, {"bus": "zz"}))


def test_block_and_network_tables():
    vbd = [["51712", [["backend", "/local/domain/0/backend/vbd/3/51712"], ["backend-id", "0"],
                      ["state", "4"], ["event-channel", "11"], ["ring-ref", "8"]]]]
    assert formats.block_list(vbd) == (
        "Vdev  BE handle state evt-ch ring-ref BE-path\n"
        "51712  0    0     4      11     8     /local/domain/0/backend/vbd/3/51712  \n")
    assert formats.block_list([]) == ""
    # a domain that does not run: its configuration, -1 where the store would tell
    assert formats.block_list([[51712, [["uname", "phy:/x"], ["dev", "xvda"]]]]) \
        .splitlines()[1].startswith("51712  -1   0     -1     -1     -1    ??")
    vif = [["0", [["backend-id", "0"], ["mac", "00:16:3e:00:00:01"], ["handle", "0"],
                  ["state", "4"], ["event-channel", "12"], ["tx-ring-ref", "768"],
                  ["rx-ring-ref", "769"], ["backend", "/local/domain/0/backend/vif/3/0"]]]]
    assert formats.network_list(vif).splitlines()[1] == (
        "0   0  00:16:3e:00:00:01    0     4      12    768  /769     "
        "/local/domain/0/backend/vif/3/0  ")


def test_pci_table():
    auto = {"domain": "0x0000", "bus": "0x00", "slot": "0x1f", "func": "0x2", "vdevfn": "0x100"}
    assert formats.pci_list([auto]) == "Device\n0000:00:1f.2\n"
    fixed = dict(auto, bus="0x01", vdevfn="0x3a")
    assert formats.pci_list([auto, fixed]) == "Vdev Device\n07.2 0000:01:1f.2\n-    0000:00:1f.2\n"
    assert formats.pci_list([]) == ""


def test_top_state_letters():
    assert formats.top_state("r-----") == "-----r"
    assert formats.top_state("-b----") == "--b---"
    assert formats.top_state("--p---") == "----p-"
    assert formats.top_state("---s--") == "-s----"


def _guest(now=100.0):
    spec = DomainSpec(name="g", uuid=VM, memory_kib=65536, maxmem_kib=65536)
    return simguest.new_record(5, spec, simguest.parse_knobs("", {}), now)


def test_hot_plug_lines_keep_their_place_in_the_console():
    rec = _guest()
    simguest.device_added(rec, 100.0, "vbd", "51712", "xvda")    # there at boot: no line
    assert simguest.console_line_count(rec, 100.0) == 0 and "hotplug" not in rec
    rec.update(pause_count=0, since=100.0)                         # it runs
    before = simguest.console_lines(rec, 0, simguest.console_line_count(rec, 100.2))
    simguest.device_added(rec, 100.2, "vbd", "51728", "xvdb")
    assert simguest.device_added(rec, 100.3, "vif", "0", "") == "eth0"
    assert len(rec["hotplug"]) == 2
    lines = simguest.console_lines(rec, 0, simguest.console_line_count(rec, 131.0))
    texts = [line.split("] ", 1)[1].rstrip("\n") for line in lines]
    assert texts.index("sim: disks now: xvda xvdb") < texts.index("sim: nics now: eth0") < \
        texts.index("sim: g alive, heartbeat 1")
    # lines read before stay as they were: a reader's position is still right
    assert lines[:len(before)] == before
    simguest.device_removed(rec, 131.0, "vbd", "51728")
    assert simguest.guest_devices(rec) == {"disks": ["xvda"], "nics": ["eth0"]}
    last = simguest.console_lines(rec, 0, simguest.console_line_count(rec, 131.0))[-1]
    assert last.endswith("] sim: disks now: xvda\n")
