"""``xend-sim``: look at and poke the simulated hypervisor from outside xend.

    xend-sim --state-path DIR list
    xend-sim --state-path DIR crash DOMID
    xend-sim --state-path DIR devices DOMID

It works on the state directory directly (as the hypervisor would), whether xend runs or not.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .errors import HypervisorError
from .hypervisor.simulated import DEFAULT_STATE_PATH, SimulatedHypervisor


def _list(hv: SimulatedHypervisor, _args: argparse.Namespace) -> None:
    names = hv.domain_names()
    print("%-5s %-30s %8s %5s %6s %9s" % ("ID", "Name", "Mem(MiB)", "VCPUs", "State", "Time(s)"))
    for info in hv.list_domains():
        print("%-5d %-30s %8d %5d %6s %9.1f" % (
            info.domid, names.get(info.domid, "?"), info.mem_kib // 1024, info.online_vcpus,
            info.state_string, info.cpu_time_ns / 1e9))


def _crash(hv: SimulatedHypervisor, args: argparse.Namespace) -> None:
    try:
        hv.crash(args.domid)
    except HypervisorError as exc:
        raise HypervisorError(exc.errno, f"domain {args.domid}: {exc.message}") from None


def _devices(hv: SimulatedHypervisor, args: argparse.Namespace) -> None:
    """What the guest sees: its disks and its network interfaces."""
    try:
        seen = hv.guest_devices(args.domid)
    except HypervisorError as exc:
        raise HypervisorError(exc.errno, f"domain {args.domid}: {exc.message}") from None
    for kind in ("disks", "nics"):
        print(f"{kind}: {' '.join(seen[kind])}".rstrip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xend-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--state-path", default=DEFAULT_STATE_PATH,
                        help="the simulated hypervisor's state directory "
                             "(xend option simulated-state-path; default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the domains").set_defaults(run=_list)
    crash = commands.add_parser("crash", help="make a guest crash (kernel panic)")
    crash.add_argument("domid", type=int)
    crash.set_defaults(run=_crash)
    devices = commands.add_parser("devices", help="the disks and nics a guest sees")
    devices.add_argument("domid", type=int)
    devices.set_defaults(run=_devices)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        hv = SimulatedHypervisor(args.state_path, create=False)
    except HypervisorError as exc:
        print(f"xend-sim: {exc.message}", file=sys.stderr)
        return 1
    try:
        args.run(hv, args)
    except HypervisorError as exc:
        print(f"xend-sim: {exc.message}", file=sys.stderr)
        return 1
    finally:
        hv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
