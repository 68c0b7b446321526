"""XML-RPC connection to xend for ``xm`` (reference section 5.1).

URIs: ``httpu:///path/to/socket`` (HTTP over a unix socket, the default), ``http://host:port``
and ``https://host:port``. ``None`` travels as ``<nil/>`` both ways. A method whose top-level
result is a string arrives Python-escaped without its outer quotes; it is decoded here, so
callers always see the real string.

Only the standard library is imported, and ``xmlrpc.client`` only when a proxy is made.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Mapping, Optional

DEFAULT_SOCKET = "/var/run/xend/xmlrpc.sock"
DEFAULT_URI = "httpu://" + DEFAULT_SOCKET
DEFAULT_XEND_CONFIG = "/etc/xen/xend-config.sxp"
ENV_SERVER = "XM_SERVER"
ENV_XEND_CONFIG = "XEND_CONFIG"


class ClientError(Exception):
    """A problem on the client side before any request was made (bad URI, unreadable config)."""


def uri_from_xend_config(path: str) -> str:
    """The unix XML-RPC socket named by a xend-config.sxp (``xend-unix-xmlrpc-path``)."""
    from xend.options import load_options  # only when a config is given: keeps start-up cheap

    try:
        opts = load_options(path)
    except OSError as e:
        raise ClientError(f"Cannot read xend config {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - ConfigError and friends: show their own text
        raise ClientError(f"Invalid xend config {path}: {e}") from None
    return "httpu://" + str(opts["xend-unix-xmlrpc-path"])


def resolve_server(config_path: Optional[str] = None,
                   env: Optional[Mapping[str, str]] = None):
    """Which server ``xm`` talks to, and over which interface (a ``ServerConfig``).

    An explicit ``-c/--config FILE`` flag wins, then ``XM_SERVER``, then the server that
    ``xm-config.xml`` names (``XM_CONFIG_FILE`` moves it; a ``Xen-API`` server makes xm use
    the Xen-API), then the xend config named by ``XEND_CONFIG``, then the default socket.
    """
    from xend.xm.serverconfig import LEGACY, ServerConfig, read

    env = os.environ if env is None else env
    if config_path:
        return ServerConfig(LEGACY, uri_from_xend_config(config_path))
    if env.get(ENV_SERVER):
        return ServerConfig(LEGACY, env[ENV_SERVER])
    configured = read(env)
    if configured.xenapi or configured.uri:
        return configured
    if env.get(ENV_XEND_CONFIG):
        return ServerConfig(LEGACY, uri_from_xend_config(env[ENV_XEND_CONFIG]))
    return ServerConfig(LEGACY, DEFAULT_URI)


def resolve_uri(config_path: Optional[str] = None,
                env: Optional[Mapping[str, str]] = None) -> str:
    """The URI of the server ``resolve_server`` chooses."""
    return resolve_server(config_path, env).uri


def xend_config_path(config_path: Optional[str] = None,
                     env: Optional[Mapping[str, str]] = None) -> str:
    """The xend-config.sxp ``xm info -c`` reads."""
    env = os.environ if env is None else env
    return config_path or env.get(ENV_XEND_CONFIG) or DEFAULT_XEND_CONFIG


def unquote_string_result(text: str) -> str:
    """Undo the server's top-level string quirk: ``repr(s)`` sent without its outer quotes.

    ``repr`` uses double quotes only when the text holds a ``'`` and no ``"``, and then leaves
    the ``'`` unescaped; with single quotes every ``'`` is escaped. So an unescaped ``'``
    tells which quote to put back before evaluating the literal (safely, as a literal only).
    """
    import ast

    quote = "'"
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            quote = '"'
            break
        i += 1
    try:
        value = ast.literal_eval(quote + text + quote)
    except (SyntaxError, ValueError):
        return text
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else text


_FAST: dict = {}


def _fast_patterns() -> dict:
    if not _FAST:
        import re

        _FAST["head"] = re.compile(
            r"\s*(?:<\?xml version=['\"]1\.0['\"](?:\s+encoding=['\"](?:utf-8|UTF-8)['\"])?"
            r"\s*\?>)?\s*<methodResponse>\s*<params>\s*<param>")
        _FAST["tail"] = re.compile(r"\s*</param>\s*</params>\s*</methodResponse>\s*\Z")
        _FAST["token"] = re.compile(
            r"\s*(?:<value>(?:<string>(?P<s>[^<]*)</string>|(?P<b>[^<]*))</value>"
            r"|<value><(?P<t>int|i4|i8|double|boolean)>(?P<n>[^<]*)</(?P=t)></value>"
            r"|(?P<a><value><array><data>)"
            r"|(?P<ea></data></array></value>)"
            r"|(?P<st><value><struct>)"
            r"|<member>\s*<name>(?P<k>[^<]*)</name>"
            r"|(?P<em></member>)"
            r"|(?P<es></struct></value>)"
            r"|(?P<nil><value><nil\s*/></value>))")
        _FAST["entity"] = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
    return _FAST


_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _xml_text(raw: str) -> Optional[str]:
    """Character data as an XML parser reports it: line ends normalised, then entities decoded
    (so ``&#13;`` stays a carriage return)."""
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if "&" in raw:
        def entity(m):  # type: ignore[no-untyped-def]
            if m.group(1):
                return _ENTITIES[m.group(1)]
            return chr(int(m.group(2)) if m.group(2) else int(m.group(3), 16))

        try:
            decoded = _fast_patterns()["entity"].sub(entity, raw)
        except (ValueError, OverflowError):
            return None
        if "&" in _fast_patterns()["entity"].sub("", raw):
            return None  # an entity XML does not know: let the real parser complain
        raw = decoded
    return raw


def fast_loads(body: bytes) -> Optional[tuple]:
    """Decode a one-value XML-RPC response of strings, numbers, nil, arrays and structs.

    ``xm list`` with a thousand domains receives megabytes of nested arrays; this reads them a
    few times faster than ``xmlrpc.client``'s parser. Anything else (faults, base64, dates,
    other encodings, CDATA, comments, unusual layout) gives ``None``, and the caller uses the
    standard parser, so the result is always the same as ``xmlrpc.client.loads``.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    patterns = _fast_patterns()
    m = patterns["head"].match(text)
    if m is None:
        return None
    pos = m.end()
    match = patterns["token"].match
    root: list = []
    cur: Any = root
    stack: list = []
    key: Optional[str] = None
    while True:
        m = match(text, pos)
        if m is None:
            break
        pos = m.end()
        g = m.lastgroup
        if g == "s" or g == "b":
            v: Any = _xml_text(m.group(g))
            if v is None:
                return None
        elif g == "n":
            kind, raw = m.group("t"), m.group("n").strip()
            try:
                if kind == "double":
                    v = float(raw)
                elif kind == "boolean":
                    if raw not in ("0", "1"):
                        return None
                    v = raw == "1"
                else:
                    v = int(raw)
            except ValueError:
                return None
        elif g == "a" or g == "st":
            v = [] if g == "a" else {}
            if type(cur) is list:
                cur.append(v)
            elif key is None:
                return None
            else:
                cur[key] = v
                key = None
            stack.append(cur)
            cur = v
            continue
        elif g == "ea" or g == "es":
            if not stack or type(cur) is not (list if g == "ea" else dict) or key is not None:
                return None
            cur = stack.pop()
            continue
        elif g == "k":
            if type(cur) is not dict or key is not None:
                return None
            key = _xml_text(m.group("k"))
            if key is None:
                return None
            continue
        elif g == "em":
            if key is not None:
                return None
            continue
        elif g == "nil":
            v = None
        else:  # pragma: no cover - every alternative is named
            return None
        if type(cur) is list:
            cur.append(v)
        elif key is None:
            return None
        else:
            cur[key] = v
            key = None
    if stack or len(root) != 1 or not patterns["tail"].match(text, pos):
        return None
    return (root[0],)


def make_proxy(uri: str):
    """A proxy for ``uri`` that behaves as an ``xmlrpc.client.ServerProxy`` (``allow_none``,
    string quirk undone): on a unix socket ``lean_rpc``'s, which needs no ``xmlrpc.client``
    for the calls xm makes; else the standard one."""
    if uri.startswith("httpu://"):
        path = uri[len("httpu://"):]
        if not path.startswith("/"):
            raise ClientError(f"Invalid server URI {uri}: expected httpu:///absolute/path")
        from xend.xm.lean_rpc import LeanUnixProxy

        return LeanUnixProxy(path, lambda: standard_proxy(uri))
    return standard_proxy(uri)


def standard_proxy(uri: str):
    """The ``xmlrpc.client.ServerProxy`` for ``uri``."""
    import xmlrpc.client

    transports = _transport_classes()
    if uri.startswith("httpu://"):
        return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                         transport=transports["unix"](uri[len("httpu://"):]),
                                         allow_none=True)
    if uri.startswith("http://"):
        transport = transports["http"]()
    elif uri.startswith("https://"):
        transport = transports["https"]()
    else:
        raise ClientError(f"Unsupported server URI {uri} (use httpu://, http:// or https://)")
    rest = uri.split("://", 1)[1]
    if "/" not in rest:
        uri = uri + "/RPC2"
    return xmlrpc.client.ServerProxy(uri, transport=transport, allow_none=True)


_TRANSPORTS: dict = {}


def _transport_classes() -> dict:
    """Transport classes, defined on first use so that importing this module stays free."""
    if _TRANSPORTS:
        return _TRANSPORTS
    import http.client
    import socket
    import xmlrpc.client

    class _Quirk:
        def parse_response(self, response):  # type: ignore[no-untyped-def]
            if response.getheader("Content-Encoding", ""):
                result = super().parse_response(response)  # type: ignore[misc]
            else:
                body = response.read()
                result = fast_loads(body)
                if result is None:
                    parser, unmarshaller = self.getparser()  # type: ignore[attr-defined]
                    parser.feed(body)
                    parser.close()
                    result = unmarshaller.close()  # raises Fault for a fault response
            if len(result) == 1 and isinstance(result[0], str):
                return (unquote_string_result(result[0]),)
            return result

    class UnixHTTPConnection(http.client.HTTPConnection):
        def __init__(self, path: str):
            super().__init__("localhost")
            self.unix_path = path

        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.unix_path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    class UnixTransport(_Quirk, xmlrpc.client.Transport):
        # a local socket gains nothing from gzip: without it the server does not compress
        # (2.6 MB for ``xm list`` of 1000 domains), nor we decompress, and fast_loads applies
        accept_gzip_encoding = False

        def __init__(self, path: str):
            super().__init__()
            self.unix_path = path

        def make_connection(self, host):  # type: ignore[no-untyped-def]
            if self._connection and host == self._connection[0]:
                return self._connection[1]
            conn = UnixHTTPConnection(self.unix_path)
            self._connection = host, conn
            return conn

    class HTTPTransport(_Quirk, xmlrpc.client.Transport):
        pass

    class HTTPSTransport(_Quirk, xmlrpc.client.SafeTransport):
        pass

    _TRANSPORTS.update(unix=UnixTransport, http=HTTPTransport, https=HTTPSTransport)
    return _TRANSPORTS
