"""Commands that show domains: list, uptime, vcpu-list, domid, domname."""
from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, List, Optional

from xend.xm import formats
from xend.xm.commands import CommandError, Context, UsageError, parse


def get_domains(ctx: Context, names: List[str], state: str = "all", full: bool = False) -> list:
    """Records of the named domains (in the order given), else of every domain in ``state``."""
    if names:
        return [ctx.server.xend.domain(name, full) for name in names]
    return ctx.server.xend.domains_with_state(True, state, full)


def brief_domains(ctx: Context, state: str) -> list:
    """Only the columns of ``xm list`` (xend.domains_brief); a xend without that extension
    answers "not supported" and gets the original call."""
    try:
        return ctx.server.xend.domains_brief(state)
    except Exception as e:  # noqa: BLE001 - an xmlrpc.client.Fault, known without importing it
        if getattr(e, "faultCode", None) != 1 or "not supported" not in e.faultString:
            raise
    return ctx.server.xend.domains_with_state(True, state, False)


def node_info_value(ctx: Context, key: str) -> Optional[Any]:
    for pair in ctx.server.xend.node.info()[1:]:
        if len(pair) > 1 and pair[0] == key:
            return pair[1]
    return None


def list_(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("list")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("--state", default="all")
    p.add_argument("--pool", default=None)
    p.add_argument("--label", action="store_true")
    p.add_argument("domains", nargs="*")
    o = parse(p, args)
    if o.state != "all" and o.domains:
        raise UsageError("You may specify either a state or a particular VM, but not both")
    if o.pool and o.domains:
        raise UsageError("You may specify either a pool or a particular VM, but not both")
    if o.domains or o.long or o.pool or o.label:
        doms = get_domains(ctx, o.domains, o.state, o.long)
    else:
        doms = brief_domains(ctx, o.state)
    if o.pool:
        doms = [d for d in doms if formats.child_value(d, "pool_name", "") == o.pool]
    if o.label and not o.long:
        if not any(formats.child_value(d, "security_label") for d in doms):
            raise CommandError("no domain has a security label: labels are ACM's, which left "
                               "Xen in 4.2 and which this xend does not have")
        ctx.write(formats.list_label(doms))
        return 0
    ctx.write(formats.list_long(doms) if o.long else formats.list_brief(doms))
    return 0


def _dom0_uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def uptime(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("uptime")
    p.add_argument("-s", "--short", action="store_true")
    p.add_argument("domains", nargs="*")
    o = parse(p, args)
    doms = get_domains(ctx, o.domains)
    ctx.write(formats.uptime(doms, time.time(), _dom0_uptime, short=o.short,
                             clock=time.strftime("%H:%M:%S")))
    return 0


def vcpu_list(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("vcpu-list")
    p.add_argument("domains", nargs="*")
    o = parse(p, args)
    names = o.domains or ctx.server.xend.domains_with_state(False, "all", False)
    infos = [ctx.server.xend.domain.getVCPUInfo(name) for name in names]

    def nr_cpus() -> Optional[int]:
        value = node_info_value(ctx, "nr_cpus")
        return None if value is None else formats.to_int(value)

    ctx.write(formats.vcpu_list(infos, nr_cpus))
    return 0


def _one_domain(ctx: Context, command: str, args: List[str], metavar: str) -> Any:
    p = ctx.parser(command)
    p.add_argument("domain", metavar=metavar)
    return ctx.server.xend.domain(parse(p, args).domain)


def domid(ctx: Context, args: List[str]) -> int:
    record = _one_domain(ctx, "domid", args, "DomainName")
    ctx.write("%s\n" % formats.child_value(record, "domid"))
    return 0


def domname(ctx: Context, args: List[str]) -> int:
    record = _one_domain(ctx, "domname", args, "DomId")
    ctx.write("%s\n" % formats.child_value(record, "name"))
    return 0
