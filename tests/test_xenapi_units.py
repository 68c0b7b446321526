"""The pure pieces of the Xen-API: the option's entries, records to configs and back, the
wire writer, the XML config reader, the event bus and the tasks."""
from __future__ import annotations

import threading
import time
import xmlrpc.client

import pytest

from xend.domains import config as cfgmod
from xend.domains.states import HALTED, RUNNING
from xend.errors import ConfigError
from xend.options import parse_options
from xend.xenapi import records as rec
from xend.xenapi import wire
from xend.xenapi.config import Endpoint, parse_entries, parse_entry
from xend.xenapi.events import EventBus
from xend.xenapi.tasks import Tasks


# -- xen-api-server entries -----------------------------------------------------------------------
def test_entries_as_the_reference_gives_them(tmp_path):
    key, cert = tmp_path / "k", tmp_path / "c"
    key.write_text("k")
    cert.write_text("c")
    assert parse_entry(["unix"]) == Endpoint(True)
    assert parse_entry(["UNIX", "none"]) == Endpoint(True)
    assert parse_entry(["9363", "pam", "^localhost$ example\\.com$"]) == \
        Endpoint(False, "", 9363, "pam", "^localhost$ example\\.com$")
    assert parse_entry(["127.0.0.1:9367", "", "", str(key), str(cert)]) == \
        Endpoint(False, "127.0.0.1", 9367, "none", "", str(key), str(cert))
    assert parse_entry(["9363"]).auth == "none"          # the original's code, not its comment
    assert parse_entries([]) == []


@pytest.mark.parametrize("entry, why", [
    (["9363", "pma"], "neither none nor pam"),
    (["99999"], "not a port number"),
    (["localhost:"], "not a port number"),
    (["9363", "pam", "(", ], "bad host pattern"),
    (["9363", "pam", "", "key"], "KEY and CERT go together"),
    (["9363", "pam", "", "/no/such.key", "/no/such.crt"], "does not exist"),
    (["unix", "none", "", "k", "c", "x"], "too many words"),
])
def test_bad_entries_say_why(entry, why):
    with pytest.raises(ValueError, match=why):
        parse_entry(entry)


def test_a_bad_entry_is_refused_at_load_with_file_line_and_reason():
    with pytest.raises(ConfigError) as e:
        parse_options("(logfile /x)\n(xen-api-server ((unix) (9363 pma)))\n", "f")
    [problem] = e.value.problems
    assert problem.startswith("f:2: option xen-api-server: expected list of (WHERE [AUTH "
                              "[HOSTS [KEY CERT]]]) entries, got ((unix) (9363 pma)) (entry "
                              "(9363 pma): authentication 'pma' is neither none nor pam)")
    with pytest.raises(ConfigError, match="listens where an earlier entry does"):
        parse_options("(xen-api-server ((9363) (9363 pam)))")


# -- records ---------------------------------------------------------------------------------------
def config(*extra) -> cfgmod.DomainConfig:
    return cfgmod.parse_config(["vm", ["name", "g"], ["memory", "256"], ["maxmem", "512"],
                                ["vcpus", "4"], ["vcpu_avail", "3"], ["cpu_weight", "512"],
                                ["on_crash", "coredump-destroy"], ["on_xend_start", "start"],
                                ["description", "a guest"],
                                ["image", ["linux", ["kernel", "/k"], ["ramdisk", "/r"],
                                           ["args", "ro"], ["tsc_mode", "0"]]],
                                ["device", ["vbd", ["uname", "phy:/dev/vg/g"], ["dev", "xvda"],
                                            ["mode", "w"]]],
                                ["device", ["vbd", ["uname", "file:/iso"], ["dev", "hdc:cdrom"],
                                            ["mode", "r"]]],
                                ["device", ["vif", ["mac", "00:16:3e:00:00:01"]]], *extra])


def test_vm_record_fields_from_the_config():
    cfg = config(["other_config", ["a", "b"]], ["user_version", "3"])
    r = rec.vm_record(rec.VmView(cfg, None, None, HALTED, True), "host")
    assert (r["name_label"], r["name_description"], r["power_state"], r["domid"]) == \
        ("g", "a guest", "Halted", -1)
    assert (r["memory_static_max"], r["memory_dynamic_max"]) == (512 << 20, 256 << 20)
    assert (r["VCPUs_max"], r["VCPUs_at_startup"], r["VCPUs_params"]) == \
        (4, 2, {"weight": "512", "cap": "0"})
    assert (r["actions_after_crash"], r["auto_power_on"], r["user_version"]) == \
        ("coredump_and_destroy", True, 3)
    assert (r["PV_kernel"], r["PV_ramdisk"], r["PV_args"], r["platform"]) == \
        ("/k", "/r", "ro", {"tsc_mode": "0"})
    assert r["other_config"] == {"a": "b"} and r["resident_on"] == wire.NULL_REF
    assert len(r["VBDs"]) == 2 and len(r["VIFs"]) == 1 and len(set(r["VBDs"])) == 2
    # refs are stable: the same config gives the same device refs
    again = rec.vm_record(rec.VmView(cfg, 3, None, RUNNING, True), "host")
    assert again["VBDs"] == r["VBDs"] and again["resident_on"] == "host"
    vbds = rec.devices_of(cfg, "vbd")
    assert [rec.vbd_record(rec.VmView(cfg, None, None, HALTED, True), d)["type"]
            for d in vbds] == ["Disk", "CD"]


def test_a_vm_record_makes_the_same_config_again():
    cfg = config(["other_config", ["k", "v"]])
    r = rec.vm_record(rec.VmView(cfg, None, None, HALTED, True), "host")
    back = cfgmod.parse_config(rec.config_from_record(wire.encode(r), cfg.uuid))
    for field in ("name", "uuid", "memory", "maxmem", "vcpus", "vcpu_avail", "cpu_weight",
                  "on_crash", "on_xend_start", "description", "kernel", "ramdisk", "args",
                  "image_extra"):
        assert getattr(back, field) == getattr(cfg, field), field
    assert rec.extra_map(back, "other_config") == {"k": "v"}


def test_a_record_with_bad_values_is_refused():
    with pytest.raises((ValueError, TypeError)):
        rec.config_from_record({"name_label": "x", "memory_static_max": "lots"}, "u")
    with pytest.raises(cfgmod.XendConfigError):
        cfgmod.parse_config(rec.config_from_record(
            {"name_label": "x", "memory_static_max": str(64 << 20),
             "memory_dynamic_max": str(128 << 20)}, cfgmod.new_uuid()))


# -- the wire ------------------------------------------------------------------------------------
def test_results_are_status_structs_with_ints_as_strings():
    value = {"n": 2 ** 40, "b": True, "f": 0.5, "s": "a<&>\x1b", "l": [1, None],
             "t": wire.Timestamp(0.0), "m": {"\x01key": "v"}}
    text = wire.dumps_result(wire.success(value))
    (result,), _ = xmlrpc.client.loads(text)
    assert result["Status"] == "Success"
    v = result["Value"]
    assert (v["n"], v["b"], v["f"], v["s"], v["l"]) == (str(2 ** 40), True, 0.5,
                                                        "a<&>\\x1b", ["1", ""])
    assert str(v["t"]) == "19700101T00:00:00" and v["m"] == {"\\x01key": "v"}
    (typed,), _ = xmlrpc.client.loads(text, use_builtin_types=True)
    assert typed["Value"]["t"].year == 1970  # clients that ask for datetimes parse it
    (fail,), _ = xmlrpc.client.loads(wire.dumps_result(wire.failure(["HANDLE_INVALID", "VM",
                                                                     "\x00"])))
    assert fail == {"Status": "Failure", "ErrorDescription": ["HANDLE_INVALID", "VM", "\\x00"]}


# -- events and tasks ----------------------------------------------------------------------------
class FakeViews:
    def __init__(self):
        self.views = []

    def __call__(self):
        return list(self.views)


def test_event_bus_finds_changes_and_wakes_a_waiter():
    views = FakeViews()
    bus = EventBus(lambda cls, ref: {"ref": ref}, views, poll_interval=0.05, next_timeout=5)
    cfg = config()
    bus.register("s1", ["vm"])              # class names ignore case
    views.views = [rec.VmView(cfg, None, None, HALTED, True)]
    bus.poke()
    [add] = bus.next("s1")
    assert (add["class"], add["operation"], add["ref"]) == ("VM", "add", cfg.uuid)
    got = []
    waiter = threading.Thread(target=lambda: got.extend(bus.next("s1")))
    waiter.start()
    time.sleep(0.1)
    views.views = [rec.VmView(cfg.replace(memory=128), 2, None, RUNNING, True)]
    waiter.join(5)
    ops = [(e["class"], e["operation"]) for e in got]
    assert ("VM", "mod") in ops, got
    bus.publish("task", "add", "t1")        # not registered for tasks
    views.views = []
    bus.poke()
    assert [(e["class"], e["operation"]) for e in bus.next("s1")] == [("VM", "del")]
    bus.unregister("s1", [])
    with pytest.raises(Exception, match="SESSION_NOT_REGISTERED"):
        bus.next("s1")


def test_tasks_are_bounded_and_report_results_and_errors():
    from xend.xenapi.errors import XenAPIError
    events = []
    tasks = Tasks(lambda *e: events.append(e), max_pending=1)
    gate = threading.Event()
    slow = tasks.start("s", "VM.start", lambda: gate.wait(5) and None)
    with pytest.raises(XenAPIError, match="OPERATION_NOT_ALLOWED"):
        tasks.start("s", "VM.pause", lambda: None)
    gate.set()
    deadline = time.monotonic() + 5
    while tasks.get(slow).status == "pending" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tasks.get(slow).record()["status"] == "success"

    def fail():
        raise XenAPIError("VM_BAD_POWER_STATE", "vm", "Halted", "Running")
    bad = tasks.start("s", "VM.start", fail)
    while tasks.get(bad).status == "pending":
        time.sleep(0.01)
    assert tasks.get(bad).error_info == ["VM_BAD_POWER_STATE", "vm", "Halted", "Running"]
    tasks.drop_session("s")
    assert tasks.refs() == [] and ("task", "del", bad) in events


# -- xenapi_create XML configs ---------------------------------------------------------------------
def test_xml_configs_become_vm_configs_and_bad_ones_say_why(tmp_path):
    from xend.xm import xenapi_xml

    good = tmp_path / "g.xml"
    good.write_text(
        "<xm><vm vcpus_max='2' vcpus_at_startup='2' actions_after_crash='rename_restart'>"
        "<name><label>g</label><description>d</description></name>"
        "<hvm boot_policy='BIOS order'><boot_param key='order' value='dc'/></hvm>"
        "<memory static_min='0' static_max='268435456' dynamic_min='268435456' "
        "dynamic_max='268435456'/><vbd vdi='v' device='hda' mode='RO' type='CD' bootable='0'/>"
        "<vif mac='00:16:3e:01:02:03' mtu='9000' network='xenbr9'/>"
        "<platform key='acpi' value='1'/></vm>"
        "<vdi name='v' src='file:/iso/x.iso' type='user' size='0' sharable='false' "
        "read_only='true'/></xm>")
    [sxp] = xenapi_xml.load(str(good))
    cfg = cfgmod.parse_config(sxp)
    assert (cfg.name, cfg.description, cfg.memory, cfg.vcpus, cfg.on_crash, cfg.hvm) == \
        ("g", "d", 256, 2, "rename-restart", True)
    assert ["boot", "dc"] in cfg.image_extra and ["acpi", "1"] in cfg.image_extra
    assert list(cfg.devices) == [["vbd", ["uname", "file:/iso/x.iso"], ["dev", "hda:cdrom"],
                                  ["mode", "r"], ["bootable", "0"]],
                                 ["vif", ["mac", "00:16:3e:01:02:03"], ["bridge", "xenbr9"],
                                  ["mtu", "9000"]]]
    for text, why in (("<xm>", "not well-formed"), ("<domain/>", "root element"),
                      ("<xm/>", "no <vm>"),
                      ("<xm><vm><name><label>x</label></name><pv kernel='/k'/></vm></xm>",
                       "no <memory>"),
                      ("<xm><vm><memory/><pv/><vbd vdi='nope'/></vm></xm>", "no <vdi")):
        bad = tmp_path / "b.xml"
        bad.write_text(text)
        with pytest.raises(xenapi_xml.XmlConfigError, match=why):
            xenapi_xml.load(str(bad))
