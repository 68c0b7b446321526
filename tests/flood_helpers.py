"""Floods for the resource tests and bench/hostile.py: a server's resident memory sampled
while many connections send huge request heads or bodies, or trickle bytes."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, List, Tuple

MIB = 1024 * 1024


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """``with RssSampler(pid) as s: ...`` then ``s.peak`` (MiB), sampled every 20 ms."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid = pid
        self.interval = interval
        self.peak = rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def unix_connect(path: str, timeout: float = 30) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def status_line(s: socket.socket) -> str:
    """The first line of what the server answers ('(closed)' if it just hangs up)."""
    reply = b""
    try:
        while b"\r\n" not in reply and len(reply) < 4096:
            b = s.recv(4096)
            if not b:
                break
            reply += b
    except OSError:
        pass
    return reply.split(b"\r\n", 1)[0].decode("latin-1", "replace") or "(closed)"


def header_flood(connect: Callable[[], socket.socket], total: int = 30 * MIB,
                 line: int = 60000) -> str:
    """One request with ``total`` bytes of header lines; what the server answered."""
    s = connect()
    sent = 0
    try:
        s.sendall(b"GET /xend/ HTTP/1.1\r\nHost: x\r\n")
        n = 0
        while sent < total:
            s.sendall(b"X-H%d: " % n + b"a" * line + b"\r\n")
            sent += line
            n += 1
        s.sendall(b"\r\n")
        return status_line(s)
    except OSError:
        answer = status_line(s)
        return answer if answer != "(closed)" else f"(cut after {sent // MIB} MiB)"
    finally:
        s.close()


def in_parallel(n: int, fn: Callable[[], str]) -> List[str]:
    """``fn()`` in ``n`` threads at once; their results."""
    results: List[str] = []
    lock = threading.Lock()

    def run() -> None:
        r = fn()
        with lock:
            results.append(r)
    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def body_flood(connect: Callable[[], socket.socket], size: int,
               count: int) -> Tuple[List[socket.socket], int]:
    """``count`` connections at once, each sending an XML-RPC request with a body of ``size``
    bytes and then holding on; (the connections that sent it all, how many were cut off)."""
    held: List[socket.socket] = []
    lock = threading.Lock()
    body = b"<" * size

    def one() -> str:
        try:
            s = connect()
            s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                      b"Content-Length: %d\r\n\r\n" % size)
            s.sendall(body)
        except OSError:
            return "cut"
        with lock:
            held.append(s)
        return "sent"
    results = in_parallel(count, one)
    return held, results.count("cut")


def read_to_end(s: socket.socket) -> bytes:
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return reply
        reply += chunk


def open_tricklers(connect: Callable[[], socket.socket], first: bytes,
                   count: int) -> List[socket.socket]:
    """``count`` connections that have sent ``first`` (the start of a request) and wait to
    send the rest a byte at a time; the ones xend accepted."""
    socks = []
    for _ in range(count):
        try:
            s = connect()
            s.sendall(first)
            socks.append(s)
        except OSError:
            pass
    return socks
