"""A deadline for reading one whole request, not one read at a time.

A socket timeout bounds each read; a client that trickles a byte just before each timeout
would hold its connection (and a thread, and a slot) for ever. ``Deadline`` bounds the whole
head and body of a request: each read waits at most the idle timeout and at most what is
left until the deadline, and a read after the deadline fails with ``socket.timeout``.
``DeadlineReader`` is the raw stream under a handler's ``rfile`` that applies it.
"""
from __future__ import annotations

import io
import socket
import time
from typing import Optional

REQUEST_DEADLINE = 30.0         # seconds for the whole head and body of one request


class Deadline:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.at: Optional[float] = None

    def start(self, seconds: float = REQUEST_DEADLINE) -> None:
        self.at = self.clock() + seconds

    def clear(self) -> None:
        self.at = None

    def timeout(self, idle: Optional[float]) -> Optional[float]:
        """The timeout for the next read: ``idle``, shortened to what is left of the
        deadline; socket.timeout when nothing is left."""
        if self.at is None:
            return idle
        left = self.at - self.clock()
        if left <= 0:
            raise socket.timeout("the request was not complete in time")
        return left if idle is None else min(idle, left)


class DeadlineReader(io.RawIOBase):
    """Reads from ``sock`` under ``deadline``; ``idle`` is the per-read timeout otherwise.
    ``end_request()`` (once the request has been read) clears the deadline and puts the
    socket's timeout back for writing the response."""

    def __init__(self, sock: socket.socket, idle: Optional[float], deadline: Deadline):
        super().__init__()
        self.sock = sock
        self.idle = idle
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self.sock.settimeout(self.deadline.timeout(self.idle))
        return self.sock.recv_into(b)

    def end_request(self) -> None:
        self.deadline.clear()
        self.sock.settimeout(self.idle)


class RequestDeadlineMixin:
    """For a ``BaseHTTPRequestHandler``: every request (from the wait for its first line to
    the end of its body) has REQUEST_DEADLINE seconds; the handler calls
    ``request_read()`` once it has the whole request."""

    request_deadline = REQUEST_DEADLINE

    def setup(self) -> None:
        super().setup()                                           # type: ignore[misc]
        self.rfile.close()      # the socket's own file: it would keep the socket open
        self.deadline = Deadline()
        self.reader = DeadlineReader(self.connection, self.timeout,  # type: ignore[attr-defined]
                                     self.deadline)
        self.rfile = io.BufferedReader(self.reader, 65536)

    def handle_one_request(self) -> None:
        self.deadline.start(self.request_deadline)
        try:
            super().handle_one_request()                          # type: ignore[misc]
        finally:
            self.request_read()

    def request_read(self) -> None:
        self.reader.end_request()
