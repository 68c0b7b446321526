"""One domain as xend knows it: its configuration, its Xen domain (if any), its store entries.

A Domain outlives its Xen domains: a managed domain exists while halted, and a restart gives
the same Domain a new domid. Locks:

* ``lock``    (short) guards field updates; never held across a hypervisor wait;
* ``op_lock`` serialises the long operations on this domain (save, dump, restart,
  suspend/resume, start, reset). Listing never takes it.

The store layout follows xenstore's: ``/local/domain/<id>/...`` for the running instance
(name, vm, memory/target, control/shutdown, console/limit, xend/...), ``/vm/<uuid>/...`` for
what survives a restart (name, memory, start_time, xend/config, xend/restart_count ...).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Dict, Optional

from xend import sxp
from xend.errors import HypervisorError
from xend.hypervisor.base import DomainInfo, Hypervisor

from .config import DomainConfig, RecordCache, Runtime, config_sxp
from .states import DOM0_ID, power_state

log = logging.getLogger("xend.XendDomainInfo")

_serials = itertools.count(1)
#: attributes that change what a domain is found by (name and uuid come with the config)
_KEY_ATTRIBUTES = frozenset(("config", "domid"))


class Domain:
    def __init__(self, hv: Hypervisor, config: DomainConfig, domid: Optional[int] = None,
                 managed: bool = False):
        self.hv = hv
        self.serial = next(_serials)
        self.config = config
        self.domid = domid
        self.managed = managed
        self.start_time: Optional[float] = None
        self.lock = threading.RLock()
        self.op_lock = threading.Lock()
        self.pause_flag = False
        #: when xend asked the guest to shut down (for SHUTDOWN_TIMEOUT); None = not asked
        self.shutdown_requested_at: Optional[float] = None
        #: domid whose shutdown/crash has been dispatched (or that is preserved dead)
        self.handled_domid: Optional[int] = None
        #: a config stored by ``new`` while this domain was running: used once it halts
        self.pending_config: Optional[DomainConfig] = None
        #: built by another toolstack (adopted): its own shutdowns are left to that
        #: toolstack for FOREIGN_GRACE seconds before xend acts on them
        self.foreign = False
        #: when xend first saw this (foreign) domain shut down; None = not seen
        self.down_seen_at: Optional[float] = None
        self._records = {False: RecordCache(), True: RecordCache()}   # by ``full``

    def __repr__(self) -> str:
        return f"<Domain {self.name} id={self.domid} uuid={self.uuid}>"

    def __setattr__(self, attr: str, value: Any) -> None:
        object.__setattr__(self, attr, value)
        if attr in _KEY_ATTRIBUTES:
            hook = self.__dict__.get("keys_changed")
            if hook is not None:
                hook(self)

    # -- identity ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def uuid(self) -> str:
        return self.config.uuid

    @property
    def is_dom0(self) -> bool:
        return self.domid == DOM0_ID

    @property
    def active(self) -> bool:
        return self.domid is not None

    # -- store helpers -------------------------------------------------------------------------
    def dom_path(self, key: str = "") -> str:
        base = f"/local/domain/{self.domid}"
        return f"{base}/{key}" if key else base

    def vm_path(self, key: str = "") -> str:
        base = f"/vm/{self.uuid}"
        return f"{base}/{key}" if key else base

    def read_dom(self, key: str) -> Optional[str]:
        if self.domid is None:
            return None
        return self._read(self.dom_path(key))

    def write_dom(self, key: str, value: str) -> None:
        if self.domid is not None:
            self.hv.store_write(self.dom_path(key), str(value))

    def read_vm(self, key: str) -> Optional[str]:
        return self._read(self.vm_path(key))

    def write_vm(self, key: str, value: str) -> None:
        self.hv.store_write(self.vm_path(key), str(value))

    def rm_vm(self, key: str = "") -> None:
        self._rm(self.vm_path(key))

    def rm_dom(self, key: str = "") -> None:
        if self.domid is not None:
            self._rm(self.dom_path(key))

    def xend_vm_entries(self) -> Dict[str, str]:
        """``/vm/<uuid>/xend/*`` (restart count, restart in progress ...) as they are now."""
        try:
            keys = self.hv.store_list(self.vm_path("xend"))
        except HypervisorError:
            return {}
        entries = {}
        for key in keys:
            value = self.read_vm("xend/" + key)
            if value is not None:
                entries[key] = value
        return entries

    def restore_vm_entries(self, entries: Dict[str, str]) -> None:
        """Put back the ``/vm/<uuid>/xend/*`` entries a rebuild removed (libxl clears a
        domain's ``/vm/<uuid>`` when it destroys or creates it)."""
        for key, value in entries.items():
            if self.read_vm("xend/" + key) is None:
                self.write_vm("xend/" + key, value)

    def _read(self, path: str) -> Optional[str]:
        try:
            return self.hv.store_read(path)
        except HypervisorError as e:
            log.debug("store read %s: %s", path, e)
            return None

    def _rm(self, path: str) -> None:
        try:
            self.hv.store_rm(path)
        except HypervisorError as e:
            log.debug("store rm %s: %s", path, e)

    def publish(self, console_limit_bytes: int) -> None:
        """Write this running domain's store entries (after a create, restore or adoption)."""
        cfg = self.config
        self.write_dom("name", cfg.name)
        self.write_dom("vm", self.vm_path())
        self.write_dom("domid", str(self.domid))
        self.write_dom("memory/target", str(cfg.memory * 1024))
        self.write_dom("console/limit", str(console_limit_bytes))
        online = cfg.online_vcpus
        for v in range(cfg.vcpus):
            self.write_dom(f"cpu/{v}/availability", "online" if v < online else "offline")
        self.write_vm("uuid", cfg.uuid)
        self.write_vm("name", cfg.name)
        self.write_vm("memory", str(cfg.memory))
        if self.start_time is not None:
            self.write_vm("start_time", repr(self.start_time))
        if self.read_vm("xend/restart_count") is None:
            self.write_vm("xend/restart_count", "0")
        self.save_config_to_store()

    def save_config_to_store(self) -> None:
        """Keep ``/vm/<uuid>/xend/config`` current, so a restarted xend adopts this domain
        with the configuration it has now."""
        if self.domid is not None and not self.is_dom0:
            self.write_vm("xend/config", sxp.to_string(config_sxp(self.config)))

    def set_config(self, cfg: DomainConfig) -> None:
        with self.lock:
            self.config = cfg
        self.save_config_to_store()

    # -- state and record ----------------------------------------------------------------------
    def info(self) -> Optional[DomainInfo]:
        """The Xen domain's info now, or None if there is none (any more)."""
        domid = self.domid
        if domid is None:
            return None
        try:
            return self.hv.domain_info(domid)
        except HypervisorError:
            return None

    def state(self, info: Optional[DomainInfo], checkpointed: bool) -> int:
        return power_state(info if self.domid is not None else None, checkpointed)

    def runtime(self, info: Optional[DomainInfo], checkpointed: bool) -> Runtime:
        exists = self.domid is not None and info is not None
        rt = Runtime(status=self.state(info, checkpointed))
        if exists:
            rt.domid = self.domid
            rt.state = info.state_string
            rt.start_time = self.start_time if self.start_time is not None else time.time()
            rt.cpu_time = info.cpu_time_ns / 1e9
            rt.online_vcpus = info.online_vcpus
        else:
            rt.cpu_time = 0.0
        return rt

    def record(self, info: Optional[DomainInfo], checkpointed: bool, full: bool) -> list:
        """``to_record`` of the config and runtime; the config's fields are made once per
        config (``sxp.Frozen``: callers must not change them), and once more per ``full``."""
        cache = self._records[full]
        return cache.record(self.config, self.runtime(info, checkpointed), full)
