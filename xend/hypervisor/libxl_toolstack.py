"""Building, tearing down and re-reading real domains through libxenlight (libxl) 4.17.

libxl is Xen's own toolstack library (``xl`` is a thin front end to it): it builds a guest's
memory and kernel (libxenguest), writes the domain's xenstore directories, introduces the
domain to xenstored, hands its console ring to xenconsoled, and creates its devices with
the backend/hotplug protocol (running ``/etc/xen/scripts/block``, ``vif-bridge`` ...) and
tears all of it down again. xend hands it a configuration as JSON (``libxl_config``) and
keeps everything else (on_* actions, managed domains, the store entries of its own) itself.

One context for the xend process, opened lazily on the first call after daemonizing (a
libxl context must not cross a fork). Calls are synchronous (``ao_how`` NULL); ctypes drops
the GIL meanwhile, so other requests go on while a guest boots. libxl's log messages go to
the ``xend.libxl`` logger; those of warning level and above during a call are kept with the
call, so a failure is reported with libxl's own reasons (a hotplug script's ``hotplug-error``
node among them).

Children: libxl forks for hotplug scripts and bootloaders. It is put in the
``always_selective_reap`` mode, so it reaps only its own children and Python's own
``subprocess`` calls keep their exit statuses.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import threading
from ctypes import byref, c_uint32, c_void_p
from typing import Any, Callable, Dict, Iterator, List, Optional

from ..errors import HypervisorError
from . import libxl_api as A
from . import libxl_config
from .base import DeviceSpec, DomainSpec

log = logging.getLogger("xend.libxl")

_LEVELS = {A.XTL_DEBUG: logging.DEBUG, A.XTL_VERBOSE: logging.DEBUG,
           A.XTL_DETAIL: logging.DEBUG, A.XTL_PROGRESS: logging.DEBUG,
           A.XTL_INFO: logging.INFO, A.XTL_NOTICE: logging.INFO,
           A.XTL_WARN: logging.WARNING, A.XTL_ERROR: logging.ERROR,
           A.XTL_CRITICAL: logging.CRITICAL}
_MESSAGE_MAX = 4096
WARNING_MARK = "\x00w:"        # a kept message of warning level (not an error)
#: how many of libxl's messages a failure report quotes (the last ones)
_REPORT_LINES = 4
INVALID_DOMID = 0x7FF4      # DOMID_INVALID of xen.h: "no domain" in log messages
#: what libxl_domain_suspend writes in 4.17 (its "LibxlFmt" stream, version 2)
STREAM_VERSION = 2

ProgressCallback = Callable[[str, int, int, int], None]


class LibxlError(HypervisorError):
    """A libxl call failed; ``messages`` are libxl's warnings and errors during it."""

    def __init__(self, err: int, message: str, messages: List[str]):
        super().__init__(err, message)
        self.messages = messages


class LibxlToolstack:
    def __init__(self) -> None:
        self._lib = A.load_libxl()
        self._vsnprintf = A.load_vsnprintf()
        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.free.argtypes = [c_void_p]
        self._libc.free.restype = None
        self._pid = os.getpid()
        self._local = threading.local()
        # the callbacks must live as long as the context: kept on self
        self._callbacks = (A.VMESSAGE(self._on_message), A.PROGRESS(self._on_progress),
                           A.DESTROY(lambda _logger: None))
        self._logger = A.xentoollog_logger(*self._callbacks)
        ctx = c_void_p()
        rc = self._lib.libxl_ctx_alloc(byref(ctx), A.LIBXL_VERSION, 0, byref(self._logger))
        if rc or not ctx:
            raise HypervisorError(errno.EIO, "cannot open a libxl context: "
                                             + A.describe_error(rc))
        self._ctx = ctx
        self._hooks = A.libxl_childproc_hooks(
            chldowner=A.LIBXL_SIGCHLD_OWNER_LIBXL_ALWAYS_SELECTIVE_REAP)
        self._lib.libxl_childproc_setmode(ctx, byref(self._hooks), None)

    # -- libxl's log ----------------------------------------------------------------------------
    def _on_message(self, _logger: Any, level: int, errnoval: int, context: Optional[bytes],
                    fmt: Optional[bytes], args: Optional[int]) -> None:
        try:
            buf = ctypes.create_string_buffer(_MESSAGE_MAX)
            if fmt:
                self._vsnprintf(buf, _MESSAGE_MAX, fmt, args)
            text = buf.value.decode(errors="replace").rstrip()
            if errnoval is not None and errnoval > 0:
                text = f"{text}: {os.strerror(errnoval)}"
            where = context.decode(errors="replace") if context else "libxl"
            log.log(_LEVELS.get(level, logging.INFO), "%s: %s", where, text)
            kept = getattr(self._local, "messages", None)
            if kept is not None and level >= A.XTL_WARN:
                # errors first in a failure's report, warnings after them
                kept.append(text if level >= A.XTL_ERROR else WARNING_MARK + text)
        except Exception:  # noqa: BLE001 - never let an exception unwind into C
            pass

    def _on_progress(self, _logger: Any, context: Optional[bytes], doing: Optional[bytes],
                     percent: int, done: int, total: int) -> None:
        try:
            callback = getattr(self._local, "progress", None)
            if callback is not None:
                callback((doing or b"").decode(errors="replace"), percent, done, total)
        except Exception:  # noqa: BLE001
            pass

    @contextlib.contextmanager
    def _call(self, progress: Optional[ProgressCallback] = None) -> Iterator[List[str]]:
        if os.getpid() != self._pid:
            raise HypervisorError(errno.EINVAL, "libxl context used across fork()")
        messages: List[str] = []
        outer = getattr(self._local, "messages", None), getattr(self._local, "progress", None)
        self._local.messages, self._local.progress = messages, progress
        try:
            yield messages
        finally:
            self._local.messages, self._local.progress = outer

    def _fail(self, rc: int, what: str, messages: List[str]) -> LibxlError:
        errors = [m for m in messages if m and not m.startswith(WARNING_MARK)]
        warnings = [m[len(WARNING_MARK):] for m in messages if m.startswith(WARNING_MARK)]
        reasons = errors + warnings
        # the first errors are the cause (a hotplug script's own error, say); what follows
        # is libxl undoing the half-built domain. One line each, no repeats.
        quoted: List[str] = []
        for m in reasons:
            if m not in quoted:
                quoted.append(m)
            if len(quoted) == _REPORT_LINES:
                break
        detail = "; ".join(quoted) if quoted else A.describe_error(rc)
        return LibxlError(A.LIBXL_ERRNO.get(rc, errno.EIO), f"{what}: {detail}", reasons)

    # -- configurations -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _domain_config(self, text: Optional[str], messages: List[str]) -> Iterator[Any]:
        cfg = A.opaque("libxl_domain_config")
        self._lib.libxl_domain_config_init(cfg)
        try:
            if text is not None:
                rc = self._lib.libxl_domain_config_from_json(self._ctx, cfg, text.encode())
                if rc:
                    raise self._fail(rc, "libxl refused the domain configuration", messages)
            yield cfg
        finally:
            self._lib.libxl_domain_config_dispose(cfg)

    def _to_json(self, cfg: Any) -> Optional[Dict[str, Any]]:
        ptr = self._lib.libxl_domain_config_to_json(self._ctx, cfg)
        if not ptr:
            return None
        try:
            return json.loads(ctypes.string_at(ptr).decode(errors="replace"))
        except ValueError:
            return None
        finally:
            self._libc.free(ptr)

    # -- domains --------------------------------------------------------------------------------
    def create(self, spec: DomainSpec) -> int:
        """Build ``spec`` with its devices, left paused; libxl undoes a half-built domain
        itself before it returns a failure."""
        text = libxl_config.domain_json(spec)
        log.debug("libxl configuration of %s: %s", spec.name, text)
        domid = c_uint32(0)
        with self._call() as messages, self._domain_config(text, messages) as cfg:
            rc = self._lib.libxl_domain_create_new(self._ctx, cfg, byref(domid), None, None)
            if rc:
                raise self._fail(rc, f"building domain {spec.name} failed", messages)
        return domid.value

    def memory_needed_kib(self, spec: DomainSpec) -> int:
        """What building ``spec`` takes from the host's free memory (libxl's own figure:
        the guest's memory plus what Xen needs beside it)."""
        need = ctypes.c_uint64(0)
        with self._call() as messages, \
                self._domain_config(libxl_config.domain_json(spec), messages) as cfg:
            rc = self._lib.libxl_domain_need_memory(self._ctx, cfg, INVALID_DOMID, byref(need))
            if rc:
                raise self._fail(rc, f"cannot size domain {spec.name}", messages)
        return int(need.value)

    # -- migration streams (libxl's stream v2) --------------------------------------------------
    def save(self, domid: int, fd: int, live: bool) -> None:
        """The domain's stream to ``fd`` (libxl's save helper writes it); the domain is left
        suspended."""
        flags = A.LIBXL_SUSPEND_LIVE if live else 0
        with self._call() as messages:
            rc = self._lib.libxl_domain_suspend(self._ctx, domid, fd, flags, None)
        if rc:
            raise self._fail(rc, f"saving domain {domid} failed", messages)

    def resume(self, domid: int) -> None:
        """A suspended domain runs on (the guest sees its suspend cancelled, as after a
        checkpoint)."""
        with self._call() as messages:
            rc = self._lib.libxl_domain_resume(self._ctx, domid, 1, None)
        if rc:
            raise self._fail(rc, f"resuming domain {domid} failed", messages)

    def restore(self, spec: DomainSpec, fd: int) -> int:
        """Build ``spec`` from the stream on ``fd``, left paused; libxl undoes a half-built
        domain itself before it returns a failure."""
        text = libxl_config.domain_json(spec)
        domid = c_uint32(0)
        params = A.libxl_domain_restore_params()
        self._lib.libxl_domain_restore_params_init(byref(params))
        params.stream_version = STREAM_VERSION
        try:
            with self._call() as messages, self._domain_config(text, messages) as cfg:
                rc = self._lib.libxl_domain_create_restore(self._ctx, cfg, byref(domid), fd, -1,
                                                          byref(params), None, None)
                if rc:
                    raise self._fail(rc, f"restoring domain {spec.name} failed", messages)
        finally:
            self._lib.libxl_domain_restore_params_dispose(byref(params))
        return domid.value

    def destroy(self, domid: int) -> None:
        """Destroy the domain and everything libxl set up for it (devices and their hotplug
        scripts, loop devices, the device model, its xenstore directories)."""
        with self._call() as messages:
            rc = self._lib.libxl_domain_destroy(self._ctx, domid, None)
        if rc:
            raise self._fail(rc, f"destroying domain {domid} failed", messages)

    def unpause(self, domid: int) -> None:
        with self._call() as messages:
            rc = self._lib.libxl_domain_unpause(self._ctx, domid, None)
        if rc:
            raise self._fail(rc, f"unpausing domain {domid} failed", messages)

    def configuration(self, domid: int) -> Optional[Dict[str, Any]]:
        """The configuration libxl keeps for ``domid`` (as JSON data), or None when libxl
        keeps none (a domain another toolstack built without libxl)."""
        with self._call() as messages, self._domain_config(None, messages) as cfg:
            rc = self._lib.libxl_retrieve_domain_configuration(self._ctx, domid, cfg, None)
            if rc:
                log.debug("no libxl configuration for domain %d: %s", domid,
                          "; ".join(messages) or A.describe_error(rc))
                return None
            return self._to_json(cfg)

    # -- devices of a running domain ------------------------------------------------------------
    def _device(self, kind: str, dev: DeviceSpec, action: str, domid: int) -> None:
        to_json = libxl_config.disk_json if kind == "disk" else libxl_config.nic_json
        self._json_device(kind, dev, action, domid, to_json(dev))

    def add_disk(self, domid: int, dev: DeviceSpec) -> None:
        self._device("disk", dev, "add", domid)

    def remove_disk(self, domid: int, dev: DeviceSpec, force: bool = False) -> None:
        vdev = dev.backend.get("dev", "").partition(":")[0] or str(dev.devid)
        if vdev.startswith("ioemu:"):
            vdev = vdev[len("ioemu:"):]
        self._remove_found("disk", domid, dev, force,
                           lambda buf: self._lib.libxl_vdev_to_device_disk(
                               self._ctx, domid, vdev.encode(), buf))

    def add_nic(self, domid: int, dev: DeviceSpec) -> None:
        self._device("nic", dev, "add", domid)

    def remove_nic(self, domid: int, dev: DeviceSpec, force: bool = False) -> None:
        self._remove_found("nic", domid, dev, force,
                           lambda buf: self._lib.libxl_devid_to_device_nic(
                               self._ctx, domid, int(dev.devid), buf))

    def _remove_found(self, kind: str, domid: int, dev: DeviceSpec, force: bool,
                      find: Callable[[Any], int]) -> None:
        """Remove a device as libxl reads it back from the store (as xl's block-detach and
        network-detach do): libxl needs what it decided at the add (the disk's backend
        type, the nic's script), which xend's config does not carry."""
        self._device_call(kind, "destroy" if force else "remove", domid, dev, find,
                          f"domain {domid} has no {kind} {dev.devid}")

    # -- added for hot-plug: cdroms, PCI, nics of HVM guests, triggers, debug keys -----------
    def add_nic_hvm(self, domid: int, dev: DeviceSpec) -> None:
        """A nic for an HVM guest (emulated as well as PV, as at its build)."""
        self._json_device("nic", dev, "add", domid, libxl_config.nic_json(dev, True))

    def insert_cdrom(self, domid: int, dev: DeviceSpec) -> None:
        """Change the medium of the cdrom ``dev`` (its ``uname``; none: eject)."""
        self._json_device("disk", dev, "cdrom_insert", domid, libxl_config.disk_json(dev))

    def add_pci(self, domid: int, dev: DeviceSpec) -> None:
        self._json_device("pci", dev, "add", domid, libxl_config.pci_json(dev))

    def remove_pci(self, domid: int, dev: DeviceSpec, force: bool = False) -> None:
        self._json_device("pci", dev, "destroy" if force else "remove", domid,
                          libxl_config.pci_json(dev))

    def _json_device(self, kind: str, dev: DeviceSpec, action: str, domid: int,
                     data: Dict[str, Any]) -> None:
        text = json.dumps(data)
        from_json = getattr(self._lib, f"libxl_device_{kind}_from_json")
        self._device_call(kind, action, domid, dev,
                          lambda buf: from_json(self._ctx, buf, text.encode()),
                          f"libxl refused the {kind} {text}")

    def _device_call(self, kind: str, action: str, domid: int, dev: DeviceSpec,
                     fill: Callable[[Any], int], fill_error: str) -> None:
        """``libxl_device_KIND_ACTION`` (or ``libxl_cdrom_insert``) of a device structure
        that ``fill`` makes (from JSON, or read back from the store)."""
        lib = self._lib
        buf = A.opaque(f"libxl_device_{kind}")
        getattr(lib, f"libxl_device_{kind}_init")(buf)
        call = getattr(lib, "libxl_cdrom_insert" if action == "cdrom_insert"
                       else f"libxl_device_{kind}_{action}")
        try:
            with self._call() as messages:
                rc = fill(buf)
                if rc:
                    raise self._fail(rc, fill_error, messages)
                rc = call(self._ctx, domid, buf, None)
                if rc:
                    raise self._fail(rc, f"{action} of {kind} {dev.devid} of domain {domid} "
                                         f"failed", messages)
        finally:
            getattr(lib, f"libxl_device_{kind}_dispose")(buf)

    def send_trigger(self, domid: int, trigger: str, vcpu: int) -> None:
        with self._call() as messages:
            rc = self._lib.libxl_send_trigger(self._ctx, domid, A.LIBXL_TRIGGERS[trigger],
                                              vcpu, None)
        if rc:
            raise self._fail(rc, f"trigger {trigger} to domain {domid} failed", messages)

    def send_debug_keys(self, keys: str) -> None:
        with self._call() as messages:
            rc = self._lib.libxl_send_debug_keys(self._ctx, keys.encode())
        if rc:
            raise self._fail(rc, "sending debug keys failed", messages)

    def close(self) -> None:
        if self._ctx and os.getpid() == self._pid:
            self._lib.libxl_ctx_free(self._ctx)
        self._ctx = None
