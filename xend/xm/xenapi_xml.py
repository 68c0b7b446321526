"""Xen-API XML domain configurations (the format of the original's ``xenapi_create``, its
``create.dtd``), for ``xm create`` / ``xm new`` (a config file whose first byte is ``<``, or
``-F FILE``). Each ``<vm>`` becomes a ``(vm ...)`` configuration, the same one in legacy and
in Xen-API mode::

    <xm>
      <vm is_a_template="false" auto_power_on="false" vcpus_max="2" vcpus_at_startup="1"
          actions_after_shutdown="destroy" actions_after_reboot="restart"
          actions_after_crash="destroy" PCI_bus="" pool_name="Pool-0" ...>
        <name><label>g1</label><description>a guest</description></name>
        <version>1</version>
        <pv kernel="/boot/vmlinuz" bootloader="" ramdisk="" args="root=/dev/xvda1 ro"
            bootloader_args=""/>                 (or <hvm boot_policy="BIOS order">
                                                   <boot_param key="order" value="dc"/></hvm>)
        <memory static_min="0" static_max="268435456" dynamic_min="268435456"
                dynamic_max="268435456"/>       (bytes)
        <vbd name="vbd0" vdi="vdi0" device="xvda" mode="RW" type="disk" bootable="1"
             qos_algorithm_type=""/>
        <vif name="vif0" mac="00:16:3e:00:00:01" mtu="1500" device="eth0" network="net0"
             qos_algorithm_type=""/>
        <console protocol="vt100"/>
        <platform key="acpi" value="1"/>  <vcpu_param key="weight" value="256"/>
        <other_config key="k" value="v"/>
      </vm>
      <vdi name="vdi0" src="phy:/dev/vg/g1" type="system" size="0" sharable="false"
           read_only="false"><name><label>g1 disk</label><description/></name></vdi>
      <network name="net0" default_gateway="" default_netmask="">
        <name><label>xenbr0</label><description/></name></network>
    </xm>

A vbd's ``vdi`` names a ``<vdi>`` element (its ``src`` is the disk's uname); a vif's
``network`` names a ``<network>`` element (whose label is the bridge) or is a bridge name.
Errors name the file and what is wrong.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Dict, List


class XmlConfigError(Exception):
    pass


def is_xml(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4096).lstrip()[:1] == b"<"
    except OSError:
        return False


def _label(element: "Any") -> str:
    name = element.find("name")
    if name is None:
        return ""
    return (name.findtext("label") or "").strip()


def _description(element: "Any") -> str:
    name = element.find("name")
    return "" if name is None else (name.findtext("description") or "").strip()


def _pairs(element: "Any", tag: str) -> "Dict[str, str]":
    return {e.get("key", ""): e.get("value", "") for e in element.findall(tag) if e.get("key")}


def _true(value: "Any") -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def load(path: str) -> "List[list]":
    """The ``(vm ...)`` configurations of the XML file ``path``."""
    import xml.etree.ElementTree as ET

    from xend.xenapi import records as xrec

    try:
        root = ET.parse(path).getroot()
    except OSError as e:
        raise XmlConfigError(f"Unable to open config file: {path}: {e.strerror}") from None
    except ET.ParseError as e:
        raise XmlConfigError(f"{path}: not well-formed XML: {e}") from None
    if root.tag != "xm":
        raise XmlConfigError(f"{path}: the root element is <{root.tag}>, not <xm>")
    vdis = {v.get("name"): v for v in root.findall("vdi")}
    networks = {n.get("name"): n for n in root.findall("network")}
    vms = root.findall("vm")
    if not vms:
        raise XmlConfigError(f"{path}: no <vm> element")
    out = []
    for vm in vms:
        try:
            out.append(_vm(vm, vdis, networks, xrec))
        except (ValueError, TypeError, KeyError) as e:
            raise XmlConfigError(f"{path}: <vm> {_label(vm) or '?'}: {e}") from None
    return out


def _vm(vm: "Any", vdis: "Dict[str, Any]", networks: "Dict[str, Any]", xrec: "Any") -> list:
    record: "Dict[str, Any]" = {
        "name_label": _label(vm), "name_description": _description(vm),
        "user_version": (vm.findtext("version") or "1").strip() or "1",
        "is_a_template": _true(vm.get("is_a_template", "false")),
        "auto_power_on": _true(vm.get("auto_power_on", "false")),
        "VCPUs_max": vm.get("vcpus_max", "1"),
        "VCPUs_at_startup": vm.get("vcpus_at_startup", vm.get("vcpus_max", "1")),
        "VCPUs_params": _pairs(vm, "vcpu_param"),
        "actions_after_shutdown": vm.get("actions_after_shutdown", ""),
        "actions_after_reboot": vm.get("actions_after_reboot", ""),
        "actions_after_crash": vm.get("actions_after_crash", ""),
        "PCI_bus": vm.get("PCI_bus", ""), "platform": _pairs(vm, "platform"),
        "other_config": _pairs(vm, "other_config"),
        "security_label": vm.get("security_label", ""),
    }
    memory = vm.find("memory")
    if memory is None:
        raise ValueError("no <memory> element")
    for key in ("static_min", "static_max", "dynamic_min", "dynamic_max"):
        record["memory_" + key] = memory.get(key, "0") or "0"
    pv, hvm = vm.find("pv"), vm.find("hvm")
    if hvm is not None:
        record["HVM_boot_policy"] = hvm.get("boot_policy", xrec.HVM_POLICY) or xrec.HVM_POLICY
        record["HVM_boot_params"] = _pairs(hvm, "boot_param")
    elif pv is not None:
        for key in ("kernel", "ramdisk", "args", "bootloader", "bootloader_args"):
            record["PV_" + key] = pv.get(key, "")
    else:
        raise ValueError("neither <pv> nor <hvm>")
    sxp = xrec.config_from_record(record, "")
    sxp = [k for k in sxp if not (isinstance(k, list) and k[:1] == ["uuid"])]
    if vm.get("pool_name"):
        sxp.append(["pool_name", vm.get("pool_name")])
    for vbd in vm.findall("vbd"):
        vdi = vdis.get(vbd.get("vdi"))
        if vdi is None or not vdi.get("src"):
            raise ValueError(f"vbd {vbd.get('name', '?')}: no <vdi name={vbd.get('vdi')!r}> "
                             "with a src")
        sxp.append(["device", xrec.vbd_device(
            vdi.get("src"), vbd.get("device", ""), vbd.get("mode", "RW"),
            vbd.get("type", "Disk"), _true(vbd.get("bootable", "0")))])
    for vif in vm.findall("vif"):
        net = vif.get("network", "")
        bridge = _label(networks[net]) if net in networks else net
        params = _pairs(vif, "qos_algorithm_param")
        rate = params.get("kbps", "") if vif.get("qos_algorithm_type") == "ratelimit" else ""
        sxp.append(["device", xrec.vif_device(vif.get("mac", ""), bridge or None,
                                              int(vif.get("mtu", "1500") or 1500), rate)])
    return sxp
