"""The ``VM`` class: records, field setters and the lifecycle messages, each one the registry's
own operation (the legacy ``xend.domain.*`` calls), so both interfaces act on one state.

Lifecycle (datamodel, VM messages) -> registry:

* ``start(vm, start_paused)``: a halted managed VM -> ``domain_start``; a transient VM
  (created with other_config ``transient``, as ``xm create`` in Xen-API mode makes) ->
  ``domain_create`` then its devices, then unpause: it is an unmanaged domain from then on;
* ``pause``/``unpause`` -> ``domain_pause``/``domain_unpause``;
* ``clean_shutdown``/``clean_reboot`` -> ``domain_shutdown(poweroff|reboot)``, waiting
  (at most CLEAN_WAIT seconds) for the guest to do it;
* ``hard_shutdown`` -> ``domain_destroy``; ``hard_reboot`` -> ``domain_reset``;
* ``suspend``/``resume`` -> the managed ``domain_suspend``/``domain_resume``;
* ``migrate(vm, dest, live, options)`` -> ``domain_migrate`` (the relocation code;
  options ``port``, ``node``, ``ssl``, ``change_home_server``);
* ``create(record)`` -> ``domain_new`` (a managed, halted VM); ``destroy`` -> ``domain_delete``.

Each checks the power state first, so a wrong one is VM_BAD_POWER_STATE(vm, expected,
actual) as the datamodel says; other refusals keep the legacy interface's message.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from xend.domains import config as cfgmod
from xend.domains.config import DomainConfig
from xend.domains.states import CRASHED, HALTED, PAUSED, RUNNING, SUSPENDED

from . import records as rec
from . import wire
from .errors import (OPERATION_NOT_ALLOWED, SECURITY_ERROR, XenAPIError, bad_power_state,
                     bad_value, from_xend)
from .objects import ApiClass, Call, Record

CLEAN_WAIT = 60.0       # seconds clean_shutdown / clean_reboot wait for the guest
PRESERVE_GRACE = 2.0    # seconds a shut-down Xen domain may stay before it counts as kept
STATE_NAMES = {HALTED: "Halted", PAUSED: "Paused", RUNNING: "Running",
               SUSPENDED: "Suspended", CRASHED: "Crashed"}


def _name(state: int) -> str:
    return STATE_NAMES.get(state, "Unknown")


class VM(ApiClass):
    name = "VM"
    fields = ("uuid", "power_state", "name_label", "name_description", "user_version",
              "is_a_template", "auto_power_on", "suspend_VDI", "resident_on",
              "memory_static_max", "memory_dynamic_max", "memory_dynamic_min",
              "memory_static_min", "VCPUs_params", "VCPUs_max", "VCPUs_at_startup",
              "actions_after_shutdown", "actions_after_reboot", "actions_after_crash",
              "consoles", "VIFs", "VBDs", "crash_dumps", "VTPMs", "DPCIs", "DSCSIs",
              "DSCSI_HBAs", "PV_bootloader", "PV_kernel", "PV_ramdisk", "PV_args",
              "PV_bootloader_args", "HVM_boot_policy", "HVM_boot_params", "platform",
              "PCI_bus", "other_config", "domid", "is_control_domain", "metrics",
              "guest_metrics", "security_label", "cpu_pool", "pool_name")
    map_fields = ("VCPUs_params", "HVM_boot_params", "platform", "other_config")
    messages = ("start", "pause", "unpause", "clean_shutdown", "clean_reboot",
                "hard_shutdown", "hard_reboot", "suspend", "resume", "migrate", "create",
                "destroy", "send_sysrq", "set_VCPUs_number_live", "add_to_VCPUs_params_live",
                "set_memory_dynamic_max_live", "set_memory_dynamic_min_live",
                "set_security_label", "set_pool_name")
    async_messages = ("start", "pause", "unpause", "clean_shutdown", "clean_reboot",
                      "hard_shutdown", "hard_reboot", "suspend", "resume", "migrate",
                      "create", "destroy", "send_sysrq", "set_VCPUs_number_live",
                      "set_memory_dynamic_max_live")

    # -- records ----------------------------------------------------------------------------
    def refs(self) -> List[str]:
        return [v.uuid for v in self.api.vm_views()]

    def record(self, ref: str) -> Record:
        return rec.vm_record(self.api.vm_view(ref), self.api.host_ref)

    def records(self) -> Dict[str, Record]:
        host = self.api.host_ref
        return {v.uuid: rec.vm_record(v, host) for v in self.api.vm_views()}

    # -- helpers ------------------------------------------------------------------------------
    def _view(self, ref: Any):
        return self.api.vm_view(self.ref_arg(ref))

    def _expect(self, ref: Any, *states: int):
        v = self._view(ref)
        if v.state not in states:
            raise bad_power_state(v.uuid, _name(states[0]), v.power_state)
        return v

    def _act(self, v, fn: Callable, *args: Any) -> Any:
        with from_xend("VM", v.uuid):
            result = fn(v.uuid, *args)
        self.api.events.poke()
        return result

    def _change(self, ref: Any, field: str, value: Any,
                change: Callable[[DomainConfig], DomainConfig]) -> None:
        v = self._view(ref)
        self.api.change_config(v.uuid, change, field, value)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, call: Call, vm: Any, start_paused: Any = False, force: Any = False) -> None:
        paused = wire.as_bool(start_paused)
        v = self._expect(vm, HALTED)
        if str(rec.extra_value(v.cfg, "is_a_template") or "") in ("1", "true"):
            raise XenAPIError(OPERATION_NOT_ALLOWED, "a template cannot be started")
        if self.api.staging.get(v.uuid) is not None:
            self.api.start_transient(v.uuid, paused)
            return
        self._act(v, self.api.registry.domain_start, paused)

    def pause(self, call: Call, vm: Any) -> None:
        self._act(self._expect(vm, RUNNING), self.api.registry.domain_pause)

    def unpause(self, call: Call, vm: Any) -> None:
        self._act(self._expect(vm, PAUSED), self.api.registry.domain_unpause)

    def clean_shutdown(self, call: Call, vm: Any) -> None:
        v = self._expect(vm, RUNNING, PAUSED)
        self._act(v, self.api.registry.domain_shutdown, "poweroff")
        # done when xend has handled the guest's shutdown (its Xen domain is gone, or it
        # restarted); a dead domain kept on purpose (preserve) stays: a short grace for it
        halted_at: List[float] = []

        def done(now) -> bool:
            if now is None or now.domid != v.domid:
                return True
            if now.state in (RUNNING, PAUSED):
                return False
            halted_at[:1] = halted_at[:1] or [time.monotonic()]
            return time.monotonic() - halted_at[0] > PRESERVE_GRACE
        self._wait(v, done)

    def clean_reboot(self, call: Call, vm: Any) -> None:
        v = self._expect(vm, RUNNING, PAUSED)
        count = self.api.registry.domain_getRestartCount(v.uuid)
        self._act(v, self.api.registry.domain_shutdown, "reboot")
        self._wait(v, lambda now: now is None or now.domid != v.domid
                   or self._restart_count(v.uuid) != count)

    def _restart_count(self, ref: str) -> str:
        try:
            return self.api.registry.domain_getRestartCount(ref)
        except Exception:  # noqa: BLE001 - gone: counts as changed
            return ""

    def _wait(self, v, done: Callable[[Any], bool]) -> None:
        deadline = time.monotonic() + CLEAN_WAIT
        while time.monotonic() < deadline:
            now = self.api.vm_view_or_none(v.uuid)
            if done(now):
                break
            time.sleep(0.05)
        self.api.events.poke()

    def hard_shutdown(self, call: Call, vm: Any) -> None:
        v = self._expect(vm, RUNNING, PAUSED, CRASHED)
        self._act(v, self.api.registry.domain_destroy)

    def hard_reboot(self, call: Call, vm: Any) -> None:
        v = self._expect(vm, RUNNING, PAUSED)
        self._act(v, self.api.registry.domain_reset)

    def suspend(self, call: Call, vm: Any) -> None:
        v = self._expect(vm, RUNNING)
        self._act(v, self.api.registry.domain_suspend)

    def resume(self, call: Call, vm: Any, start_paused: Any = False,
               force: Any = False) -> None:
        v = self._expect(vm, SUSPENDED)
        self._act(v, self.api.registry.domain_resume, wire.as_bool(start_paused))

    def migrate(self, call: Call, vm: Any, dest: Any, live: Any = False,
                options: Any = None) -> None:
        v = self._expect(vm, RUNNING)
        opts = wire.as_map(options or {})
        try:
            port = int(opts.get("port", "0") or 0)
            node = int(opts.get("node", "-1") or -1)
        except ValueError:
            raise bad_value("options", opts, "port and node must be integers") from None
        ssl = wire.as_bool(opts["ssl"]) if "ssl" in opts else None
        chs = wire.as_bool(opts.get("change_home_server", "false"))
        self._act(v, self.api.registry.domain_migrate, wire.as_str(dest),
                  wire.as_bool(live), port, node, ssl, chs)

    def create(self, call: Call, record: Any) -> str:
        if not isinstance(record, dict):
            raise bad_value("VM", record, "a VM record (struct) is needed")
        given = record.get("uuid")
        uuid = cfgmod.new_uuid()
        if isinstance(given, str) and given:    # kept, as xm create keeps a config's uuid
            try:
                uuid = cfgmod.normalise_uuid(given)
            except cfgmod.XendConfigError:
                raise bad_value("uuid", given, "not a UUID") from None
            if self.api.vm_view_or_none(uuid) is not None:
                raise bad_value("uuid", given, "a VM has this uuid already")
        try:
            sxp = rec.config_from_record(record, uuid)
        except (TypeError, ValueError) as e:
            raise bad_value("VM", "record", str(e)) from None
        transient = wire.as_bool(wire.as_map(record.get("other_config") or {})
                                 .get("transient", "false"))
        if transient:
            self.api.create_transient(sxp, call.session)
        else:
            with from_xend("VM", uuid):
                self.api.registry.domain_new(sxp)
            self.api.events.poke()
        return uuid

    def destroy(self, call: Call, vm: Any) -> None:
        v = self._expect(vm, HALTED)
        if self.api.staging.remove(v.uuid):
            self.api.events.poke()
            return
        self._act(v, self.api.registry.domain_delete)

    def send_sysrq(self, call: Call, vm: Any, key: Any) -> None:
        v = self._expect(vm, RUNNING)
        self._act(v, self.api.registry.domain_send_sysrq, wire.as_str(key))

    # -- live changes -------------------------------------------------------------------------
    def set_VCPUs_number_live(self, call: Call, vm: Any, nvcpu: Any) -> None:
        v = self._view(vm)
        with from_xend("VM", v.uuid, "VCPUs_number", nvcpu):
            self.api.registry.domain_setVCpuCount(v.uuid, wire.as_int(nvcpu))
        self.api.events.poke()

    def set_memory_dynamic_max_live(self, call: Call, vm: Any, value: Any) -> None:
        self.set_memory_dynamic_max(call, vm, value)

    def set_memory_dynamic_min_live(self, call: Call, vm: Any, value: Any) -> None:
        self.set_memory_dynamic_min(call, vm, value)

    def add_to_VCPUs_params_live(self, call: Call, vm: Any, key: Any, value: Any) -> None:
        params = dict(self.record(self._view(vm).uuid)["VCPUs_params"])
        params[wire.as_str(key)] = wire.as_str(value)
        self.set_VCPUs_params(call, vm, params)

    def set_security_label(self, call: Call, vm: Any, label: Any, old_label: Any = "") -> int:
        self._view(vm)
        raise XenAPIError(SECURITY_ERROR, "-1", "this xend has no security module support")

    def set_pool_name(self, call: Call, vm: Any, pool: Any) -> None:
        name = wire.as_str(pool)
        self._change(vm, "pool_name", name, lambda c: c.replace(pool_name=name or None))

    # -- setters ------------------------------------------------------------------------------
    def set_name_label(self, call: Call, ref: Any, value: Any) -> None:
        name = wire.as_str(value)
        self._set_by(ref, "name_label", name, lambda c: c.replace(name=name),
                     self.api.registry.domain_setName, name)

    def set_name_description(self, call: Call, ref: Any, value: Any) -> None:
        text = wire.as_str(value)
        self._change(ref, "name_description", text,
                     lambda c: c.replace(description=text or None))

    def set_user_version(self, call: Call, ref: Any, value: Any) -> None:
        n = wire.as_int(value)
        self._change(ref, "user_version", n,
                     lambda c: rec.with_extra(c, "user_version", None if n == 1 else n))

    def set_is_a_template(self, call: Call, ref: Any, value: Any) -> None:
        flag = wire.as_bool(value)
        self._change(ref, "is_a_template", flag,
                     lambda c: rec.with_extra(c, "is_a_template", "1" if flag else None))

    def set_auto_power_on(self, call: Call, ref: Any, value: Any) -> None:
        flag = wire.as_bool(value)
        self._change(ref, "auto_power_on", flag,
                     lambda c: c.replace(on_xend_start="start" if flag else "ignore"))

    def _memory(self, ref: Any, field: str, value: Any) -> Dict[str, int]:
        n = wire.as_int(value)
        if n < 0:
            raise bad_value(field, value, "memory sizes must not be negative")
        mem = rec.memory_fields(self._view(ref).cfg)
        mem[field] = n
        if not (mem["memory_static_min"] <= mem["memory_dynamic_min"]
                <= mem["memory_dynamic_max"] <= mem["memory_static_max"]):
            raise bad_value(field, value, "memory_static_min <= memory_dynamic_min <= "
                            "memory_dynamic_max <= memory_static_max must hold")
        return mem

    def _set_by(self, ref: Any, field: str, value: Any,
                staged: Callable[[DomainConfig], DomainConfig], op: Callable, *args: Any) -> None:
        """A field set by a registry operation (``op(uuid, *args)``), or, on a transient VM
        that is no domain yet, by the config change ``staged``."""
        v = self._view(ref)
        if self.api.staging.get(v.uuid) is not None:
            self.api.change_config(v.uuid, staged, field, value)
            return
        with from_xend("VM", v.uuid, field, value):
            op(v.uuid, *args)
        self.api.events.poke()

    def set_memory_static_max(self, call: Call, ref: Any, value: Any) -> None:
        self._memory(ref, "memory_static_max", value)
        mib = rec.to_mib(wire.as_int(value), "memory_static_max")
        self._set_by(ref, "memory_static_max", value, lambda c: c.replace(maxmem=mib),
                     self.api.registry.domain_maxmem_set, mib)

    def set_memory_dynamic_max(self, call: Call, ref: Any, value: Any) -> None:
        self._memory(ref, "memory_dynamic_max", value)
        mib = rec.to_mib(wire.as_int(value), "memory_dynamic_max")
        self._set_by(ref, "memory_dynamic_max", value, lambda c: c.replace(memory=mib),
                     self.api.registry.domain_setMemoryTarget, mib)

    def set_memory_dynamic_min(self, call: Call, ref: Any, value: Any) -> None:
        n = self._memory(ref, "memory_dynamic_min", value)["memory_dynamic_min"]
        self._change(ref, "memory_dynamic_min", value,
                     lambda c: rec.with_extra(c, "memory_dynamic_min", n))

    def set_memory_static_min(self, call: Call, ref: Any, value: Any) -> None:
        n = self._memory(ref, "memory_static_min", value)["memory_static_min"]
        self._change(ref, "memory_static_min", value,
                     lambda c: rec.with_extra(c, "memory_static_min", n or None))

    def set_VCPUs_params(self, call: Call, ref: Any, value: Any) -> None:
        params = wire.as_map(value)
        weight, cap = params.get("weight") or None, params.get("cap") or None
        try:
            new = {"cpu_weight": int(weight)} if weight else {}
            new.update({"cpu_cap": int(cap)} if cap else {})
        except ValueError:
            raise bad_value("VCPUs_params", params, "weight and cap are integers") from None
        self._set_by(ref, "VCPUs_params", params, lambda c: c.replace(**new),
                     self.api.registry.domain_sched_credit_set, weight, cap)

    def set_VCPUs_max(self, call: Call, ref: Any, value: Any) -> None:
        n = wire.as_int(value)
        v = self._expect(ref, HALTED)

        def change(c: DomainConfig) -> DomainConfig:
            avail = None if c.vcpu_avail is None else c.vcpu_avail & ((1 << n) - 1)
            return c.replace(vcpus=n, cpus=cfgmod.resize_cpus(c.cpus, n), vcpu_avail=avail,
                             cpu_cap=min(c.cpu_cap, n * 100))
        self.api.change_config(v.uuid, change, "VCPUs_max", n)

    def set_VCPUs_at_startup(self, call: Call, ref: Any, value: Any) -> None:
        n = wire.as_int(value)
        v = self._view(ref)
        if not 0 < n <= v.cfg.vcpus:
            raise bad_value("VCPUs_at_startup", value, "must be between 1 and VCPUs_max")
        self._change(ref, "VCPUs_at_startup", n,
                     lambda c: c.replace(vcpu_avail=None if n == c.vcpus else (1 << n) - 1))

    def _action(self, ref: Any, field: str, key: str, value: Any) -> None:
        text = wire.as_str(value)
        if key == "on_crash":
            text = cfgmod.XENAPI_CRASH_ACTIONS.get(text, text)
        if text not in cfgmod.ACTIONS:
            raise bad_value(field, value, "not an action: " + " ".join(cfgmod.ACTIONS))
        self._change(ref, field, value, lambda c: c.replace(**{key: text}))

    def set_actions_after_shutdown(self, call: Call, ref: Any, value: Any) -> None:
        self._action(ref, "actions_after_shutdown", "on_poweroff", value)

    def set_actions_after_reboot(self, call: Call, ref: Any, value: Any) -> None:
        self._action(ref, "actions_after_reboot", "on_reboot", value)

    def set_actions_after_crash(self, call: Call, ref: Any, value: Any) -> None:
        self._action(ref, "actions_after_crash", "on_crash", value)

    def _pv(self, ref: Any, field: str, value: Any, **keys: Any) -> None:
        self._change(ref, field, value, lambda c: c.replace(**keys))

    def set_PV_bootloader(self, call: Call, ref: Any, value: Any) -> None:
        text = wire.as_str(value)
        self._pv(ref, "PV_bootloader", text, bootloader=text or None)

    def set_PV_bootloader_args(self, call: Call, ref: Any, value: Any) -> None:
        text = wire.as_str(value)
        self._pv(ref, "PV_bootloader_args", text, bootloader_args=text or None)

    def _image(self, c: DomainConfig) -> Dict[str, Any]:
        return {} if c.image_type else {"image_type": "linux"}

    def set_PV_kernel(self, call: Call, ref: Any, value: Any) -> None:
        text = rec.strip_file_uri(wire.as_str(value))
        self._change(ref, "PV_kernel", text,
                     lambda c: c.replace(kernel=text, **self._image(c)))

    def set_PV_ramdisk(self, call: Call, ref: Any, value: Any) -> None:
        text = rec.strip_file_uri(wire.as_str(value))
        self._change(ref, "PV_ramdisk", text,
                     lambda c: c.replace(ramdisk=text, **self._image(c)))

    def set_PV_args(self, call: Call, ref: Any, value: Any) -> None:
        text = wire.as_str(value)
        self._change(ref, "PV_args", text, lambda c: c.replace(args=text, **self._image(c)))

    def set_HVM_boot_policy(self, call: Call, ref: Any, value: Any) -> None:
        text = wire.as_str(value)
        if text not in ("", rec.HVM_POLICY):
            raise bad_value("HVM_boot_policy", text, f"'' or '{rec.HVM_POLICY}'")

        def change(c: DomainConfig) -> DomainConfig:
            if text:
                return c.replace(image_type="hvm", kernel=c.kernel if c.hvm else rec.HVM_LOADER)
            return c.replace(image_type="linux", kernel="" if c.hvm else c.kernel)
        self._change(ref, "HVM_boot_policy", text, change)

    def _image_pairs(self, c: DomainConfig, keep: Callable[[str], bool],
                     new: Dict[str, str]) -> DomainConfig:
        kept = [e for e in c.image_extra
                if not (isinstance(e, list) and len(e) == 2 and isinstance(e[1], str)
                        and not keep(e[0]))]
        kept += [[k, v] for k, v in sorted(new.items())]
        return c.replace(image_extra=tuple(kept))

    def set_HVM_boot_params(self, call: Call, ref: Any, value: Any) -> None:
        params = wire.as_map(value)
        boot = {"boot": params["order"]} if params.get("order") else {}
        self._change(ref, "HVM_boot_params", params,
                     lambda c: self._image_pairs(c, lambda k: k != "boot", boot))

    def set_platform(self, call: Call, ref: Any, value: Any) -> None:
        params = {k: v for k, v in wire.as_map(value).items()
                  if k not in ("kernel", "ramdisk", "args", "boot", "root", "ip")}
        self._change(ref, "platform", params,
                     lambda c: self._image_pairs(c, lambda k: k == "boot", params))

    def set_PCI_bus(self, call: Call, ref: Any, value: Any) -> None:
        text = wire.as_str(value)
        self._change(ref, "PCI_bus", text, lambda c: rec.with_extra(c, "PCI_bus", text or None))

    def set_other_config(self, call: Call, ref: Any, value: Any) -> None:
        params = wire.as_map(value)
        self._change(ref, "other_config", params,
                     lambda c: rec.with_extra(c, "other_config", params))
