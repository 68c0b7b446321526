"""Which server ``xm`` talks to, and how: ``/etc/xen/xm-config.xml`` (reference §5.1).

The file (moved by ``XM_CONFIG_FILE``) is the original's::

    <xm>
      <server type="Xen-API" uri="http://localhost:9363/" username="me" password="secret"/>
    </xm>

``type`` is ``Xen-API`` or ``LegacyXMLRPC`` (the default); ``uri`` the server's URI
(``httpu:///path`` for a unix socket, ``http://``, ``https://``). A missing file means the
legacy interface at its usual place; an unreadable or malformed one is an error that names
the file.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Mapping, NamedTuple, Optional

DEFAULT_PATH = "/etc/xen/xm-config.xml"
ENV_PATH = "XM_CONFIG_FILE"
XEN_API = "Xen-API"
LEGACY = "LegacyXMLRPC"
DEFAULT_XENAPI_URI = "httpu:///var/run/xend/xen-api.sock"


class ServerConfig:
    def __init__(self, kind: str = LEGACY, uri: "Optional[str]" = None, username: str = "",
                 password: str = "", source: str = ""):
        self.kind = kind
        self.uri = uri
        self.username = username
        self.password = password
        self.source = source

    @property
    def xenapi(self) -> bool:
        return self.kind == XEN_API


def read(env: "Optional[Mapping[str, str]]" = None) -> ServerConfig:
    """The server of xm-config.xml (a legacy default when there is no file)."""
    from xend.xm.client import ClientError

    env = os.environ if env is None else env
    path = env.get(ENV_PATH) or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if env.get(ENV_PATH):
            raise ClientError(f"Cannot read {path} ({ENV_PATH}): no such file") from None
        return ServerConfig()
    except OSError as e:
        raise ClientError(f"Cannot read {path}: {e.strerror or e}") from None
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ClientError(f"Invalid {path}: {e}") from None
    servers = root.findall("server") if root.tag == "xm" else []
    if root.tag != "xm" or len(servers) > 1:
        raise ClientError(f"Invalid {path}: expected <xm> with at most one <server>")
    if not servers:
        return ServerConfig(source=path)
    s = servers[0]
    kind = s.get("type", LEGACY)
    if kind.lower() == XEN_API.lower():
        kind = XEN_API
    elif kind.lower() == LEGACY.lower():
        kind = LEGACY
    else:
        raise ClientError(f"Invalid {path}: server type {kind!r} is neither {XEN_API} nor "
                          f"{LEGACY}")
    uri = s.get("uri") or (DEFAULT_XENAPI_URI if kind == XEN_API else None)
    return ServerConfig(kind, uri, s.get("username", ""), s.get("password", ""), path)
