#!/usr/bin/env python3
"""How xend scales with the number of domains: ``xm list -l``, resident memory,
create+destroy and an idle daemon's CPU with N domains, each beside libvirt's test driver
grown to the same N (when libvirtd runs: ``bench/peers``). ``xm list`` itself is
bench/xm_list.py's (its rows are measured at the same counts by ``python -m bench``).

- ``xm list -l``: whole-command wall time (every domain's full record), median of RUNS;
  anchor: one ``virsh -c test+unix:///default`` process running ``dumpxml`` of every domain
  (the full description of each, from the same daemon-held driver).
- RSS: VmRSS of the xend server process and of libvirtd, after listing everything three
  times.
- create+destroy: cycles per second with N domains present (bench/create_destroy.py's
  cycles, fewer of them).
- idle CPU: user + system time of the xend server process (all its threads) and of libvirtd
  over IDLE_SECONDS in which nobody calls either, as a percentage of one core (target: xend
  under 2 % at 10,000 domains).

    python3 bench/scale.py [--counts 1 100 1000 10000] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import create_destroy, rss  # noqa: E402
from bench.common import (Fleet, LibvirtTestDomains, Row, console_script,  # noqa: E402
                          interleaved_medians, libvirtd_pid, libvirtd_running, median,
                          standalone, virsh, wall)

IDLE_SECONDS = 5.0
IDLE_TARGET = 2.0                   # percent of one core, xend at the largest count
COUNTS = (1, 100, 1000, 10000)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pids: List[Optional[int]], seconds: float = IDLE_SECONDS) -> List[Optional[float]]:
    """Percent of a core each process used over ``seconds`` of nobody calling it."""
    start = [cpu_seconds(p) if p else None for p in pids]
    time.sleep(seconds)
    return [None if p is None or s is None else (cpu_seconds(p) - s) / seconds * 100
            for p, s in zip(pids, start)]


def dumpxml_all(lv: LibvirtTestDomains) -> float:
    """Seconds for one virsh process to print every domain's XML."""
    names = ["test"] + lv.names
    script = Path(tempfile.mkdtemp(prefix="bench-dumpxml-")) / "cmds"
    script.write_text("".join(f"dumpxml {n}\n" for n in names))
    with open(script) as f:
        return wall([virsh(), "-q", "-c", lv.URI], stdin=f)


def measure_at(fleet: Fleet, lv: Optional[LibvirtTestDomains], n: int, runs: int,
               largest: bool = False) -> List[Row]:
    """The scaling rows at ``n`` domains (the fleet and libvirt grown to n)."""
    fleet.grow(n - 1)
    if lv is not None:
        lv.grow(n)
    label = f"{n} domain{'s' if n > 1 else ''}"
    xm_long = (console_script("xm") + ["list", "-l"], fleet.xm_env)
    long_ms = interleaved_medians([xm_long], max(3, runs // 2), warmup=1)[0] * 1e3
    anchor_ms = None
    if lv is not None:
        anchor_ms = median([dumpxml_all(lv) for _ in range(max(3, runs // 2))]) * 1e3
    rows = [Row("scale", f"xm list -l, {label}", long_ms, "ms",
                "virsh dumpxml of every domain" if lv is not None else "", anchor_ms)]
    rows += rss.measure_at(fleet, lv, n)
    cycles = 20 if n >= 1000 else 50
    xend_rate = create_destroy.xend_rate(fleet, cycles)
    lv_rate = create_destroy.libvirt_rate(cycles * 2) if lv is not None else None
    rows.append(Row("scale", f"create+destroy cycles, {label}", xend_rate, "/s",
                    "libvirt define/start/destroy/undefine" if lv is not None else "",
                    lv_rate))
    xend_cpu, lv_cpu = idle_cpu([fleet.pid(), libvirtd_pid() if lv is not None else None])
    rows.append(Row("scale", f"idle CPU, {label}", xend_cpu, "%",
                    "libvirtd idle CPU" if lv is not None else "", lv_cpu,
                    ("<=", IDLE_TARGET) if largest else None, target_on="value"))
    return rows


def run(counts=COUNTS, runs: int = 5) -> List[Row]:
    fleet = Fleet()
    lv = LibvirtTestDomains(fleet.tmp) if libvirtd_running() else None
    rows: List[Row] = []
    try:
        for n in counts:
            rows += measure_at(fleet, lv, n, runs, largest=n == max(counts))
    finally:
        if lv is not None:
            lv.close()
        fleet.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    standalone(lambda: run(a.counts, a.runs))


if __name__ == "__main__":
    main()
