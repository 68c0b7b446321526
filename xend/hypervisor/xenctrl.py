"""The real backend: libxenctrl 4.17 and libxenstore through ctypes (declarations: libxen),
and libxenlight for what a toolstack library does (``libxl_toolstack``).

libxenctrl answers the hypervisor calls (host info, the domain list, pause, memory, vcpus,
affinity, scheduler, core dumps); xenstore is read and written through libxenstore. Building
a guest (memory, kernel, xenstore directories, console, devices with their hotplug scripts)
and destroying it with everything set up for it go through libxl, checked first against
what this host has (``hostcheck``). Guest consoles are served by xenconsoled, so
``read_console`` raises ENOSYS (``xm console`` runs xenconsoled's client, as the original).

The control handle is opened in the constructor: construct after daemonizing (a handle must
not be used across fork; we check the pid). The libxl context is opened on first use.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import threading
import time
import uuid as uuidlib
from ctypes import byref, c_char_p, c_int, c_uint, c_uint8, c_uint32, create_string_buffer
from typing import Iterable, Iterator, List, Optional, Tuple

from ..errors import HypervisorError
from . import libxen as X
from .base import (SHUTDOWN_CRASH, SHUTDOWN_NAMES, SHUTDOWN_SUSPEND, TRIGGERS, CpuPoolInfo,
                   DeviceSpec, DomainInfo, DomainSpec,
                   Hypervisor, PhysInfo, VcpuInfo, VersionInfo)
from .hostcheck import HostLayout, problems

if False:  # annotations only
    from .libxl_toolstack import LibxlToolstack

log = logging.getLogger("xend.xenctrl")

_LIST_CHUNK = 256
_CONSOLE_RING_MAX = 1 << 20
_POLL_SECONDS = 0.25
_DYING_WAIT = 10.0          # seconds a destroy waits for Xen to release the domain
#: what libxl adds to a domain's memory limit (LIBXL_MAXMEM_CONSTANT, 1 MiB)
MAXMEM_SLACK_KIB = 1024
BLOCK_CLASSES = ("vbd", "tap", "tap2")
PCIBACK = "/sys/bus/pci/drivers/pciback"
_NOT_WITHOUT_LIBXENGUEST = ("moving a real domain's memory needs libxenguest (xc_domain_save/"
                            "xc_domain_restore), which the xenctrl backend does not bind")


class XenctrlHypervisor(Hypervisor):
    name = "xenctrl"
    device_backends = True
    builds_devices = True
    console_server = "xenconsoled"
    image_kind = "stream"
    stream_format = "libxl-v2"

    def __init__(self) -> None:
        self._xc = X.load_xenctrl()
        self._libc = X.load_libc()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        handle = self._xc.xc_interface_open(None, None, 0)
        if not handle:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                raise HypervisorError(errno.ENOENT, "no Xen hypervisor on this host")
            raise HypervisorError(err, "cannot open the Xen control interface: "
                                       + os.strerror(err))
        self._xch = handle
        self._xs_lib: Optional[ctypes.CDLL] = None
        self._xsh: Optional[int] = None
        self._last_seen: Optional[tuple] = None
        self._xg: Optional[ctypes.CDLL] = None        # libxenguest, loaded when needed
        self._toolstack_lock = threading.Lock()
        self._toolstack_obj: Optional["LibxlToolstack"] = None
        self._layout: Optional[HostLayout] = None

    def _toolstack(self) -> "LibxlToolstack":
        """The libxl context, opened on first use (HypervisorError if libxl is missing)."""
        self._check_process()
        with self._toolstack_lock:
            if self._toolstack_obj is None:
                from .libxl_toolstack import LibxlToolstack
                self._toolstack_obj = LibxlToolstack()
            return self._toolstack_obj

    def host_layout(self) -> HostLayout:
        if self._layout is None:
            packed = self._call("xc_version", X.XENVER_version, None)
            self._layout = HostLayout(packed >> 16, packed & 0xFFFF)
        return self._layout

    # -- calling conventions -------------------------------------------------------------------
    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise HypervisorError(errno.EINVAL, "Xen handle used across fork(); open a new one")

    def _call(self, name: str, *args: object, lib: Optional[ctypes.CDLL] = None) -> int:
        """Call ``name(xch, *args)`` (of libxenctrl, or of ``lib``, which works on the same
        handle); a negative result raises HypervisorError."""
        self._check_process()
        func = getattr(lib or self._xc, name)
        with self._lock:
            self._xc.xc_clear_last_error(self._xch)
            rc = func(self._xch, *args)
            if rc >= 0:
                return rc
            err = ctypes.get_errno() or errno.EINVAL
            last = self._xc.xc_get_last_error(self._xch)
            detail = last.contents.message.decode(errors="replace").strip() if last else ""
        message = os.strerror(err)
        raise HypervisorError(err, f"{message} ({detail})" if detail else message)

    # -- host ----------------------------------------------------------------------------------
    def _physinfo_raw(self) -> X.xc_physinfo_t:
        info = X.xc_physinfo_t()
        self._call("xc_physinfo", byref(info))
        return info

    def physinfo(self) -> PhysInfo:
        info = self._physinfo_raw()
        return PhysInfo(nr_cpus=info.nr_cpus, nr_nodes=info.nr_nodes,
                        cores_per_socket=info.cores_per_socket,
                        threads_per_core=info.threads_per_core, cpu_khz=info.cpu_khz,
                        hw_caps=":".join("%08x" % word for word in info.hw_cap),
                        virt_caps=virt_caps(info.capabilities),
                        total_kib=info.total_pages * 4,
                        free_kib=info.free_pages * 4, scrub_kib=info.scrub_pages * 4)

    def topology(self) -> List[Tuple[int, int, int]]:
        """libxenctrl's CPU topology (a CPU not there: its numbers as -1)."""
        count = c_uint(0)
        self._call("xc_cputopoinfo", byref(count), None)
        cpus = (X.xc_cputopo_t * count.value)()
        self._call("xc_cputopoinfo", byref(count), cpus)
        return [tuple(-1 if v == X.XEN_INVALID_ID else v for v in (c.core, c.socket, c.node))
                for c in cpus[:count.value]]

    def numa_info(self) -> List[Tuple[int, int, int, List[int]]]:
        count = c_uint(0)
        self._call("xc_numainfo", byref(count), None, None)
        n = count.value
        mem = (X.xc_meminfo_t * n)()
        dist = (c_uint32 * (n * n))()
        self._call("xc_numainfo", byref(count), mem, dist)
        return [(m.memsize // 1024, m.memfree // 1024, min(m.memsize // 1024, 4 << 20),
                 [dist[i * n + j] for j in range(n)]) for i, m in enumerate(mem[:n])]

    def version(self) -> VersionInfo:
        packed = self._call("xc_version", X.XENVER_version, None)
        compile_info = X.xen_compile_info_t()
        self._call("xc_version", X.XENVER_compile_info, byref(compile_info))
        params = X.xen_platform_parameters_t()
        self._call("xc_version", X.XENVER_platform_parameters, byref(params))
        sched = c_int(0)
        self._call("xc_sched_id", byref(sched))
        return VersionInfo(
            major=packed >> 16, minor=packed & 0xFFFF,
            extra=self._version_string(X.XENVER_extraversion, 16),
            capabilities=self._version_string(X.XENVER_capabilities, 1024),
            changeset=self._version_string(X.XENVER_changeset, 64),
            pagesize=self._call("xc_version", X.XENVER_pagesize, None),
            commandline=self._version_string(X.XENVER_commandline, 1024),
            scheduler=X.XEN_SCHEDULERS.get(sched.value, str(sched.value)),
            cc_compiler=compile_info.compiler.decode(errors="replace"),
            cc_compile_by=compile_info.compile_by.decode(errors="replace"),
            cc_compile_domain=compile_info.compile_domain.decode(errors="replace"),
            cc_compile_date=compile_info.compile_date.decode(errors="replace"),
            platform_params="virt_start=0x%x" % params.virt_start)

    def _version_string(self, cmd: int, size: int) -> str:
        buf = create_string_buffer(size)
        self._call("xc_version", cmd, buf)
        return buf.value.decode(errors="replace")

    def read_console_ring(self, clear: bool = False) -> str:
        buf = create_string_buffer(_CONSOLE_RING_MAX)
        count = c_uint(_CONSOLE_RING_MAX)
        index = c_uint32(0)
        self._call("xc_readconsolering", buf, byref(count), int(clear), 0, byref(index))
        return buf.raw[:count.value].decode(errors="replace")

    # -- domains -------------------------------------------------------------------------------
    def list_domains(self) -> List[DomainInfo]:
        result: List[DomainInfo] = []
        first = 0
        while first < X.DOMID_FIRST_RESERVED:
            chunk = (X.xc_domaininfo_t * _LIST_CHUNK)()
            count = self._call("xc_domain_getinfolist", first, _LIST_CHUNK, chunk)
            result.extend(_domain_info(chunk[i]) for i in range(count))
            if count < _LIST_CHUNK:
                break
            first = chunk[count - 1].domain + 1
        return result

    def domain_info(self, domid: int) -> DomainInfo:
        # in 4.17 getdomaininfo answers with the next domain when ``domid`` does not exist
        one = (X.xc_domaininfo_t * 1)()
        count = self._call("xc_domain_getinfolist", _domid(domid), 1, one)
        if count != 1 or one[0].domain != domid:
            raise HypervisorError(errno.ESRCH, os.strerror(errno.ESRCH))
        return _domain_info(one[0])

    def create_domain(self, spec: DomainSpec) -> int:
        """Build the guest through libxl, paused, after checking that this host has what it
        needs (nothing is built when it has not)."""
        spec = self._buildable(spec)
        return self._limit_memory(self._built(lambda: self._toolstack().create(spec)), spec)

    def restore_stream(self, spec: DomainSpec, fd: int) -> int:
        """Build the guest from its libxl stream on ``fd``, paused, checked as a create."""
        spec = self._buildable(spec)
        return self._limit_memory(self._built(lambda: self._toolstack().restore(spec, fd)),
                                  spec)

    def save_stream(self, domid: int, fd: int, live: bool) -> None:
        self._toolstack().save(_domid(domid), fd, live)

    def check_movable(self, domid: int, live: bool) -> None:
        """A live move tracks the pages the guest writes (log-dirty): for a PV guest Xen
        does that with shadow paging, which a Xen may be built without (Debian's 4.17 is);
        HVM and PVH guests use HAP."""
        if not live:
            return
        info = self.domain_info(domid)
        if not info.hvm and not self._physinfo_raw().capabilities & X.XEN_SYSCTL_PHYSCAP_shadow:
            raise HypervisorError(errno.EOPNOTSUPP,
                                  "live migration of a PV guest needs Xen's shadow paging "
                                  "(log-dirty mode), which this hypervisor was built without "
                                  "(xl info: virt_caps has no shadow); migrate it without "
                                  "--live, or run the guest as PVH")

    def resume_saved(self, domid: int) -> None:
        """A domain a save suspended runs on (libxl's resume); one only paused is
        unpaused."""
        info = self.domain_info(domid)
        if info.shutdown and info.shutdown_reason == SHUTDOWN_SUSPEND:
            self._toolstack().resume(domid)
        elif info.paused:
            self.unpause(domid)

    def _buildable(self, spec: DomainSpec) -> DomainSpec:
        try:
            uuidlib.UUID(spec.uuid)
        except (ValueError, TypeError, AttributeError):
            raise HypervisorError(errno.EINVAL, f"bad uuid {spec.uuid!r}") from None
        if not 0 < spec.memory_kib <= spec.maxmem_kib or spec.vcpus < 1:
            raise HypervisorError(errno.EINVAL, "bad memory or vcpu count")
        layout = self.host_layout()
        missing = problems(spec, layout)
        if missing:
            raise HypervisorError(errno.ENOENT, "; ".join(missing))
        if spec.memory_kib > self._physinfo_raw().free_pages * 4:
            raise HypervisorError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        if spec.bootloader:
            spec = dataclasses.replace(spec, bootloader=layout.bootloader(spec.bootloader))
        return spec

    @staticmethod
    def _built(build) -> int:
        from .libxl_config import LibxlConfigError
        try:
            return build()
        except LibxlConfigError as e:
            raise HypervisorError(errno.EINVAL, str(e)) from None

    def _limit_memory(self, domid: int, spec: DomainSpec) -> int:
        """libxl caps a domain at its target (+1 MiB); xend's maxmem is the ceiling the
        guest's balloon may grow to (xm mem-set up to maxmem), as the original set it."""
        try:
            self._call("xc_domain_setmaxmem", domid, spec.maxmem_kib + MAXMEM_SLACK_KIB)
        except HypervisorError:
            self.destroy(domid)
            raise
        return domid

    def memory_needed_kib(self, spec: DomainSpec) -> int:
        try:
            return max(self._toolstack().memory_needed_kib(spec),
                       super().memory_needed_kib(spec))
        except HypervisorError as e:
            log.debug("libxl cannot size %s (%s); counting its memory only", spec.name, e)
            return super().memory_needed_kib(spec)

    def native_config(self, domid: int) -> Optional[DomainSpec]:
        from .libxl_config import spec_from_config
        try:
            cfg = self._toolstack().configuration(_domid(domid))
        except HypervisorError:
            return None
        if not cfg:
            return None
        try:
            return spec_from_config(cfg)
        except (TypeError, ValueError, AttributeError) as e:
            log.warning("domain %d: libxl's configuration is unusable: %s", domid, e)
            return None

    # -- devices of a running domain: libxl's hot-plug ----------------------------------------
    def attach_device(self, domid: int, dev: DeviceSpec, hvm: bool = False) -> None:
        """Through libxl, which runs dom0's hotplug script and waits for the backend; the
        host is checked first (the disk's file, the vif's bridge and script)."""
        from .hostcheck import device_problems
        from .libxl_config import LibxlConfigError
        missing = device_problems(dev, self.host_layout())
        if missing:
            raise HypervisorError(errno.ENOENT, "; ".join(m.replace("its ", "the ", 1)
                                                          for m in missing))
        ts = self._toolstack()
        try:
            if dev.cls in BLOCK_CLASSES:
                ts.add_disk(_domid(domid), dev)
            elif dev.cls == "vif":
                (ts.add_nic_hvm if hvm else ts.add_nic)(_domid(domid), dev)
            elif dev.cls == "pci":
                ts.add_pci(_domid(domid), dev)
            else:
                raise HypervisorError(errno.ENOSYS, f"{dev.cls} devices cannot be added to a "
                                                    f"running domain")
        except LibxlConfigError as e:
            raise HypervisorError(errno.EINVAL, str(e)) from None

    def detach_device(self, domid: int, dev: DeviceSpec, force: bool = False) -> None:
        from .libxl_config import LibxlConfigError
        ts = self._toolstack()
        try:
            if dev.cls in BLOCK_CLASSES:
                ts.remove_disk(_domid(domid), dev, force)
            elif dev.cls == "vif":
                ts.remove_nic(_domid(domid), dev, force)
            elif dev.cls == "pci":
                ts.remove_pci(_domid(domid), dev, force)
            else:
                raise HypervisorError(errno.ENOSYS, f"{dev.cls} devices cannot be removed "
                                                    f"from a running domain")
        except LibxlConfigError as e:
            raise HypervisorError(errno.EINVAL, str(e)) from None

    def configure_device(self, domid: int, dev: DeviceSpec) -> None:
        """A cdrom's new medium through ``libxl_cdrom_insert`` (qemu's, for an HVM guest)."""
        from .hostcheck import device_problems
        from .libxl_config import LibxlConfigError
        missing = device_problems(dev, self.host_layout())
        if missing:
            raise HypervisorError(errno.ENOENT, "; ".join(missing))
        try:
            self._toolstack().insert_cdrom(_domid(domid), dev)
        except LibxlConfigError as e:
            raise HypervisorError(errno.EINVAL, str(e)) from None

    def pci_assignable(self) -> Optional[List[str]]:
        """The devices bound to dom0's pciback driver (xen-pciback), as ``xl
        pci-assignable-list`` lists them."""
        return pciback_devices()

    def send_trigger(self, domid: int, trigger: str, vcpu: int = 0) -> None:
        if trigger not in TRIGGERS:
            raise HypervisorError(errno.EINVAL, f"unknown trigger {trigger!r}")
        self._toolstack().send_trigger(_domid(domid), trigger, vcpu)

    def send_debug_keys(self, keys: str) -> None:
        self._toolstack().send_debug_keys(keys)

    def pause(self, domid: int) -> None:
        self._call("xc_domain_pause", _domid(domid))

    def unpause(self, domid: int) -> None:
        self._call("xc_domain_unpause", _domid(domid))

    def shutdown(self, domid: int, reason: int) -> None:
        if reason not in SHUTDOWN_NAMES:
            raise HypervisorError(errno.EINVAL, f"bad shutdown reason {reason!r}")
        self._call("xc_domain_shutdown", _domid(domid), reason)

    def destroy(self, domid: int) -> None:
        """Through libxl (devices, hotplug scripts, loop devices, xenstore go with it); if
        libxl cannot, the hypervisor call, so the domain never outlives a destroy."""
        domid = _domid(domid)
        self.domain_info(domid)                 # ESRCH for a domain that is not there
        try:
            self._toolstack().destroy(domid)
        except HypervisorError as e:
            log.warning("libxl could not destroy domain %d (%s); destroying it directly",
                        domid, e)
            try:
                self._call("xc_domain_destroy", domid)
            except HypervisorError as e2:
                if e2.errno != errno.ESRCH:
                    raise
        # a destroyed domain lingers while Xen releases its memory: wait until it is gone
        deadline = time.monotonic() + _DYING_WAIT
        while time.monotonic() < deadline:
            try:
                self.domain_info(domid)
            except HypervisorError as e:
                if e.errno == errno.ESRCH:
                    return
                raise
            time.sleep(0.1)
        log.warning("domain %d is still dying %g s after its destroy", domid, _DYING_WAIT)

    def dump_core(self, domid: int, path: str, header: dict) -> None:
        """libxenctrl's ELF core of the domain, as the original wrote it."""
        if self._xg is None:
            self._xg = X.load_xenguest()
        self._call("xc_domain_dumpcore", _domid(domid), os.fsencode(path), lib=self._xg)
        os.chmod(path, 0o600)

    def set_max_memory(self, domid: int, kib: int) -> None:
        self._call("xc_domain_setmaxmem", _domid(domid), _kib(kib))

    def set_memory_target(self, domid: int, kib: int) -> None:
        """As xend did: the balloon driver in the guest follows ``memory/target`` (KiB)."""
        current = self.domain_info(domid).mem_kib
        if _kib(kib) - current > self.physinfo().free_kib:
            raise HypervisorError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        self.store_write(f"/local/domain/{domid}/memory/target", str(kib))

    def set_vcpus_online(self, domid: int, count: int) -> None:
        """As xend did: the guest hot(un)plugs vcpus following ``cpu/<n>/availability``."""
        max_vcpus = self.domain_info(domid).max_vcpu_id + 1
        if not isinstance(count, int) or not 0 < count <= max_vcpus:
            raise HypervisorError(errno.EINVAL, f"bad vcpu count {count!r}")
        for vcpu in range(max_vcpus):
            self.store_write(f"/local/domain/{domid}/cpu/{vcpu}/availability",
                             "online" if vcpu < count else "offline")

    def vcpu_info(self, domid: int) -> List[VcpuInfo]:
        info = self.domain_info(domid)
        nr_cpus = self.physinfo().nr_cpus
        size = self._call("xc_get_cpumap_size")
        result = []
        for vcpu in range(info.max_vcpu_id + 1):
            raw = X.xc_vcpuinfo_t()
            self._call("xc_vcpu_getinfo", domid, vcpu, byref(raw))
            hard, soft = (c_uint8 * size)(), (c_uint8 * size)()
            self._call("xc_vcpu_getaffinity", domid, vcpu, hard, soft, X.XEN_VCPUAFFINITY_HARD)
            affinity = [c for c in range(min(nr_cpus, size * 8)) if hard[c >> 3] >> (c & 7) & 1]
            result.append(VcpuInfo(number=vcpu, online=bool(raw.online),
                                   blocked=bool(raw.blocked), running=bool(raw.running),
                                   cpu_time_ns=raw.cpu_time,
                                   cpu=raw.cpu if raw.online else -1, affinity=affinity))
        return result

    def set_vcpu_affinity(self, domid: int, vcpu: int, cpus: List[int]) -> None:
        size = self._call("xc_get_cpumap_size")
        nr_cpus = self.physinfo().nr_cpus
        if not cpus or not all(isinstance(c, int) and 0 <= c < min(nr_cpus, size * 8)
                               for c in cpus):
            raise HypervisorError(errno.EINVAL, f"bad cpu list {cpus!r}")
        hard, soft = (c_uint8 * size)(), (c_uint8 * size)()
        for c in cpus:
            hard[c >> 3] |= 1 << (c & 7)
        self._call("xc_vcpu_setaffinity", _domid(domid), vcpu, hard, soft,
                   X.XEN_VCPUAFFINITY_HARD)

    def _credit_api(self) -> Tuple[str, type]:
        """The weight/cap calls of the host's scheduler: credit2 (Xen 4.17's default) has
        its own, with the same two settings."""
        sched = c_int(0)
        self._call("xc_sched_id", byref(sched))
        if sched.value == X.XEN_SCHEDULER_CREDIT2:
            return "xc_sched_credit2_domain", X.xen_domctl_sched_credit2
        return "xc_sched_credit_domain", X.xen_domctl_sched_credit

    def sched_credit_get(self, domid: int) -> Tuple[int, int]:
        prefix, struct = self._credit_api()
        params = struct()
        self._call(prefix + "_get", _domid(domid), byref(params))
        return params.weight, params.cap

    def sched_credit_set(self, domid: int, weight: int, cap: int) -> None:
        # Xen reads weight 0 as "unchanged"; the interface wants an explicit value
        if not (isinstance(weight, int) and 1 <= weight <= 65535
                and isinstance(cap, int) and 0 <= cap <= 65535):
            raise HypervisorError(errno.EINVAL, f"bad credit weight/cap {weight!r}/{cap!r}")
        prefix, struct = self._credit_api()
        params = struct(weight=weight, cap=cap)
        self._call(prefix + "_set", _domid(domid), byref(params))

    def sched_credit2_get(self, domid: int) -> int:
        params = X.xen_domctl_sched_credit2()
        self._call("xc_sched_credit2_domain_get", _domid(domid), byref(params))
        return params.weight

    def sched_credit2_set(self, domid: int, weight: int) -> None:
        if not (isinstance(weight, int) and 1 <= weight <= 65535):
            raise HypervisorError(errno.EINVAL, f"bad credit2 weight {weight!r}")
        params = X.xen_domctl_sched_credit2()
        self._call("xc_sched_credit2_domain_get", _domid(domid), byref(params))
        params.weight = weight
        self._call("xc_sched_credit2_domain_set", _domid(domid), byref(params))

    # -- CPU pools (libxenctrl) -----------------------------------------------------------------
    def cpupool_list(self) -> List[CpuPoolInfo]:
        self._check_process()
        size = self._call("xc_get_cpumap_size")
        pools: List[CpuPoolInfo] = []
        poolid = 0
        while True:
            with self._lock:
                ptr = self._xc.xc_cpupool_getinfo(self._xch, poolid)
            if not ptr:
                break
            try:
                info = ptr.contents
                cpus = [c for c in range(size * 8) if info.cpumap[c >> 3] >> (c & 7) & 1]
                pools.append(CpuPoolInfo(info.cpupool_id,
                                         X.XEN_SCHEDULERS.get(info.sched_id,
                                                              str(info.sched_id)), cpus))
                poolid = info.cpupool_id + 1
            finally:
                with self._lock:
                    self._xc.xc_cpupool_infofree(self._xch, ptr)
        by_id = {p.poolid: p for p in pools}
        for d in self.list_domains():
            if d.cpupool in by_id:
                by_id[d.cpupool].domids.append(d.domid)
        return pools

    def cpupool_create(self, scheduler: str) -> int:
        if scheduler not in X.XEN_SCHEDULER_IDS:
            raise HypervisorError(errno.EINVAL, f"unknown scheduler {scheduler!r}")
        poolid = c_uint32(0xFFFFFFFF)           # XC_CPUPOOL_POOLID_ANY
        self._call("xc_cpupool_create", byref(poolid), X.XEN_SCHEDULER_IDS[scheduler])
        return poolid.value

    def cpupool_destroy(self, poolid: int) -> None:
        self._call("xc_cpupool_destroy", poolid)

    def cpupool_add_cpu(self, poolid: int, cpu: int) -> None:
        self._call("xc_cpupool_addcpu", poolid, cpu)

    def cpupool_remove_cpu(self, poolid: int, cpu: int) -> None:
        self._call("xc_cpupool_removecpu", poolid, cpu)

    def cpupool_move_domain(self, poolid: int, domid: int) -> None:
        self._call("xc_cpupool_movedomain", poolid, _domid(domid))

    # -- the store (xenstored through libxenstore) ---------------------------------------------
    def _xs(self) -> Tuple[ctypes.CDLL, int]:
        self._check_process()
        with self._lock:
            if self._xsh is None:
                lib = X.load_xenstore()
                handle = lib.xs_open(0)
                if not handle:
                    err = ctypes.get_errno() or errno.ECONNREFUSED
                    raise HypervisorError(err, "cannot connect to xenstored: " + os.strerror(err))
                self._xs_lib, self._xsh = lib, handle
            return self._xs_lib, self._xsh

    def store_read(self, path: str) -> Optional[str]:
        lib, h = self._xs()
        length = c_uint(0)
        ptr = lib.xs_read(h, X.XBT_NULL, path.encode(), byref(length))
        if not ptr:
            return _store_missing(ctypes.get_errno(), path, None)
        try:
            return ctypes.string_at(ptr, length.value).decode(errors="replace")
        finally:
            self._libc.free(ptr)

    def store_write(self, path: str, value: str) -> None:
        lib, h = self._xs()
        data = value.encode()
        if not lib.xs_write(h, X.XBT_NULL, path.encode(), data, len(data)):
            err = ctypes.get_errno() or errno.EIO
            raise HypervisorError(err, f"store write {path}: {os.strerror(err)}")

    def store_list(self, path: str) -> List[str]:
        lib, h = self._xs()
        count = c_uint(0)
        ptr = lib.xs_directory(h, X.XBT_NULL, path.encode(), byref(count))
        if not ptr:
            return _store_missing(ctypes.get_errno(), path, [])
        try:
            names = ctypes.cast(ptr, ctypes.POINTER(c_char_p))
            return [names[i].decode(errors="replace") for i in range(count.value)]
        finally:
            self._libc.free(ptr)        # one block: the array and its strings

    def store_rm(self, path: str) -> None:
        lib, h = self._xs()
        if not lib.xs_rm(h, X.XBT_NULL, path.encode()):
            _store_missing(ctypes.get_errno(), path, None)

    # -- memory image, console: not with libxenctrl alone --------------------------------------
    def nr_pages(self, domid: int) -> int:
        return self.domain_info(domid).mem_kib // 4

    def read_pages(self, domid: int, pfns: Iterable[int]) -> Iterator[Tuple[int, bytes]]:
        raise HypervisorError(errno.ENOSYS, _NOT_WITHOUT_LIBXENGUEST)

    def write_pages(self, domid: int, pages: Iterable[Tuple[int, bytes]]) -> None:
        raise HypervisorError(errno.ENOSYS, _NOT_WITHOUT_LIBXENGUEST)

    def enable_dirty_log(self, domid: int, enable: bool) -> None:
        raise HypervisorError(errno.ENOSYS, _NOT_WITHOUT_LIBXENGUEST)

    def read_dirty_pages(self, domid: int) -> List[int]:
        raise HypervisorError(errno.ENOSYS, _NOT_WITHOUT_LIBXENGUEST)

    def read_console(self, domid: int) -> bytes:
        raise HypervisorError(errno.ENOSYS, "guest consoles are served by xenconsoled")

    def wait_for_change(self, timeout: float) -> bool:
        # Polling the domain list; a xenstore watch on @releaseDomain/@introduceDomain would
        # wake sooner but needs xenstored's cooperation for every state change anyway.
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            snapshot = tuple((d.domid, d.state_string, d.shutdown_reason)
                             for d in self.list_domains())
            if self._last_seen is None:
                self._last_seen = snapshot
            if snapshot != self._last_seen:
                self._last_seen = snapshot
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._nap(min(_POLL_SECONDS, remaining)):
                return False

    def close(self) -> None:
        with self._lock:
            if os.getpid() != self._pid:
                return
            if self._xsh is not None:
                self._xs_lib.xs_close(self._xsh)
                self._xsh = None
            if self._xch:
                self._xc.xc_interface_close(self._xch)
                self._xch = None


def pciback_devices(driver: str = PCIBACK) -> Optional[List[str]]:
    """``DDDD:BB:SS.F`` of the PCI devices bound to pciback; None without the driver."""
    try:
        names = os.listdir(driver)
    except OSError:
        return None
    found = [n for n in names if len(n) == 12 and n[4] == ":" and n[7] == ":" and n[10] == "."]
    return sorted(found)


def virt_caps(capabilities: int) -> str:
    """The host's virtualisation features, named and ordered as ``xl info`` shows them."""
    c = capabilities
    names = [("pv", c & X.XEN_SYSCTL_PHYSCAP_pv), ("hvm", c & X.XEN_SYSCTL_PHYSCAP_hvm),
             ("hvm_directio", c & X.XEN_SYSCTL_PHYSCAP_hvm and c & X.XEN_SYSCTL_PHYSCAP_directio),
             ("pv_directio", c & X.XEN_SYSCTL_PHYSCAP_pv and c & X.XEN_SYSCTL_PHYSCAP_directio),
             ("hap", c & X.XEN_SYSCTL_PHYSCAP_hap), ("shadow", c & X.XEN_SYSCTL_PHYSCAP_shadow),
             ("iommu_hap_pt_share", c & X.XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share),
             ("vmtrace", c & X.XEN_SYSCTL_PHYSCAP_vmtrace),
             ("vpmu", c & X.XEN_SYSCTL_PHYSCAP_vpmu),
             ("gnttab-v1", c & X.XEN_SYSCTL_PHYSCAP_gnttab_v1),
             ("gnttab-v2", c & X.XEN_SYSCTL_PHYSCAP_gnttab_v2)]
    return " ".join(name for name, present in names if present)


def _domid(domid: int) -> int:
    if not isinstance(domid, int) or not 0 <= domid < X.DOMID_FIRST_RESERVED:
        raise HypervisorError(errno.EINVAL, f"bad domain id {domid!r}")
    return domid


def _kib(kib: int) -> int:
    if not isinstance(kib, int) or kib <= 0:
        raise HypervisorError(errno.EINVAL, f"bad memory size {kib!r}")
    return kib


def _store_missing(err: int, path: str, missing: object):
    """What a failed store call means: ``missing`` when the node does not exist."""
    if err == errno.ENOENT:
        return missing
    err = err or errno.EIO
    raise HypervisorError(err, f"store {path}: {os.strerror(err)}")


def _domain_info(raw: X.xc_domaininfo_t) -> DomainInfo:
    flags = raw.flags
    is_shutdown = bool(flags & X.XEN_DOMINF_shutdown)
    reason = (flags >> X.XEN_DOMINF_shutdownshift) & X.XEN_DOMINF_shutdownmask
    crashed = is_shutdown and reason == SHUTDOWN_CRASH
    return DomainInfo(
        domid=raw.domain, uuid=str(uuidlib.UUID(bytes=bytes(raw.handle))),
        dying=bool(flags & X.XEN_DOMINF_dying), crashed=crashed,
        shutdown=is_shutdown and not crashed, paused=bool(flags & X.XEN_DOMINF_paused),
        blocked=bool(flags & X.XEN_DOMINF_blocked), running=bool(flags & X.XEN_DOMINF_running),
        hvm=bool(flags & X.XEN_DOMINF_hvm_guest),
        shutdown_reason=reason if is_shutdown else 0,
        mem_kib=raw.tot_pages * 4, maxmem_kib=raw.max_pages * 4, cpu_time_ns=raw.cpu_time,
        online_vcpus=raw.nr_online_vcpus, max_vcpu_id=raw.max_vcpu_id, ssidref=raw.ssidref,
        cpupool=raw.cpupool)
