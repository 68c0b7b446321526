"""Xen-API records made from a domain's configuration (``DomainConfig``) and runtime, and a
VM record turned back into a ``(vm ...)`` configuration (for ``VM.create``).

Field mapping (datamodel, class VM):

* name_label = name; name_description = description; uuid = uuid (the VM ref too);
* memory_static_max = maxmem, memory_dynamic_max = memory (the balloon target), in bytes;
  memory_dynamic_min and memory_static_min are kept as given (``memory_dynamic_min``,
  ``memory_static_min`` entries of the config, in bytes) and default to the target and 0;
* VCPUs_max = vcpus; VCPUs_at_startup = the VCPUs online at boot (``vcpu_avail``);
  VCPUs_params = ``weight`` and ``cap`` of the credit scheduler;
* actions_after_shutdown/reboot/crash = on_poweroff/on_reboot/on_crash (crash actions in the
  API's spelling: coredump_and_destroy, coredump_and_restart, rename_restart);
* auto_power_on = (on_xend_start start); PV_* = bootloader, kernel, ramdisk, args,
  bootloader_args; HVM_boot_policy = ``BIOS order`` for an hvm image, else ''; HVM_boot_params
  = {order: boot}; platform = the other simple entries of the image (acpi, apic, pae, ...);
* user_version, is_a_template, PCI_bus, other_config: entries of the config of the same name
  (they live in the domain's configuration, so they are stored with it).

Devices: a VBD for each ``vbd``/``tap``/``tap2`` device, a VIF for each ``vif``, a vt100
console for each VM (and an rfb one when it has VNC). A device's uuid is its ``(uuid U)``
entry when it has one (devices made through the API), else derived from the VM's uuid and
its position among the devices of its kind; VDIs are named by the disk's ``uname``
(``phy:/dev/vg/x``, ``file:/img``), networks by the vif's bridge.
"""
from __future__ import annotations

import functools
import os
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from xend.domains import config as cfgmod
from xend.domains.config import DomainConfig
from xend.domains.states import CRASHED, PAUSED, POWER_STATE_NAMES, RUNNING
from xend.hypervisor.base import DomainInfo

from .wire import NULL_REF, Timestamp

MIB = 1024 * 1024
HVM_POLICY = "BIOS order"
HVM_LOADER = "/usr/lib/xen/boot/hvmloader"
BLOCK_CLASSES = ("vbd", "tap", "tap2")
CRASH_TO_API = {v: k for k, v in cfgmod.XENAPI_CRASH_ACTIONS.items()}
#: config entries that hold API-only VM fields (see the module's text)
API_ENTRIES = ("user_version", "is_a_template", "PCI_bus", "other_config",
               "memory_dynamic_min", "memory_static_min")
DEFAULT_BRIDGE = "xenbr0"
_NAMESPACE = uuidlib.UUID("5c0b2d14-7f62-4c1e-9a5e-0d5e6f1a2b3c")


@functools.lru_cache(maxsize=65536)
def derived_uuid(owner: str, what: str) -> str:
    """A stable uuid for an object that belongs to ``owner`` (metrics, a device ...)."""
    try:
        ns = uuidlib.UUID(owner)
    except ValueError:
        ns = _NAMESPACE
    return str(uuidlib.uuid5(ns, what))


def named_uuid(kind: str, name: str) -> str:
    """A stable uuid for a VDI (by uname) or a network (by bridge) nobody created."""
    return derived_uuid(str(_NAMESPACE), f"{kind}:{name}")


@dataclass
class VmView:
    """One VM as the records see it: a domain of the registry, or a transient VM that
    ``VM.create`` made and ``VM.start`` has not started yet."""
    cfg: DomainConfig
    domid: Optional[int]
    info: Optional[DomainInfo]
    state: int
    managed: bool
    start_time: Optional[float] = None

    @property
    def uuid(self) -> str:
        return self.cfg.uuid

    @property
    def power_state(self) -> str:
        return POWER_STATE_NAMES[self.state]

    @property
    def resident(self) -> bool:
        return self.domid is not None and self.state in (RUNNING, PAUSED, CRASHED)


# -- small helpers on configs -------------------------------------------------------------------
def simple_pairs(items) -> Dict[str, str]:
    return {k[0]: k[1] for k in items
            if isinstance(k, list) and len(k) == 2 and isinstance(k[0], str)
            and isinstance(k[1], str)}


def extra_value(cfg: DomainConfig, key: str) -> Any:
    for k in cfg.extra:
        if isinstance(k, list) and k and k[0] == key:
            return k[1] if len(k) == 2 else k[1:]
    return None


def extra_map(cfg: DomainConfig, key: str) -> Dict[str, str]:
    value = extra_value(cfg, key)
    if isinstance(value, list):
        items = value if value and isinstance(value[0], list) else [value]
        return simple_pairs(items)
    return {}


def with_extra(cfg: DomainConfig, key: str, value: Any) -> DomainConfig:
    """``cfg`` with config entry ``key`` set to ``value`` (a string, or a dict for a map;
    None or an empty dict removes it)."""
    rest = [k for k in cfg.extra if not (isinstance(k, list) and k and k[0] == key)]
    if isinstance(value, dict):
        if value:
            rest.append([key] + [[str(k), str(v)] for k, v in sorted(value.items())])
    elif value is not None:
        rest.append([key, str(value)])
    return cfg.replace(extra=tuple(rest))


def to_bytes(mib: int) -> int:
    return mib * MIB


def to_mib(value: int, what: str) -> int:
    """Bytes given by a client, as whole MiB (at least 1)."""
    if value < 0:
        raise ValueError(f"{what} must not be negative")
    return max(1, value // MIB)


def _int_or(value: Any, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


# -- VM ----------------------------------------------------------------------------------------
def crash_action(cfg: DomainConfig) -> str:
    return CRASH_TO_API.get(cfg.on_crash, cfg.on_crash)


def memory_fields(cfg: DomainConfig) -> Dict[str, int]:
    target = to_bytes(cfg.memory)
    dyn_min = _int_or(extra_value(cfg, "memory_dynamic_min"), target)
    return {"memory_static_max": to_bytes(cfg.maxmem), "memory_dynamic_max": target,
            "memory_dynamic_min": min(dyn_min, target),
            "memory_static_min": min(_int_or(extra_value(cfg, "memory_static_min"), 0),
                                     dyn_min, target)}


def platform(cfg: DomainConfig) -> Dict[str, str]:
    pairs = simple_pairs(cfg.image_extra)
    pairs.pop("boot", None)
    return pairs


def hvm_boot_params(cfg: DomainConfig) -> Dict[str, str]:
    boot = simple_pairs(cfg.image_extra).get("boot")
    return {"order": boot} if cfg.hvm and boot else {}


def vm_record(v: VmView, host_ref: str) -> Dict[str, Any]:
    cfg = v.cfg
    ref = cfg.uuid
    rec: Dict[str, Any] = {
        "uuid": ref,
        "power_state": v.power_state,
        "name_label": cfg.name,
        "name_description": cfg.description or "",
        "user_version": _int_or(extra_value(cfg, "user_version"), 1),
        "is_a_template": str(extra_value(cfg, "is_a_template") or "").lower()
        in ("1", "true", "yes"),
        "auto_power_on": cfg.on_xend_start == "start",
        "suspend_VDI": NULL_REF,
        "resident_on": host_ref if v.resident else NULL_REF,
        "VCPUs_params": {"weight": str(cfg.cpu_weight), "cap": str(cfg.cpu_cap)},
        "VCPUs_max": cfg.vcpus,
        "VCPUs_at_startup": cfg.online_vcpus,
        "actions_after_shutdown": cfg.on_poweroff,
        "actions_after_reboot": cfg.on_reboot,
        "actions_after_crash": crash_action(cfg),
        "consoles": [c[0] for c in consoles(v)],
        "VIFs": [d.uuid for d in devices_of(cfg, "vif")],
        "VBDs": [d.uuid for d in devices_of(cfg, "vbd")],
        "crash_dumps": [], "VTPMs": [], "DPCIs": [], "DSCSIs": [], "DSCSI_HBAs": [],
        "PV_bootloader": cfg.bootloader or "",
        "PV_kernel": "" if cfg.hvm else cfg.kernel,
        "PV_ramdisk": "" if cfg.hvm else cfg.ramdisk,
        "PV_args": "" if cfg.hvm else cfg.args,
        "PV_bootloader_args": cfg.bootloader_args or "",
        "HVM_boot_policy": HVM_POLICY if cfg.hvm else "",
        "HVM_boot_params": hvm_boot_params(cfg),
        "platform": platform(cfg),
        "PCI_bus": str(extra_value(cfg, "PCI_bus") or ""),
        "other_config": extra_map(cfg, "other_config"),
        "domid": v.domid if v.domid is not None else -1,
        "is_control_domain": v.domid == 0,
        "metrics": derived_uuid(ref, "VM_metrics"),
        "guest_metrics": derived_uuid(ref, "VM_guest_metrics"),
        "security_label": cfg.security_label or "",
        "cpu_pool": [],
        "pool_name": cfg.pool_name or "Pool-0",
    }
    rec.update(memory_fields(cfg))
    return rec


# -- devices -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceView:
    uuid: str
    cls: str            # vbd | tap | tap2 | vif
    index: int          # position among the VM's devices of its group (vbd or vif)
    body: Tuple[Any, ...]

    @property
    def details(self) -> Dict[str, str]:
        return simple_pairs(self.body)


def devices_of(cfg: DomainConfig, group: str) -> List[DeviceView]:
    """The VM's VBDs (``group`` vbd: classes vbd, tap, tap2) or VIFs (``vif``)."""
    out: List[DeviceView] = []
    classes = BLOCK_CLASSES if group == "vbd" else (group,)
    for dev in cfg.devices:
        if not (isinstance(dev, list) and dev and dev[0] in classes):
            continue
        explicit = simple_pairs(dev[1:]).get("uuid")
        uuid = None
        if explicit:
            try:
                uuid = cfgmod.normalise_uuid(explicit)
            except Exception:  # noqa: BLE001 - a bad uuid entry: derive one instead
                uuid = None
        if uuid is None:
            uuid = derived_uuid(cfg.uuid, f"{group}/{len(out)}")
        out.append(DeviceView(uuid, dev[0], len(out), tuple(dev[1:])))
    return out


def vbd_device_name(details: Dict[str, str]) -> Tuple[str, str]:
    """(device as the guest sees it, type Disk|CD) from ``dev`` (``hdc:cdrom``, ``ioemu:hda``)."""
    dev = details.get("dev", "")
    if dev.startswith("ioemu:"):
        dev = dev[len("ioemu:"):]
    name, _, kind = dev.partition(":")
    return name, "CD" if kind == "cdrom" else "Disk"


def uname_path(uname: str) -> str:
    kind, sep, path = uname.partition(":")
    if sep and kind in ("phy",) and path and not path.startswith("/"):
        return "/dev/" + path
    return path if sep else uname


def vdi_uuid_for(uname: str) -> str:
    return named_uuid("VDI", uname)


def vbd_record(v: VmView, d: DeviceView) -> Dict[str, Any]:
    det = d.details
    device, kind = vbd_device_name(det)
    uname = det.get("uname", "")
    return {
        "uuid": d.uuid, "VM": v.uuid, "VDI": vdi_uuid_for(uname) if uname else NULL_REF,
        "device": device, "bootable": det.get("bootable", "1" if d.index == 0 else "0") == "1",
        "mode": "RW" if det.get("mode", "w").startswith("w") else "RO", "type": kind,
        "currently_attached": v.resident, "status_code": 0, "status_detail": "",
        "runtime_properties": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
        "qos_supported_algorithms": [], "metrics": NULL_REF,
    }


def vif_bridge(det: Dict[str, str], default: str = DEFAULT_BRIDGE) -> str:
    return det.get("bridge") or default


def vif_record(v: VmView, d: DeviceView, network_ref: str) -> Dict[str, Any]:
    det = d.details
    rate = det.get("rate", "")
    return {
        "uuid": d.uuid, "device": f"eth{d.index}", "network": network_ref, "VM": v.uuid,
        "MAC": det.get("mac", ""), "MTU": _int_or(det.get("mtu"), 1500),
        "currently_attached": v.resident, "status_code": 0, "status_detail": "",
        "runtime_properties": {}, "qos_algorithm_type": "ratelimit" if rate else "",
        "qos_algorithm_params": {"kbps": rate} if rate else {},
        "qos_supported_algorithms": ["ratelimit"], "metrics": NULL_REF,
        "security_label": "",
    }


def consoles(v: VmView) -> List[Tuple[str, str, str]]:
    """(ref, protocol, location) of each console of the VM."""
    out = [(derived_uuid(v.uuid, "console/vt100"), "vt100",
            f"xenconsole:{v.domid}" if v.resident else "")]
    vnc = any(isinstance(d, list) and d and d[0] == "vfb" and simple_pairs(d[1:]).get("vnc") == "1"
              for d in v.cfg.devices) or (v.cfg.hvm and simple_pairs(v.cfg.image_extra)
                                          .get("vnc") == "1")
    if vnc:
        out.append((derived_uuid(v.uuid, "console/rfb"), "rfb", ""))
    return out


def vdi_location_size(uname: str) -> int:
    """Size in bytes of a disk image that is a regular file (0 otherwise: a block device or
    something this host cannot see)."""
    path = uname_path(uname)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return 0
    import stat as stat_mod
    return st.st_size if stat_mod.S_ISREG(st.st_mode) else 0


# -- back: a VM record as a (vm ...) configuration ------------------------------------------------
def _field(rec: Dict[str, Any], key: str, default: Any = "") -> Any:
    value = rec.get(key, default)
    return default if value is None else value


def config_from_record(rec: Dict[str, Any], uuid: str) -> list:
    """The ``(vm ...)`` SXP of a VM record given to ``VM.create`` (fields the API calls
    read-only are ignored). ValueError/TypeError for a value of the wrong kind; the registry
    checks the rest when it parses the result."""
    from .wire import as_bool, as_int, as_map, as_str

    name = as_str(_field(rec, "name_label", "")) or cfgmod.DEFAULT_NAME
    static_max = as_int(_field(rec, "memory_static_max", 0) or 0)
    dyn_max = as_int(_field(rec, "memory_dynamic_max", 0) or 0)
    target = dyn_max or static_max or to_bytes(cfgmod.DEFAULT_MEMORY_MIB)
    maxmem = static_max or target
    vcpus = as_int(_field(rec, "VCPUs_max", 1) or 1)
    at_startup = as_int(_field(rec, "VCPUs_at_startup", vcpus) or vcpus)
    sxp: list = ["vm", ["name", name], ["uuid", uuid],
                 ["memory", str(to_mib(target, "memory_dynamic_max"))],
                 ["maxmem", str(to_mib(maxmem, "memory_static_max"))],
                 ["vcpus", str(vcpus)]]
    if 0 < at_startup < vcpus:
        sxp.append(["vcpu_avail", str((1 << at_startup) - 1)])
    params = as_map(_field(rec, "VCPUs_params", {}) or {})
    for key, entry in (("weight", "cpu_weight"), ("cap", "cpu_cap")):
        if params.get(key):
            sxp.append([entry, params[key]])
    for key, entry in (("actions_after_shutdown", "on_poweroff"),
                       ("actions_after_reboot", "on_reboot"),
                       ("actions_after_crash", "on_crash")):
        value = as_str(_field(rec, key, ""))
        if value:
            sxp.append([entry, value])
    if as_bool(_field(rec, "auto_power_on", False)):
        sxp.append(["on_xend_start", "start"])
    description = as_str(_field(rec, "name_description", ""))
    if description:
        sxp.append(["description", description])
    for key, entry in (("PV_bootloader", "bootloader"),
                       ("PV_bootloader_args", "bootloader_args")):
        value = as_str(_field(rec, key, ""))
        if value:
            sxp.append([entry, value])
    label = as_str(_field(rec, "security_label", ""))
    if label:
        sxp.append(["security_label", label])
    sxp.append(["image", image_from_record(rec)])
    user_version = as_int(_field(rec, "user_version", 1) or 1)
    if user_version != 1:
        sxp.append(["user_version", str(user_version)])
    if as_bool(_field(rec, "is_a_template", False)):
        sxp.append(["is_a_template", "1"])
    pci_bus = as_str(_field(rec, "PCI_bus", ""))
    if pci_bus:
        sxp.append(["PCI_bus", pci_bus])
    other = as_map(_field(rec, "other_config", {}) or {})
    if other:
        sxp.append(["other_config"] + [[k, v] for k, v in sorted(other.items())])
    dyn_min = as_int(_field(rec, "memory_dynamic_min", 0) or 0)
    if dyn_min and dyn_min != target:
        sxp.append(["memory_dynamic_min", str(dyn_min)])
    static_min = as_int(_field(rec, "memory_static_min", 0) or 0)
    if static_min:
        sxp.append(["memory_static_min", str(static_min)])
    return sxp


def strip_file_uri(value: str) -> str:
    return value[len("file://"):] if value.startswith("file:///") else value


def image_from_record(rec: Dict[str, Any]) -> list:
    from .wire import as_map, as_str

    plat = as_map(_field(rec, "platform", {}) or {})
    if as_str(_field(rec, "HVM_boot_policy", "")):
        body: list = ["hvm", ["kernel", HVM_LOADER]]
        order = as_map(_field(rec, "HVM_boot_params", {}) or {}).get("order")
        if order:
            body.append(["boot", order])
    else:
        body = ["linux", ["kernel", strip_file_uri(as_str(_field(rec, "PV_kernel", "")))]]
        ramdisk = strip_file_uri(as_str(_field(rec, "PV_ramdisk", "")))
        if ramdisk:
            body.append(["ramdisk", ramdisk])
        args = as_str(_field(rec, "PV_args", ""))
        if args:
            body.append(["args", args])
    body += [[k, v] for k, v in sorted(plat.items()) if k not in ("kernel", "ramdisk", "args",
                                                                    "boot")]
    return body


# -- back: VBD and VIF records as devices -----------------------------------------------------------
def vbd_device(uname: str, device: str, mode: str = "RW", kind: str = "Disk",
               bootable: Optional[bool] = None, uuid: Optional[str] = None) -> list:
    """The ``(vbd ...)`` device of a VBD record's fields (``uname`` = the VDI's location).
    ValueError for a mode or type the API does not know."""
    mode, kind = mode.upper(), kind.lower()
    if mode not in ("RO", "RW"):
        raise ValueError(f"mode {mode!r}: RO or RW")
    if kind not in ("disk", "cd"):
        raise ValueError(f"type {kind!r}: Disk or CD")
    body: list = ["vbd", ["uname", uname], ["dev", device + (":cdrom" if kind == "cd" else "")],
                  ["mode", "w" if mode == "RW" else "r"]]
    if uuid:
        body.append(["uuid", uuid])
    if bootable is not None:
        body.append(["bootable", "1" if bootable else "0"])
    return body


def vif_device(mac: str = "", bridge: Optional[str] = None, mtu: int = 1500,
               rate: str = "", uuid: Optional[str] = None) -> list:
    """The ``(vif ...)`` device of a VIF record's fields (``bridge``: its network's)."""
    if not 68 <= mtu <= 65535:
        raise ValueError(f"MTU {mtu}: between 68 and 65535")
    body: list = ["vif"]
    if uuid:
        body.append(["uuid", uuid])
    if mac:
        body.append(["mac", mac])
    if bridge:
        body.append(["bridge", bridge])
    if mtu != 1500:
        body.append(["mtu", str(mtu)])
    if rate:
        body.append(["rate", rate])
    return body
