"""A domain's devices: the defaults xend-config.sxp gives them, the checks made before a
domain is built, and their entries in the store with the waits for their backends
(reference §8.6; options vif-script, vnc-*, vncpasswd, keymap, device-create-timeout,
device-destroy-timeout, pci-passthrough-strict-check).

Devices are kept as SXP in the domain's configuration. When a domain is built:

* ``apply_defaults`` fills in what the options provide and the configuration lacks: each
  device with a backend gets its ``uuid``, ``devid`` and ``backend`` (``assign_ids``: kept
  from then on, so a device keeps its id across restarts, saves and migrations); the
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
import uuid as uuidlib
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


def has_key(body: Sequence[Any], key: str) -> bool:
    """A device body ``(cls (key v) ...)`` has a ``key`` entry."""
    return _has(body[1:], key)


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
    with_ids = assign_ids(devices, cfg.uuid)
    changed = changed or list(with_ids) != devices
    devices = list(with_ids)
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


def details(body: Sequence[Any]) -> Dict[str, str]:
    """The ``(key value)`` entries of a device body ``(cls (key value) ...)``."""
    return _simple(body[1:])


def block_name(dev: str) -> Tuple[str, str]:
    """(name, type) of a vbd's ``dev``: ``hdc:cdrom`` -> ('hdc', 'cdrom'), ``ioemu:hda`` ->
    ('hda', 'disk'), ``xvda`` -> ('xvda', 'disk')."""
    if dev.startswith("ioemu:"):
        dev = dev[len("ioemu:"):]
    name, _, kind = dev.partition(":")
    return name, kind or "disk"


def group_of(cls: str) -> str:
    """The group a device class is counted in: every block class is a ``vbd``."""
    return "vbd" if cls in BLOCK_CLASSES else cls


def _explicit_devid(details: Dict[str, str]) -> Optional[int]:
    text = details.get("devid", "")
    return int(text) if text.isdigit() else None


def _devids(devs: Sequence[Any]) -> List[Optional[int]]:
    """The id of each device of ``devs`` with a backend (None for the others): its
    ``(devid N)`` when it has one, a block device's number from its name, else the lowest
    id free in its class (the ids written down are taken first)."""
    out: List[Optional[int]] = []
    used: Dict[str, set] = {}
    for dev in devs:
        if isinstance(dev, list) and dev and dev[0] in BACKEND_CLASSES:
            devid = _explicit_devid(_simple(dev[1:]))
            if devid is not None:
                used.setdefault(group_of(dev[0]), set()).add(devid)
    for dev in devs:
        if not (isinstance(dev, list) and dev and dev[0] in BACKEND_CLASSES):
            out.append(None)
            continue
        details = _simple(dev[1:])
        taken = used.setdefault(group_of(dev[0]), set())
        devid = _explicit_devid(details)
        if devid is None and dev[0] in BLOCK_CLASSES:
            number = blkdev_number(details.get("dev", ""))
            if number is not None and number not in taken:
                devid = number
        if devid is None:
            devid = 0
            while devid in taken:
                devid += 1
        taken.add(devid)
        out.append(devid)
    return out


def device_ids(devs: Sequence[Any]) -> List[Optional[int]]:
    """The id of each device of ``devs`` (None for those without a backend)."""
    return _devids(devs)


def device_uuid(vm_uuid: str, group: str, index: int) -> str:
    """The uuid a device without one is known by: derived from its domain's uuid and its
    place among the devices of its group, so it stays the same until it is written down
    (the Xen-API derives the same one for a VBD or VIF)."""
    try:
        namespace = uuidlib.UUID(vm_uuid)
    except (ValueError, TypeError, AttributeError):
        namespace = uuidlib.NAMESPACE_OID
    return str(uuidlib.uuid5(namespace, f"{group}/{index}"))


def assign_ids(devs: Sequence[Any], vm_uuid: str) -> Tuple[Any, ...]:
    """``devs`` with each device that has a backend given what the original showed of it
    and kept for it: ``(uuid U)``, ``(devid N)`` and ``(backend 0)`` when it lacks them.
    From then on the device keeps its id and uuid whatever is added or removed."""
    ids = _devids(devs)
    counts: Dict[str, int] = {}
    taken = {_simple(d[1:]).get("uuid") for d in devs if isinstance(d, list) and d}
    out = []
    for dev, devid in zip(devs, ids):
        if devid is None:
            out.append(dev)
            continue
        group = group_of(dev[0])
        index = counts.get(group, 0)
        counts[group] = index + 1
        body = list(dev)
        if not _has(body[1:], "uuid"):
            new = device_uuid(vm_uuid, group, index)
            if new in taken:            # a device removed before left its place to this one
                new = str(uuidlib.uuid4())
            taken.add(new)
            body.append(["uuid", new])
        if not _has(body[1:], "devid"):
            body.append(["devid", str(devid)])
        if not _has(body[1:], "backend"):
            body.append(["backend", "0"])
        out.append(body if body != dev else dev)
    return tuple(out)


def plan(cfg: DomainConfig, s: Settings) -> List[Device]:
    """The devices of ``cfg`` that have a backend, with their ids and store entries."""
    out: List[Device] = []
    for dev, devid in zip(cfg.devices, _devids(cfg.devices)):
        if devid is not None:
            out.append(device_spec(dev, devid, s))
    return out


def device_spec(dev: list, devid: int, s: Settings) -> Device:
    """One device with its store entries: what its backend and its frontend are given."""
    cls = dev[0]
    details = _simple(dev[1:])
    try:
        backend_domid = int(details.get("backend", "0"))
    except ValueError:
        backend_domid = 0
    back = dict(details)
    back.pop("devid", None)
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
        back["type"], back["params"] = (kind, params) if sep else ("", "")
        name, dev_type = block_name(details.get("dev", ""))
        back["dev"] = name
        front["virtual-device"] = str(devid)
        front["device-type"] = dev_type
    return Device(cls, devid, backend_domid, back, front)


# -- changing the devices of a configuration ---------------------------------------------------
_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
#: the keys a vif may have (xm's network-attach and config files)
VIF_KEYS = ("backend", "bridge", "ip", "mac", "script", "type", "vifname", "rate", "model",
            "accel", "policy", "label", "uuid", "devid")
#: uname prefixes of a block device's backend
BLOCK_TYPES = ("phy", "file", "tap", "tap2", "aio", "qcow", "qcow2", "vhd", "nbd", "iscsi",
               "drbd")


def check_new_device(body: Any) -> list:
    """A device body (``(vbd ...)``, ``(vif ...)``) as ``device_create`` gets it, checked
    (VmError with the original's messages) and with string atoms."""
    if not (isinstance(body, list) and body and isinstance(body[0], str)):
        raise VmError("Invalid device configuration: %r" % (body,))
    cls = body[0]
    entries = [e for e in body[1:] if isinstance(e, list) and e]
    details = _simple(entries)
    if cls in BLOCK_CLASSES:
        uname = details.get("uname", "")
        name, dev_type = block_name(details.get("dev", ""))
        if not name:
            raise VmError("Block device must have virtual details specified")
        if not uname:
            if dev_type != "cdrom":
                raise VmError("Block device must have physical details specified")
        else:
            kind, sep, _ = uname.partition(":")
            if not sep:
                raise VmError("Block device must have physical details specified")
            if kind not in BLOCK_TYPES:
                raise VmError('Block device type "%s" is invalid.' % kind)
        if details.get("mode", "r") not in ("r", "w", "w!"):
            raise VmError("Invalid mode")
        if blkdev_number(name) is None:
            raise VmError("Unable to find number for device (%s)" % name)
    elif cls == "vif":
        for key in details:
            if key not in VIF_KEYS:
                raise VmError("Invalid vif option: %s" % key)
        mac = details.get("mac")
        if mac is not None and not _MAC.match(mac):
            raise VmError("Cannot create a new virtual network interface - MAC address is "
                          "not valid!")
    elif cls != "pci":
        raise VmError("Devices of class %s cannot be added to a domain by this xend "
                      "(vbd, tap, tap2, vif and pci can)" % cls)
    return [cls] + entries


def find_device(devs: Sequence[Any], cls: str, ref: Any) -> Optional[int]:
    """The index in ``devs`` of the device of class ``cls`` (a block device: any block
    class) that ``ref`` names: its id (``51728``), a block device's name (``xvdb``), or a
    vif's MAC address."""
    text = str(ref).strip()
    ids = _devids(devs)
    wanted = blkdev_number(text) if cls in BLOCK_CLASSES else \
        (int(text) if text.isdigit() else None)
    for i, (dev, devid) in enumerate(zip(devs, ids)):
        if devid is None or group_of(dev[0]) != group_of(cls):
            continue
        if wanted is not None and devid == wanted:
            return i
        if cls == "vif" and _MAC.match(text) and \
                _simple(dev[1:]).get("mac", "").lower() == text.lower():
            return i
    return None


def pci_entries(body: Sequence[Any]) -> List[list]:
    """The ``(dev ...)`` entries of a ``(pci ...)`` device."""
    return [e for e in body[1:] if isinstance(e, list) and e and e[0] == "dev"]


def pci_key(entry: Sequence[Any]) -> str:
    """``DDDD:BB:SS.F`` of one ``(dev (domain ..) (bus ..) (slot ..) (func ..))``."""
    d = _simple(entry[1:])
    try:
        parts = [int(d.get(k) or "0", 16) for k in ("domain", "bus", "slot", "func")]
    except ValueError:
        raise VmError("pci: bad device %s" % (entry,)) from None
    return "%04x:%02x:%02x.%x" % tuple(parts)


def pci_clean(entry: Sequence[Any]) -> list:
    """A PCI entry as the configuration keeps it: without the state of a request."""
    return [e for e in entry if not (isinstance(e, list) and e and e[0] == "state")]


def pci_dict(entry: Sequence[Any]) -> Dict[str, str]:
    """What getDeviceSxprs('pci') gives for one PCI device (xm pci-list reads it)."""
    d = _simple(entry[1:])
    out = {k: d.get(k, "0x0") for k in ("domain", "bus", "slot", "func")}
    out["vdevfn"] = d.get("vdevfn", "0x100")
    out["key"] = d.get("key") or pci_key(entry)
    return out


def device_id(devs: Sequence[Any], index: int) -> int:
    """The id of device ``index`` of ``devs`` (one with a backend)."""
    devid = _devids(devs)[index]
    if devid is None:
        raise VmError("Device %d has no backend" % index)
    return devid


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
                   clock: Callable[[], float] = time.monotonic,
                   only: Optional[Sequence[Device]] = None) -> None:
    """Return once every device of ``domid`` (or those of ``only``) is connected; VmError as
    the original's when one reports an error, has lost its backend, or is not connected
    within ``timeout`` s."""
    pending = published(hv, domid)
    if only is not None:
        wanted = {d.backend_path(domid) for d in only}
        pending = [p for p in pending if p[2] in wanted]
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


def remove(hv: Hypervisor, domid: int, dev: Device, timeout: float, force: bool = False,
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> None:
    """Take one device away from a running domain, as the original's destroyDevice: its
    backend is told to close (``online`` 0, state Closing) and given ``timeout`` s
    (device-destroy-timeout) to go; with ``force`` its entries are removed at once. VmError
    ``could not be disconnected`` when the backend stays (the device is left as it is)."""
    bpath = dev.backend_path(domid)
    fpath = Device.frontend_path(domid, dev.cls, dev.devid)
    hv.store_write(bpath + "/online", "0")
    hv.store_write(bpath + "/state", CLOSING)
    if not force:
        deadline = clock() + timeout
        while _read(hv, bpath + "/state") is not None or _list(hv, bpath):
            left = deadline - clock()
            if left <= 0:
                log.error("Domain %d: device %s (%s) still there %s s after it was closed "
                          "(device-destroy-timeout)", domid, dev.devid, dev.cls,
                          _secs(timeout))
                raise VmError("Device %s (%s) could not be disconnected. " % (dev.devid,
                                                                              dev.cls))
            sleep(min(POLL_INTERVAL, left))
    for path in (bpath, fpath):
        try:
            hv.store_rm(path)
        except HypervisorError as e:
            log.debug("removing %s: %s", path, e)
    log.debug("Domain %d: device %s %d removed", domid, dev.cls, dev.devid)


def discard(hv: Hypervisor, domid: int, devs: Sequence[Device]) -> None:
    """Remove the entries of devices that failed to connect (nothing of them is left)."""
    for dev in devs:
        for path in (dev.backend_path(domid), Device.frontend_path(domid, dev.cls, dev.devid)):
            try:
                hv.store_rm(path)
            except HypervisorError as e:
                log.debug("removing %s: %s", path, e)


def _tree(hv: Hypervisor, path: str, depth: int = 0) -> List[list]:
    out: List[list] = []
    for name in _list(hv, path):
        child = f"{path}/{name}"
        below = _tree(hv, child, depth + 1) if depth < 8 else []
        if below:
            out.append([name] + below)
        else:
            out.append([name, _read(hv, child) or ""])
    return out


def frontend_sxprs(hv: Hypervisor, domid: int, cls: str) -> List[list]:
    """``[devid, [[key, value], ...]]`` for each device of class ``cls`` (block classes:
    ``vbd``) of a running domain, read from its frontend directories (the original's
    getDeviceSxprs)."""
    base = "/local/domain/%d/device/%s" % (domid, group_of(cls))
    return [[devid, _tree(hv, f"{base}/{devid}")] for devid in _list(hv, base)]


def _secs(value: float) -> str:
    return "%g" % value
