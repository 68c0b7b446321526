"""Commands that create, start and stop domains: create, new, start, delete, shutdown, reboot,
destroy, pause, unpause, suspend, resume, rename, sysrq, dump-core."""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, List

from xend.xm.commands import (CommandError, Context, UsageError, domid_of, parse, read_sxp_file,
                              sxp_child_value)


# -- create / new -----------------------------------------------------------------------------
def _config_parser(ctx: Context, command: str) -> Any:
    p = ctx.parser(command)
    p.add_argument("-c", "--console_autoconnect", action="store_true")
    p.add_argument("-p", "--paused", action="store_true")
    p.add_argument("-n", "--dryrun", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--path", default=None)
    p.add_argument("-f", "--defconfig", default=None)
    p.add_argument("-F", "--config", default=None)
    p.add_argument("words", nargs="*")
    return p


def load_domain_configs(ctx: Context, o: Any) -> List[list]:
    """The ``(vm ...)`` SXPs from ``-F`` (an SXP file, or a Xen-API XML file), a Xen-API XML
    config file, or the Python config file and VAR=VALs (one config but for XML files)."""
    from xend.xm import xmconfig, xenapi_xml

    assignments = [w for w in o.words if "=" in w]
    names = [w for w in o.words if "=" not in w]
    if o.defconfig:
        names.insert(0, o.defconfig)
    if len(names) > 1:
        raise UsageError(f"Unexpected argument: {names[1]}")
    xml_path = None
    if o.config and xenapi_xml.is_xml(o.config):
        xml_path = o.config
    elif not o.config:
        try:
            found = xmconfig.find_config(names[0] if names else "xmdefconfig",
                                         o.path or xmconfig.DEFAULT_PATH)
        except xmconfig.ConfigFileError:
            found = None
        if found is not None and not o.quiet:
            # as the original: the file as found, ./NAME for one of the current directory
            shown = found if os.path.isabs(found) else os.path.join(os.curdir, found)
            ctx.write(f'Using config file "{shown}".\n')
        if found is not None and xenapi_xml.is_xml(found):
            xml_path = found
    if xml_path is not None:
        try:
            return xenapi_xml.load(xml_path)
        except xenapi_xml.XmlConfigError as e:
            raise CommandError(str(e)) from None
    if o.config:
        return [read_sxp_file(o.config, "domain")]
    try:
        _, config = xmconfig.load(names[0] if names else "xmdefconfig", assignments,
                                  search_path=o.path or xmconfig.DEFAULT_PATH,
                                  console_autoconnect=o.console_autoconnect, warn=ctx.warn,
                                  environ=ctx.environ)
    except xmconfig.ConfigFileError as e:
        raise CommandError(str(e)) from None
    return [config]


def _dry_run(ctx: Context, configs: List[list]) -> int:
    from xend import sxp

    for config in configs:
        ctx.write(sxp.prettyprint(config))
    return 0


def create(ctx: Context, args: List[str]) -> int:
    """A failing create prints the error, then the command's usage (as the original)."""
    try:
        o = parse(_config_parser(ctx, "create"), args)
        configs = load_domain_configs(ctx, o)
        if o.dryrun:
            return _dry_run(ctx, configs)
        for config in configs:
            check_buildable(config)
        names = [_create_one(ctx, o, config) for config in configs]
    except CommandError as e:
        e.usage = True
        raise
    if o.console_autoconnect:
        ctx.out.flush()
        from xend.xm.commands.console import attach

        return attach(ctx, names[-1])
    return 0


def _create_one(ctx: Context, o: Any, config: list) -> str:
    import xmlrpc.client

    server = ctx.server
    try:
        dominfo = server.xend.domain.create(config)
    except xmlrpc.client.Fault as f:
        if f.faultCode == 3:
            raise CommandError(f"the domain '{f.faultString}' does not exist.") from None
        raise CommandError(f.faultString) from None
    name = sxp_child_value(dominfo, "name")

    def destroy_quietly() -> None:
        try:
            server.xend.domain.destroy(name)
        except Exception:  # noqa: BLE001 - best effort cleanup; the first error is reported
            pass

    try:
        server.xend.domain.waitForDevices(name)
    except xmlrpc.client.Fault as f:
        destroy_quietly()
        raise CommandError(f.faultString) from None
    except Exception:  # noqa: BLE001 - connection trouble while waiting: clean up, say so
        destroy_quietly()
        raise CommandError(f"Device creation failed for domain {name}") from None
    if not o.paused:
        try:
            server.xend.domain.unpause(name)
        except Exception:  # noqa: BLE001
            destroy_quietly()
            raise CommandError(f"Failed to unpause domain {name}") from None
    if not o.quiet:
        ctx.write(f"Started domain {name} (id={domid_of(dominfo)})\n")
    return name


def new(ctx: Context, args: List[str]) -> int:
    """A failing new prints the error only (as the original)."""
    import xmlrpc.client

    o = parse(_config_parser(ctx, "new"), args)
    configs = load_domain_configs(ctx, o)
    if o.dryrun:
        return _dry_run(ctx, configs)
    for config in configs:
        try:
            ctx.server.xend.domain.new(config)
        except xmlrpc.client.Fault as f:
            if f.faultCode == 3:
                raise
            raise CommandError(f.faultString) from None
    return 0


def check_buildable(config: list) -> None:
    """What xm create refuses before asking xend: a builder of Xen 3.0 (vmx), a PV guest with
    neither a kernel nor a bootloader, a ``file:`` disk whose file does not exist."""
    from xend.xm import xmconfig

    image = sxp_child_value(config, "image")
    if isinstance(image, list) and image:
        if image[0] in xmconfig.OLD_BUILDERS:
            raise CommandError(xmconfig.unknown_builder(image[0]))
        kernel = next((e[1] for e in image[1:] if isinstance(e, list) and len(e) > 1
                       and e[0] == "kernel"), "")
        if image[0] == "linux" and not kernel and not sxp_child_value(config, "bootloader"):
            raise CommandError("A PV guest needs a kernel or a bootloader: set kernel = "
                               "\"/path/to/vmlinuz\" (and ramdisk) or bootloader = "
                               "\"pygrub\"")
    for dev in config[1:]:
        if not (isinstance(dev, list) and len(dev) > 1 and dev[0] == "device"
                and isinstance(dev[1], list) and dev[1] and dev[1][0] in ("vbd", "tap", "tap2")):
            continue
        uname = str(sxp_child_value(dev[1], "uname", "") or "")
        for prefix in ("file:", "tap:aio:", "tap2:aio:", "tap:file:"):
            if uname.startswith(prefix):
                path = uname[len(prefix):]
                if not os.path.exists(path):
                    raise CommandError(f"Disk image does not exist: {path} (disk "
                                       f"{sxp_child_value(dev[1], 'dev', '?')})")


# -- managed domains ----------------------------------------------------------------------------
def start(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("start")
    p.add_argument("-p", "--paused", action="store_true")
    p.add_argument("-c", "--console_autoconnect", action="store_true")
    p.add_argument("domain", metavar="DomainName")
    o = parse(p, args)
    ctx.server.xend.domain.start(o.domain, o.paused)
    if domid_of(ctx.server.xend.domain(o.domain)) == -1:
        raise CommandError(f"Domain '{o.domain}' is not started", usage=True)
    if o.console_autoconnect:
        from xend.xm.commands.console import attach

        return attach(ctx, o.domain)
    return 0


def _single(ctx: Context, command: str, args: List[str], metavar: str = "Domain") -> str:
    p = ctx.parser(command)
    p.add_argument("domain", metavar=metavar)
    return parse(p, args).domain


def delete(ctx: Context, args: List[str]) -> int:
    ctx.server.xend.domain.delete(_single(ctx, "delete", args, "DomainName"))
    return 0


def suspend(ctx: Context, args: List[str]) -> int:
    ctx.server.xend.domain.suspend(_single(ctx, "suspend", args, "DomainName"))
    return 0


def resume(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("resume")
    p.add_argument("-p", "--paused", action="store_true")
    p.add_argument("domain", metavar="DomainName")
    o = parse(p, args)
    ctx.server.xend.domain.resume(o.domain, o.paused)
    return 0


# -- running domains ----------------------------------------------------------------------------
def destroy(ctx: Context, args: List[str]) -> int:
    ctx.server.xend.domain.destroy(_single(ctx, "destroy", args))
    return 0


def pause(ctx: Context, args: List[str]) -> int:
    dom = _single(ctx, "pause", args)
    ctx.server.xend.domain.pause(dom)
    ctx.server.xend.domain.setpauseflag(dom, True)
    return 0


def unpause(ctx: Context, args: List[str]) -> int:
    dom = _single(ctx, "unpause", args)
    ctx.server.xend.domain.unpause(dom)
    ctx.server.xend.domain.setpauseflag(dom, False)
    return 0


def rename(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("rename")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("new_name", metavar="NewDomainName")
    o = parse(p, args)
    ctx.server.xend.domain.setName(o.domain, o.new_name)
    return 0


def sysrq(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("sysrq")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("key", metavar="letter")
    o = parse(p, args)
    ctx.server.xend.domain.send_sysrq(o.domain, o.key)
    return 0


def dump_core(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("dump-core")
    p.add_argument("-L", "--live", action="store_true")
    p.add_argument("-C", "--crash", action="store_true")
    p.add_argument("-R", "--reset", action="store_true")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("filename", nargs="?", default=None)
    o = parse(p, args)
    if o.crash and o.reset:
        raise UsageError("You may not specify more than one '-CR' option")
    filename = os.path.abspath(o.filename) if o.filename else None
    ctx.write(f"Dumping core of domain: {o.domain} ...\n")
    ctx.out.flush()
    from xend.xm.progress import with_progress

    with_progress(ctx, "dump", o.domain,
                  lambda: ctx.server.xend.domain.dump(o.domain, filename, o.live, o.crash,
                                                      o.reset))
    return 0


# -- shutdown / reboot --------------------------------------------------------------------------
def _shutdown_parser(ctx: Context, command: str) -> Any:
    p = ctx.parser(command)
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-w", "--wait", action="store_true")
    if command == "shutdown":
        p.add_argument("-H", "--halt", action="store_true")
        p.add_argument("-R", "--reboot", action="store_true")
    p.add_argument("domains", nargs="*")
    return p


def shutdown(ctx: Context, args: List[str], reboot: bool = False, command: str = "shutdown",
             poll_interval: float = 1.0) -> int:
    o = parse(_shutdown_parser(ctx, command), args)
    halt = getattr(o, "halt", False)
    reboot = reboot or getattr(o, "reboot", False)
    if halt and reboot:
        raise UsageError("Can't specify halt and reboot")
    mode = "halt" if halt else "reboot" if reboot else "poweroff"
    server = ctx.server
    if o.all:
        doms = list(server.xend.domains(0))
        dom0 = sxp_child_value(server.xend.domain(0), "name")
        if dom0 in doms:
            doms.remove(dom0)
    else:
        if not o.domains:
            raise UsageError("No domain parameter given")
        if len(o.domains) > 1:
            raise UsageError("No multiple domain parameters allowed")
        doms = list(o.domains)
        if o.wait:  # wait by name: xend.domains() lists names, the user may have given an id
            doms = [sxp_child_value(server.xend.domain(d), "name") or d for d in doms]
    restart_counts = {}
    for d in doms:
        restart_counts[d] = server.xend.domain.getRestartCount(d)
        server.xend.domain.shutdown(d, mode)
    if o.wait:
        if mode == "reboot":
            _wait_reboot(ctx, doms, restart_counts, poll_interval)
        else:
            _wait_shutdown(ctx, doms, poll_interval)
    return 0


def _wait_shutdown(ctx: Context, doms: List[str], interval: float) -> None:
    pending = list(doms)
    while pending:
        alive = ctx.server.xend.domains(0)
        for d in [d for d in pending if d not in alive]:
            ctx.write(f"Domain {d} terminated\n")
            ctx.out.flush()
            pending.remove(d)
        if pending:
            time.sleep(interval)
    ctx.write("All domains terminated\n")


def _wait_reboot(ctx: Context, doms: List[str], counts: dict, interval: float) -> None:
    pending = list(doms)
    while pending:
        alive = ctx.server.xend.domains(0)
        for d in list(pending):
            if d not in alive:
                ctx.write(f"Domain {d} destroyed for failed in rebooting\n")
                pending.remove(d)
            elif ctx.server.xend.domain.getRestartCount(d) != counts[d]:
                ctx.write(f"Domain {d} rebooted\n")
                pending.remove(d)
        ctx.out.flush()
        if pending:
            time.sleep(interval)
    ctx.write("All domains rebooted\n")


def reboot(ctx: Context, args: List[str]) -> int:
    return shutdown(ctx, args, reboot=True, command="reboot")
