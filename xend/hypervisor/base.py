"""The Hypervisor interface: what xend's domain layer needs from a hypervisor, and no more.

Two implementations: ``xenctrl`` (ctypes binding to libxenctrl 4.17 + libxenstore) and
``simulated`` (state in a directory, so its domains outlive a xend restart). The domain layer
receives a Hypervisor object; it never imports a backend module.

Units: memory in KiB, cpu time in nanoseconds, domids are ints. Every failure raises
``xend.errors.HypervisorError(errno, message)`` (ESRCH for an unknown domid, ENOMEM when the
host has not enough free memory, EINVAL for bad arguments, ENOSYS for what a backend cannot do).
"""
from __future__ import annotations

import abc
import errno
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import HypervisorError

PAGE_SIZE = 4096
#: the first bytes of a core file in xend's own format (``Hypervisor.dump_core``)
CORE_MAGIC = b"XENDCORE"

# Shutdown reason codes as Xen reports them (reference section 8.3).
SHUTDOWN_POWEROFF = 0
SHUTDOWN_REBOOT = 1
SHUTDOWN_SUSPEND = 2
SHUTDOWN_CRASH = 3
SHUTDOWN_HALT = 4  # Xen's "watchdog" code; xend's name for reason 4 is halt
SHUTDOWN_REASONS = {"poweroff": 0, "reboot": 1, "suspend": 2, "crash": 3, "halt": 4}
SHUTDOWN_NAMES = {v: k for k, v in SHUTDOWN_REASONS.items()}

DOM0_UUID = "00000000-0000-0000-0000-000000000000"

#: what ``send_trigger`` delivers (``xm trigger``): the original's names
TRIGGERS = ("nmi", "reset", "init", "s3resume", "power")
#: the schedulers a CPU pool may run (Xen 4.17's; sedf left Xen in 4.6)
SCHEDULERS = ("credit", "credit2", "rtds", "arinc653", "null")


@dataclass
class PhysInfo:
    nr_cpus: int
    nr_nodes: int
    cores_per_socket: int
    threads_per_core: int
    cpu_khz: int
    hw_caps: str            # 8 words of hex, ':'-separated, like xend printed
    virt_caps: str          # 'hvm', 'hvm hvm_directio', '' ...
    total_kib: int
    free_kib: int
    scrub_kib: int = 0


@dataclass
class VersionInfo:
    major: int
    minor: int
    extra: str              # e.g. '.7'
    capabilities: str       # e.g. 'xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 ...'
    changeset: str
    pagesize: int = PAGE_SIZE
    commandline: str = ""
    scheduler: str = "credit"
    cc_compiler: str = ""
    cc_compile_by: str = ""
    cc_compile_domain: str = ""
    cc_compile_date: str = ""
    platform_params: str = ""


@dataclass
class DomainInfo:
    domid: int
    uuid: str               # hyphenated lower-case 8-4-4-4-12
    dying: bool = False
    crashed: bool = False
    shutdown: bool = False
    paused: bool = False
    blocked: bool = False
    running: bool = False
    hvm: bool = False
    shutdown_reason: int = 0
    mem_kib: int = 0        # current allocation (tot_pages * 4)
    maxmem_kib: int = 0
    cpu_time_ns: int = 0
    online_vcpus: int = 1
    max_vcpu_id: int = 0
    ssidref: int = 0
    cpupool: int = 0        # the CPU pool the domain runs in

    @property
    def state_string(self) -> str:
        """The six-letter legacy state, e.g. ``r-----``, ``-b----``, ``--p---``."""
        flags = (self.running, self.blocked, self.paused, self.shutdown, self.crashed, self.dying)
        return "".join(c if f else "-" for c, f in zip("rbpscd", flags))


@dataclass
class VcpuInfo:
    number: int
    online: bool
    blocked: bool
    running: bool
    cpu_time_ns: int
    cpu: int                # physical cpu it runs on, -1 if offline
    affinity: List[int] = field(default_factory=list)


@dataclass
class CpuPoolInfo:
    poolid: int
    scheduler: str          # 'credit', 'credit2' ...
    cpus: List[int] = field(default_factory=list)
    domids: List[int] = field(default_factory=list)


@dataclass
class DeviceSpec:
    """One device of a domain: its class (``vbd``, ``vif``, ``vfb``, ``vkbd`` ...), its id,
    the domain serving its backend, and the details its backend and frontend are given (the
    store entries of reference §8.6: ``params``/``type``/``mode``/``dev`` of a vbd; ``mac``,
    ``bridge``, ``script``, ``ip``, ``vifname``, ``rate`` of a vif; ...)."""
    cls: str
    devid: int
    backend_domid: int = 0
    backend: Dict[str, str] = field(default_factory=dict)
    frontend: Dict[str, str] = field(default_factory=dict)

    def backend_path(self, domid: int) -> str:
        return f"/local/domain/{self.backend_domid}/backend/{self.cls}/{domid}/{self.devid}"

    @staticmethod
    def frontend_path(domid: int, cls: str, devid: Any) -> str:
        """A block device's frontend is the guest's ``vbd`` whatever its backend class (a
        blkfront reads only ``device/vbd``)."""
        front = "vbd" if cls in ("tap", "tap2") else cls
        return f"/local/domain/{domid}/device/{front}/{devid}"


@dataclass
class DomainSpec:
    """What ``create_domain`` needs: the built configuration, not the user's SXP."""
    name: str
    uuid: str
    memory_kib: int
    maxmem_kib: int
    vcpus: int = 1
    hvm: bool = False
    kernel: str = ""
    cmdline: str = ""
    ssidref: int = 0
    pvh: bool = False                   # a PVH guest (an HVM container without emulation)
    ramdisk: str = ""
    bootloader: str = ""
    bootloader_args: str = ""
    online_vcpus: Optional[int] = None  # VCPUs online at boot; None: all
    affinity: Tuple[Tuple[int, ...], ...] = ()      # per-VCPU hard affinity; () = any
    cpu_weight: Optional[int] = None
    cpu_cap: Optional[int] = None
    shadow_kib: int = 0
    #: the devices, for a backend that builds them (``Hypervisor.builds_devices``)
    devices: Tuple[DeviceSpec, ...] = ()
    #: other settings of the image (HVM: boot, vnc, serial, acpi ...), as (key, value)
    image: Tuple[Tuple[str, str], ...] = ()
    #: entries of the domain's store directory (``/local/domain/<id>/KEY``) written before
    #: the domain is introduced to the store's watchers (``console/limit`` for xenconsoled)
    store: Tuple[Tuple[str, str], ...] = ()
    #: what the domain's own shutdowns should lead to (xend's action names; '' = unknown).
    #: xend acts on them itself; a backend records them for the platform's other tools.
    on_poweroff: str = ""
    on_reboot: str = ""
    on_crash: str = ""


class Hypervisor(abc.ABC):
    """One hypervisor host. Methods are thread-safe."""

    #: backend name shown by ``xm info`` ('xenctrl' or 'simulated')
    name: str = "abstract"
    #: True when the host's device backends answer a domain's device entries in the store
    #: (``/local/domain/<b>/backend/<class>/<domid>/<devid>``: ``hotplug-status`` once
    #: connected, the directory removed once closed), so xend can wait for them
    #: (device-create-timeout). The simulated host plays those backends; on real Xen they
    #: are dom0's (libxl's hotplug scripts write the same nodes).
    device_backends: bool = False
    #: True when ``create_domain`` builds the devices of ``DomainSpec.devices`` itself and
    #: ``destroy`` tears them down (the xenctrl backend, through libxl); False when xend
    #: writes their store entries for the host's backends (the simulated host).
    builds_devices: bool = False
    #: how a domain's memory image is moved (save, restore, migration): "pages" — xend
    #: reads and writes its pages (``read_pages``/``write_pages``, the dirty log) and writes
    #: its own page records; "stream" — the platform's own migration stream
    #: (``save_stream``/``restore_stream``; Xen's through libxl), which xend carries whole
    image_kind: str = "pages"
    #: the name of that stream's format, kept in the image ("libxl-v2")
    stream_format: str = ""
    #: the daemon that serves guest consoles on this host (``xenconsoled`` on real Xen,
    #: reached with its client ``xenconsole``); '' when xend reads them itself
    #: (``read_console``)
    console_server: str = ""

    # -- host --------------------------------------------------------------------------------
    @abc.abstractmethod
    def physinfo(self) -> PhysInfo: ...

    @abc.abstractmethod
    def version(self) -> VersionInfo: ...

    def topology(self) -> List[Tuple[int, int, int]]:
        """(core, socket, node) of each CPU. This default derives them from physinfo (cores
        and threads numbered in order, nodes of equal size)."""
        p = self.physinfo()
        threads = max(1, p.threads_per_core)
        cores = max(1, p.cores_per_socket)
        per_node = max(1, p.nr_cpus // max(1, p.nr_nodes))
        return [((cpu // threads) % cores, cpu // (threads * cores), min(cpu // per_node,
                                                                         p.nr_nodes - 1))
                for cpu in range(p.nr_cpus)]

    def numa_info(self) -> List[Tuple[int, int, int, List[int]]]:
        """(total KiB, free KiB, DMA32-reachable KiB, distances to each node) of each NUMA
        node. This default: the host as one node (10 = local, as ACPI's SLIT)."""
        p = self.physinfo()
        return [(p.total_kib, p.free_kib, min(p.total_kib, 4 << 20), [10])]

    @abc.abstractmethod
    def read_console_ring(self, clear: bool = False) -> str:
        """The hypervisor's console ring (``xm dmesg``); ``clear`` empties it after reading."""

    # -- domains -----------------------------------------------------------------------------
    @abc.abstractmethod
    def list_domains(self) -> List[DomainInfo]:
        """Every domain that exists, dom0 first, ordered by domid."""

    @abc.abstractmethod
    def domain_info(self, domid: int) -> DomainInfo:
        """Raises HypervisorError(ESRCH) if the domain does not exist."""

    @abc.abstractmethod
    def create_domain(self, spec: DomainSpec) -> int:
        """Build a domain, left **paused**, memory taken from the host's free memory
        (HypervisorError ENOMEM if there is not enough). Returns the new domid. A backend
        that ``builds_devices`` also builds ``spec.devices``; on any failure nothing of the
        domain is left behind."""

    def memory_needed_kib(self, spec: DomainSpec) -> int:
        """Free host memory that building ``spec`` takes (what xend balloons dom0 for)."""
        return spec.memory_kib + spec.shadow_kib

    def native_config(self, domid: int) -> Optional[DomainSpec]:
        """What the platform's toolstack keeps of a running domain's build (a domain another
        tool created, say), or None when it keeps nothing: lets xend adopt it whole."""
        return None

    @abc.abstractmethod
    def pause(self, domid: int) -> None: ...

    @abc.abstractmethod
    def unpause(self, domid: int) -> None: ...

    @abc.abstractmethod
    def shutdown(self, domid: int, reason: int) -> None:
        """Hypervisor-level shutdown (the domain stops at once with that reason code)."""

    @abc.abstractmethod
    def destroy(self, domid: int) -> None:
        """Remove the domain; its memory returns to the host."""

    @abc.abstractmethod
    def set_max_memory(self, domid: int, kib: int) -> None: ...

    @abc.abstractmethod
    def set_memory_target(self, domid: int, kib: int) -> None:
        """Balloon target; the guest's allocation follows it (at once for the simulated one).
        Growing beyond the host's free memory raises ENOMEM."""

    @abc.abstractmethod
    def set_vcpus_online(self, domid: int, count: int) -> None: ...

    @abc.abstractmethod
    def vcpu_info(self, domid: int) -> List[VcpuInfo]: ...

    @abc.abstractmethod
    def set_vcpu_affinity(self, domid: int, vcpu: int, cpus: List[int]) -> None: ...

    @abc.abstractmethod
    def sched_credit_get(self, domid: int) -> Tuple[int, int]:
        """(weight, cap)."""

    @abc.abstractmethod
    def sched_credit_set(self, domid: int, weight: int, cap: int) -> None: ...

    # -- devices of a running domain (hot-plug) ---------------------------------------------
    # For a backend that ``builds_devices``: it adds, removes or changes the device itself
    # (through its toolstack) and the guest sees it come and go. For the others xend writes
    # the device's store entries for the host's backends, as when it builds a domain, and
    # these are never called.
    def attach_device(self, domid: int, dev: DeviceSpec, hvm: bool = False) -> None:
        """Add ``dev`` to the running domain ``domid`` and wait until its backend is
        connected; on failure nothing of it is left."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: devices cannot be added to a "
                                            f"running domain by this backend")

    def detach_device(self, domid: int, dev: DeviceSpec, force: bool = False) -> None:
        """Remove ``dev`` from the running domain ``domid``: with the guest's consent (its
        frontend closes), or at once with ``force``."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: devices cannot be removed from a "
                                            f"running domain by this backend")

    def configure_device(self, domid: int, dev: DeviceSpec) -> None:
        """Change the medium of the cdrom ``dev`` of a running domain to the one its details
        name (``uname``; '' ejects it)."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: a cdrom's medium cannot be changed "
                                            f"by this backend")

    def pci_assignable(self) -> Optional[List[str]]:
        """``DDDD:BB:SS.F`` of the host's PCI devices that can be passed through to guests
        (bound to pciback), or None when the host has no pciback (nothing can be)."""
        return None

    # -- triggers, debug keys, schedulers ---------------------------------------------------
    def send_trigger(self, domid: int, trigger: str, vcpu: int = 0) -> None:
        """Deliver ``trigger`` (TRIGGERS) to VCPU ``vcpu`` of the domain, as its hardware
        would: an NMI, a reset or INIT, the ACPI power button, a resume from S3."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: triggers are not supported")

    def send_debug_keys(self, keys: str) -> None:
        """Type ``keys`` at the hypervisor's debug console (its answers go to the console
        ring, ``xm dmesg``)."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: debug keys are not supported")

    def sched_credit2_get(self, domid: int) -> int:
        """The domain's credit2 weight."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no credit2 scheduler")

    def sched_credit2_set(self, domid: int, weight: int) -> None:
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no credit2 scheduler")

    # -- CPU pools ----------------------------------------------------------------------------
    # Pool 0 holds every CPU at boot and every domain not moved elsewhere. Names are not the
    # hypervisor's: xend keeps them in the store (``/local/pool/<id>/name``, as libxl does).
    def cpupool_list(self) -> List[CpuPoolInfo]:
        """Every pool, by id."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no CPU pools")

    def cpupool_create(self, scheduler: str) -> int:
        """A new empty pool running ``scheduler``; its id."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no CPU pools")

    def cpupool_destroy(self, poolid: int) -> None:
        """Remove an empty pool (no CPUs, no domains)."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no CPU pools")

    def cpupool_add_cpu(self, poolid: int, cpu: int) -> None:
        """Give the pool a CPU that belongs to no pool."""
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no CPU pools")

    def cpupool_remove_cpu(self, poolid: int, cpu: int) -> None:
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no CPU pools")

    def cpupool_move_domain(self, poolid: int, domid: int) -> None:
        raise HypervisorError(errno.ENOSYS, f"{self.name}: no CPU pools")

    # -- the store (xenstore, or the simulated one) -----------------------------------------
    @abc.abstractmethod
    def store_read(self, path: str) -> Optional[str]:
        """Value at ``path`` or None."""

    @abc.abstractmethod
    def store_write(self, path: str, value: str) -> None:
        """Writing ``/local/domain/<id>/control/shutdown`` is how a guest is asked to shut down;
        a cooperative guest then shuts down with that reason (after a short delay)."""

    @abc.abstractmethod
    def store_list(self, path: str) -> List[str]: ...

    @abc.abstractmethod
    def store_rm(self, path: str) -> None: ...

    # -- memory image (save / restore / migrate) --------------------------------------------
    @abc.abstractmethod
    def nr_pages(self, domid: int) -> int: ...

    @abc.abstractmethod
    def read_pages(self, domid: int, pfns: Iterable[int]) -> Iterator[Tuple[int, bytes]]:
        """(pfn, 4096 bytes) for each pfn asked for."""

    @abc.abstractmethod
    def write_pages(self, domid: int, pages: Iterable[Tuple[int, bytes]]) -> None: ...

    def page_reader(self, domid: int) -> Callable[[Sequence[int]], bytes]:
        """A function ``read(pfns)`` that gives the pages ``pfns`` one after the other
        (len(pfns) * PAGE_SIZE bytes), for one pass of a save: a backend keeps what it needs
        to look up between the calls. This default joins what ``read_pages`` gives."""
        def read(pfns: Sequence[int]) -> bytes:
            data = b"".join([page for _, page in self.read_pages(domid, pfns)])
            if len(data) != len(pfns) * PAGE_SIZE:
                raise HypervisorError(errno.EIO, f"the pages of pfns {pfns[:1]}.. are not "
                                      f"{PAGE_SIZE} bytes each")
            return data
        return read

    def write_page_batches(self, domid: int,
                           batches: Iterable[Tuple[Sequence[int], memoryview]]) -> None:
        """``write_pages`` of batches (pfns, their pages: len(pfns) * PAGE_SIZE bytes); a
        batch's buffer may be reused once the next one is asked for."""
        self.write_pages(domid, ((pfn, pages[i * PAGE_SIZE:(i + 1) * PAGE_SIZE])
                                 for pfns, pages in batches for i, pfn in enumerate(pfns)))

    def dump_core(self, domid: int, path: str, header: Dict[str, Any]) -> None:
        """Write the domain's core to ``path`` (created 0600). This default writes xend's own
        format (see ``xend.domains.dump``) from ``read_pages``; a backend with a native core
        format (libxenctrl's ELF core) overrides it. ``header``: name, uuid ... of the
        domain."""
        import json
        import os
        import struct
        nr_pages = self.nr_pages(domid)
        head = json.dumps(dict(header, domid=domid, nr_pages=nr_pages, page_size=PAGE_SIZE),
                          sort_keys=True).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(CORE_MAGIC + struct.pack(">I", len(head)) + head)
            for first in range(0, nr_pages, 256):
                for _, data in self.read_pages(domid, range(first, min(nr_pages, first + 256))):
                    f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def memory_checksum(self, domid: int) -> str:
        """sha256 (hex) of the domain's whole memory image, pages in pfn order. Meant for a
        paused domain (a running one keeps writing)."""
        digest = hashlib.sha256()
        for _, data in self.read_pages(domid, range(self.nr_pages(domid))):
            digest.update(data)
        return digest.hexdigest()

    def save_stream(self, domid: int, fd: int, live: bool) -> None:
        """(``image_kind`` "stream") Write the domain's migration stream to ``fd``; the
        domain is left suspended (``resume_saved`` runs it again). On failure the domain is
        as it was or suspended."""
        raise HypervisorError(errno.ENOSYS, f"the {self.name} backend moves pages, not streams")

    def restore_stream(self, spec: DomainSpec, fd: int) -> int:
        """(``image_kind`` "stream") Build a domain from ``spec`` and the stream on ``fd``,
        left paused; on failure nothing of it is left. Returns its domid."""
        raise HypervisorError(errno.ENOSYS, f"the {self.name} backend moves pages, not streams")

    def check_movable(self, domid: int, live: bool) -> None:
        """HypervisorError when the domain cannot be saved or migrated (``live``: while it
        runs) on this host, said before anything is streamed."""

    def resume_saved(self, domid: int) -> None:
        """Run a domain a save left paused or suspended again (a checkpoint, a failed
        save)."""
        self.unpause(domid)

    @abc.abstractmethod
    def enable_dirty_log(self, domid: int, enable: bool) -> None:
        """Start/stop tracking pages the guest writes (for live migration)."""

    @abc.abstractmethod
    def read_dirty_pages(self, domid: int) -> List[int]:
        """Pfns written since the last call (or since enable_dirty_log), and reset the log."""

    # -- guest console and events ------------------------------------------------------------
    @abc.abstractmethod
    def read_console(self, domid: int) -> bytes:
        """Console output the guest produced since the previous call (consumed)."""

    @abc.abstractmethod
    def wait_for_change(self, timeout: float) -> bool:
        """Block until some domain changed state (created, shut down, crashed, destroyed...)
        or ``timeout`` seconds passed. True if something may have changed."""

    def wake(self) -> None:
        """Make a ``wait_for_change`` in progress return at once (xend is stopping)."""
        self._wakeup().set()

    def _nap(self, seconds: float) -> bool:
        """``wait_for_change``'s sleep between two looks; True when ``wake`` cut it short."""
        event = self._wakeup()
        if event.wait(seconds):
            event.clear()
            return True
        return False

    def _wakeup(self) -> threading.Event:
        # made on first use: the backends' __init__s need not know of it
        return self.__dict__.setdefault("_wakeup_event", threading.Event())

    def close(self) -> None:
        """Release handles. The hypervisor's domains keep running."""
