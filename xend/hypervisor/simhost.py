"""The simulated host's fixed facts: what Xen 4.17 on a plain x86_64 box would report."""
from __future__ import annotations

from .base import PAGE_SIZE, PhysInfo, VersionInfo

CPU_KHZ = 2_400_000
HW_CAPS = "178bfbff:f7fa3203:2c100800:00000121:0000000f:009c67af:00000000:00000100"
XEN_EXTRA = ".7"


def physinfo(nr_cpus: int, total_kib: int, free_kib: int) -> PhysInfo:
    return PhysInfo(nr_cpus=nr_cpus, nr_nodes=1, cores_per_socket=nr_cpus,
                    threads_per_core=1, cpu_khz=CPU_KHZ, hw_caps=HW_CAPS,
                    virt_caps="pv hvm hvm_directio pv_directio hap shadow gnttab-v1 gnttab-v2", total_kib=total_kib, free_kib=free_kib)


def version(dom0_mib: int, scheduler: str = "credit") -> VersionInfo:
    return VersionInfo(
        major=4, minor=17, extra=XEN_EXTRA,
        capabilities="xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64",
        changeset="Tue Nov 5 10:00:00 2024 +0000 git:2445b30a44",
        pagesize=PAGE_SIZE,
        commandline=f"placeholder dom0_mem={dom0_mib}M,max:{dom0_mib}M loglvl=all",
        scheduler=scheduler,
        cc_compiler="gcc (Debian 12.2.0-14) 12.2.0",
        cc_compile_by="pkg-xen-devel",
        cc_compile_domain="lists.alioth.debian.org",
        cc_compile_date="Tue Nov  5 10:00:00 UTC 2024",
        platform_params="virt_start=0xffff800000000000")


SCHEDULER_NAMES = {"credit": "SMP Credit Scheduler (credit)",
                   "credit2": "SMP Credit Scheduler rev2 (credit2)"}


def boot_log(nr_cpus: int, total_kib: int, dom0_kib: int, scheduler: str = "credit") -> str:
    """A plausible Xen 4.17 console ring after boot (``xm dmesg``)."""
    total_mib = total_kib // 1024
    lines = [
        " Xen 4.17.7-sim",
        "(XEN) Xen version 4.17.7 (pkg-xen-devel@lists.alioth.debian.org) "
        "(gcc (Debian 12.2.0-14) 12.2.0) debug=n Tue Nov  5 10:00:00 UTC 2024",
        "(XEN) Latest ChangeSet: Tue Nov 5 10:00:00 2024 +0000 git:2445b30a44",
        "(XEN) build-id: 5f4e2c0b9a0d3e61f1a2b3c4d5e6f708192a3b4c",
        "(XEN) Bootloader: GRUB 2.06-13+deb12u1",
        f"(XEN) Command line: placeholder dom0_mem={dom0_kib // 1024}M,max:{dom0_kib // 1024}M"
        " loglvl=all",
        "(XEN) Xen image load base address: 0",
        "(XEN) Video information:",
        "(XEN)  VGA is text mode 80x25, font 8x16",
        "(XEN) Disc information:",
        "(XEN)  Found 1 MBR signatures",
        "(XEN)  Found 1 EDD information structures",
        "(XEN) Xen-e820 RAM map:",
        "(XEN)  [0000000000000000, 000000000009fbff] (usable)",
        "(XEN)  [0000000000100000, %016x] (usable)" % (total_kib * 1024 - 1),
        f"(XEN) System RAM: {total_mib}MB ({total_kib}kB)",
        "(XEN) ACPI: RSDP 000F5A50, 0024 (r2 BOCHS )",
        "(XEN) No NUMA configuration found",
        "(XEN) Faking a node at 0000000000000000-%016x" % (total_kib * 1024),
        "(XEN) Domain heap initialised",
        "(XEN) Using APIC driver default",
        f"(XEN) Using scheduler: {SCHEDULER_NAMES.get(scheduler, scheduler)}",
        "(XEN) Platform timer is 3.580MHz ACPI PM Timer",
        "(XEN) Detected 2400.000 MHz processor.",
        "(XEN) Intel VT-d iommu 0 supported page sizes: 4kB, 2MB, 1GB",
        "(XEN) HVM: ASIDs enabled.",
        "(XEN) VMX: Supported advanced features:",
        "(XEN)  - APIC MMIO access virtualisation",
        "(XEN)  - Extended Page Tables (EPT)",
        "(XEN) HVM: VMX enabled",
        "(XEN) HVM: Hardware Assisted Paging (HAP) detected",
        f"(XEN) Allocated console ring of {max(16, nr_cpus * 4)} KiB.",
        f"(XEN) Brought up {nr_cpus} CPUs",
        "(XEN) Scheduling granularity: cpu, 1 CPU per sched-resource",
        "(XEN) Dom0 has maximum 856 PIRQs",
        "(XEN) *** Building a PV Dom0 ***",
        "(XEN)  Xen  kernel: 64-bit, lsb",
        "(XEN)  Dom0 kernel: 64-bit, PAE, lsb, paddr 0x1000000 -> 0x3000000",
        f"(XEN) Dom0 has maximum {nr_cpus} VCPUs",
        "(XEN) Initial low memory virq threshold set at 0x4000 pages.",
        "(XEN) Scrubbing Free RAM in background",
        "(XEN) Std. Loglevel: All",
        "(XEN) Guest Loglevel: All",
        "(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
        "(XEN) Freed 644kB init memory",
    ]
    return "\n".join(lines) + "\n"


#: what Xen 4.17's keyhandlers say when their key is pressed (``xm debug-keys``)
DEBUG_KEYS = {
    "h": "showing installed handlers",
    "d": "dump registers",
    "e": "dump evtchn info",
    "g": "print grant table usage",
    "i": "dump interrupt bindings",
    "m": "memory info",
    "n": "NMI statistics",
    "q": "dump domain (and guest debug) info",
    "r": "dump run queues",
    "s": "dump softtsc stats",
    "t": "display multi-cpu clock info",
    "u": "dump NUMA info",
    "v": "dump VT-x VMCSs",
    "z": "dump IOAPIC info",
    "0": "dump Dom0 registers",
    "*": "print all diagnostics",
}


def debug_key(key: str) -> str:
    return DEBUG_KEYS.get(key, "no handler for this key")
