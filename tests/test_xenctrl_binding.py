"""The ctypes binding to libxenctrl 4.17: library, symbols, struct layouts against the C
headers, and the error path on a host without Xen. Real hypervisor calls are not made here."""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
from typing import Dict, List, Tuple

import pytest

from xend.errors import HypervisorError
from xend.hypervisor import libxen, libxl_api, make_hypervisor

pytestmark = pytest.mark.timeout(60)


def _cdll(soname: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(soname)
    except OSError:
        pytest.skip(f"{soname} not installed (Debian package {libxen.XENCTRL_PACKAGE})")


@pytest.fixture(scope="module")
def xenctrl() -> ctypes.CDLL:
    _cdll(libxen.XENCTRL_SONAME)
    return libxen.load_xenctrl()


def test_every_bound_function_is_exported(xenctrl):
    missing = [name for name in libxen.XENCTRL_FUNCTIONS if not hasattr(xenctrl, name)]
    assert missing == []
    assert xenctrl.xc_physinfo.argtypes[1]._type_ is libxen.xc_physinfo_t
    assert xenctrl.xc_interface_open.restype is ctypes.c_void_p


def test_every_bound_xenstore_function_is_exported():
    _cdll(libxen.XENSTORE_SONAME)
    lib = libxen.load_xenstore()
    assert [name for name in libxen.XENSTORE_FUNCTIONS if not hasattr(lib, name)] == []


def test_a_missing_library_names_its_package():
    with pytest.raises(HypervisorError) as caught:
        libxen.load_library("libxenctrl.so.0.404", "libxenmisc4.17", {})
    assert caught.value.errno == errno.ENOENT and "libxenmisc4.17" in caught.value.message


def test_without_xen_opening_fails_clearly(xenctrl):
    if any(os.path.exists(p) for p in ("/dev/xen/privcmd", "/proc/xen/privcmd")):
        pytest.skip("this host has a Xen privcmd device")
    from xend.hypervisor.xenctrl import XenctrlHypervisor
    for attempt in (XenctrlHypervisor, lambda: make_hypervisor({"hypervisor-backend": "xenctrl"})):
        with pytest.raises(HypervisorError) as caught:
            attempt()
        assert caught.value.errno == errno.ENOENT
        assert caught.value.message == "no Xen hypervisor on this host"


# -- layouts against the C compiler ----------------------------------------------------------
#: every Structure of the binding and its C type
C_TYPES: Dict[type, str] = {
    libxen.xc_physinfo_t: "xc_physinfo_t",
    libxen.xc_domaininfo_t: "xc_domaininfo_t",
    libxen.xen_domctl_createdomain: "struct xen_domctl_createdomain",
    libxen.xen_domctl_sched_credit: "struct xen_domctl_sched_credit",
    libxen.xen_domctl_sched_credit2: "struct xen_domctl_sched_credit2",
    libxen.xen_arch_domainconfig: "struct xen_arch_domainconfig",
    libxen.xc_vcpuinfo_t: "xc_vcpuinfo_t",
    libxen.xc_error: "xc_error",
    libxen.xc_cpupoolinfo_t: "xc_cpupoolinfo_t",
    libxen.xc_cputopo_t: "xc_cputopo_t",
    libxen.xc_meminfo_t: "xc_meminfo_t",
    libxen.xen_compile_info_t: "xen_compile_info_t",
    libxen.xen_platform_parameters_t: "xen_platform_parameters_t",
}
#: constants of the binding and their C names
C_CONSTANTS = {
    "XEN_DOMINF_dying": "XEN_DOMINF_dying", "XEN_DOMINF_hvm_guest": "XEN_DOMINF_hvm_guest",
    "XEN_DOMINF_shutdown": "XEN_DOMINF_shutdown", "XEN_DOMINF_paused": "XEN_DOMINF_paused",
    "XEN_DOMINF_blocked": "XEN_DOMINF_blocked", "XEN_DOMINF_running": "XEN_DOMINF_running",
    "XEN_DOMINF_shutdownshift": "XEN_DOMINF_shutdownshift",
    "XEN_DOMINF_shutdownmask": "XEN_DOMINF_shutdownmask",
    "XEN_DOMCTL_CDF_hvm": "XEN_DOMCTL_CDF_hvm", "XEN_DOMCTL_CDF_hap": "XEN_DOMCTL_CDF_hap",
    "XEN_VCPUAFFINITY_HARD": "XEN_VCPUAFFINITY_HARD",
    "XEN_VCPUAFFINITY_SOFT": "XEN_VCPUAFFINITY_SOFT",
    "XEN_X86_EMU_HVM": "(XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI)",
    "XEN_SYSCTL_PHYSCAP_hvm": "XEN_SYSCTL_PHYSCAP_hvm",
    "XEN_SYSCTL_PHYSCAP_directio": "XEN_SYSCTL_PHYSCAP_directio",
    "XEN_SYSCTL_PHYSCAP_hap": "XEN_SYSCTL_PHYSCAP_hap",
    "XEN_SYSCTL_PHYSCAP_pv": "XEN_SYSCTL_PHYSCAP_pv",
    "XEN_SYSCTL_PHYSCAP_shadow": "XEN_SYSCTL_PHYSCAP_shadow",
    "XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share": "XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share",
    "XEN_SYSCTL_PHYSCAP_vmtrace": "XEN_SYSCTL_PHYSCAP_vmtrace",
    "XEN_SYSCTL_PHYSCAP_vpmu": "XEN_SYSCTL_PHYSCAP_vpmu",
    "XEN_SYSCTL_PHYSCAP_gnttab_v1": "XEN_SYSCTL_PHYSCAP_gnttab_v1",
    "XEN_SYSCTL_PHYSCAP_gnttab_v2": "XEN_SYSCTL_PHYSCAP_gnttab_v2",
    "XEN_INVALID_ID": "XEN_INVALID_CORE_ID",
    "XENVER_version": "XENVER_version", "XENVER_extraversion": "XENVER_extraversion",
    "XENVER_compile_info": "XENVER_compile_info", "XENVER_capabilities": "XENVER_capabilities",
    "XENVER_changeset": "XENVER_changeset",
    "XENVER_platform_parameters": "XENVER_platform_parameters",
    "XENVER_pagesize": "XENVER_pagesize", "XENVER_commandline": "XENVER_commandline",
    "DOMID_FIRST_RESERVED": "DOMID_FIRST_RESERVED", "XBT_NULL": "XBT_NULL",
}


def _fields(struct: type) -> List[Tuple[str, int, int]]:
    return [(name, getattr(struct, name).offset, getattr(struct, name).size)
            for name, *_ in struct._fields_]


LIBXL_INCLUDES = ("libxl.h", "libxl_event.h", "xentoollog.h")
#: the libxl binding's own Structures and their C types
LIBXL_C_TYPES: Dict[type, str] = {
    libxl_api.xentoollog_logger: "xentoollog_logger",
    libxl_api.libxl_childproc_hooks: "libxl_childproc_hooks",
    libxl_api.libxl_domain_restore_params: "libxl_domain_restore_params",
}
LIBXL_C_CONSTANTS = {
    "XTL_DEBUG": "XTL_DEBUG", "XTL_INFO": "XTL_INFO", "XTL_WARN": "XTL_WARN",
    "XTL_ERROR": "XTL_ERROR", "XTL_CRITICAL": "XTL_CRITICAL",
    "LIBXL_SIGCHLD_OWNER_LIBXL": "libxl_sigchld_owner_libxl",
    "LIBXL_SIGCHLD_OWNER_LIBXL_ALWAYS_SELECTIVE_REAP":
        "libxl_sigchld_owner_libxl_always_selective_reap",
    "LIBXL_SUSPEND_LIVE": "LIBXL_SUSPEND_LIVE", "LIBXL_SUSPEND_DEBUG": "LIBXL_SUSPEND_DEBUG",
}


def _c_program(types: Dict[type, str], constants: Dict[str, str] = C_CONSTANTS,
               includes=("xenctrl.h", "xenstore.h", "xen/version.h"),
               opaque: Dict[str, int] = None) -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <stdint.h>"]
    lines += [f"#include <{h}>" for h in includes]
    lines.append("int main(void) {")
    for struct, c_type in types.items():
        lines.append(f'  printf("sizeof:{struct.__name__} %zu\\n", sizeof({c_type}));')
        for name, _, _ in _fields(struct):
            lines.append(f'  printf("{struct.__name__}.{name} %zu %zu\\n", '
                         f'offsetof({c_type}, {name}), sizeof((({c_type} *)0)->{name}));')
    for c_type in opaque or {}:
        lines.append(f'  printf("opaque:{c_type} %zu\\n", sizeof({c_type}));')
    for name, c_expr in constants.items():
        lines.append(f'  printf("const:{name} %llu\\n", (unsigned long long)({c_expr}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _compile_and_run(source: str, workdir) -> Dict[str, List[int]]:
    if not shutil.which("gcc") or not os.path.exists("/usr/include/xenctrl.h"):
        pytest.skip("needs gcc and libxen-dev's headers")
    (workdir / "layout.c").write_text(source)
    build = subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(workdir / "layout"),
                            str(workdir / "layout.c")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(workdir / "layout")], capture_output=True, text=True, check=True)
    return {key: [int(v) for v in rest.split()]
            for key, rest in (line.split(" ", 1) for line in out.stdout.splitlines())}


def _mismatches(types: Dict[type, str], measured: Dict[str, List[int]]) -> List[str]:
    problems = []
    for struct in types:
        key = struct.__name__
        if measured[f"sizeof:{key}"] != [ctypes.sizeof(struct)]:
            problems.append(f"sizeof {key}: ctypes {ctypes.sizeof(struct)}, "
                            f"C {measured[f'sizeof:{key}']}")
        for name, offset, size in _fields(struct):
            if measured[f"{key}.{name}"] != [offset, size]:
                problems.append(f"{key}.{name}: ctypes offset/size {offset}/{size}, "
                                f"C {measured[f'{key}.{name}']}")
    return problems


def test_every_structure_has_a_layout_check():
    structures = {obj for obj in vars(libxen).values()
                  if isinstance(obj, type) and issubclass(obj, ctypes.Structure)
                  and obj.__module__ == libxen.__name__}
    assert structures == set(C_TYPES)


def test_structures_match_the_c_headers(tmp_path):
    measured = _compile_and_run(_c_program(C_TYPES), tmp_path)
    assert _mismatches(C_TYPES, measured) == []
    compared = sum(len(s._fields_) for s in C_TYPES)
    assert compared >= 60


def test_constants_match_the_c_headers(tmp_path):
    measured = _compile_and_run(_c_program({}), tmp_path)
    wrong = {name: (getattr(libxen, name), measured[f"const:{name}"][0])
             for name in C_CONSTANTS if [getattr(libxen, name)] != measured[f"const:{name}"]}
    assert wrong == {}


# -- libxenlight ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def libxl() -> ctypes.CDLL:
    _cdll(libxl_api.LIBXL_SONAME)
    return libxl_api.load_libxl()


def test_every_bound_libxl_function_is_exported(libxl):
    missing = [n for n in libxl_api.LIBXL_FUNCTIONS if not hasattr(libxl, n)]
    assert missing == []
    _cdll(libxen.XENGUEST_SONAME)
    assert [n for n in libxen.XENGUEST_FUNCTIONS if not hasattr(libxen.load_xenguest(), n)] \
        == []


def test_every_libxl_structure_has_a_layout_check():
    structures = {obj for obj in vars(libxl_api).values()
                  if isinstance(obj, type) and issubclass(obj, ctypes.Structure)
                  and obj.__module__ == libxl_api.__name__}
    assert structures == set(LIBXL_C_TYPES)


def test_libxl_structures_and_sizes_match_the_c_headers(tmp_path):
    """Our own layouts field by field, the opaque buffers' sizes, the constants."""
    if not os.path.exists("/usr/include/libxl.h"):
        pytest.skip("needs libxen-dev's libxl headers")
    source = _c_program(LIBXL_C_TYPES, LIBXL_C_CONSTANTS, LIBXL_INCLUDES, libxl_api.SIZEOF)
    measured = _compile_and_run(source, tmp_path)
    assert _mismatches(LIBXL_C_TYPES, measured) == []
    sizes = {name: measured[f"opaque:{name}"][0] for name in libxl_api.SIZEOF}
    assert sizes == libxl_api.SIZEOF
    wrong = {name: (getattr(libxl_api, name), measured[f"const:{name}"][0])
             for name in LIBXL_C_CONSTANTS
             if [getattr(libxl_api, name)] != measured[f"const:{name}"]}
    assert wrong == {}
    # the opaque buffers hold at least the C type
    for name, size in libxl_api.SIZEOF.items():
        assert ctypes.sizeof(libxl_api.opaque(name)) >= size


def test_a_wrong_layout_is_caught(tmp_path):
    """The check itself: a copy of xc_domaininfo_t with one field too narrow must fail."""
    fields = [(n, ctypes.c_uint32 if n == "tot_pages" else t)
              for n, t in libxen.xc_domaininfo_t._fields_]
    broken = type("xc_domaininfo_t", (ctypes.Structure,), {"_fields_": fields})
    measured = _compile_and_run(_c_program({broken: "xc_domaininfo_t"}), tmp_path)
    problems = _mismatches({broken: "xc_domaininfo_t"}, measured)
    assert any("tot_pages" in p for p in problems) and any("sizeof" not in p for p in problems)
