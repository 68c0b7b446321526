"""ctypes declarations for libxenctrl 4.17 and libxenstore 4 (x86_64).

Only declarations and loading live here; ``xenctrl.py`` builds the Hypervisor on top.
Structures mirror the 4.17 public headers field by field (``tests/test_xenctrl_binding.py``
compiles a C program against libxen-dev's headers and compares every size and offset).
Plain ``c_uint64`` reproduces ``uint64_aligned_t`` on x86_64.
"""
from __future__ import annotations

import ctypes
import errno
from ctypes import (POINTER, Structure, c_bool, c_char, c_char_p, c_int, c_int32, c_uint,
                    c_uint8, c_uint16, c_uint32, c_uint64, c_ulong, c_void_p)
from typing import Dict, List, Tuple

from ..errors import HypervisorError

XENCTRL_SONAME = "libxenctrl.so.4.17"
XENSTORE_SONAME = "libxenstore.so.4"
XENGUEST_SONAME = "libxenguest.so.4.17"
XENCTRL_PACKAGE = "libxenmisc4.17"
XENSTORE_PACKAGE = "libxenstore4"

# xen/domctl.h
XEN_DOMINF_dying = 1 << 0
XEN_DOMINF_hvm_guest = 1 << 1
XEN_DOMINF_shutdown = 1 << 2
XEN_DOMINF_paused = 1 << 3
XEN_DOMINF_blocked = 1 << 4
XEN_DOMINF_running = 1 << 5
XEN_DOMINF_shutdownshift = 16
XEN_DOMINF_shutdownmask = 255
XEN_DOMCTL_CDF_hvm = 1 << 0
XEN_DOMCTL_CDF_hap = 1 << 1
XEN_VCPUAFFINITY_HARD = 1 << 0
XEN_VCPUAFFINITY_SOFT = 1 << 1
XEN_SCHEDULERS = {5: "credit", 6: "credit2", 7: "arinc653", 8: "rtds", 9: "null"}
XEN_SCHEDULER_IDS = {name: number for number, name in XEN_SCHEDULERS.items()}
XEN_SCHEDULER_CREDIT = 5
XEN_SCHEDULER_CREDIT2 = 6
# xen/arch-x86/xen.h: what libxl gives an HVM guest (XEN_X86_EMU_ALL without VPCI)
XEN_X86_EMU_HVM = 0x3FF
# xen/sysctl.h
XEN_SYSCTL_PHYSCAP_hvm = 1 << 0
XEN_SYSCTL_PHYSCAP_pv = 1 << 1
XEN_SYSCTL_PHYSCAP_directio = 1 << 2
XEN_SYSCTL_PHYSCAP_hap = 1 << 3
XEN_SYSCTL_PHYSCAP_shadow = 1 << 4
XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share = 1 << 5
XEN_SYSCTL_PHYSCAP_vmtrace = 1 << 6
XEN_SYSCTL_PHYSCAP_vpmu = 1 << 7
XEN_SYSCTL_PHYSCAP_gnttab_v1 = 1 << 8
XEN_SYSCTL_PHYSCAP_gnttab_v2 = 1 << 9
#: xen/sysctl.h: XEN_INVALID_{CORE,SOCKET,NODE}_ID (a CPU that is not there)
XEN_INVALID_ID = 0xFFFFFFFF
# xen/version.h
XENVER_version = 0
XENVER_extraversion = 1
XENVER_compile_info = 2
XENVER_capabilities = 3
XENVER_changeset = 4
XENVER_platform_parameters = 5
XENVER_pagesize = 7
XENVER_commandline = 9
DOMID_FIRST_RESERVED = 0x7FF0

xen_domain_handle_t = c_uint8 * 16


class xc_physinfo_t(Structure):             # struct xen_sysctl_physinfo
    _fields_ = [
        ("threads_per_core", c_uint32), ("cores_per_socket", c_uint32),
        ("nr_cpus", c_uint32), ("max_cpu_id", c_uint32),
        ("nr_nodes", c_uint32), ("max_node_id", c_uint32),
        ("cpu_khz", c_uint32), ("capabilities", c_uint32),
        ("arch_capabilities", c_uint32), ("pad", c_uint32),
        ("total_pages", c_uint64), ("free_pages", c_uint64), ("scrub_pages", c_uint64),
        ("outstanding_pages", c_uint64), ("max_mfn", c_uint64),
        ("hw_cap", c_uint32 * 8),
    ]


class xen_arch_domainconfig(Structure):     # x86
    _fields_ = [("emulation_flags", c_uint32), ("misc_flags", c_uint32)]


class xc_domaininfo_t(Structure):           # struct xen_domctl_getdomaininfo
    _fields_ = [
        ("domain", c_uint16), ("pad1", c_uint16), ("flags", c_uint32),
        ("tot_pages", c_uint64), ("max_pages", c_uint64), ("outstanding_pages", c_uint64),
        ("shr_pages", c_uint64), ("paged_pages", c_uint64), ("shared_info_frame", c_uint64),
        ("cpu_time", c_uint64),
        ("nr_online_vcpus", c_uint32), ("max_vcpu_id", c_uint32), ("ssidref", c_uint32),
        ("handle", xen_domain_handle_t), ("cpupool", c_uint32),
        ("gpaddr_bits", c_uint8), ("pad2", c_uint8 * 7),
        ("arch_config", xen_arch_domainconfig),
    ]


class xen_domctl_createdomain(Structure):
    _fields_ = [
        ("ssidref", c_uint32), ("handle", xen_domain_handle_t), ("flags", c_uint32),
        ("iommu_opts", c_uint32), ("max_vcpus", c_uint32), ("max_evtchn_port", c_uint32),
        ("max_grant_frames", c_int32), ("max_maptrack_frames", c_int32),
        ("grant_opts", c_uint32), ("vmtrace_size", c_uint32), ("cpupool_id", c_uint32),
        ("arch", xen_arch_domainconfig),
    ]


class xen_domctl_sched_credit(Structure):
    _fields_ = [("weight", c_uint16), ("cap", c_uint16)]


class xen_domctl_sched_credit2(Structure):
    _fields_ = [("weight", c_uint16), ("cap", c_uint16)]


class xc_vcpuinfo_t(Structure):             # struct xen_domctl_getvcpuinfo
    _fields_ = [
        ("vcpu", c_uint32), ("online", c_uint8), ("blocked", c_uint8), ("running", c_uint8),
        ("cpu_time", c_uint64), ("cpu", c_uint32),
    ]


class xc_cpupoolinfo_t(Structure):
    _fields_ = [("cpupool_id", c_uint32), ("sched_id", c_uint32), ("n_dom", c_uint32),
                ("cpumap", POINTER(c_uint8))]


class xc_cputopo_t(Structure):             # struct xen_sysctl_cputopo
    _fields_ = [("core", c_uint32), ("socket", c_uint32), ("node", c_uint32)]


class xc_meminfo_t(Structure):              # struct xen_sysctl_meminfo
    _fields_ = [("memsize", c_uint64), ("memfree", c_uint64)]


class xc_error(Structure):
    _fields_ = [("code", c_int), ("message", c_char * 1024)]


class xen_compile_info_t(Structure):
    _fields_ = [("compiler", c_char * 64), ("compile_by", c_char * 16),
                ("compile_domain", c_char * 32), ("compile_date", c_char * 32)]


class xen_platform_parameters_t(Structure):
    _fields_ = [("virt_start", c_ulong)]


# name -> (restype, argtypes). xc_interface * and struct xs_handle * are opaque (c_void_p).
XENCTRL_FUNCTIONS: Dict[str, Tuple[object, List[object]]] = {
    "xc_interface_open": (c_void_p, [c_void_p, c_void_p, c_uint]),
    "xc_interface_close": (c_int, [c_void_p]),
    "xc_get_last_error": (POINTER(xc_error), [c_void_p]),
    "xc_clear_last_error": (None, [c_void_p]),
    "xc_physinfo": (c_int, [c_void_p, POINTER(xc_physinfo_t)]),
    "xc_version": (c_int, [c_void_p, c_int, c_void_p]),
    "xc_sched_id": (c_int, [c_void_p, POINTER(c_int)]),
    "xc_readconsolering": (c_int, [c_void_p, c_char_p, POINTER(c_uint), c_int, c_int,
                                   POINTER(c_uint32)]),
    "xc_domain_getinfolist": (c_int, [c_void_p, c_uint32, c_uint, POINTER(xc_domaininfo_t)]),
    "xc_domain_create": (c_int, [c_void_p, POINTER(c_uint32),
                                 POINTER(xen_domctl_createdomain)]),
    "xc_domain_pause": (c_int, [c_void_p, c_uint32]),
    "xc_domain_unpause": (c_int, [c_void_p, c_uint32]),
    "xc_domain_destroy": (c_int, [c_void_p, c_uint32]),
    "xc_domain_shutdown": (c_int, [c_void_p, c_uint32, c_int]),
    "xc_domain_setmaxmem": (c_int, [c_void_p, c_uint32, c_uint64]),
    "xc_vcpu_getinfo": (c_int, [c_void_p, c_uint32, c_uint32, POINTER(xc_vcpuinfo_t)]),
    "xc_get_cpumap_size": (c_int, [c_void_p]),
    "xc_vcpu_setaffinity": (c_int, [c_void_p, c_uint32, c_int, POINTER(c_uint8),
                                    POINTER(c_uint8), c_uint32]),
    "xc_vcpu_getaffinity": (c_int, [c_void_p, c_uint32, c_int, POINTER(c_uint8),
                                    POINTER(c_uint8), c_uint32]),
    "xc_sched_credit_domain_get": (c_int, [c_void_p, c_uint32,
                                           POINTER(xen_domctl_sched_credit)]),
    "xc_sched_credit_domain_set": (c_int, [c_void_p, c_uint32,
                                           POINTER(xen_domctl_sched_credit)]),
    "xc_sched_credit2_domain_get": (c_int, [c_void_p, c_uint32,
                                            POINTER(xen_domctl_sched_credit2)]),
    "xc_sched_credit2_domain_set": (c_int, [c_void_p, c_uint32,
                                            POINTER(xen_domctl_sched_credit2)]),
    "xc_cpupool_create": (c_int, [c_void_p, POINTER(c_uint32), c_uint32]),
    "xc_cpupool_destroy": (c_int, [c_void_p, c_uint32]),
    # NULL when no pool has an id from poolid on; freed with xc_cpupool_infofree
    "xc_cpupool_getinfo": (POINTER(xc_cpupoolinfo_t), [c_void_p, c_uint32]),
    "xc_cpupool_infofree": (None, [c_void_p, POINTER(xc_cpupoolinfo_t)]),
    "xc_cpupool_addcpu": (c_int, [c_void_p, c_uint32, c_int]),
    "xc_cpupool_removecpu": (c_int, [c_void_p, c_uint32, c_int]),
    "xc_cpupool_movedomain": (c_int, [c_void_p, c_uint32, c_uint32]),
    # with NULL arrays: the count in *max_cpus / *max_nodes
    "xc_cputopoinfo": (c_int, [c_void_p, POINTER(c_uint), POINTER(xc_cputopo_t)]),
    "xc_numainfo": (c_int, [c_void_p, POINTER(c_uint), POINTER(xc_meminfo_t),
                            POINTER(c_uint32)]),
}

# libxenguest works on libxenctrl's handle (xc_interface *)
XENGUEST_FUNCTIONS: Dict[str, Tuple[object, List[object]]] = {
    "xc_domain_dumpcore": (c_int, [c_void_p, c_uint32, c_char_p]),
}

XENSTORE_FUNCTIONS: Dict[str, Tuple[object, List[object]]] = {
    "xs_open": (c_void_p, [c_ulong]),
    "xs_close": (None, [c_void_p]),
    # xs_read returns malloc'ed bytes (not necessarily text): c_void_p, freed with free()
    "xs_read": (c_void_p, [c_void_p, c_uint32, c_char_p, POINTER(c_uint)]),
    "xs_write": (c_bool, [c_void_p, c_uint32, c_char_p, c_char_p, c_uint]),
    "xs_directory": (c_void_p, [c_void_p, c_uint32, c_char_p, POINTER(c_uint)]),
    "xs_rm": (c_bool, [c_void_p, c_uint32, c_char_p]),
}
XBT_NULL = 0


def load_library(soname: str, package: str, functions: Dict[str, Tuple[object, List[object]]]
          ) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(soname, use_errno=True)
    except OSError as exc:
        raise HypervisorError(errno.ENOENT, f"cannot load {soname} (install the Debian package "
                                            f"{package}): {exc}") from None
    for name, (restype, argtypes) in functions.items():
        try:
            func = getattr(lib, name)
        except AttributeError:
            raise HypervisorError(errno.ENOSYS, f"{soname} lacks {name}: "
                                                f"not the 4.17 library?") from None
        func.restype = restype
        func.argtypes = argtypes
    return lib


def load_xenctrl() -> ctypes.CDLL:
    """libxenctrl with every function we use declared; HypervisorError if absent."""
    return load_library(XENCTRL_SONAME, XENCTRL_PACKAGE, XENCTRL_FUNCTIONS)


def load_xenguest() -> ctypes.CDLL:
    return load_library(XENGUEST_SONAME, XENCTRL_PACKAGE, XENGUEST_FUNCTIONS)


def load_xenstore() -> ctypes.CDLL:
    return load_library(XENSTORE_SONAME, XENSTORE_PACKAGE, XENSTORE_FUNCTIONS)


def load_libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.free.restype = None
    libc.free.argtypes = [c_void_p]
    return libc
