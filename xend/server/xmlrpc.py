"""The legacy XML-RPC API that ``xm`` uses (reference section 5), over a unix socket and TCP.

Pieces as in the standard library: a dispatcher built from one explicit method table, a
request handler, and the unix/TCP servers (threaded, bounded). Errors become the original's
fault codes here and only here.
"""
from __future__ import annotations

import logging
import re
import socket
import socketserver
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional
from xmlrpc.client import Binary, Fault, dumps, gzip_encode, loads
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

from xend import errors
from xend.server import unixsock
from xend.server.deadline import RequestDeadlineMixin
from xend.server.lean_http import LeanRequestMixin, body_length
from xend.server.peers import PeerCheckMixin, PeerGate, tls_server_context
from xend.server.xmlrpc_wire import dumps_response

log = logging.getLogger("xend.XMLRPCServer")

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
#: bytes of one request body (else 413). A real domain config is 1-3 KiB of SXP; one with 256
#: disks and 64 network interfaces is 180 KiB as an XML-RPC call.
MAX_BODY = 1024 * 1024
MAX_DEPTH = 100                 # nesting of a call's arguments (a domain config: under 10)
MAX_CONNECTIONS = 64            # concurrent connections served at once
MAX_PER_PEER_TCP = MAX_CONNECTIONS // 2     # of them from one address (TCP)
UNIX_MAX_CONNECTIONS = 128      # a unix socket (root only) serves more at once
UNIX_RESERVED = 8               # slots of a unix socket one process cannot take
CONNECTION_TIMEOUT = 30         # idle keep-alive / slow or silent client (seconds)
REFUSAL_LOG_INTERVAL = 10.0     # seconds between two "too many connections" lines
TLS_HANDSHAKE_TIMEOUT = 10


def to_wire(value: Any) -> Any:
    """Make a result marshallable as xend sent it: ints beyond 32 bits as strings, ``vcpu_avail``
    pairs stripped from SXP at any depth, tuples as lists."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if INT32_MIN <= value <= INT32_MAX else str(value)
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value
                if not (isinstance(v, (list, tuple)) and v[:1] in (["vcpu_avail"], ("vcpu_avail",)))]
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return Binary(bytes(value))
    return value


def quirk_string(value: Any) -> Any:
    """The original's top-level string quirk: repr() without the outer quotes (section 5.1)."""
    if isinstance(value, str):
        r = repr(value)
        return r[1:-1]
    return value


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """Text that XML 1.0 can carry: characters it cannot are written as Python escapes
    (a client's garbage echoed in an error message must not make the reply unparsable)."""
    return _XML_INVALID.sub(lambda m: repr(m.group())[1:-1], text)


def nesting(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (without recursion: the value comes from
    a client)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, tuple, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


class XendDispatcher(SimpleXMLRPCDispatcher):
    """Dispatches exactly the names of the method table; nothing found by ``dir()``."""

    def __init__(self, table: Dict[str, Callable]):
        super().__init__(allow_none=True, encoding="utf-8", use_builtin_types=False)
        for name, fn in table.items():
            if name.startswith("_") or ".__" in name:
                raise ValueError(f"refusing to export {name}")
            self.register_function(fn, name)
        self.register_introspection_functions()

    def _dispatch(self, method: str, params: tuple) -> Any:
        """The result of a call as values ``xmlrpc.client`` can marshal (``to_wire``)."""
        return to_wire(self._call(method, params))

    def _call(self, method: str, params: tuple) -> Any:
        """The method's result as it is (the top-level string quirk applied), or a Fault."""
        fn = self.funcs.get(method)
        if fn is None:
            raise Fault(errors.ERROR_INTERNAL, f'method "{method}" is not supported')
        if nesting(params) > MAX_DEPTH:
            log.info("Refused a call of %s: its arguments are nested more than %d deep",
                     method, MAX_DEPTH)
            raise Fault(errors.ERROR_INTERNAL, f"arguments nested more than {MAX_DEPTH} deep")
        try:
            result = fn(*params)
        except errors.XendInvalidDomain as e:
            raise Fault(errors.ERROR_INVALID_DOMAIN, xml_safe(str(e.dom)))
        except errors.XendError as e:
            raise Fault(errors.ERROR_GENERIC, xml_safe(e.message))
        except TypeError as e:
            # wrong number/kind of arguments from the client: its fault, not ours
            log.debug("Bad arguments for %s: %s", method, e)
            raise Fault(errors.ERROR_INTERNAL, xml_safe(str(e)))
        except Exception as e:  # noqa: BLE001 - any other exception is an internal error
            log.exception("Internal error handling %s", method)
            raise Fault(errors.ERROR_INTERNAL, xml_safe(str(e)))
        return quirk_string(result)

    def _marshaled_dispatch(self, data: bytes, dispatch_method: Any = None,
                            path: Any = None) -> bytes:
        """The stdlib's, with the result written by ``xmlrpc_wire`` (which does
        ``to_wire``'s work as it writes); faults as the stdlib writes them."""
        try:
            params, method = loads(data, use_builtin_types=self.use_builtin_types)
            if dispatch_method is not None:
                return dumps_response(to_wire(dispatch_method(method, params)))
            return dumps_response(self._call(method, params))
        except Fault as fault:
            response = dumps(fault, allow_none=self.allow_none, encoding=self.encoding)
        except BaseException as exc:  # noqa: BLE001 - as the stdlib: any failure is a fault
            response = dumps(Fault(1, "%s:%s" % (type(exc), exc)), encoding=self.encoding,
                             allow_none=self.allow_none)
        return response.encode(self.encoding, "xmlcharrefreplace")


class XendRequestHandler(RequestDeadlineMixin, LeanRequestMixin, SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the original
    rpc_paths = ()                  # the original accepted any path
    timeout = CONNECTION_TIMEOUT

    def do_POST(self) -> None:
        size, status, why = body_length(self.headers.get_all("Content-Length"),
                                        self.headers.get("Transfer-Encoding"), MAX_BODY)
        if status:
            log.info("Refused a request from %s: %s", self.address_string(), why)
            self.send_response(status)
            self.send_header("Content-length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        data = self.rfile.read(size)
        if len(data) < size:
            self.close_connection = True    # the client went away mid-body
            return
        self.request_read()
        data = self.decode_request_content(data)
        if data is None:
            return                          # the error has been sent
        # the dispatcher turns every failure into a fault; it does not raise
        response = self.server._marshaled_dispatch(data, None, self.path)
        self.send_response(200)
        self.send_header("Content-type", "text/xml")
        if self.encode_threshold is not None and len(response) > self.encode_threshold \
                and self.accept_encodings().get("gzip", 0):
            response = gzip_encode(response)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)      # buffered: head and body leave in one write

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)


class UnixRequestHandler(XendRequestHandler):
    disable_nagle_algorithm = False  # TCP_NODELAY on AF_UNIX raises EOPNOTSUPP

    def address_string(self) -> str:
        return unixsock.peer_description(self.connection)


class BoundedThreadingMixIn(socketserver.ThreadingMixIn):
    """A thread per connection, at most ``max_connections`` at once, and at most
    ``max_per_peer`` of them from one peer (``peer_key``: the address on TCP), so that one
    peer cannot take every slot; more are closed at once (logged, at most every
    REFUSAL_LOG_INTERVAL seconds)."""

    daemon_threads = True
    block_on_close = False
    max_connections = MAX_CONNECTIONS
    max_per_peer: Optional[int] = MAX_PER_PEER_TCP

    def _slots(self) -> threading.BoundedSemaphore:
        if not hasattr(self, "_slot_sem"):
            self._slot_sem = threading.BoundedSemaphore(self.max_connections)
            self._peer_lock = threading.Lock()
            self._per_peer: Dict[Any, int] = {}
            self._peer_of: Dict[Any, Any] = {}     # request -> its peer_key
            self._refusals = (0.0, 0)       # (when last logged, refused since)
        return self._slot_sem

    def peer_key(self, request, client_address) -> Any:
        return client_address[0] if isinstance(client_address, tuple) and client_address \
            else None

    def process_request(self, request, client_address) -> None:
        slots = self._slots()
        key = self.peer_key(request, client_address)
        with self._peer_lock:
            mine = self._per_peer.get(key, 0)
            if self.max_per_peer is not None and mine >= self.max_per_peer:
                self._refused(client_address, f"{mine} connections from that peer already")
                self.shutdown_request(request)
                return
            if not slots.acquire(blocking=False):
                self._refused(client_address, f"all {self.max_connections} slots taken")
                self.shutdown_request(request)
                return
            self._per_peer[key] = mine + 1
            self._peer_of[request] = key
        try:
            super().process_request(request, client_address)
        except Exception:
            self._release(request)
            raise

    def _release(self, request) -> None:
        with self._peer_lock:
            key = self._peer_of.pop(request, None)
            left = self._per_peer.get(key, 1) - 1
            if left > 0:
                self._per_peer[key] = left
            else:
                self._per_peer.pop(key, None)
        self._slots().release()

    def _refused(self, client_address, why: str) -> None:
        """Caller holds _peer_lock."""
        last, count = self._refusals
        now = time.monotonic()
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals = (last, count + 1)
            return
        more = f" (and {count} more since the last such line)" if count else ""
        log.warning("Too many connections; refusing one from %r: %s%s", client_address, why,
                    more)
        self._refusals = (now, 0)

    def process_request_thread(self, request, client_address) -> None:
        try:
            self.prepare_request(request)
            super().process_request_thread(request, client_address)
        except (OSError, ssl.SSLError) as e:
            log.debug("connection from %r dropped: %s", client_address, e)
            self.shutdown_request(request)
        finally:
            self._release(request)

    def prepare_request(self, request) -> None:
        """Hook run in the connection's own thread (the TLS handshake goes here)."""

    def bind_and_listen(self, bind: Optional[Callable[[], None]] = None) -> None:
        """Bind (``bind``, else ``server_bind``) and listen, closing the socket if either
        fails: for servers made with ``bind_and_activate=False``."""
        self.socket.set_inheritable(False)
        try:
            (bind or self.server_bind)()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def handle_error(self, request, client_address) -> None:
        log.debug("error serving %r", client_address, exc_info=True)


class UnixPeersMixin:
    """For a unix-socket server: a peer is a process (SO_PEERCRED); only root can connect,
    so one process may take all but UNIX_RESERVED of the slots (a busy multi-threaded client
    is served), and a flood from one process never locks xm out."""

    max_connections = UNIX_MAX_CONNECTIONS

    @property
    def max_per_peer(self) -> int:                  # type: ignore[override]
        return max(1, self.max_connections - UNIX_RESERVED)

    def peer_key(self, request, client_address) -> Any:
        return unixsock.peer_pid(request)


class UnixXMLRPCServer(UnixPeersMixin, BoundedThreadingMixIn, socketserver.UnixStreamServer):
    def __init__(self, sock: socket.socket, dispatcher: XendDispatcher):
        socketserver.BaseServer.__init__(self, "", UnixRequestHandler)
        self.socket = sock
        self.server_address = sock.getsockname()
        self.dispatcher = dispatcher
        self.logRequests = False

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None):
        return self.dispatcher._marshaled_dispatch(data, dispatch_method, path)


class TCPXMLRPCServer(PeerCheckMixin, BoundedThreadingMixIn, socketserver.TCPServer):
    """Every connection passes ``peer_gate`` (xend.server.peers): local callers by uid,
    callers from other hosts only over TLS with a client certificate."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple, dispatcher: XendDispatcher,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 peer_gate: Optional[PeerGate] = None):
        self.dispatcher = dispatcher
        self.ssl_context = ssl_context
        self.peer_gate = peer_gate or PeerGate("XMLRPCServer-tcp")
        self.logRequests = False
        socketserver.TCPServer.__init__(self, address, XendRequestHandler, bind_and_activate=False)
        self.bind_and_listen()

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, addr

    def prepare_request(self, request) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(None)
            if not self.peer_gate.admit_tls(request, request_peer(request)):
                raise ConnectionRefusedError("no client certificate")

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None):
        return self.dispatcher._marshaled_dispatch(data, dispatch_method, path)


def request_peer(request) -> Any:
    try:
        return request.getpeername()
    except OSError:
        return ("?",)


server_tls_context = tls_server_context
