"""The classes of the host: ``host``, ``host_metrics``, ``host_cpu``, and ``pool`` (one pool
of this one host, for clients that ask for ``pool.get_master`` as the PyPI XenAPI module's
``API_version`` does).

The host's facts come from the same ``Node.info`` that ``xm info`` prints (one source): its
cpu pairs go to ``cpu_configuration``, its memory to ``host_metrics``, the rest (uname,
Xen's version and build) to ``software_version``. The CPUs' vendor, model and flags are read
from /proc/cpuinfo. Name, description, other_config and logging are kept in the API store.
"""
from __future__ import annotations

from typing import Any, Dict, List

from xend import nodeinfo

from . import wire
from .objects import ApiClass, Call, Record
from .records import derived_uuid

API_VERSION_MAJOR = 1
API_VERSION_MINOR = 0
API_VENDOR = "Xensource"
SUPPORTED_BOOTLOADERS = ["pygrub"]


def info_dict(api) -> Dict[str, Any]:
    return {k: v for k, v in api.node.info(0)}


def cpuinfo(path: str = "/proc/cpuinfo") -> Dict[str, str]:
    """vendor_id, model name, stepping, flags of the first CPU listed (''s if unknown)."""
    out = {"vendor_id": "", "model name": "", "stepping": "", "flags": ""}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                key = key.strip()
                if not sep:
                    if any(out.values()):
                        break
                    continue
                if key in out and not out[key]:
                    out[key] = value.strip()
    except OSError:
        pass
    return out


class Host(ApiClass):
    name = "host"
    fields = ("uuid", "name_label", "name_description", "API_version_major",
              "API_version_minor", "API_version_vendor", "API_version_vendor_implementation",
              "enabled", "software_version", "other_config", "capabilities",
              "cpu_configuration", "sched_policy", "supported_bootloaders", "resident_VMs",
              "logging", "PIFs", "suspend_image_sr", "crash_dump_sr", "PBDs", "PPCIs",
              "PSCSIs", "PSCSI_HBAs", "host_CPUs", "metrics", "resident_cpu_pools")
    map_fields = ("other_config", "logging")
    messages = ("dmesg", "dmesg_clear", "get_log", "list_methods")
    async_messages = ("dmesg", "dmesg_clear", "get_log")

    @property
    def ref(self) -> str:
        return self.api.store.get("host")["uuid"]

    def refs(self) -> List[str]:
        return [self.ref]

    def check(self, ref: Any) -> str:
        ref = self.ref_arg(ref)
        if ref != self.ref:
            raise self.invalid(ref)
        return ref

    def record(self, ref: str) -> Record:
        self.check(ref)
        stored = self.api.store.get("host")
        info = info_dict(self.api)
        sr = self.api.store.get("sr")["uuid"]
        software = {k: str(info[k]) for k in nodeinfo.SOFTWARE_KEYS if k in info}
        software["xend_version"] = nodeinfo.XEND_VERSION
        return {
            "uuid": ref,
            "name_label": stored.get("name_label", ""),
            "name_description": stored.get("name_description", ""),
            "API_version_major": API_VERSION_MAJOR,
            "API_version_minor": API_VERSION_MINOR,
            "API_version_vendor": API_VENDOR,
            "API_version_vendor_implementation": {},
            "enabled": True,
            "software_version": software,
            "other_config": stored.get("other_config", {}),
            "capabilities": str(info.get("xen_caps", "")).split(),
            "cpu_configuration": {k: str(info[k]) for k in nodeinfo.CPU_KEYS if k in info},
            "sched_policy": str(info.get("xen_scheduler", "")),
            "supported_bootloaders": list(SUPPORTED_BOOTLOADERS),
            "resident_VMs": [v.uuid for v in self.api.vm_views() if v.resident],
            "logging": stored.get("logging", {}),
            "PIFs": [], "suspend_image_sr": sr, "crash_dump_sr": sr, "PBDs": [],
            "PPCIs": [], "PSCSIs": [], "PSCSI_HBAs": [],
            "host_CPUs": HostCpu(self.api).refs(),
            "metrics": derived_uuid(ref, "host_metrics"),
            "resident_cpu_pools": [],
        }

    def _set(self, ref: Any, key: str, value: Any) -> None:
        self.check(ref)
        self.api.store_update("host", lambda h: h.__setitem__(key, value))
        self.api.events.publish("host", "mod", self.ref)

    def set_name_label(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "name_label", wire.as_str(value))

    def set_name_description(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "name_description", wire.as_str(value))

    def set_other_config(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "other_config", wire.as_map(value))

    def set_logging(self, call: Call, ref: Any, value: Any) -> None:
        self._set(ref, "logging", wire.as_map(value))

    def dmesg(self, call: Call, ref: Any) -> str:
        self.check(ref)
        return self.api.node.dmesg_info()

    def dmesg_clear(self, call: Call, ref: Any) -> str:
        self.check(ref)
        return self.api.node.dmesg_clear()

    def get_log(self, call: Call, ref: Any) -> str:
        self.check(ref)
        return self.api.node.log_text()

    def list_methods(self, call: Call) -> List[str]:
        return sorted(self.api.method_names())


class HostMetrics(ApiClass):
    name = "host_metrics"
    fields = ("uuid", "memory_total", "memory_free", "last_updated")

    def refs(self) -> List[str]:
        return [derived_uuid(self.api.store.get("host")["uuid"], "host_metrics")]

    def record(self, ref: str) -> Record:
        if ref not in self.refs():
            raise self.invalid(ref)
        phys = self.api.node.hypervisor.physinfo()
        return {"uuid": ref, "memory_total": phys.total_kib * 1024,
                "memory_free": phys.free_kib * 1024, "last_updated": wire.now()}


class HostCpu(ApiClass):
    name = "host_cpu"
    fields = ("uuid", "host", "number", "vendor", "speed", "modelname", "stepping", "flags",
              "features", "utilisation", "cpu_pool")

    def _host(self) -> str:
        return self.api.store.get("host")["uuid"]

    def refs(self) -> List[str]:
        host = self._host()
        n = self.api.node.hypervisor.physinfo().nr_cpus
        return [derived_uuid(host, f"host_cpu/{i}") for i in range(n)]

    def record(self, ref: str) -> Record:
        refs = self.refs()
        if ref not in refs:
            raise self.invalid(ref)
        phys = self.api.node.hypervisor.physinfo()
        cpu = cpuinfo()
        return {"uuid": ref, "host": self._host(), "number": refs.index(ref),
                "vendor": cpu["vendor_id"], "speed": phys.cpu_khz // 1000,
                "modelname": cpu["model name"], "stepping": cpu["stepping"],
                "flags": cpu["flags"], "features": phys.hw_caps, "utilisation": 0.0,
                "cpu_pool": []}


class Pool(ApiClass):
    name = "pool"
    fields = ("uuid", "name_label", "name_description", "master", "default_SR",
              "other_config")

    def refs(self) -> List[str]:
        return [self.api.store.get("pool")["uuid"]]

    def record(self, ref: str) -> Record:
        if ref not in self.refs():
            raise self.invalid(ref)
        sr = self.api.store.get("sr")["uuid"]
        return {"uuid": ref, "name_label": "", "name_description": "",
                "master": self.api.store.get("host")["uuid"], "default_SR": sr,
                "other_config": {}}

