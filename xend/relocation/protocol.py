"""The relocation protocol's framing (reference section 7.1): SXP requests, SXP replies.

A connection carries requests, each a complete SXP value (``receive``, ``(help)``...), then,
after ``(ready receive)``, the raw image stream. Everything here is bounded: a request or a
reply is at most a few KiB, every read has a timeout set on the socket by the caller.

Replies are one SXP value and a newline: ``(ok)``, ``(ok VALUE)``, ``(ready OP)`` or
``(err (type "<class '...'>") (value 'MESSAGE'))``.
"""
from __future__ import annotations

import io
import socket
import ssl
from typing import Any, List, Optional, Tuple

from xend import errors, sxp
from xend.server.deadline import Deadline

MAX_REQUEST = 4096          # bytes of one request (the only real one is ``receive``)
MAX_REPLY = 64 * 1024       # bytes of one reply (an error message)
MAX_REQUESTS = 64           # requests per connection before we hang up
READ_BUFFER = 256 * 1024

OPERATIONS = ("help", "quit", "receive", "sslreceive")


class ProtocolError(Exception):
    """The peer broke the framing (too long, not SXP, closed early)."""


class RemoteError(errors.XendError):
    """The far side answered ``(err ...)``; ``message`` is its value, ``kind`` its type."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


# -- a socket as a buffered binary file -----------------------------------------------------
class SocketIO(io.RawIOBase):
    """Raw reads and writes on a (possibly TLS) socket; timeouts are the socket's, and a
    read waits no longer than ``deadline`` allows (a request must arrive whole in time)."""

    def __init__(self, sock: socket.socket, deadline: Optional[Deadline] = None):
        super().__init__()
        self.sock = sock
        self.deadline = deadline or Deadline()
        self._tls = hasattr(sock, "pending")        # an ssl.SSLSocket
        self.bytes_read = 0
        self.bytes_written = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.deadline.at is None:
            n = self.sock.recv_into(b)
        else:
            timeout = self.sock.gettimeout()
            self.sock.settimeout(self.deadline.timeout(timeout))
            try:
                n = self.sock.recv_into(b)
            finally:
                self.sock.settimeout(timeout)
        if n and self._tls and n < len(b):
            n += self._more_records(memoryview(b)[n:])
        self.bytes_read += n
        return n

    def _more_records(self, view: memoryview) -> int:
        """TLS gives one record (16 KiB) a call: take the records that have arrived besides,
        without waiting, so that a large read costs what it does on a plain socket."""
        n = 0
        timeout = self.sock.gettimeout()
        self.sock.settimeout(0)
        try:
            while n < len(view):
                got = self.sock.recv_into(view[n:])
                if not got:
                    break
                n += got
        except (ssl.SSLWantReadError, BlockingIOError):
            pass                # nothing more yet (a record half here waits in OpenSSL)
        finally:
            self.sock.settimeout(timeout)
        return n

    def write(self, b) -> int:
        self.sock.sendall(b)
        n = len(b)
        self.bytes_written += n
        return n


def reader(sock: socket.socket, deadline: Optional[Deadline] = None) -> io.BufferedReader:
    """A buffered reader over ``sock``: ``readline(limit)`` for requests, ``read(n)`` loops
    until n bytes or end of stream (what the image reader expects)."""
    return io.BufferedReader(SocketIO(sock, deadline), buffer_size=READ_BUFFER)


# -- requests ---------------------------------------------------------------------------------
def _incomplete(e: sxp.ParseError) -> bool:
    return e.message.startswith("unexpected EOF")


def read_values(rfile: io.BufferedReader, limit: int) -> List[Any]:
    """Read whole lines until they hold at least one complete SXP value and nothing unclosed;
    return the values. ``[]`` at end of stream before any byte. Raises ProtocolError."""
    data = b""
    while True:
        line = rfile.readline(limit - len(data) + 1)
        at_eof = not line
        if at_eof and not data.strip():
            return []
        data += line
        if len(data) > limit:
            raise ProtocolError(f"request longer than {limit} bytes")
        if not at_eof and not line.endswith(b"\n"):
            continue
        try:
            values = sxp.parse_all(data)
        except sxp.ParseError as e:
            if _incomplete(e) and not at_eof:
                continue
            if at_eof:
                raise ProtocolError("connection closed in the middle of a request") from None
            raise ProtocolError(f"bad request: {e.message}") from None
        if values or at_eof:
            return values
        data = b""  # blank or comment-only line


def operation(value: Any) -> str:
    """The operation a request names: the atom, or the head of a list (``.`` -> ``_``)."""
    name = value if isinstance(value, str) else (value[0] if value and isinstance(value[0], str)
                                                 else "")
    return name.replace(".", "_")


def request_name(value: Any) -> str:
    """The name of a request as the peer wrote it (for messages)."""
    if isinstance(value, str):
        return value
    if value and isinstance(value[0], str):
        return value[0]
    return sxp.to_string(value)


def request_line(op: str, chs: bool = False) -> bytes:
    """``receive``, or ``(receive (change_home_server True))`` (our extension: the migrated
    domain becomes a managed domain of the destination)."""
    value: Any = [op, ["change_home_server", "True"]] if chs else op
    return encode(value)


def change_home_server(value: Any) -> bool:
    flag = sxp.child_value(value, "change_home_server") if isinstance(value, list) else None
    return isinstance(flag, str) and flag.strip().lower() in ("true", "1", "yes")


# -- replies ----------------------------------------------------------------------------------
def encode(value: Any) -> bytes:
    return sxp.to_string(value).encode("latin-1", "backslashreplace") + b"\n"


def ok_reply(value: Any = None) -> bytes:
    return encode(["ok"] if value is None else ["ok", value])


def ready_reply(op: str) -> bytes:
    return encode(["ready", op])


def error_message(exc: BaseException) -> str:
    if isinstance(exc, errors.XendError):
        return exc.message
    if isinstance(exc, errors.HypervisorError):
        return exc.message
    return str(exc) or type(exc).__name__


def err_reply(exc: BaseException) -> bytes:
    return encode(["err", ["type", repr(type(exc))], ["value", error_message(exc)]])


def err_text_reply(message: str) -> bytes:
    return err_reply(errors.XendError(message))


def read_reply(rfile: io.BufferedReader, limit: int = MAX_REPLY) -> Any:
    """The next reply value; ProtocolError at end of stream or on garbage."""
    values = read_values(rfile, limit)
    if not values:
        raise ProtocolError("connection closed by the peer")
    return values[0]


def reply_kind(reply: Any) -> str:
    return sxp.name(reply) or ""


def remote_error(reply: Any) -> Optional[RemoteError]:
    """A RemoteError for an ``(err ...)`` reply, None for anything else."""
    if reply_kind(reply) != "err":
        return None
    message = sxp.child_value(reply, "value")
    kind = sxp.child_value(reply, "type", "")
    if not isinstance(message, str):
        message = sxp.to_string(reply)
    return RemoteError(message, kind if isinstance(kind, str) else "")


def expect(reply: Any, kind: str) -> Tuple[str, Any]:
    """Check ``reply`` is ``(kind ...)``; raise its RemoteError if it is ``(err ...)``."""
    err = remote_error(reply)
    if err is not None:
        raise err
    if reply_kind(reply) != kind:
        raise ProtocolError(f"unexpected reply {sxp.to_string(reply)[:200]}")
    return kind, reply
