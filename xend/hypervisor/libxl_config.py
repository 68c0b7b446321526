"""A domain's build as libxl's JSON configuration, and back (pure functions: no library).

``domain_json`` turns a DomainSpec into the ``libxl_domain_config`` JSON that
``libxl_domain_config_from_json`` reads (the shape ``xl create -n`` prints for an xl config
file: ``c_info``, ``b_info`` with its ``type.pv``/``type.pvh``/``type.hvm`` part, ``disks``,
``nics``, ``vfbs``, ``vkbs``, ``on_*``). ``disk_json``/``nic_json`` give one device, for the
hot-plug calls. ``spec_from_json`` reads such a configuration back (what libxl keeps for a
domain ``xl`` started) so xend can adopt that domain with its kernel and devices.

libxl's JSON conventions used here: enums are their lower-case names (``"pv"``, ``"phy"``,
``"raw"``), a ``libxl_defbool`` is the string ``"True"`` or ``"False"``, a ``libxl_bitmap``
is the list of its set bits.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from .base import DeviceSpec, DomainSpec

#: xend's on_* action names -> libxl's libxl_action_on_shutdown
ACTIONS = {"destroy": "destroy", "restart": "restart", "preserve": "preserve",
           "rename-restart": "rename_restart", "coredump-destroy": "coredump_destroy",
           "coredump-restart": "coredump_restart"}
ACTIONS_BACK = {v: k for k, v in ACTIONS.items()}
ACTIONS_BACK["soft_reset"] = "restart"

#: xend's ``uname`` prefixes -> (libxl disk backend, format); None: libxl chooses
_DISK_KINDS = {
    "phy": ("phy", "raw"),
    "file": (None, "raw"),
    "tap:aio": (None, "raw"), "tap2:aio": (None, "raw"), "aio": (None, "raw"),
    "tap:qcow": ("qdisk", "qcow"), "tap:qcow2": ("qdisk", "qcow2"),
    "tap2:qcow2": ("qdisk", "qcow2"), "tap:vhd": ("qdisk", "vhd"),
    "tap2:vhd": ("qdisk", "vhd"), "qcow2": ("qdisk", "qcow2"), "vhd": ("qdisk", "vhd"),
}
#: a vif's rate when it gives no interval, as xl (50 ms)
DEFAULT_RATE_INTERVAL_US = 50000
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)([bB])?/s(?:\s*@\s*(\d+)\s*(us|ms|s)?)?"
                   r"\s*$")
_UNITS = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12}
_INTERVAL_UNITS = {"us": 1, "ms": 1000, "s": 10 ** 6, None: 1}
#: xm's tsc_mode numbers (xend 4.4: xc.domain_set_tsc_info) -> libxl_tsc_mode names
_TSC_MODES = {"0": "default", "1": "always_emulate", "2": "native", "3": "native_paravirt"}


class LibxlConfigError(ValueError):
    """The spec cannot be expressed for libxl; the message says why."""


def defbool(value: Any) -> str:
    return "True" if value else "False"


def _flag(value: Any) -> bool:
    try:
        return int(str(value).strip() or 0) != 0
    except ValueError:
        return str(value).strip().lower() in ("yes", "true", "on")


# -- disks --------------------------------------------------------------------------------------
def split_uname(uname: str) -> Tuple[str, str]:
    """``file:/x.img`` -> ('file', '/x.img'); ``tap:aio:/x`` -> ('tap:aio', '/x');
    a bare path -> ('', path)."""
    for prefix in sorted(_DISK_KINDS, key=len, reverse=True):
        if uname.startswith(prefix + ":"):
            return prefix, uname[len(prefix) + 1:]
    kind, sep, rest = uname.partition(":")
    if sep and not kind.startswith("/"):
        return kind, rest
    return "", uname


def disk_target(uname: str) -> Tuple[str, str]:
    """(kind, host path) of a vbd's ``uname``; ``phy:sda1`` means ``/dev/sda1``."""
    kind, target = split_uname(uname)
    if kind == "phy" and target and not target.startswith("/"):
        target = "/dev/" + target
    return kind, target


def disk_json(dev: DeviceSpec) -> Dict[str, Any]:
    details = dev.backend
    uname = details.get("uname", "")
    kind, target = disk_target(uname)
    if kind and kind not in _DISK_KINDS:
        raise LibxlConfigError(f"disk {uname!r}: unknown disk type {kind!r} (phy:, file:, "
                               f"tap:aio:, tap2:aio:, tap:qcow2: ...)")
    backend, fmt = _DISK_KINDS.get(kind, (None, "raw"))
    vdev, _, devtype = details.get("dev", "").partition(":")
    if vdev.startswith("ioemu:"):
        vdev = vdev[len("ioemu:"):]
    cdrom = "cdrom" in (devtype, details.get("device-type"), dev.frontend.get("device-type"))
    if not vdev:
        raise LibxlConfigError(f"disk {uname!r} has no virtual device name (dev)")
    mode = details.get("mode", "r")
    disk: Dict[str, Any] = {
        "backend_domid": dev.backend_domid,
        "pdev_path": target,
        "vdev": vdev,
        "format": "empty" if cdrom and not target else fmt,
        "readwrite": 0 if cdrom or not mode.startswith("w") else 1,
        "is_cdrom": 1 if cdrom else 0,
    }
    if backend:
        disk["backend"] = backend
    script = details.get("script")
    if script:
        disk["script"] = script
    return disk


# -- nics ---------------------------------------------------------------------------------------
def parse_rate(rate: str) -> Tuple[int, int]:
    """``10MB/s`` / ``100Mb/s@20ms`` -> (bytes per interval, interval in µs), as xl reads a
    vif's rate (bits when the unit is ``b``, bytes when ``B`` or none)."""
    m = _RATE.match(rate)
    if not m:
        raise LibxlConfigError(f"vif rate {rate!r}: expected e.g. 10MB/s or 100Mb/s@20ms")
    number, prefix, unit, interval, iunit = m.groups()
    per_second = float(number) * _UNITS[prefix.lower()]
    if unit == "b":
        per_second /= 8
    usecs = int(interval) * _INTERVAL_UNITS[iunit] if interval else DEFAULT_RATE_INTERVAL_US
    if usecs <= 0 or usecs > 0xFFFFFFFF:
        raise LibxlConfigError(f"vif rate {rate!r}: bad interval")
    return max(1, int(per_second * usecs / 1e6)), usecs


def nic_json(dev: DeviceSpec, hvm: bool = False) -> Dict[str, Any]:
    d = dev.backend
    nic: Dict[str, Any] = {"backend_domid": dev.backend_domid, "devid": dev.devid}
    for ours, theirs in (("mac", "mac"), ("bridge", "bridge"), ("ip", "ip"),
                         ("script", "script"), ("vifname", "ifname"), ("model", "model")):
        if d.get(ours):
            nic[theirs] = d[ours]
    if d.get("rate"):
        nic["rate_bytes_per_interval"], nic["rate_interval_usecs"] = parse_rate(d["rate"])
    kind = d.get("type", "")
    nic["nictype"] = "vif_ioemu" if hvm and kind != "netfront" else "vif"
    return nic


# -- PCI ------------------------------------------------------------------------------------------
def pci_json(dev: DeviceSpec) -> Dict[str, Any]:
    """A PCI device passed through (``domain``, ``bus``, ``slot``, ``func`` in hex as xm
    writes them; ``vdevfn`` the guest's slot, 0x100 = any)."""
    d = dev.backend

    def number(key: str, default: int = 0) -> int:
        try:
            return int(str(d.get(key, default)), 16) if d.get(key) else default
        except ValueError:
            raise LibxlConfigError(f"pci {key} {d.get(key)!r}: a hexadecimal number is "
                                   f"needed") from None

    pci: Dict[str, Any] = {"domain": number("domain"), "bus": number("bus"),
                           "dev": number("slot"), "func": number("func")}
    vdevfn = number("vdevfn", 0x100)
    if vdevfn != 0x100:
        pci["vdevfn"] = vdevfn
    for key in ("msitranslate", "power_mgmt", "permissive"):
        if key in d:
            pci[key] = _flag(d[key])           # plain bools (not libxl_defbool)
    return pci


# -- framebuffer and keyboard ---------------------------------------------------------------------
def vfb_json(dev: DeviceSpec) -> Dict[str, Any]:
    d = dev.backend
    vnc = _flag(d.get("vnc", 0)) or d.get("type") == "vnc"
    sdl = _flag(d.get("sdl", 0)) or d.get("type") == "sdl"
    vfb: Dict[str, Any] = {"backend_domid": dev.backend_domid, "devid": dev.devid,
                           "vnc": {"enable": defbool(vnc)}, "sdl": {"enable": defbool(sdl)}}
    if vnc:
        if d.get("vnclisten"):
            vfb["vnc"]["listen"] = d["vnclisten"]
        if d.get("vncpasswd"):
            vfb["vnc"]["passwd"] = d["vncpasswd"]
        if d.get("vncdisplay", "").isdigit():
            vfb["vnc"]["display"] = int(d["vncdisplay"])
        vfb["vnc"]["findunused"] = defbool(_flag(d.get("vncunused", 1)))
    if sdl and d.get("display"):
        vfb["sdl"]["display"] = d["display"]
    if d.get("keymap"):
        vfb["keymap"] = d["keymap"]
    return vfb


def vkb_json(dev: DeviceSpec) -> Dict[str, Any]:
    return {"backend_domid": dev.backend_domid, "devid": dev.devid}


# -- the domain ---------------------------------------------------------------------------------
def guest_type(spec: DomainSpec) -> str:
    return "hvm" if spec.hvm else ("pvh" if spec.pvh else "pv")


def _hvm_part(spec: DomainSpec) -> Dict[str, Any]:
    image = dict(spec.image)
    hvm: Dict[str, Any] = {}
    for key in ("acpi", "apic", "pae", "hpet", "viridian", "nx"):
        if key in image:
            hvm[key] = defbool(_flag(image[key]))
    if image.get("boot"):
        hvm["boot"] = image["boot"]
    if image.get("serial"):
        hvm["serial"] = image["serial"]
    if image.get("loader") and image["loader"] != "hvmloader":
        hvm["firmware"] = image["loader"]
    vnc = _flag(image.get("vnc", 0))
    hvm["vnc"] = {"enable": defbool(vnc)}
    if vnc:
        if image.get("vnclisten"):
            hvm["vnc"]["listen"] = image["vnclisten"]
        if image.get("vncpasswd"):
            hvm["vnc"]["passwd"] = image["vncpasswd"]
        hvm["vnc"]["findunused"] = defbool(_flag(image.get("vncunused", 1)))
    hvm["sdl"] = {"enable": defbool(_flag(image.get("sdl", 0)))}
    if _flag(image.get("nographic", 0)):
        hvm["nographic"] = "True"
    if _flag(image.get("stdvga", 0)):
        hvm["vga"] = {"kind": "std"}
    if image.get("keymap"):
        hvm["keymap"] = image["keymap"]
    if _flag(image.get("usb", 0)):
        hvm["usb"] = "True"
    if image.get("usbdevice"):
        hvm["usbdevice"] = image["usbdevice"]
    if image.get("soundhw"):
        hvm["soundhw"] = image["soundhw"]
    return hvm


def domain_config(spec: DomainSpec) -> Dict[str, Any]:
    kind = guest_type(spec)
    c_info: Dict[str, Any] = {"type": kind, "name": spec.name, "uuid": spec.uuid}
    if spec.store:
        c_info["xsdata"] = dict(spec.store)     # written before xenconsoled sees the domain
    if spec.ssidref:
        c_info["ssidref"] = spec.ssidref
    online = spec.vcpus if spec.online_vcpus is None else max(1, min(spec.online_vcpus,
                                                                     spec.vcpus))
    b_info: Dict[str, Any] = {
        "max_vcpus": spec.vcpus,
        "avail_vcpus": list(range(online)),
        "max_memkb": spec.maxmem_kib,
        "target_memkb": spec.memory_kib,
    }
    if spec.shadow_kib:
        b_info["shadow_memkb"] = spec.shadow_kib
    if any(spec.affinity):
        b_info["vcpu_hard_affinity"] = [list(spec.affinity[v]) if v < len(spec.affinity)
                                        and spec.affinity[v] else []
                                        for v in range(spec.vcpus)]
        # a VCPU without its own affinity may run anywhere: leave libxl's default for it
        if not all(b_info["vcpu_hard_affinity"]):
            del b_info["vcpu_hard_affinity"]
    sched: Dict[str, Any] = {}
    if spec.cpu_weight is not None:
        sched["weight"] = spec.cpu_weight
    if spec.cpu_cap is not None:
        sched["cap"] = spec.cpu_cap
    if sched:
        b_info["sched_params"] = sched
    if spec.kernel:
        b_info["kernel"] = spec.kernel
    if spec.cmdline:
        b_info["cmdline"] = spec.cmdline
    if spec.ramdisk:
        b_info["ramdisk"] = spec.ramdisk
    if spec.bootloader:
        b_info["bootloader"] = spec.bootloader
        if spec.bootloader_args:
            b_info["bootloader_args"] = spec.bootloader_args.split()
    image = dict(spec.image)
    if _flag(image.get("nomigrate", 0)):
        b_info["disable_migrate"] = "True"
    tsc_mode = str(image.get("tsc_mode", "0")).strip() or "0"
    if tsc_mode not in _TSC_MODES:
        raise LibxlConfigError(f"tsc_mode {tsc_mode!r}: 0 (default), 1 (always emulate), "
                               f"2 (native) or 3 (native paravirt)")
    if tsc_mode != "0":
        b_info["tsc_mode"] = _TSC_MODES[tsc_mode]
    if kind == "hvm":
        b_info["type.hvm"] = _hvm_part(spec)
        b_info["device_model_version"] = "qemu_xen"
        if image.get("device_model"):
            b_info["device_model"] = image["device_model"]
    else:
        b_info[f"type.{kind}"] = {}
    cfg: Dict[str, Any] = {"c_info": c_info, "b_info": b_info}
    by_class: Dict[str, List[Dict[str, Any]]] = {}
    for dev in spec.devices:
        if dev.cls in ("vbd", "tap", "tap2"):
            by_class.setdefault("disks", []).append(disk_json(dev))
        elif dev.cls == "vif":
            by_class.setdefault("nics", []).append(nic_json(dev, kind == "hvm"))
        elif dev.cls == "vfb":
            by_class.setdefault("vfbs", []).append(vfb_json(dev))
        elif dev.cls == "vkbd":
            by_class.setdefault("vkbs", []).append(vkb_json(dev))
        else:
            raise LibxlConfigError(f"device class {dev.cls!r} cannot be built on this host "
                                   f"(disks, vifs, vfb and vkbd can)")
    cfg.update(by_class)
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        action = getattr(spec, key)
        if action in ACTIONS:
            cfg[key] = ACTIONS[action]
    return cfg


def domain_json(spec: DomainSpec) -> str:
    return json.dumps(domain_config(spec), indent=1, sort_keys=True)


# -- back: what libxl keeps -> a spec -------------------------------------------------------------
def _bits(value: Any) -> List[int]:
    return [int(b) for b in value] if isinstance(value, list) else []


def _disk_back(disk: Dict[str, Any]) -> Optional[DeviceSpec]:
    vdev = disk.get("vdev")
    if not vdev:
        return None
    path = disk.get("pdev_path") or ""
    backend = disk.get("backend", "unknown")
    fmt = disk.get("format", "raw")
    if backend == "phy" and path.startswith("/dev/"):
        uname = "phy:" + path
    elif fmt in ("qcow2", "qcow", "vhd"):
        uname = f"tap:{fmt}:{path}"
    else:
        uname = ("phy:" if path.startswith("/dev/") else "file:") + path
    cdrom = bool(disk.get("is_cdrom"))
    details = {"uname": uname if path else "", "dev": vdev + (":cdrom" if cdrom else ":disk"),
               "mode": "w" if disk.get("readwrite") else "r"}
    return DeviceSpec("vbd", 0, int(disk.get("backend_domid", 0) or 0), details)


def _nic_back(nic: Dict[str, Any]) -> DeviceSpec:
    details = {}
    for theirs, ours in (("mac", "mac"), ("bridge", "bridge"), ("ip", "ip"),
                         ("script", "script"), ("ifname", "vifname"), ("model", "model")):
        if nic.get(theirs):
            details[ours] = str(nic[theirs])
    return DeviceSpec("vif", int(nic.get("devid", 0) or 0),
                      int(nic.get("backend_domid", 0) or 0), details)


def spec_from_config(cfg: Dict[str, Any]) -> DomainSpec:
    """A DomainSpec from a libxl domain configuration (``libxl_domain_config_to_json``)."""
    c_info = cfg.get("c_info") or {}
    b_info = cfg.get("b_info") or {}
    kind = c_info.get("type", "pv")
    max_kib = int(b_info.get("max_memkb") or 0)
    target_kib = int(b_info.get("target_memkb") or max_kib)
    vcpus = int(b_info.get("max_vcpus") or 1)
    avail = _bits(b_info.get("avail_vcpus"))
    affinity = tuple(tuple(_bits(m)) for m in b_info.get("vcpu_hard_affinity") or [])
    sched = b_info.get("sched_params") or {}
    part = b_info.get(f"type.{kind}") or {}
    devices: List[DeviceSpec] = []
    for disk in cfg.get("disks") or []:
        spec = _disk_back(disk)
        if spec is not None:
            devices.append(spec)
    devices.extend(_nic_back(n) for n in cfg.get("nics") or [])
    actions = {key: ACTIONS_BACK.get(cfg.get(key), "")
               for key in ("on_poweroff", "on_reboot", "on_crash")}
    loader_args = b_info.get("bootloader_args") or part.get("bootloader_args") or []
    weight, cap = sched.get("weight"), sched.get("cap")
    return DomainSpec(
        name=str(c_info.get("name") or ""), uuid=str(c_info.get("uuid") or ""),
        memory_kib=target_kib, maxmem_kib=max(max_kib, target_kib), vcpus=vcpus,
        hvm=kind == "hvm", pvh=kind == "pvh",
        kernel=str(b_info.get("kernel") or part.get("kernel") or ""),
        cmdline=str(b_info.get("cmdline") or part.get("cmdline") or ""),
        ramdisk=str(b_info.get("ramdisk") or part.get("ramdisk") or ""),
        bootloader=str(b_info.get("bootloader") or part.get("bootloader") or ""),
        bootloader_args=" ".join(str(a) for a in loader_args),
        online_vcpus=len(avail) if avail else None,
        affinity=affinity if any(affinity) else (),
        cpu_weight=int(weight) if isinstance(weight, int) and weight > 0 else None,
        cpu_cap=int(cap) if isinstance(cap, int) and cap >= 0 else None,
        devices=tuple(devices), **actions)


def host_paths_missing(spec: DomainSpec) -> List[str]:
    """The host files a spec names that do not exist (kernel, ramdisk, disk images)."""
    missing = []
    for what, path in (("kernel", spec.kernel), ("ramdisk", spec.ramdisk)):
        if path and not os.path.exists(path):
            missing.append(f"{what} {path}")
    for dev in spec.devices:
        if dev.cls in ("vbd", "tap", "tap2"):
            uname = dev.backend.get("uname", "")
            _, target = disk_target(uname)
            if target and not os.path.exists(target):
                missing.append(f"disk {target} ({dev.backend.get('dev', '?')})")
    return missing
