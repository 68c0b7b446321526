"""The per-domain calls of ``xm`` (reference §5.3): pause, shutdown, memory, vcpus, pinning,
scheduler, rename, sysrq, restart count, pause flag, reset, core dump, console, migrate;
part of DomainRegistry. Messages are the original's."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Dict, Iterator, List, Optional

from xend.errors import HypervisorError, VMBadState, VmError, XendError
from xend.hypervisor.base import SHUTDOWN_REASONS, TRIGGERS

from . import config as cfgmod
from .domain import Domain
from .dump import default_core_path, write_core
from .states import CRASHED, HALTED, PAUSED, RUNNING

log = logging.getLogger("xend.XendDomain")


@contextlib.contextmanager
def hv_errors() -> Iterator[None]:
    """A hypervisor failure inside a call becomes a XendError with its message."""
    try:
        yield
    except HypervisorError as e:
        raise XendError(str(e.message)) from None


def int_arg(name: str, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise XendError(f"Invalid {name}: {value!r}") from None


def bool_arg(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


class OperationsMixin:
    # -- power ----------------------------------------------------------------------------------
    def domain_shutdown(self, dom: Any, reason: str = "poweroff") -> None:
        """Ask the guest to shut down: ``control/shutdown`` = reason; a timer notes a guest
        that does not react within SHUTDOWN_TIMEOUT (``xend/unresponsive``)."""
        d = self._get(dom)
        if d.domid is None or d.state(d.info(), False) == HALTED:
            raise XendError("Domain cannot be shutdown")
        if d.is_dom0:
            raise XendError("Domain 0 cannot be shutdown")
        if reason not in SHUTDOWN_REASONS:
            raise XendError("Invalid reason: %s" % reason)
        log.debug("XendDomainInfo.shutdown(%s) of %s (%s)", reason, d.name, d.domid)
        with hv_errors():
            d.write_dom("control/shutdown", reason)
        if reason != "suspend":
            now = time.time()
            d.shutdown_requested_at = now
            d.write_dom("xend/shutdown_start_time", repr(now))

    def domain_pause(self, dom: Any, state: Any = False) -> Optional[int]:
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot pause privileged domain %s" % dom)
        ds = self._state(d)
        if ds not in (RUNNING, PAUSED, CRASHED):
            raise VMBadState("Domain '%s' is not started" % dom)
        log.info("Domain %s (%d) paused.", d.name, d.domid)
        if ds == RUNNING:
            with hv_errors():
                self.hv.pause(d.domid)
        return ds if bool_arg(state) else None

    def domain_unpause(self, dom: Any) -> None:
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot unpause privileged domain %s" % dom)
        if self._state(d) not in (PAUSED, RUNNING):
            raise VMBadState("Domain '%s' is not started" % dom)
        log.info("Domain %s (%d) unpaused.", d.name, d.domid)
        with hv_errors():
            self.hv.unpause(d.domid)

    def domain_reset(self, dom: Any) -> None:
        """Hard reset: destroy the Xen domain and build a new one from the same config."""
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot reset privileged domain %s" % dom)
        with self._operation(d):
            if self._state(d) not in (RUNNING, PAUSED):
                raise VMBadState("Domain '%s' is not started" % dom)
            info = d.info()
            if info is None:
                raise VMBadState("Domain '%s' is not started" % dom)
            self._check_boot_files(d.config)
            try:
                self._teardown(d, keep_vm=True)
                self._build(d, paused=True, fresh=False)
                self._devices_ready(d)
                if not info.paused:
                    self.hv.unpause(d.domid)
            except XendError:
                raise
            except Exception as ex:  # noqa: BLE001
                raise XendError(str(ex)) from None
            finally:
                if d.domid is None and not d.managed:
                    self._remove(d)
        log.info("Domain %s reset (now %d).", d.name, d.domid)

    # -- memory ---------------------------------------------------------------------------------
    def domain_setMemoryTarget(self, dom: Any, target: Any) -> None:
        d = self._get(dom)
        target = int_arg("memory target", target)
        log.debug("Setting memory target of domain %s (%s) to %d MiB.", d.name, d.domid, target)
        cur = d.config.memory
        if d.is_dom0 and target < cur and self.settings.dom0_min_mem > target:
            raise XendError("memory_dynamic_max too small")
        cfgmod.check_memory(target, d.config.maxmem)
        with self._persisting(d, d.config.replace(memory=target)):
            if d.domid is not None:
                with self._balloon_lock, hv_errors():
                    if target > cur and not d.is_dom0:
                        self._balloon((target - cur) * 1024)
                    self.hv.set_memory_target(d.domid, target * 1024)
                d.write_vm("memory", str(target))
                d.write_dom("memory/target", str(target * 1024))

    def domain_maxmem_set(self, dom: Any, memory: Any) -> None:
        d = self._get(dom)
        limit = int_arg("memory", memory)
        log.debug("Setting memory maximum of domain %s (%s) to %d MiB.", d.name, d.domid, limit)
        cfgmod.check_memory(d.config.memory, limit)
        with self._persisting(d, d.config.replace(maxmem=limit)):
            if d.domid is not None:
                with hv_errors():
                    self.hv.set_max_memory(d.domid, limit * 1024)

    # -- vcpus ----------------------------------------------------------------------------------
    def domain_setVCpuCount(self, dom: Any, vcpus: Any) -> None:
        d = self._get(dom)
        n = int_arg("vcpus", vcpus)
        cfg = d.config
        if n <= 0:
            raise XendError("Zero or less VCPUs is invalid")
        if d.domid is not None and n > cfg.vcpus:
            raise XendError("Cannot set vcpus greater than max vcpus on running domain")
        avail = (1 << n) - 1
        if d.domid is not None:
            new = cfg.replace(vcpu_avail=avail)
        else:
            cfgmod.check_vcpus(n, self._host_cpus())
            new = cfg.replace(vcpus=n, vcpu_avail=avail, cpus=cfgmod.resize_cpus(cfg.cpus, n),
                              cpu_cap=min(cfg.cpu_cap, n * 100))
        with self._persisting(d, new):
            if d.domid is not None:
                with hv_errors():
                    self.hv.set_vcpus_online(d.domid, n)
                d.write_vm("vcpu_avail", str(avail))
                for v in range(cfg.vcpus):
                    d.write_dom(f"cpu/{v}/availability", "online" if v < n else "offline")
        log.info("Set VCPU count on domain %s to %d", d.name, n)

    def domain_pincpu(self, dom: Any, vcpu: Any, cpumap: Any) -> int:
        d = self._get(dom)
        cfg = d.config
        if str(vcpu).strip().lower() == "all":
            vcpus = list(range(cfg.vcpus))
        else:
            vcpus = [int_arg("vcpu", vcpu)]
        cpus = cfgmod.parse_cpu_spec(str(cpumap))
        per = [list(cfg.affinity(v)) for v in range(cfg.vcpus)]
        active = self._state(d) in (RUNNING, PAUSED)
        for v in vcpus:
            if not 0 <= v < cfg.vcpus:
                raise XendError("Cannot pin vcpu: %d to cpu: %s - %s"
                                % (v, cpus, "no such vcpu"))
            per[v] = cpus
        new = cfg.replace(cpus=tuple(tuple(c) for c in per) if any(per) else ())
        with self._persisting(d, new):
            for v in vcpus if active else ():
                try:
                    self.hv.set_vcpu_affinity(d.domid, v, cpus)
                except HypervisorError as ex:
                    log.error("pincpu %s vcpu %d: %s", d.name, v, ex)
                    raise XendError("Cannot pin vcpu: %d to cpu: %s - %s" % (v, cpus, ex)) \
                        from None
        return 0

    def domain_getVCPUInfo(self, dom: Any) -> list:
        d = self._get(dom)
        cfg = d.config
        out: List[Any] = ["domain", ["domid", d.domid], ["name", cfg.name],
                          ["vcpu_count", cfg.vcpus]]
        infos = None
        if d.domid is not None:
            try:
                infos = self.hv.vcpu_info(d.domid)
            except HypervisorError:
                infos = None
        if infos is not None:
            for v in infos:
                out.append(["vcpu", ["number", v.number], ["online", int(v.online)],
                            ["blocked", int(v.blocked)], ["running", int(v.running)],
                            ["cpu_time", v.cpu_time_ns / 1e9], ["cpu", v.cpu],
                            ["cpumap", list(v.affinity)]])
        else:
            all_cpus = list(range(self._host_cpus()))
            for i in range(cfg.vcpus):
                out.append(["vcpu", ["number", i], ["online", 0], ["blocked", 0],
                            ["running", 0], ["cpu_time", 0.0], ["cpu", -1],
                            ["cpumap", cfg.affinity(i) or all_cpus]])
        return out

    # -- scheduler ------------------------------------------------------------------------------
    def domain_sched_credit_get(self, dom: Any) -> Dict[str, int]:
        d = self._get(dom)
        if self._state(d) in (RUNNING, PAUSED):
            with hv_errors():
                weight, cap = self.hv.sched_credit_get(d.domid)
            return {"weight": weight, "cap": cap}
        return {"weight": d.config.cpu_weight, "cap": d.config.cpu_cap}

    def domain_sched_credit_set(self, dom: Any, weight: Any = None, cap: Any = None) -> int:
        d = self._get(dom)
        cfg = d.config
        try:
            if weight is not None:
                weight = int_arg("weight", weight)
                if not 1 <= weight <= 65535:
                    raise XendError("Cpu weight out of range, valid values are within range "
                                    "from 1 to 65535")
            if cap is not None:
                cap = int_arg("cap", cap)
                if not 0 <= cap <= cfg.vcpus * 100:
                    raise XendError("Cpu cap out of range, valid range is from 0 to %s for "
                                    "specified number of vcpus" % (cfg.vcpus * 100))
            new_weight = cfg.cpu_weight if weight is None else weight
            new_cap = cfg.cpu_cap if cap is None else cap
            with self._persisting(d, cfg.replace(cpu_weight=new_weight, cpu_cap=new_cap)):
                if self._state(d) in (RUNNING, PAUSED):
                    cur_weight, cur_cap = self.hv.sched_credit_get(d.domid)
                    self.hv.sched_credit_set(d.domid, cur_weight if weight is None else weight,
                                             cur_cap if cap is None else cap)
            return 0
        except XendError:
            raise
        except Exception as ex:  # noqa: BLE001
            log.exception("sched_credit_set %s", d.name)
            raise XendError(str(ex)) from None

    def domain_cpupool_migrate(self, dom: Any, poolid: int, pool_name: str) -> None:
        """Move the domain into CPU pool ``poolid`` (for xend.cpu_pool.migrate): the running
        domain at once, and its ``pool_name`` for the next start."""
        d = self._get(dom)
        if d.is_dom0:
            raise VmError("could not move Domain-0")
        with self._operation(d):
            with self._persisting(d, d.config.replace(pool_name=pool_name)):
                if d.domid is not None:
                    try:
                        self.hv.cpupool_move_domain(poolid, d.domid)
                    except HypervisorError as e:
                        raise VmError("could not move domain: %s" % e.message) from None

    def domain_send_trigger(self, dom: Any, trigger: Any, vcpu: Any = 0) -> None:
        """``xm trigger``: what the domain's hardware would get (TRIGGERS)."""
        d = self._get(dom)
        if self._state(d) not in (RUNNING, PAUSED):
            raise VMBadState("Domain '%s' is not started" % dom)
        name = str(trigger).lower()
        if name not in TRIGGERS:
            raise XendError("Invalid trigger: %s" % trigger)
        with hv_errors():
            self.hv.send_trigger(d.domid, name, int_arg("vcpu", vcpu))

    # -- identity and small things --------------------------------------------------------------
    def domain_setName(self, dom: Any, name: Any) -> None:
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot rename privileged domain %s" % dom)
        name = "" if name is None else str(name)
        cfgmod.check_name(name)
        with self._reserve(d.config.replace(name=name), check_uuid=False, exclude=d):
            with self._persisting(d, d.config.replace(name=name)):
                pass
        if d.domid is not None:
            d.write_vm("name", name)
            d.write_dom("name", name)

    def domain_send_sysrq(self, dom: Any, key: Any) -> None:
        d = self._get(dom)
        if self._state(d) not in (RUNNING, PAUSED):
            raise XendError("Domain '%s' is not started" % d.name)
        if isinstance(key, int) and not isinstance(key, bool):
            key = chr(key)
        key = str(key)
        if len(key) != 1:
            raise XendError(f"Invalid sysrq key: {key!r}")
        with hv_errors():
            d.write_dom("control/sysrq", key)

    def domain_waitForDevices(self, dom: Any) -> None:
        """Block until the backends of the domain's devices are connected, at most
        device-create-timeout seconds (VmError ``Device N (CLASS) could not be connected``).
        Nothing to wait for on a host without device backends (the xenctrl backend)."""
        self._wait_for_devices(self._get(dom))

    def domain_getRestartCount(self, dom: Any) -> str:
        d = self._get(dom)
        return d.read_vm("xend/restart_count") or "0"

    def domain_setpauseflag(self, dom: Any, flag: Any = False) -> None:
        try:
            self._get(dom).pause_flag = bool_arg(flag)
        except Exception:  # noqa: BLE001 - as the original: logged, never an error
            log.debug("error in in setpauseflag")

    def domain_getpauseflag(self, dom: Any) -> Optional[bool]:
        try:
            return self._get(dom).pause_flag
        except Exception:  # noqa: BLE001
            log.debug("error in in getpauseflag")
            return None

    # -- core dumps -----------------------------------------------------------------------------
    def domain_dump(self, dom: Any, filename: Any = None, live: Any = False, crash: Any = False,
                    reset: Any = False) -> None:
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot dump core for privileged domain %s" % dom)
        state = self._state(d)
        if state not in (PAUSED, RUNNING, CRASHED):
            raise VMBadState("Domain '%s' is not started" % dom)
        live, crash, reset = bool_arg(live), bool_arg(crash), bool_arg(reset)
        dopause = not live and state == RUNNING
        try:
            with d.op_lock:
                if dopause:
                    with hv_errors():
                        self.hv.pause(d.domid)
                log.info("Domain core dump requested for domain %s (%d) live=%d crash=%d "
                         "reset=%d.", d.name, d.domid, live, crash, reset)
                try:
                    self._dump_core(d, filename or None)
                except Exception as ex:  # noqa: BLE001
                    raise XendError(str(ex)) from None
            if crash:
                self.domain_destroy(d)
            elif reset:
                self.domain_reset(d)
        finally:
            # after a reset the new domain was built paused like the old one: unpause it too
            if dopause and not crash and d.domid is not None:
                try:
                    self.hv.unpause(d.domid)
                except HypervisorError:
                    log.warning("Could not unpause %s after its core dump", d.name)

    def _dump_core(self, d: Domain, filename: Optional[str]) -> str:
        domid = d.domid
        if domid is None:
            raise XendError("Domain '%s' is not started" % d.name)
        path = str(filename) if filename else default_core_path(self.settings.dump_path,
                                                                d.name, domid)
        op = self.tracker.start("dump", d.name, d.uuid)
        try:
            d.write_vm("xend/dumpcore_in_progress", "True")
            write_core(self.hv, domid, d.name, d.uuid, path)
        finally:
            d.rm_vm("xend/dumpcore_in_progress")
            op.finish()
        log.info("Domain %s (%d) core dumped to %s.", d.name, domid, path)
        return path

    # -- console --------------------------------------------------------------------------------
    def domain_console(self, dom: Any, offset: Any = 0) -> list:
        """[next offset as a string, bytes from ``offset``] of the domain's console buffer;
        offsets are absolute, so the next call with the returned offset gets what followed."""
        d = self._get(dom)
        domid = d.domid
        if domid is None:
            raise VMBadState("Domain '%s' is not started" % dom)
        if self.hv.console_server:
            raise XendError("The console of domain %s (%d) is served by %s: attach with its "
                            "client (xm console does)" % (d.name, domid,
                                                          self.hv.console_server))
        self._pull_console(domid)
        nxt, data = self.consoles.read(domid, int_arg("offset", offset))
        return [str(nxt), data]

    # -- migration ------------------------------------------------------------------------------
    def domain_migrate(self, dom: Any, dst_host: Any, live: Any = False, port: Any = 0,
                       node: Any = -1, ssl: Any = None, chs: Any = False) -> Any:
        """Migrate; returns the migrator's figures (bytes, seconds, final_pause ...), which
        the original's xm ignored and ours prints for a live migration."""
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot migrate privileged domain %s" % dom)
        if self._state(d) != RUNNING:
            raise VMBadState("Domain is not running")
        if bool_arg(chs) and not d.managed:
            raise XendError("Domain is not a managed domain")
        if self.migrator is None:
            raise XendError("Migration is not available")
        with hv_errors():
            self.hv.check_movable(d.domid, bool_arg(live))
        return self.migrator(d, str(dst_host), bool_arg(live), int_arg("port", port),
                             int_arg("node", node), None if ssl is None else bool_arg(ssl),
                             bool_arg(chs))

