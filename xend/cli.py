"""The ``xend`` command: start|stop|restart|reload|status|check-config (reference section 3.2)."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

USAGE = ("usage: xend [-c FILE|--config FILE] {start|stop|reload|restart|status|check-config}\n"
         "       xend install-files [--root DIR]\n"
         "       xend [COMMAND] --help")

# name: (arguments, summary, more detail, exit status)
SUBCOMMANDS = {
    "start": ("", "start the daemon in the background",
              "Returns once its servers answer, or says why they did not. A running xend is "
              "left alone.",
              "0 running (also when it already was), 1 it failed to start"),
    "trace_start": ("", "the same as start", "The original also traced every Python line.",
                    "as start"),
    "stop": ("", "stop the daemon",
             "SIGTERM to the server, then waits for it and its watchdog to go. Domains keep "
             "running.",
             "0 stopped (also when it was not running), 1 it did not stop in time"),
    "restart": ("", "stop, then start", "", "as start"),
    "reload": ("", "make the running daemon re-read its config file (SIGHUP)", "",
               "0 (also when xend is not running)"),
    "status": ("", "tell by the exit status whether the daemon runs", "Prints nothing.",
               "0 running, 1 dead but its pid file exists, 3 not running, 4 unknown "
               "(unreadable pid file or config file)"),
    "check-config": ("", "check the config file; print every option's value and source",
                     "Every error of the file is reported at once, with its line.",
                     "0 valid, 1 invalid"),
    "install-files": ("[--root DIR]", "lay the shipped files into DIR (default /)",
                      "The config, the init script, the systemd unit, logrotate, "
                      "/etc/default/xend, the network and vif scripts, example guest configs, "
                      "the man pages, bash completion, and (for a virtual environment) "
                      "/usr/local/sbin/xend and xm. A file you edited is kept; the new version "
                      "is written beside it as FILE.dist.",
                      "0 done, 1 error"),
}
COMMANDS = tuple(name for name in SUBCOMMANDS if name != "install-files")
EXIT_USAGE = 2


def full_help() -> str:
    """``xend --help``: every subcommand, the options, the environment, the exit codes."""
    lines = [USAGE, "", "The Xen node control daemon (the simulated hypervisor where the host "
             "has no Xen).", "", "commands:"]
    lines += [f"  {name:<14} {summary}" for name, (_a, summary, _d, _s) in SUBCOMMANDS.items()]
    lines += ["", "options:",
              "  -c FILE, --config FILE  the xend-config.sxp to use (default $XEND_CONFIG,",
              "                          else /etc/xen/xend-config.sxp)",
              "  -h, --help              this help; COMMAND --help: that command's",
              "", "environment:",
              "  XEND_CONFIG     the config file when -c is not given",
              "  XEND_DEBUG      1: start stays in the foreground, output to the terminal",
              "  XEND_DAEMONIZE  0: start stays in the foreground",
              "", "exit status: 0 success, 1 failure, 2 bad usage; status: 0 running, "
              "3 not running.", "See xend(8) and xend-config.sxp(5)."]
    return "\n".join(lines) + "\n"


def command_help(name: str) -> str:
    import textwrap

    args, summary, detail, status = SUBCOMMANDS[name]
    config = "" if name == "install-files" else "[-c FILE|--config FILE] "
    text = (summary[0].upper() + summary[1:] + ". " + detail).strip()
    return (f"usage: xend {config}{name} {args}".rstrip() + "\n\n" + textwrap.fill(text, 78)
            + "\n\n" + textwrap.fill("exit status: " + status, 78, subsequent_indent="  ")
            + "\n")


def usage_error(message: str) -> int:
    print(f"xend: {message}\n{USAGE}", file=sys.stderr)
    return EXIT_USAGE


def parse_args(argv: List[str]):
    """(config path or None, command or None); raises ValueError for a bad flag."""
    config = None
    rest: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-c", "--config"):
            if i + 1 >= len(argv):
                raise ValueError(f"{a} needs a FILE")
            config = argv[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            config = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if len(rest) > 1:
        raise ValueError("too many arguments: " + " ".join(rest))
    return config, (rest[0] if rest else None)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install-files"]:
        return install_files_command(argv[1:])
    asked_help = any(a in ("-h", "--help") for a in argv)
    try:
        config, command = parse_args([a for a in argv if a not in ("-h", "--help")])
    except ValueError as e:
        return usage_error(str(e))
    if command is None and not asked_help:
        print(USAGE)
        return 1
    if command in (None, "help"):
        print(full_help(), end="")
        return 0
    if command not in SUBCOMMANDS:
        return usage_error(f"not an option: {command}")
    if asked_help:
        print(command_help(command), end="")
        return 0
    for var in ("XEND_DEBUG", "XEND_DAEMONIZE"):
        if var in os.environ:
            print(f"{var} = {os.environ[var]}")

    from xend.errors import ConfigError
    from xend.options import load_options

    config = resolve_config(config)
    if config is None:
        return 4 if command == "status" else 1
    try:
        opts = load_options(config)
    except ConfigError as e:
        for warning in getattr(e, "warnings", []):
            print(f"Warning: {warning}", file=sys.stderr)
        print(f"Error: invalid xend configuration:\n{e}", file=sys.stderr)
        return 4 if command == "status" else 1  # LSB: status unknown
    for warning in opts.warnings:
        print(f"Warning: {warning}", file=sys.stderr)

    if command == "check-config":
        from xend.options import render_check_config
        for note in opts.unsupported:
            print(f"Warning: {note}", file=sys.stderr)
        print(render_check_config(opts), end="")
        return 0

    from xend.daemon import ROOT_BANNER, Daemon, needs_root
    if needs_root(opts):
        print(ROOT_BANNER, file=sys.stderr)
        return 1

    daemon = Daemon(opts, opts.path, make_server=make_node, load_options=load_options)
    action = {"start": daemon.start, "trace_start": daemon.start, "stop": daemon.stop,
              "restart": daemon.restart, "reload": daemon.reload, "status": daemon.status}
    return action[command]()


def resolve_config(given: Optional[str]) -> Optional[str]:
    """The config file as an absolute path, fixed at start: the daemon runs in /, so a
    relative -c FILE (or XEND_CONFIG) read again at reload would be another file. A file named
    by -c or XEND_CONFIG must exist (None, with the error printed); only the default may be
    missing (the original's warning follows)."""
    from xend.options import DEFAULT_CONFIG_PATH, config_path
    path = os.path.abspath(config_path(given))
    if path != DEFAULT_CONFIG_PATH and not os.path.exists(path):
        print(f"Error: config file {path} does not exist", file=sys.stderr)
        return None
    return path


def install_files_command(args: List[str]) -> int:
    from xend.install import install_files
    root = "/"
    if any(a in ("-h", "--help") for a in args):
        print(command_help("install-files"), end="")
        return 0
    if args[:1] == ["--root"] and len(args) == 2:
        root = args[1]
    elif len(args) == 1 and args[0].startswith("--root="):
        root = args[0].split("=", 1)[1]
    elif args:
        return usage_error("install-files takes only --root DIR")
    try:
        for line in install_files(root):
            print(line)
    except OSError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


def make_node(opts, config_path):
    from xend.node import Node
    return Node(opts, config_path)


if __name__ == "__main__":
    sys.exit(main())
