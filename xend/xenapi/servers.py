"""The Xen-API listeners of ``xen-api-server``: the unix socket and TCP ports (plain or TLS),
built on the same server classes as the legacy XML-RPC listeners (``xend.server.xmlrpc``), so
the same limits, timeouts and peer checks apply to them.

Who gets in on a TCP port, in the connection's own thread before a byte is read:

* the entry's HOSTS, if given: the peer's address or its forward-confirmed name must match
  (``xend.relocation.acl``, as for ``xend-relocation-hosts-allow``);
* a caller from another host (not loopback, not one of our addresses) of an entry without
  authentication and without HOSTS is refused: nothing would tell who it is;
* a caller on this host is identified by the uid owning its socket, as on the other TCP
  listeners (``xend.server.peers``, in the server classes' ``verify_request``): root, xend's
  uid and those ``xend-tcp-users-allow`` names are served, others refused.

The unix socket is owner-only (mode 0600 in a 0700 directory), as the legacy one.
"""
from __future__ import annotations

import logging
import socket
from typing import Any, Callable, List, Mapping, Optional

from xend.relocation import acl as acl_mod
from xend.server import peers, xmlrpc
from xend.server.listeners import ListenerError, ListenerSpec, unix_listener

from .auth import PamUnavailable, make_authenticator
from .config import AUTH_NONE, Endpoint, parse_entries

log = logging.getLogger("xend.XendAPI")


class PeerRefused(ConnectionRefusedError):
    """The peer may not use this listener (already logged); closed unanswered."""


def _is_local(request: socket.socket, ip: str) -> bool:
    """A caller on this host (the peer gate has identified it by its uid already)."""
    if peers.is_loopback(ip):
        return True
    try:
        return acl_mod.normalise_ip(request.getsockname()[0]) == ip
    except OSError:
        return False


class UnixXenAPIServer(xmlrpc.UnixXMLRPCServer):
    pass


class TCPXenAPIServer(xmlrpc.TCPXMLRPCServer):
    def __init__(self, address: tuple, dispatcher: Any, endpoint: Endpoint,
                 ssl_context: Any = None, peer_gate: Optional[peers.PeerGate] = None,
                 resolver: Optional[Callable[[str], acl_mod.PeerName]] = None):
        self.endpoint = endpoint
        self.hosts = acl_mod.HostsAllow(endpoint.hosts)
        self.resolver = resolver or acl_mod.NameResolver()
        # callers from other hosts are this class's business (HOSTS, pam): OPEN for the gate
        super().__init__(address, dispatcher, ssl_context,
                         peer_gate or peers.PeerGate(endpoint.name, peers.OPEN))

    def prepare_request(self, request) -> None:
        try:
            peer = request.getpeername()
        except OSError:
            raise PeerRefused("the peer went away") from None
        ip = acl_mod.normalise_ip(str(peer[0]))
        name = self.endpoint.name
        if not self.hosts.allows_everybody:
            if not acl_mod.check_peer(self.hosts, ip, self.resolver):
                raise PeerRefused(f"{name}: refused by the entry's hosts")
        elif self.endpoint.auth == AUTH_NONE and not _is_local(request, ip):
            log.warning("%s: refused connection from %s: a listener without authentication "
                        "serves callers from other hosts only when its entry names HOSTS",
                        name, ip)
            raise PeerRefused(f"{name}: remote callers need pam or HOSTS")
        super().prepare_request(request)


def xenapi_specs(opts: Mapping, node) -> List[ListenerSpec]:
    """A ListenerSpec per entry of ``xen-api-server`` (none for ``()``)."""
    endpoints = parse_entries(opts["xen-api-server"] or [])
    if not endpoints:
        return []
    from xend.server.methods import build_method_table

    api = node.xenapi_service()
    legacy = xmlrpc.XendDispatcher(build_method_table(node))
    return [_spec(opts, node, api, legacy, ep) for ep in endpoints]


def _authenticator(ep: Endpoint):
    try:
        return make_authenticator(ep.auth)
    except PamUnavailable as e:
        raise ListenerError(f"{ep.name}: pam authentication is not available: {e}") from None


def _spec(opts: Mapping, node, api, legacy, ep: Endpoint) -> ListenerSpec:
    from .service import XenAPIDispatcher

    def dispatcher() -> XenAPIDispatcher:
        return XenAPIDispatcher(api, ep.name, _authenticator(ep),
                                legacy if ep.auth == AUTH_NONE else None)

    if ep.unix:
        path = opts["xen-api-unix-path"]
        return unix_listener(ep.name, (path, ep), path,
                             lambda sock: UnixXenAPIServer(sock, dispatcher()))
    addr = (ep.host, ep.port)

    def make_tcp():
        from xend.server.specs import peer_gate

        d = dispatcher()
        ctx = xmlrpc.server_tls_context(ep.cert_file, ep.key_file) if ep.tls else None
        return TCPXenAPIServer(addr, d, ep, ctx, peer_gate(node, opts, ep.name, peers.OPEN))

    return ListenerSpec(ep.name, (ep,), addr, make_tcp)
