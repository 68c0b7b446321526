"""XML-RPC to xend's unix socket with the ``socket`` module alone (``xm`` on the default
socket).

``xmlrpc.client`` brings ``http.client``, ``email``, ``ssl``, ``decimal`` and ``datetime``
with it: more than ``xm list`` itself costs, and seconds in a dom0 without much CPU. This
proxy writes the request (arguments of str, int, float, bool, None, lists and dicts), sends
it as one HTTP/1.1 POST on a kept-alive connection, and reads the answer with
``client.fast_loads``. Anything else goes the standard way, so what a caller gets is always
what ``xmlrpc.client.ServerProxy`` with xm's transport would give: a fault is raised as
``xmlrpc.client.Fault`` (imported then), an HTTP error as ``ProtocolError``, an argument
that does not fit XML-RPC's ints as ``OverflowError``, and a result the fast reader does
not take (base64, dates) is parsed by the standard parser.
"""
from __future__ import annotations

import socket

from xend.xm.client import fast_loads, unquote_string_result

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Callable, List, Optional

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
MAX_HEAD = 65536            # bytes of a response's status line and headers


class _NotSimple(Exception):
    """An argument this writer does not write (the standard client does)."""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(v: Any, out: List[str]) -> None:
    t = type(v)
    if t is str:
        out.append("<value><string>" + _escape(v) + "</string></value>")
    elif t is bool:
        out.append("<value><boolean>%d</boolean></value>" % v)
    elif t is int:
        if not INT32_MIN <= v <= INT32_MAX:
            raise OverflowError("int exceeds XML-RPC limits")
        out.append("<value><int>%d</int></value>" % v)
    elif t is float:
        out.append("<value><double>" + repr(v) + "</double></value>")
    elif v is None:
        out.append("<value><nil/></value>")
    elif t is list or t is tuple:
        out.append("<value><array><data>")
        for item in v:
            _value(item, out)
        out.append("</data></array></value>")
    elif t is dict:
        out.append("<value><struct>")
        for k, item in v.items():
            if type(k) is not str:
                raise _NotSimple(k)
            out.append("<member><name>" + _escape(k) + "</name>")
            _value(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    else:
        raise _NotSimple(v)


def request_body(method: str, params: tuple) -> bytes:
    """The methodCall of ``method(*params)``; _NotSimple for an argument of another type."""
    out = ["<?xml version='1.0'?>\n<methodCall>\n<methodName>", _escape(method),
           "</methodName>\n<params>\n"]
    for p in params:
        out.append("<param>\n")
        _value(p, out)
        out.append("</param>\n")
    out.append("</params>\n</methodCall>\n")
    return "".join(out).encode("utf-8", "xmlcharrefreplace")


class _Method:
    def __init__(self, call: Callable[[str, tuple], Any], name: str):
        self._call = call
        self._name = name

    def __getattr__(self, name: str) -> "_Method":
        return _Method(self._call, self._name + "." + name)

    def __call__(self, *params: Any) -> Any:
        return self._call(self._name, params)


class LeanUnixProxy:
    """``ServerProxy("http://localhost/RPC2")`` over the unix socket ``path``, as xm uses it
    (``allow_none``, the top-level string quirk undone)."""

    def __init__(self, path: str, fallback: Callable[[], Any]):
        self._path = path
        self._fallback = fallback       # makes the standard proxy, when needed
        self._full: Optional[Any] = None
        self._sock: Optional[socket.socket] = None
        self._rfile: Any = None

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Method(self._request, name)

    def _request(self, method: str, params: tuple) -> Any:
        try:
            body = request_body(method, params)
        except _NotSimple:
            if self._full is None:
                self._full = self._fallback()
            return getattr(self._full, method)(*params)
        data = self._post(body)
        result = fast_loads(data)
        if result is None:
            result = _standard_loads(data)      # raises the Fault of a fault response
        if len(result) == 1 and isinstance(result[0], str):
            return unquote_string_result(result[0])
        return result[0] if len(result) == 1 else result

    def _post(self, body: bytes) -> bytes:
        head = ("POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: xm\r\n"
                "Content-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body)).encode()
        reused = self._sock is not None
        try:
            return self._exchange(head + body)
        except (ConnectionError, _Closed) as e:
            self.close()
            if not reused:
                if isinstance(e, _Closed):
                    import http.client
                    raise http.client.RemoteDisconnected("Remote end closed connection "
                                                         "without response") from None
                raise
        return self._exchange(head + body)      # the kept-alive connection had gone (as
        #                                         http.client retries once, so do we)

    def _exchange(self, request: bytes) -> bytes:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self._path)
            except BaseException:
                sock.close()
                raise
            self._sock, self._rfile = sock, sock.makefile("rb")
        self._sock.sendall(request)
        status, reason, headers = _read_head(self._rfile)
        length = headers.get("content-length")
        if length is not None:
            data = self._rfile.read(int(length))
            if len(data) != int(length):
                raise _Closed()
        else:
            data = self._rfile.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        if status != 200:
            import xmlrpc.client
            raise xmlrpc.client.ProtocolError("localhost/RPC2", status, reason, headers)
        return data

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._rfile.close()
                self._sock.close()
            except OSError:
                pass
        self._sock = self._rfile = None


class _Closed(Exception):
    """The server closed the connection before a whole response."""


def _read_head(rfile: Any) -> tuple:
    """(status, reason, headers with lower-case names) of a response."""
    line = rfile.readline(MAX_HEAD)
    if not line:
        raise _Closed()
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        import http.client
        raise http.client.BadStatusLine(line.decode("latin-1"))
    headers = {}
    size = len(line)
    while True:
        line = rfile.readline(MAX_HEAD)
        size += len(line)
        if not line:
            raise _Closed()
        if line in (b"\r\n", b"\n") or size > MAX_HEAD:
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def _standard_loads(data: bytes) -> tuple:
    import xmlrpc.client
    parser, unmarshaller = xmlrpc.client.getparser(use_builtin_types=False)
    parser.feed(data)
    parser.close()
    return unmarshaller.close()
