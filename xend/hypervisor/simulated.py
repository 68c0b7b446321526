"""A simulated hypervisor whose whole state lives in a directory.

Because nothing lives in the xend process, a new instance on the same directory (a xend
restart, or another process such as ``xend-sim``) sees the same domains, still "running".

State directory layout::

    lock                 flock'ed by every writer (all processes)
    domains.json         the domain table: host facts, domid counter, one record per domain
    console-ring         the hypervisor's console ring (xm dmesg)
    store/<shard>.json   the store (xenstore analog), see simstore
    dom/<domid>/aux.json console read position, dirty-log position, write epoch
    dom/<domid>/pages, generations, written
                         the pages given by write_pages (restore / migrate), see simpages

Time-based behaviour is computed from timestamps when state is read (see simguest), so no
background process is needed. Guests are tuned with ``sim.*`` words in their kernel command
line (simguest.KNOBS).

The simulated host also plays dom0's device backends and their hotplug scripts, through the
store as in Xen: when a toolstack writes ``state`` = 1 (Initialising) into a backend directory
``/local/domain/<b>/backend/<class>/<domid>/<devid>``, the backend connects at once
(``hotplug-status`` = connected, ``state`` = 4); when it writes ``state`` = 5 (Closing), the
backend goes away (its directory is removed). A guest's ``sim.hotplug_hang``,
``sim.hotplug_error`` and ``sim.unplug_hang`` make its backends never answer, fail, or never
go away.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import threading
import time
import uuid as uuidlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import HypervisorError
from . import simguest as guest
from . import simhost
from .base import (PAGE_SIZE, SCHEDULERS, SHUTDOWN_CRASH, SHUTDOWN_NAMES, SHUTDOWN_POWEROFF,
                   SHUTDOWN_REASONS, TRIGGERS, CpuPoolInfo, DomainInfo, DomainSpec, Hypervisor,
                   PhysInfo, VcpuInfo, VersionInfo)
from .simfiles import CachedJson, StateLock, atomic_write, read_json, write_json
from .simmemory import DirtyMap
from .simpages import StoredPages, check_pfns
from .simstore import SimStore
from .simtable import DomainTable

log = logging.getLogger(__name__)

DEFAULT_STATE_PATH = "/var/lib/xend/simulated"
DEFAULT_HOST_MEMORY_MIB = 16384
DOMID_FIRST_RESERVED = 0x7FF0
MAX_VCPUS = 512
_SHUTDOWN_REQUEST = re.compile(r"^/local/domain/(\d+)/control/shutdown$")
_BACKEND_STATE = re.compile(r"^(/local/domain/\d+/backend/([^/]+)/(\d+)/([^/]+))/state$")
_BACKEND_PARAMS = re.compile(r"^(/local/domain/\d+/backend/(vbd|tap|tap2)/(\d+)/([^/]+))/params$")
XENBUS_INITIALISING, XENBUS_CONNECTED, XENBUS_CLOSING, XENBUS_CLOSED = "1", "4", "5", "6"
#: device groups the simulated guest has frontends for
_GUEST_GROUPS = ("vbd", "vif")
_READ_BATCH = 256


def _error(code: int, message: Optional[str] = None) -> HypervisorError:
    return HypervisorError(code, message or os.strerror(code))


class SimulatedHypervisor(Hypervisor):
    """A hypervisor host simulated in ``state_path``.

    The host (memory, cpus, dom0's initial memory) is fixed when the directory is first
    used; later instances keep it, as real hardware does not change under running domains.
    Guest-knob defaults (``shutdown_delay``, ``dirty_rate``) apply to domains created by this
    instance. Create instances after any fork: the lock is an open file.
    """

    name = "simulated"
    device_backends = True

    def __init__(self, state_path: str, host_memory_mib: Optional[int] = None,
                 host_cpus: Optional[int] = None, dom0_memory_mib: Optional[int] = None, *,
                 shutdown_delay: float = 0.3, dirty_rate: int = 2000,
                 poll_interval: float = 0.05, create: bool = True, scheduler: str = "credit"):
        self._dir = state_path
        table_path = os.path.join(state_path, "domains.json")
        if not create and not os.path.exists(table_path):
            raise _error(errno.ENOENT, f"no simulated hypervisor state in {state_path}")
        os.makedirs(os.path.join(state_path, "dom"), mode=0o700, exist_ok=True)
        self._mutex = threading.RLock()
        self._lock = StateLock(os.path.join(state_path, "lock"), self._mutex)
        self._table = CachedJson(table_path)
        self._store = SimStore(os.path.join(state_path, "store"), self._lock)
        self._guest_defaults = {"shutdown_delay": shutdown_delay, "dirty_rate": dirty_rate}
        self._poll = poll_interval
        self._tab: Optional[DomainTable] = None     # the loaded table, see _load
        self._maps: Dict[Tuple[str, int, int], DirtyMap] = {}
        #: (domid, created) -> console lines read up to, when we last read the aux file
        self._console_read: Dict[Tuple[int, float], int] = {}
        self._init_host(host_memory_mib, host_cpus, dom0_memory_mib, scheduler)
        with self._mutex:
            self._seen_serial = self._load()["serial"]
            self._seen_time = time.time()

    # -- state table -------------------------------------------------------------------------
    def _init_host(self, memory_mib: Optional[int], cpus: Optional[int],
                   dom0_mib: Optional[int], scheduler: str = "credit") -> None:
        with self._lock:
            doc = self._table.load()
            if doc is not None:
                host = doc["host"]
                if (memory_mib and memory_mib * 1024 != host["memory_kib"]) or \
                        (cpus and cpus != host["nr_cpus"]):
                    log.warning("simulated host in %s keeps its %d MiB and %d cpus; "
                                "remove the directory to change them", self._dir,
                                host["memory_kib"] // 1024, host["nr_cpus"])
                return
            total = (memory_mib or DEFAULT_HOST_MEMORY_MIB) * 1024
            nr_cpus = cpus or os.cpu_count() or 1
            dom0 = (dom0_mib * 1024) if dom0_mib else total // 4
            if total <= 0 or not 0 < dom0 <= total:
                raise _error(errno.EINVAL, "bad simulated host memory settings")
            now = time.time()
            if scheduler not in SCHEDULERS:
                raise _error(errno.EINVAL, f"unknown scheduler {scheduler!r}")
            doc = {"format": 1, "serial": 0, "next_domid": 1,
                   "host": {"memory_kib": total, "nr_cpus": nr_cpus, "boot_time": now,
                            "dom0_boot_kib": dom0, "scheduler": scheduler},
                   "pools": [{"poolid": 0, "sched": scheduler,
                              "cpus": list(range(nr_cpus))}], "next_poolid": 1,
                   "domains": [guest.dom0_record(nr_cpus, dom0, total, now)]}
            atomic_write(self._ring_path(), simhost.boot_log(nr_cpus, total, dom0, scheduler).encode())
            self._table.save(doc)

    def _load(self) -> dict:
        return self._loaded().doc

    def _loaded(self) -> DomainTable:
        """The current table; caller holds the mutex. A version another process wrote is
        loaded anew."""
        doc = self._table.load()
        if doc is None:
            raise _error(errno.EIO, f"simulated hypervisor state vanished from {self._dir}")
        if self._tab is None or self._tab.doc is not doc:
            self._tab = DomainTable(doc)
        return self._tab

    def _record(self, domid: int) -> dict:
        """The stored (unsettled) record of ``domid``; caller holds the mutex."""
        if not isinstance(domid, int):
            raise _error(errno.EINVAL, f"bad domain id {domid!r}")
        rec = self._loaded().index.get(domid)
        if rec is None:
            raise _error(errno.ESRCH)
        return rec

    def _settled(self, domid: int) -> Tuple[dict, float]:
        table = self._current()
        if table is not None and isinstance(domid, int):
            ok, rec = table.unlocked(lambda t: t.index.get(domid))
            if ok and rec is not None:
                now = time.time()
                return guest.settled(rec, now), now
        with self._mutex:
            now = time.time()
            return guest.settled(self._record(domid), now), now

    def _current(self) -> Optional[DomainTable]:
        """The loaded table if the file still holds it (no lock taken: for readers that
        can do without one, through ``DomainTable.unlocked``), else None."""
        table = self._tab
        if table is None or self._table.peek() is not table.doc:
            return None
        return table

    @contextlib.contextmanager
    def _update(self, domid: Optional[int] = None, *, allow_dom0: bool = True):
        """Mutate the table under the lock: yields (doc, record of domid settled in place, now)
        and saves afterwards; on an exception nothing is saved and nothing changed. The body
        may change that record and the doc's own fields; records come and go through
        ``self._tab`` (insert, remove)."""
        with self._lock:
            table = self._loaded()
            table.begin()
            try:
                now = time.time()
                rec = None
                if domid is not None:
                    self._record(domid)
                    if domid == 0 and not allow_dom0:
                        raise _error(errno.EINVAL, "not permitted on Domain-0")
                    rec = table.own(domid)
                    guest.materialize(rec, now)
                yield table.doc, rec, now
                table.doc["serial"] += 1
                data = table.commit()
            except BaseException:
                table.rollback()
                raise
            # a failed write forgets the loaded version: the next look reads the file again
            self._table.save(table.doc, data)

    def _host(self) -> dict:
        with self._mutex:
            return self._load()["host"]

    def _free_kib(self, doc: dict) -> int:
        return doc["host"]["memory_kib"] - self._tab.used_kib   # inside _update: loaded

    # -- host ----------------------------------------------------------------------------------
    def physinfo(self) -> PhysInfo:
        def look(t: DomainTable) -> Tuple[int, dict]:
            return t.used_kib, t.doc["host"]
        table = self._current()
        ok, got = table.unlocked(look) if table is not None else (False, None)
        if not ok:
            with self._mutex:
                got = look(self._loaded())
        used, host = got
        return simhost.physinfo(host["nr_cpus"], host["memory_kib"], host["memory_kib"] - used)

    def version(self) -> VersionInfo:
        host = self._host()
        return simhost.version(host["dom0_boot_kib"] // 1024, host.get("scheduler", "credit"))

    def read_console_ring(self, clear: bool = False) -> str:
        with self._lock:
            try:
                with open(self._ring_path(), "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                text = ""
            if clear and text:
                atomic_write(self._ring_path(), b"")
            return text

    def _ring_path(self) -> str:
        return os.path.join(self._dir, "console-ring")

    # -- domains -------------------------------------------------------------------------------
    def list_domains(self) -> List[DomainInfo]:
        # records are replaced, never changed, once in the table: they are read unlocked
        with self._mutex:
            records = list(self._loaded().records)
        now = time.time()
        return [guest.domain_info(guest.settled(rec, now), now) for rec in records]

    def domain_info(self, domid: int) -> DomainInfo:
        rec, now = self._settled(domid)
        return guest.domain_info(rec, now)

    def domain_names(self) -> Dict[int, str]:
        """domid -> the name given at creation (the simulator's own bookkeeping)."""
        with self._mutex:
            return {rec["domid"]: rec["name"] for rec in self._load()["domains"]}

    def create_domain(self, spec: DomainSpec) -> int:
        try:
            uuid = str(uuidlib.UUID(spec.uuid))
        except (ValueError, TypeError, AttributeError):
            raise _error(errno.EINVAL, f"bad uuid {spec.uuid!r}") from None
        if not 0 < spec.memory_kib <= spec.maxmem_kib or not 0 < spec.vcpus <= MAX_VCPUS:
            raise _error(errno.EINVAL, "bad memory or vcpu count")
        knobs = guest.parse_knobs(spec.cmdline, self._guest_defaults)
        with self._update() as (doc, _, now):
            if spec.memory_kib > self._free_kib(doc):
                raise _error(errno.ENOMEM)
            domid = self._allocate_domid(doc)
            rec = guest.new_record(domid, spec, knobs, now)
            rec["uuid"] = uuid
            self._reset_aux(domid)
            self._tab.insert(rec)
        return domid

    def _allocate_domid(self, doc: dict) -> int:
        """Like Xen: the next id after the last one given, skipping ids in use, wrapping."""
        domid = doc["next_domid"]
        in_use = self._tab.index
        for _ in range(DOMID_FIRST_RESERVED):
            if domid >= DOMID_FIRST_RESERVED:
                domid = 1
            if domid not in in_use:
                doc["next_domid"] = domid + 1
                return domid
            domid += 1
        raise _error(errno.ENOSPC, "no free domain id")

    # Pauses by the controller are counted, as in Xen: a new domain starts with one, each
    # pause adds one, each unpause removes one (EINVAL when there is none); it runs at zero.
    def pause(self, domid: int) -> None:
        with self._update(domid, allow_dom0=False) as (_, rec, now):
            if rec["pause_count"] >= 255:
                raise _error(errno.EOVERFLOW)
            guest.fold(rec, now)
            rec["pause_count"] += 1
            rec["since"] = None

    def unpause(self, domid: int) -> None:
        with self._update(domid, allow_dom0=False) as (_, rec, now):
            if rec["pause_count"] == 0:
                raise _error(errno.EINVAL, "domain is not paused")
            rec["pause_count"] -= 1
            if rec["pause_count"] == 0 and not rec["shutdown"]:
                rec["since"] = now

    def shutdown(self, domid: int, reason: int) -> None:
        if reason not in SHUTDOWN_NAMES:
            raise _error(errno.EINVAL, f"bad shutdown reason {reason!r}")
        with self._update(domid, allow_dom0=False) as (_, rec, now):
            if not rec["shutdown"]:
                guest.stop(rec, now, reason, None)

    def crash(self, domid: int) -> None:
        """Make the guest crash now (as a kernel panic would): test and ``xend-sim`` hook."""
        with self._update(domid, allow_dom0=False) as (_, rec, now):
            if not rec["shutdown"]:
                guest.stop(rec, now, SHUTDOWN_CRASH, "crash")

    def destroy(self, domid: int) -> None:
        with self._lock:
            with self._update(domid, allow_dom0=False):
                self._tab.remove(domid)
            self._store.rm(f"/local/domain/{domid}")
            shutil.rmtree(self._aux_dir(domid), ignore_errors=True)

    def set_max_memory(self, domid: int, kib: int) -> None:
        _check_kib(kib)
        with self._update(domid) as (_, rec, _now):
            rec["maxmem_kib"] = kib

    def set_memory_target(self, domid: int, kib: int) -> None:
        _check_kib(kib)
        with self._update(domid) as (doc, rec, _):
            # a balloon driver cannot grow the guest past its static maximum
            new = min(kib, rec["maxmem_kib"])
            if new - rec["mem_kib"] > self._free_kib(doc):
                raise _error(errno.ENOMEM)
            rec["mem_kib"] = new
        self._store.write(f"/local/domain/{domid}/memory/target", str(kib))

    def set_vcpus_online(self, domid: int, count: int) -> None:
        with self._update(domid) as (_, rec, now):
            if not isinstance(count, int) or not 0 < count <= rec["max_vcpus"]:
                raise _error(errno.EINVAL, f"bad vcpu count {count!r}")
            guest.fold(rec, now)
            rec["online_vcpus"] = count

    def vcpu_info(self, domid: int) -> List[VcpuInfo]:
        rec, now = self._settled(domid)
        nr_cpus = self._host()["nr_cpus"]
        times = guest.vcpu_times(rec, now)
        active = rec["since"] is not None
        busy = active and guest.is_busy(rec, now)
        result = []
        for v in range(rec["max_vcpus"]):
            affinity = self._affinity(rec, v, nr_cpus)
            online = v < rec["online_vcpus"]
            cpu = affinity[(rec["domid"] + v) % len(affinity)] if online else -1
            result.append(VcpuInfo(number=v, online=online, blocked=online and active and not busy,
                                   running=online and busy, cpu_time_ns=times[v], cpu=cpu,
                                   affinity=affinity))
        return result

    @staticmethod
    def _affinity(rec: dict, vcpu: int, nr_cpus: int) -> List[int]:
        pinned = rec["affinity"][vcpu] if rec["affinity"] else None
        return list(pinned) if pinned else list(range(nr_cpus))

    def set_vcpu_affinity(self, domid: int, vcpu: int, cpus: List[int]) -> None:
        nr_cpus = self._host()["nr_cpus"]
        wanted = sorted(set(cpus))
        if not wanted or not all(isinstance(c, int) and 0 <= c < nr_cpus for c in wanted):
            raise _error(errno.EINVAL, f"bad cpu list {cpus!r}")
        with self._update(domid) as (_, rec, _now):
            if not isinstance(vcpu, int) or not 0 <= vcpu < rec["max_vcpus"]:
                raise _error(errno.EINVAL, f"bad vcpu {vcpu!r}")
            pins = rec["affinity"] or [None] * rec["max_vcpus"]
            pins[vcpu] = None if len(wanted) == nr_cpus else wanted
            rec["affinity"] = pins if any(pins) else None

    def sched_credit_get(self, domid: int) -> Tuple[int, int]:
        rec, _ = self._settled(domid)
        return rec["weight"], rec["cap"]

    def sched_credit_set(self, domid: int, weight: int, cap: int) -> None:
        if not (isinstance(weight, int) and 1 <= weight <= 65535
                and isinstance(cap, int) and 0 <= cap <= 65535):
            raise _error(errno.EINVAL, f"bad credit weight/cap {weight!r}/{cap!r}")
        with self._update(domid) as (_, rec, _now):
            rec.update(weight=weight, cap=cap)

    def sched_credit2_get(self, domid: int) -> int:
        self._check_scheduler("credit2")
        rec, _ = self._settled(domid)
        return rec["weight"]

    def sched_credit2_set(self, domid: int, weight: int) -> None:
        self._check_scheduler("credit2")
        if not (isinstance(weight, int) and 1 <= weight <= 65535):
            raise _error(errno.EINVAL, f"bad credit2 weight {weight!r}")
        with self._update(domid) as (_, rec, _now):
            rec["weight"] = weight

    def _check_scheduler(self, wanted: str) -> None:
        running = self._host().get("scheduler", "credit")
        if running != wanted:
            raise _error(errno.EINVAL, f"the host runs the {running} scheduler, not {wanted}")

    # -- triggers and debug keys ----------------------------------------------------------------
    def send_trigger(self, domid: int, trigger: str, vcpu: int = 0) -> None:
        """As Xen 4.17 on x86: an NMI for any guest, the ACPI power button for an HVM one
        (it powers itself off), a resume from S3 for an HVM one; reset and init are not
        implemented by the hypervisor (ENOSYS)."""
        if trigger not in TRIGGERS:
            raise _error(errno.EINVAL, f"unknown trigger {trigger!r}")
        with self._update(domid, allow_dom0=False) as (_, rec, now):
            if not isinstance(vcpu, int) or not 0 <= vcpu < rec["max_vcpus"]:
                raise _error(errno.ESRCH, f"domain {domid} has no vcpu {vcpu!r}")
            if trigger in ("reset", "init"):
                raise _error(errno.ENOSYS, f"the {trigger} trigger is not implemented by Xen "
                                           f"on x86 (xm reset resets a domain)")
            if trigger in ("power", "s3resume") and not rec["hvm"]:
                raise _error(errno.EINVAL, f"the {trigger} trigger is for HVM guests (ACPI)")
            if trigger == "nmi":
                guest.say(rec, now, f"Uhhuh. NMI received for unknown reason 00 on CPU {vcpu}.")
            elif trigger == "power" and not rec["shutdown"]:
                guest.say(rec, now, "ACPI: Power Button [PWRF]")
                rec["request"] = [SHUTDOWN_POWEROFF, now]

    def send_debug_keys(self, keys: str) -> None:
        """Each key's answer goes to the console ring, as Xen's keyhandlers print."""
        if not isinstance(keys, str) or not keys:
            raise _error(errno.EINVAL, "no debug keys")
        lines = "".join(f"(XEN) '{k}' pressed -> {simhost.debug_key(k)}\n" for k in keys)
        with self._lock:
            try:
                with open(self._ring_path(), "rb") as f:
                    ring = f.read()
            except FileNotFoundError:
                ring = b""
            atomic_write(self._ring_path(), ring + lines.encode())

    # -- CPU pools ------------------------------------------------------------------------------
    def _pools(self, doc: dict) -> List[dict]:
        if "pools" not in doc:           # a state directory made before pools existed
            doc["pools"] = [{"poolid": 0, "sched": doc["host"].get("scheduler", "credit"),
                             "cpus": list(range(doc["host"]["nr_cpus"]))}]
            doc["next_poolid"] = 1
        return doc["pools"]

    def _pool(self, doc: dict, poolid: int) -> dict:
        for pool in self._pools(doc):
            if pool["poolid"] == poolid:
                return pool
        raise _error(errno.ENOENT, f"no CPU pool {poolid!r}")

    def cpupool_list(self) -> List[CpuPoolInfo]:
        with self._mutex:
            doc = self._load()
            out = [CpuPoolInfo(p["poolid"], p["sched"], list(p["cpus"]), [])
                   for p in self._pools(dict(doc))]
            by_id = {p.poolid: p for p in out}
            for rec in doc["domains"]:
                pool = by_id.get(rec.get("pool", 0))
                if pool is not None:
                    pool.domids.append(rec["domid"])
            return out

    def cpupool_create(self, scheduler: str) -> int:
        if scheduler not in SCHEDULERS:
            raise _error(errno.EINVAL, f"unknown scheduler {scheduler!r}")
        with self._update() as (doc, _, _now):
            pools = self._pools(doc)
            poolid = doc["next_poolid"]
            doc["next_poolid"] = poolid + 1
            pools.append({"poolid": poolid, "sched": scheduler, "cpus": []})
        return poolid

    def cpupool_destroy(self, poolid: int) -> None:
        with self._update() as (doc, _, _now):
            pool = self._pool(doc, poolid)
            if poolid == 0:
                raise _error(errno.EINVAL, "Pool-0 cannot be destroyed")
            if pool["cpus"] or any(r.get("pool", 0) == poolid for r in doc["domains"]):
                raise _error(errno.EBUSY, f"CPU pool {poolid} still has CPUs or domains")
            self._pools(doc).remove(pool)

    def cpupool_add_cpu(self, poolid: int, cpu: int) -> None:
        with self._update() as (doc, _, _now):
            pool = self._pool(doc, poolid)
            if not isinstance(cpu, int) or not 0 <= cpu < doc["host"]["nr_cpus"]:
                raise _error(errno.EINVAL, f"no CPU {cpu!r} on this host")
            if any(cpu in p["cpus"] for p in self._pools(doc)):
                raise _error(errno.EBUSY, f"CPU {cpu} belongs to a pool")
            pool["cpus"] = sorted(pool["cpus"] + [cpu])

    def cpupool_remove_cpu(self, poolid: int, cpu: int) -> None:
        with self._update() as (doc, _, _now):
            pool = self._pool(doc, poolid)
            if cpu not in pool["cpus"]:
                raise _error(errno.EINVAL, f"CPU {cpu!r} is not in pool {poolid}")
            if len(pool["cpus"]) == 1 and any(r.get("pool", 0) == poolid
                                              for r in doc["domains"]):
                raise _error(errno.EBUSY, f"CPU {cpu} is the last one of pool {poolid}, "
                                          f"which has domains")
            pool["cpus"] = [c for c in pool["cpus"] if c != cpu]

    def cpupool_move_domain(self, poolid: int, domid: int) -> None:
        with self._lock:
            doc = self._load()
            pool = self._pool(dict(doc), poolid)
            if not pool["cpus"]:
                raise _error(errno.ENODEV, f"CPU pool {poolid} has no CPUs")
            with self._update(domid, allow_dom0=False) as (_, rec, _now):
                rec["pool"] = poolid

    # -- store ---------------------------------------------------------------------------------
    def store_read(self, path: str) -> Optional[str]:
        return self._store.read(path)

    def store_write(self, path: str, value: str) -> None:
        self._store.write(path, value)
        match = _SHUTDOWN_REQUEST.match(path)
        if match and value in SHUTDOWN_REASONS:
            self._request_shutdown(int(match.group(1)), SHUTDOWN_REASONS[value])
            return
        match = _BACKEND_STATE.match(path)
        if match and value in (XENBUS_INITIALISING, XENBUS_CLOSING):
            self._backend_event(match.group(1), match.group(2), int(match.group(3)),
                                match.group(4), value)
            return
        match = _BACKEND_PARAMS.match(path)
        if match:
            self._medium_event(match.group(1), int(match.group(3)), match.group(4), value)

    def _backend_event(self, backend: str, cls: str, frontend_domid: int, devid: str,
                       state: str) -> None:
        """dom0's backend driver and hotplug scripts, answering a device the toolstack set up
        (Initialising) or closed (Closing), and the guest's frontend finding the device or
        letting it go; see the module docstring."""
        with self._mutex:
            rec = self._loaded().index.get(frontend_domid)
            knobs = rec["knobs"] if rec is not None else {}
        group = "vbd" if cls in ("vbd", "tap", "tap2") else cls
        if state == XENBUS_INITIALISING:
            if knobs.get("hotplug_hang"):
                return
            if knobs.get("hotplug_error"):
                self._store.write(backend + "/hotplug-error",
                                  "simulated hotplug script failed (sim.hotplug_error)")
                self._store.write(backend + "/hotplug-status", "error")
                return
            self._store.write(backend + "/hotplug-status", "connected")
            self._store.write(backend + "/state", XENBUS_CONNECTED)
            if rec is not None and frontend_domid != 0:
                self._frontend_connects(backend, group, frontend_domid, devid)
        elif not knobs.get("unplug_hang"):
            front = self._store.read(backend + "/frontend")
            self._store.rm(backend)
            if front and self._store.read(front + "/backend") is not None:
                self._store.write(front + "/state", XENBUS_CLOSED)
            if rec is not None and frontend_domid != 0 and group in _GUEST_GROUPS:
                try:
                    with self._update(frontend_domid) as (_, grec, now):
                        guest.device_removed(grec, now, group, devid)
                except HypervisorError:     # the domain went meanwhile
                    pass

    def _frontend_connects(self, backend: str, group: str, domid: int, devid: str) -> None:
        """The guest's frontend driver takes the device: its ring and event channel, state
        Connected; the guest notices the device (``xend-sim devices``, its console)."""
        front = self._store.read(backend + "/frontend")
        if group not in _GUEST_GROUPS or not front:
            return
        name = (self._store.read(backend + "/dev") or f"{group}{devid}").split(":")[0]
        try:
            with self._update(domid) as (_, rec, now):
                guest.device_added(rec, now, group, devid, name)
                port = 10 + sum(len(v) for v in (rec.get("devices") or {}).values())
        except HypervisorError:             # the domain went meanwhile
            return
        self._store.write(front + "/event-channel", str(port))
        if group == "vif":
            self._store.write(front + "/tx-ring-ref", str(768 + 2 * port))
            self._store.write(front + "/rx-ring-ref", str(769 + 2 * port))
        else:
            self._store.write(front + "/ring-ref", str(8 + port))
        self._store.write(front + "/state", XENBUS_CONNECTED)

    def _medium_event(self, backend: str, domid: int, devid: str, params: str) -> None:
        """A cdrom's backend got a new medium (``params``; '' = ejected): the guest sees it."""
        if self._store.read(backend + "/state") != XENBUS_CONNECTED:
            return
        with self._mutex:
            if domid not in self._loaded().index:
                return
        try:
            with self._update(domid) as (_, rec, now):
                guest.medium_changed(rec, now, "vbd", devid, params)
        except HypervisorError:
            pass

    def guest_devices(self, domid: int) -> Dict[str, List[str]]:
        """The disks and nics the guest sees now (``xend-sim devices``)."""
        rec, _ = self._settled(domid)
        return guest.guest_devices(rec)

    def _request_shutdown(self, domid: int, reason: int) -> None:
        """The guest sees the request; a cooperative one acts on it after its delay."""
        with self._lock:
            if domid == 0 or domid not in self._loaded().index:
                return
            with self._update(domid) as (_, rec, now):
                if not rec["shutdown"]:
                    rec["request"] = [reason, now]

    def store_list(self, path: str) -> List[str]:
        return self._store.list(path)

    def store_rm(self, path: str) -> None:
        self._store.rm(path)

    # -- memory image --------------------------------------------------------------------------
    def nr_pages(self, domid: int) -> int:
        return self._guest(domid)[0]["mem_kib"] // 4

    def read_pages(self, domid: int, pfns: Iterable[int]) -> Iterator[Tuple[int, bytes]]:
        read = self.page_reader(domid)      # fail now, not at the first next()
        return self._iter_pages(read, iter(pfns))

    @staticmethod
    def _iter_pages(read, pfns: Iterator[int]) -> Iterator[Tuple[int, bytes]]:
        while True:
            batch = list(itertools.islice(pfns, _READ_BATCH))
            if not batch:
                return
            data = read(batch)
            yield from zip(batch, [data[o:o + PAGE_SIZE] for o in range(0, len(data), PAGE_SIZE)])

    def page_reader(self, domid: int) -> Callable[[Sequence[int]], bytes]:
        self._guest(domid)
        stored_pages = self._stored(domid)
        written = stored_pages.bitmap()
        table = stored_pages.generations(len(written) * 8) if any(written) else None
        written_k = self._aux(domid)["written_k"]

        def read(batch: Sequence[int]) -> bytes:
            rec, now = self._guest(domid)       # a running guest keeps writing meanwhile
            n, k, dmap = rec["mem_kib"] // 4, guest.dirty_events(rec, now), self._map(rec)
            check_pfns(batch, n)
            gens: List[Optional[int]] = dmap.generations(batch, k)   # type: ignore[assignment]
            if table is not None:
                nbits, moved = len(written) * 8, k > written_k
                for i, pfn in enumerate(batch):
                    if pfn < nbits and written[pfn >> 3] >> (pfn & 7) & 1 and \
                            not (moved and dmap.written_between(pfn, written_k, k)):
                        gen = table[pfn]
                        gens[i] = gen - 1 if gen else None
            return stored_pages.read(rec["uuid"], batch, gens)
        return read

    def write_pages(self, domid: int, pages: Iterable[Tuple[int, bytes]]) -> None:
        self.write_page_batches(domid, (((pfn,), memoryview(data)) for pfn, data in pages))

    def write_page_batches(self, domid: int,
                           batches: Iterable[Tuple[Sequence[int], memoryview]]) -> None:
        rec, _ = self._guest(domid)
        stored_pages = self._stored(domid)
        new_bits = stored_pages.store(rec["uuid"], rec["mem_kib"] // 4, batches)
        with self._lock:
            rec, now = self._guest(domid)
            k = guest.dirty_events(rec, now)
            aux = self._aux(domid)
            # pages stored earlier that the guest has overwritten since are stale
            stale = self._map(rec).dirtied(aux["written_k"], k) if k > aux["written_k"] else ()
            stored_pages.publish(new_bits, stale)
            aux["written_k"] = k
            self._save_aux(domid, aux)

    def enable_dirty_log(self, domid: int, enable: bool) -> None:
        with self._lock:
            rec, now = self._guest(domid)
            aux = self._aux(domid)
            aux["dirty_k"] = guest.dirty_events(rec, now) if enable else None
            self._save_aux(domid, aux)

    def read_dirty_pages(self, domid: int) -> List[int]:
        with self._lock:
            rec, now = self._guest(domid)
            aux = self._aux(domid)
            if aux["dirty_k"] is None:
                raise _error(errno.EINVAL, "dirty logging is not enabled")
            k = guest.dirty_events(rec, now)
            n = rec["mem_kib"] // 4
            pfns = sorted(p for p in self._map(rec).dirtied(aux["dirty_k"], k) if p < n)
            aux["dirty_k"] = k
            self._save_aux(domid, aux)
            return pfns

    def _guest(self, domid: int) -> Tuple[dict, float]:
        """Settled record of a guest (not dom0, whose memory is not ours to move)."""
        if domid == 0:
            raise _error(errno.EINVAL, "not permitted on Domain-0")
        return self._settled(domid)

    def _map(self, rec: dict) -> DirtyMap:
        _, wss = guest.dirty_params(rec)
        key = (rec["uuid"], rec["map_pages"], wss)
        dmap = self._maps.get(key)
        if dmap is None:
            if len(self._maps) > 4096:
                self._maps.clear()
            dmap = self._maps[key] = DirtyMap(*key)
        return dmap

    # -- per-domain files ----------------------------------------------------------------------
    def _aux_dir(self, domid: int) -> str:
        return os.path.join(self._dir, "dom", str(domid))

    def _stored(self, domid: int) -> StoredPages:
        return StoredPages(self._aux_dir(domid))

    def _reset_aux(self, domid: int) -> None:
        shutil.rmtree(self._aux_dir(domid), ignore_errors=True)
        os.makedirs(self._aux_dir(domid), mode=0o700)
        self._save_aux(domid, {"console_pos": 0, "dirty_k": None, "written_k": 0})

    def _aux(self, domid: int) -> dict:
        aux = read_json(os.path.join(self._aux_dir(domid), "aux.json"))
        if aux is None:
            raise _error(errno.ESRCH)
        return aux

    def _save_aux(self, domid: int, aux: dict) -> None:
        write_json(os.path.join(self._aux_dir(domid), "aux.json"), aux)

    # -- console and events --------------------------------------------------------------------
    def read_console(self, domid: int) -> bytes:
        if domid == 0:
            self._settled(0)
            return b""
        rec, now = self._settled(domid)
        # the event thread asks for every domain at every look: a guest that printed nothing
        # since our last read is answered without the lock or its aux file
        key = (domid, rec["created"])
        if guest.console_line_count(rec, now) <= self._console_read.get(key, -1):
            return b""
        with self._lock:
            rec, now = self._settled(domid)
            aux = self._aux(domid)
            count = guest.console_line_count(rec, now)
            if len(self._console_read) > 4 * len(self._loaded().index) + 64:
                self._console_read.clear()
            self._console_read[key] = max(count, aux["console_pos"])
            if count <= aux["console_pos"]:
                return b""
            lines = guest.console_lines(rec, aux["console_pos"], count)
            aux["console_pos"] = count
            self._save_aux(domid, aux)
            return "".join(lines).encode()

    def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._mutex:
                table = self._loaded()
                doc = table.doc
                now = time.time()
                due = table.due_times()
                changed = (doc["serial"] != self._seen_serial
                           or any(self._seen_time < t <= now for t in due))
                remaining = deadline - time.monotonic()
                if changed or remaining <= 0:
                    self._seen_serial, self._seen_time = doc["serial"], now
                    return changed
                upcoming = [t - now for t in due if t > now]
            if self._nap(max(0.001, min([self._poll, remaining] + upcoming))):
                return False

    def close(self) -> None:
        with self._mutex:
            self._table.close()
            self._lock.close()


def _check_kib(kib: int) -> None:
    if not isinstance(kib, int) or kib <= 0:
        raise _error(errno.EINVAL, f"bad memory size {kib!r}")
