"""CPU pools (xend 4.1+, ``xend.cpu_pool.*``, ``xm cpupool-*``): sets of host CPUs with a
scheduler of their own, each domain running in one.

The hypervisor has the pools (numbers, CPUs, scheduler, domains: ``Hypervisor.cpupool_*``,
the simulated host's or libxenctrl's); their names are xend's, kept where libxl keeps them
too (``/local/pool/<id>/name``, with ``uuid`` and ``description``), so ``xl cpupool-list``
names them the same. Pool 0 (``Pool-0``) holds every CPU at boot. A managed pool
(``cpupool-new``) is a configuration kept in ``<xend-state-path>/cpu_pools.sxp`` (written
durably), activated by ``cpupool-start``; an unmanaged one (``cpupool-create``) exists only
while active.

A pool configuration is the SXP ``xm cpupool-create`` sends: ``(pool (name_label N)
(sched_policy credit) (ncpu 2) (proposed_CPUs 2 3) (other_config (k v)))``.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import uuid as uuidlib
from typing import Any, Dict, List, Optional

from xend import sxp
from xend.errors import HypervisorError, VmError, XendError
from xend.fsutil import write_durably
from xend.hypervisor.base import SCHEDULERS, CpuPoolInfo, Hypervisor

log = logging.getLogger("xend.XendCPUPool")

POOL_ROOT = "/local/pool"
POOL0_NAME = "Pool-0"
STORE_FILE = "cpu_pools.sxp"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-.:/+]+$")


def pool_id_by_name(hv: Hypervisor, name: str) -> Optional[int]:
    """The id of the active pool named ``name`` (Pool-0 is 0), or None."""
    if name in ("", POOL0_NAME):
        return 0
    try:
        for poolid in hv.store_list(POOL_ROOT):
            if poolid.isdigit() and hv.store_read(f"{POOL_ROOT}/{poolid}/name") == name:
                return int(poolid)
    except HypervisorError:
        return None
    return None


def _values(value: Any) -> List[Any]:
    """The values of ``(key v1 v2 ...)`` (a single nested list is unwrapped)."""
    rest = list(value[1:]) if isinstance(value, list) else []
    if len(rest) == 1 and isinstance(rest[0], list):
        rest = rest[0]
    return rest


def parse_pool_config(config: Any) -> Dict[str, Any]:
    """A ``(pool ...)`` SXP -> checked settings (VmError with the reason)."""
    if isinstance(config, str):
        config = sxp.from_string(config)
    if not (isinstance(config, list) and config and config[0] == "pool"):
        raise VmError("a CPU pool configuration must be a (pool ...) list")
    kids = {k[0]: k for k in config[1:] if isinstance(k, list) and k and isinstance(k[0], str)}

    def one(key: str, default: Any) -> Any:
        k = kids.get(key)
        return k[1] if k is not None and len(k) > 1 else default

    name = str(one("name_label", "Pool-Unnamed"))
    check_name(name)
    sched = str(one("sched_policy", "") or "")
    if sched and sched not in SCHEDULERS:
        raise VmError("Unknown scheduler policy %s (this Xen has %s)"
                      % (sched, ", ".join(SCHEDULERS)))
    try:
        ncpu = int(one("ncpu", 1))
        proposed = sorted({int(c) for c in _values(kids.get("proposed_CPUs"))})
    except (TypeError, ValueError):
        raise VmError("Invalid ncpu or proposed_CPUs in %s" % sxp.to_string(config)) from None
    if ncpu < 1:
        raise VmError("Invalid ncpu %d: a pool needs at least one CPU" % ncpu)
    other = {str(k[0]): str(k[1]) for k in _values(kids.get("other_config"))
             if isinstance(k, list) and len(k) > 1}
    return {"uuid": str(one("uuid", "")) or str(uuidlib.uuid4()), "name_label": name,
            "name_description": str(one("name_description", name)), "sched_policy": sched,
            "ncpu": max(ncpu, len(proposed)), "proposed_CPUs": proposed,
            "other_config": other,
            "auto_power_on": str(one("auto_power_on", "0")) in ("1", "True", "true")}


def check_name(name: str) -> None:
    if not name:
        raise VmError("Missing Pool Name")
    if not _NAME_RE.match(name):
        raise VmError("Invalid Pool Name")


class CpuPools:
    """The pools of one host; ``domains`` is the DomainRegistry (for names and configs)."""

    def __init__(self, hv: Hypervisor, domains, state_path: str):
        self.hv = hv
        self.domains = domains
        self.path = os.path.join(state_path, STORE_FILE)
        self._lock = threading.RLock()
        self._managed: Dict[str, Dict[str, Any]] = {}       # uuid -> settings

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Name Pool-0 in the store if nobody did; load the managed pools; start those with
        ``auto_power_on``."""
        try:
            active = self.hv.cpupool_list()
        except HypervisorError as e:
            log.info("No CPU pools on this host: %s", e.message)
            return
        if any(p.poolid == 0 for p in active) and not self._read(0, "name"):
            self._publish(0, {"uuid": str(uuidlib.uuid4()), "name_label": POOL0_NAME,
                              "name_description": POOL0_NAME, "other_config": {}})
        self._load()
        for settings in list(self._managed.values()):
            if settings.get("auto_power_on") and self._active_id(settings["uuid"]) is None:
                try:
                    self._activate(settings)
                except XendError as e:
                    log.error("Cannot start CPU pool %s: %s", settings["name_label"], e)

    def _load(self) -> None:
        try:
            values = sxp.parse_file(self.path) or []
        except FileNotFoundError:
            return
        except (OSError, sxp.ParseError) as e:
            log.error("Cannot read the managed CPU pools in %s: %s", self.path, e)
            return
        for value in values[0][1:] if values and isinstance(values[0], list) else []:
            try:
                settings = parse_pool_config(value)
            except XendError as e:
                log.error("Skipping a managed CPU pool in %s: %s", self.path, e)
                continue
            self._managed[settings["uuid"]] = settings

    def _save(self) -> None:
        pools = ["cpu_pools"] + [self._config_sxp(s) for s in self._managed.values()]
        try:
            write_durably(self.path, sxp.prettyprint(pools, width=78).encode())
        except OSError as e:
            raise XendError("Cannot save the managed CPU pools to %s: %s"
                            % (self.path, e.strerror or e)) from None

    @staticmethod
    def _config_sxp(s: Dict[str, Any]) -> list:
        return ["pool", ["uuid", s["uuid"]], ["name_label", s["name_label"]],
                ["name_description", s["name_description"]],
                ["sched_policy", s["sched_policy"]], ["ncpu", s["ncpu"]],
                ["proposed_CPUs"] + list(s["proposed_CPUs"]),
                ["other_config"] + [[k, v] for k, v in s["other_config"].items()],
                ["auto_power_on", int(bool(s["auto_power_on"]))]]

    # -- the store ----------------------------------------------------------------------------------
    def _read(self, poolid: int, key: str) -> Optional[str]:
        try:
            return self.hv.store_read(f"{POOL_ROOT}/{poolid}/{key}")
        except HypervisorError:
            return None

    def _publish(self, poolid: int, s: Dict[str, Any]) -> None:
        base = f"{POOL_ROOT}/{poolid}"
        self.hv.store_write(f"{base}/uuid", s["uuid"])
        self.hv.store_write(f"{base}/name", s["name_label"])
        self.hv.store_write(f"{base}/description", s.get("name_description", ""))
        for key, value in s.get("other_config", {}).items():
            self.hv.store_write(f"{base}/other_config/{key}", value)

    def _active(self) -> Dict[int, CpuPoolInfo]:
        try:
            return {p.poolid: p for p in self.hv.cpupool_list()}
        except HypervisorError as e:
            raise XendError("CPU pools are not available: %s" % e.message) from None

    def _active_id(self, uuid: str) -> Optional[int]:
        for poolid in self._active():
            if self._read(poolid, "uuid") == uuid:
                return poolid
        return None

    def _lookup(self, name: Any) -> Dict[str, Any]:
        """A pool by name (or uuid): its settings, with ``poolid`` when it is active."""
        key = str(name)
        for poolid in self._active():
            pname = self._read(poolid, "name") or (POOL0_NAME if poolid == 0 else "")
            puuid = self._read(poolid, "uuid") or ""
            if key in (pname, puuid):
                managed = self._managed.get(puuid)
                found = dict(managed) if managed else {
                    "uuid": puuid, "name_label": pname,
                    "name_description": self._read(poolid, "description") or pname,
                    "sched_policy": "", "ncpu": 0, "proposed_CPUs": [], "other_config": {},
                    "auto_power_on": False}
                found["poolid"] = poolid
                return found
        for s in self._managed.values():
            if key in (s["name_label"], s["uuid"]):
                return dict(s, poolid=None)
        raise VmError("unknown pool %s" % key)

    def _name_free(self, name: str, uuid: str) -> None:
        try:
            other = self._lookup(name)
        except VmError:
            return
        if other["uuid"] != uuid:
            raise VmError('Pool name "%s" already exists' % name)

    # -- activation ---------------------------------------------------------------------------------
    def _free_cpus(self, active: Dict[int, CpuPoolInfo]) -> List[int]:
        used = {c for p in active.values() for c in p.cpus}
        return [c for c in range(self.hv.physinfo().nr_cpus) if c not in used]

    def _activate(self, s: Dict[str, Any]) -> int:
        active = self._active()
        if self._active_id(s["uuid"]) is not None:
            raise VmError("Pool %s is already activated" % s["name_label"])
        sched = s["sched_policy"] or (active[0].scheduler if 0 in active else "credit")
        free = self._free_cpus(active)
        if len(free) < s["ncpu"]:
            raise VmError("Not enough free CPUs for pool %s: it needs %d, %d free (take them "
                          "from Pool-0 with xm cpupool-cpu-remove)"
                          % (s["name_label"], s["ncpu"], len(free)))
        chosen = [c for c in s["proposed_CPUs"] if c in free]
        chosen += [c for c in free if c not in chosen]
        chosen = chosen[:s["ncpu"]]
        try:
            poolid = self.hv.cpupool_create(sched)
        except HypervisorError as e:
            raise VmError("Cannot create pool %s: %s" % (s["name_label"], e.message)) from None
        try:
            for cpu in chosen:
                self.hv.cpupool_add_cpu(poolid, cpu)
            self._publish(poolid, s)
        except (HypervisorError, XendError) as e:
            self._deactivate(poolid)
            raise VmError("Cannot create pool %s: %s" % (s["name_label"], e)) from None
        log.info("CPU pool %s (%d) activated with CPUs %s", s["name_label"], poolid, chosen)
        return poolid

    def _deactivate(self, poolid: int) -> None:
        info = self._active().get(poolid)
        for cpu in info.cpus if info else ():
            self.hv.cpupool_remove_cpu(poolid, cpu)
        self.hv.cpupool_destroy(poolid)
        try:
            self.hv.store_rm(f"{POOL_ROOT}/{poolid}")
        except HypervisorError:
            pass

    # -- the legacy calls (xend.cpu_pool.*) ---------------------------------------------------------
    def pool_create(self, config: Any) -> None:
        """Make and activate an unmanaged pool."""
        s = parse_pool_config(config)
        with self._lock:
            self._name_free(s["name_label"], s["uuid"])
            self._activate(s)

    def pool_new(self, config: Any) -> str:
        """Add a managed (inactive) pool; its uuid."""
        s = parse_pool_config(config)
        with self._lock:
            self._name_free(s["name_label"], s["uuid"])
            self._managed[s["uuid"]] = s
            try:
                self._save()
            except XendError:
                del self._managed[s["uuid"]]
                raise
        return s["uuid"]

    def pool_start(self, name: Any) -> None:
        with self._lock:
            s = self._lookup(name)
            if s["poolid"] is not None:
                raise VmError("Pool %s is already activated" % s["name_label"])
            self._activate(s)

    def pool_destroy(self, name: Any) -> None:
        """Deactivate a pool (it must have no domains); an unmanaged one is gone then."""
        with self._lock:
            s = self._lookup(name)
            poolid = s["poolid"]
            if poolid is None:
                raise VmError("Pool %s is not activated" % s["name_label"])
            if poolid == 0:
                raise VmError("Pool-0 cannot be destroyed")
            info = self._active()[poolid]
            if info.domids:
                raise VmError("Pool %s is in use by domain(s) %s" % (
                    s["name_label"], ", ".join(self._domain_name(d) for d in info.domids)))
            try:
                self._deactivate(poolid)
            except HypervisorError as e:
                raise VmError("Cannot destroy pool %s: %s" % (s["name_label"], e.message)) \
                    from None

    def pool_delete(self, name: Any) -> None:
        """Remove a managed pool's configuration (it must not be active)."""
        with self._lock:
            s = self._lookup(name)
            if s["poolid"] is not None:
                raise VmError("Pool %s is activated: destroy it first" % s["name_label"])
            if s["uuid"] not in self._managed:
                raise VmError("Pool %s is not managed" % s["name_label"])
            removed = self._managed.pop(s["uuid"])
            try:
                self._save()
            except XendError:
                self._managed[s["uuid"]] = removed
                raise

    def pool_cpu_add(self, name: Any, cpu: Any) -> None:
        number = self._cpu(cpu)
        with self._lock:
            s = self._lookup(name)
            if s["poolid"] is None:
                raise VmError("Pool %s is not activated" % s["name_label"])
            for other in self._active().values():
                if number in other.cpus:
                    raise VmError('CPU %d is already assigned to pool "%s"'
                                  % (number, self._pool_name(other.poolid)))
            try:
                self.hv.cpupool_add_cpu(s["poolid"], number)
            except HypervisorError as e:
                raise VmError("Cannot add CPU %d to pool %s: %s"
                              % (number, s["name_label"], e.message)) from None
            self._remember_cpus(s)

    def pool_cpu_remove(self, name: Any, cpu: Any) -> None:
        number = self._cpu(cpu)
        with self._lock:
            s = self._lookup(name)
            if s["poolid"] is None:
                raise VmError("Pool %s is not activated" % s["name_label"])
            info = self._active()[s["poolid"]]
            if number not in info.cpus:
                raise VmError("CPU %d is not assigned to pool %s" % (number, s["name_label"]))
            if len(info.cpus) == 1 and info.domids:
                raise VmError("Cannot remove CPU %d: it is the last CPU of pool %s, which "
                              "has domains" % (number, s["name_label"]))
            try:
                self.hv.cpupool_remove_cpu(s["poolid"], number)
            except HypervisorError as e:
                raise VmError("Cannot remove CPU %d from pool %s: %s"
                              % (number, s["name_label"], e.message)) from None
            self._remember_cpus(s)

    def pool_migrate(self, domname: Any, poolname: Any) -> None:
        """Move a domain into a pool (a running one at once) and keep the pool in its
        configuration (``pool_name``)."""
        with self._lock:
            s = self._lookup(poolname)
            if s["poolid"] is None:
                raise VmError("Pool %s is not activated" % s["name_label"])
            self.domains.domain_cpupool_migrate(domname, s["poolid"], s["name_label"])

    def pool_list(self, names: Any = ()) -> List[list]:
        wanted = [str(n) for n in (names or [])] if not isinstance(names, str) else [names]
        with self._lock:
            out = []
            seen = set()
            active = self._active()
            for poolid, info in sorted(active.items()):
                s = self._lookup(self._pool_name(poolid))
                seen.add(s["uuid"])
                out.append(self._record(s, info))
            for s in self._managed.values():
                if s["uuid"] not in seen:
                    out.append(self._record(dict(s, poolid=None), None))
            return [r for r in out if not wanted or r[1][1] in wanted]

    # -- helpers ----------------------------------------------------------------------------------
    def _record(self, s: Dict[str, Any], info: Optional[CpuPoolInfo]) -> list:
        sched = s["sched_policy"] or (info.scheduler if info else "")
        names = [self._domain_name(d) for d in info.domids] if info else []
        uuids = [self._domain_uuid(d) for d in info.domids] if info else []
        return [s["uuid"], ["name_label", s["name_label"]],
                ["name_description", s["name_description"]],
                ["auto_power_on", int(bool(s["auto_power_on"]))],
                ["started_VMs"] + uuids,
                ["ncpu", len(info.cpus) if info else s["ncpu"]],
                ["sched_policy", sched], ["proposed_CPUs"] + list(s["proposed_CPUs"]),
                ["other_config"] + [[k, v] for k, v in s["other_config"].items()],
                ["activated", info is not None],
                ["host_CPU_numbers"] + (list(info.cpus) if info else []),
                ["started_VM_names"] + names]

    def _remember_cpus(self, s: Dict[str, Any]) -> None:
        managed = self._managed.get(s["uuid"])
        if managed is None:
            return
        info = self._active().get(s["poolid"])
        if info is not None:
            managed["proposed_CPUs"] = list(info.cpus)
            managed["ncpu"] = max(1, len(info.cpus))
            self._save()

    def _pool_name(self, poolid: int) -> str:
        return self._read(poolid, "name") or (POOL0_NAME if poolid == 0 else f"Pool-{poolid}")

    def _domain_name(self, domid: int) -> str:
        try:
            return str(sxp.child_value(self.domains.domain(domid, 0), "name", domid))
        except XendError:
            return str(domid)

    def _domain_uuid(self, domid: int) -> str:
        try:
            return str(sxp.child_value(self.domains.domain(domid, 0), "uuid", ""))
        except XendError:
            return ""

    @staticmethod
    def _cpu(cpu: Any) -> int:
        try:
            return int(str(cpu).strip())
        except ValueError:
            raise VmError("CPU unknown: %s" % cpu) from None
