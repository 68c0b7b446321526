#!/usr/bin/env python3
"""XML-RPC calls/s and latency over a unix socket: xend against a bare stdlib server.

Starts a xend (simulated hypervisor, every path in a temp dir) and, as the anchor measured in
the same run, a bare ``SimpleXMLRPCDispatcher`` + ``ThreadingMixIn`` + ``UnixStreamServer`` in
its own process serving a trivial method. Each client is its own process with its own
keep-alive connection; it calls for ``--seconds`` after a short warm-up. Prints a table of
calls/s (all clients together) and p50/p99 latency per call.

    python3 bench/xmlrpc_calls.py [--seconds 3] [--clients 1 2 4] [--domains 0]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socketserver
import statistics
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon_helpers import UnixHTTPConnection, XendInstance  # noqa: E402

WARMUP = 0.3


# -- client ---------------------------------------------------------------------------------
class KeepAliveUnixTransport(xmlrpc.client.Transport):
    """One connection for the life of the transport (the stdlib's keep-alive, on AF_UNIX)."""

    def __init__(self, path: str):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        if self._connection[1] is None:
            self._connection = (host, UnixHTTPConnection(self.unix_path))
        return self._connection[1]


def client(path: str, method: str, params: tuple, seconds: float, start_at: float, out) -> None:
    proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                      transport=KeepAliveUnixTransport(path), allow_none=True)
    fn = getattr(proxy, method)
    while time.time() < start_at - WARMUP:
        time.sleep(0.005)
    while time.time() < start_at:
        fn(*params)
    lat = []
    end = start_at + seconds
    perf = time.perf_counter
    while time.time() < end:
        t0 = perf()
        fn(*params)
        lat.append(perf() - t0)
    out.put(lat)


def measure(path: str, method: str, params: tuple, clients: int, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 0.5 + WARMUP
    procs = [ctx.Process(target=client, args=(path, method, params, seconds, start_at, q))
             for _ in range(clients)]
    for p in procs:
        p.start()
    lat = []
    for _ in procs:
        lat += q.get(timeout=seconds + 60)
    for p in procs:
        p.join()
    lat.sort()
    return {"calls": len(lat), "rate": len(lat) / seconds,
            "p50": statistics.median(lat) * 1e3,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3}


# -- the anchor: a bare stdlib XML-RPC server on a unix socket ------------------------------
class AnchorHandler(SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False   # TCP_NODELAY fails on AF_UNIX
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:  # client_address is '' on AF_UNIX
        return "unix"


class AnchorServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer,
                   SimpleXMLRPCDispatcher):
    daemon_threads = True

    def __init__(self, path: str):
        self.logRequests = False
        SimpleXMLRPCDispatcher.__init__(self, allow_none=True, encoding=None)
        socketserver.UnixStreamServer.__init__(self, path, AnchorHandler)


def anchor_main(path: str, ready) -> None:
    srv = AnchorServer(path)
    srv.register_function(lambda detail=False: ["Domain-0"], "xend.domains")
    ready.set()
    srv.serve_forever()


# -- main -----------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--domains", type=int, default=0,
                    help="small domains to create in xend before measuring")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="xend-bench-"))
    xend = XendInstance(tmp / "xend")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    anchor_path = str(tmp / "anchor.sock")
    anchor = ctx.Process(target=anchor_main, args=(anchor_path, ready), daemon=True)
    anchor.start()
    ready.wait(10)
    xend.start()
    try:
        proxy = xend.proxy()
        kernel = tmp / "vmlinuz"
        kernel.write_bytes(b"\0" * 4096)
        for i in range(a.domains):
            image = ["image", ["linux", ["kernel", str(kernel)]]]
            proxy.xend.domain.create(["vm", ["name", f"bench{i}"], ["memory", "32"],
                                      ["vcpus", "1"], image])
            proxy.xend.domain.unpause(f"bench{i}")   # create leaves it paused
        ndom = len(proxy.xend.domains(False))
        xpath = str(xend.paths["xend-unix-xmlrpc-path"])
        cases = [("xend", xpath, "xend.domains", (False,), "xend.domains(False)"),
                 ("xend", xpath, "xend.domains", (True,), "xend.domains(True)"),
                 ("stdlib", anchor_path, "xend.domains", (False,), "trivial method")]
        print(f"XML-RPC over a unix socket; {a.seconds:g} s per row; xend lists {ndom} "
              f"running domain(s); python {sys.version.split()[0]}, {os.cpu_count()} cpus")
        print(f"{'server':8} {'call':22} {'clients':>7} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for n in a.clients:
            for server, path, method, params, label in cases:
                r = measure(path, method, params, n, a.seconds)
                print(f"{server:8} {label:22} {n:7d} {r['rate']:9.0f} {r['p50']:8.2f} "
                      f"{r['p99']:8.2f}", flush=True)
    finally:
        xend.stop()
        anchor.terminate()
        anchor.join(5)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
