"""``xm`` in Xen-API mode: the legacy calls the commands make (``server.xend.domain.create``,
``server.xend.domains_with_state`` ...), carried out through the Xen-API of the server that
``xm-config.xml`` names. The commands are the same in both modes and so is their output: the
Xen-API's records are turned back into the legacy domain records here, with the same code
the server uses for the other direction (``xend.xenapi.records``).

The calls made (as the original xm did in Xen-API mode):

* list / domain lookups: ``VM.get_all_records``, ``VM_metrics.get_all_records`` (and the
  VBD, VIF, VDI and network records for ``-l``);
* info: the ``host``, ``host_metrics`` and ``host_cpu`` records;
* create: ``VM.create`` (a transient VM: other_config ``transient``), ``VDI.create`` for a
  disk no VDI has yet, ``network.create`` for a bridge no network has, ``VBD.create``,
  ``VIF.create``, ``VM.start`` (paused), then ``VM.unpause``; new: the same, managed, not
  started;
* start, pause, unpause, destroy (``VM.hard_shutdown``), delete (``VM.destroy``), shutdown
  and reboot (``Async.VM.clean_shutdown``/``clean_reboot``: xm returns at once, as in
  legacy mode).

A legacy call without a Xen-API equivalent here is refused: ``<call> is not available in
Xen-API mode``. Failures become the faults the commands expect (3 for an unknown domain).
"""
from __future__ import annotations

import atexit

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Dict, List, Optional, Tuple

MIB = 1024 * 1024
STATE_LETTERS = "rbpscd"
STATE_FLAGS = ("running", "blocked", "paused", "shutdown", "crashed", "dying")
POWER_INTS = {"Halted": 0, "Paused": 1, "Running": 2, "Suspended": 3, "Crashed": 5,
              "Unknown": 6}


class _Namespace:
    def __init__(self, proxy: "XenAPIProxy", name: str):
        self._proxy = proxy
        self._name = name

    def __getattr__(self, name: str) -> "_Namespace":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Namespace(self._proxy, f"{self._name}.{name}")

    def __call__(self, *args: "Any") -> "Any":
        return self._proxy.legacy_call(self._name, args)


class XenAPIProxy:
    def __init__(self, cfg: "Any", warn=None):
        from xend.xm.client import make_proxy

        self.cfg = cfg
        self.rpc = make_proxy(cfg.uri)
        self.warn = warn or (lambda message: None)
        self.session: "Optional[str]" = None
        self.xend = _Namespace(self, "xend")

    # -- the Xen-API ------------------------------------------------------------------------
    def login(self) -> str:
        if self.session is None:
            from xend.xm.client import ClientError

            result = getattr(self.rpc, "session.login_with_password")(
                self.cfg.username, self.cfg.password, "1.0", "xm")
            if result.get("Status") != "Success":
                desc = result.get("ErrorDescription") or ["?"]
                if desc[0] == "SESSION_AUTHENTICATION_FAILED":
                    raise ClientError(f"Xen-API at {self.cfg.uri}: authentication of "
                                      f"{self.cfg.username!r} failed") from None
                raise ClientError(f"Xen-API at {self.cfg.uri}: login failed: "
                                  f"{' '.join(map(str, desc))}") from None
            self.session = result["Value"]
            atexit.register(self.logout)
        return self.session

    def logout(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            try:
                getattr(self.rpc, "session.logout")(session)
            except Exception:  # noqa: BLE001 - leaving anyway
                pass

    def x(self, method: str, *args: "Any", dom: "Any" = None) -> "Any":
        """One Xen-API call; its value, or the fault the legacy interface would give."""
        result = getattr(self.rpc, method)(self.login(), *args)
        if result.get("Status") == "Success":
            return result.get("Value")
        raise self.fault(result.get("ErrorDescription") or ["INTERNAL_ERROR", "?"], dom)

    @staticmethod
    def fault(desc: "List[str]", dom: "Any" = None) -> Exception:
        from xmlrpc.client import Fault

        code, params = desc[0], [str(p) for p in desc[1:]]
        if code == "HANDLE_INVALID" and params[:1] == ["VM"]:
            return Fault(3, str(dom if dom is not None else params[-1]))
        if code == "VM_BAD_POWER_STATE" and len(params) >= 3:
            expected, actual = params[1], params[2]
            if expected == "Halted":
                return Fault(2, "Domain is already running")
            if actual in ("Halted", "Suspended"):
                return Fault(2, f"Domain '{dom}' is not started")
            return Fault(2, f"Domain '{dom}' is {actual.lower()}, not {expected.lower()}")
        if code == "INTERNAL_ERROR" and params:
            return Fault(2, params[0])
        if code == "VALUE_NOT_SUPPORTED" and len(params) >= 3:
            return Fault(2, params[2])
        return Fault(2, " ".join([code] + params))

    # -- finding a VM as the legacy interface does ------------------------------------------------
    def records(self) -> "Dict[str, Dict[str, Any]]":
        return self.x("VM.get_all_records")

    def find(self, dom: "Any", recs: "Optional[Dict[str, Dict[str, Any]]]" = None) -> str:
        """The VM ref of ``dom``: a name, a domid or a uuid (reference §8.1's order)."""
        from xmlrpc.client import Fault

        key = str(dom).strip()
        recs = self.records() if recs is None else recs
        for want_running in (True, False):
            for ref, r in recs.items():
                if r["name_label"] == key and (r["domid"] != "-1") == want_running:
                    return ref
        if key.lstrip("-").isdigit():
            for ref, r in recs.items():
                if r["domid"] == str(int(key)) and r["domid"] != "-1":
                    return ref
        low = key.lower()
        for ref, r in recs.items():
            if r["uuid"] == low:
                return ref
        raise Fault(3, key)

    # -- legacy records ---------------------------------------------------------------------------
    def _metrics(self) -> "Dict[str, Dict[str, Any]]":
        return self.x("VM_metrics.get_all_records")

    @staticmethod
    def _state(m: "Dict[str, Any]") -> str:
        flags = set(m.get("state") or [])
        return "".join(c if f in flags else "-" for c, f in zip(STATE_LETTERS, STATE_FLAGS))

    def brief(self, r: "Dict[str, Any]", m: "Dict[str, Any]") -> list:
        rec: list = ["domain"]
        running = r["domid"] != "-1"
        if running:
            rec.append(["domid", int(r["domid"])])
        vcpus = int(m.get("VCPUs_number", r["VCPUs_max"])) if running else int(r["VCPUs_max"])
        rec += [["name", r["name_label"]], ["memory", int(r["memory_dynamic_max"]) // MIB],
                ["online_vcpus", vcpus]]
        if running:
            rec.append(["state", self._state(m)])
        rec.append(["cpu_time", float(m.get("cpu_time", 0.0) or 0.0)])
        return rec

    def full(self, r: "Dict[str, Any]", m: "Dict[str, Any]", devices: bool) -> list:
        """The legacy domain record (reference §5.4) of a VM record and its metrics."""
        from xend.domains import config as cfgmod
        from xend.xenapi import records as xrec

        sxp = xrec.config_from_record(r, r["uuid"])
        if devices:
            sxp += [["device", d] for d in self._devices(r)]
        cfg = cfgmod.parse_config(sxp)
        running = r["domid"] != "-1"
        rt = cfgmod.Runtime(status=POWER_INTS.get(r["power_state"], 6))
        if running:
            rt.domid = int(r["domid"])
            rt.state = self._state(m)
            rt.online_vcpus = int(m.get("VCPUs_number", cfg.vcpus))
            rt.start_time = _seconds(m.get("start_time"))
        rt.cpu_time = float(m.get("cpu_time", 0.0) or 0.0)
        return cfgmod.to_record(cfg, rt, full=devices)

    def _devices(self, r: "Dict[str, Any]") -> "List[list]":
        from xend.xenapi import records as xrec

        out = []
        for ref in r.get("VBDs", []):
            vbd = self.x("VBD.get_record", ref)
            location = self.x("VDI.get_record", vbd["VDI"])["location"] \
                if vbd["VDI"] != "OpaqueRef:NULL" else ""
            out.append(xrec.vbd_device(location, vbd["device"], vbd["mode"], vbd["type"],
                                       vbd["bootable"], vbd["uuid"]))
        for ref in r.get("VIFs", []):
            vif = self.x("VIF.get_record", ref)
            bridge = self.x("network.get_record", vif["network"])["bridge"] \
                if vif["network"] != "OpaqueRef:NULL" else None
            rate = vif.get("qos_algorithm_params", {}).get("kbps", "")
            out.append(xrec.vif_device(vif["MAC"], bridge, int(vif["MTU"]), rate,
                                       vif["uuid"]))
        return out

    def listing(self, state: "Any", make) -> list:
        from xend.domains.states import state_filter

        wanted = state_filter(state)
        recs, metrics = self.records(), self._metrics()
        out = []
        for ref, r in sorted(recs.items(), key=lambda kv: kv[1]["name_label"]):
            if wanted(POWER_INTS.get(r["power_state"], 6)):
                out.append(make(r, metrics.get(r["metrics"], {})))
        return out

    # -- making VMs --------------------------------------------------------------------------------
    def make_vm(self, config: "Any", transient: bool) -> "Tuple[str, str]":
        """VM.create and its devices from a ``(vm ...)`` config; (ref, name)."""
        from xend.domains import config as cfgmod
        from xend.domains.states import HALTED
        from xend.xenapi import records as xrec

        try:
            cfg = cfgmod.parse_config(config)
        except cfgmod.XendConfigError as e:
            from xmlrpc.client import Fault
            raise Fault(2, e.message) from None
        record = xrec.vm_record(xrec.VmView(cfg, None, None, HALTED, False),
                                "OpaqueRef:NULL")
        for key in ("VBDs", "VIFs", "consoles", "metrics", "guest_metrics", "domid"):
            record.pop(key, None)
        if transient:
            record["other_config"] = dict(record["other_config"], transient="True")
        ref = self.x("VM.create", _wire(record))
        try:
            for dev in cfg.devices:
                self._add_device(ref, dev)
        except BaseException:
            self._quietly("VM.destroy", ref)
            raise
        return ref, cfg.name

    def _add_device(self, vm: str, dev: list) -> None:
        from xend.xenapi import records as xrec

        kind = dev[0] if dev else "?"
        details = xrec.simple_pairs(dev[1:])
        if kind in xrec.BLOCK_CLASSES:
            device, vtype = xrec.vbd_device_name(details)
            vbd = {"VM": vm, "VDI": self._vdi(details.get("uname", "")), "device": device,
                   "mode": "RW" if details.get("mode", "w").startswith("w") else "RO",
                   "type": vtype, "qos_algorithm_type": "", "qos_algorithm_params": {}}
            if "bootable" in details:
                vbd["bootable"] = details["bootable"] == "1"
            self.x("VBD.create", vbd)
        elif kind == "vif":
            vif = {"VM": vm, "MAC": details.get("mac", ""),
                   "MTU": details.get("mtu", "1500"), "device": "",
                   "network": self._network(details["bridge"]) if details.get("bridge")
                   else "OpaqueRef:NULL",
                   "qos_algorithm_type": "ratelimit" if details.get("rate") else "",
                   "qos_algorithm_params": {"kbps": details["rate"]} if details.get("rate")
                   else {}}
            self.x("VIF.create", vif)
        else:
            self.warn(f"the {kind} device is not passed through the Xen-API; left out")

    def _vdi(self, uname: str) -> str:
        for ref, r in self.x("VDI.get_all_records").items():
            if r.get("location") == uname:
                return ref
        sr = self.x("SR.get_all")[0]
        return self.x("VDI.create", {"SR": sr, "location": uname, "type": "user",
                                     "virtual_size": "0", "sharable": False,
                                     "read_only": False, "other_config": {},
                                     "name_label": "", "name_description": ""})

    def _network(self, bridge: str) -> str:
        refs = self.x("network.get_by_name_label", bridge)
        if refs:
            return refs[0]
        return self.x("network.create", {"name_label": bridge, "name_description": "",
                                         "default_gateway": "", "default_netmask": "",
                                         "other_config": {}})

    def _quietly(self, method: str, *args: "Any") -> None:
        try:
            self.x(method, *args)
        except Exception:  # noqa: BLE001 - cleaning up after the error being reported
            pass

    # -- the legacy calls ---------------------------------------------------------------------------
    def legacy_call(self, name: str, args: tuple) -> "Any":
        fn = LEGACY_CALLS.get(name)
        if fn is None:
            from xmlrpc.client import Fault
            raise Fault(1, f"{name} is not available in Xen-API mode")
        return fn(self, *args)


def _seconds(value: "Any") -> "Optional[float]":
    """Seconds since the epoch of an XML-RPC DateTime (UTC)."""
    if value is None:
        return None
    import calendar
    import time

    text = str(getattr(value, "value", value))
    for fmt in ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    return None


def _wire(value: "Any") -> "Any":
    """A record for the wire: ints as strings (the API's 64-bit ints), None as ''."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, dict):
        return {str(k): _wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    if isinstance(value, float):
        return value
    return str(value)


# -- each legacy call --------------------------------------------------------------------------
def _domain(p: XenAPIProxy, dom: "Any", full: "Any" = 0) -> list:
    recs = p.records()
    r = recs[p.find(dom, recs)]
    m = p._metrics().get(r["metrics"], {})
    return p.full(r, m, bool(full))


def _domains_with_state(p: XenAPIProxy, detail: "Any" = True, state: "Any" = "all",
                        full: "Any" = False) -> list:
    if not detail:
        return p.listing(state, lambda r, m: r["name_label"])
    return p.listing(state, lambda r, m: p.full(r, m, bool(full)))


def _domains(p: XenAPIProxy, detail: "Any" = True, full: "Any" = False) -> list:
    return _domains_with_state(p, detail, "running", full)


def _domains_brief(p: XenAPIProxy, state: "Any" = "all") -> list:
    return p.listing(state, p.brief)


def _create(p: XenAPIProxy, config: "Any") -> list:
    ref, name = p.make_vm(config, transient=True)
    try:
        p.x("VM.start", ref, True, dom=name)
    except BaseException:
        p._quietly("VM.destroy", ref)
        raise
    return _domain(p, ref, 1)


def _new(p: XenAPIProxy, config: "Any") -> None:
    p.make_vm(config, transient=False)


def _on_vm(method: str, *extra: "Any"):
    def call(p: XenAPIProxy, dom: "Any", *args: "Any") -> None:
        p.x(method, p.find(dom), *extra, dom=dom)
    return call


def _start(p: XenAPIProxy, dom: "Any", paused: "Any" = True) -> None:
    p.x("VM.start", p.find(dom), bool(paused), dom=dom)


def _destroy(p: XenAPIProxy, dom: "Any") -> None:
    recs = p.records()
    ref = p.find(dom, recs)
    if recs[ref]["power_state"] in ("Halted", "Suspended"):
        return                          # as the legacy call: nothing to destroy
    p.x("VM.hard_shutdown", ref, dom=dom)


def _shutdown(p: XenAPIProxy, dom: "Any", reason: str = "poweroff") -> None:
    ref = p.find(dom)
    if reason not in ("poweroff", "halt", "reboot"):
        from xmlrpc.client import Fault
        raise Fault(2, f"Invalid reason: {reason}")
    method = "Async.VM.clean_reboot" if reason == "reboot" else "Async.VM.clean_shutdown"
    p.x(method, ref, dom=dom)      # the task goes with the session


def _restart_token(p: XenAPIProxy, dom: "Any") -> str:
    """What changes when a domain has rebooted (stands for getRestartCount)."""
    recs = p.records()
    r = recs[p.find(dom, recs)]
    m = p.x("VM_metrics.get_record", r["metrics"])
    return f"{r['domid']}/{m.get('start_time')}"


def _node_info(p: XenAPIProxy, show_numa: "Any" = 1) -> list:
    from xend import nodeinfo

    host = p.x("host.get_all")[0]
    h = p.x("host.get_record", host)
    metrics = p.x("host_metrics.get_record", h["metrics"])
    values: "Dict[str, Any]" = dict(h["software_version"])
    values.update(h["cpu_configuration"])
    cpus = h["host_CPUs"]
    if cpus:
        cpu = p.x("host_cpu.get_record", cpus[0])
        values.setdefault("cpu_mhz", cpu["speed"])
        values["hw_caps"] = cpu["features"]
    values["total_memory"] = int(metrics["memory_total"]) // MIB
    values["free_memory"] = int(metrics["memory_free"]) // MIB
    return [[k, values[k]] for k in nodeinfo.INFO_KEYS if k in values]


LEGACY_CALLS = {
    "xend.domain": _domain,
    "xend.domains": _domains,
    "xend.domains_with_state": _domains_with_state,
    "xend.domains_brief": _domains_brief,
    "xend.domain.create": _create,
    "xend.domain.new": _new,
    "xend.domain.start": _start,
    "xend.domain.destroy": _destroy,
    "xend.domain.delete": _on_vm("VM.destroy"),
    "xend.domain.pause": _on_vm("VM.pause"),
    "xend.domain.unpause": _on_vm("VM.unpause"),
    "xend.domain.shutdown": _shutdown,
    "xend.domain.getRestartCount": _restart_token,
    "xend.domain.waitForDevices": lambda p, dom: None,     # VM.start waited for them
    "xend.domain.setpauseflag": lambda p, dom, flag=False: None,
    "xend.node.info": _node_info,
}
