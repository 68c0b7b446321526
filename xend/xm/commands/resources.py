"""Commands that change a domain's resources: mem-set, mem-max, vcpu-set, vcpu-pin, sched-credit."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import List

from xend.xm import formats
from xend.xm.commands import CommandError, Context, UsageError, parse

_UNITS = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
MIB = 1024 ** 2


def mem_mib(text: str, warn=None) -> int:
    """``512``, ``512m``, ``1g``, ``524288k`` -> MiB (integer; ``ValueError`` if malformed).
    Another letter is, as the original took it, a unit of bytes (``warn`` is told
    ``ignoring unknown unit``): ``10x`` is 0 MiB, which xend then refuses."""
    text = text.strip()
    if text[-1:].isalpha():
        base = _UNITS.get(text[-1].lower())
        if base is None:
            if warn is not None:
                warn("ignoring unknown unit")
            base = 1
        return int(text[:-1]) * base // MIB
    return int(text)


def _say(ctx: Context):
    return lambda text: ctx.write(text + "\n")


def cpu_list(spec: str) -> str:
    """``0-3,^1,6`` -> ``0,2,3,6`` (ranges added, ``^n`` removes n, left to right)."""
    cpus: List[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if part.startswith("^"):
            drop = int(part[1:])
            cpus = [c for c in cpus if c != drop]
        elif "-" in part:
            first, last = part.split("-", 1)
            cpus.extend(range(int(first), int(last) + 1))
        else:
            cpus.append(int(part))
    return ",".join(str(c) for c in sorted(set(cpus)))


def _dom_value(ctx: Context, command: str, args: List[str], metavar: str):
    p = ctx.parser(command)
    p.add_argument("domain", metavar="Domain")
    p.add_argument("value", metavar=metavar)
    o = parse(p, args)
    return o.domain, o.value


def mem_set(ctx: Context, args: List[str]) -> int:
    dom, mem = _dom_value(ctx, "mem-set", args, "Mem")
    ctx.server.xend.domain.setMemoryTarget(dom, mem_mib(mem, _say(ctx)))
    return 0


def mem_max(ctx: Context, args: List[str]) -> int:
    dom, mem = _dom_value(ctx, "mem-max", args, "Mem")
    ctx.server.xend.domain.maxmem_set(dom, mem_mib(mem, _say(ctx)))
    return 0


def vcpu_set(ctx: Context, args: List[str]) -> int:
    dom, count = _dom_value(ctx, "vcpu-set", args, "vCPUs")
    ctx.server.xend.domain.setVCpuCount(dom, int(count))
    return 0


def vcpu_pin(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("vcpu-pin")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("vcpu", metavar="VCPU|all")
    p.add_argument("cpus", metavar="CPUs|all")
    o = parse(p, args)
    vcpu = o.vcpu if o.vcpu == "all" else int(o.vcpu)
    cpumap = cpu_list("0-63" if o.cpus == "all" else o.cpus)
    ctx.server.xend.domain.pincpu(o.domain, vcpu, cpumap)
    return 0


def sched_credit(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("sched-credit")
    p.add_argument("-d", "--domain", default=None)
    p.add_argument("-w", "--weight", type=int, default=None)
    p.add_argument("-c", "--cap", type=int, default=None)
    o = parse(p, args)

    check_scheduler(ctx, "credit")
    if o.weight is not None or o.cap is not None:
        if o.domain is None:
            raise UsageError("No domain given.")
        result = ctx.server.xend.domain.sched_credit_set(o.domain, o.weight, o.cap)
        if result not in (0, None):
            raise CommandError(str(result))
        return 0
    rows = _sched_rows(ctx, o.domain, ctx.server.xend.domain.sched_credit_get, ("weight", "cap"))
    ctx.write(formats.sched_credit(rows))
    return 0


def check_scheduler(ctx: Context, wanted: str, hint: str = "") -> None:
    """The original's check: the host must run ``wanted``."""
    scheduler = "unknown"
    for pair in ctx.server.xend.node.info()[1:]:
        if len(pair) > 1 and pair[0] == "xen_scheduler":
            scheduler = pair[1]
            break
    if scheduler != wanted:
        raise CommandError(f"Xen is running with the {scheduler} scheduler{hint}")


def _sched_rows(ctx: Context, domain, get, keys) -> List[dict]:
    """One row per domain (the one named by ``domain``): name, domid and the ``keys`` that
    ``get`` answers, -1 for a domain the scheduler does not know."""
    summaries = [formats.domain_summary(d)
                 for d in ctx.server.xend.domains_with_state(True, "all", False)]
    if domain is not None:
        summaries = [d for d in summaries if domain in (d["name"], d["domid"])]
        if not summaries:
            raise UsageError(f"Domain '{domain}' does not exist.")
    import xmlrpc.client

    rows = []
    for d in summaries:
        try:
            params = get(d["name"])
        except xmlrpc.client.Fault:
            params = {}
        if not isinstance(params, dict) or any(k not in params for k in keys):
            params = {k: -1 for k in keys}
        rows.append(dict({k: params[k] for k in keys}, name=d["name"], domid=d["domid"]))
    return rows


def sched_credit2(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("sched-credit2")
    p.add_argument("-d", "--domain", default=None)
    p.add_argument("-w", "--weight", type=int, default=None)
    o = parse(p, args)
    check_scheduler(ctx, "credit2")
    if o.weight is not None:
        if o.domain is None:
            raise UsageError("No domain given.")
        result = ctx.server.xend.domain.sched_credit2_set(o.domain, o.weight)
        if result not in (0, None):
            raise CommandError(str(result))
        return 0
    rows = _sched_rows(ctx, o.domain, ctx.server.xend.domain.sched_credit2_get, ("weight",))
    ctx.write(formats.sched_credit2(rows))
    return 0


def sched_sedf(ctx: Context, args: List[str]) -> int:
    """The sedf scheduler left Xen in 4.6: the original's check says which one runs."""
    p = ctx.parser("sched-sedf")
    for short, long in (("-p", "--period"), ("-s", "--slice"), ("-l", "--latency"),
                        ("-e", "--extratime"), ("-w", "--weight")):
        p.add_argument(short, long, default=None)
    p.add_argument("domain", nargs="?", default=None)
    parse(p, args)
    check_scheduler(ctx, "sedf", "; the sedf scheduler is not in this Xen (Xen 4.6 removed "
                                 "it): use xm sched-credit2 or xm sched-credit")
    return 0
