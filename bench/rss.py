#!/usr/bin/env python3
"""Resident memory (VmRSS of /proc/PID/status) of the xend server process with 1 and 1000
domains (Domain-0 counted; guests of 1 MiB created through XML-RPC, each listed once so that
every record has been built), beside libvirtd's with its test driver grown to the same number
of running domains (when libvirtd runs: ``bench/peers``).

    python3 bench/rss.py [--counts 1 1000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (Fleet, LibvirtTestDomains, Row, libvirtd_pid,  # noqa: E402
                          libvirtd_running, rss_kib, standalone)


def measure_at(fleet: Fleet, lv: Optional[LibvirtTestDomains], n: int) -> List[Row]:
    fleet.grow(n - 1)
    proxy = fleet.xend.proxy(timeout=120)
    for _ in range(3):   # steady state: every listing path run, garbage made and freed
        proxy.xend.domains_with_state(True, "all", False)
        proxy.xend.node.info()
    time.sleep(0.5)
    xend_mib = rss_kib(fleet.pid()) / 1024
    lv_mib = None
    if lv is not None:
        lv.grow(n)
        pid = libvirtd_pid()
        lv_mib = rss_kib(pid) / 1024 if pid else None
    return [Row("rss", f"xend RSS, {n} domain{'s' if n > 1 else ''}", xend_mib, "MiB",
                "libvirtd RSS (test driver, same domains)" if lv is not None else "", lv_mib,
                ("<=", 1.5) if n >= 1000 else None)]


def run(counts=(1, 1000), fleet: Optional[Fleet] = None,
        lv: Optional[LibvirtTestDomains] = None) -> List[Row]:
    own = fleet is None
    fleet = fleet or Fleet()
    own_lv = lv is None and libvirtd_running()
    if own_lv:
        lv = LibvirtTestDomains(fleet.tmp)
    rows: List[Row] = []
    try:
        for n in counts:
            rows += measure_at(fleet, lv, n)
    finally:
        if own_lv and lv is not None:
            lv.close()
        if own:
            fleet.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 1000])
    a = ap.parse_args()
    standalone(lambda: run(a.counts))


if __name__ == "__main__":
    main()
