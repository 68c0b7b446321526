"""All domains of this host: lookup, listing, create/destroy, and the calls ``xm`` makes.

``DomainRegistry(opts, hypervisor)`` is what the Node builds. Its ``domain``, ``domains``,
``domains_with_state`` and ``domain_<name>`` methods are exported over XML-RPC by
``xend.server.methods`` (reference §5.3), with the original's argument orders and defaults.

The public surface is split by subject over a few modules (mixins of this class):

* ``lifecycle``    building and tearing down Xen domains, ballooning, rediscovery;
* ``events``       the event thread and the on_poweroff/on_reboot/on_crash actions;
* ``operations``   the per-domain calls (pause, shutdown, mem-set, vcpus, dump, console ...);
* ``saverestore``  save/restore/suspend/resume and the stream functions for relocation;
* ``managed``      new/start/delete, the managed-domain store, autostart and on_xend_stop;
* ``hotplug``      devices added, changed and removed after the build (block-attach ...);
* ``schedulers``   credit2 weights, and sedf's refusal.

For the relocation code: ``save_to_stream(dom, fileobj, live, keep_running, node=,
migrating=, step=)``, ``restore_from_stream(fileobj, relocating, paused)`` (returns the
Domain), ``unpause_restored(dom)``, ``discard_restored(dom)``, ``register_managed(dom)``, and
the ``migrator`` attribute that ``domain_migrate`` calls after its checks.

Locking: ``_lock`` guards only the table (a dict) and name reservations and is never held
across a hypervisor call; long work holds the domain's own ``op_lock``, taken through
``_operation``, which also checks that the domain was not deleted meanwhile. A listing takes
``_lock`` for a snapshot and asks the hypervisor once, so it never waits behind a save,
a restore or a migration (the original's "xm list hangs").
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from xend.console import ConsoleHub
from xend.errors import HypervisorError, VmError, XendError, XendInvalidDomain
from xend.hypervisor.base import DOM0_UUID, Hypervisor

from . import config as cfgmod
from .domain import Domain
from .events import EventsMixin
from .hotplug import DeviceOpsMixin
from .index import DomainIndex
from .schedulers import SchedulersMixin
from .lifecycle import LifecycleMixin
from .managed import ManagedMixin
from .operations import OperationsMixin
from .progress import ProgressTracker
from .saverestore import SaveRestoreMixin
from .settings import Settings
from .states import DOM0_ID, DOM0_NAME, RUNNING, power_state, state_filter
from .store import ManagedStore

log = logging.getLogger("xend.XendDomain")

MINIMUM_RESTART_TIME = 60.0     # seconds a domain must have run before it may be restarted
SHUTDOWN_TIMEOUT = 300.0        # seconds a guest has to react to a shutdown request
EVENT_INTERVAL = 0.5            # the event thread looks at the domains at least this often


class DomainRegistry(LifecycleMixin, EventsMixin, OperationsMixin, SaveRestoreMixin,
                     ManagedMixin, DeviceOpsMixin, SchedulersMixin):
    """The domains of one host. Timing constants are attributes (and keyword arguments) so
    that tests can shorten them."""

    def __init__(self, opts: Mapping[str, Any], hypervisor: Hypervisor, *,
                 minimum_restart_time: float = MINIMUM_RESTART_TIME,
                 shutdown_timeout: float = SHUTDOWN_TIMEOUT,
                 event_interval: float = EVENT_INTERVAL,
                 balloon_sleep=time.sleep, migrator=None):
        self.opts = opts
        self.hv = hypervisor
        self.settings = Settings.from_opts(opts)
        self.store = ManagedStore(self.settings.domains_path)
        self.consoles = ConsoleHub(self.settings.console_limit)
        self.tracker = ProgressTracker()
        #: relocation sender: called as migrator(domain, dst, live, port, node, ssl, chs)
        #: (domain: the Domain object) after the checks of ``domain_migrate``; it streams
        #: with ``save_to_stream``. None = migration not available.
        self.migrator = migrator
        self.minimum_restart_time = minimum_restart_time
        self.shutdown_timeout = shutdown_timeout
        self.event_interval = event_interval
        self.balloon_sleep = balloon_sleep
        self._lock = threading.Lock()
        self._domains: Dict[int, Domain] = {}
        self._index = DomainIndex()                 # name, uuid, domid -> domains
        self._reserved: Dict[str, str] = {}         # name -> uuid of creations in progress
        self._reserved_uuids: Set[str] = set()
        self._newcomers_seen: Dict[int, float] = {}  # domid -> when a foreign domain was first seen
        self._balloon_lock = threading.Lock()
        self._stop = threading.Event()
        self._event_thread: Optional[threading.Thread] = None
        self._threads: Set[threading.Thread] = set()
        self._started = False

    # -- node lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt the hypervisor's domains, apply dom0-cpus, load the managed domains, start
        the event thread (reference §3.7)."""
        self.store.ensure()
        self._discover()
        self._recover_operations()
        self._apply_dom0_cpus()
        self._load_managed()
        self._stop.clear()
        self._event_thread = threading.Thread(target=self._event_loop, name="xend-domain-events",
                                              daemon=True)
        self._event_thread.start()
        self._started = True

    def stop(self) -> None:
        """Stop the event thread, then apply ``on_xend_stop`` (xend stop, not reload)."""
        self.stop_events()
        if self._started:
            self._xend_stop_actions()
        self._join_actions()
        self._started = False

    def stop_events(self) -> None:
        self._stop.set()
        self.hv.wake()
        thread = self._event_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._event_thread = None

    def reconfigure(self, opts: Mapping[str, Any]) -> None:
        """New options on reload: nothing is stopped and no on_xend_stop action runs."""
        try:
            settings = Settings.from_opts(opts)
        except (ValueError, TypeError) as e:
            log.error("Keeping the previous domain settings: %s", e)
            return
        if settings.domains_path != self.settings.domains_path:
            log.warning("xend-domains-path changed to %s; it takes effect at the next start",
                        settings.domains_path)
            settings = dataclasses.replace(settings, domains_path=self.settings.domains_path)
        self.opts = opts
        self.settings = settings
        self.consoles.set_limit_kib(settings.console_limit)

    def progress(self) -> List[Dict[str, str]]:
        return self.tracker.list()

    # -- the table -------------------------------------------------------------------------------
    def _all(self) -> List[Domain]:
        with self._lock:
            return list(self._domains.values())

    def _add(self, dom: Domain) -> None:
        with self._lock:
            self._enter(dom)

    def _remove(self, dom: Domain) -> None:
        with self._lock:
            self._leave(dom)

    def _replace(self, old: Optional[Domain], new: Domain) -> None:
        with self._lock:
            if old is not None:
                self._leave(old)
            self._enter(new)

    def _enter(self, dom: Domain) -> None:
        """Caller holds ``_lock``: ``dom`` joins the table and the index."""
        self._domains[dom.serial] = dom
        dom.keys_changed = self._index.add
        self._index.add(dom)
        if self._index.needs_rebuild(len(self._domains)):
            self._index.rebuild(list(self._domains.values()))

    def _leave(self, dom: Domain) -> None:
        if self._domains.pop(dom.serial, None) is not None:
            self._index.discard(dom)

    def _having(self, key: str, value: Any) -> List[Domain]:
        """The domains of the table whose ``key`` (name, uuid, domid) is ``value``, in the
        order they were made."""
        with self._lock:
            return self._having_locked(key, value)

    def _having_locked(self, key: str, value: Any) -> List[Domain]:
        return [d for d in self._index.having(key, value) if self._domains.get(d.serial) is d]

    def _dom0(self) -> Domain:
        for d in self._all():
            if d.domid == 0:
                return d
        raise XendError("Unable to find Domain 0")

    def _lookup(self, dom: Any) -> Optional[Domain]:
        """By name among running domains, name among managed ones, domid among running ones,
        uuid among running ones, uuid among managed ones (reference §8.1)."""
        key = str(dom).strip() if not isinstance(dom, int) else str(dom)
        named = self._having("name", key)
        found = _first_running(named) or _first_managed(named)
        if found is not None:
            return found
        try:
            domid = int(key)
        except ValueError:
            domid = None
        if domid is not None:
            found = _first_running(self._having("domid", domid))
            if found is not None:
                return found
        try:
            uuid = cfgmod.normalise_uuid(key)
        except XendError:
            return None
        same = self._having("uuid", uuid)
        return _first_running(same) or _first_managed(same)

    def _get(self, dom: Any) -> Domain:
        if isinstance(dom, Domain):         # in-process callers may pass the object itself
            with self._lock:
                if self._domains.get(dom.serial) is dom:
                    return dom
            raise XendInvalidDomain(dom.name)
        found = self._lookup(dom)
        if found is None:
            raise XendInvalidDomain(str(dom))
        return found

    @contextlib.contextmanager
    def _operation(self, dom: Domain) -> Iterator[Domain]:
        """Hold ``dom``'s ``op_lock`` and make sure it is still one of our domains: a delete
        (or a restart replacing it) may have run while we waited, and a check made before
        the lock proves nothing. Check the domain's state inside this block."""
        with dom.op_lock:
            with self._lock:
                current = self._domains.get(dom.serial) is dom
            if not current:
                raise XendInvalidDomain(dom.name)
            yield dom

    def _checkpointed(self, dom: Domain) -> bool:
        return dom.managed and self.store.has_checkpoint(dom.uuid)

    def _state(self, dom: Domain) -> int:
        return power_state(dom.info(), self._checkpointed(dom))

    # -- uniqueness -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reserve(self, cfg: cfgmod.DomainConfig, *, check_uuid: bool = True,
                 check_name: bool = True, exclude: Optional[Domain] = None) -> Iterator[None]:
        """Hold ``cfg``'s name (and uuid) while a domain is being made, so two creations of
        one name cannot both succeed; raises the original's messages on a clash."""
        with self._lock:
            if check_name:
                self._check_name_free(cfg.name, cfg.uuid, exclude)
            if check_uuid:
                for d in self._having_locked("uuid", cfg.uuid):
                    if d is not exclude and d.domid is not None:
                        raise VmError("Domain '%s' already exists with ID '%d'"
                                      % (d.name, d.domid))
                if cfg.uuid in self._reserved_uuids:
                    raise VmError("Domain '%s' already exists" % cfg.name)
            self._reserved[cfg.name] = cfg.uuid
            self._reserved_uuids.add(cfg.uuid)
        try:
            yield
        finally:
            with self._lock:
                if self._reserved.get(cfg.name) == cfg.uuid:
                    del self._reserved[cfg.name]
                self._reserved_uuids.discard(cfg.uuid)

    def _check_name_free(self, name: str, uuid: str, exclude: Optional[Domain] = None) -> None:
        """Caller holds ``_lock``. A name may be reused only by the same uuid; Domain-0's
        name belongs to domain 0 alone."""
        if name == DOM0_NAME and uuid != DOM0_UUID:
            raise VmError("VM name '%s' already exists as domain %d" % (name, DOM0_ID))
        for d in self._having_locked("name", name):
            if d is exclude or d.uuid == uuid:
                continue
            where = " as domain %s" % d.domid if d.domid is not None else ""
            raise VmError("VM name '%s' already exists%s" % (name, where))
        other = self._reserved.get(name)
        if other is not None and other != uuid:
            raise VmError("VM name '%s' already exists" % name)

    # -- listing (never waits behind a long operation) -------------------------------------------
    def _snapshot(self) -> List[Tuple[Domain, Any, int]]:
        infos = {i.domid: i for i in self.hv.list_domains()}
        out = []
        for d in self._all():
            info = infos.get(d.domid) if d.domid is not None else None
            out.append((d, info, power_state(info, self._checkpointed(d))))
        out.sort(key=lambda t: t[0].name)
        return out

    def domain(self, dom: Any, full: Any = 0) -> list:
        return self._record(self._get(dom), bool(full))

    def _record(self, d: Domain, full: bool) -> list:
        return d.record(d.info(), self._checkpointed(d), full)

    def domains(self, detail: Any = True, full: Any = False) -> list:
        """Running (not paused) domains: their records, or their names."""
        return self._listing(lambda s: s == RUNNING, detail, full)

    def domains_with_state(self, detail: Any = True, state: Any = "all",
                           full: Any = False) -> list:
        return self._listing(state_filter(state), detail, full)

    def domains_brief(self, state: Any = "all") -> list:
        """An extension for ``xm list``: per domain only the columns it prints, as a record
        ``(domain (domid N) (name S) (memory M) (online_vcpus V) (state S) (cpu_time T))``
        (the full records of a thousand domains are megabytes of XML)."""
        wanted = state_filter(state)
        out = []
        for d, info, s in self._snapshot():
            if not wanted(s):
                continue
            rt = d.runtime(info, False)
            rec: list = ["domain"]
            if rt.domid is not None:
                rec.append(["domid", rt.domid])
            rec += [["name", d.name], ["memory", d.config.memory],
                    ["online_vcpus", rt.online_vcpus if rt.online_vcpus is not None
                     else d.config.vcpus]]
            if rt.state is not None:
                rec.append(["state", rt.state])
            rec.append(["cpu_time", rt.cpu_time or 0.0])
            out.append(rec)
        return out

    def _listing(self, wanted, detail: Any, full: Any) -> list:
        chosen = [(d, info, s) for d, info, s in self._snapshot() if wanted(s)]
        if not detail:
            return [d.name for d, _, _ in chosen]
        out = []
        for d, info, _ in chosen:
            try:
                out.append(d.record(info, self._checkpointed(d), bool(full)))
            except Exception:  # noqa: BLE001 - one broken domain must not hide the others
                log.warning("Failed to query SXPR for domain %s", d.name, exc_info=True)
        return out

    # -- for the Xen-API (xend.xenapi): views of the domains and a config change ----------------
    def snapshot(self) -> List[Tuple[Domain, Any, int]]:
        """Every domain with its Xen domain's info (None: none) and power state, by name."""
        return self._snapshot()

    def entry(self, dom: Any) -> Tuple[Domain, Any, int]:
        """One domain (looked up as ``xend.domain`` does) with its info and power state."""
        d = self._get(dom)
        info = d.info()
        return d, info, power_state(info, self._checkpointed(d))

    def update_config(self, dom: Any, change) -> None:
        """Replace the configuration of a domain by ``change(config)``, checked as a new
        configuration is (XendConfigError/VmError, nothing changed); it takes effect at the
        next start; a managed domain's config is stored first (a store that cannot take it
        fails the change, XendError). Name and uuid stay (a
        rename is ``domain_setName``)."""
        d = self._get(dom)
        with d.lock:
            old = d.config
            new = cfgmod.parse_config(cfgmod.config_sxp(change(old)), self._host_cpus())
            with self._persisting(d, new.replace(name=old.name, uuid=old.uuid)):
                pass                    # nothing live: the new config is for the next start

    # -- create and destroy -----------------------------------------------------------------------
    def domain_create(self, config: Any) -> list:
        """Create and build a domain from a ``(vm ...)`` config; it is left paused."""
        cfg = self._parse(config)
        self._check_boot_files(cfg)
        with self._reserve(cfg):
            old = self._managed_inactive(cfg.uuid)
            dom = Domain(self.hv, cfg, managed=old is not None)
            with dom.op_lock:
                self._build(dom, paused=True, fresh=True)
            self._replace(old, dom)
        log.info("Domain %s (%d) created.", dom.name, dom.domid)
        return self._record(dom, full=True)

    def domain_destroy(self, dom: Any) -> None:
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot destroy privileged domain %s" % dom)
        if d.domid is None:
            return
        log.info("Destroying domain %s (%s).", d.name, d.domid)
        self._destroy(d)

    def _parse(self, config: Any) -> cfgmod.DomainConfig:
        return cfgmod.parse_config(config, self._host_cpus())

    def _host_cpus(self) -> int:
        try:
            return self.hv.physinfo().nr_cpus
        except HypervisorError:
            return 0

    def _managed_inactive(self, uuid: str) -> Optional[Domain]:
        for d in self._having("uuid", uuid):
            if d.managed and d.domid is None:
                return d
        return None

    # -- threads for actions ----------------------------------------------------------------------
    def _spawn(self, name: str, fn, *args) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a failed action is logged, never fatal
                log.exception("%s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _join_actions(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                return
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return


def _first_running(doms: List[Domain]) -> Optional[Domain]:
    return next((d for d in doms if d.domid is not None), None)


def _first_managed(doms: List[Domain]) -> Optional[Domain]:
    return next((d for d in doms if d.managed), None)
