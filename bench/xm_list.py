#!/usr/bin/env python3
"""``xm list`` whole-command wall time with 1, 100 and 1000 domains (Domain-0 counted).

xend: simulated hypervisor, guests of 1 MiB created through XML-RPC on a host big enough.
``xm`` reaches it through ``XM_SERVER=httpu://SOCKET`` (as it reaches the default socket: no
config file to read). Each figure is the median of RUNS runs, interleaved with its anchors:

- ``python3 -I -c 'import xmlrpc.client'`` - the floor for any Python client;
- ``virsh -c test+unix:///default list --all`` through libvirtd, the test driver grown to the
  same number of domains (a held virsh session keeps them; see bench/common.py);
- ``virsh -c test:///FILE list --all`` - the test driver in-process, no daemon, FILE a node
  description with the same number of running domains.

    python3 bench/xm_list.py [--runs 10] [--counts 1 100 1000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (Fleet, LibvirtTestDomains, Row, console_script,  # noqa: E402
                          interleaved_medians, libvirtd_running, python_exe, standalone,
                          test_node_xml, virsh)

FLOOR = "python3 -I -c 'import xmlrpc.client'"


def measure_at(fleet: Fleet, lv: Optional[LibvirtTestDomains], n: int, runs: int) -> List[Row]:
    """Rows for ``xm list`` with ``n`` domains; grows the fleet (and libvirt) to n."""
    fleet.grow(n - 1)
    xm = (console_script("xm") + ["list"], fleet.xm_env)
    floor = ([python_exe(), "-I", "-c", "import xmlrpc.client"], None)
    cmds = [xm, floor]
    labels = ["xm", "floor"]
    if virsh():
        node = Path(tempfile.mkdtemp(prefix="bench-node-")) / "node.xml"
        node.write_text(test_node_xml(n))
        cmds.append(([virsh(), "-c", f"test://{node}", "list", "--all"], None))
        labels.append("test")
    if lv is not None:
        lv.grow(n)
        cmds.append(([virsh(), "-c", lv.URI, "list", "--all"], None))
        labels.append("unix")
    t = dict(zip(labels, (x * 1e3 for x in interleaved_medians(cmds, runs))))
    fig = f"xm list, {n} domain{'s' if n > 1 else ''}"
    rows = [Row("xm list", fig, t["xm"], "ms", FLOOR, t["floor"],
                ("<=", 1.1) if n == 1 else None)]
    if "unix" in t:
        rows.append(Row("xm list", fig, t["xm"], "ms",
                        "virsh -c test+unix:///default list --all", t["unix"],
                        ("<=", 1.0) if n >= 1000 else None))
    if "test" in t:
        rows.append(Row("xm list", fig, t["xm"], "ms", "virsh -c test:///FILE list --all",
                        t["test"]))
    return rows


def run(counts=(1, 100, 1000), runs: int = 10, fleet: Optional[Fleet] = None,
        lv: Optional[LibvirtTestDomains] = None) -> List[Row]:
    own = fleet is None
    fleet = fleet or Fleet()
    own_lv = lv is None and libvirtd_running()
    if own_lv:
        lv = LibvirtTestDomains(fleet.tmp)
    rows: List[Row] = []
    try:
        for n in counts:
            rows += measure_at(fleet, lv, n, runs)
    finally:
        if own_lv and lv is not None:
            lv.close()
        if own:
            fleet.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 100, 1000])
    a = ap.parse_args()
    standalone(lambda: run(a.counts, a.runs))


if __name__ == "__main__":
    main()
