"""What a real Xen host must have before a domain is built from a spec, checked up front so
that a refusal leaves nothing behind and says what is missing: the kernel and ramdisk, a
bootloader, the disks' files and devices, the vifs' bridges and scripts, and for HVM guests
and PV framebuffers the firmware and the device model.

Paths follow the Xen packages' layout: ``/usr/lib/xen-<major>.<minor>/{bin,boot}`` (Debian),
with ``/usr/lib/xen`` and ``/usr/libexec/xen`` (upstream and other distributions) beside it.
"""
from __future__ import annotations

import os
import shutil
from typing import List, Optional, Sequence

from .base import DeviceSpec, DomainSpec
from .libxl_config import disk_target

#: where the device model (qemu built for Xen) is looked for, after the spec's own:
#: Debian's qemu-system-xen, then the Xen packages' own (a distribution's plain
#: /usr/bin/qemu-system-i386 is usually built without Xen support: not counted)
DEVICE_MODELS = ("/usr/libexec/xen-qemu-system-i386", "{lib}/bin/qemu-system-i386",
                 "/usr/lib/xen/bin/qemu-system-i386", "/usr/libexec/xen/bin/qemu-system-i386")
HVMLOADERS = ("{lib}/boot/hvmloader", "/usr/lib/xen/boot/hvmloader",
              "/usr/libexec/xen/boot/hvmloader")
DEFAULT_BRIDGE = "xenbr0"          # libxl's default for a vif that names none
SYS_NET = "/sys/class/net"


class HostLayout:
    """Where this host keeps Xen's tools (``lib``: ``/usr/lib/xen-4.17``)."""

    def __init__(self, major: int, minor: int, sys_net: str = SYS_NET):
        self.lib = f"/usr/lib/xen-{major}.{minor}"
        self.sys_net = sys_net

    def _first(self, candidates: Sequence[str]) -> Optional[str]:
        for c in candidates:
            path = c.format(lib=self.lib)
            if os.path.exists(path):
                return path
        return None

    def device_model(self, wanted: str = "") -> Optional[str]:
        if wanted:
            return wanted if os.path.exists(wanted) else None
        return self._first(DEVICE_MODELS)

    def hvmloader(self) -> Optional[str]:
        return self._first(HVMLOADERS)

    def bootloader(self, name: str) -> Optional[str]:
        """The bootloader's path: as given when it exists, else its name in Xen's bin
        directory or on PATH (xm writes ``pygrub`` as the original's ``/usr/lib/xen/bin/
        pygrub``; Debian keeps it in ``/usr/lib/xen-4.17/bin``)."""
        if os.path.isabs(name):
            if os.access(name, os.X_OK):
                return name
            name = os.path.basename(name)
        for d in (f"{self.lib}/bin", "/usr/lib/xen/bin", "/usr/libexec/xen/bin"):
            path = os.path.join(d, name)
            if os.access(path, os.X_OK):
                return path
        return shutil.which(name)

    def is_bridge(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self.sys_net, name, "bridge"))


def problems(spec: DomainSpec, host: HostLayout) -> List[str]:
    """Everything ``spec`` needs that this host lacks, one sentence each ([] = buildable)."""
    out: List[str] = []
    if not (spec.hvm or spec.kernel or spec.bootloader):
        out.append("it has neither a kernel nor a bootloader")
    for what, path in (("kernel", spec.kernel), ("ramdisk", spec.ramdisk)):
        if path and not os.path.isfile(path):
            out.append(f"its {what} {path} does not exist")
    if spec.bootloader and host.bootloader(spec.bootloader) is None:
        out.append(f"its bootloader {spec.bootloader} is not installed on this host")
    image = dict(spec.image)
    needs_dm = spec.hvm or any(d.cls in ("vfb", "vkbd") for d in spec.devices)
    if spec.hvm and host.hvmloader() is None and not image.get("loader", "").startswith("/"):
        out.append(f"HVM guests need the firmware hvmloader, which this host lacks "
                   f"(looked in {host.lib}/boot)")
    if needs_dm and host.device_model(image.get("device_model", "")) is None:
        what = "HVM guests" if spec.hvm else "a virtual framebuffer or keyboard (vfb, vkbd)"
        out.append(f"{what} need a device model (qemu for Xen), which this host lacks "
                   f"(install qemu-system-xen; looked for {DEVICE_MODELS[0]})")
    for dev in spec.devices:
        out.extend(device_problems(dev, host))
    return out


def device_problems(dev: DeviceSpec, host: HostLayout) -> List[str]:
    """What one disk or vif needs that this host lacks (also before a hot-plug)."""
    if dev.cls in ("vbd", "tap", "tap2"):
        return _disk_problems(dev)
    if dev.cls == "vif":
        return _vif_problems(dev.backend, host)
    return []


def _disk_problems(dev: DeviceSpec) -> List[str]:
    details = dev.backend
    uname = details.get("uname", "")
    name = details.get("dev", "?")
    kind, target = disk_target(uname)
    cdrom = "cdrom" in (dev.frontend.get("device-type"), details.get("dev", "").partition(":")[2])
    if not target:
        return [] if cdrom else [f"its disk {name} names no file or device"]
    if not os.path.exists(target):
        return [f"its disk {name}: {target} does not exist"]
    if kind == "phy" and not os.path.isfile(target) and not _is_block(target):
        return [f"its disk {name}: {target} is not a block device"]
    if kind in ("file", "tap:aio", "tap2:aio", "aio") and not os.path.isfile(target):
        return [f"its disk {name}: {target} is not a file"]
    return []


def _is_block(path: str) -> bool:
    import stat
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _vif_problems(details: dict, host: HostLayout) -> List[str]:
    out = []
    script = details.get("script", "")
    if script and os.path.isabs(script) and not os.access(script, os.X_OK):
        out.append(f"its vif script {script} does not exist")
    if not script or os.path.basename(script).startswith("vif-bridge"):
        bridge = details.get("bridge") or DEFAULT_BRIDGE
        if not host.is_bridge(bridge):
            out.append(f"its vif's bridge {bridge} does not exist")
    return out
