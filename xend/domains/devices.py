"""A domain's devices: the defaults xend-config.sxp gives them, the checks made before a
domain is built, and their entries in the store with the waits for their backends
(reference §8.6; options vif-script, vnc-*, vncpasswd, keymap, device-create-timeout,
device-destroy-timeout, pci-passthrough-strict-check).

Devices are kept as SXP in the domain's configuration. When a domain is built:

* ``apply_defaults`` fills in what the options provide and the configuration lacks: the
  ``script`` of each vif (``vif-script``, as the original wrote it to the vif's backend), a
  MAC address (random in 00:16:3e, as the original) for a vif that has none, and
  for an HVM image or a vfb that uses VNC, ``vnclisten`` (``vnc-listen``) and ``vncpasswd``;
  ``keymap`` for every HVM image and vfb. The result is the domain's configuration from then
  on, so ``xm list -l`` shows it, as the original's did (it read it back from the backends).
* ``check_buildable`` refuses what cannot be built: PCI devices (this xend cannot pass a PCI
  device through) when ``pci-passthrough-strict-check`` is on, and VNC over TLS when
  ``vnc-x509-cert-dir`` does not exist.
* When the hypervisor's host has device backends (``Hypervisor.device_backends``: the
  simulated one), ``publish`` writes the frontend and backend directories of each device of
  the classes that have backends (vif, vbd, tap, tap2, vtpm, vscsi), the way the original
  did; ``wait_connected`` waits up to ``device-create-timeout`` seconds for every backend to
  report ``hotplug-status`` = connected; on teardown ``close`` marks the backends Closing and
  ``wait_gone`` waits up to ``device-destroy-timeout`` seconds for them to go, removing the
  entries of those that did not.

Passwords are never logged.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from xend.errors import HypervisorError, VmError
from xend.hypervisor.base import DeviceSpec, Hypervisor

from .config import DomainConfig
from .settings import Settings

log = logging.getLogger("xend.DevController")

#: device classes whose backend runs hotplug scripts: published and waited for
BACKEND_CLASSES = ("vif", "vbd", "tap", "tap2", "vtpm", "vscsi")
BLOCK_CLASSES = ("vbd", "tap", "tap2")
# xenbus states
INITIALISING, CONNECTED, CLOSING = "1", "4", "5"
POLL_INTERVAL = 0.05


# -- defaults -----------------------------------------------------------------------------------
def _has(entries: Sequence[Any], key: str) -> bool:
    return any(isinstance(e, list) and e and e[0] == key for e in entries)


def _value(entries: Sequence[Any], key: str) -> Any:
    for e in entries:
        if isinstance(e, list) and e and e[0] == key:
            return e[1] if len(e) > 1 else ""
    return None


def _on(value: Any) -> bool:
    """A vnc/sdl flag as the original read it: int(value) != 0; anything else is off."""
    try:
        return int(str(value).strip()) != 0
    except (TypeError, ValueError):
        return False


def vfb_uses_vnc(body: Sequence[Any]) -> bool:
    """A ``(vfb ...)`` with ``(vnc 1)`` or the older ``(type vnc)``."""
    return _on(_value(body[1:], "vnc")) or _value(body[1:], "type") == "vnc"


def hvm_uses_vnc(cfg: DomainConfig) -> bool:
    return cfg.hvm and _on(_value(cfg.image_extra, "vnc"))


def vfbs(cfg: DomainConfig) -> List[list]:
    return [d for d in cfg.devices if isinstance(d, list) and d and d[0] == "vfb"]


def uses_vnc(cfg: DomainConfig) -> bool:
    return hvm_uses_vnc(cfg) or any(vfb_uses_vnc(d) for d in vfbs(cfg))


def needs_device_model(cfg: DomainConfig) -> bool:
    """The original ran qemu-dm for HVM domains and for PV domains with a vfb."""
    return cfg.hvm or bool(vfbs(cfg))


def _display_defaults(entries: List[Any], s: Settings, vnc: bool) -> bool:
    """Fill vnclisten/vncpasswd (when ``vnc``) and keymap into ``entries``; True if changed.
    A ``(vncpasswd '')`` of the guest's own means "no password" and is kept; an empty keymap
    (xm writes ``(keymap '')`` for every HVM guest) means none and gets the default."""
    added = []
    if vnc:
        if not _has(entries, "vnclisten"):
            added.append(["vnclisten", s.vnc_listen])
        if s.vncpasswd is not None and not _has(entries, "vncpasswd"):
            added.append(["vncpasswd", s.vncpasswd])
    changed = False
    if s.keymap:
        for i, e in enumerate(entries):
            if isinstance(e, list) and e and e[0] == "keymap":
                if len(e) < 2 or e[1] == "":
                    entries[i] = ["keymap", s.keymap]
                    changed = True
                break
        else:
            added.append(["keymap", s.keymap])
    entries.extend(added)
    return changed or bool(added)


def random_mac() -> str:
    """A MAC in Xen's range 00:16:3e, as the original gave a vif that named none (the
    first random byte below 0x80)."""
    import random
    rng = random.SystemRandom()
    return "00:16:3e:%02x:%02x:%02x" % (rng.randint(0, 0x7F), rng.randint(0, 0xFF),
                                         rng.randint(0, 0xFF))


def apply_defaults(cfg: DomainConfig, s: Settings) -> DomainConfig:
    """``cfg`` with the option defaults its devices and image lack (a new config, or ``cfg``
    itself when nothing is missing). Idempotent."""
    changed = False
    devices = []
    for dev in cfg.devices:
        if not (isinstance(dev, list) and dev):
            devices.append(dev)
            continue
        body = list(dev)
        if body[0] == "vif" and not _has(body[1:], "mac"):
            body.append(["mac", random_mac()])
        if body[0] == "vif" and s.vif_script and not _has(body[1:], "script"):
            body.append(["script", s.vif_script])
        elif body[0] == "vfb":
            _display_defaults(body, s, vfb_uses_vnc(body))
        changed = changed or body != dev
        devices.append(body)
    image_extra = list(cfg.image_extra)
    if cfg.hvm and _display_defaults(image_extra, s, hvm_uses_vnc(cfg)):
        changed = True
    if not changed:
        return cfg
    return cfg.replace(devices=tuple(devices), image_extra=tuple(image_extra))


# -- checks before building ---------------------------------------------------------------------
def pci_devices(cfg: DomainConfig) -> List[str]:
    """``DDDD:BB:SS.F`` of every PCI device of the config."""
    out = []
    for dev in cfg.devices:
        if not (isinstance(dev, list) and dev and dev[0] == "pci"):
            continue
        for item in dev[1:]:
            if not (isinstance(item, list) and item and item[0] == "dev"):
                continue
            key = _value(item[1:], "key")
            if isinstance(key, str) and key:
                out.append(key)
                continue
            try:
                parts = [int(str(_value(item[1:], k) or "0"), 16)
                         for k in ("domain", "bus", "slot", "func")]
                out.append("%04x:%02x:%02x.%x" % tuple(parts))
            except ValueError:
                out.append("?")
    return out


def check_buildable(cfg: DomainConfig, s: Settings, backend: str) -> None:
    """Refuse (VmError) what this xend cannot build for ``cfg``; log what it leaves out."""
    pci = pci_devices(cfg)
    if pci:
        where = ", ".join(pci)
        if s.pci_strict_check:
            raise VmError("pci: cannot pass %s through to domain %s: this xend (hypervisor "
                          "backend %s) cannot assign PCI devices; with "
                          "pci-passthrough-strict-check off the domain starts without them"
                          % (where, cfg.name, backend))
        log.warning("Domain %s: PCI device(s) %s not passed through: this xend cannot assign "
                    "PCI devices (pci-passthrough-strict-check is off, so the domain starts "
                    "without them)", cfg.name, where)
    if s.vnc_tls and uses_vnc(cfg) and not os.path.isdir(s.vnc_x509_cert_dir):
        raise VmError("VNC x509 certificate dir %s does not exist" % s.vnc_x509_cert_dir)


# -- the store: publishing, waiting, closing ----------------------------------------------------
#: one device with its store entries (the hypervisor interface's DeviceSpec)
Device = DeviceSpec


_XVD = re.compile(r"^xvd([a-z]+)(\d*)$")
_SD = re.compile(r"^sd([a-z])(\d*)$")
_HD = re.compile(r"^hd([a-t])(\d*)$")
_HD_MAJORS = (3, 22, 33, 34, 56, 57, 88, 89, 90, 91)


def blkdev_number(name: str) -> Optional[int]:
    """Linux device number of a virtual disk name (``xvda`` 51712, ``hda`` 768, ``sda1``
    2049, ``51713``); None if it is no such name."""
    name = name.split(":", 1)[1] if name.startswith("ioemu:") else name
    name = name.split(":", 1)[0]                 # hda:cdrom -> hda
    if name.isdigit():
        return int(name)
    m = _XVD.match(name)
    if m:
        disk = 0
        for c in m.group(1):
            disk = disk * 26 + (ord(c) - ord("a") + 1)
        disk -= 1
        part = int(m.group(2) or 0)
        if disk < 16 and part < 16:
            return (202 << 8) | (disk << 4) | part
        return (1 << 28) | (disk << 8) | part
    m = _SD.match(name)
    if m:
        return (8 << 8) | ((ord(m.group(1)) - ord("a")) << 4) | int(m.group(2) or 0)
    m = _HD.match(name)
    if m:
        disk = ord(m.group(1)) - ord("a")
        return (_HD_MAJORS[disk // 2] << 8) | ((disk % 2) * 64) | int(m.group(2) or 0)
    return None


def _simple(body: Sequence[Any]) -> Dict[str, str]:
    return {e[0]: e[1] for e in body
            if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
            and isinstance(e[1], str)}


def plan(cfg: DomainConfig, s: Settings) -> List[Device]:
    """The devices of ``cfg`` that have a backend, with their ids and store entries."""
    out: List[Device] = []
    used: Dict[str, set] = {}
    for dev in cfg.devices:
        if not (isinstance(dev, list) and dev and dev[0] in BACKEND_CLASSES):
            continue
        cls = dev[0]
        details = _simple(dev[1:])
        taken = used.setdefault(cls, set())
        devid = None
        if cls in BLOCK_CLASSES:
            devid = blkdev_number(details.get("dev", ""))
        if devid is None or devid in taken:
            devid = 0
            while devid in taken:
                devid += 1
        taken.add(devid)
        try:
            backend_domid = int(details.get("backend", "0"))
        except ValueError:
            backend_domid = 0
        back = dict(details)
        front: Dict[str, str] = {}
        if cls == "vif":
            script = details.get("script")
            if script:
                back["script"] = script if os.path.isabs(script) else \
                    os.path.join(s.scripts_path, script)
            back["handle"] = front["handle"] = str(devid)
            if "mac" in details:
                front["mac"] = details["mac"]
        elif cls in BLOCK_CLASSES:
            uname = details.get("uname", "")
            kind, sep, params = uname.partition(":")
            if sep:
                back["type"], back["params"] = kind, params
            front["virtual-device"] = str(devid)
        out.append(Device(cls, devid, backend_domid, back, front))
    return out


def publish(hv: Hypervisor, domid: int, devices: List[Device]) -> None:
    """Write the frontend and backend directories of ``devices`` of domain ``domid``; the
    backend's ``state`` (Initialising) is written last: the backend acts on it."""
    for d in devices:
        bpath = d.backend_path(domid)
        fpath = Device.frontend_path(domid, d.cls, d.devid)
        for key, value in d.frontend.items():
            hv.store_write(f"{fpath}/{key}", value)
        hv.store_write(f"{fpath}/backend", bpath)
        hv.store_write(f"{fpath}/backend-id", str(d.backend_domid))
        hv.store_write(f"{fpath}/state", INITIALISING)
        for key, value in d.backend.items():
            hv.store_write(f"{bpath}/{key}", value)
        hv.store_write(f"{bpath}/frontend", fpath)
        hv.store_write(f"{bpath}/frontend-id", str(domid))
        hv.store_write(f"{bpath}/online", "1")
        hv.store_write(f"{bpath}/state", INITIALISING)
        log.debug("Domain %d: device %s %d published (backend %s)", domid, d.cls, d.devid, bpath)


def _read(hv: Hypervisor, path: str) -> Optional[str]:
    try:
        return hv.store_read(path)
    except HypervisorError:
        return None


def _list(hv: Hypervisor, path: str) -> List[str]:
    try:
        return hv.store_list(path)
    except HypervisorError:
        return []


def published(hv: Hypervisor, domid: int) -> List[Tuple[str, str, str]]:
    """(class, devid, backend path) of every device the store lists for domain ``domid``:
    from its frontend directories, plus dom0's backend directories for it (which outlive a
    domain that vanished without xend)."""
    out = []
    base = f"/local/domain/{domid}/device"
    for cls in _list(hv, base):
        if cls not in BACKEND_CLASSES:
            continue
        for devid in _list(hv, f"{base}/{cls}"):
            bpath = _read(hv, f"{base}/{cls}/{devid}/backend")
            if bpath:
                out.append((cls, devid, bpath))
    seen = {bpath for _, _, bpath in out}
    for cls in _list(hv, "/local/domain/0/backend"):
        if cls not in BACKEND_CLASSES:
            continue
        back = f"/local/domain/0/backend/{cls}/{domid}"
        for devid in _list(hv, back):
            if f"{back}/{devid}" not in seen:
                out.append((cls, devid, f"{back}/{devid}"))
    return out


def wait_connected(hv: Hypervisor, domid: int, timeout: float,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Return once every device of ``domid`` is connected; VmError as the original's when one
    reports an error, has lost its backend, or is not connected within ``timeout`` s."""
    pending = published(hv, domid)
    deadline = clock() + timeout
    while pending:
        waiting = []
        for cls, devid, bpath in pending:
            status = _read(hv, bpath + "/hotplug-status")
            if status == "connected":
                continue
            if status == "error":
                why = _read(hv, bpath + "/hotplug-error") or "Hotplug script failed."
                raise VmError("Device %s (%s) could not be connected. %s" % (devid, cls, why))
            if _read(hv, bpath + "/state") is None:
                raise VmError("Device %s (%s) could not be connected. Backend device not "
                              "found." % (devid, cls))
            waiting.append((cls, devid, bpath))
        if not waiting:
            break
        left = deadline - clock()
        if left <= 0:
            cls, devid, _ = waiting[0]
            log.error("Domain %d: %d device(s) not connected within %s s "
                      "(device-create-timeout)", domid, len(waiting), _secs(timeout))
            raise VmError("Device %s (%s) could not be connected. Hotplug scripts not working "
                          "(no answer within %s s, device-create-timeout)."
                          % (devid, cls, _secs(timeout)))
        sleep(min(POLL_INTERVAL, left))
        pending = waiting


def close(hv: Hypervisor, domid: int) -> List[Tuple[str, str, str]]:
    """Tell the backends of ``domid``'s devices to close (``online`` 0, state Closing), as
    the original did before destroying a domain; returns what ``wait_gone`` waits for."""
    devices = published(hv, domid)
    for cls, devid, bpath in devices:
        try:
            hv.store_write(bpath + "/online", "0")
            hv.store_write(bpath + "/state", CLOSING)
        except HypervisorError as e:
            log.debug("closing %s %s of domain %d: %s", cls, devid, domid, e)
    return devices


def wait_gone(hv: Hypervisor, domid: int, devices: List[Tuple[str, str, str]], timeout: float,
              sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Wait up to ``timeout`` s for the closed backends to remove their directories; those
    still there are logged (``could not be disconnected``) and removed by xend."""
    pending = list(devices)
    deadline = clock() + timeout
    while pending:
        pending = [d for d in pending if _read(hv, d[2] + "/state") is not None
                   or _list(hv, d[2])]
        if not pending:
            break
        left = deadline - clock()
        if left <= 0:
            break
        sleep(min(POLL_INTERVAL, left))
    for cls, devid, bpath in pending:
        log.warning("Device %s (%s) of domain %d could not be disconnected within %s s "
                    "(device-destroy-timeout); removing %s", devid, cls, domid,
                    _secs(timeout), bpath)
        try:
            hv.store_rm(bpath)
        except HypervisorError as e:
            log.error("Cannot remove %s: %s", bpath, e)
    for parent in sorted({bpath.rsplit("/", 1)[0] for _, _, bpath in devices}):
        if not _list(hv, parent):           # backend/<class>/<domid>, now empty
            try:
                hv.store_rm(parent)
            except HypervisorError:
                pass


def _secs(value: float) -> str:
    return "%g" % value
