#!/usr/bin/env python3
"""Xen-API ``VM.get_all_records`` calls/s with 1 and 1000 VMs, beside ``xend.domains(True)``.

One xend (simulated hypervisor, its state on tmpfs, guests of 1 MiB made through XML-RPC;
N VMs = Domain-0 + N-1 guests, all running). Both calls go over a unix socket, each client
its own process with a keep-alive connection calling for ``--seconds`` after a warm-up
(``bench/xmlrpc_calls.py``'s ``measure``), one client:

- ``VM.get_all_records(session)`` on the Xen-API socket (``xen-api-unix-path``, the default
  ``((unix))`` entry): every VM's record, about 45 fields each;
- the anchor, measured in the same run on the same xend: ``xend.domains(True)`` on the legacy
  XML-RPC socket, the SXP record of every running domain (what ``xm list -l`` asks for).

    python3 bench/xenapi_calls.py [--seconds 3] [--counts 1 1000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Fleet, Row, machine, print_table  # noqa: E402
from bench.xmlrpc_calls import measure  # noqa: E402
from tests.daemon_helpers import server_proxy  # noqa: E402


def login(path: str) -> str:
    result = getattr(server_proxy(path), "session.login_with_password")("root", "", "1.0",
                                                                        "bench")
    assert result["Status"] == "Success", result
    return result["Value"]


def measure_at(fleet: Fleet, n: int, seconds: float, clients: int = 1) -> List[Row]:
    fleet.grow(n - 1)
    xenapi = str(fleet.xend.paths["xen-api-unix-path"])
    session = login(xenapi)
    count = len(server_proxy(xenapi).VM.get_all(session)["Value"])
    assert count == n, (count, n)
    api = measure(xenapi, "VM.get_all_records", (session,), clients, seconds)
    legacy = measure(fleet.socket, "xend.domains", (True,), clients, seconds)
    vms = f"{n} VM{'s' if n > 1 else ''}"
    return [
        Row("xenapi", f"VM.get_all_records, {vms}: calls/s", api["rate"], "/s",
            f"xend.domains(True), {vms}", legacy["rate"], (">=", 0.5)),
        Row("xenapi", f"VM.get_all_records, {vms}: p99", api["p99"], "ms",
            "xend.domains(True) p99", legacy["p99"]),
    ]


def run(counts: Sequence[int] = (1, 1000), seconds: float = 3.0,
        fleet: Optional[Fleet] = None) -> List[Row]:
    own = fleet is None
    fleet = fleet or Fleet()
    rows: List[Row] = []
    try:
        for n in sorted(counts):
            rows += measure_at(fleet, n, seconds)
    finally:
        if own:
            fleet.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 1000])
    a = ap.parse_args()
    print(machine(), flush=True)
    rows = run(a.counts, a.seconds)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
