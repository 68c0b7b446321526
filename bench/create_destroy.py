#!/usr/bin/env python3
"""Create + destroy cycles per second.

xend: one client over XML-RPC on the unix socket, each cycle ``xend.domain.create`` of a 1 MiB
guest, ``xend.domain.unpause`` (what ``xm create`` does: create leaves it paused) and
``xend.domain.destroy``; simulated hypervisor with its state on tmpfs (as a real hypervisor's
and xenstored's are in RAM), then again with its state on disk.

Anchor (when libvirtd runs: ``bench/peers``): one ``virsh`` session on
``test+unix:///default``, each cycle ``define FILE``, ``start``, ``destroy``, ``undefine``.

    python3 bench/create_destroy.py [--cycles 50]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (Fleet, LibvirtTestDomains, Row, libvirtd_running,  # noqa: E402
                          standalone, test_domain_xml)


def xend_rate(fleet: Fleet, cycles: int) -> float:
    fleet.start()
    proxy = fleet.xend.proxy(timeout=120)

    def cycle(name: str) -> None:
        proxy.xend.domain.create(fleet.sxp(name))
        proxy.xend.domain.unpause(name)
        proxy.xend.domain.destroy(name)

    for i in range(3):
        cycle(f"warm{i}")
    t0 = time.perf_counter()
    for i in range(cycles):
        cycle(f"cycle{i}")
    return cycles / (time.perf_counter() - t0)


def libvirt_rate(cycles: int) -> Optional[float]:
    if not libvirtd_running():
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bench-lv-"))
    lv = LibvirtTestDomains(tmp)
    try:
        lv.grow(1)                            # open the session

        def batch(prefix: str, n: int) -> List[str]:
            cmds = []
            for i in range(n):
                name = f"{prefix}{i}"
                path = tmp / f"{name}.xml"
                path.write_text(test_domain_xml(name))
                cmds += [f"define {path}", f"start {name}", f"destroy {name}",
                         f"undefine {name}"]
            return cmds

        lv._send(batch("warm", 3))
        cmds = batch("cycle", cycles)
        t0 = time.perf_counter()
        lv._send(cmds)
        return cycles / (time.perf_counter() - t0)
    finally:
        lv.close()


def run(cycles: int = 50) -> List[Row]:
    rates = {}
    for in_ram in (True, False):
        fleet = Fleet(sim_in_ram=in_ram)
        try:
            rates[in_ram] = xend_rate(fleet, cycles if in_ram else max(10, cycles // 4))
        finally:
            fleet.stop()
    lv = libvirt_rate(cycles * 4)
    anchor = "libvirt define/start/destroy/undefine cycles" if lv is not None else ""
    return [Row("create+destroy", "xend create/unpause/destroy cycles", rates[True], "/s",
                anchor, lv, (">=", 0.25), "simulated hypervisor state on tmpfs"),
            Row("create+destroy", "the same, simulator state on disk", rates[False], "/s",
                anchor, lv, None,
                "simulated hypervisor state on ext4: every xenstore write a renamed file")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=50)
    a = ap.parse_args()
    standalone(lambda: run(a.cycles))


if __name__ == "__main__":
    main()
