"""ctypes declarations for libxenlight (libxl) 4.17 and libxentoollog (x86_64).

Only declarations and loading live here; ``libxl_toolstack.py`` uses them. libxl's own
structures (``libxl_domain_config``, ``libxl_device_disk`` ...) are never laid out field by
field: they are opaque, zeroed buffers of the size the 4.17 headers give, initialised with
``libxl_<type>_init`` and filled from JSON with ``libxl_<type>_from_json`` (the IDL's own
serialisation, the same one ``xl create -n`` prints). What we do lay out ourselves (the
logger, the child-process hooks, the restore parameters) mirrors the headers field by field;
``tests/test_xenctrl_binding.py`` compiles a C program against libxen-dev's headers and
compares every size and offset here, the opaque sizes included.
"""
from __future__ import annotations

import ctypes
import errno
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_uint, c_uint32, c_ulong,
                    c_void_p)
from typing import Dict, List, Tuple

from .libxen import load_library

LIBXL_SONAME = "libxenlight.so.4.17"
XENTOOLLOG_SONAME = "libxentoollog.so.1"
LIBXL_PACKAGE = "libxenmisc4.17"
#: libxl_ctx_alloc's version argument (LIBXL_VERSION in libxl.h)
LIBXL_VERSION = 0

# sizeof() of the opaque libxl structures in 4.17 (x86_64), checked by the layout test
SIZEOF = {
    "libxl_domain_config": 1288,
    "libxl_device_disk": 144,
    "libxl_device_nic": 504,
    "libxl_device_vfb": 88,
    "libxl_device_vkb": 64,
    "libxl_device_pci": 32,
}

# _libxl_types.h: libxl_trigger
LIBXL_TRIGGERS = {"power": 1, "sleep": 2, "nmi": 3, "init": 4, "reset": 5, "s3resume": 6}

# xentoollog.h: xentoollog_level
XTL_DEBUG, XTL_VERBOSE, XTL_DETAIL, XTL_PROGRESS, XTL_INFO, XTL_NOTICE, XTL_WARN, XTL_ERROR, \
    XTL_CRITICAL = range(1, 10)

# libxl_event.h: libxl_sigchld_owner
LIBXL_SIGCHLD_OWNER_LIBXL = 0
LIBXL_SIGCHLD_OWNER_MAINLOOP = 1
LIBXL_SIGCHLD_OWNER_LIBXL_ALWAYS = 2
LIBXL_SIGCHLD_OWNER_LIBXL_ALWAYS_SELECTIVE_REAP = 3

# libxl.h
LIBXL_SUSPEND_DEBUG = 1
LIBXL_SUSPEND_LIVE = 2

# _libxl_types.h: libxl_error -> what it means, for messages
LIBXL_ERRORS = {
    -1: "nonspecific error", -2: "version mismatch", -3: "failed", -4: "not implemented",
    -5: "out of memory", -6: "invalid argument", -7: "bad failure", -8: "guest timed out",
    -9: "timed out", -10: "no paravirtualised drivers", -11: "not ready",
    -12: "event registration failed", -13: "buffer full", -14: "unknown child",
    -15: "lock failed", -16: "empty JSON config", -17: "device exists",
    -21: "domain not found", -22: "aborted", -23: "not found", -24: "domain destroyed",
    -25: "feature removed",
}
#: libxl error -> errno for HypervisorError
LIBXL_ERRNO = {-5: errno.ENOMEM, -6: errno.EINVAL, -4: errno.ENOSYS, -9: errno.ETIMEDOUT,
               -8: errno.ETIMEDOUT, -17: errno.EEXIST, -21: errno.ESRCH, -23: errno.ENOENT,
               -24: errno.ESRCH}


class xentoollog_logger(Structure):
    """struct xentoollog_logger: three function pointers (the callbacks are set by the user;
    ``vmessage`` receives a ``va_list``, which on x86_64 arrives as a pointer)."""


VMESSAGE = CFUNCTYPE(None, POINTER(xentoollog_logger), c_int, c_int, c_char_p, c_char_p,
                     c_void_p)
PROGRESS = CFUNCTYPE(None, POINTER(xentoollog_logger), c_char_p, c_char_p, c_int, c_ulong,
                     c_ulong)
DESTROY = CFUNCTYPE(None, POINTER(xentoollog_logger))
xentoollog_logger._fields_ = [("vmessage", VMESSAGE), ("progress", PROGRESS),
                              ("destroy", DESTROY)]


class libxl_childproc_hooks(Structure):
    _fields_ = [("chldowner", c_int), ("fork_replacement", c_void_p),
                ("reaped_callback", c_void_p)]


class libxl_domain_restore_params(Structure):
    _fields_ = [("checkpointed_stream", c_int), ("stream_version", c_uint32),
                ("colo_proxy_script", c_char_p), ("userspace_colo_proxy", c_int)]


def opaque(type_name: str) -> ctypes.Array:
    """A zeroed buffer for one ``type_name`` (aligned as malloc would align it)."""
    size = SIZEOF[type_name]
    return (ctypes.c_uint64 * ((size + 7) // 8))()


_CTX = c_void_p
_AO = c_void_p          # const libxl_asyncop_how * (NULL: synchronous)

LIBXL_FUNCTIONS: Dict[str, Tuple[object, List[object]]] = {
    "libxl_ctx_alloc": (c_int, [POINTER(c_void_p), c_int, c_uint, c_void_p]),
    "libxl_ctx_free": (c_int, [_CTX]),
    "libxl_childproc_setmode": (None, [_CTX, POINTER(libxl_childproc_hooks), c_void_p]),
    "libxl_domain_config_init": (None, [c_void_p]),
    "libxl_domain_config_dispose": (None, [c_void_p]),
    "libxl_domain_config_from_json": (c_int, [_CTX, c_void_p, c_char_p]),
    # returns malloc'ed text: c_void_p, freed with free()
    "libxl_domain_config_to_json": (c_void_p, [_CTX, c_void_p]),
    "libxl_domain_create_new": (c_int, [_CTX, c_void_p, POINTER(c_uint32), _AO, c_void_p]),
    "libxl_domain_create_restore": (c_int, [_CTX, c_void_p, POINTER(c_uint32), c_int, c_int,
                                            POINTER(libxl_domain_restore_params), _AO,
                                            c_void_p]),
    "libxl_domain_restore_params_init": (None, [POINTER(libxl_domain_restore_params)]),
    "libxl_domain_restore_params_dispose": (None, [POINTER(libxl_domain_restore_params)]),
    "libxl_domain_suspend": (c_int, [_CTX, c_uint32, c_int, c_int, _AO]),
    "libxl_domain_resume": (c_int, [_CTX, c_uint32, c_int, _AO]),
    "libxl_domain_destroy": (c_int, [_CTX, c_uint32, _AO]),
    "libxl_domain_unpause": (c_int, [_CTX, c_uint32, _AO]),
    "libxl_retrieve_domain_configuration": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_domain_need_memory": (c_int, [_CTX, c_void_p, c_uint32, POINTER(ctypes.c_uint64)]),
    "libxl_device_disk_init": (None, [c_void_p]),
    "libxl_device_disk_dispose": (None, [c_void_p]),
    "libxl_device_disk_from_json": (c_int, [_CTX, c_void_p, c_char_p]),
    "libxl_device_disk_add": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_disk_remove": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_disk_destroy": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_nic_init": (None, [c_void_p]),
    "libxl_device_nic_dispose": (None, [c_void_p]),
    "libxl_device_nic_from_json": (c_int, [_CTX, c_void_p, c_char_p]),
    "libxl_device_nic_add": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_nic_remove": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_nic_destroy": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_cdrom_insert": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    # libxl_utils.h: a device of a running domain as libxl reads it back from the store
    "libxl_vdev_to_device_disk": (c_int, [_CTX, c_uint32, c_char_p, c_void_p]),
    "libxl_devid_to_device_nic": (c_int, [_CTX, c_uint32, c_int, c_void_p]),
    "libxl_device_pci_init": (None, [c_void_p]),
    "libxl_device_pci_dispose": (None, [c_void_p]),
    "libxl_device_pci_from_json": (c_int, [_CTX, c_void_p, c_char_p]),
    "libxl_device_pci_add": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_pci_remove": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    "libxl_device_pci_destroy": (c_int, [_CTX, c_uint32, c_void_p, _AO]),
    # libxl_trigger is an enum: an int
    "libxl_send_trigger": (c_int, [_CTX, c_uint32, c_int, c_uint32, _AO]),
    "libxl_send_debug_keys": (c_int, [_CTX, c_char_p]),
}


def load_libxl() -> ctypes.CDLL:
    """libxenlight with every function we use declared; HypervisorError if absent."""
    return load_library(LIBXL_SONAME, LIBXL_PACKAGE, LIBXL_FUNCTIONS)


def load_vsnprintf() -> ctypes._CFuncPtr:
    """libc's vsnprintf(buf, size, format, va_list) to expand a logger's message."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    func = libc.vsnprintf
    func.restype = c_int
    func.argtypes = [c_char_p, ctypes.c_size_t, c_char_p, c_void_p]
    return func


def describe_error(rc: int) -> str:
    return LIBXL_ERRORS.get(rc, f"error {rc}")
