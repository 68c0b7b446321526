"""Which listeners the options enable, and what defines each (its reload key)."""
from __future__ import annotations

import logging
from typing import List, Mapping, Optional

from xend.server import peers
from xend.server.listeners import ListenerSpec, unix_listener

log = logging.getLogger("xend.SrvServer")


def listener_specs(opts: Mapping, node) -> List[ListenerSpec]:
    from xend.server import xmlrpc
    from xend.server.methods import build_method_table

    dispatcher = xmlrpc.XendDispatcher(build_method_table(node))
    specs: List[ListenerSpec] = []

    if opts["xend-unix-xmlrpc-server"]:
        path = opts["xend-unix-xmlrpc-path"]
        specs.append(unix_listener("XMLRPCServer-unix", (path,), path,
                                   lambda sock: xmlrpc.UnixXMLRPCServer(sock, dispatcher)))

    if opts["xend-tcp-xmlrpc-server"]:
        addr = (opts["xend-tcp-xmlrpc-server-address"], opts["xend-tcp-xmlrpc-server-port"])
        key_file = opts["xend-tcp-xmlrpc-server-ssl-key-file"]
        cert_file = opts["xend-tcp-xmlrpc-server-ssl-cert-file"]
        ca_file = opts["xend-tcp-xmlrpc-server-ssl-ca-file"]

        def make_tcp():
            tls = bool(key_file and cert_file)
            ctx = peers.tls_server_context(cert_file, key_file, ca_file) if tls else None
            gate = peer_gate(node, opts, "XMLRPCServer-tcp",
                             peers.CERTIFICATE if tls and ca_file else peers.REFUSE,
                             "xend-tcp-xmlrpc-server-ssl-ca-file" if tls else None)
            return xmlrpc.TCPXMLRPCServer(addr, dispatcher, ctx, gate)

        specs.append(ListenerSpec("XMLRPCServer-tcp", (addr, key_file, cert_file, ca_file),
                                  addr, make_tcp))

    specs.extend(http_specs(opts, node))
    specs.extend(relocation_specs(opts, node))
    specs.extend(xenapi_specs(opts, node))
    return specs


def xenapi_specs(opts: Mapping, node) -> List[ListenerSpec]:
    if not opts["xen-api-server"]:
        return []
    from xend.xenapi.servers import xenapi_specs as specs
    return specs(opts, node)


def http_specs(opts: Mapping, node) -> List[ListenerSpec]:
    specs: List[ListenerSpec] = []
    if not (opts["xend-unix-server"] or opts["xend-http-server"]):
        return specs
    from xend.server import http
    if opts["xend-unix-server"]:
        path = opts["xend-unix-path"]
        specs.append(unix_listener("HttpServer-unix", (path,), path,
                                   lambda sock: http.UnixHTTPServer(sock, node)))
    if opts["xend-http-server"]:
        addr = (opts["xend-address"], opts["xend-port"])
        specs.append(ListenerSpec(
            "HttpServer-tcp", (addr,), addr,
            lambda: http.TCPHTTPServer(addr, node,
                                       peer_gate(node, opts, "HttpServer-tcp", peers.REFUSE))))
    return specs


def relocation_specs(opts: Mapping, node) -> List[ListenerSpec]:
    if not (opts["xend-relocation-server"] or opts["xend-relocation-ssl-server"]
            or opts["xend-unix-server"]):
        return []
    from xend.relocation.listeners import relocation_specs as specs
    return specs(opts, node)


def peer_gate(node, opts: Mapping, listener: str, remote: str,
              ca_option: Optional[str] = None) -> peers.PeerGate:
    """The peer check of a TCP listener (xend.server.peers), reading xend-tcp-users-allow
    from the node's current options, so that a reload changes it.
    ``ca_option``: the TLS listener's CA option, named in a warning when remote callers are
    refused for want of it."""
    if remote == peers.REFUSE and ca_option:
        log.warning("%s: %s is not set: callers from other hosts will be refused", listener,
                    ca_option)
    return peers.PeerGate.from_options(listener, remote,
                                       lambda: getattr(node, "opts", None) or opts)
