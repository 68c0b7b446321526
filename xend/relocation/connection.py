"""The sending side of one relocation connection: connect (TCP, TLS or a local unix socket),
ask ``receive``, stream the image, read the verdict.

The writer watches the socket while it streams: a receiver that fails mid-stream answers
``(err ...)`` at once, and we stop sending and report its message instead of a broken pipe.
"""
from __future__ import annotations

import io
import logging
import select
import socket
import ssl
from typing import Any, Optional, Tuple

from xend.relocation import protocol

log = logging.getLogger("xend.relocate")

CONNECT_TIMEOUT = 30        # connect and the (ready ...) reply, as the original
STREAM_TIMEOUT = 60         # a send that makes no progress for this long fails
VERDICT_TIMEOUT = 120       # after the last byte: the receiver finishes and unpauses
ERROR_REPLY_TIMEOUT = 3     # after a local failure: a chance to hear the receiver's reason
READY_REPLY_LIMIT = 80      # the original read at most 80 bytes of (ready ...)
WRITE_BUFFER = 1024 * 1024
WRITE_CHUNK = 1024 * 1024   # the socket is checked for a reply between chunks


class PeerSpoke(ConnectionError):
    """The receiver sent something while we were streaming (its error reply)."""


class ConnectFailed(OSError):
    pass


def client_tls_context(ca_file: Optional[str],
                       identity: Optional[Tuple[str, str]] = None) -> ssl.SSLContext:
    """Verify the destination against ``ca_file`` (and its name); without a CA file the peer is
    not verified, as the original xend never verified it, and we say so in the log.
    ``identity`` = (cert file, key file): the certificate we present, which a receiver
    checks against its CA (xend-relocation-server-ssl-ca-file)."""
    if ca_file:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        ctx.load_cert_chain(*identity)
    return ctx


class StreamWriter(io.RawIOBase):
    """Raw writes to the socket that notice a receiver talking back."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock
        self.sent = 0
        self.abandoned = False      # set on close: what is still buffered is dropped

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.abandoned:
            return len(b)
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            raise PeerSpoke("the receiver answered before the end of the stream")
        chunk = memoryview(b)[:WRITE_CHUNK]
        self.sock.sendall(chunk)
        n = len(chunk)
        self.sent += n
        return n


class RelocationConnection:
    """One connection to a relocation server."""

    def __init__(self, dst: str, port: int, use_ssl: bool = False,
                 ca_file: Optional[str] = None, connect_timeout: float = CONNECT_TIMEOUT,
                 identity: Optional[Tuple[str, str]] = None):
        self.dst = dst
        self.port = port
        self.use_ssl = use_ssl
        self.identity = identity
        self.sock = self._connect(connect_timeout, ca_file)
        self.rfile = protocol.reader(self.sock)
        self.raw_out = StreamWriter(self.sock)
        self.out = io.BufferedWriter(self.raw_out, buffer_size=WRITE_BUFFER)
        self.reply: Any = None          # the last reply read

    def _connect(self, timeout: float, ca_file: Optional[str]) -> socket.socket:
        try:
            if self.dst.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(self.dst)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((self.dst, self.port), timeout=timeout)
            sock.set_inheritable(False)
            if self.use_ssl:
                if not ca_file:
                    log.warning("Migration to %s over SSL: the destination's certificate is NOT "
                                "verified (set xend-relocation-ssl-ca-file)", self.dst)
                ctx = client_tls_context(ca_file, self.identity)
                try:
                    sock = ctx.wrap_socket(sock, server_hostname=self.dst)
                except BaseException:
                    sock.close()
                    raise
        except (OSError, ValueError) as e:
            raise ConnectFailed(f"can't connect: {describe_error(e)}") from e
        return sock

    def ready(self, chs: bool = False) -> None:
        """Ask to send a domain; wait for ``(ready ...)`` (RemoteError on ``(err ...)``)."""
        op = "sslreceive" if self.use_ssl else "receive"
        self.sock.sendall(protocol.request_line(op, chs))
        self.reply = protocol.read_reply(self.rfile, READY_REPLY_LIMIT)
        protocol.expect(self.reply, "ready")
        self.sock.settimeout(STREAM_TIMEOUT)

    def verdict(self, timeout: float = VERDICT_TIMEOUT) -> Any:
        """After the stream: the receiver's ``(ok)``; its ``(err ...)`` raises RemoteError."""
        self.out.flush()
        self.sock.settimeout(timeout)
        self.reply = protocol.read_reply(self.rfile)
        return protocol.expect(self.reply, "ok")[1]

    def error_reply(self, timeout: float = ERROR_REPLY_TIMEOUT) -> Optional[protocol.RemoteError]:
        """After a failure on our side: the receiver's error, if it sent one in time."""
        err = protocol.remote_error(self.reply) if self.reply is not None else None
        if err is not None:
            return err
        try:
            self.sock.settimeout(timeout)
            reply = protocol.read_reply(self.rfile)
        except (OSError, protocol.ProtocolError, ValueError):
            return None
        return protocol.remote_error(reply)

    def close(self) -> None:
        self.raw_out.abandoned = True
        try:
            self.out.close()
        except (OSError, ValueError):
            pass
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock.settimeout(1)
                try:
                    self.sock.unwrap()
                except (OSError, ValueError):
                    pass
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RelocationConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_error(e: BaseException) -> str:
    """A socket error as a person wants to read it."""
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {e.verify_message or e.reason}"
    if isinstance(e, socket.gaierror):
        return e.strerror or str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"({e.errno}, '{e.strerror}')"
    return str(e)
