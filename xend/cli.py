"""The ``xend`` command: start|stop|restart|reload|status|check-config (reference section 3.2)."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

USAGE = ("usage: xend [-c FILE|--config FILE] {start|stop|reload|restart|status|check-config}\n"
         "       xend install-files [--root DIR]")
COMMANDS = ("start", "trace_start", "stop", "restart", "reload", "status", "check-config")


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
        elif a in ("-h", "--help"):
            rest.append("help")
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
    try:
        config, command = parse_args(argv)
    except ValueError as e:
        print(f"xend: {e}\n{USAGE}", file=sys.stderr)
        return 1
    if command is None or command == "help":
        print(USAGE)
        return 1 if command is None else 0
    if command not in COMMANDS:
        print(f"not an option: {command}")
        return 1
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
    if args[:1] == ["--root"] and len(args) == 2:
        root = args[1]
    elif args:
        print(USAGE, file=sys.stderr)
        return 1
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
