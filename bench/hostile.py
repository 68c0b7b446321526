#!/usr/bin/env python3
"""The probes of issue 16 ("reliability and security, round 2"), as figures.

    python3 bench/hostile.py [--only headers bodies trickle config race] [--xend-tree DIR]

* headers: 16 connections each sending a request with up to 30 MB of headers to the HTTP and
  the XML-RPC unix sockets; the xend server's peak RSS (sampled) above its idle RSS.
* bodies:  63 connections each sending a 16 MiB XML-RPC body, held open; peak RSS above idle,
  and what is still held 2 s after they closed.
* trickle: 64 connections trickling one byte every 10 s into the TCP XML-RPC port, 16 into
  the relocation port, 64 into the unix XML-RPC socket; whether ``xm list`` (unix socket)
  answers meanwhile, and when xend cut the tricklers.
* config:  time to load a 1 MB and a 100 MB xend-config.sxp (a 120 s cap), and what 100,000
  nested parentheses give.
* race:    ``xend.domain.start`` and ``xend.domain.delete`` of one managed domain at the same
  moment, 50 times: how often both succeeded.

``--xend-tree DIR`` runs the daemons (and the config loads) from another checkout of the
package (e.g. ``git archive <commit> | tar -x -C DIR``), for a before/after comparison.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon_helpers import XendInstance, free_port  # noqa: E402
from tests.flood_helpers import (MIB, RssSampler, body_flood, header_flood,  # noqa: E402
                                 in_parallel, open_tricklers, rss_mib, unix_connect)

ALL = ("headers", "bodies", "trickle", "config", "race")


def start_xend(root: Path, extra: str, env_tree: Optional[str]) -> XendInstance:
    x = XendInstance(root, extra=extra)
    if env_tree:
        os.environ["PYTHONPATH"] = env_tree
    x.start()
    if env_tree:
        where = subprocess.run([sys.executable, "-c", "import xend; print(xend.__file__)"],
                               capture_output=True, text=True).stdout.strip()
        assert where.startswith(env_tree), f"xend would come from {where}"
    return x


# -- headers ------------------------------------------------------------------------------------
def probe_headers(tmp: Path, tree: Optional[str]) -> List[str]:
    out = []
    x = start_xend(tmp / "headers", "(xend-unix-server yes)", tree)
    try:
        pid = x.pid()
        for name, path in (("HTTP", x.paths["xend-unix-path"]),
                           ("XML-RPC", x.paths["xend-unix-xmlrpc-path"])):
            idle = rss_mib(pid)
            with RssSampler(pid) as sampler:
                results = in_parallel(16, lambda: header_flood(lambda: unix_connect(str(path))))
            statuses = sorted(set(results))
            out.append(f"headers {name}: 16 x 30 MB of headers: peak RSS +{sampler.peak - idle:.0f}"
                       f" MiB (idle {idle:.0f} MiB); replies {statuses}")
        out.append(f"headers: xend still answers: {x.answering()}")
    finally:
        x.stop()
        x.kill()
    return out


# -- bodies -------------------------------------------------------------------------------------
def probe_bodies(tmp: Path, tree: Optional[str]) -> List[str]:
    x = start_xend(tmp / "bodies", "", tree)
    out = []
    try:
        pid = x.pid()
        path = str(x.paths["xend-unix-xmlrpc-path"])
        for size in (16 * MIB, MIB):
            idle = rss_mib(pid)
            with RssSampler(pid) as sampler:
                held, cut = body_flood(lambda: unix_connect(path), size, 63)
                time.sleep(1)
            for s in held:
                s.close()
            time.sleep(2)
            after = rss_mib(pid)
            out.append(f"bodies: 63 x {size // MIB} MiB XML-RPC bodies: peak RSS "
                       f"+{sampler.peak - idle:.0f} MiB (idle {idle:.0f} MiB), "
                       f"+{after - idle:.0f} MiB 2 s after they closed; {len(held)} sent "
                       f"whole, {cut} cut off; xend answers: {x.answering()}")
    finally:
        x.stop()
        x.kill()
    return out


# -- trickle ------------------------------------------------------------------------------------
def probe_trickle(tmp: Path, tree: Optional[str], seconds: float = 60.0,
                  interval: float = 10.0) -> List[str]:
    rpc, rel = free_port(), free_port()
    x = start_xend(tmp / "trickle", (
        "(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address 127.0.0.1)"
        f"(xend-tcp-xmlrpc-server-port {rpc})(xend-relocation-server yes)"
        f"(xend-relocation-address 127.0.0.1)(xend-relocation-port {rel})"), tree)
    out = []
    try:
        for label, make, count, first in (
                ("TCP XML-RPC", lambda: socket.create_connection(("127.0.0.1", rpc), 30), 64,
                 b"POST /RPC2 HTTP/1.1\r\n"),
                ("relocation", lambda: socket.create_connection(("127.0.0.1", rel), 30), 16,
                 b"("),
                ("unix XML-RPC", lambda: unix_connect(str(x.paths["xend-unix-xmlrpc-path"])), 64,
                 b"POST /RPC2 HTTP/1.1\r\n")):
            socks = open_tricklers(make, first, count)
            alive = {id(s): True for s in socks}
            cut_at: List[float] = []
            t0 = time.monotonic()
            answered = asked = 0
            next_byte = t0 + interval
            while time.monotonic() - t0 < seconds:
                r = x.xm("list", timeout=30)
                asked += 1
                answered += r.returncode == 0 and "Domain-0" in r.stdout
                if time.monotonic() >= next_byte:
                    next_byte += interval
                    for s in socks:
                        if alive[id(s)]:
                            try:
                                s.sendall(b"a")
                            except OSError:
                                alive[id(s)] = False
                                cut_at.append(time.monotonic() - t0)
                time.sleep(2)
            for s in socks:
                s.close()
            still = sum(alive.values())
            out.append(f"trickle {label}: {len(socks)} tricklers; xm list answered {answered}/"
                       f"{asked} in {seconds:.0f} s; {still} still connected at the end"
                       + (f"; the others cut after {min(cut_at):.0f}-{max(cut_at):.0f} s"
                          if cut_at else ""))
    finally:
        x.stop()
        x.kill()
    return out


# -- config -------------------------------------------------------------------------------------
LOAD = ("import sys, time\nfrom xend import options\nt = time.perf_counter()\n"
        "try:\n    options.load_options(sys.argv[1])\n    what = 'loaded'\n"
        "except Exception as e:\n    what = type(e).__name__ + ': ' + str(e)[:150]\n"
        "print('%.2f s, %s' % (time.perf_counter() - t, what))\n")


def load_time(path: Path, tree: Optional[str], cap: float = 120) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = tree or str(REPO)
    try:
        r = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True,
                           text=True, timeout=cap, env=env, cwd=tree or str(REPO))
        return (r.stdout.strip() or r.stderr.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return f"> {cap:.0f} s (stopped)"


def config_file(path: Path, size: int) -> Path:
    line = b"(xend-port 8000)\n"
    with open(path, "wb") as f:
        f.write(line * (size // len(line)))
    return path


def probe_config(tmp: Path, tree: Optional[str]) -> List[str]:
    out = []
    for label, size in (("1 MB", 10 ** 6), ("100 MB", 10 ** 8)):
        p = config_file(tmp / f"config-{label.replace(' ', '')}.sxp", size)
        out.append(f"config {label}: {load_time(p, tree)}")
        p.unlink()
    nested = tmp / "nested.sxp"
    nested.write_text("(" * 100000 + ")" * 100000)
    out.append(f"config 100,000 nested parentheses: {load_time(nested, tree)}")
    return out


# -- race ---------------------------------------------------------------------------------------
DOMAIN = ["vm", ["name", "racer"], ["memory", "16"], ["vcpus", "1"],
          ["image", ["linux", ["kernel", sys.executable]]]]


def probe_race(tmp: Path, tree: Optional[str], tries: int = 50) -> List[str]:
    """Each try with its own domain name, so that what one try leaves behind does not get
    in the way of the next."""
    x = start_xend(tmp / "race", "", tree)
    both = unlisted = 0
    try:
        proxy = x.proxy()
        for n in range(tries):
            name = f"racer{n}"
            config = [DOMAIN[0], ["name", name]] + DOMAIN[2:]
            proxy.xend.domain.new(config)
            barrier = threading.Barrier(2)
            results: Dict[str, tuple] = {}

            def call(op: str, *args: object) -> None:
                method = getattr(x.proxy().xend.domain, op)
                barrier.wait()
                try:
                    results[op] = ("ok", method(*args))
                except xmlrpc.client.Fault as e:
                    results[op] = ("fault", e.faultString)

            threads = [threading.Thread(target=call, args=("start", name, False)),
                       threading.Thread(target=call, args=("delete", name))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if results["start"][0] == "ok" and results["delete"][0] == "ok":
                both += 1
                unlisted += name not in proxy.xend.domains_with_state(False, "all", False)
        time.sleep(3)           # let an orphan be adopted
        names = proxy.xend.domains_with_state(False, "all", False)
        return [f"race: start and delete both succeeded {both}/{tries} (right after: running "
                f"but not listed {unlisted}); domains listed at the end besides Domain-0: "
                f"{len(names) - 1}"]
    finally:
        x.stop()
        x.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    ap.add_argument("--xend-tree", help="run xend from this checkout of the package")
    ap.add_argument("--trickle-seconds", type=float, default=60.0)
    a = ap.parse_args()
    tree = os.path.abspath(a.xend_tree) if a.xend_tree else None
    # ``python -m xend.cli`` finds the package in its working directory first
    os.chdir(tree or str(REPO))
    with tempfile.TemporaryDirectory(prefix="xend-hostile-") as d:
        tmp = Path(d)
        for name in a.only:
            if name == "trickle":
                lines = probe_trickle(tmp, tree, a.trickle_seconds)
            else:
                lines = globals()[f"probe_{name}"](tmp, tree)
            for line in lines:
                print(line, flush=True)


if __name__ == "__main__":
    main()
