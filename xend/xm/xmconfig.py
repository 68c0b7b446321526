"""Python-syntax domain config files -> the ``(vm ...)`` SXP ``xm create``/``xm new`` send
(reference 9.6 and 8.6).

The file is executed as Python with the command line's unknown ``VAR=VAL`` pairs pre-defined as
strings, plus ``xm_file``, ``xm_help`` and ``xm_vars``. Afterwards each top-level variable that
names an option and holds a str, list, int or float sets that option, unless the option was
given on the command line (``name=value`` for a known option wins over the file). The SXP is
then built in the documented order; values that came from Python ints stay ints.

Errors are :class:`ConfigFileError` with the message ``xm`` prints after ``Error: ``.
"""
from __future__ import annotations

import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

DEFAULT_PATH = ".:/etc/xen"
PYGRUB = "/usr/lib/xen/bin/pygrub"

# name -> (kind, default). kind: str, int, bool (yes/no on the command line), list (repeatable).
# Defaults are the original's (4.4): a plain PV config gives its (on_xend_start ignore),
# (on_xend_stop ignore) and (videoram 4), as xm 4.4's dry run printed them.
OPTIONS: Dict[str, Tuple[str, Any]] = {
    # identity, memory, CPUs
    "name": ("str", None), "uuid": ("str", None), "description": ("str", ""),
    "memory": ("int", 128), "maxmem": ("int", None), "shadow_memory": ("int", 0),
    "vcpus": ("int", 1), "maxvcpus": ("int", None), "vcpu_avail": ("int", None),
    "cpus": ("str", None), "cpu": ("int", None), "cpu_cap": ("int", None),
    "cpu_weight": ("int", None), "pool": ("str", None),
    # behaviour
    "restart": ("str", None), "on_poweroff": ("str", None), "on_reboot": ("str", None),
    "on_crash": ("str", None), "on_xend_start": ("str", "ignore"), "on_xend_stop": ("str", "ignore"),
    "features": ("str", ""), "target": ("int", 0), "tsc_mode": ("int", 0),
    "nomigrate": ("int", 0), "machine_address_size": ("int", None),
    "suppress_spurious_page_faults": ("bool", None), "localtime": ("bool", 0),
    "oos": ("int", 1), "s3_integrity": ("int", 1), "cpuid": ("list", []),
    "cpuid_check": ("list", []),
    # boot
    "builder": ("str", "linux"), "type": ("str", None), "pvh": ("int", 0),
    "kernel": ("str", None), "ramdisk": ("str", ""),
    "loader": ("str", ""), "bootloader": ("str", None), "bootargs": ("str", None),
    "bootentry": ("str", None), "extra": ("str", ""), "root": ("str", ""),
    "ip": ("str", ""), "gateway": ("str", ""), "netmask": ("str", ""), "hostname": ("str", ""),
    "interface": ("str", "eth0"), "dhcp": ("str", "off"), "nfs_server": ("str", None),
    "nfs_root": ("str", None), "superpages": ("int", 0), "vhpt": ("int", 0),
    "videoram": ("int", 4),
    # driver domains
    "blkif": ("bool", 0), "netif": ("bool", 0), "tpmif": ("bool", 0),
    # devices
    "disk": ("list", []), "pci": ("list", []), "vscsi": ("list", []), "vusb": ("list", []),
    "ioports": ("list", []), "irq": ("list", []), "vfb": ("list", []), "vif": ("list", []),
    "vif2": ("list", []), "vtpm": ("list", []), "access_control": ("list", []),
    "nics": ("int", -1),
    # HVM and device model
    "device_model": ("str", None), "acpi": ("int", 1), "apic": ("int", 1), "pae": ("int", 1),
    "hpet": ("int", 0), "hap": ("int", 1), "timer_mode": ("int", 1), "vpt_align": ("int", 1),
    "viridian": ("int", 0), "extid": ("int", 0), "rtc_timeoffset": ("int", 0),
    "nestedhvm": ("int", 0),
    "boot": ("str", "c"), "fda": ("str", ""), "fdb": ("str", ""), "parallel": ("str", ""),
    "serial": ("str", ""), "monitor": ("bool", 0), "monitor_path": ("str", ""),
    "keymap": ("str", ""), "usb": ("bool", 0), "usbdevice": ("str", ""),
    "guest_os_type": ("str", "default"), "stdvga": ("bool", 0), "isa": ("bool", 0),
    "nographic": ("bool", 0), "soundhw": ("str", ""), "vnc": ("str", None),
    "vncdisplay": ("str", None), "vnclisten": ("str", None), "vncunused": ("bool", 1),
    "vncpasswd": ("str", None), "vncconsole": ("bool", None), "vncviewer": ("bool", None),
    "sdl": ("str", None), "gfx_passthru": ("str", None), "opengl": ("str", None),
    "display": ("str", None), "xauthority": ("str", None), "pci_msitranslate": ("int", 1),
    "pci_power_mgmt": ("int", 0), "xen_platform_pci": ("int", 1),
    "xen_extended_power_mgmt": ("int", None), "memory_sharing": ("bool", 0),
    "watchdog": ("str", ""), "watchdog_action": ("str", "reset"),
}

# Top-level children set when truthy, in this order (then vcpus, uuid, ...: see make_config).
_TOP_LEVEL = ("name", "memory", "maxmem", "shadow_memory", "restart", "on_poweroff", "tsc_mode",
              "nomigrate", "on_reboot", "on_crash", "features", "on_xend_start", "on_xend_stop",
              "target", "cpuid", "cpuid_check", "machine_address_size",
              "suppress_spurious_page_faults", "description")

# HVM children of image, in this order (xm 4.4's), each when not None; the empty lists of
# cpuid, cpuid_check and pci are written as (cpuid ()) ... as 4.4's dry run had them.
# (watchdog and watchdog_action are read but not sent: xm 4.4 did not send them.)
_HVM_KEYS = ("acpi", "apic", "boot", "cpuid", "cpuid_check", "device_model", "display", "fda",
             "fdb", "gfx_passthru", "guest_os_type", "hap", "hpet", "isa", "keymap",
             "localtime", "nestedhvm", "nographic", "opengl", "oos", "pae", "pci",
             "pci_msitranslate", "pci_power_mgmt", "rtc_timeoffset", "sdl", "soundhw",
             "stdvga", "timer_mode", "usb", "usbdevice", "vcpus", "vnc", "vncconsole",
             "vncdisplay", "vnclisten", "vncunused", "viridian", "vpt_align", "xauthority",
             "xen_extended_power_mgmt", "xen_platform_pci", "memory_sharing", "vncpasswd")
#: the builder of Xen 3.0's HVM configs: passed through by the dry run, refused by create
OLD_BUILDERS = ("vmx",)

_VIF_KEYS = ("backend", "bridge", "ip", "mac", "script", "type", "vifname", "rate", "model",
             "accel", "policy", "label")
_VIF2_KEYS = ("front_mac", "back_mac", "backend", "trusted", "back_trusted", "front_filter_mac",
              "filter_mac", "bridge", "pdev", "max_bypasses")
_VFB_KEYS = ("vnclisten", "vncunused", "vncdisplay", "display", "videoram", "xauthority", "sdl",
             "vnc", "vncpasswd", "opengl", "keymap", "serial", "monitor")
_BUILDERS = ("linux", "hvm")


class ConfigFileError(Exception):
    """The config cannot be turned into SXP; ``str()`` is the message after ``Error: ``."""


# -- command line -------------------------------------------------------------------------------
def _convert(name: str, kind: str, value: str) -> Any:
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise ConfigFileError(f"Invalid value: {value}") from None
    if kind == "bool":
        if value in ("yes", "1"):
            return 1
        if value in ("no", "0"):
            return 0
        raise ConfigFileError(f"Invalid value:{value}")
    return value


def parse_assignments(args: Iterable[str]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """``VAR=VAL`` words -> (options given on the command line, other script variables).

    A known option is typed (ints, ``yes``/``no`` flags; list options accumulate) and later
    wins over the file; any other name becomes a string variable of the script.
    """
    specified: Dict[str, Any] = {}
    script_vars: Dict[str, str] = {}
    for arg in args:
        var, val = arg.strip().split("=", 1)
        var, val = var.strip(), val.strip()
        if var in OPTIONS:
            kind = OPTIONS[var][0]
            if kind == "list":
                specified.setdefault(var, []).append(val)
            else:
                specified[var] = _convert(var, kind, val)
        else:
            script_vars[var] = val
    return specified, script_vars


# -- locating and executing the file -------------------------------------------------------------
def find_config(name: str, search_path: str = DEFAULT_PATH) -> str:
    """The file named ``name``: as given, else in each directory of ``search_path``."""
    candidates = [name]
    if not os.path.isabs(name):
        candidates += [os.path.join(d, name) for d in search_path.split(":") if d]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigFileError(f"Unable to open config file: {name}")


class ConfigVars:
    """``xm_vars`` in a config script: declare variables with checks, then ``check()`` them."""

    def __init__(self, filename: str, env: Dict[str, Any]):
        self.filename = filename
        self.env = env
        self.declared: List[Tuple[str, str, Optional[Callable]]] = []

    def var(self, name: str, use: Optional[str] = None,
            check: Optional[Callable[[str, Any], Any]] = None) -> None:
        self.declared.append((name, use or "", check))

    def check(self) -> None:
        for name, use, check in self.declared:
            if check is None:
                continue
            value = self.env.get(name)
            try:
                self.env[name] = check(name, value)
            except Exception:  # noqa: BLE001 - the script's own check function failed
                hint = f" ({use})" if use else ""
                if value is None:
                    raise ConfigFileError(
                        f"{self.filename} needs the variable {name}{hint}: "
                        f"give it on the command line as {name}=VALUE") from None
                raise ConfigFileError(
                    f"Invalid value for variable {name} in {self.filename}: {value!r}{hint}"
                ) from None


def _error_line(exc: BaseException, path: str) -> Optional[int]:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def run_script(path: str, script_vars: Mapping[str, str]) -> Dict[str, Any]:
    """Execute the config file; its resulting top-level variables."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigFileError(f"Unable to open config file: {path}: {e.strerror}") from None
    if source.lstrip()[:1] == b"<":
        raise ConfigFileError(f"{path} is a Xen-API XML domain configuration; "
                              "only Python-syntax config files are supported")
    try:
        code = compile(source, path, "exec")
    except SyntaxError as e:
        text = (e.text or "").rstrip("\n")
        raise ConfigFileError(f"Errors were found at line {e.lineno} while processing "
                              f"{path}:\n\t{text}") from None
    except ValueError as e:  # e.g. NUL bytes
        raise ConfigFileError(f"Errors were found while processing {path}: {e}") from None
    import sys

    env: Dict[str, Any] = {"__name__": "__xm_config__", "__file__": path,
                           "os": os, "sys": sys}
    env.update(script_vars)
    env.update(xm_file=path, xm_help=0)
    env["xm_vars"] = ConfigVars(path, env)
    try:
        exec(code, env)
    except ConfigFileError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - anything the script raised
        line = _error_line(e, path)
        where = f" at line {line}" if line else ""
        raise ConfigFileError(f"Error{where} while processing {path}: "
                              f"{type(e).__name__}: {e}") from None
    return env


_SCRIPT_NAMES = ("xm_file", "xm_help", "xm_vars", "os", "sys")


def unknown_variables(env: Mapping[str, Any], script_vars: Mapping[str, str],
                      path: str) -> List[str]:
    """A warning for each top-level value of the file that sets no option (a typo, most
    often: ``memroy = 128``), with the closest option name."""
    import difflib

    out = []
    for name, value in env.items():
        if name in OPTIONS or name in script_vars or name in _SCRIPT_NAMES \
                or name.startswith("_") or isinstance(value, bool) \
                or not isinstance(value, (str, list, tuple, int, float)):
            continue
        close = difflib.get_close_matches(name, list(OPTIONS), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        out.append(f"{path}: unknown variable {name!r}, ignored{hint}")
    return out


def options_from_script(env: Mapping[str, Any], specified: Mapping[str, Any]) -> Dict[str, Any]:
    """Option values: defaults, then the script's variables, then the command line's."""
    vals: Dict[str, Any] = {name: (list(d) if isinstance(d, list) else d)
                            for name, (_, d) in OPTIONS.items()}
    for name, value in env.items():
        if name not in OPTIONS or name in specified:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (str, list, int, float)):
            vals[name] = value
    vals.update(specified)
    return vals


def load(name: str, assignments: Iterable[str] = (), search_path: str = DEFAULT_PATH,
         console_autoconnect: bool = False, warn: Callable[[str], None] = lambda m: None,
         environ: Optional[Mapping[str, str]] = None) -> Tuple[str, list]:
    """Find, run and convert a config file: ``(path used, vm SXP)``."""
    specified, script_vars = parse_assignments(assignments)
    path = find_config(name, search_path)
    env = run_script(path, script_vars)
    for warning in unknown_variables(env, script_vars, path):
        warn(warning)
    vals = options_from_script(env, specified)
    if not vals.get("name"):
        vals["name"] = os.path.basename(name)
    return path, make_config(vals, console_autoconnect=console_autoconnect, warn=warn,
                             environ=environ)


# -- building the SXP ---------------------------------------------------------------------------
def _strip(prefix: str, s: str) -> str:
    return s[len(prefix):] if s.startswith(prefix) else s


def _to_int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigFileError(f"Invalid value for {what}: {value!r}") from None


def _boot_file(value: str, what: str, vals: Mapping[str, Any]) -> str:
    """A kernel/ramdisk/loader path: kept as given with a bootloader or when it exists with a
    directory part; bare ``hvmloader`` is left for xend to find; else made absolute, and it
    must exist."""
    if vals.get("bootloader") and what != "loader":
        return value
    if os.path.dirname(value) and os.path.exists(value):
        return value
    if value == "hvmloader" and what != "ramdisk":
        return value
    absolute = os.path.abspath(value)
    if os.path.exists(absolute):
        return absolute
    raise ConfigFileError(f'Cannot find {what} "{value}"')


def unknown_builder(builder: str) -> str:
    hint = ' ("vmx" was renamed "hvm" in Xen 3.0.3)' if builder == "vmx" else ""
    return f'Unknown builder "{builder}": use "linux" or "hvm"{hint}'


def _kernel_ip(vals: Mapping[str, Any]) -> str:
    if vals["ip"] or vals["dhcp"] != "off":
        return ":".join([vals["ip"], vals["nfs_server"] or "", vals["gateway"], vals["netmask"],
                         vals["hostname"], vals["interface"], vals["dhcp"]])
    return ""


_TYPES = ("pv", "pvh", "hvm")


def _image(vals: Dict[str, Any]) -> list:
    builder = vals["builder"]
    # xl's spellings, read too: type = "pv"|"pvh"|"hvm" (Xen 4.10+) and pvh = 1 (4.4-4.9)
    kind = vals.get("type")
    if kind not in (None, "") and kind not in _TYPES:
        raise ConfigFileError(f'Unknown type "{kind}": use "pv", "pvh" or "hvm"')
    if kind == "hvm" and builder == "linux":
        builder = "hvm"
    pvh = kind == "pvh" or bool(vals.get("pvh"))
    if pvh and builder == "hvm":
        raise ConfigFileError('A PVH guest is built with builder "linux" (type = "pvh")')
    if builder not in _BUILDERS and builder not in OLD_BUILDERS:
        raise ConfigFileError(unknown_builder(builder))
    image: list = [builder]
    if vals["kernel"]:
        image.append(["kernel", _boot_file(vals["kernel"], "kernel", vals)])
    if vals["ramdisk"]:
        image.append(["ramdisk", _boot_file(vals["ramdisk"], "ramdisk", vals)])
    if vals["loader"]:
        image.append(["loader", _boot_file(vals["loader"], "loader", vals)])
    ip = _kernel_ip(vals)
    if ip:
        image.append(["ip", _strip("ip=", ip)])
    if vals["root"]:
        image.append(["root", _strip("root=", vals["root"])])
    for key in ("videoram", "parallel", "serial"):
        if vals[key]:
            image.append([key, vals[key]])
    if vals["monitor_path"]:
        image.append(["monitor_path", vals["monitor_path"]])
        image.append(["monitor", 1])
    elif vals["monitor"]:
        image.append(["monitor", vals["monitor"]])
    extra = vals["extra"]
    if vals["nfs_root"]:
        if not vals["nfs_server"]:
            raise ConfigFileError("Must set nfs root and nfs server")
        extra = f"nfsroot={vals['nfs_server']}:{vals['nfs_root']} {extra}"
    if extra:
        image.append(["args", extra])
    if vals["superpages"]:
        image.append(["superpages", vals["superpages"]])
    if builder == "hvm":
        for key in _HVM_KEYS:
            value = vals[key]
            if value is None:
                continue
            if key.startswith("cpuid"):
                value = _cpuid_sxp(value) if value else []
            elif key == "pci":
                value = [_pci_tuple(pci_entry(spec)) for spec in _as_list(value)]
            image.append([key, value])
    if vals["vhpt"]:
        image.append(["vhpt", vals["vhpt"]])
    for key in ("machine_address_size", "suppress_spurious_page_faults"):
        if vals[key]:
            image.append([key, vals[key]])
    for key in ("tsc_mode", "nomigrate"):
        if vals[key] is not None:
            image.append([key, vals[key]])
    if pvh:
        image.append(["pvh", 1])
    return image


def _cpuid_sxp(specs: Any) -> list:
    """``['1:eax=0x...,edx=...']`` -> ``[['1', ['eax', '0x...'], ['edx', ...]]]``."""
    out = []
    for spec in specs if isinstance(specs, list) else [specs]:
        m = re.match(r"((?:0x)?[0-9A-Fa-f]+(?:,(?:0x)?[0-9A-Fa-f]+)?):(.*)\Z", str(spec))
        if not m:
            raise ConfigFileError(f"Invalid cpuid specifier: {spec}")
        regs: list = [m.group(1)]
        for reg in m.group(2).split(","):
            rm = re.match(r"(eax|ebx|ecx|edx)=(.*)\Z", reg)
            if not rm:
                raise ConfigFileError("cpuid's syntax is (eax|ebx|ecx|edx)=value")
            regs.append([rm.group(1), rm.group(2)])
        out.append(regs)
    return out


def _kv_pairs(spec: str) -> Dict[str, str]:
    """``'k=v, k2=v2'`` -> ordered dict; ``''`` -> ``{}``."""
    pairs: Dict[str, str] = {}
    spec = spec.strip()
    if not spec:
        return pairs
    for item in spec.split(","):
        if "=" not in item:
            raise ConfigFileError(f"{item} should be a pair, separated by an equals sign.")
        k, v = item.split("=", 1)
        pairs[k.strip()] = v.strip()
    return pairs


def _as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _disks(vals: Mapping[str, Any]) -> List[list]:
    devices = []
    for spec in _as_list(vals["disk"]):
        fields = str(spec).split(",")
        if not 3 <= len(fields) <= 5:
            raise ConfigFileError(f"Invalid disk specifier: {spec}")
        uname, dev, mode = fields[:3]
        backend = fields[3] if len(fields) > 3 else None
        protocol = fields[4] if len(fields) > 4 else None
        cls = "tap2" if uname.startswith("tap2:") else "tap" if uname.startswith("tap:") else "vbd"
        vbd: list = [cls, ["uname", uname], ["dev", dev], ["mode", mode]]
        if backend:
            vbd.append(["backend", backend])
        if protocol:
            vbd.append(["protocol", protocol])
        devices.append(["device", vbd])
    return devices


_PCI_RE = re.compile(r"(?:(?P<domain>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
                     r"(?P<slot>[0-9a-fA-F]{1,2})\.(?P<func>[0-7])"
                     r"(?:@(?P<vslot>[0-9a-fA-F]{1,2}))?\Z")
AUTO_PHP_SLOT = 0x100


def pci_entry(spec: str) -> list:
    """``[DDDD:]BB:SS.F[@VSLOT][,opt=v...]`` -> the ``(dev ...)`` entry of a ``(pci ...)``
    device (``xm pci-attach`` and the ``pci`` variable)."""
    name, *opts = [p.strip() for p in str(spec).split(",")]
    m = _PCI_RE.match(name)
    if not m:
        raise ConfigFileError(f"Invalid pci specifier: {spec}")
    domain = int(m.group("domain") or "0", 16)
    bus, slot, func = int(m.group("bus"), 16), int(m.group("slot"), 16), int(m.group("func"))
    vdevfn = int(m.group("vslot"), 16) << 3 if m.group("vslot") else AUTO_PHP_SLOT
    dev: list = ["dev", ["domain", "0x%04x" % domain], ["bus", "0x%02x" % bus],
                 ["slot", "0x%02x" % slot], ["func", "0x%x" % func],
                 ["vdevfn", "0x%02x" % vdevfn],
                 ["key", "%04x:%02x:%02x.%x" % (domain, bus, slot, func)]]
    if opts:
        pairs = _kv_pairs(",".join(opts))
        for k in pairs:
            if k not in ("msitranslate", "power_mgmt"):
                raise ConfigFileError(f"Invalid pci option: {k}")
        dev.append(["opts"] + [[k, v] for k, v in pairs.items()])
    return dev


def _pci_tuple(entry: list) -> list:
    """A PCI device as xm 4.4 put it in an HVM image: (domain bus slot func vdevfn opts key)."""
    d = {e[0]: e[1:] for e in entry[1:]}
    opts = d.get("opts", [])
    return [d["domain"][0], d["bus"][0], d["slot"][0], d["func"][0], d["vdevfn"][0],
            list(opts), d["key"][0]]


def _pci(vals: Mapping[str, Any]) -> List[list]:
    devs = [pci_entry(spec) for spec in _as_list(vals["pci"])]
    return [["device", ["pci"] + devs]] if devs else []


def _host_scsi_devices(sysfs: str = "/sys/bus/scsi/devices") -> List[Tuple[str, Optional[str]]]:
    found = []
    try:
        entries = sorted(os.listdir(sysfs))
    except OSError:
        return found
    for hctl in entries:
        if not re.match(r"\d+:\d+:\d+:\d+\Z", hctl):
            continue
        devname = None
        for sub in ("block", "scsi_generic"):
            try:
                names = os.listdir(os.path.join(sysfs, hctl, sub))
            except OSError:
                continue
            if names:
                devname = names[0]
                break
        found.append((hctl, devname))
    return found


def _vscsi(vals: Mapping[str, Any]) -> List[list]:
    specs = _as_list(vals["vscsi"])
    if not specs:
        return []
    host = _host_scsi_devices()
    groups: Dict[int, dict] = {}
    seen_p: set = set()
    seen_v: set = set()
    for spec in specs:
        fields = [f.strip() for f in str(spec).split(",")]
        if len(fields) == 2:
            if fields[1] != "host" and len(fields[1].split(":")) != 4:
                raise ConfigFileError(f'vscsi syntax error "{fields[1]}"')
            fields.append(None)  # type: ignore[arg-type]
        elif len(fields) != 3:
            raise ConfigFileError(f'vscsi syntax error "{spec}"')
        p_dev, v_dev, backend = fields
        match = [(h, n) for h, n in host
                 if p_dev in (h, n, f"/dev/{n}" if n else None)]
        if not match:
            raise ConfigFileError(f'Cannot find device "{p_dev}"')
        p_hctl, devname = match[0]
        if v_dev == "host":
            hostno = p_hctl.split(":")[0]
            infos = [(int(hostno), h, n, h) for h, n in host if h.split(":")[0] == hostno]
            feature_host = 1
        else:
            infos = [(int(v_dev.split(":")[0]), p_hctl, devname, v_dev)]
            feature_host = 0
        group = groups.setdefault(infos[0][0], {"feature-host": feature_host,
                                                "backend": backend, "devs": []})
        if group["feature-host"] != feature_host:
            raise ConfigFileError(f'The physical device "{p_hctl}" cannot define '
                                  "because mode is different")
        if group["backend"] != backend:
            raise ConfigFileError(f'The physical device "{p_hctl}" cannot define '
                                  "because backend is different")
        for devid, ph, name, vh in infos:
            if ph in seen_p:
                raise ConfigFileError(f'The physical device "{ph}" is already defined')
            if vh in seen_v:
                raise ConfigFileError(f'The virtual device "{vh}" is already defined')
            seen_p.add(ph)
            seen_v.add(vh)
            group["devs"].append(["dev", ["state", 1], ["devid", devid], ["p-dev", ph],
                                  ["p-devname", name or ""], ["v-dev", vh]])
    devices = []
    for group in groups.values():
        device: list = ["vscsi", ["feature-host", group["feature-host"]]] + group["devs"]
        if group["backend"]:
            device.append(["backend", group["backend"]])
        devices.append(["device", device])
    return devices


def _vusb(vals: Mapping[str, Any]) -> List[list]:
    devices = []
    for spec in _as_list(vals["vusb"]):
        d = _kv_pairs(str(spec))
        usbver = _to_int(d.get("usbver", 2), "usbver")
        if usbver not in (1, 2):
            raise ConfigFileError("Invalid vusb option: usbver")
        numports = _to_int(d.get("numports", 8), "numports")
        if not 1 <= numports <= 16:
            raise ConfigFileError("Invalid vusb option: numports")
        ports = ["port"] + [[str(i), d.get(f"port_{i}", "")] for i in range(1, numports + 1)]
        devices.append(["device", ["vusb", ["usb-ver", str(usbver)],
                                   ["num-ports", str(numports)], ports]])
    return devices


def _ioports(vals: Mapping[str, Any]) -> List[list]:
    devices = []
    for spec in _as_list(vals["ioports"]):
        parts = str(spec).split("-")
        if len(parts) > 2 or not all(re.match(r"[0-9a-fA-F]+\Z", p) for p in parts):
            raise ConfigFileError(f"Invalid i/o port range specifier: {spec}")
        if len(parts) == 1:
            parts.append(parts[0])
        devices.append(["device", ["ioports", ["from", "0x" + parts[0]], ["to", "0x" + parts[1]]]])
    return devices


def _irqs(vals: Mapping[str, Any]) -> List[list]:
    return [["device", ["irq", ["irq", str(irq)]]] for irq in _as_list(vals["irq"])]


def _vifs(vals: Mapping[str, Any], warn: Callable[[str], None]) -> List[list]:
    specs = _as_list(vals["vif"])
    nics = vals["nics"]
    if isinstance(nics, int) and nics > 0:
        warn("The nics option is deprecated.  Please use an empty vif entry instead:\n\n"
             "  vif = [ '' ]\n")
        specs += [""] * (nics - len(specs))
    elif nics == 0:
        warn("The nics option is deprecated.  Please remove it.")
    devices = []
    for spec in specs:
        vif: list = ["vif"]
        for k, v in _kv_pairs(str(spec)).items():
            if k not in _VIF_KEYS:
                raise ConfigFileError(f"Invalid vif option: {k}")
            vif.append([k, v])
        devices.append(["device", vif])
    for spec in _as_list(vals["vif2"]):
        vif2: list = ["vif2"]
        for k, v in _kv_pairs(str(spec)).items():
            if k not in _VIF2_KEYS:
                raise ConfigFileError(f"Invalid vif2 option: {k}")
            vif2.append([k, v])
        devices.append(["device", vif2])
    return devices


def _vtpms(vals: Mapping[str, Any]) -> List[list]:
    specs = _as_list(vals["vtpm"])
    if not specs:
        return []
    d: Dict[str, str] = {}
    for item in str(specs[0]).split(","):
        if "=" not in item:
            raise ConfigFileError(f"Invalid vtpm specifier: {specs[0]}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in ("backend", "instance", "uuid", "type"):
            raise ConfigFileError(f"Invalid vtpm specifier: {specs[0]}")
        d[k] = v
    instance = d.get("instance")
    if instance == "VTPMD":
        instance = "0"
    elif instance is not None:
        if _to_int(instance, "vTPM instance") == 0:
            raise ConfigFileError("VM config error: vTPM instance must not be 0.")
    vtpm: list = ["vtpm"]
    for key, value in (("pref_instance", instance), ("backend", d.get("backend")),
                       ("type", d.get("type")), ("uuid", d.get("uuid"))):
        if value:
            vtpm.append([key, value])
    return [["device", vtpm]]


def _xauthority(environ: Mapping[str, str]) -> str:
    if environ.get("XAUTHORITY"):
        return environ["XAUTHORITY"]
    home = environ.get("HOME")
    if not home:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    return home + "/.Xauthority"


def _vfbs(vals: Mapping[str, Any], environ: Mapping[str, str]) -> List[list]:
    devices = []
    for spec in _as_list(vals["vfb"]):
        d = _kv_pairs(str(spec))
        if "type" in d:  # legacy type=vnc|sdl
            d[d.pop("type")] = "1"
        vfb: list = ["vfb"]
        for k, v in d.items():
            if k not in _VFB_KEYS:
                raise ConfigFileError(f"configuration option {k} unknown to vfbs")
            vfb.append([k, v])
        if "keymap" not in d and vals["keymap"]:
            vfb.append(["keymap", vals["keymap"]])
        if "display" not in d and environ.get("DISPLAY"):
            vfb.append(["display", environ["DISPLAY"]])
        if "xauthority" not in d:
            vfb.append(["xauthority", _xauthority(environ)])
        devices.append(["device", ["vkbd"]])
        devices.append(["device", vfb])
    return devices


def _security(vals: Mapping[str, Any]) -> List[list]:
    specs = _as_list(vals["access_control"])
    if not specs:
        return []
    if len(specs) > 1:
        raise ConfigFileError("Multiple access_control definitions.")
    m = re.match(r"policy=(?P<policy>.*),label=(?P<label>.*)\Z", str(specs[0]))
    if not m:
        raise ConfigFileError(f"Invalid access_control specifier: {specs[0]}")
    return [["security", [["access_control", ["policy", m.group("policy")],
                           ["label", m.group("label")]]]]]


def make_config(vals: Dict[str, Any], console_autoconnect: bool = False,
                warn: Callable[[str], None] = lambda m: None,
                environ: Optional[Mapping[str, str]] = None) -> list:
    """The ``(vm ...)`` SXP for option values ``vals`` (a full :data:`OPTIONS` mapping)."""
    environ = os.environ if environ is None else environ
    config: list = ["vm"]
    for key in _TOP_LEVEL:
        if vals.get(key):
            value = vals[key]
            config.append([key, _cpuid_sxp(value) if key.startswith("cpuid") else value])

    maxvcpus, vcpus = vals.get("maxvcpus"), vals.get("vcpus")
    if maxvcpus and vcpus:
        config.append(["vcpu_avail", (1 << _to_int(vcpus, "vcpus")) - 1])
        config.append(["vcpus", maxvcpus])
    elif maxvcpus:
        config.append(["vcpus", maxvcpus])
    elif vcpus:
        config.append(["vcpus", vcpus])

    for key in ("uuid", "cpu", "cpus", "cpu_cap", "cpu_weight"):
        if vals.get(key) is not None:
            config.append([key, vals[key]])
    for key in ("blkif", "netif", "tpmif"):
        if vals.get(key):
            config.append(["backend", [key]])
    for key in ("localtime", "oos"):
        if vals.get(key):
            config.append([key, vals[key]])
    if vals.get("pool"):
        config.append(["pool_name", vals["pool"]])

    image = _image(vals)
    bootloader = vals.get("bootloader")
    if bootloader:
        config.append(["bootloader", PYGRUB if bootloader == "pygrub" else bootloader])
        if vals.get("bootargs"):
            config.append(["bootloader_args", vals["bootargs"]])
        else:
            config.append(["bootloader_args", "" if console_autoconnect else "-q"])
    config.append(["image", image])
    config.append(["s3_integrity", vals["s3_integrity"]])
    config += _security(vals)  # the original put the label before the devices

    config += _disks(vals)
    config += _pci(vals)
    config += _vscsi(vals)
    config += _vusb(vals)
    config += _ioports(vals)
    config += _irqs(vals)
    config += _vifs(vals, warn)
    config += _vtpms(vals)
    config += _vfbs(vals, environ)
    return config
