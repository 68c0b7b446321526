"""Devices added to, changed in and removed from a domain after it was built (reference §5.3:
``device_create``, ``device_configure``, ``destroyDevice``, ``getDeviceSxprs``,
``getBlockDeviceClass``); part of DomainRegistry.

A device is part of the domain's configuration: adding or removing one changes the config
(stored first for a managed domain, ``_persisting``), and on a running domain the device
also comes or goes live. There, a backend that ``builds_devices`` (the xenctrl one, through
libxl) is asked to do it; otherwise xend writes the device's store entries for the host's
backends as when it builds a domain, and waits for them (``device-create-timeout``,
``device-destroy-timeout``). Devices keep the ids and uuids ``devices.assign_ids`` gives
them, so a device keeps its name across restarts, saves and migrations.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional

from xend import sxp
from xend.errors import HypervisorError, VMBadState, VmError, XendError

from . import config as cfgmod
from . import devices
from .domain import Domain
from .operations import bool_arg
from .states import CRASHED, PAUSED, RUNNING

log = logging.getLogger("xend.XendDomainInfo")

#: device classes a running domain can be given or lose
LIVE_CLASSES = devices.BLOCK_CLASSES + ("vif",)
#: what block devices a cdrom change may name
_BLOCK = devices.BLOCK_CLASSES


def _body(value: Any) -> list:
    """A device SXP as it arrives (a list from XML-RPC, or SXP text), atoms as strings."""
    if isinstance(value, str):
        try:
            value = sxp.from_string(value)
        except sxp.ParseError as e:
            raise VmError("Invalid device configuration: %s" % e) from None
    return cfgmod.normalise_atoms(value)


class DeviceOpsMixin:
    # -- helpers ---------------------------------------------------------------------------------
    def _live(self, d: Domain) -> bool:
        """The domain has a Xen domain whose devices are live."""
        return d.domid is not None and self._state(d) in (RUNNING, PAUSED, CRASHED)

    def _changed_devices(self, d: Domain, devs: tuple) -> cfgmod.DomainConfig:
        """``d``'s config with ``devs`` (ids and uuids written down), checked as a config."""
        new = d.config.replace(devices=devices.assign_ids(devs, d.uuid))
        return cfgmod.parse_config(cfgmod.config_sxp(new), None) \
            .replace(name=d.config.name, uuid=d.config.uuid)

    def _device_spec(self, cfg: cfgmod.DomainConfig, index: int):
        dev = cfg.devices[index]
        return devices.device_spec(dev, devices.device_id(cfg.devices, index), self.settings)

    def _hv_device(self, what: str, call, *args) -> None:
        try:
            call(*args)
        except HypervisorError as e:
            raise VmError("%s: %s" % (what, e.message)) from None

    # -- device_create ---------------------------------------------------------------------------
    def domain_device_create(self, dom: Any, dev_config: Any) -> list:
        """Add a device (``(vbd (uname ..) (dev ..) (mode ..))``, ``(vif ...)``, ``(pci ...)``)
        to a domain: to its configuration, and to the guest when it runs. Returns
        ``[class, ['dom', domid, 'id', devid]]`` (domid and devid None for a domain that
        does not run), as the original's DevController.sxpr."""
        d = self._get(dom)
        body = devices.check_new_device(_body(dev_config))
        cls = body[0]
        if d.is_dom0:
            raise XendError("Cannot add devices to privileged domain %s" % dom)
        with self._operation(d):
            live = self._live(d)
            if cls == "pci":
                return self._pci_change(d, body, live, attach=True)
            if cls == "vif" and not devices.has_key(body, "mac"):
                body.append(["mac", devices.random_mac()])
            if cls == "vif" and self.settings.vif_script and not devices.has_key(body,
                                                                                   "script"):
                body.append(["script", self.settings.vif_script])
            wanted = devices.details(body)
            name = devices.block_name(wanted.get("dev", ""))[0] if cls in _BLOCK else None
            ref = name if cls in _BLOCK else wanted.get("devid")
            if ref is not None and devices.find_device(d.config.devices, cls, ref) is not None:
                number = devices.blkdev_number(name) if name else ref
                raise VmError("Device %s is already connected." % (
                    "%s (%d, %s)" % (name, number, cls) if name else "%s (%s)" % (ref, cls)))
            devs = d.config.devices + (body,)
            index = len(devs) - 1
            devid = devices.device_id(devs, index)
            new = self._changed_devices(d, devs)
            log.debug("device_create %s: %s %d", d.name, cls, devid)
            with self._persisting(d, new):
                if live:
                    self._attach_live(d, new, self._device_spec(new, index))
        log.info("Domain %s: device %s %d added%s", d.name, cls, devid,
                 " (running)" if live else " (at its next start)")
        return [cls, ["dom", d.domid if live else None, "id", devid if live else None]]

    def _attach_live(self, d: Domain, cfg: cfgmod.DomainConfig, spec) -> None:
        hv = self.hv
        domid = d.domid
        if spec.cls not in LIVE_CLASSES:
            raise VmError("Devices of class %s cannot be added to a running domain"
                          % spec.cls)
        if hv.builds_devices:
            self._hv_device("Device %s (%s) could not be connected" % (spec.devid, spec.cls),
                            hv.attach_device, domid, spec, cfg.hvm)
            return
        if not hv.device_backends:
            return
        try:
            devices.publish(hv, domid, [spec])
            devices.wait_connected(hv, domid, self.settings.device_create_timeout,
                                   only=[spec])
        except HypervisorError as e:
            devices.discard(hv, domid, [spec])
            raise VmError("Device %s (%s) could not be connected. %s"
                          % (spec.devid, spec.cls, e.message)) from None
        except BaseException:
            devices.discard(hv, domid, [spec])
            raise

    # -- destroyDevice ---------------------------------------------------------------------------
    def domain_destroyDevice(self, dom: Any, deviceClass: Any, devid: Any, force: Any = False,
                             rm_cfg: Any = False) -> None:
        """Take a device away: from the running guest (closed by its backend within
        device-destroy-timeout, or at once with ``force``), and with ``rm_cfg`` from the
        configuration (xm always asks for both; without it the device is back at the next
        start)."""
        d = self._get(dom)
        cls = str(deviceClass)
        # the original xm sent its flag itself ("-f", "--force") for a forced detach
        force = bool_arg(force) or str(force) in ("-f", "--force")
        rm_cfg = bool_arg(rm_cfg)
        if d.is_dom0:
            raise XendError("Cannot remove devices of privileged domain %s" % dom)
        with self._operation(d):
            live = self._live(d)
            if cls == "pci":
                raise VmError("pci devices are removed with device_configure "
                              "(xm pci-detach)")
            index = devices.find_device(d.config.devices, cls, devid)
            spec = self._device_spec(d.config, index) if index is not None else None
            if live and spec is None:
                spec = self._published_spec(d, cls, devid)
            if spec is None:
                if live:
                    raise VmError("Device %s not connected" % devid)
                raise XendError("Device %s is not defined" % devid)
            new = d.config
            if rm_cfg and index is not None:
                new = self._changed_devices(d, d.config.devices[:index]
                                            + d.config.devices[index + 1:])
            with self._persisting(d, new):
                if live:
                    self._detach_live(d, spec, force)
        log.info("Domain %s: device %s %d removed%s", d.name, spec.cls, spec.devid,
                 " from its configuration" if rm_cfg else "")

    def _published_spec(self, d: Domain, cls: str, devid: Any):
        """A device the running domain has in the store but not in its config (one added
        without xend)."""
        number = devices.blkdev_number(str(devid)) if cls in _BLOCK else \
            (int(str(devid)) if str(devid).isdigit() else None)
        for pcls, pid, bpath in devices.published(self.hv, d.domid):
            if devices.group_of(pcls) == devices.group_of(cls) and pid.isdigit() \
                    and int(pid) == number:
                backend_cls = bpath.rstrip("/").split("/")[-3]
                return devices.Device(backend_cls, number, 0, {}, {})
        return None

    def _detach_live(self, d: Domain, spec, force: bool) -> None:
        hv = self.hv
        if spec.cls not in LIVE_CLASSES:
            raise VmError("Devices of class %s cannot be removed from a running domain"
                          % spec.cls)
        if hv.builds_devices:
            self._hv_device("Device %s (%s) could not be disconnected" % (spec.devid,
                                                                          spec.cls),
                            hv.detach_device, d.domid, spec, force)
            return
        if not hv.device_backends:
            return
        try:
            devices.remove(hv, d.domid, spec, self.settings.device_destroy_timeout, force)
        except HypervisorError as e:
            raise VmError("Device %s (%s) could not be disconnected. %s"
                          % (spec.devid, spec.cls, e.message)) from None

    # -- device_configure ------------------------------------------------------------------------
    def domain_device_configure(self, dom: Any, dev_sxp: Any, devid: Any = None) -> bool:
        """Change a device: the medium of a cdrom (``(vbd (dev hdc:cdrom) (uname
        file:/new.iso) (mode r))``; no uname ejects it), or, with ``(pci (dev ... (state
        Initialising|Closing)))``, attach or detach PCI devices as xm pci-attach/-detach
        do."""
        d = self._get(dom)
        body = _body(dev_sxp)
        if not (isinstance(body, list) and body and isinstance(body[0], str)):
            raise VmError("Invalid device configuration: %r" % (dev_sxp,))
        cls = body[0]
        if d.is_dom0:
            raise XendError("Cannot configure devices of privileged domain %s" % dom)
        with self._operation(d):
            live = self._live(d)
            if cls == "pci":
                top = devices.details(body).get("state")
                states = {top} if top else {devices.details(dev).get("state", "Initialising")
                                            for dev in devices.pci_entries(body)}
                if states - {"Initialising", "Closing"} or len(states) != 1:
                    raise VmError("pci: each device needs (state Initialising) to attach or "
                                  "(state Closing) to detach")
                self._pci_change(d, body, live, attach=states == {"Initialising"})
                return True
            if cls not in _BLOCK:
                raise VmError("%s devices may not be reconfigured" % cls)
            details = devices.details(body)
            ref = devid if devid not in (None, "") else \
                devices.block_name(details.get("dev", ""))[0]
            if not ref:
                raise VmError("Block device must have virtual details specified")
            index = devices.find_device(d.config.devices, cls, ref)
            if index is None:
                raise VmError("Device %s not connected" % ref)
            old = d.config.devices[index]
            old_details = devices.details(old)
            number = devices.device_id(d.config.devices, index)
            new_type = devices.block_name(details.get("dev", old_details.get("dev", "")))[1]
            if not (devices.block_name(old_details.get("dev", ""))[1] == "cdrom"
                    and new_type == "cdrom" and old_details.get("mode", "r") == "r"
                    and details.get("mode", "r") == "r"):
                raise VmError("Refusing to reconfigure device %s:%d to %s"
                              % (cls, number, sxp.to_string(body)))
            uname = details.get("uname", "")
            if uname:
                devices.check_new_device(["vbd", ["uname", uname],
                                          ["dev", old_details.get("dev", "")], ["mode", "r"]])
            changed = [e for e in old if not (isinstance(e, list) and e and e[0] == "uname")]
            changed.insert(1, ["uname", uname])
            devs = d.config.devices[:index] + (changed,) + d.config.devices[index + 1:]
            new = self._changed_devices(d, devs)
            with self._persisting(d, new):
                if live:
                    self._change_medium(d, self._device_spec(new, index))
        log.info("Domain %s: cdrom %s now holds %s", d.name, ref, uname or "nothing")
        return True

    def _change_medium(self, d: Domain, spec) -> None:
        hv = self.hv
        if hv.builds_devices:
            self._hv_device("Device %s (%s) could not be reconfigured" % (spec.devid,
                                                                          spec.cls),
                            hv.configure_device, d.domid, spec)
            return
        if not hv.device_backends:
            return
        bpath = spec.backend_path(d.domid)
        try:
            if hv.store_read(bpath + "/state") is None:
                raise VmError("Device %s not connected" % spec.devid)
            hv.store_write(bpath + "/type", spec.backend.get("type", ""))
            hv.store_write(bpath + "/params", spec.backend.get("params", ""))
            hv.store_write(bpath + "/uname", spec.backend.get("uname", ""))
        except HypervisorError as e:
            raise VmError("Device %s (%s) could not be reconfigured. %s"
                          % (spec.devid, spec.cls, e.message)) from None

    # -- PCI -------------------------------------------------------------------------------------
    def _pci_change(self, d: Domain, body: list, live: bool, attach: bool) -> list:
        """Add (``attach``) or remove the PCI devices of ``body`` (``(pci (dev (domain ..)
        (bus ..) (slot ..) (func ..) ...) ...)``) from the domain's one ``(pci ...)``
        device: on a running domain only where the host can pass them through."""
        wanted = devices.pci_entries(body)
        if not wanted:
            raise VmError("pci: no device given")
        devs = list(d.config.devices)
        at = next((i for i, dev in enumerate(devs)
                   if isinstance(dev, list) and dev and dev[0] == "pci"), None)
        have = devices.pci_entries(devs[at]) if at is not None else []
        keys = {devices.pci_key(e) for e in have}
        for entry in wanted:
            key = devices.pci_key(entry)
            if attach and key in keys:
                raise VmError("pci: device %s has been attached!" % key)
            if not attach and key not in keys:
                raise VmError("pci: device %s is not attached!" % key)
        if attach and live:
            self._pci_check_assignable(wanted)
        gone = {devices.pci_key(e) for e in wanted}
        kept = [e for e in have if devices.pci_key(e) not in gone] if not attach else have
        added = [devices.pci_clean(e) for e in wanted] if attach else []
        pci_body = ["pci"] + kept + added
        if at is None:
            devs.append(pci_body)
        elif len(pci_body) > 1:
            devs[at] = pci_body
        else:
            del devs[at]
        new = self._changed_devices(d, tuple(devs))
        with self._persisting(d, new):
            if live:
                for entry in wanted:
                    spec = devices.Device("pci", 0, 0, devices.details(entry), {})
                    if attach:
                        self._hv_device("pci: cannot pass %s through" % devices.pci_key(entry),
                                        self.hv.attach_device, d.domid, spec, d.config.hvm)
                    else:
                        self._hv_device("pci: cannot remove %s" % devices.pci_key(entry),
                                        self.hv.detach_device, d.domid, spec, False)
        return ["pci", ["dom", d.domid if live else None, "id", 0 if live else None]]

    def _pci_check_assignable(self, wanted: List[list]) -> None:
        assignable = self.hv.pci_assignable()
        if assignable is None:
            raise VmError("pci: this host (hypervisor backend %s) cannot pass PCI devices "
                          "through to a guest: no pciback driver" % self.hv.name)
        for entry in wanted:
            key = devices.pci_key(entry)
            if key not in assignable:
                raise VmError("pci: %s is not assignable: bind it to pciback first "
                              "(xm pci-list-assignable-devices)" % key)

    # -- plugging a configured device (the Xen-API's VBD/VIF.plug and unplug) -------------------
    def _by_uuid(self, d: Domain, uuid: str) -> Optional[int]:
        devs = devices.assign_ids(d.config.devices, d.uuid)
        for i, dev in enumerate(devs):
            if isinstance(dev, list) and dev and devices.details(dev).get("uuid") == uuid:
                return i
        return None

    def device_live(self, dom: Any, uuid: str) -> bool:
        """The device with ``uuid`` is in the running domain now (its frontend is there)."""
        d = self._get(dom)
        index = self._by_uuid(d, uuid)
        if index is None or not self._live(d):
            return False
        spec = self._device_spec(d.config, index)
        path = devices.Device.frontend_path(d.domid, spec.cls, spec.devid)
        try:
            return self.hv.store_read(path + "/backend") is not None
        except HypervisorError:
            return False

    def domain_device_plug(self, dom: Any, uuid: str) -> None:
        """Put a device of the running domain's configuration into the guest."""
        d = self._get(dom)
        with self._operation(d):
            index = self._by_uuid(d, uuid)
            if index is None:
                raise XendError("Device %s is not defined" % uuid)
            if not self._live(d):
                raise VMBadState("Domain '%s' is not started" % d.name)
            new = self._changed_devices(d, d.config.devices)
            spec = self._device_spec(new, index)
            if self.device_live(d, uuid):
                raise VmError("Device %s (%d, %s) is already connected."
                              % (uuid, spec.devid, spec.cls))
            with self._persisting(d, new):
                self._attach_live(d, new, spec)

    def domain_device_unplug(self, dom: Any, uuid: str, force: Any = False) -> None:
        """Take a device out of the running guest; it stays in the configuration."""
        d = self._get(dom)
        with self._operation(d):
            index = self._by_uuid(d, uuid)
            if index is None:
                raise XendError("Device %s is not defined" % uuid)
            if not self._live(d) or not self.device_live(d, uuid):
                raise VmError("Device %s not connected" % uuid)
            self._detach_live(d, self._device_spec(d.config, index), bool_arg(force))

    # -- listing ---------------------------------------------------------------------------------
    def domain_getDeviceSxprs(self, dom: Any, deviceClass: Any) -> list:
        """A running domain's devices of a class as its frontends show them: ``[devid,
        [[key, value], ...]]`` each; a domain that does not run: ``[number, config]``
        each; ``pci``: the PCI devices, as dicts."""
        d = self._get(dom)
        cls = str(deviceClass)
        cfg = d.config
        if cls == "pci":
            return [devices.pci_dict(e) for dev in cfg.devices
                    if isinstance(dev, list) and dev and dev[0] == "pci"
                    for e in devices.pci_entries(dev)]
        if self._live(d):
            return devices.frontend_sxprs(self.hv, d.domid, cls)
        out = []
        ids = devices.device_ids(cfg.devices)
        n = 0
        for dev, devid in zip(cfg.devices, ids):
            if not (isinstance(dev, list) and dev) or \
                    devices.group_of(dev[0]) != devices.group_of(cls):
                continue
            out.append([devid if devid is not None else n, [list(e) for e in dev[1:]]])
            n += 1
        return out

    def domain_getBlockDeviceClass(self, dom: Any, devid: Any) -> Optional[str]:
        """The class (``vbd``, ``tap``, ``tap2``) of the block device ``devid`` (its id or
        name)."""
        d = self._get(dom)
        index = devices.find_device(d.config.devices, "vbd", devid)
        if index is not None:
            return d.config.devices[index][0]
        if self._live(d):
            spec = self._published_spec(d, "vbd", devid)
            if spec is not None:
                return spec.cls
        return None
