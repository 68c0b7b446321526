"""The device classes: ``VBD`` and ``VIF`` (the ``vbd``/``tap`` and ``vif`` devices of a VM's
configuration), ``VDI`` and ``SR`` (the disks those devices name), ``network`` (the bridges
the vifs are on) and ``console``.

* A VBD or VIF made with ``create`` is added to its VM's configuration with a ``(uuid U)``
  entry; it is used from the VM's next start, or at once with ``plug`` on a running VM
  (``unplug`` takes it out of the guest again; ``currently_attached`` tells). ``destroy``
  removes it from the configuration of a halted VM. ``VBD.media_change`` changes a CD's
  medium.
* A VDI is named by its location, the ``uname`` a disk is given by (``phy:/dev/vg/g1``,
  ``file:/srv/g1.img``): every disk of every VM is a VDI; ``VDI.create`` records one (its
  ``location`` field or ``other_config:location``; without one, a sparse image file of
  ``virtual_size`` bytes is made in ``xend-storage-path``). One SR holds them all.
* A network is a bridge (name_label = bridge name): the host's bridges, those the VMs' vifs
  name, and those made with ``network.create``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Tuple

from . import records as rec
from . import wire
from .errors import (DEVICE_ALREADY_ATTACHED, DEVICE_ALREADY_DETACHED, OPERATION_NOT_ALLOWED,
                     XenAPIError, bad_power_state, bad_value, from_xend)
from .objects import ApiClass, Call, Record
from .records import DeviceView, VmView

log = logging.getLogger("xend.XendAPI")

SR_NAME = "Local storage"
SR_TYPE = "local"


def _body_with(body, changes: Dict[str, Any]) -> list:
    """A device body with entries set (a value of None removes the entry)."""
    out = [e for e in body if not (isinstance(e, list) and e and e[0] in changes)]
    out += [[k, v] for k, v in changes.items() if v is not None]
    return out


class _Device(ApiClass):
    group = ""          # vbd | vif
    classes: Tuple[str, ...] = ()

    def refs(self) -> List[str]:
        return [d.uuid for v in self.api.vm_views() for d in rec.devices_of(v.cfg, self.group)]

    def find(self, ref: Any) -> Tuple[VmView, DeviceView]:
        found = self.api.find_device(self.group, self.ref_arg(ref))
        if found is None:
            raise self.invalid(ref)
        return found

    def record(self, ref: str) -> Record:
        v, d = self.find(ref)
        return self.make(v, d)

    def records(self) -> Dict[str, Record]:
        return {d.uuid: self.make(v, d) for v in self.api.vm_views()
                for d in rec.devices_of(v.cfg, self.group)}

    def make(self, v: VmView, d: DeviceView) -> Record:
        raise NotImplementedError

    def _vm_for_create(self, record: Any) -> VmView:
        if not isinstance(record, dict):
            raise bad_value(self.name, record, f"a {self.name} record (struct) is needed")
        return self.api.vm_view(wire.as_str(record.get("VM", "")))

    def _add(self, v: VmView, body: list, field: str) -> None:
        self.api.change_config(v.uuid, lambda c: c.replace(devices=c.devices + (body,)),
                               field, body)

    def _replace(self, ref: Any, field: str, changes: Dict[str, Any]) -> None:
        v, d = self.find(ref)
        self._rewrite(v, d, field, lambda dev: [dev[0]] + _body_with(dev[1:], changes))

    def _rewrite(self, v: VmView, d: DeviceView, field: str, edit) -> None:
        def change(c):
            devices = list(c.devices)
            mine = [i for i, dev in enumerate(devices)
                    if isinstance(dev, list) and dev and dev[0] in self.classes]
            if d.index >= len(mine):
                raise self.invalid(d.uuid)
            i = mine[d.index]
            new = edit(devices[i])
            if new is None:
                del devices[i]
            else:
                devices[i] = new
            return c.replace(devices=tuple(devices))
        self.api.change_config(v.uuid, change, field, "")

    def destroy(self, call: Call, ref: Any) -> None:
        v, d = self.find(ref)
        if v.resident:
            raise bad_power_state(v.uuid, "Halted", v.power_state)
        views = rec.devices_of(v.cfg, self.group)

        def change(c):
            # a device without a uuid entry is known by its position: the others get theirs
            # written down first, so that they keep their refs
            devices, n = [], 0
            for dev in c.devices:
                if isinstance(dev, list) and dev and dev[0] in self.classes:
                    mine = views[n] if n < len(views) else None
                    n += 1
                    if mine is None or mine.uuid == d.uuid:
                        continue
                    dev = [dev[0]] + _body_with(dev[1:], {"uuid": mine.uuid})
                devices.append(dev)
            return c.replace(devices=tuple(devices))
        self.api.change_config(v.uuid, change, self.name, "")

    def plug(self, call: Call, ref: Any) -> None:
        """Into the running VM (it must run; a halted VM gets it at its next start)."""
        v, d = self.find(ref)
        if not v.resident:
            raise bad_power_state(v.uuid, "Running", v.power_state)
        if self.api.registry.device_live(v.uuid, d.uuid):
            raise XenAPIError(DEVICE_ALREADY_ATTACHED, d.uuid)
        with from_xend("VM", v.uuid):
            self.api.registry.domain_device_plug(v.uuid, d.uuid)
        self.api.events.poke()

    def unplug(self, call: Call, ref: Any) -> None:
        """Out of the running VM; it stays in the VM's configuration."""
        v, d = self.find(ref)
        if not v.resident:
            raise bad_power_state(v.uuid, "Running", v.power_state)
        if not self.api.registry.device_live(v.uuid, d.uuid):
            raise XenAPIError(DEVICE_ALREADY_DETACHED, d.uuid)
        with from_xend("VM", v.uuid):
            self.api.registry.domain_device_unplug(v.uuid, d.uuid)
        self.api.events.poke()

    def _attached(self, v: VmView, d: DeviceView) -> bool:
        return v.resident and self.api.registry.device_live(v.uuid, d.uuid)


class VBD(_Device):
    name = "VBD"
    group = "vbd"
    classes = rec.BLOCK_CLASSES
    fields = ("uuid", "VM", "VDI", "device", "bootable", "mode", "type", "currently_attached",
              "status_code", "status_detail", "runtime_properties", "qos_algorithm_type",
              "qos_algorithm_params", "qos_supported_algorithms", "metrics")
    messages = ("create", "destroy", "plug", "unplug", "media_change")
    async_messages = ("create", "destroy")

    def make(self, v: VmView, d: DeviceView) -> Record:
        return dict(rec.vbd_record(v, d), currently_attached=self._attached(v, d))

    def create(self, call: Call, record: Any) -> str:
        v = self._vm_for_create(record)
        vdi = wire.as_str(record.get("VDI", ""))
        location = self.api.vdi_location(vdi)
        if location is None:
            raise XenAPIError("HANDLE_INVALID", "VDI", vdi)
        device = wire.as_str(record.get("device", "")) or self._next_device(v)
        uuid = rec.derived_uuid(v.uuid, f"vbd-new/{location}/{device}")
        bootable = wire.as_bool(record["bootable"]) if "bootable" in record else None
        try:
            body = rec.vbd_device(location, device, wire.as_str(record.get("mode", "RW")),
                                  wire.as_str(record.get("type", "Disk")), bootable, uuid)
        except ValueError as e:
            raise bad_value("VBD", record, str(e)) from None
        if any(d.uuid == uuid for d in rec.devices_of(v.cfg, "vbd")):
            raise bad_value("device", device, f"{location} is already {device} of this VM")
        self._add(v, body, "VBD")
        return uuid

    def _next_device(self, v: VmView) -> str:
        used = {rec.vbd_device_name(d.details)[0] for d in rec.devices_of(v.cfg, "vbd")}
        for c in "abcdefghijklmnopqrstuvwxyz":
            if "xvd" + c not in used:
                return "xvd" + c
        raise bad_value("device", "", "no free device name")

    def media_change(self, call: Call, ref: Any, vdi: Any) -> None:
        """A cdrom's new medium (a VDI's location), as ``xm block-configure`` changes it."""
        v, d = self.find(ref)
        if rec.vbd_device_name(d.details)[1] != "CD":
            raise XenAPIError(OPERATION_NOT_ALLOWED, "only a CD VBD's medium can be changed")
        location = self.api.vdi_location(wire.as_str(vdi))
        if location is None:
            raise XenAPIError("HANDLE_INVALID", "VDI", wire.as_str(vdi))
        with from_xend("VM", v.uuid):
            self.api.registry.domain_device_configure(
                v.uuid, ["vbd", ["uname", location], ["dev", d.details.get("dev", "")],
                         ["mode", "r"]])
        self.api.events.poke()

    def set_device(self, call: Call, ref: Any, value: Any) -> None:
        v, d = self.find(ref)
        _, kind = rec.vbd_device_name(d.details)
        name = wire.as_str(value)
        self._replace(ref, "device", {"dev": name + (":cdrom" if kind == "CD" else ""),
                                      "uuid": d.uuid})

    def set_bootable(self, call: Call, ref: Any, value: Any) -> None:
        v, d = self.find(ref)
        self._replace(ref, "bootable", {"bootable": "1" if wire.as_bool(value) else "0",
                                        "uuid": d.uuid})

    def set_mode(self, call: Call, ref: Any, value: Any) -> None:
        mode = wire.as_str(value).upper()
        if mode not in ("RO", "RW"):
            raise bad_value("mode", value, "RO or RW")
        v, d = self.find(ref)
        self._replace(ref, "mode", {"mode": "w" if mode == "RW" else "r", "uuid": d.uuid})

    def set_type(self, call: Call, ref: Any, value: Any) -> None:
        kind = wire.as_str(value)
        if kind.lower() not in ("disk", "cd"):
            raise bad_value("type", value, "Disk or CD")
        v, d = self.find(ref)
        name, _ = rec.vbd_device_name(d.details)
        self._replace(ref, "type", {"dev": name + (":cdrom" if kind.lower() == "cd" else ""),
                                    "uuid": d.uuid})


class VIF(_Device):
    name = "VIF"
    group = "vif"
    classes = ("vif",)
    fields = ("uuid", "device", "network", "VM", "MAC", "MTU", "currently_attached",
              "status_code", "status_detail", "runtime_properties", "qos_algorithm_type",
              "qos_algorithm_params", "qos_supported_algorithms", "metrics", "security_label")
    messages = ("create", "destroy", "plug", "unplug")
    async_messages = ("create", "destroy")

    def make(self, v: VmView, d: DeviceView) -> Record:
        bridge = rec.vif_bridge(d.details, self.api.default_bridge())
        return dict(rec.vif_record(v, d, rec.named_uuid("network", bridge)),
                    currently_attached=self._attached(v, d))

    def create(self, call: Call, record: Any) -> str:
        v = self._vm_for_create(record)
        net = wire.as_str(record.get("network", ""))
        bridge = self.api.network_bridge(net) if net and net != wire.NULL_REF else None
        if net and net != wire.NULL_REF and bridge is None:
            raise XenAPIError("HANDLE_INVALID", "network", net)
        n = len(rec.devices_of(v.cfg, "vif"))
        uuid = rec.derived_uuid(v.uuid, f"vif-new/{n}/{wire.as_str(record.get('MAC', ''))}")
        params = wire.as_map(record.get("qos_algorithm_params") or {})
        rate = params.get("kbps", "") \
            if wire.as_str(record.get("qos_algorithm_type", "")) == "ratelimit" else ""
        try:
            body = rec.vif_device(wire.as_str(record.get("MAC", "")), bridge,
                                  wire.as_int(record.get("MTU", 1500) or 1500), rate, uuid)
        except ValueError as e:
            raise bad_value("VIF", record, str(e)) from None
        self._add(v, body, "VIF")
        return uuid

    def set_MAC(self, call: Call, ref: Any, value: Any) -> None:
        v, d = self.find(ref)
        self._replace(ref, "MAC", {"mac": wire.as_str(value) or None, "uuid": d.uuid})

    def set_MTU(self, call: Call, ref: Any, value: Any) -> None:
        n = wire.as_int(value)
        if not 68 <= n <= 65535:
            raise bad_value("MTU", value, "between 68 and 65535")
        v, d = self.find(ref)
        self._replace(ref, "MTU", {"mtu": None if n == 1500 else str(n), "uuid": d.uuid})


class Console(ApiClass):
    name = "console"
    fields = ("uuid", "protocol", "location", "VM", "other_config")

    def _all(self) -> Dict[str, Record]:
        out = {}
        for v in self.api.vm_views():
            for ref, protocol, location in rec.consoles(v):
                out[ref] = {"uuid": ref, "protocol": protocol, "location": location,
                            "VM": v.uuid, "other_config": {}}
        return out

    def refs(self) -> List[str]:
        return list(self._all())

    def record(self, ref: str) -> Record:
        found = self._all().get(ref)
        if found is None:
            raise self.invalid(ref)
        return found

    def records(self) -> Dict[str, Record]:
        return self._all()


# -- storage ------------------------------------------------------------------------------------
class _Stored(ApiClass):
    """A class whose settable fields are kept in the API store (section ``section``), each
    entry with the field that identifies the object (``identity``)."""
    section = ""
    identity = ""

    def _set(self, ref: Any, key: str, value: Any) -> None:
        ref = self.ref_arg(ref)
        ident = self.record(ref)[self.identity]
        self.api.store_update(self.section, lambda e: (e.setdefault(self.identity, ident),
                                                       e.__setitem__(key, value)),
                              key=ref, create=True)
        self.api.events.publish(self.name, "mod", ref)


class VDI(_Stored):
    name = "VDI"
    fields = ("uuid", "name_label", "name_description", "SR", "VBDs", "crash_dumps",
              "virtual_size", "physical_utilisation", "type", "sharable", "read_only",
              "other_config", "security_label", "location")
    map_fields = ("other_config",)
    messages = ("create", "destroy")
    async_messages = ("create", "destroy")
    section, identity = "vdis", "location"

    def _in_use(self) -> Dict[str, List[str]]:
        """VDI ref -> the VBDs on it (from every VM's disks)."""
        out: Dict[str, List[str]] = {}
        for v in self.api.vm_views():
            for d in rec.devices_of(v.cfg, "vbd"):
                uname = d.details.get("uname", "")
                if uname:
                    out.setdefault(rec.vdi_uuid_for(uname), []).append(d.uuid)
        return out

    def _locations(self) -> Dict[str, str]:
        out = {ref: e.get("location", "") for ref, e in self.api.store.get("vdis").items()}
        for v in self.api.vm_views():
            for d in rec.devices_of(v.cfg, "vbd"):
                uname = d.details.get("uname", "")
                if uname:
                    out.setdefault(rec.vdi_uuid_for(uname), uname)
        return out

    def refs(self) -> List[str]:
        return sorted(self._locations())

    def record(self, ref: str) -> Record:
        locations = self._locations()
        if ref not in locations:
            raise self.invalid(ref)
        return self.make(ref, locations[ref], self._in_use())

    def records(self) -> Dict[str, Record]:
        used = self._in_use()
        return {ref: self.make(ref, loc, used) for ref, loc in self._locations().items()}

    def make(self, ref: str, location: str, used: Dict[str, List[str]]) -> Record:
        stored = self.api.store.get("vdis", ref) or {}
        size = rec.vdi_location_size(location)
        path = rec.uname_path(location)
        other = dict(stored.get("other_config", {}))
        other["location"] = location
        return {
            "uuid": ref, "name_label": stored.get("name_label", os.path.basename(path)),
            "name_description": stored.get("name_description", ""),
            "SR": self.api.store.get("sr")["uuid"], "VBDs": used.get(ref, []),
            "crash_dumps": [], "virtual_size": int(stored.get("virtual_size", size) or size),
            "physical_utilisation": size, "type": stored.get("type", "user"),
            "sharable": bool(stored.get("sharable", False)),
            "read_only": bool(stored.get("read_only", False)), "other_config": other,
            "security_label": "", "location": location,
        }

    def create(self, call: Call, record: Any) -> str:
        if not isinstance(record, dict):
            raise bad_value("VDI", record, "a VDI record (struct) is needed")
        other = wire.as_map(record.get("other_config") or {})
        location = wire.as_str(record.get("location", "") or other.pop("location", ""))
        size = wire.as_int(record.get("virtual_size", 0) or 0)
        kind = wire.as_str(record.get("type", "user") or "user")
        if kind not in ("system", "user", "ephemeral", "suspend", "crashdump"):
            raise bad_value("type", kind, "system, user, ephemeral, suspend or crashdump")
        if size < 0:
            raise bad_value("virtual_size", size, "must not be negative")
        made = None
        if not location:
            made = self.api.new_image_file(size)
            location = "file:" + made
        ref = rec.vdi_uuid_for(location)
        entry = {"location": location, "virtual_size": size or rec.vdi_location_size(location),
                 "type": kind, "sharable": wire.as_bool(record.get("sharable", False)),
                 "read_only": wire.as_bool(record.get("read_only", False)),
                 "name_label": wire.as_str(record.get("name_label", "") or ""),
                 "name_description": wire.as_str(record.get("name_description", "") or ""),
                 "other_config": other, "made_by_xend": made is not None}
        try:
            self.api.store_update("vdis", lambda e: e.update(entry), key=ref, create=True)
        except XenAPIError:
            if made:
                os.unlink(made)
            raise
        self.api.events.publish("VDI", "add", ref)
        return ref

    def destroy(self, call: Call, ref: Any) -> None:
        ref = self.ref_arg(ref)
        rec_ = self.record(ref)
        if rec_["VBDs"]:
            raise XenAPIError(OPERATION_NOT_ALLOWED, "the VDI is used by a VBD")
        stored = self.api.store.get("vdis", ref) or {}
        self.api.store_remove("vdis", ref)
        if stored.get("made_by_xend"):
            try:
                os.unlink(rec.uname_path(stored.get("location", "")))
            except OSError as e:
                log.warning("Cannot remove the image of VDI %s: %s", ref, e)
        self.api.events.publish("VDI", "del", ref)

    def set_name_label(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "name_label", wire.as_str(value))

    def set_name_description(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "name_description", wire.as_str(value))

    def set_sharable(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "sharable", wire.as_bool(value))

    def set_read_only(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "read_only", wire.as_bool(value))

    def set_other_config(self, call: Call, ref: Any, value: Any) -> None:
        other = wire.as_map(value)
        other.pop("location", None)
        self._set(ref, "other_config", other)


class SR(ApiClass):
    name = "SR"
    fields = ("uuid", "name_label", "name_description", "VDIs", "PBDs", "virtual_allocation",
              "physical_utilisation", "physical_size", "type", "content_type")
    messages = ("get_supported_types",)

    def refs(self) -> List[str]:
        return [self.api.store.get("sr")["uuid"]]

    def record(self, ref: str) -> Record:
        if ref not in self.refs():
            raise self.invalid(ref)
        vdis = VDI(self.api).records()
        try:
            st = os.statvfs(self.api.storage_path)
            size = st.f_blocks * st.f_frsize
        except OSError:
            size = 0
        return {"uuid": ref, "name_label": SR_NAME, "name_description": "",
                "VDIs": sorted(vdis), "PBDs": [],
                "virtual_allocation": sum(r["virtual_size"] for r in vdis.values()),
                "physical_utilisation": sum(r["physical_utilisation"] for r in vdis.values()),
                "physical_size": size, "type": SR_TYPE, "content_type": ""}

    def get_supported_types(self, call: Call) -> List[str]:
        return [SR_TYPE]


# -- networks -----------------------------------------------------------------------------------
class Network(_Stored):
    name = "network"
    fields = ("uuid", "name_label", "name_description", "VIFs", "PIFs", "default_gateway",
              "default_netmask", "other_config", "bridge")
    map_fields = ("other_config",)
    messages = ("create", "destroy")
    section, identity = "networks", "bridge"

    def _bridges(self) -> Dict[str, str]:
        """network ref -> bridge name."""
        out = {ref: e.get("bridge", "") for ref, e in self.api.store.get("networks").items()}
        names = set(self.api.host_bridges())
        default = self.api.default_bridge()
        for v in self.api.vm_views():
            for d in rec.devices_of(v.cfg, "vif"):
                names.add(rec.vif_bridge(d.details, default))
        for name in names:
            out.setdefault(rec.named_uuid("network", name), name)
        return out

    def refs(self) -> List[str]:
        return sorted(self._bridges())

    def _vifs(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {}
        default = self.api.default_bridge()
        for v in self.api.vm_views():
            for d in rec.devices_of(v.cfg, "vif"):
                ref = rec.named_uuid("network", rec.vif_bridge(d.details, default))
                out.setdefault(ref, []).append(d.uuid)
        return out

    def record(self, ref: str) -> Record:
        bridges = self._bridges()
        if ref not in bridges:
            raise self.invalid(ref)
        return self.make(ref, bridges[ref], self._vifs())

    def records(self) -> Dict[str, Record]:
        vifs = self._vifs()
        return {ref: self.make(ref, b, vifs) for ref, b in self._bridges().items()}

    def make(self, ref: str, bridge: str, vifs: Dict[str, List[str]]) -> Record:
        stored = self.api.store.get("networks", ref) or {}
        return {"uuid": ref, "name_label": bridge,
                "name_description": stored.get("name_description", ""),
                "VIFs": vifs.get(ref, []), "PIFs": [],
                "default_gateway": stored.get("default_gateway", ""),
                "default_netmask": stored.get("default_netmask", ""),
                "other_config": stored.get("other_config", {}), "bridge": bridge}

    def create(self, call: Call, record: Any) -> str:
        if not isinstance(record, dict):
            raise bad_value("network", record, "a network record (struct) is needed")
        bridge = wire.as_str(record.get("bridge", "") or record.get("name_label", ""))
        if not bridge or "/" in bridge or len(bridge) > 15 or not bridge.isprintable():
            raise bad_value("name_label", bridge, "a bridge name (1-15 characters) is needed")
        ref = rec.named_uuid("network", bridge)
        entry = {"bridge": bridge,
                 "name_description": wire.as_str(record.get("name_description", "") or ""),
                 "default_gateway": wire.as_str(record.get("default_gateway", "") or ""),
                 "default_netmask": wire.as_str(record.get("default_netmask", "") or ""),
                 "other_config": wire.as_map(record.get("other_config") or {})}
        self.api.store_update("networks", lambda e: e.update(entry), key=ref, create=True)
        self.api.events.publish("network", "add", ref)
        return ref

    def destroy(self, call: Call, ref: Any) -> None:
        ref = self.ref_arg(ref)
        r = self.record(ref)
        if r["VIFs"]:
            raise XenAPIError(OPERATION_NOT_ALLOWED, "VIFs are on this network")
        if not self.api.store_remove("networks", ref):
            raise XenAPIError(OPERATION_NOT_ALLOWED, "a bridge of the host is not destroyed")
        self.api.events.publish("network", "del", ref)

    def set_name_description(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "name_description", wire.as_str(value))

    def set_default_gateway(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "default_gateway", wire.as_str(value))

    def set_default_netmask(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "default_netmask", wire.as_str(value))

    def set_other_config(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "other_config", wire.as_map(value))
