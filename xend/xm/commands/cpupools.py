"""The CPU pool commands (xm 4.1+): cpupool-create, -new, -start, -list, -destroy, -delete,
-cpu-add, -cpu-remove, -migrate; the calls are ``xend.cpu_pool.*``."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Dict, List

from xend.xm import formats
from xend.xm.commands import CommandError, Context, UsageError, parse, read_sxp_file
from xend.xm.commands.devices import arg_check

POOL_PATH = ".:/etc/xen/cpupool"
BRIEF_HEADER = "Name               CPUs   Sched     Active   Domain count"
BRIEF_ROW = "%-16s   %3s  %8s       %s          %s"
CPUS_ROW = "%-16s %s"


# -- pool configuration files ---------------------------------------------------------------------
def _config_parser(ctx: Context, command: str) -> Any:
    p = ctx.parser(command)
    p.add_argument("-n", "--dryrun", action="store_true")
    p.add_argument("--path", default=POOL_PATH)
    p.add_argument("-f", "--defconfig", default=None)
    p.add_argument("-F", "--config", default=None)
    p.add_argument("words", nargs="*")
    return p


def _cpus(value: Any) -> Dict[str, Any]:
    """The ``cpus`` variable: a count (``2``, ``'#2'``) or a list of CPUs (``'0-3,^1'``,
    ``['1', '3']``)."""
    from xend.xm.commands.resources import cpu_list

    if isinstance(value, int):
        return {"ncpu": value, "proposed": []}
    if isinstance(value, str) and value.startswith("#"):
        try:
            return {"ncpu": int(value[1:]), "proposed": []}
        except ValueError:
            raise CommandError('Wrong illegal of parameter "cpus"') from None
    specs = value if isinstance(value, list) else [value]
    try:
        chosen = sorted({int(c) for spec in specs for c in cpu_list(str(spec)).split(",") if c})
    except ValueError:
        raise CommandError("cpus = %s: not a list of CPUs" % (value,)) from None
    return {"ncpu": len(chosen), "proposed": chosen}


def pool_config(ctx: Context, o: Any) -> list:
    """The ``(pool ...)`` SXP of ``-F FILE`` or of the Python config file and VAR=VALs."""
    from xend.xm import xmconfig

    assignments = [w for w in o.words if "=" in w]
    names = [w for w in o.words if "=" not in w]
    if o.defconfig:
        names.insert(0, o.defconfig)
    if len(names) > 1:
        raise UsageError(f"Unexpected argument: {names[1]}")
    if o.config:
        return read_sxp_file(o.config, "pool")
    variables = dict(a.split("=", 1) for a in assignments)
    env: Dict[str, Any] = {}
    if names:
        try:
            path = xmconfig.find_config(names[0], o.path)
            env = xmconfig.run_script(path, variables)
        except xmconfig.ConfigFileError as e:
            raise CommandError(str(e)) from None
    values = {k: v for k, v in env.items() if k in ("name", "sched", "cpus", "other_config")}
    values.update({k: v for k, v in variables.items()
                   if k in ("name", "sched", "cpus", "other_config")})
    import os

    name = values.get("name") or (os.path.basename(names[0]) if names else None)
    cpus = _cpus(values.get("cpus", 1))
    other = values.get("other_config", [])
    other = other if isinstance(other, list) else [other]
    config: list = ["pool", ["name_label", name], ["sched_policy", values.get("sched", "credit")],
                    ["ncpu", cpus["ncpu"]], ["proposed_CPUs"] + cpus["proposed"]]
    config.append(["other_config"] + [e.strip().split("=", 1) for e in other
                                      if isinstance(e, str) and "=" in e])
    return config


def _create_or_new(ctx: Context, args: List[str], command: str, call: str) -> int:
    o = parse(_config_parser(ctx, command), args)
    config = pool_config(ctx, o)
    if o.dryrun:
        from xend.sxp import prettyprint

        ctx.write(prettyprint(config))
        return 0
    getattr(ctx.server.xend.cpu_pool, call)(config)
    return 0


def cpupool_create(ctx: Context, args: List[str]) -> int:
    return _create_or_new(ctx, args, "cpupool-create", "create")


def cpupool_new(ctx: Context, args: List[str]) -> int:
    return _create_or_new(ctx, args, "cpupool-new", "new")


# -- the others -----------------------------------------------------------------------------------
def cpupool_list(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("cpupool-list")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-c", "--cpus", action="store_true")
    p.add_argument("pools", nargs="*")
    o = parse(p, args)
    if len(o.pools) > 1:
        raise UsageError("Only one cpupool name for selection allowed")
    sxprs = ctx.server.xend.cpu_pool.list(o.pools)
    if o.pools and not sxprs:
        raise CommandError("Pool '%s' does not exist." % o.pools[0])
    if o.long:
        from xend.sxp import prettyprint

        for sxpr in sxprs:
            ctx.write(prettyprint(sxpr))
        return 0
    lines = []
    for sxpr in sxprs:
        name = formats.child_value(sxpr, "name_label", "")
        cpus = [str(c) for c in (formats.child(sxpr, "host_CPU_numbers") or ["", ])[1:]]
        active = formats.child_value(sxpr, "activated", False) in (True, 1, "1", "True")
        if o.cpus:
            if not lines:
                lines.append(CPUS_ROW % ("Name", "CPU list"))
            lines.append(CPUS_ROW % (name, ",".join(cpus) if active and cpus else "-"))
        else:
            if not lines:
                lines.append(BRIEF_HEADER)
            vms = (formats.child(sxpr, "started_VM_names") or [""])[1:]
            count = len(cpus) if active else formats.child_value(sxpr, "ncpu", 0)
            lines.append(BRIEF_ROW % (name, count, formats.child_value(sxpr, "sched_policy", ""),
                                      "y" if active else "n", len(vms) if active else 0))
    ctx.write("".join(line + "\n" for line in lines))
    return 0


def _one(ctx: Context, args: List[str], command: str, call: str) -> int:
    getattr(ctx.server.xend.cpu_pool, call)(arg_check(args, command, 1)[0])
    return 0


def cpupool_start(ctx: Context, args: List[str]) -> int:
    return _one(ctx, args, "cpupool-start", "start")


def cpupool_destroy(ctx: Context, args: List[str]) -> int:
    return _one(ctx, args, "cpupool-destroy", "destroy")


def cpupool_delete(ctx: Context, args: List[str]) -> int:
    return _one(ctx, args, "cpupool-delete", "delete")


def _two(ctx: Context, args: List[str], command: str, call: str) -> int:
    first, second = arg_check(args, command, 2)
    getattr(ctx.server.xend.cpu_pool, call)(first, second)
    return 0


def cpupool_cpu_add(ctx: Context, args: List[str]) -> int:
    return _two(ctx, args, "cpupool-cpu-add", "cpu_add")


def cpupool_cpu_remove(ctx: Context, args: List[str]) -> int:
    return _two(ctx, args, "cpupool-cpu-remove", "cpu_remove")


def cpupool_migrate(ctx: Context, args: List[str]) -> int:
    return _two(ctx, args, "cpupool-migrate", "migrate")
