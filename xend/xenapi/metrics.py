"""``VM_metrics`` and ``VM_guest_metrics``: what the hypervisor reports about a VM, one object
each per VM (ref derived from the VM's uuid).

VM_metrics: memory_actual (the Xen domain's pages; the target when it is not running),
VCPUs_number (online VCPUs), VCPUs_utilisation, VCPUs_CPU and VCPUs_flags (per VCPU, from the
hypervisor), VCPUs_params, state (the flags of the Xen domain: running, blocked, paused,
shutdown, crashed, dying), start_time, last_updated; and, an extension of this xend,
``cpu_time`` (seconds of CPU the domain used: what ``xm list`` shows as Time). Utilisation
is not sampled by this xend: 0.0 for each VCPU.

VM_guest_metrics: nothing is reported by guests here (empty maps).
"""
from __future__ import annotations

from typing import Dict, List

from xend.errors import HypervisorError

from . import wire
from .objects import ApiClass, Record
from .records import VmView, derived_uuid

STATE_FLAGS = ("running", "blocked", "paused", "shutdown", "crashed", "dying")


def state_flags(v: VmView) -> List[str]:
    info = v.info
    if info is None or v.domid is None:
        return []
    return [name for name in STATE_FLAGS if getattr(info, name)]


class _PerVM(ApiClass):
    kind = ""

    def _owner(self, ref: str) -> VmView:
        for v in self.api.vm_views():
            if derived_uuid(v.uuid, self.kind) == ref:
                return v
        raise self.invalid(ref)

    def refs(self) -> List[str]:
        return [derived_uuid(v.uuid, self.kind) for v in self.api.vm_views()]

    def record(self, ref: str) -> Record:
        return self.make(self._owner(ref))

    def records(self) -> Dict[str, Record]:
        return {derived_uuid(v.uuid, self.kind): self.make(v) for v in self.api.vm_views()}

    def make(self, v: VmView) -> Record:
        raise NotImplementedError


class VMMetrics(_PerVM):
    name = kind = "VM_metrics"
    fields = ("uuid", "memory_actual", "VCPUs_number", "VCPUs_utilisation", "VCPUs_CPU",
              "VCPUs_params", "VCPUs_flags", "state", "start_time", "last_updated",
              "cpu_time")

    def make(self, v: VmView) -> Record:
        cfg = v.cfg
        info = v.info if v.domid is not None else None
        online = info.online_vcpus if info is not None else cfg.vcpus
        cpus: Dict[str, int] = {}
        flags: Dict[str, List[str]] = {}
        if info is not None:
            try:
                for vc in self.api.node.hypervisor.vcpu_info(v.domid):
                    cpus[str(vc.number)] = vc.cpu
                    flags[str(vc.number)] = [n for n, on in (("online", vc.online),
                                                            ("blocked", vc.blocked),
                                                            ("running", vc.running)) if on]
            except HypervisorError:
                pass
        return {
            "uuid": derived_uuid(v.uuid, self.kind),
            "memory_actual": info.mem_kib * 1024 if info is not None else cfg.memory << 20,
            "VCPUs_number": online,
            "VCPUs_utilisation": {str(i): 0.0 for i in range(online)},
            "VCPUs_CPU": cpus,
            "VCPUs_params": {"weight": str(cfg.cpu_weight), "cap": str(cfg.cpu_cap)},
            "VCPUs_flags": flags,
            "state": state_flags(v),
            "start_time": wire.Timestamp(v.start_time or 0.0),
            "last_updated": wire.now(),
            "cpu_time": info.cpu_time_ns / 1e9 if info is not None else 0.0,
        }


class VMGuestMetrics(_PerVM):
    name = kind = "VM_guest_metrics"
    fields = ("uuid", "os_version", "PV_drivers_version", "memory", "disks", "networks",
              "other", "last_updated")

    def make(self, v: VmView) -> Record:
        return {"uuid": derived_uuid(v.uuid, self.kind), "os_version": {},
                "PV_drivers_version": {}, "memory": {}, "disks": {}, "networks": {},
                "other": {}, "last_updated": wire.now()}
