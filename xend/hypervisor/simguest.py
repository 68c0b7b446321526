"""Behaviour of a simulated guest, as pure functions of its record and the time.

A domain record is a JSON-able dict kept in the simulated hypervisor's domain table. Nothing
runs in the background: time-based behaviour (cpu time, guest reactions, console output, page
dirtying) is derived from timestamps whenever the record is looked at. ``settled(rec, now)``
gives the record as it is at ``now``; mutating operations ``materialize`` it first.

Running time (``run_s``) only advances while the domain is neither paused nor shut down; it
drives cpu time (x load x online vcpus), the console and dirty events.
"""
from __future__ import annotations

import bisect
import errno
from typing import Dict, List, Optional, Tuple

from ..errors import HypervisorError
from .base import SHUTDOWN_CRASH, SHUTDOWN_NAMES, DomainInfo, DomainSpec

#: guest knobs: name -> (type, default). Set per guest with ``sim.NAME=VALUE`` in the kernel
#: command line; defaults for some come from the hypervisor's constructor.
KNOBS: Dict[str, Tuple[type, object]] = {
    "ignore_shutdown": (bool, False),   # ignore control/shutdown requests
    "shutdown_delay": (float, 0.3),     # seconds of running before answering a request
    "dirty_rate": (int, 2000),          # pages dirtied per second of running (<= nr_pages)
    "wss": (int, 0),                    # working set in pages (0 = a quarter of memory)
    "load": (float, 0.1),               # fraction of each online vcpu in use
    "crash_after": (float, 0.0),        # crash by itself after this many seconds (0 = never)
    "console_interval": (float, 10.0),  # seconds between periodic console lines
    # the host's device backends for this guest's devices (see SimulatedHypervisor.store_write)
    "hotplug_hang": (bool, False),      # hotplug scripts never answer: devices never connect
    "hotplug_error": (bool, False),     # hotplug scripts fail: devices report an error
    "unplug_hang": (bool, False),       # backends never go away when their device is closed
}
BOOT_SECONDS = 0.5          # a guest shows 'r' (not 'b') while booting
DOM0_LOAD = 0.02


def parse_knobs(cmdline: str, defaults: Dict[str, object]) -> Dict[str, object]:
    """``sim.*`` settings from a kernel command line; EINVAL on unknown names or bad values."""
    knobs = {name: defaults.get(name, default) for name, (_, default) in KNOBS.items()}
    for word in cmdline.split():
        if not word.startswith("sim."):
            continue
        name, equals, text = word[4:].partition("=")
        if name not in KNOBS:
            raise HypervisorError(errno.EINVAL, f"unknown simulated guest option 'sim.{name}'")
        kind = KNOBS[name][0]
        try:
            if kind is bool:        # 'sim.ignore_shutdown' alone means yes
                value = not equals or text not in ("0", "no", "false")
            else:
                value = kind(text)
        except ValueError:
            value = None
        if value is None or not _in_range(name, value):
            raise HypervisorError(errno.EINVAL, f"bad value for 'sim.{name}': {text!r}")
        knobs[name] = value
    return knobs


def _in_range(name: str, value: object) -> bool:
    if name == "load":
        return 0 <= value <= 1
    if name == "console_interval":
        return value > 0
    return value >= 0


def new_record(domid: int, spec: DomainSpec, knobs: Dict[str, object], now: float) -> dict:
    pages = spec.memory_kib // 4
    return {
        "domid": domid, "uuid": spec.uuid, "name": spec.name, "hvm": spec.hvm,
        "ssidref": spec.ssidref, "created": now, "cmdline": spec.cmdline,
        "mem_kib": spec.memory_kib, "maxmem_kib": spec.maxmem_kib, "map_pages": pages,
        "max_vcpus": spec.vcpus, "online_vcpus": spec.vcpus,
        "affinity": None, "vcpu_ns": [0] * spec.vcpus,
        "weight": 256, "cap": 0,
        "pause_count": 1, "shutdown": False, "reason": 0, "exit": None,
        "run_s": 0.0, "since": None, "request": None,
        "knobs": knobs,
    }


def dom0_record(nr_cpus: int, mem_kib: int, total_kib: int, boot_time: float) -> dict:
    spec = DomainSpec(name="Domain-0", uuid="00000000-0000-0000-0000-000000000000",
                      memory_kib=mem_kib, maxmem_kib=total_kib, vcpus=nr_cpus)
    knobs = parse_knobs("", {"load": DOM0_LOAD, "ignore_shutdown": True, "dirty_rate": 0})
    rec = new_record(0, spec, knobs, boot_time)
    rec.update(pause_count=0, since=boot_time)
    return rec


def next_event(rec: dict) -> Optional[Tuple[float, int, str]]:
    """(time, reason, exit kind) of the guest's next own action, if it is running and has one."""
    since = rec["since"]
    if since is None:
        return None
    knobs = rec["knobs"]
    best = None
    if rec["request"] and not knobs["ignore_shutdown"]:
        reason, asked = rec["request"]
        best = (max(asked, since) + knobs["shutdown_delay"], reason, SHUTDOWN_NAMES[reason])
    if knobs["crash_after"] > 0:
        at = since + max(0.0, knobs["crash_after"] - rec["run_s"])
        if best is None or at < best[0]:
            best = (at, SHUTDOWN_CRASH, "crash")
    return best


def fold(rec: dict, now: float) -> None:
    """Account the running segment up to ``now`` (cpu time, run time); it continues from now."""
    since = rec["since"]
    if since is None:
        return
    dt = max(0.0, now - since)
    rec["run_s"] += dt
    per_vcpu = int(dt * rec["knobs"]["load"] * 1e9)
    ns = rec["vcpu_ns"]
    for v in range(rec["online_vcpus"]):
        ns[v] += per_vcpu
    rec["since"] = now


def stop(rec: dict, now: float, reason: int, exit_kind: Optional[str]) -> None:
    """The domain enters shutdown (crash if ``reason`` is crash) at ``now``."""
    fold(rec, now)
    rec.update(since=None, shutdown=True, reason=reason, exit=exit_kind, request=None)


def materialize(rec: dict, now: float) -> bool:
    """Apply, in place, a guest action due by ``now``. True if the record changed."""
    event = next_event(rec)
    if event is None or event[0] > now:
        return False
    stop(rec, event[0], event[1], event[2])
    return True


def settled(rec: dict, now: float) -> dict:
    """The record as it is at ``now``: ``rec`` itself, or a materialized copy."""
    event = next_event(rec)
    if event is None or event[0] > now:
        return rec
    copy = dict(rec, vcpu_ns=list(rec["vcpu_ns"]))
    stop(copy, event[0], event[1], event[2])
    return copy


def run_seconds(rec: dict, now: float) -> float:
    since = rec["since"]
    return rec["run_s"] + (max(0.0, now - since) if since is not None else 0.0)


def vcpu_times(rec: dict, now: float) -> List[int]:
    since = rec["since"]
    ns = rec["vcpu_ns"]
    if since is None:
        return list(ns)
    extra = int(max(0.0, now - since) * rec["knobs"]["load"] * 1e9)
    online = rec["online_vcpus"]
    return [t + extra if v < online else t for v, t in enumerate(ns)]


def is_busy(rec: dict, now: float) -> bool:
    """A running domain shows 'r' when busy, else 'b' (idle, waiting for events)."""
    return (rec["domid"] == 0 or rec["knobs"]["load"] >= 0.5
            or run_seconds(rec, now) < BOOT_SECONDS)


def domain_info(rec: dict, now: float) -> DomainInfo:
    """DomainInfo of a *settled* record. Inlines vcpu_times/is_busy: list_domains calls this
    for every domain."""
    crashed = rec["shutdown"] and rec["reason"] == SHUTDOWN_CRASH
    since = rec["since"]
    cpu_ns = sum(rec["vcpu_ns"])
    busy = False
    if since is not None:
        dt = now - since if now > since else 0.0
        load = rec["knobs"]["load"]
        cpu_ns += int(dt * load * 1e9) * rec["online_vcpus"]
        busy = rec["domid"] == 0 or load >= 0.5 or rec["run_s"] + dt < BOOT_SECONDS
    return DomainInfo(
        domid=rec["domid"], uuid=rec["uuid"], crashed=crashed,
        shutdown=rec["shutdown"] and not crashed, paused=rec["pause_count"] > 0,
        running=busy, blocked=since is not None and not busy, hvm=rec["hvm"],
        shutdown_reason=rec["reason"] if rec["shutdown"] else 0,
        mem_kib=rec["mem_kib"], maxmem_kib=rec["maxmem_kib"], cpu_time_ns=cpu_ns,
        online_vcpus=rec["online_vcpus"], max_vcpu_id=rec["max_vcpus"] - 1,
        ssidref=rec["ssidref"], cpupool=rec.get("pool", 0))


def dirty_params(rec: dict) -> Tuple[int, int]:
    """(rate in pages/s, working set in pages) of a guest."""
    n = rec["map_pages"]
    knobs = rec["knobs"]
    wss = knobs["wss"] or max(1, n // 4)
    return min(knobs["dirty_rate"], n), min(wss, n)


def dirty_events(rec: dict, now: float) -> int:
    """Number of dirty events the guest has performed by ``now``."""
    rate, _ = dirty_params(rec)
    return int(run_seconds(rec, now) * rate)


# -- console -------------------------------------------------------------------------------
CONSOLE_KEEP = 4096     # like a console ring: older unread lines are lost

_BOOT = [
    "Linux version 6.1.0-sim (xend simulated guest) #1 SMP",
    "Command line: {cmdline}",
    "Hypervisor detected: Xen {mode}",
    "Xen version: 4.17.7 (preserve-AD)",
    "Memory: {mem_kib}K available",
    "smp: Brought up 1 node, {vcpus} CPUs",
    "xen:events: Using FIFO-based ABI",
    "xen:balloon: Initialising balloon driver",
    "Console: xen console [hvc0] enabled",
    "blkfront: xvda: flush diskcache: enabled; persistent grants: enabled",
    "xen_netfront: Initialising Xen virtual ethernet driver",
    "EXT4-fs (xvda): mounted filesystem with ordered data mode",
    "Run /sbin/init as init process",
    "systemd[1]: Hostname set to <{name}>.",
    "Debian GNU/Linux 12 {name} hvc0",
    "{name} login: ",
]
_BOOT_STEP = BOOT_SECONDS / len(_BOOT)
_EXIT = {
    "poweroff": "reboot: Power down",
    "reboot": "reboot: Restarting system",
    "halt": "reboot: System halted",
    "suspend": "xen:manage: suspending xenstore...",
    "crash": "Kernel panic - not syncing: Fatal exception (injected by the simulator)",
}


def _never_ran(rec: dict) -> bool:
    return rec["since"] is None and rec["run_s"] == 0.0


def _plain_count(rec: dict, t: float) -> int:
    """Boot and periodic console lines printed by run time ``t``."""
    boot = min(len(_BOOT), int(t / _BOOT_STEP) + 1)
    periodic = 0
    if t >= BOOT_SECONDS:
        periodic = int((t - BOOT_SECONDS) / rec["knobs"]["console_interval"])
    return boot + periodic


def console_line_count(rec: dict, now: float) -> int:
    if _never_ran(rec):
        return 0
    t = run_seconds(rec, now)
    return (_plain_count(rec, t) + len(rec.get("hotplug", ()))
            + (1 if rec["exit"] else 0))


def _event_positions(rec: dict) -> List[int]:
    """Where each hot-plug line stands among the console lines: after every boot and
    periodic line printed by its time."""
    return [j + _plain_count(rec, at) for j, (at, _) in enumerate(rec.get("hotplug", ()))]


def console_lines(rec: dict, first: int, last: int) -> List[str]:
    """Console lines with index in [first, last) of a settled record."""
    exit_index = console_line_count(rec, 0.0) - 1 if rec["exit"] else None
    events = rec.get("hotplug", [])
    positions = _event_positions(rec)
    at_position = dict(zip(positions, range(len(positions))))
    lines = []
    interval = rec["knobs"]["console_interval"]
    for i in range(max(first, last - CONSOLE_KEEP), last):
        if i == exit_index:
            at, text = rec["run_s"], _EXIT[rec["exit"]]
        elif i in at_position:
            at, text = events[at_position[i]]
        else:
            k = i - bisect.bisect_left(positions, i)
            if k < len(_BOOT):
                at = k * _BOOT_STEP
                text = _BOOT[k].format(name=rec["name"], mem_kib=rec["mem_kib"],
                                       cmdline=rec["cmdline"], vcpus=rec["online_vcpus"],
                                       mode="HVM" if rec["hvm"] else "PV")
            else:
                n = k - len(_BOOT) + 1
                at = BOOT_SECONDS + n * interval
                text = f"sim: {rec['name']} alive, heartbeat {n}"
        lines.append(f"[{int(at):5d}.{int(at * 1e6) % 1000000:06d}] {text}\n")
    return lines


# -- devices the guest sees ------------------------------------------------------------------
#: hot-plug console lines kept per guest (each stays at its place in the console)
HOTPLUG_KEEP = 1024
_KINDS = {"vbd": "disks", "vif": "nics"}


def guest_devices(rec: dict) -> Dict[str, List[str]]:
    """What the guest sees: ``{'disks': ['xvda', ...], 'nics': ['eth0', ...]}``."""
    devs = rec.get("devices") or {}
    out = {}
    for group, kind in _KINDS.items():
        names = devs.get(group, {}).values()
        out[kind] = sorted(names, key=lambda n: (len(n), n))
    return out


def say(rec: dict, now: float, text: str) -> None:
    """A line on the guest's console, if it has booted (devices present at its boot are
    just there)."""
    if _never_ran(rec):
        return
    events = rec.setdefault("hotplug", [])
    if len(events) < HOTPLUG_KEEP:
        events.append([run_seconds(rec, now), text])


def device_added(rec: dict, now: float, group: str, devid: str, name: str) -> str:
    """The guest's frontend found a device (a disk ``name``, or a nic: named here, the
    lowest free ``ethN``); it says so. Returns the name."""
    devs = rec.setdefault("devices", {}).setdefault(group, {})
    if devid in devs:
        return devs[devid]
    if group == "vif":
        used = set(devs.values())
        n = 0
        while f"eth{n}" in used:
            n += 1
        name = f"eth{n}"
    devs[devid] = name
    kind = _KINDS.get(group, group)
    say(rec, now, f"sim: {kind} now: {' '.join(guest_devices(rec).get(kind, []))}".rstrip())
    return name


def device_removed(rec: dict, now: float, group: str, devid: str) -> None:
    devs = (rec.get("devices") or {}).get(group, {})
    if devs.pop(devid, None) is not None:
        kind = _KINDS.get(group, group)
        say(rec, now, f"sim: {kind} now: {' '.join(guest_devices(rec).get(kind, []))}".rstrip())


def medium_changed(rec: dict, now: float, group: str, devid: str, medium: str) -> None:
    name = ((rec.get("devices") or {}).get(group) or {}).get(devid)
    if name is not None:
        say(rec, now, f"sim: cdrom {name} now holds {medium}" if medium
             else f"sim: cdrom {name} is empty")
