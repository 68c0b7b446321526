"""A domain's configuration as the hypervisor builds it (DomainSpec), and back.

``spec_for`` gives what ``Hypervisor.create_domain`` needs from a DomainConfig: memory,
VCPUs and their affinity, scheduler settings, the image (kernel, ramdisk, command line,
bootloader, PV/PVH/HVM) and, for a backend that builds devices itself, the devices with
the ids and details xend gives them (``devices.plan``).

``config_from_spec`` is the other way: a domain another toolstack built (``xl create``),
as that toolstack recorded it (``Hypervisor.native_config``), becomes a DomainConfig whose
devices are SXP as xend's own are, so xend adopts it whole: ``xm list -l`` shows its disks
and vifs, and a restart rebuilds it with them.
"""
from __future__ import annotations

from typing import Any, List, Optional

from xend.hypervisor.base import DeviceSpec, DomainSpec, Hypervisor

from . import config as cfgmod
from . import devices
from .config import DomainConfig
from .settings import Settings

#: device classes a backend that builds devices gets, beside those with hotplug backends
_BUILT_TOO = ("vfb", "vkbd")


def _image_pairs(cfg: DomainConfig) -> List[tuple]:
    pairs = []
    for e in cfg.image_extra:
        if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) \
                and isinstance(e[1], str):
            pairs.append((e[0], e[1]))
    for e in cfg.extra:
        if isinstance(e, list) and len(e) == 2 and e[0] == "nomigrate" \
                and isinstance(e[1], str):
            pairs.append(("nomigrate", e[1]))
    return pairs


def _extra_devices(cfg: DomainConfig) -> List[DeviceSpec]:
    """The vfb and vkbd of a PV guest (an HVM guest's display is its image's VNC/SDL)."""
    out: List[DeviceSpec] = []
    if cfg.hvm:
        return out
    for cls in _BUILT_TOO:
        for i, body in enumerate(d for d in cfg.devices
                                 if isinstance(d, list) and d and d[0] == cls):
            details = {e[0]: e[1] for e in body[1:]
                       if isinstance(e, list) and len(e) == 2 and isinstance(e[1], str)}
            out.append(DeviceSpec(cls, i, 0, details, {}))
    return out


def spec_for(cfg: DomainConfig, settings: Settings, hv: Hypervisor,
             console_limit_bytes: int = 0) -> DomainSpec:
    built = []
    if hv.builds_devices:
        built = devices.plan(cfg, settings)
        built += _extra_devices(cfg)
    default_sched = (cfg.cpu_weight, cfg.cpu_cap) == (cfgmod.DEFAULT_WEIGHT, cfgmod.DEFAULT_CAP)
    return DomainSpec(
        name=cfg.name, uuid=cfg.uuid, memory_kib=cfg.memory * 1024,
        maxmem_kib=cfg.maxmem * 1024, vcpus=cfg.vcpus, hvm=cfg.hvm, pvh=cfg.pvh,
        kernel=cfg.kernel, cmdline=cfg.args, ramdisk=cfg.ramdisk,
        bootloader=cfg.bootloader or "", bootloader_args=cfg.bootloader_args or "",
        online_vcpus=cfg.online_vcpus if cfg.online_vcpus < cfg.vcpus else None,
        affinity=cfg.cpus,
        cpu_weight=None if default_sched else cfg.cpu_weight,
        cpu_cap=None if default_sched else cfg.cpu_cap,
        shadow_kib=(cfg.shadow_memory or 0) * 1024,
        devices=tuple(built), image=tuple(_image_pairs(cfg)),
        store=(("console/limit", str(console_limit_bytes)),) if console_limit_bytes else (),
        on_poweroff=cfg.on_poweroff, on_reboot=cfg.on_reboot, on_crash=cfg.on_crash)


# -- back -----------------------------------------------------------------------------------------
def _device_sxp(dev: DeviceSpec) -> Optional[list]:
    order = ("uname", "dev", "mode") if dev.cls == "vbd" else \
        ("mac", "bridge", "ip", "script", "vifname", "model")
    body: List[Any] = [dev.cls]
    for key in order:
        if dev.backend.get(key):
            body.append([key, dev.backend[key]])
    return body if len(body) > 1 else None


def config_from_spec(spec: DomainSpec, name: str) -> DomainConfig:
    """The DomainConfig of a domain built elsewhere, from what its toolstack recorded
    (``name``: its name as the store shows it now)."""
    mib = max(1, spec.memory_kib // 1024)
    fields: dict = dict(
        name=name, uuid=spec.uuid, memory=mib, maxmem=max(mib, spec.maxmem_kib // 1024),
        vcpus=max(1, spec.vcpus), cpus=tuple(tuple(c) for c in spec.affinity))
    if spec.online_vcpus is not None and spec.online_vcpus < spec.vcpus:
        fields["vcpu_avail"] = (1 << spec.online_vcpus) - 1
    if spec.cpu_weight is not None:
        fields["cpu_weight"] = spec.cpu_weight
    if spec.cpu_cap is not None and spec.cpu_cap <= fields["vcpus"] * 100:
        fields["cpu_cap"] = spec.cpu_cap
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        if getattr(spec, key) in cfgmod.ACTIONS:
            fields[key] = getattr(spec, key)
    if spec.bootloader:
        fields["bootloader"] = spec.bootloader
        if spec.bootloader_args:
            fields["bootloader_args"] = spec.bootloader_args
    if spec.kernel or spec.bootloader or spec.hvm:
        fields.update(image_type="hvm" if spec.hvm else "linux", kernel=spec.kernel,
                      ramdisk=spec.ramdisk, args=spec.cmdline,
                      image_extra=(["pvh", "1"],) if spec.pvh else ())
    fields["devices"] = tuple(d for d in (_device_sxp(dev) for dev in spec.devices) if d)
    return DomainConfig(**fields)
