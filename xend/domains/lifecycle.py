"""Building and tearing down Xen domains, ballooning, and adopting the domains a hypervisor
already runs when xend starts (part of DomainRegistry)."""
from __future__ import annotations

import errno
import logging
import os
import time
from typing import Callable, Optional, Tuple

from xend import sxp
from xend.cpupools import POOL0_NAME, pool_id_by_name
from xend.errors import HypervisorError, VmError, XendError
from xend.hypervisor.base import DOM0_UUID, DomainInfo, DomainSpec
from xend.hypervisor.hostcheck import HostLayout

from . import buildspec
from . import config as cfgmod
from . import devicemodel, devices
from .balloon import BalloonPolicy, free_memory
from .domain import Domain
from .states import DOM0_ID, DOM0_NAME

log = logging.getLogger("xend.XendDomain")


class LifecycleMixin:
    # -- building -------------------------------------------------------------------------------
    def _build(self, dom: Domain, paused: bool = True, fresh: bool = True,
               make: Optional[Callable[[DomainSpec], int]] = None) -> int:
        """Create the Xen domain of ``dom`` (which has none) from its config: make room
        (ballooning dom0), create, apply vcpus/affinity/scheduler, publish the store entries.
        Left paused unless ``paused`` is false. On failure nothing is left behind.
        ``fresh``: a new instance (restart count 0), not a restart. ``make(spec)`` builds
        the Xen domain (default ``hypervisor.create_domain``; a restore of a hypervisor's
        own stream builds it from the stream).

        The option defaults for devices and display are filled into the config first (it
        keeps them: the record shows what the domain was built with), after the checks of
        what this xend cannot build (devices.check_buildable)."""
        devices.check_buildable(dom.config, self.settings, self.hv.name)
        cfg = devices.apply_defaults(dom.config, self.settings)
        if cfg is not dom.config:
            with dom.lock:
                dom.config = cfg
        spec = buildspec.spec_for(cfg, self.settings, self.hv, self.consoles.limit_bytes)
        kept = dom.xend_vm_entries()
        with self._balloon_lock:
            self._balloon(self.hv.memory_needed_kib(spec))
            try:
                domid = (make or self.hv.create_domain)(spec)
            except HypervisorError as e:
                raise VmError("Creating domain failed: name=%s: %s" % (cfg.name, e.message)) \
                    from None
        try:
            dom.restore_vm_entries(kept)
            self._configure_new(dom, domid, fresh)
            self._republish_twins(dom)
            if not paused:
                self.hv.unpause(domid)
        except BaseException:
            log.exception("Building domain %s (%d) failed; destroying it", cfg.name, domid)
            self._discard_xen_domain(domid)
            with dom.lock:
                dom.domid = None
                dom.start_time = None
            raise
        return domid

    def _configure_new(self, dom: Domain, domid: int, fresh: bool) -> None:
        cfg = dom.config
        hv = self.hv
        try:
            if cfg.online_vcpus < cfg.vcpus:
                hv.set_vcpus_online(domid, cfg.online_vcpus)
            host_cpus = self._host_cpus()
            for v in range(cfg.vcpus):
                wanted = cfg.affinity(v)
                usable = [c for c in wanted if not host_cpus or c < host_cpus]
                if usable:
                    hv.set_vcpu_affinity(domid, v, usable)
                elif wanted:
                    log.warning("Domain %s: VCPU %d affinity %s names no CPU of this host; "
                                "ignored", cfg.name, v, wanted)
            if (cfg.cpu_weight, cfg.cpu_cap) != (cfgmod.DEFAULT_WEIGHT, cfgmod.DEFAULT_CAP):
                hv.sched_credit_set(domid, cfg.cpu_weight, cfg.cpu_cap)
            if cfg.pool_name and cfg.pool_name != POOL0_NAME:
                poolid = pool_id_by_name(hv, cfg.pool_name)
                if poolid is None:
                    raise VmError("unknown pool %s" % cfg.pool_name)
                hv.cpupool_move_domain(poolid, domid)
        except HypervisorError as e:
            raise VmError("Creating domain failed: name=%s: %s" % (cfg.name, e.message)) \
                from None
        with dom.lock:
            dom.domid = domid
            dom.start_time = time.time()
            dom.handled_domid = None
            dom.shutdown_requested_at = None
            dom.foreign = False             # built by xend from now on
            dom.down_seen_at = None
        if fresh:
            dom.write_vm("xend/restart_count", "0")
            dom.rm_vm("xend/restart_in_progress")
        dom.publish(self.consoles.limit_bytes)
        if hv.device_backends and not hv.builds_devices:
            try:
                devices.publish(hv, domid, devices.plan(cfg, self.settings))
            except HypervisorError as e:
                raise VmError("Creating devices of domain %s failed: %s"
                              % (cfg.name, e.message)) from None
        if devices.needs_device_model(cfg):
            devicemodel.start_log(self.settings, cfg, domid, hv.name)

    def _check_boot_files(self, cfg: cfgmod.DomainConfig) -> None:
        """As the original's image handling, before a guest boots: a PV guest's kernel and
        ramdisk are files of this host, or its bootloader is installed (VmError)."""
        if cfg.image_type != "linux":
            return
        if cfg.bootloader:
            ver = self.hv.version()
            if HostLayout(ver.major, ver.minor).bootloader(cfg.bootloader) is None:
                raise VmError("Bootloader isn't executable: %s is not installed on this host"
                              % cfg.bootloader)
            return
        if not cfg.kernel:
            raise VmError("A PV guest needs a kernel or a bootloader: %s has neither"
                          % cfg.name)
        if not os.path.isfile(cfg.kernel):
            raise VmError("Kernel image does not exist: %s" % cfg.kernel)
        if cfg.ramdisk and not os.path.isfile(cfg.ramdisk):
            raise VmError("Kernel ramdisk does not exist: %s" % cfg.ramdisk)

    # -- devices --------------------------------------------------------------------------------
    def _wait_for_devices(self, dom: Domain) -> None:
        """Wait up to device-create-timeout for the backends of ``dom``'s devices (the
        original's waitForDevices); VmError when one fails or does not answer in time."""
        domid = dom.domid
        if domid is None or not self.hv.device_backends:
            return
        devices.wait_connected(self.hv, domid, self.settings.device_create_timeout)

    def _devices_ready(self, dom: Domain) -> None:
        """``_wait_for_devices`` for a domain just built; on failure its Xen domain is
        destroyed (as the original's start, restore and restart did) and the error raised."""
        try:
            self._wait_for_devices(dom)
        except BaseException as e:
            log.warning("Failed to setup devices for domain %s: %s", dom.name, e)
            self._teardown(dom)
            raise

    def _discard_xen_domain(self, domid: int) -> None:
        """Close the domain's device backends, destroy it, remove its store entries, then wait
        up to device-destroy-timeout for the backends to go (devices.wait_gone)."""
        closing = devices.close(self.hv, domid) \
            if self.hv.device_backends and not self.hv.builds_devices else []
        try:
            self.hv.destroy(domid)
        except HypervisorError as e:
            if e.errno != errno.ESRCH:
                log.error("Could not destroy domain %d: %s", domid, e)
        try:
            self.hv.store_rm(f"/local/domain/{domid}")
        except HypervisorError:
            pass
        self.consoles.drop(domid)
        if closing:
            devices.wait_gone(self.hv, domid, closing, self.settings.device_destroy_timeout)

    # -- tearing down ---------------------------------------------------------------------------
    def _teardown(self, dom: Domain, keep_vm: bool = False) -> None:
        """Destroy the Xen domain of ``dom`` (if any) and forget its runtime state; the
        ``/vm/<uuid>`` entries go too unless ``keep_vm`` (a restart keeps them)."""
        domid = dom.domid
        if domid is None:
            return
        kept = dom.xend_vm_entries() if keep_vm else {}
        # forgotten first: the event thread then leaves this domain alone while the
        # backends of its devices are given device-destroy-timeout to go away
        with dom.lock:
            if dom.domid == domid:
                dom.domid = None
                dom.start_time = None
                dom.shutdown_requested_at = None
                dom.handled_domid = None
        self._discard_xen_domain(domid)
        dom.restore_vm_entries(kept)
        if not keep_vm and not self._twins(dom):
            dom.rm_vm()
        self._republish_twins(dom)

    def _twins(self, dom: Domain) -> list:
        """Other running domains of ``dom``'s uuid: both ends of a migration to this host."""
        return [d for d in self._having("uuid", dom.uuid) if d is not dom
                and d.domid is not None]

    def _republish_twins(self, dom: Domain) -> None:
        """``/vm/<uuid>`` is shared by twins, and libxl clears it when it builds or destroys
        either: the survivors write theirs again."""
        for twin in self._twins(dom):
            try:
                twin.publish(self.consoles.limit_bytes)
            except HypervisorError as e:
                log.warning("Could not write the store entries of %s again: %s", twin.name, e)

    def _destroy(self, dom: Domain) -> None:
        """The ``destroy`` action: no Xen domain afterwards; an unmanaged domain is forgotten,
        a managed one stays, halted."""
        self._teardown(dom)
        if dom.managed:
            with dom.lock:
                if dom.pending_config is not None:
                    dom.config, dom.pending_config = dom.pending_config, None
        else:
            self._remove(dom)

    # -- memory ---------------------------------------------------------------------------------
    def _balloon(self, need_kib: int) -> None:
        s = self.settings
        policy = BalloonPolicy(enabled=s.enable_ballooning, dom0_min_kib=s.dom0_min_mem * 1024,
                               sleep=self.balloon_sleep,
                               reserve_kib=s.total_available_memory * 1024 * 1024)
        free_memory(self.hv, need_kib, policy, self._set_dom0_target_kib)

    def _set_dom0_target_kib(self, kib: int) -> None:
        try:
            self.hv.set_memory_target(DOM0_ID, kib)
        except HypervisorError as e:
            raise VmError(f"Cannot set the memory target of Domain-0: {e.message}") from None
        try:
            dom0 = self._dom0()
        except XendError:
            return
        mib = kib // 1024
        with dom0.lock:
            dom0.config = dom0.config.replace(memory=mib, maxmem=max(mib, dom0.config.maxmem))
        dom0.write_dom("memory/target", str(kib))
        dom0.write_vm("memory", str(mib))

    # -- rediscovery ----------------------------------------------------------------------------
    def _discover(self) -> None:
        infos = self.hv.list_domains()
        if not any(i.domid == DOM0_ID for i in infos):
            raise XendError("Unable to find Domain 0")
        for info in infos:
            if info.domid == DOM0_ID:
                self._add(self._adopt_dom0(info))
                continue
            if info.dying:
                log.warning("Ignoring dying domain %d from now on", info.domid)
                continue
            try:
                self._add(self._adopt(info))
            except Exception:  # noqa: BLE001 - one odd domain must not stop xend
                log.exception("Failed to create reference to running domain id: %d",
                              info.domid)

    def _adopt_dom0(self, info: DomainInfo) -> Domain:
        mem = max(1, info.mem_kib // 1024)
        maxmem = max(mem, info.maxmem_kib // 1024)
        try:
            weight, cap = self.hv.sched_credit_get(DOM0_ID)
        except HypervisorError:
            weight, cap = cfgmod.DEFAULT_WEIGHT, cfgmod.DEFAULT_CAP
        cfg = cfgmod.DomainConfig(name=DOM0_NAME, uuid=DOM0_UUID, memory=mem, maxmem=maxmem,
                                  vcpus=info.max_vcpu_id + 1, cpu_weight=weight, cpu_cap=cap)
        dom0 = Domain(self.hv, cfg, domid=DOM0_ID)
        dom0.start_time = self._boot_time()
        dom0.write_dom("name", DOM0_NAME)
        dom0.write_dom("vm", dom0.vm_path())
        dom0.write_vm("uuid", DOM0_UUID)
        dom0.write_vm("name", DOM0_NAME)
        return dom0

    def _boot_time(self) -> float:
        try:
            with open("/proc/uptime") as f:
                return time.time() - float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return time.time()

    def _adopt(self, info: DomainInfo) -> Domain:
        """A domain the hypervisor runs: its config from the store (as xend wrote it),
        else a minimal one from what the hypervisor reports."""
        base = f"/local/domain/{info.domid}"
        vm = self._store_read(base + "/vm") or f"/vm/{info.uuid}"
        cfg, ours = self._stored_config(vm, info)
        dom = Domain(self.hv, cfg, domid=info.domid)
        dom.foreign = not ours
        start = self._store_read(vm + "/start_time")
        try:
            dom.start_time = float(start) if start else time.time()
        except ValueError:
            dom.start_time = time.time()
        if self._store_read(base + "/xend/shutdown_completed"):
            dom.handled_domid = info.domid          # preserved dead: leave it alone
        log.info("Adopted running domain %s (%d).", cfg.name, info.domid)
        return dom

    def _stored_config(self, vm: str, info: DomainInfo) -> Tuple[cfgmod.DomainConfig, bool]:
        """The adopted domain's configuration, and whether xend built it (from the config it
        keeps in the store); else from what its toolstack recorded, else from what the
        hypervisor reports."""
        text = self._store_read(vm + "/xend/config")
        if text:
            try:
                cfg = cfgmod.parse_config(sxp.from_string(text), None)
                if cfg.uuid == info.uuid:
                    return cfg, True
                log.warning("Domain %d: stored config is for uuid %s, not %s; ignored",
                            info.domid, cfg.uuid, info.uuid)
            except Exception as e:  # noqa: BLE001
                log.warning("Domain %d: stored config unusable (%s); using what the "
                            "hypervisor reports", info.domid, e)
        name = self._store_read(f"/local/domain/{info.domid}/name") or f"Domain-{info.domid}"
        try:
            cfgmod.check_name(name)
        except XendError:
            name = f"Domain-{info.domid}"
        target = self._store_read(f"/local/domain/{info.domid}/memory/target")  # KiB
        try:
            mem = max(1, int(target) // 1024)
        except (TypeError, ValueError):
            mem = max(1, info.mem_kib // 1024)
        native = self.hv.native_config(info.domid)
        if native is not None and native.uuid == info.uuid:
            try:
                cfg = buildspec.config_from_spec(native, name)
                log.info("Domain %d: configuration taken from the toolstack that built it "
                         "(kernel %s, %d device(s))", info.domid, cfg.kernel or "-",
                         len(cfg.devices))
                return cfg.replace(memory=min(mem, cfg.maxmem)), False
            except (XendError, TypeError, ValueError) as e:
                log.warning("Domain %d: the toolstack's configuration is unusable (%s)",
                            info.domid, e)
        return cfgmod.DomainConfig(name=name, uuid=info.uuid, memory=mem,
                                   maxmem=max(mem, info.maxmem_kib // 1024),
                                   vcpus=info.max_vcpu_id + 1), False

    def _store_read(self, path: str) -> Optional[str]:
        try:
            return self.hv.store_read(path)
        except HypervisorError:
            return None

    def _apply_dom0_cpus(self) -> None:
        """dom0-cpus > 0: dom0's online VCPUs set to that many at start (reference §8.9)."""
        count = self.settings.dom0_cpus
        if count <= 0:
            return
        dom0 = self._dom0()
        count = min(count, dom0.config.vcpus)
        try:
            self.hv.set_vcpus_online(DOM0_ID, count)
        except HypervisorError as e:
            log.error("Cannot set Domain-0's VCPUs to %d: %s", count, e)
            return
        for v in range(dom0.config.vcpus):
            dom0.write_dom(f"cpu/{v}/availability", "online" if v < count else "offline")
        log.info("Domain-0 VCPUs set to %d (dom0-cpus).", count)
