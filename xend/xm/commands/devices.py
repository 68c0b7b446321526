"""Commands for a domain's devices after it started: block-attach, block-detach, block-list,
block-configure, network-attach, network-detach, network-list, pci-attach, pci-detach,
pci-list, pci-list-assignable-devices. The XML-RPC calls and their arguments are the
original xm's (``xend.domain.device_create``, ``destroyDevice`` ...)."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, List, Tuple

from xend.xm import formats
from xend.xm.commands import CommandError, Context, UsageError, parse

NETWORK_KEYS = ("type", "mac", "bridge", "ip", "script", "backend", "vifname", "rate", "model",
                "accel")


def arg_check(args: List[str], name: str, lo: int, hi: int = -1) -> List[str]:
    """The original's argument count check (``--`` not counted); the arguments."""
    real = [a for a in args if a != "--"]
    n = len(real)
    if hi == -1 and n != lo:
        raise UsageError("'xm %s' requires %d argument%s.\n" % (name, lo, "" if lo == 1 else "s"))
    if hi != -1 and not lo <= n <= hi:
        raise UsageError("'xm %s' requires between %d and %d arguments.\n" % (name, lo, hi))
    return real


def _resource_list_args(ctx: Context, name: str, args: List[str]) -> Tuple[bool, str]:
    p = ctx.parser(name)
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("domains", nargs="*")
    o = parse(p, args)
    if not o.domains:
        raise UsageError("No domain parameter given")
    if len(o.domains) > 1:
        raise UsageError("No multiple domain parameters allowed")
    return o.long, o.domains[0]


# -- block devices ------------------------------------------------------------------------------
def block_configuration(args: List[str]) -> Tuple[str, list]:
    """``<Domain> <BackDev> <FrontDev> <Mode> [BackDomain]`` -> (domain, ``(vbd ...)``)."""
    dom, uname, dev, mode = args[:4]
    cls = "tap2" if uname.startswith("tap2:") else "tap" if uname.startswith("tap:") else "vbd"
    vbd: list = [cls, ["uname", uname], ["dev", dev], ["mode", mode]]
    if len(args) == 5:
        vbd.append(["backend", args[4]])
    return dom, vbd


def block_attach(ctx: Context, args: List[str]) -> int:
    dom, vbd = block_configuration(arg_check(args, "block-attach", 4, 5))
    ctx.server.xend.domain.device_create(dom, vbd)
    return 0


def block_configure(ctx: Context, args: List[str]) -> int:
    dom, vbd = block_configuration(arg_check(args, "block-configure", 4, 5))
    ctx.server.xend.domain.device_configure(dom, vbd)
    return 0


def _detach(ctx: Context, args: List[str], cls: str) -> None:
    dom, dev = args[0], args[1]
    force = False
    if len(args) > 2:
        if args[2] in ("-f", "--force"):
            force = True
        else:
            ctx.write("Ignoring option %s\n" % args[2])
    ctx.server.xend.domain.destroyDevice(dom, cls, dev, force, True)


def block_detach(ctx: Context, args: List[str]) -> int:
    real = arg_check(args, "block-detach", 2, 3)
    cls = ctx.server.xend.domain.getBlockDeviceClass(real[0], real[1])
    _detach(ctx, real, cls if cls in ("tap", "tap2") else "vbd")
    return 0


def _device_list(ctx: Context, command: str, cls: str, args: List[str], table) -> int:
    use_long, dom = _resource_list_args(ctx, command, args)
    devs = ctx.server.xend.domain.getDeviceSxprs(dom, cls)
    if use_long:
        from xend.sxp import prettyprint

        for dev in devs:
            ctx.write(prettyprint(dev))
    else:
        ctx.write(table(devs))
    return 0


def block_list(ctx: Context, args: List[str]) -> int:
    return _device_list(ctx, "block-list", "vbd", args, formats.block_list)


# -- network interfaces -------------------------------------------------------------------------
def network_attach(ctx: Context, args: List[str]) -> int:
    real = arg_check(args, "network-attach", 1, 11)
    vif: list = ["vif"]
    for a in real[1:]:
        pair = a.split("=")
        if len(pair) != 2 or pair[1] == "" or pair[0] not in NETWORK_KEYS:
            raise UsageError("Invalid argument: %s" % a)
        vif.append(pair)
    ctx.server.xend.domain.device_create(real[0], vif)
    return 0


def network_detach(ctx: Context, args: List[str]) -> int:
    real = arg_check(args, "network-detach", 2, 3)
    dom, devid = real[0], real[1]
    if len(devid.split(":")) == 6:
        mac = devid.lower()
        vifs = ctx.server.xend.domain.getDeviceSxprs(dom, "vif")
        found = [str(v[0]) for v in vifs if formats.device_info(v[1])["mac"].lower() == mac]
        if not found:
            raise CommandError("Cannot find device '%s' in domain '%s'" % (devid, dom))
        devid = found[0]
    _detach(ctx, [dom, devid] + real[2:], "vif")
    return 0


def network_list(ctx: Context, args: List[str]) -> int:
    return _device_list(ctx, "network-list", "vif", args, formats.network_list)


# -- PCI passthrough ----------------------------------------------------------------------------
def _pci_entry(spec: str) -> list:
    from xend.xm.xmconfig import ConfigFileError, pci_entry

    try:
        return pci_entry(spec)
    except ConfigFileError as e:
        raise UsageError(str(e)) from None


def _attached(ctx: Context, dom: str) -> List[str]:
    return [str(d.get("key", "")) for d in ctx.server.xend.domain.getDeviceSxprs(dom, "pci")
            if isinstance(d, dict)]


def pci_attach(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("pci-attach")
    p.add_argument("-o", "--options", action="append", default=[])
    p.add_argument("words", nargs="*")
    o = parse(p, args)
    for opt in o.options:
        if len(opt.split("=")) != 2:
            raise UsageError("Invalid pci attach option: %s" % opt)
    if not 2 <= len(o.words) <= 3:
        raise UsageError("Invalid argument for 'xm pci-attach'")
    dom, spec = o.words[0], o.words[1]
    if len(o.words) == 3:
        spec += "@" + o.words[2]
    if o.options:
        spec += "," + ",".join(o.options)
    entry = _pci_entry(spec)
    key = dict(e for e in entry[1:] if len(e) == 2)["key"]
    if key in _attached(ctx, dom):
        raise CommandError("pci: device %s has been attached! " % key)
    ctx.server.xend.domain.device_configure(dom, ["pci", entry, ["state", "Initialising"]])
    return 0


def pci_detach(ctx: Context, args: List[str]) -> int:
    real = arg_check(args, "pci-detach", 2)
    dom = real[0]
    entry = _pci_entry(real[1])
    key = dict(e for e in entry[1:] if len(e) == 2)["key"]
    if key not in _attached(ctx, dom):
        raise CommandError("pci: device %s is not attached!" % key)
    ctx.server.xend.domain.device_configure(dom, ["pci", entry, ["state", "Closing"]])
    return 0


def pci_list(ctx: Context, args: List[str]) -> int:
    _, dom = _resource_list_args(ctx, "pci-list", args)
    devs = [d for d in ctx.server.xend.domain.getDeviceSxprs(dom, "pci") if isinstance(d, dict)]
    ctx.write(formats.pci_list(devs))
    return 0


def pci_list_assignable_devices(ctx: Context, args: List[str]) -> int:
    arg_check(args, "pci-list-assignable-devices", 0)
    devs = ctx.server.xend.node.pciinfo()
    if devs is None:
        raise CommandError("pciback/pci-stub not loaded?")
    for dev in devs:
        info = {k: int(str(formats.child_value(dev, k, "0")), 16)
                for k in ("domain", "bus", "slot", "func")}
        ctx.write("%(domain)04x:%(bus)02x:%(slot)02x.%(func)01x\n" % info)
    return 0
