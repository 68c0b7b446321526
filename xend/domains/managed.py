"""Managed ("lifecycle") domains (reference §8.7): new, start, delete, their store, loading
at start, autostart and the on_xend_stop actions; part of DomainRegistry."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from xend.errors import VMBadState, XendError

from .config import DomainConfig, config_sxp, parse_config
from .domain import Domain
from .operations import bool_arg
from .states import HALTED, RUNNING

log = logging.getLogger("xend.XendDomain")


class ManagedMixin:
    def domain_new(self, config: Any) -> None:
        """Store a managed domain (not started)."""
        try:
            cfg = self._parse(config)
            with self._reserve(cfg, check_uuid=False):
                existing = next((d for d in self._all() if d.uuid == cfg.uuid
                                 and (d.managed or d.domid is not None)), None)
                log.debug("Creating new managed domain: %s", cfg.name)
                self._store_config(cfg)
                if existing is None:
                    self._add(Domain(self.hv, cfg, managed=True))
                elif existing.domid is None:
                    with existing.lock:
                        existing.config, existing.managed = cfg, True
                else:
                    with existing.lock:
                        existing.managed, existing.pending_config = True, cfg
        except XendError:
            raise
        except Exception as e:  # noqa: BLE001 - as the original
            raise XendError(str(e)) from None

    def domain_start(self, dom: Any, start_paused: Any = True) -> None:
        """Start a halted managed domain; left paused when ``start_paused``."""
        d = self._get(dom)
        with self._operation(d):
            if d.domid is not None or self._state(d) != HALTED:
                raise VMBadState("Domain is already running")
            self._check_boot_files(d.config)
            with self._reserve(d.config, exclude=d):
                self._build(d, paused=True, fresh=True)
                self._devices_ready(d)
        log.info("Domain %s (%d) started.", d.name, d.domid)
        if not bool_arg(start_paused):
            self.hv.unpause(d.domid)

    def domain_delete(self, dom: Any) -> None:
        """Forget a halted managed domain and remove its stored config."""
        d = self._get(dom)
        with self._operation(d):
            if d.domid is not None or self._state(d) != HALTED:
                raise VMBadState("Domain is not halted.")
            try:
                self.store.delete(d.uuid)
            except OSError as e:
                raise XendError("Cannot delete the configuration of domain %s in %s: %s"
                                % (d.name, e.filename or self.store.domain_dir(d.uuid),
                                   e.strerror or e)) from None
            log.info("Domain %s (%s) deleted.", d.name, d.uuid)
            self._remove(d)
            d.rm_vm()

    def register_managed(self, dom: Any) -> None:
        """Make a (running) domain managed and store its config: for a migrated domain whose
        home server becomes this host (``change_home_server``)."""
        d = self._get(dom)
        old = next((o for o in self._all() if o is not d and o.managed and o.uuid == d.uuid
                    and o.domid is None), None)
        self._store_config(d.config)
        with d.lock:
            d.managed = True
        if old is not None:
            self._remove(old)
        log.debug("Migrating new managed domain: %s: %s", d.name, d.uuid)

    # -- the store ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _persisting(self, d: Domain, new: DomainConfig) -> Iterator[None]:
        """Change ``d``'s configuration to ``new`` (mem-set, vcpu-set, rename ...): for a
        managed domain it is stored first, so that a store that cannot take it (full, read
        only) fails the change with the file and the reason before anything else changed;
        then the block does the live part; then ``new`` is taken in memory. If the block
        fails, the stored configuration is put back."""
        stored = d.managed and d.pending_config is None     # else the pending one is stored
        if stored:
            self._store_config(new)
        try:
            yield
        except BaseException:
            if stored:
                try:
                    self.store.save(d.uuid, config_sxp(d.config))
                except OSError as e:
                    log.error("Cannot restore the stored configuration of %s: %s", d.name, e)
            raise
        d.set_config(new)

    def _store_config(self, cfg: DomainConfig) -> None:
        """Store a managed domain's configuration; XendError naming the file and the reason
        when the store cannot take it (and nothing of it is left there)."""
        try:
            self.store.save(cfg.uuid, config_sxp(cfg))
        except OSError as e:
            raise XendError("Cannot save the configuration of domain %s to %s: %s"
                            % (cfg.name, e.filename or self.store.config_path(cfg.uuid),
                               e.strerror or e)) from None

    def _load_managed(self) -> None:
        host_cpus = self._host_cpus()
        for dirname, value in self.store.load_all():
            cfg_file = self.store.config_path(dirname)
            try:
                cfg = parse_config(value, host_cpus)
            except Exception:  # noqa: BLE001
                log.exception("Unable to open or parse config.sxp: %s", cfg_file)
                continue
            if cfg.uuid != dirname:
                log.error("UUID mismatch in stored configuration: %s", cfg_file)
                continue
            running = next((d for d in self._all() if d.uuid == cfg.uuid
                            and d.domid is not None), None)
            if running is not None:
                running.managed = True
                continue
            try:
                with self._lock:
                    self._check_name_free(cfg.name, cfg.uuid)
                    dom = Domain(self.hv, cfg, managed=True)
                    self._enter(dom)
            except XendError as e:
                log.error("Failed to create reference to managed domain: %s (%s)",
                          cfg.name, e)

    # -- xend start and stop --------------------------------------------------------------------
    def autostart(self) -> None:
        """Start halted managed domains whose ``on_xend_start`` is ``start``, unpaused."""
        for d in self._all():
            if not (d.managed and d.domid is None and d.config.on_xend_start == "start"):
                continue
            if self._state(d) != HALTED:
                continue
            try:
                log.info("Starting managed domain %s (on_xend_start).", d.name)
                self.domain_start(d, start_paused=False)
            except Exception:  # noqa: BLE001
                log.exception("Failed to start domain %s", d.name)

    def _xend_stop_actions(self) -> None:
        """``on_xend_stop``: shutdown -> poweroff request; suspend -> managed suspend."""
        for d in self._all():
            if d.is_dom0 or d.domid is None or self._state(d) != RUNNING:
                continue
            action = d.config.on_xend_stop
            try:
                if action == "shutdown":
                    log.debug("Shutting down domain: %s", d.name)
                    self.domain_shutdown(d, "poweroff")
                elif action == "suspend":
                    self.domain_suspend(d)
                else:
                    log.debug("Domain %s continues to run.", d.name)
            except Exception:  # noqa: BLE001
                log.exception("Domain %s failed to %s.", d.name, action)
