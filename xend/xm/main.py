"""``xm``: the command table, help texts, and the one place errors become messages.

``xm [-c XEND_CONFIG] <subcommand> [args]``. Each subcommand is a function in a module of
``xend.xm.commands``, imported only when that subcommand runs, so ``xm`` starts about as fast as
``import xmlrpc.client`` (nothing else is imported before the command needs it).

Exit status: 0 success; 1 usage errors, connection failures and faults; 3 unknown domain.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Iterable, List, Optional, Tuple

# name: (module, function, arguments, description, ((short, long, help), ...))
COMMANDS = {
    "console": ("console", "console", "[-q|--quiet] <Domain>",
                "Attach to <Domain>'s console.",
                (("-q", "--quiet", "Do not print an error message if the domain does not exist"),)),
    "create": ("lifecycle", "create", "<ConfigFile> [options] [vars]",
               "Create a domain based on <ConfigFile>.",
               (("-c", "--console_autoconnect", "Connect to the console after the domain is created"),
                ("-p", "--paused", "Leave the domain paused after it is created"),
                ("-n", "--dryrun", "Print the resulting configuration in SXP; create nothing"),
                ("-q", "--quiet", "Quiet"),
                ("", "--path=PATH", "Search path for configuration scripts (default .:/etc/xen)"),
                ("-f", "--defconfig=FILE", "Use the given Python configuration script"),
                ("-F", "--config=FILE", "Use the given domain configuration (SXP, or Xen-API XML)"))),
    "new": ("lifecycle", "new", "<ConfigFile> [options] [vars]",
            "Adds a domain to Xend domain management.",
            (("-n", "--dryrun", "Print the resulting configuration in SXP; add nothing"),
             ("", "--path=PATH", "Search path for configuration scripts (default .:/etc/xen)"),
             ("-F", "--config=FILE", "Use the given domain configuration (SXP, or Xen-API XML)"))),
    "delete": ("lifecycle", "delete", "<DomainName>",
               "Remove a domain from Xend domain management.", ()),
    "destroy": ("lifecycle", "destroy", "<Domain>", "Terminate a domain immediately.", ()),
    "domid": ("listing", "domid", "<DomainName>", "Convert a domain name to domain id.", ()),
    "domname": ("listing", "domname", "<DomId>", "Convert a domain id to domain name.", ()),
    "dump-core": ("lifecycle", "dump_core",
                  "[-L|--live] [-C|--crash] [-R|--reset] <Domain> [Filename]",
                  "Dump core for a specific domain.",
                  (("-L", "--live", "Dump core without pausing the domain"),
                   ("-C", "--crash", "Crash domain after dumping core"),
                   ("-R", "--reset", "Reset domain after dumping core"))),
    "help": (None, None, "[subcommand]", "Display this message.", ()),
    "list": ("listing", "list_", "[options] [Domain, ...]",
             "List information about all/some domains.",
             (("-l", "--long", "Output all VM details in SXP"),
              ("", "--label", "Include security labels"),
              ("", "--state=<state>", "Select only VMs with the specified state"),
              ("", "--pool=<pool>", "Select only VMs in specified cpu pool"))),
    "mem-max": ("resources", "mem_max", "<Domain> <Mem>",
                "Set the maximum amount reservation for a domain.", ()),
    "mem-set": ("resources", "mem_set", "<Domain> <Mem>",
                "Set the current memory usage for a domain.", ()),
    "migrate": ("images", "migrate", "<Domain> <Host>",
                "Migrate a domain to another machine.",
                (("-l", "--live", "Use live migration"),
                 ("-p=portnum", "--port=portnum", "Use specified port for migration"),
                 ("-n=nodenum", "--node=nodenum", "Use specified NUMA node on target"),
                 ("-s", "--ssl", "Use ssl connection for migration"),
                 ("-c", "--change_home_server", "Change home server for managed domains"))),
    "pause": ("lifecycle", "pause", "<Domain>", "Pause execution of a domain.", ()),
    "reboot": ("lifecycle", "reboot", "<Domain> [-wa]", "Reboot a domain.",
               (("-a", "--all", "Reboot all domains"),
                ("-w", "--wait", "Wait for reboot to complete before returning"))),
    "rename": ("lifecycle", "rename", "<Domain> <NewDomainName>", "Rename a domain.", ()),
    "restore": ("images", "restore", "<CheckpointFile> [-p]",
                "Restore a domain from a saved state.",
                (("-p", "--paused", "Do not unpause domain after restoring it"),)),
    "resume": ("lifecycle", "resume", "<DomainName> [-p]", "Resume a Xend managed domain.",
               (("-p", "--paused", "Do not unpause domain after resuming it"),)),
    "save": ("images", "save", "[-c] <Domain> <CheckpointFile>",
             "Save a domain state to restore later.",
             (("-c", "--checkpoint", "Leave domain running after creating snapshot"),)),
    "sched-credit": ("resources", "sched_credit", "[-d <Domain> [-w[=WEIGHT]|-c[=CAP]]]",
                     "Get/set credit scheduler parameters.",
                     (("-d DOMAIN", "--domain=DOMAIN", "Domain to modify"),
                      ("-w WEIGHT", "--weight=WEIGHT", "Weight (int)"),
                      ("-c CAP", "--cap=CAP", "Cap (int)"))),
    "shutdown": ("lifecycle", "shutdown", "<Domain> [-waRH]", "Shutdown a domain.",
                 (("-a", "--all", "Shutdown all guest domains"),
                  ("-w", "--wait", "Wait for shutdown to complete before returning"),
                  ("-H", "--halt", "Shutdown without reboot"),
                  ("-R", "--reboot", "Shutdown and reboot"))),
    "start": ("lifecycle", "start", "<DomainName>", "Start a Xend managed domain.",
              (("-p", "--paused", "Do not unpause domain after starting it"),
               ("-c", "--console_autoconnect", "Connect to the console after the domain is created"))),
    "suspend": ("lifecycle", "suspend", "<DomainName>", "Suspend a Xend managed domain.", ()),
    "sysrq": ("lifecycle", "sysrq", "<Domain> <letter>", "Send a sysrq to a domain.", ()),
    "unpause": ("lifecycle", "unpause", "<Domain>", "Unpause a paused domain.", ()),
    "uptime": ("listing", "uptime", "[-s] [Domain, ...]", "Print uptime for all/some domains.",
               (("-s", "--short", "Print a short uptime line per domain"),)),
    "vcpu-list": ("listing", "vcpu_list", "[Domain, ...]",
                  "List the VCPUs for all/some domains.", ()),
    "vcpu-pin": ("resources", "vcpu_pin", "<Domain> <VCPU|all> <CPUs|all>",
                 "Set which CPUs a VCPU can use.", ()),
    "vcpu-set": ("resources", "vcpu_set", "<Domain> <vCPUs>",
                 "Set the number of active VCPUs for allowed for the domain.", ()),
    "dmesg": ("host", "dmesg", "[-c|--clear]", "Read and/or clear Xend's message buffer.",
              (("-c", "--clear", "Clear dmesg buffer as well as printing it"),)),
    "info": ("host", "info", "[-c|--config] [-n|--numa]", "Get information about Xen host.",
             (("-c", "--config", "List Xend configuration parameters"),
              ("-n", "--numa", "List host NUMA topology information"))),
    "log": ("host", "log", "", "Print Xend log.", ()),
    # devices
    "block-attach": ("devices", "block_attach",
                     "<Domain> <BackDev> <FrontDev> <Mode> [BackDomain]",
                     "Create a new virtual block device.", ()),
    "block-configure": ("devices", "block_configure",
                        "<Domain> <BackDev> <FrontDev> <Mode> [BackDomain]",
                        "Change block device configuration.", ()),
    "block-detach": ("devices", "block_detach", "<Domain> <DevId> [-f|--force]",
                     "Destroy a domain's virtual block device.", ()),
    "block-list": ("devices", "block_list", "<Domain> [--long]",
                   "List virtual block devices for a domain.",
                   (("-l", "--long", "List resources as SXP"),)),
    "network-attach": ("devices", "network_attach",
                       "<Domain> [type=<type>] [mac=<mac>] [bridge=<bridge>] [ip=<ip>] "
                       "[script=<script>] [backend=<BackDomain>] [vifname=<name>] "
                       "[rate=<rate>] [model=<model>][accel=<accel>]",
                       "Create a new virtual network device.", ()),
    "network-detach": ("devices", "network_detach", "<Domain> <DevId|mac> [-f|--force]",
                       "Destroy a domain's virtual network device.", ()),
    "network-list": ("devices", "network_list", "<Domain> [--long]",
                     "List virtual network interfaces for a domain.",
                     (("-l", "--long", "List resources as SXP"),)),
    "pci-attach": ("devices", "pci_attach",
                   "[-o|--options=<opt>] <Domain> <domain:bus:slot.func> [virtual slot]",
                   "Insert a new pass-through pci device.",
                   (("-o", "--options=<opt>", "msitranslate=0|1 or power_mgmt=0|1"),)),
    "pci-detach": ("devices", "pci_detach", "<Domain> <domain:bus:slot.func>",
                   "Remove a domain's pass-through pci device.", ()),
    "pci-list": ("devices", "pci_list", "<Domain>",
                 "List pass-through pci devices for a domain.", ()),
    "pci-list-assignable-devices": ("devices", "pci_list_assignable_devices", "",
                                    "List all the assignable pci devices.", ()),
    # domains and the hypervisor
    "domstate": ("control", "domstate", "<Domain>", "Get the state of a domain.", ()),
    "reset": ("control", "reset", "<Domain>", "Reset a domain.", ()),
    "trigger": ("control", "trigger", "<Domain> <nmi|reset|init|s3resume|power> [<VCPU>]",
                "Send a trigger to a domain.", ()),
    "debug-keys": ("control", "debug_keys", "<Keys>", "Send debug keys to Xen.", ()),
    "sched-credit2": ("resources", "sched_credit2", "[-d <Domain> [-w[=WEIGHT]]]",
                      "Get/set credit2 scheduler parameters.",
                      (("-d DOMAIN", "--domain=DOMAIN", "Domain to modify"),
                       ("-w WEIGHT", "--weight=WEIGHT", "Weight (int)"))),
    "sched-sedf": ("resources", "sched_sedf", "<Domain> [options]",
                   "Get/set EDF parameters.",
                   (("-p [MS]", "--period[=MS]", "Relative deadline(ms)"),
                    ("-s [MS]", "--slice[=MS]", "Worst-case execution time(ms). (slice < period)"),
                    ("-l [MS]", "--latency[=MS]", "Scaled period (ms) when domain performs "
                                                  "heavy I/O"),
                    ("-e [FLAG]", "--extratime[=FLAG]", "Flag (0 or 1) controls if domain can "
                                                        "run in extra time."),
                    ("-w [FLOAT]", "--weight[=FLOAT]", "CPU Period/slice (do not set with "
                                                       "--period/--slice)"))),
    "top": ("top", "top", "[-b] [-i N] [-d SECONDS] [-f]",
            "Monitor a host and the domains in real time.",
            (("-b", "--batch", "Print the table each time (no screen), as xentop -b"),
             ("-i N", "--iterations=N", "Stop after N updates"),
             ("-d SECONDS", "--delay=SECONDS", "Seconds between updates (default 3)"),
             ("-f", "--full-name", "Do not cut domain names at 10 characters"))),
    "shell": ("shell", "shell", "", "Launch an interactive shell.", ()),
    # CPU pools
    "cpupool-create": ("cpupools", "cpupool_create", "<ConfigFile> [vars]",
                       "Create a CPU pool based an ConfigFile.",
                       (("-n", "--dryrun", "Print the pool's configuration in SXP; create "
                                           "nothing"),
                        ("", "--path=PATH", "Search path for configuration scripts (default "
                                            ".:/etc/xen/cpupool)"),
                        ("-f", "--defconfig=FILE", "Use the given Python configuration script"),
                        ("-F", "--config=FILE", "Use the given pool configuration (SXP)"))),
    "cpupool-new": ("cpupools", "cpupool_new", "<ConfigFile> [vars]",
                    "Adds a CPU pool to Xend CPU pool management.",
                    (("-n", "--dryrun", "Print the pool's configuration in SXP; add nothing"),
                     ("", "--path=PATH", "Search path for configuration scripts (default "
                                         ".:/etc/xen/cpupool)"),
                     ("-f", "--defconfig=FILE", "Use the given Python configuration script"),
                     ("-F", "--config=FILE", "Use the given pool configuration (SXP)"))),
    "cpupool-start": ("cpupools", "cpupool_start", "<CPU Pool>", "Starts a Xend CPU pool.", ()),
    "cpupool-list": ("cpupools", "cpupool_list", "[<CPU Pool>] [-l|--long] [-c|--cpus]",
                     "List CPU pools on host.",
                     (("-l", "--long", "Output all CPU pool details in SXP format"),
                      ("-c", "--cpus", "Output list of CPUs used by a pool"))),
    "cpupool-destroy": ("cpupools", "cpupool_destroy", "<CPU Pool>",
                        "Deactivates a CPU pool.", ()),
    "cpupool-delete": ("cpupools", "cpupool_delete", "<CPU Pool>",
                       "Removes a CPU pool from Xend management.", ()),
    "cpupool-cpu-add": ("cpupools", "cpupool_cpu_add", "<CPU Pool> <CPU nr>",
                        "Adds a CPU to a CPU pool.", ()),
    "cpupool-cpu-remove": ("cpupools", "cpupool_cpu_remove", "<CPU Pool> <CPU nr>",
                           "Removes a CPU from a CPU pool.", ()),
    "cpupool-migrate": ("cpupools", "cpupool_migrate", "<Domain> <CPU Pool>",
                        "Moves a domain into a CPU pool.", ()),
}

#: the commands of xm 4.4 this xm has not, and why (``xm CMD`` says so)
MISSING = {
    "vncviewer": "this xend runs no device model, so no guest has a VNC server to view",
    "serve": "xm reaches xend over its sockets; the ssh:// server URIs serve was for are "
             "not taken",
    "event-monitor": "it printed Xen-API events: use the Xen-API's event.next "
                     "(xen-api-server) instead",
    "usb-add": "USB devices of HVM guests are qemu's, and this xend runs no device model",
    "usb-del": "USB devices of HVM guests are qemu's, and this xend runs no device model",
    "network2-attach": "netchannel2 never reached Linux; use network-attach",
    "network2-detach": "netchannel2 never reached Linux; use network-detach",
    "network2-list": "netchannel2 never reached Linux; use network-list",
    "vnet-create": "vnets needed a kernel module that no Linux of Xen 4.x had",
    "vnet-delete": "vnets needed a kernel module that no Linux of Xen 4.x had",
    "vnet-list": "vnets needed a kernel module that no Linux of Xen 4.x had",
    "scsi-attach": "PV SCSI (vscsi) is not built by this xend (disks are vbds)",
    "scsi-detach": "PV SCSI (vscsi) is not built by this xend (disks are vbds)",
    "scsi-list": "PV SCSI (vscsi) is not built by this xend (disks are vbds)",
    "usb-attach": "PV USB (usbback) is not in the Linux kernels Xen 4.17 runs with",
    "usb-detach": "PV USB (usbback) is not in the Linux kernels Xen 4.17 runs with",
    "usb-list": "PV USB (usbback) is not in the Linux kernels Xen 4.17 runs with",
    "usb-list-assignable-devices": "PV USB (usbback) is not in the Linux kernels Xen 4.17 "
                                   "runs with",
    "usb-hc-create": "PV USB (usbback) is not in the Linux kernels Xen 4.17 runs with",
    "usb-hc-destroy": "PV USB (usbback) is not in the Linux kernels Xen 4.17 runs with",
    "tmem-list": "transcendent memory (tmem) left Xen in 4.13",
    "tmem-thaw": "transcendent memory (tmem) left Xen in 4.13",
    "tmem-freeze": "transcendent memory (tmem) left Xen in 4.13",
    "tmem-destroy": "transcendent memory (tmem) left Xen in 4.13",
    "tmem-set": "transcendent memory (tmem) left Xen in 4.13",
    "tmem-freeable": "transcendent memory (tmem) left Xen in 4.13",
    "tmem-shared-auth": "transcendent memory (tmem) left Xen in 4.13",
    "addlabel": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "rmlabel": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "getlabel": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "dry-run": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "resources": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "dumppolicy": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "setpolicy": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "resetpolicy": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "getpolicy": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "labels": "the ACM security module left Xen in 4.2 (xsm_module_name acm)",
    "getenforce": "this xend has no XSM/FLASK support: use xl getenforce",
    "setenforce": "this xend has no XSM/FLASK support: use xl setenforce",
}

ALIASES = {"balloon": "mem-set", "set-vcpus": "vcpu-set",
           # xm 4.1's names of the CPU pool commands
           "pool-create": "cpupool-create", "pool-new": "cpupool-new",
           "pool-start": "cpupool-start", "pool-list": "cpupool-list",
           "pool-destroy": "cpupool-destroy", "pool-delete": "cpupool-delete",
           "pool-cpu-add": "cpupool-cpu-add", "pool-cpu-remove": "cpupool-cpu-remove",
           "pool-migrate": "cpupool-migrate"}

COMMON_COMMANDS = ("console", "create", "new", "delete", "destroy", "dump-core", "help", "list",
                   "mem-set", "migrate", "pause", "reboot", "reset", "restore", "resume",
                   "save", "shell", "shutdown", "start", "suspend", "top", "unpause", "uptime",
                   "domstate", "vcpu-set")

USAGE_HEAD = ("Usage: xm <subcommand> [args]\n\n"
              "Control, list, and manipulate Xen guest instances.\n\n")
USAGE_FOOT = ("<Domain> can either be the Domain Name or Id.\n"
              "Global option before <subcommand>: -c|--config <xend-config.sxp> to reach the "
              "xend it configures\n(else $XM_SERVER, else the server of xm-config.xml "
              "($XM_CONFIG_FILE,\n/etc/xen/xm-config.xml; Xen-API or legacy), else $XEND_CONFIG, "
              "else /var/run/xend/xmlrpc.sock).\n"
              "For more help on 'xm' see the xm(1) man page.\n"
              "For more help on 'xm create' see the xmdomain.cfg(5) man page.\n")


def _command_lines(names: "Iterable[str]") -> str:
    return "".join(" %-20s %s\n" % (name, COMMANDS[name][3]) for name in names)


def short_help() -> str:
    return (USAGE_HEAD + "Common 'xm' commands:\n\n" + _command_lines(COMMON_COMMANDS) + "\n"
            + USAGE_FOOT + "\nFor a complete list of subcommands run 'xm help'.\n")


def long_help() -> str:
    return (USAGE_HEAD + "xm full list of subcommands:\n\n" + _command_lines(sorted(COMMANDS))
            + "\n" + USAGE_FOOT + "Commands of xm 4.4 this xm has not (xm CMD says why): "
            + " ".join(sorted(MISSING)) + "\n")


def command_help(name: str) -> str:
    _, _, arguments, description, options = COMMANDS[name]
    text = ("Usage: xm %s %s" % (name, arguments)).rstrip() + "\n\n" + description + "\n"
    if options:
        for short, long, use in options:
            flags = ", ".join(f for f in (short, long) if f)
            text += ("  %-30s %s" % (flags, use)).rstrip() + "\n"
        text += "\n"
    return text


def lookup(name: str) -> "Optional[str]":
    """The command's table name: exact, alias, or an unambiguous prefix (``xm li``)."""
    if name in COMMANDS:
        return name
    if name in ALIASES:
        sys.stderr.write(f"Command {name} is deprecated.  Please use xm {ALIASES[name]} instead.\n")
        return ALIASES[name]
    if len(name) > 1:
        matches = [c for c in COMMANDS if c.startswith(name)]
        if len(matches) == 1:
            return matches[0]
    return None


def _global_options(argv: list) -> "Tuple[Optional[str], list]":
    """``-c FILE`` / ``--config FILE`` / ``--config=FILE`` before the subcommand."""
    config_path = None
    while argv:
        arg = argv[0]
        if arg in ("-c", "--config"):
            if len(argv) < 2:
                raise ValueError(f"option {arg} requires an argument")
            config_path, argv = argv[1], argv[2:]
        elif arg.startswith("--config="):
            config_path, argv = arg.split("=", 1)[1], argv[1:]
        else:
            break
    return config_path, argv


def main(argv: "Optional[List[str]]" = None) -> int:
    """Run ``xm`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    try:
        config_path, argv = _global_options(argv)
    except ValueError as e:
        err.write(f"Error: {e}\n")
        out.write(short_help())
        return 1
    if not argv:
        out.write(short_help())
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd in ("-h", "--help", "help"):
        if cmd == "help" and args:
            cmd = args[0]
            if lookup(cmd) is None:
                return _unknown_command(cmd)
            out.write(command_help(lookup(cmd)))
        else:
            out.write(long_help())
        return 0
    name = lookup(cmd)
    if name is None:
        return _unknown_command(cmd)
    if "-h" in args or "--help" in args:
        out.write(command_help(name))
        return 0

    from xend.xm.commands import Context

    chosen: list = []

    def server():  # type: ignore[no-untyped-def]
        if not chosen:
            from xend.xm.client import resolve_server

            chosen.append(resolve_server(config_path))
        return chosen[0]

    ctx = Context(lambda: server().uri, config_path=config_path, server_config=server)
    return run_command(ctx, name, args)


def _unknown_command(cmd: str) -> int:
    if cmd in MISSING:
        sys.stderr.write(f"Error: xm {cmd} is not in this xm: {MISSING[cmd]}.\n")
        return 1
    sys.stderr.write(f"Error: Subcommand {cmd} not found!\n")
    sys.stdout.write(short_help())
    return 1


def run_command(ctx, name: str, args: list) -> int:
    """Run one command in ``ctx``; every error it raises becomes a message and a status."""
    from xend.xm.client import ClientError
    from xend.xm.commands import CommandError, UsageError

    module_name, function = COMMANDS[name][:2]
    try:
        __import__("xend.xm.commands." + module_name)
        run = getattr(sys.modules["xend.xm.commands." + module_name], function)
        status = run(ctx, args)
        ctx.out.flush()
        return status or 0
    except UsageError as e:
        return _fail(ctx, str(e), name)
    except CommandError as e:
        _fail(ctx, e.message, name if e.usage else None)
        return e.status
    except ClientError as e:
        return _fail(ctx, str(e))
    except (ValueError, OverflowError):
        return _fail(ctx, "Invalid argument.", name)
    except KeyboardInterrupt:
        ctx.out.write("Interrupted.\n")
        return 1
    except BrokenPipeError as e:
        if _stdout_is_broken(ctx):  # `xm list | head -1`: stop quietly
            return 1
        return _rpc_error(ctx, name, e)
    except Exception as e:  # noqa: BLE001 - mapped below, or reported as unexpected
        status = _rpc_error(ctx, name, e)
        if status is not None:
            return status
        import traceback

        ctx.err.write(f"Unexpected error: {type(e).__name__}: {e}\n")
        traceback.print_exc(file=ctx.err)
        return 1


def _stdout_is_broken(ctx) -> bool:
    """True if our output pipe is closed; then further output goes nowhere."""
    try:
        ctx.out.flush()
        return False
    except BrokenPipeError:
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, ctx.out.fileno())
            os.close(devnull)
        except (OSError, AttributeError, ValueError):
            pass
        return True


def _fail(ctx, message: str, usage_of=None) -> int:
    ctx.out.flush()
    ctx.err.write(f"Error: {message}\n")
    ctx.err.flush()
    if usage_of:
        ctx.out.write(command_help(usage_of))
    return 1


def _rpc_error(ctx, name: str, e: Exception):
    """Faults, protocol and connection errors (modules are only looked at if loaded)."""
    xc = sys.modules.get("xmlrpc.client")
    if xc is not None:
        if isinstance(e, xc.Fault):
            if e.faultCode == 3:
                _fail(ctx, f"Domain '{e.faultString}' does not exist.")
                return 3
            return _fail(ctx, e.faultString, name)
        if isinstance(e, xc.ProtocolError):
            ctx.err.write(f"Xend has probably crashed!  ProtocolError({e.errcode}, {e.errmsg}).\n")
            return 1
    crashed = [sys.modules[m].HTTPException for m in ("http.client",) if m in sys.modules]
    crashed += [sys.modules[m].ExpatError for m in ("xml.parsers.expat",) if m in sys.modules]
    if crashed and isinstance(e, tuple(crashed)):
        ctx.err.write("Xend has probably crashed!  Invalid or missing HTTP status code.\n")
        return 1
    if isinstance(e, OSError):
        import os

        if isinstance(e, PermissionError) and os.geteuid() != 0:
            return _fail(ctx, "Most commands need root access. Please try again as root.")
        reason = e.strerror or str(e) or type(e).__name__
        return _fail(ctx, f"Unable to connect to xend: {reason}. Is xend running?")
    return None


if __name__ == "__main__":
    sys.exit(main())
