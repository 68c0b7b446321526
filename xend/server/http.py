"""The legacy HTTP/SXP server (reference section 6) on a unix socket and on TCP.

Pieces as in the standard library: ``XendHTTPHandler`` (a ``BaseHTTPRequestHandler`` with the
original's request-line, header and body limits and its response format), the unix and TCP
servers (a thread per connection, bounded, from ``xend.server.xmlrpc``), the resource tree of
``xend.server.http_resources``, and ``error_response``: the one place where what a request
raised becomes a status and a body.

Format choice (section 6.1): SXP (``application/sxp``, written with ``sxp.to_string``, no
trailing newline) unless the client looks like a browser (it sent both ``User-Agent`` and an
``Accept`` without ``application/sxp``), which gets a plain HTML page.

Quirk kept from the original: a threaded op (save, dump, migrate, restore) that fails on its
arguments or with a XendError answers with the status it would have had (202 for save/dump,
200 otherwise) and the body ``(xend.err '<message>')``.
"""
from __future__ import annotations

import email.parser
import html
import http.client
import logging
import re
import socket
import socketserver
from http.server import BaseHTTPRequestHandler
from typing import Any, List, Optional, Tuple
from urllib.parse import unquote, urlsplit
from xmlrpc.client import Fault

from xend import errors, sxp
from xend.server import unixsock
from xend.server import http_forms
from xend.server.deadline import RequestDeadlineMixin
from xend.server.lean_http import MAX_HEADER_BYTES, MAX_LINE, body_length
from xend.server.peers import PeerCheckMixin, PeerGate
from xend.server.http_resources import (BadRequest, BodyTooLarge, HttpError, LengthRequired,
                                        Request, Response, build_tree, resolve)
from xend.server.xmlrpc import CONNECTION_TIMEOUT, BoundedThreadingMixIn, UnixPeersMixin

log = logging.getLogger("xend.web.httpserver")

MAX_BODY = 10_000          # bytes of request body (else 413)
MAX_HEADERS = 500          # header lines per request (the original's); with MAX_HEADER_BYTES
DRAIN_BYTES = 1 << 20      # unread body discarded after a 413, so the reply is not lost to a
DRAIN_SECONDS = 2.0        # TCP reset when the socket is closed with data still queued
METHODS = ("GET", "HEAD", "POST")

_VERSION_RE = re.compile(r"HTTP/(\d+)\.(\d+)\Z")
_UNSAFE_HEADER_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def wants_sxp(headers) -> bool:
    accept = headers.get("Accept")
    return (headers.get("User-Agent") is None or accept is None
            or "application/sxp" in accept)


# -- the one error mapping --------------------------------------------------------------------

def error_response(exc: BaseException, req: Optional[Request]) -> Tuple[Response, str]:
    """(response, reason phrase) for what handling ``req`` raised."""
    if isinstance(exc, HttpError):
        return Response("text" if exc.message else "empty", exc.message or None, exc.status,
                        list(exc.headers)), exc.reason
    op = req.op if req is not None else None
    if isinstance(exc, errors.XendInvalidDomain) and op is None:
        # an unknown domain in the URL: 404 with the text of the fault
        return Response("text", str(Fault(errors.ERROR_INVALID_DOMAIN, str(exc.dom))), 404), ""
    expected = isinstance(exc, (errors.XendError, http_forms.ArgError))
    if expected:
        log.info("Request %s failed: %s", op or (req.path if req else "?"), exc)
    else:
        log.exception("Request %s failed.", op or (req.path if req else "?"))
    message = str(exc)
    if expected and req is not None and req.op_error_status is not None:
        return Response("error", message, req.op_error_status), ""
    return Response("error", message, 500), (f"Request failed: {op}" if op else "")


# -- rendering --------------------------------------------------------------------------------

def render(resp: Response, use_sxp: bool, title: str) -> Tuple[str, bytes]:
    """(content type, body) of a response."""
    kind, value = resp.kind, resp.value
    if kind == "empty":
        return (sxp.MIME_TYPE if use_sxp else "text/html"), b""
    if kind == "text":
        return "text/plain", str(value).encode("utf-8", "replace")
    if kind == "error":
        if use_sxp:
            return sxp.MIME_TYPE, sxp.to_string(["xend.err", value]).encode("utf-8")
        return "text/html", f"<p>{html.escape(value)}</p>".encode("utf-8")
    if kind == "ls":
        if use_sxp:
            return sxp.MIME_TYPE, ("(ls " + "".join(" " + n for n in value) + ")").encode()
        items = "".join(f'<li><a href="{html.escape(n)}/">{html.escape(n)}</a></li>'
                        for n in value)
        return "text/html", page(title, f"<ul>{items}</ul>")
    if use_sxp:
        return sxp.MIME_TYPE, sxp.to_string(value).encode("utf-8")
    return "text/html", page(title, f"<pre>{html.escape(sxp.prettyprint(value))}</pre>")


def page(title: str, body: str) -> bytes:
    t = html.escape(title)
    return (f"<html><head><title>Xen: {t}</title></head>"
            f"<body><h1>{t}</h1>{body}</body></html>").encode("utf-8")


def header_safe(value: str) -> str:
    return _UNSAFE_HEADER_CHARS.sub("", value).encode("latin-1", "replace").decode("latin-1")


# -- the request handler ----------------------------------------------------------------------

class XendHTTPHandler(RequestDeadlineMixin, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xend"
    timeout = CONNECTION_TIMEOUT
    unread_body = False

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self.unread_body:
                self.drain()

    def drain(self) -> None:
        """Lingering close: stop writing, then discard what the client still sends."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_SECONDS)
            left = DRAIN_BYTES
            while left > 0:
                chunk = self.connection.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    # -- request line and headers (own parse: the original's limits, HTTP/0.9, 505 > 2.0) --
    def parse_request(self) -> bool:
        self.command = None
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        self.headers = http.client.HTTPMessage()
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        words = line.split()
        if not words:
            return False
        if len(words) == 3:
            m = _VERSION_RE.match(words[2])
            if m is None:
                self.send_error(400, f"Bad request version ({words[2]!r})")
                return False
            if (int(m.group(1)), int(m.group(2))) > (2, 0):
                self.send_error(505, f"Invalid HTTP version ({words[2]})")
                return False
            self.request_version = words[2]
        elif len(words) != 2:
            self.send_error(400, f"Bad request syntax ({line!r})")
            return False
        self.command, self.path = words[0], words[1]
        if len(words) == 3:
            lines: List[bytes] = []
            total = 0
            while True:
                raw = self.rfile.readline(MAX_LINE + 1)
                total += len(raw)
                if len(raw) > MAX_LINE or total > MAX_HEADER_BYTES:
                    self.send_error(431, "Request header too large")
                    return False
                if raw in (b"\r\n", b"\n", b""):
                    break
                lines.append(raw)
                if len(lines) > MAX_HEADERS:
                    self.send_error(431, "Too many headers")
                    return False
            text = b"".join(lines).decode("iso-8859-1")
            self.headers = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)
        connection = self.headers.get("Connection", "")
        self.close_connection = "keep-alive" not in connection.lower()
        return True

    def do_GET(self) -> None:
        self.serve()

    def do_HEAD(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    # -- one request ---------------------------------------------------------------------
    def serve(self) -> None:
        req: Optional[Request] = None
        try:
            try:
                req = self.build_request()
            finally:
                self.request_read()     # the whole request is in: no deadline for the op
            res = resolve(self.server.resources, req.segments)
            resp = res.post(req) if req.method == "POST" else res.get(req)
            reason = ""
        except Exception as e:  # noqa: BLE001 - mapped to a status, the listener keeps serving
            resp, reason = error_response(e, req)
        self.respond(resp, reason)

    def build_request(self) -> Request:
        parts = urlsplit(self.path)
        path = parts.path or "/"
        segments = [unquote(s, errors="replace") for s in path.split("/") if s]
        args = http_forms.parse_query(parts.query)
        body = self.read_body()
        if self.command == "POST" and body:
            try:
                form = http_forms.parse_body(body, self.headers.get("Content-Type", ""))
            except http_forms.FormError as e:
                raise BadRequest(str(e)) from e
            args = http_forms.merge(args, form)
        return Request(self.command, segments, path, args, self.base_url())

    def read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        size, status, why = body_length(self.headers.get_all("Content-Length"), encoding,
                                        MAX_BODY)
        if status == 411 and encoding is None:
            return b""                  # no body (GET, or a POST of nothing)
        if status:
            self.close_connection = True
            if status == 413:
                self.unread_body = True
                raise BodyTooLarge(why)
            raise LengthRequired(why) if status == 411 else BadRequest(why)
        if size and self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        body = self.rfile.read(size)
        if len(body) < size:
            self.close_connection = True
            raise BadRequest("Incomplete request body")
        return body

    def base_url(self) -> str:
        host = header_safe(self.headers.get("Host", "") or "")
        if not host:
            addr = self.server.server_address
            host = f"{addr[0] or 'localhost'}:{addr[1]}" if isinstance(addr, tuple) else "localhost"
        return "http://" + host

    # -- responses -----------------------------------------------------------------------
    def respond(self, resp: Response, reason: str = "") -> None:
        use_sxp = wants_sxp(self.headers)
        try:
            ctype, body = render(resp, use_sxp, self.path)
        except Exception as e:  # noqa: BLE001 - a result we cannot write is our error
            log.exception("Cannot write the result of %s", self.path)
            resp, reason = Response("error", str(e), 500, []), ""
            ctype, body = render(resp, use_sxp, self.path)
        self.write_response(resp.status, reason, [("Content-type", ctype)] + resp.headers, body)

    def write_response(self, status: int, reason: str, headers: List[Tuple[str, str]],
                       body: bytes) -> None:
        reason = header_safe(reason or self.responses.get(status, ("",))[0])
        out = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers:
            out.append(f"{name.capitalize()}: {header_safe(value)}")
        out += ["Pragma: no-cache", "Cache-control: no-cache", "Expires: -1",
                f"Content-length: {len(body)}",
                "Connection: close" if self.close_connection else "Connection: keep-alive"]
        data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += body
        self.wfile.write(data)
        self.log_request(status, len(body))

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """Errors found before a request is built (request line, headers, method)."""
        self.close_connection = True
        message = message or self.responses.get(code, ("",))[0]
        headers = [("Content-type", "text/plain")]
        if code == 501 and self.command not in METHODS:
            headers += [("Allow", ", ".join(METHODS)), ("Accept", ", ".join(METHODS))]
        try:
            self.write_response(code, "", headers, message.encode("utf-8", "replace"))
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("%s %s", self.address_string(), format % args)

    def address_string(self) -> str:
        addr = self.client_address
        return addr[0] if isinstance(addr, tuple) and addr else "unix"


class UnixHTTPHandler(XendHTTPHandler):
    def address_string(self) -> str:
        return unixsock.peer_description(self.connection)


# -- servers ----------------------------------------------------------------------------------

class UnixHTTPServer(UnixPeersMixin, BoundedThreadingMixIn, socketserver.UnixStreamServer):
    """On an already bound and listening unix socket (``xend.server.unixsock.bind_unix``)."""

    def __init__(self, sock: socket.socket, node):
        socketserver.BaseServer.__init__(self, "", UnixHTTPHandler)
        self.socket = sock
        self.server_address = sock.getsockname()
        self.resources = build_tree(node)


class TCPHTTPServer(PeerCheckMixin, BoundedThreadingMixIn, socketserver.TCPServer):
    """No TLS here: every connection passes ``peer_gate`` (local callers by uid); callers
    from other hosts are refused."""

    allow_reuse_address = True
    # the original listened with a backlog of 5; a burst of clients then waits for SYN
    # retransmits (1 s, 3 s ...), so take the unix sockets' 64
    request_queue_size = 64

    def __init__(self, address: tuple, node, peer_gate: Optional[PeerGate] = None):
        self.resources = build_tree(node)
        self.peer_gate = peer_gate or PeerGate("HttpServer-tcp")
        socketserver.TCPServer.__init__(self, address, XendHTTPHandler, bind_and_activate=False)
        self.bind_and_listen()
