"""The running xend: wires the hypervisor, the domain registry and the listeners.

Built inside the server process (after daemonizing), so the hypervisor handle is never
shared across a fork.
"""
from __future__ import annotations

import logging
import os
from typing import Any, List, Mapping, Optional

from xend.nodeinfo import INFO_KEYS
from xend.server.listeners import Listeners

log = logging.getLogger("xend.XendNode")

XEND_CONFIG_FORMAT = 4
#: directories created at start (reference §1.3: Xen-API objects, storage repository, ACM)
STATE_DIR_OPTIONS = ("xend-state-path", "xend-storage-path", "xend-security-path")


def node_to_cpu(topology: List[tuple]) -> str:
    """``node0:0-3`` per NUMA node, one a line (continued at the value's column), as xm 3.x
    showed it."""
    nodes: dict = {}
    for cpu, (_, _, node) in enumerate(topology):
        if node >= 0:                       # a CPU that is not there has none
            nodes.setdefault(node, []).append(cpu)
    from xend.xm.formats import cpu_ranges
    return ("\n" + " " * 25).join("node%d:%s" % (n, cpu_ranges(nodes[n]))
                                   for n in sorted(nodes))


def cpu_topology(topology: List[tuple]) -> str:
    """``xm info -n``'s table: each CPU's core, socket and node."""
    lines = ["", "cpu:    core    socket     node"]
    lines += ["%3d:%8d %8d %8d" % (cpu, core, socket, node)
              for cpu, (core, socket, node) in enumerate(topology)]
    return "\n".join(lines)


def numa_info(nodes: List[tuple]) -> str:
    """``xm info -n``'s table: each node's memory (MiB) and its distances to the others."""
    head = "node: TotalMemory FreeMemory dma32Memory NodeDist:" + \
        "".join("%4d " % i for i in range(len(nodes)))
    lines = ["", head]
    for i, (total_kib, free_kib, dma32_kib, distances) in enumerate(nodes):
        lines.append("%4d:  %8dMB %8dMB  %8dMB         :" % (i, total_kib // 1024,
                                                            free_kib // 1024, dma32_kib // 1024)
                     + "".join("%4d " % d for d in distances))
    return "\n".join(lines)


class Node:
    def __init__(self, opts: Mapping, config_path: str, log_path: Optional[str] = None):
        self.opts = opts
        self.config_path = config_path
        self.log_path = log_path or opts["logfile"]
        self.hypervisor = None
        self.domains = None
        self.cpupools = None
        self.listeners = Listeners(self._listener_specs)
        self._xenapi = None

    def xenapi_service(self):
        """The Xen-API (sessions, events, tasks over ``domains``), made on first use; it
        outlives a reload of its listeners."""
        if self._xenapi is None:
            from xend.xenapi.service import XenAPIService
            self._xenapi = XenAPIService(self)
        return self._xenapi

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from xend.hypervisor import make_hypervisor
        from xend.domains.registry import DomainRegistry

        for warning in getattr(self.opts, "warnings", []):
            log.warning("%s", warning)
        self.log_unsupported()
        self.make_state_dirs()
        self.run_network_script()
        self.hypervisor = make_hypervisor(self.opts)
        log.info("Hypervisor backend: %s", self.hypervisor.name)
        self.domains = DomainRegistry(self.opts, self.hypervisor)
        self.domains.start()
        from xend.cpupools import CpuPools
        self.cpupools = CpuPools(self.hypervisor, self.domains, self.opts["xend-state-path"])
        self.cpupools.start()
        from xend.relocation import attach
        attach(self)  # the migrator, and repair of migrations a killed xend left half-done
        self.listeners.start(self.opts)
        self.domains.autostart()

    def stop(self) -> None:
        self.listeners.stop()
        if self.domains is not None:
            self.domains.stop()
        if self.hypervisor is not None:
            self.hypervisor.close()

    def reload(self, opts: Mapping) -> None:
        self.opts = opts
        self.log_unsupported()
        if self.domains is not None:
            self.domains.reconfigure(opts)
        self.listeners.reload(opts)

    def log_unsupported(self) -> None:
        """Settings of the file this xend cannot act on (``Options.unsupported``), each with
        the reason; a default is never reported."""
        for note in getattr(self.opts, "unsupported", []):
            log.warning("%s", note)

    def make_state_dirs(self) -> None:
        """``xend-state-path``, ``xend-storage-path`` and ``xend-security-path`` are created
        (mode 0700, parents as needed) as the original did at start; an existing directory is
        left as it is. A failure is logged: the subsystem that needs the directory reports
        it again when it is used."""
        for name in STATE_DIR_OPTIONS:
            path = self.opts[name]
            if not path or os.path.isdir(path):
                continue
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
                os.chmod(path, 0o700)
                log.debug("Created %s %s", name, path)
            except OSError as e:
                log.error("Cannot create %s %s: %s", name, path, e.strerror or e)

    def _listener_specs(self, opts: Mapping) -> list:
        from xend.server.specs import listener_specs
        return listener_specs(opts, self)

    def run_network_script(self) -> None:
        """``network-script`` at start: ``<scripts>/<word1> start <args>``; failure is logged."""
        script = self.opts["network-script"]
        if not script:
            return
        words = script if isinstance(script, list) else str(script).split()
        if not words:
            return
        cmd = [words[0] if os.path.isabs(words[0])
               else os.path.join(self.opts["xend-scripts-path"], words[0]), "start", *words[1:]]
        import subprocess       # only when a network-script is configured
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("network-script %s failed: %s", " ".join(cmd), e)
            return
        for line in (proc.stdout + proc.stderr).splitlines():
            log.info("network-script: %s", line)
        if proc.returncode:
            log.error("network-script %s exited with status %d", " ".join(cmd), proc.returncode)

    # -- node calls (xend.node.*) ------------------------------------------------------------
    def info(self, show_numa: Any = 1) -> List[list]:
        hv = self.hypervisor
        phys = hv.physinfo()
        ver = hv.version()
        uname = os.uname()
        mib = 1024
        values = {
            "system": uname.sysname, "host": uname.nodename, "release": uname.release,
            "version": uname.version, "machine": uname.machine,
            "nr_cpus": phys.nr_cpus, "nr_nodes": phys.nr_nodes,
            "sockets_per_node": max(1, phys.nr_cpus // max(1, phys.cores_per_socket
                                                         * phys.threads_per_core
                                                         * phys.nr_nodes)),
            "cores_per_socket": phys.cores_per_socket,
            "threads_per_core": phys.threads_per_core,
            # as the hypervisor reports it (xl info: 2596.133)
            "cpu_mhz": "%d.%03d" % (phys.cpu_khz // 1000, phys.cpu_khz % 1000),
            "hw_caps": phys.hw_caps, "virt_caps": phys.virt_caps,
            "total_memory": phys.total_kib // mib, "free_memory": phys.free_kib // mib,
            "node_to_cpu": node_to_cpu(hv.topology()),
            "free_cpus": self._free_cpus(phys.nr_cpus),
            "xen_major": ver.major, "xen_minor": ver.minor, "xen_extra": ver.extra,
            "xen_caps": ver.capabilities, "xen_scheduler": ver.scheduler,
            "xen_pagesize": ver.pagesize, "platform_params": ver.platform_params,
            "xen_changeset": ver.changeset, "xen_commandline": ver.commandline,
            "cc_compiler": ver.cc_compiler, "cc_compile_by": ver.cc_compile_by,
            "cc_compile_domain": ver.cc_compile_domain,
            "cc_compile_date": ver.cc_compile_date,
            "xend_config_format": XEND_CONFIG_FORMAT,
            "xend_hypervisor_backend": hv.name,
        }
        pairs = [[key, values[key]] for key in INFO_KEYS]
        if str(show_numa).strip() not in ("0", "", "False", "None"):
            at = INFO_KEYS.index("free_cpus") + 1
            pairs[at:at] = [["cpu_topology", cpu_topology(hv.topology())],
                            ["numa_info", numa_info(hv.numa_info())]]
        return pairs

    def _free_cpus(self, nr_cpus: int) -> int:
        """CPUs in no CPU pool."""
        from xend.errors import HypervisorError
        try:
            return nr_cpus - sum(len(p.cpus) for p in self.hypervisor.cpupool_list())
        except HypervisorError:
            return 0

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as e:
            from xend.errors import XendError
            raise XendError(f"cannot read {self.log_path}: {e.strerror}")

    def dmesg_info(self) -> str:
        return self.hypervisor.read_console_ring(clear=False)

    def dmesg_clear(self) -> str:
        return self.hypervisor.read_console_ring(clear=True)

    def progress(self) -> list:
        return self.domains.progress()

    def pciinfo(self) -> Optional[list]:
        """The host's PCI devices that can be passed through, as ``(dev (domain 0x0000)
        (bus 0x00) (slot 0x1f) (func 0x2))``; None when the host has no pciback."""
        found = self.hypervisor.pci_assignable()
        if found is None:
            return None
        out = []
        for key in found:
            domain, bus, rest = key.split(":")
            slot, func = rest.split(".")
            out.append(["dev", ["domain", "0x" + domain], ["bus", "0x" + bus],
                        ["slot", "0x" + slot], ["func", "0x" + func]])
        return out

    def send_debug_keys(self, keys: Any) -> None:
        """Type ``keys`` at the hypervisor's debug console (``xm debug-keys``)."""
        from xend.errors import HypervisorError, XendError
        text = "" if keys is None else str(keys)
        if not text:
            raise XendError("No debug keys given")
        try:
            self.hypervisor.send_debug_keys(text)
        except HypervisorError as e:
            raise XendError(str(e.message)) from None
