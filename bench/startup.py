#!/usr/bin/env python3
"""``xend start`` until answering, and ``xend status``: medians of RUNS runs.

xend: wall time of ``xend start`` (which returns once the server reports ready) plus the first
XML-RPC call (``xend.node.info``) that succeeds; then ``xend status`` against the running
daemon; then ``xend stop``. Every path is in a temp dir; simulated hypervisor.

Anchor (when libvirt is installed, run as root): libvirtd started the way ``bench/peers``
starts it, timed from spawn until ``virsh -c test+unix:///default list --all`` succeeds, less
the median time of that same virsh command against a warm libvirtd (virsh's own cost, which the
xend figure has no counterpart for: its client call is in-process). The libvirtd that
``bench/peers`` started is stopped for this and started again afterwards.
``xend status`` is shown beside ``python3 -I -c 'import xmlrpc.client'``.

    python3 bench/startup.py [--runs 10]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (REPO, Fleet, Row, console_script, libvirtd_exe, libvirtd_pid,  # noqa: E402
                          median, python_exe, standalone, stop_pid, virsh, wall)

LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"


def xend_times(runs: int) -> tuple:
    fleet = Fleet()
    x = fleet.xend
    cmd = console_script("xend") + ["-c", str(x.config)]
    env = x.env
    starts: List[float] = []
    statuses: List[float] = []
    try:
        for i in range(runs + 1):            # the first run warms the page cache; not counted
            t0 = time.perf_counter()
            r = subprocess.run(cmd + ["start"], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"xend start failed: {r.stderr}\n{x.log_tail()}")
            proxy = x.proxy(timeout=10)
            while True:
                try:
                    proxy.xend.node.info()
                    break
                except OSError:
                    time.sleep(0.002)
            t = time.perf_counter() - t0
            for _ in range(3):
                statuses.append(wall(cmd + ["status"], env=env))
            r = subprocess.run(cmd + ["stop"], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                x.kill()
            if i:
                starts.append(t)
    finally:
        x.kill()
        fleet.stop()
    return median(starts), median(statuses[3:] or statuses)


def _sock_answers() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(LIBVIRT_SOCK)
        return True
    except OSError:
        return False
    finally:
        s.close()


def libvirtd_start_times(runs: int) -> Optional[float]:
    exe, vsh = libvirtd_exe(), virsh()
    if not exe or not vsh or os.geteuid() != 0:
        return None
    peers = REPO / "bench" / "peers"
    had = libvirtd_pid()
    if had:
        stop_pid(had)
        subprocess.run(["sh", str(peers), "stop"], capture_output=True)
    list_cmd = [vsh, "-c", "test+unix:///default", "list", "--all"]
    times: List[float] = []
    warm: List[float] = []
    try:
        for i in range(runs + 1):
            while _sock_answers():            # the previous one is really gone
                time.sleep(0.01)
            t0 = time.perf_counter()
            p = subprocess.Popen([exe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL)
            try:
                while not _sock_answers():
                    if p.poll() is not None:
                        raise RuntimeError(f"libvirtd exited with {p.returncode}")
                    time.sleep(0.002)
                while subprocess.run(list_cmd, capture_output=True).returncode != 0:
                    time.sleep(0.002)
                t = time.perf_counter() - t0
                for _ in range(3):
                    warm.append(wall(list_cmd))
            finally:
                stop_pid(p.pid)
                p.wait()
            if i:
                times.append(t)
    finally:
        if had:
            subprocess.run(["sh", str(peers)], capture_output=True)
    return median(times) - median(warm)


def run(runs: int = 10) -> List[Row]:
    start, status = xend_times(runs)
    lv = libvirtd_start_times(runs)
    floor = median([wall([python_exe(), "-I", "-c", "import xmlrpc.client"])
                    for _ in range(runs)])
    rows = [Row("startup", f"xend start -> answering (median of {runs})", start * 1e3, "ms",
                "libvirtd start -> answering" if lv is not None else "", 
                None if lv is None else lv * 1e3, ("<=", 2.5),
                "" if lv is not None else "libvirtd not installed (run bench/peers as root)"),
            Row("startup", f"xend status (median of {3 * runs})", status * 1e3, "ms",
                "python3 -I -c 'import xmlrpc.client'", floor * 1e3)]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    standalone(lambda: run(a.runs))


if __name__ == "__main__":
    main()
