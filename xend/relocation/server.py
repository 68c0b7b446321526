"""The relocation receiver (reference section 7.1): TCP, TLS and unix-socket servers.

Pieces as in ``socketserver``: a bounded threading server per transport, and one request
handler that speaks the protocol and hands the image stream to a ``Receiver``. Nothing here
blocks the accept loop: the TLS handshake, host-name lookups and every read run in the
connection's own thread, each with a timeout. IPv4 only, as the original.
"""
from __future__ import annotations

import errno
import logging
import socket
import socketserver
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional

from xend.relocation import acl as acl_mod
from xend.relocation import protocol
from xend.relocation.receiver import Receiver
from xend.server import peers
from xend.server.deadline import Deadline
from xend.server.xmlrpc import BoundedThreadingMixIn, UnixPeersMixin

log = logging.getLogger("xend.relocate")

MAX_CONNECTIONS = 16        # connections served at once (each may carry a whole domain)
REQUEST_TIMEOUT = 30        # seconds a peer has to send its request
STREAM_TIMEOUT = 60         # seconds of silence tolerated inside the image stream
REPLY_TIMEOUT = 30          # seconds a write of a reply may take
TLS_HANDSHAKE_TIMEOUT = 10
LINGER_SECONDS = 3          # after an error reply: how long we drain the sender's bytes
LINGER_BYTES = 64 * 1024 * 1024
BIND_RETRY_SECONDS = 30     # the original retried EADDRINUSE every 0.5 s for 30 s
BIND_RETRY_INTERVAL = 0.5


class PeerRefused(ConnectionRefusedError):
    """hosts-allow refused the peer (already logged); the connection is closed unanswered."""


# -- the protocol -----------------------------------------------------------------------------
class RelocationHandler(socketserver.BaseRequestHandler):
    server: "RelocationServerMixin"

    def setup(self) -> None:
        self.request.settimeout(REQUEST_TIMEOUT)
        self.deadline = Deadline()
        self.rfile = protocol.reader(self.request, self.deadline)
        self.peer = self.server.peer_text(self.client_address)

    def send(self, data: bytes) -> bool:
        try:
            self.request.settimeout(REPLY_TIMEOUT)
            self.request.sendall(data)
            return True
        except OSError as e:
            log.info("Relocation peer %s: cannot reply: %s", self.peer, e)
            return False

    def handle(self) -> None:
        for _ in range(protocol.MAX_REQUESTS):
            self.request.settimeout(REQUEST_TIMEOUT)
            self.deadline.start(REQUEST_TIMEOUT)    # for the whole request, not each read
            try:
                values = protocol.read_values(self.rfile, protocol.MAX_REQUEST)
            except protocol.ProtocolError as e:
                log.info("Relocation peer %s: %s", self.peer, e)
                self.send(protocol.err_text_reply(str(e)))
                return
            except OSError as e:
                log.info("Relocation peer %s: %s", self.peer, e)
                return
            finally:
                self.deadline.clear()
            if not values:
                return
            for value in values:
                op = protocol.operation(value)
                if op == "help":
                    if not self.send(protocol.ok_reply(list(protocol.OPERATIONS))):
                        return
                elif op == "quit":
                    return
                elif op in ("receive", "sslreceive"):
                    self.receive(op, protocol.change_home_server(value))
                    return
                else:
                    name = protocol.request_name(value)
                    if not self.send(protocol.err_text_reply(f"Invalid operation: {name}")):
                        return
        log.info("Relocation peer %s: too many requests", self.peer)

    def linger(self) -> None:
        """After an error reply in the middle of a stream: read and drop what the sender still
        has in flight for a moment, so that closing does not reset the connection before it
        has read our reply (a reset can discard it)."""
        try:
            if not isinstance(self.request, ssl.SSLSocket):
                self.request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            self.request.settimeout(0.2)
            drained = 0
            while time.monotonic() < deadline and drained < LINGER_BYTES:
                try:
                    chunk = self.request.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                drained += len(chunk)
        except (OSError, ValueError):
            pass

    def receive(self, op: str, chs: bool = False) -> None:
        if op == "sslreceive" and not isinstance(self.request, ssl.SSLSocket):
            self.send(protocol.err_text_reply("sslreceive needs an SSL connection: use the "
                                              "relocation SSL port"))
            return
        if not self.send(protocol.ready_reply(op)):
            return
        self.request.settimeout(STREAM_TIMEOUT)
        started = time.monotonic()
        log.info("Receiving a domain from %s", self.peer)
        try:
            dom = self.server.receiver.receive(self.rfile, self.peer, chs)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the sender
            log.error("Receiving a domain from %s failed: %s", self.peer,
                      protocol.error_message(e), exc_info=not isinstance(e, (OSError,)))
            if self.send(protocol.err_reply(e)):
                self.linger()
            return
        if not self.send(protocol.ok_reply()):
            # The sender cannot learn that we have it, so it keeps (and resumes) its copy.
            log.error("The sender %s is gone before it heard that the domain arrived; "
                      "destroying our copy", self.peer)
            self.server.receiver.discard(dom)
            return
        self.server.receiver.confirmed(dom)
        log.info("Received domain %s from %s in %.1fs", getattr(dom, "name", dom), self.peer,
                 time.monotonic() - started)


# -- servers ----------------------------------------------------------------------------------
class RelocationServerMixin(BoundedThreadingMixIn):
    max_connections = MAX_CONNECTIONS
    max_per_peer = MAX_CONNECTIONS // 2

    def init_relocation(self, receiver: Receiver,
                        hosts_allow: Callable[[], str] = lambda: "",
                        resolver: Optional[Callable[[str], acl_mod.PeerName]] = None,
                        peer_gate: Optional[peers.PeerGate] = None) -> None:
        self.receiver = receiver
        self.peer_gate = peer_gate or peers.PeerGate("RelocationServer", peers.OPEN)
        self.hosts_allow = hosts_allow
        self.resolver = resolver or acl_mod.NameResolver()
        self._acl_cache: Optional[acl_mod.HostsAllow] = None
        self._pending: Dict[Any, bool] = {}
        self._pending_lock = threading.Lock()

    def peer_text(self, client_address: Any) -> str:
        if isinstance(client_address, tuple) and client_address:
            return str(client_address[0])
        return "unix"

    # -- hosts-allow
    def acl(self) -> acl_mod.HostsAllow:
        spec = self.hosts_allow() or ""
        cached = self._acl_cache
        if cached is None or cached.spec != spec:
            cached = self._acl_cache = acl_mod.HostsAllow(spec)
        return cached

    def verify_request(self, request, client_address) -> bool:
        """The peer checks. Here, in the accept loop, only what never blocks: who a local
        caller is (``peer_gate``, xend.server.peers) and what the address decides for
        hosts-allow; a peer the address does not admit is checked by name in its own thread
        (``prepare_request``) before a byte is read or written."""
        if not isinstance(client_address, tuple):
            return True
        if not self.peer_gate.admit(request, client_address):
            return False
        if not self.acl().allows_address(client_address[0]):
            with self._pending_lock:
                self._pending[request] = True
        return True

    def prepare_request(self, request) -> None:
        with self._pending_lock:
            pending = self._pending.pop(request, False)
        if pending and not acl_mod.check_peer(self.acl(), self.peer_text(request_peer(request)),
                                              self.resolver):
            raise PeerRefused("refused by xend-relocation-hosts-allow")
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            request.do_handshake()
            if not self.peer_gate.admit_tls(request, request_peer(request)):
                raise PeerRefused("no client certificate")

    def shutdown_request(self, request) -> None:
        with self._pending_lock:
            self._pending.pop(request, None)
        self.peer_gate.forget(request)
        super().shutdown_request(request)


def request_peer(request) -> Any:
    try:
        return request.getpeername()
    except OSError:
        return ("?",)


class TCPRelocationServer(RelocationServerMixin, socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address: tuple, receiver: Receiver,
                 hosts_allow: Callable[[], str] = lambda: "",
                 ssl_context: Optional[ssl.SSLContext] = None,
                 resolver: Optional[Callable[[str], acl_mod.PeerName]] = None,
                 bind_retry: float = BIND_RETRY_SECONDS,
                 peer_gate: Optional[peers.PeerGate] = None):
        self.init_relocation(receiver, hosts_allow, resolver, peer_gate)
        self.ssl_context = ssl_context
        socketserver.TCPServer.__init__(self, address, RelocationHandler,
                                        bind_and_activate=False)
        self.bind_and_listen(lambda: self._bind_retrying(bind_retry))

    def _bind_retrying(self, retry: float) -> None:
        deadline = time.monotonic() + retry
        while True:
            try:
                self.server_bind()
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                time.sleep(BIND_RETRY_INTERVAL)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.set_inheritable(False)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, addr


class UnixRelocationServer(UnixPeersMixin, RelocationServerMixin, socketserver.UnixStreamServer):
    """The local relocation socket: no hosts-allow (the socket directory is private)."""

    max_connections = MAX_CONNECTIONS

    def __init__(self, sock: socket.socket, receiver: Receiver):
        self.init_relocation(receiver)
        socketserver.BaseServer.__init__(self, "", RelocationHandler)
        self.socket = sock
        self.server_address = sock.getsockname()
