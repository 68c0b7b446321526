"""A domain's configuration: the ``(vm ...)`` SXP of reference §8.6 parsed and validated into
a typed, immutable DomainConfig, and shown back as the domain record of §5.4.

``parse_config`` accepts what ``xm create``/``xm new`` send (headed ``vm``) and records xend
itself wrote (headed ``domain``: save images, managed-domain files, the store); runtime
fields of a record (domid, state, cpu_time ...) are ignored. Keys it does not interpret are
kept, in order, and shown back. Bad values raise XendConfigError (or VmError for the name
rules, as the original) before anything is changed.

Changes are made with ``dataclasses.replace`` on a new copy (the config is frozen), so a
reader holding a config never sees it half-updated.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from xend import sxp
from xend.errors import VmError, XendConfigError

DEFAULT_NAME = "Domain-Unnamed"
DEFAULT_MEMORY_MIB = 128
DEFAULT_WEIGHT = 256
DEFAULT_CAP = 0
MAX_MEMORY_MIB = 1 << 26            # 64 TiB: beyond any host; refuses typos like 40960000
VCPUS_PER_HOST_CPU = 8
MAX_CPU_NUMBER = 4095

ACTIONS = ("destroy", "restart", "preserve", "rename-restart",
           "coredump-destroy", "coredump-restart")
#: Xen-API spellings accepted for on_crash (reference §8.4)
XENAPI_CRASH_ACTIONS = {"coredump_and_destroy": "coredump-destroy",
                        "coredump_and_restart": "coredump-restart",
                        "rename_restart": "rename-restart"}
#: on_<key> -> the event name the original's error message uses
EVENTS = (("on_poweroff", "shutdown"), ("on_reboot", "reboot"), ("on_crash", "crash"))
XEND_START_ACTIONS = ("ignore", "start")
XEND_STOP_ACTIONS = ("ignore", "shutdown", "suspend")
IMAGE_TYPES = ("linux", "hvm")

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-.:+]+$")

#: children of (vm ...) this module interprets; everything else is kept verbatim
_KNOWN = {
    "name", "uuid", "memory", "maxmem", "shadow_memory", "vcpus", "vcpu_avail", "cpus", "cpu",
    "cpu_weight", "cpu_cap", "on_poweroff", "on_reboot", "on_crash", "on_xend_start",
    "on_xend_stop", "restart", "bootloader", "bootloader_args", "description", "pool_name",
    "features", "security_label", "image", "device",
}
#: runtime fields of a domain record, never part of a configuration
RUNTIME_KEYS = {
    "domid", "status", "state", "start_time", "cpu_time", "online_vcpus", "up_time",
    "shutdown_reason", "store_mfn", "console_mfn", "node", "vcpu_count",
}
_IMAGE_KNOWN = {"kernel", "ramdisk", "args", "root", "ip"}


@dataclass(frozen=True)
class DomainConfig:
    name: str
    uuid: str
    memory: int                     # MiB, the balloon target
    maxmem: int                     # MiB, static maximum
    vcpus: int = 1
    vcpu_avail: Optional[int] = None
    cpus: Tuple[Tuple[int, ...], ...] = ()      # per-VCPU affinity; () = no affinity at all
    cpu_weight: int = DEFAULT_WEIGHT
    cpu_cap: int = DEFAULT_CAP
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "restart"
    on_xend_start: str = "ignore"
    on_xend_stop: str = "ignore"
    shadow_memory: Optional[int] = None
    bootloader: Optional[str] = None
    bootloader_args: Optional[str] = None
    description: Optional[str] = None
    pool_name: Optional[str] = None
    features: Optional[str] = None
    security_label: Optional[str] = None
    image_type: Optional[str] = None            # 'linux' | 'hvm' | None (no image: dom0)
    kernel: str = ""
    ramdisk: str = ""
    args: str = ""                              # final kernel command line (root=/ip= folded in)
    image_extra: Tuple[Any, ...] = ()           # other children of (linux ...)/(hvm ...)
    devices: Tuple[Any, ...] = ()               # bodies of (device X): X, in order
    extra: Tuple[Any, ...] = ()                 # other children of (vm ...), in order

    # -- derived ---------------------------------------------------------------------------
    @property
    def hvm(self) -> bool:
        return self.image_type == "hvm"

    @property
    def online_vcpus(self) -> int:
        """VCPUs brought online at creation (``vcpu_avail`` bitmask, else all)."""
        if self.vcpu_avail is None:
            return self.vcpus
        count = bin(self.vcpu_avail & ((1 << self.vcpus) - 1)).count("1")
        return max(1, count)

    @property
    def pvh(self) -> bool:
        """A PVH guest: ``(pvh 1)`` in a linux image (xl's ``type = "pvh"``)."""
        return self.image_type == "linux" and any(
            key == "pvh" and str(value).strip() not in ("", "0")
            for key, value in _pairs(self.image_extra))

    @property
    def nomigrate(self) -> bool:
        for key, value in _pairs(self.extra) + _pairs(self.image_extra):
            if key == "nomigrate" and str(value).strip() not in ("", "0"):
                return True
        return False

    def affinity(self, vcpu: int) -> List[int]:
        """CPUs VCPU ``vcpu`` may run on; [] = any."""
        if vcpu < len(self.cpus):
            return list(self.cpus[vcpu])
        return []

    def replace(self, **changes: Any) -> "DomainConfig":
        return dataclasses.replace(self, **changes)


# -- parsing ------------------------------------------------------------------------------------
def parse_config(value: Any, host_cpus: Optional[int] = None) -> DomainConfig:
    """Validate a ``(vm ...)`` (or ``(domain ...)``) SXP. ``host_cpus`` bounds ``vcpus``
    (at most 8 per host CPU); None skips that check."""
    value = _normalise(value)
    if not isinstance(value, list) or not value or value[0] not in ("vm", "domain"):
        raise XendConfigError("a domain configuration must be a (vm ...) list")
    kids = [k for k in value[1:] if isinstance(k, list) and k and isinstance(k[0], str)]

    def get(key: str, default: Any = None) -> Any:
        for k in kids:
            if k[0] == key:
                return k[1] if len(k) > 1 else default
        return default

    fields: dict = {}
    name = get("name", DEFAULT_NAME)
    if not isinstance(name, str):
        raise VmError("Invalid VM Name")
    check_name(name)
    fields["name"] = name
    raw_uuid = get("uuid")
    fields["uuid"] = normalise_uuid(raw_uuid) if raw_uuid not in (None, "") else new_uuid()

    memory = _int("memory", get("memory", DEFAULT_MEMORY_MIB))
    if memory < 1:
        raise XendConfigError(f"Invalid memory size: {memory} MiB (must be at least 1)")
    maxmem_raw = get("maxmem")
    maxmem = memory if maxmem_raw in (None, "") else _int("maxmem", maxmem_raw)
    if maxmem < 1:
        raise XendConfigError(f"Invalid maxmem size: {maxmem} MiB (must be at least 1)")
    check_memory(memory, maxmem)
    fields.update(memory=memory, maxmem=maxmem)
    shadow = get("shadow_memory")
    if shadow not in (None, ""):
        shadow = _int("shadow_memory", shadow)
        if shadow < 0 or shadow > MAX_MEMORY_MIB:
            raise XendConfigError(f"Invalid shadow_memory: {shadow}")
        fields["shadow_memory"] = shadow

    vcpus = _int("vcpus", get("vcpus", 1))
    check_vcpus(vcpus, host_cpus)
    fields["vcpus"] = vcpus
    avail = get("vcpu_avail")
    if avail not in (None, ""):
        avail = _int("vcpu_avail", avail)
        if avail < 0:
            raise XendConfigError(f"Invalid vcpu_avail: {avail}")
        fields["vcpu_avail"] = avail
    fields["cpus"] = parse_cpus(get("cpus"), vcpus, get("cpu"))

    weight = get("cpu_weight")
    fields["cpu_weight"] = DEFAULT_WEIGHT if weight in (None, "") else _int("cpu_weight", weight)
    cap = get("cpu_cap")
    fields["cpu_cap"] = DEFAULT_CAP if cap in (None, "") else _int("cpu_cap", cap)
    check_weight(fields["cpu_weight"])
    check_cap(fields["cpu_cap"], vcpus)

    fields.update(_parse_actions(get))
    for key in ("bootloader", "bootloader_args", "description", "pool_name", "features",
                "security_label"):
        v = get(key)
        if v is not None:
            if not isinstance(v, str):
                raise XendConfigError(f"Invalid {key}: {sxp.to_string(v)}")
            fields[key] = v

    image = get("image")
    if image not in (None, "", []):
        fields.update(_parse_image(image))

    fields["devices"] = tuple(k[1] for k in kids
                              if k[0] == "device" and len(k) > 1 and isinstance(k[1], list))
    if fields.get("image_type") == "hvm":
        fields["devices"] += _hvm_vfb(fields["image_extra"], fields["devices"])
    fields["extra"] = tuple(k for k in kids if k[0] not in _KNOWN and k[0] not in RUNTIME_KEYS)
    return DomainConfig(**fields)


def _parse_actions(get) -> dict:
    out = {}
    for key, _event in EVENTS:
        v = get(key)
        if v not in (None, ""):
            out[key] = v
    restart = get("restart")
    if restart == "onreboot":
        out.update(on_poweroff="destroy", on_reboot="restart", on_crash="destroy")
    elif restart == "always":
        out.update(on_poweroff="restart", on_reboot="restart", on_crash="restart")
    elif restart == "never":
        # the 4.x quirk: 'never' is not an event handling mode, so validation fails below
        out.update(on_poweroff="never", on_reboot="never", on_crash="never")
    if isinstance(out.get("on_crash"), str):
        out["on_crash"] = XENAPI_CRASH_ACTIONS.get(out["on_crash"], out["on_crash"])
    for key, event in EVENTS:
        if key in out and out[key] not in ACTIONS:
            raise XendConfigError("Invalid event handling mode: " + event)
    for key, allowed in (("on_xend_start", XEND_START_ACTIONS),
                         ("on_xend_stop", XEND_STOP_ACTIONS)):
        v = get(key)
        if v in (None, ""):
            continue
        if v not in allowed:
            raise XendConfigError(f"Invalid {key}: {sxp.to_string(v)} "
                                  f"(must be {' or '.join(allowed)})")
        out[key] = v
    return out


def _parse_image(image: Any) -> dict:
    if not isinstance(image, list) or not image or not isinstance(image[0], str):
        raise XendConfigError(f"Invalid image: {sxp.to_string(image)}")
    kind = image[0]
    if kind not in IMAGE_TYPES:
        raise XendConfigError(f"Unknown image type: {kind}")
    kids = [k for k in image[1:] if isinstance(k, list) and k]

    def get(key: str) -> str:
        for k in kids:
            if k[0] == key and len(k) > 1:
                if not isinstance(k[1], str):
                    raise XendConfigError(f"Invalid image {key}: {sxp.to_string(k[1])}")
                return k[1]
        return ""

    args = get("args")
    prefix = []
    root = get("root")
    if root and not _has_word(args, "root="):
        prefix.append("root=" + (root[5:] if root.startswith("root=") else root))
    ip = get("ip")
    if ip and not _has_word(args, "ip="):
        prefix.append("ip=" + ip)
    if prefix:
        args = " ".join(prefix + ([args] if args else []))
    return {"image_type": kind, "kernel": get("kernel"), "ramdisk": get("ramdisk"),
            "args": args, "image_extra": tuple(k for k in kids if k[0] not in _IMAGE_KNOWN)}


#: what an HVM guest's VNC framebuffer takes from its image (as the original 4.x did)
_VFB_FROM_IMAGE = ("vncpasswd", "vncunused", "vncdisplay", "vnclisten", "keymap")


def _hvm_vfb(image_extra: Sequence[Any], devices: Sequence[Any]) -> Tuple[Any, ...]:
    """An HVM guest with ``(vnc 1)`` in its image and no vfb device gets one, with the VNC
    settings of its image, as the original's configuration did (its console for the
    Xen-API)."""
    pairs = dict(_pairs(image_extra))
    try:
        vnc = int(str(pairs.get("vnc", "0")).strip() or 0)
    except ValueError:
        vnc = 0
    if not vnc or any(isinstance(d, list) and d and d[0] == "vfb" for d in devices):
        return ()
    vfb: list = ["vfb", ["vnc", "1"]]
    vfb += [[key, pairs[key]] for key in _VFB_FROM_IMAGE if key in pairs]
    return (vfb,)


def _has_word(args: str, prefix: str) -> bool:
    return any(word.startswith(prefix) for word in args.split())


# -- single-value checks (shared with the operations that change a running domain) ---------------
def check_name(name: str) -> None:
    if name is None or name == "":
        raise VmError("Missing VM Name")
    if not _NAME_RE.match(name):
        raise VmError("Invalid VM Name")


def normalise_uuid(value: Any) -> str:
    """The hyphenated 8-4-4-4-12 lower-case form; XendConfigError if it is no UUID."""
    text = str(value).strip()
    digits = text.replace("-", "")
    if len(digits) != 32 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise XendConfigError(f"Invalid UUID: {text}")
    return str(uuidlib.UUID(hex=digits))


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def check_memory(memory: int, maxmem: int) -> None:
    if memory < 1:
        raise XendConfigError(f"Invalid memory size: {memory} MiB (must be at least 1)")
    if memory > MAX_MEMORY_MIB or maxmem > MAX_MEMORY_MIB:
        raise XendConfigError(f"Invalid memory size: {max(memory, maxmem)} MiB "
                              f"(more than {MAX_MEMORY_MIB} MiB)")
    if memory > maxmem:
        raise XendConfigError("memory_dynamic_max must be less than or equal to "
                              "memory_static_max")


def check_vcpus(vcpus: int, host_cpus: Optional[int]) -> None:
    if vcpus <= 0:
        raise XendConfigError("Zero or less VCPUs is invalid")
    if host_cpus and vcpus > host_cpus * VCPUS_PER_HOST_CPU:
        raise XendConfigError(f"Too many VCPUs: {vcpus} (this host has {host_cpus} CPUs; "
                              f"at most {host_cpus * VCPUS_PER_HOST_CPU} VCPUs)")


def check_weight(weight: int) -> None:
    if not 1 <= weight <= 65535:
        raise XendConfigError("Cpu weight out of range, valid values are within range "
                              "from 1 to 65535")


def check_cap(cap: int, vcpus: int) -> None:
    if not 0 <= cap <= vcpus * 100:
        raise XendConfigError("Cpu cap out of range, valid range is from 0 to %d for "
                              "specified number of vcpus" % (vcpus * 100))


# -- CPU lists ------------------------------------------------------------------------------------
def parse_cpu_spec(spec: str) -> List[int]:
    """``"0-3,^1"`` -> [0, 2, 3]: comma-separated CPUs and ranges, ``^n`` (or ``^a-b``)
    removes; evaluated left to right. An empty spec is the empty list."""
    text = str(spec).strip()
    chosen: set = set()
    if not text:
        return []
    for part in text.split(","):
        part = part.strip()
        negate = part.startswith("^")
        if negate:
            part = part[1:].strip()
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise XendConfigError(f"Invalid CPU specification: {text}") from None
        if first < 0 or last < first or last > MAX_CPU_NUMBER:
            raise XendConfigError(f"Invalid CPU specification: {text}")
        cpus = set(range(first, last + 1))
        chosen = chosen - cpus if negate else chosen | cpus
    return sorted(chosen)


def parse_cpus(value: Any, vcpus: int, cpu0: Any = None) -> Tuple[Tuple[int, ...], ...]:
    """The ``cpus`` of a config: one spec string for every VCPU, or a list with one entry per
    VCPU (a spec string or a list of CPU numbers). ``cpu`` (deprecated) pins VCPU 0."""
    if value in (None, "", []):
        per_vcpu: List[List[int]] = []
        if cpu0 not in (None, "", "-1"):
            per_vcpu = [[_int("cpu", cpu0)]] + [[] for _ in range(vcpus - 1)]
            if per_vcpu[0][0] < 0 or per_vcpu[0][0] > MAX_CPU_NUMBER:
                raise XendConfigError(f"Invalid cpu: {cpu0}")
    elif isinstance(value, str):
        one = parse_cpu_spec(value)
        per_vcpu = [list(one) for _ in range(vcpus)] if one else []
    elif isinstance(value, list):
        if len(value) != vcpus:
            raise XendConfigError("vcpus and the item number of cpus are not same")
        per_vcpu = []
        for item in value:
            if isinstance(item, str):
                per_vcpu.append(parse_cpu_spec(item))
            elif isinstance(item, list):
                try:
                    nums = sorted({int(c) for c in item})
                except (TypeError, ValueError):
                    raise XendConfigError(f"Invalid cpus: {sxp.to_string(value)}") from None
                if nums and (nums[0] < 0 or nums[-1] > MAX_CPU_NUMBER):
                    raise XendConfigError(f"Invalid cpus: {sxp.to_string(value)}")
                per_vcpu.append(nums)
            else:
                raise XendConfigError(f"Invalid cpus: {sxp.to_string(value)}")
    else:
        raise XendConfigError(f"Invalid cpus: {value!r}")
    if not any(per_vcpu):
        return ()
    return tuple(tuple(c) for c in per_vcpu)


def resize_cpus(cpus: Tuple[Tuple[int, ...], ...], vcpus: int) -> Tuple[Tuple[int, ...], ...]:
    """Per-VCPU affinity for a new VCPU count (dropped at the end, or added unpinned)."""
    if not cpus:
        return ()
    out = list(cpus[:vcpus]) + [()] * max(0, vcpus - len(cpus))
    return tuple(out) if any(out) else ()


# -- showing ------------------------------------------------------------------------------------
@dataclass
class Runtime:
    """What only a live domain has, for the record."""
    domid: Optional[int] = None
    status: Optional[int] = None
    state: Optional[str] = None         # 'r-----' ... only while the Xen domain exists
    start_time: Optional[float] = None
    cpu_time: Optional[float] = None
    online_vcpus: Optional[int] = None


def to_record(cfg: DomainConfig, runtime: Optional[Runtime] = None, full: bool = True) -> list:
    """The domain record of reference §5.4 (``(domain (domid N) (cpu_weight W) ...)``).

    Without ``runtime`` it is the configuration as stored (managed files, save images).
    """
    return _assemble(_config_fields(cfg, full), runtime or Runtime())


def _config_fields(cfg: DomainConfig, full: bool) -> Tuple[list, list, list]:
    """The record's fields that come from the configuration, in three parts: those before
    the runtime times, those between the times and the status, the devices (``full``)."""
    head: list = [["cpu_weight", cfg.cpu_weight], ["cpu_cap", cfg.cpu_cap],
                  ["uuid", cfg.uuid], ["vcpus", cfg.vcpus]]
    if cfg.cpus:
        head.append(["cpus", [list(c) for c in cfg.cpus]])
    head += [["name", cfg.name], ["on_poweroff", cfg.on_poweroff],
             ["on_reboot", cfg.on_reboot], ["on_crash", cfg.on_crash]]
    for key in ("bootloader", "bootloader_args", "description", "pool_name"):
        v = getattr(cfg, key)
        if v:
            head.append([key, v])
    head += [["maxmem", cfg.maxmem], ["memory", cfg.memory]]
    if cfg.shadow_memory is not None:
        head.append(["shadow_memory", cfg.shadow_memory])
    if cfg.vcpu_avail is not None:
        head.append(["vcpu_avail", cfg.vcpu_avail])
    if cfg.features is not None:
        head.append(["features", cfg.features])
    head += [["on_xend_start", cfg.on_xend_start], ["on_xend_stop", cfg.on_xend_stop]]
    middle: list = []
    if cfg.security_label:
        middle.append(["security_label", cfg.security_label])
    middle += copy.deepcopy(list(cfg.extra))
    if cfg.image_type:
        body: list = [cfg.image_type, ["kernel", cfg.kernel]]
        if cfg.ramdisk:
            body.append(["ramdisk", cfg.ramdisk])
        if cfg.args:
            body.append(["args", cfg.args])
        body += copy.deepcopy(list(cfg.image_extra))
        middle.append(["image", body])
    devices = [["device", copy.deepcopy(d)] for d in cfg.devices] if full else []
    return head, middle, devices


def _assemble(fields: Tuple[list, list, list], rt: Runtime) -> list:
    """A record of the configuration's ``fields`` and the runtime ``rt``."""
    head, middle, devices = fields
    rec: list = ["domain"]
    if rt.domid is not None:
        rec.append(["domid", rt.domid])
    rec += head
    rec += _runtime_fields(rt, ("start_time", "cpu_time", "online_vcpus"))
    rec += middle
    rec += _runtime_fields(rt, ("status", "state"))
    rec += devices
    return rec


def _runtime_fields(rt: Runtime, keys: Tuple[str, ...]) -> list:
    return [[key, value] for key, value in zip(keys, map(rt.__getattribute__, keys))
            if value is not None]


class RecordCache:
    """One domain's record fields that come from its configuration, made once per
    configuration (a DomainConfig is replaced, never changed) as ``sxp.Frozen`` lists, which
    the XML-RPC writer encodes once: a listing then builds and writes only the runtime
    fields. ``record`` gives what ``to_record`` gives."""

    def __init__(self) -> None:
        self._key: Any = None
        self._fields: Any = None

    def record(self, cfg: DomainConfig, rt: Runtime, full: bool) -> list:
        key = self._key
        if key is None or key[0] is not cfg or key[1] != full:
            self._fields = tuple([sxp.Frozen(field) for field in part]
                                 for part in _config_fields(cfg, full))
            self._key = (cfg, full)
        return _assemble(self._fields, rt)


def config_sxp(cfg: DomainConfig) -> list:
    """The record as stored: no runtime fields, with devices."""
    return to_record(cfg, None, full=True)


# -- helpers ------------------------------------------------------------------------------------
def normalise_atoms(value: Any) -> Any:
    """``value`` with every atom a string (as SXP has them)."""
    return _normalise(value)


def _normalise(value: Any) -> Any:
    """Atoms as strings (XML-RPC clients may send ints and floats)."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if not isinstance(value, str) else value


def _int(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip() if isinstance(value, str) else None
    if text:
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
    raise XendConfigError(f"Invalid {key}: {sxp.to_string(value)} (an integer is needed)")


def _pairs(items: Sequence[Any]) -> List[Tuple[str, Any]]:
    return [(k[0], k[1] if len(k) > 1 else "") for k in items
            if isinstance(k, list) and k and isinstance(k[0], str)]
