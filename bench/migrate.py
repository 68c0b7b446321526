#!/usr/bin/env python3
"""Migration throughput between two xend daemons on this machine, against plain socket
copies of the same number of bytes measured in the same run.

    python3 bench/migrate.py [--size-mib 1024] [--keep] [--dir /dev/shm]

Rows:
  socket copy            SIZE bytes through a loopback TCP connection (sendall / recv_into)
  TLS socket copy        the same through TLS 1.2+ with the relocation server's settings
  image to /dev/shm      ``xm save -c`` of the domain to a file in memory: producing the image
                         (reading the simulated guest's memory), no network, no restore
  relocation stream only that image file sent with RelocationConnection to a relocation
                         server whose receiver parses and verifies it, then drops it: our
                         protocol, framing and image checks without the hypervisor
  migrate non-live TCP   ``xm migrate`` of a SIZE domain, plain relocation port: first a fresh
                         guest (its pages are generated when read), then back the one that
                         arrived (its pages are read from the file its restore wrote)
  migrate non-live TLS   that restored guest again over the SSL relocation port, the
                         destination verified against a CA
  migrate live TCP       a busy guest (sim.dirty_rate=2000 pages/s), live: its rounds, the
                         final pause (source paused -> last page sent) and the downtime until
                         the receiver's (ok) (the receiver unpauses before sending it)

Throughput = image bytes / wall time of the xm command (the image is SIZE plus 8 bytes of
pfn per 4 KiB page). The sender's simulated hypervisor builds each page when it is read
(a 16-byte header and a window of the guest's random pool); the receiver checks each page
byte for byte against the guest's own pattern and keeps a match as its generation number
(simpages), as a hypervisor writes into memory the domain already has. The /dev/shm row
writes 1 GiB into new pages of a file, which on a VM that hands freed memory back to its
host costs more than the rest of the work: it is shown for scale, not as a bound.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon_helpers import free_port  # noqa: E402
from tests.relocation_helpers import Host, create, openssl_cert  # noqa: E402
from xend.relocation.connection import client_tls_context  # noqa: E402
from xend.server.xmlrpc import server_tls_context  # noqa: E402

MIB = 1024 * 1024
CHUNK = MIB


# -- plain copies ---------------------------------------------------------------------------
def socket_copy(size: int, server_ctx=None, client_ctx=None) -> float:
    """Seconds to push ``size`` bytes through a loopback connection (TLS if contexts)."""
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    got = {"n": 0}

    def receive() -> None:
        conn, _ = lst.accept()
        if server_ctx is not None:
            conn = server_ctx.wrap_socket(conn, server_side=True)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with conn:
            while got["n"] < size:
                n = conn.recv_into(view)
                if not n:
                    break
                got["n"] += n

    t = threading.Thread(target=receive)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    if client_ctx is not None:
        s = client_ctx.wrap_socket(s, server_hostname="127.0.0.1")
    data = os.urandom(CHUNK)
    start = time.perf_counter()
    with s:
        sent = 0
        while sent < size:
            s.sendall(data)
            sent += len(data)
        t.join()
    elapsed = time.perf_counter() - start
    lst.close()
    assert got["n"] >= size, got
    return elapsed


# -- the relocation stream alone -------------------------------------------------------------
class SinkRegistry:
    """Receives an image like a registry would (parse, verify the checksum) but keeps no
    domain: the relocation transport and image format without the hypervisor."""

    def restore_from_stream(self, rfile, relocating, paused):
        from xend.domains.image import read_image
        _, pages = read_image(rfile)
        pages.drain()
        return pages

    def unpause_restored(self, dom):
        pass

    def discard_restored(self, dom):
        pass


def relocation_stream(image_path: Path, ctx=None, cafile=None) -> float:
    """Seconds to send an image file through RelocationConnection to a relocation server
    whose receiver verifies and drops it."""
    from xend.relocation.connection import RelocationConnection
    from xend.relocation.receiver import Receiver
    from xend.relocation.server import TCPRelocationServer
    srv = TCPRelocationServer(("127.0.0.1", 0), Receiver(lambda: SinkRegistry()),
                              ssl_context=ctx, bind_retry=0)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        start = time.perf_counter()
        with RelocationConnection("127.0.0.1", srv.server_address[1], use_ssl=ctx is not None,
                                  ca_file=cafile) as conn, open(image_path, "rb") as f:
            conn.ready()
            while True:
                block = f.read(CHUNK)
                if not block:
                    break
                conn.out.write(block)
            conn.verdict()
        return time.perf_counter() - start
    finally:
        srv.shutdown()
        srv.server_close()


# -- migrations -----------------------------------------------------------------------------
def timed(host: Host, *args: str, timeout: float = 900) -> float:
    start = time.perf_counter()
    r = host.xm(*args, timeout=timeout)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"xm {' '.join(args)} failed: {r.stderr}\n{host.log_tail()}")
    return elapsed


def last_migration(host: Host) -> dict:
    line = [ln for ln in host.log().splitlines() if "Migrated domain" in ln][-1]
    out = {"bytes": int(re.search(r": (\d+) bytes", line).group(1))}
    for key, pattern in (("rounds", r"(\d+) rounds"), ("pause", r"final pause ([\d.]+) s"),
                         ("pages", r"final pause [\d.]+ s \((\d+) pages\)"),
                         ("downtime", r"downtime until \(ok\) ([\d.]+) s")):
        m = re.search(pattern, line)
        if m:
            out[key] = float(m.group(1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--dir", default=None,
                   help="where the two hosts' state lives (default: the system temp dir; "
                        "/dev/shm takes the disk out of the figures)")
    o = p.parse_args()
    size = o.size_mib * MIB
    image = size + (size // 4096) * 8
    rows = []

    def row(name: str, seconds: float, nbytes: int, note: str = "") -> None:
        rows.append((name, nbytes / MIB, seconds, nbytes / MIB / seconds, note))
        print(f"  {name}: {seconds:.2f} s", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="xend-bench-migrate-", dir=o.dir))
    key, cert = openssl_cert(tmp)
    print(f"size {o.size_mib} MiB, work dir {tmp}", flush=True)

    row("socket copy (loopback TCP)", socket_copy(size), size)
    row("TLS socket copy (loopback)",
        socket_copy(size, server_tls_context(str(cert), str(key)), client_tls_context(str(cert))),
        size)

    host_mib = o.size_mib * 2 + 2048
    tls = ("(xend-relocation-ssl-server yes)\n"
           f"(xend-relocation-server-ssl-key-file {key})\n"
           f"(xend-relocation-server-ssl-cert-file {cert})\n"
           f"(xend-relocation-ssl-ca-file {cert})\n")
    a = Host(tmp / "a", extra=tls, host_memory_mib=host_mib, ssl_port=free_port())
    b = Host(tmp / "b", extra=tls, host_memory_mib=host_mib, ssl_port=free_port())
    hosts = [a, b]
    try:
        for h in hosts:
            h.start()
        create(a, tmp, "big", memory=o.size_mib, args="sim.dirty_rate=0")

        # (/dev/null would do, but domain_save fsyncs the file, which /dev/null refuses)
        sink = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp
        sink = sink / f"xend-bench-{os.getpid()}.img"
        try:
            row(f"image to {sink.parent} (xm save -c)", timed(a, "save", "-c", "big", str(sink)),
                image, "no network, no restore")
            nbytes = sink.stat().st_size
            row("relocation stream only, TCP", relocation_stream(sink), nbytes,
                "image file -> receiver that verifies, drops")
            row("relocation stream only, TLS",
                relocation_stream(sink, server_tls_context(str(cert), str(key)), str(cert)),
                nbytes, "image file -> receiver that verifies, drops")
        finally:
            sink.unlink(missing_ok=True)

        t = timed(a, "migrate", "big", "127.0.0.1", "-p", str(b.port))
        row("migrate non-live, TCP, fresh guest", t, last_migration(a)["bytes"],
            "a -> b; pages generated when read")
        t = timed(b, "migrate", "big", "127.0.0.1", "-p", str(a.port))
        row("migrate non-live, TCP, restored guest", t, last_migration(b)["bytes"],
            "b -> a; pages as the restore kept them")
        t = timed(a, "migrate", "--ssl", "big", "127.0.0.1", "-p", str(b.ssl_port))
        row("migrate non-live, TLS, restored guest", t, last_migration(a)["bytes"],
            "a -> b; CA verified")
        timed(b, "destroy", "big")

        create(a, tmp, "busy", memory=o.size_mib, args="sim.dirty_rate=2000")
        time.sleep(1)
        t = timed(a, "migrate", "-l", "busy", "127.0.0.1", "-p", str(b.port))
        live = last_migration(a)
        row("migrate live, TCP (2000 dirty pages/s)", t, int(live["bytes"]),
            f"{int(live.get('rounds', 0))} rounds; final pause {live.get('pause', 0) * 1000:.0f} ms"
            f" ({int(live.get('pages', 0))} pages); downtime until (ok) "
            f"{live.get('downtime', 0) * 1000:.0f} ms")
    finally:
        for h in hosts:
            try:
                h.stop()
            finally:
                h.kill()
        if not o.keep:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'what':42} {'MiB':>8} {'seconds':>8} {'MiB/s':>8}  note")
    for name, mib, secs, rate, note in rows:
        print(f"{name:42} {mib:8.0f} {secs:8.2f} {rate:8.1f}  {note}")
    base = rows[0][3]
    print()
    for name, _, _, rate, _ in rows[2:]:
        print(f"{name:42} {rate / base * 100:5.1f}% of the plain socket copy")


if __name__ == "__main__":
    main()
