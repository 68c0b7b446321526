"""Which listeners the options enable, and what defines each (its reload key)."""
from __future__ import annotations

from typing import List, Mapping

from xend.server.listeners import ListenerSpec, unix_listener


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

        def make_tcp():
            ctx = xmlrpc.server_tls_context(cert_file, key_file) if key_file and cert_file else None
            return xmlrpc.TCPXMLRPCServer(addr, dispatcher, ctx)

        specs.append(ListenerSpec("XMLRPCServer-tcp", (addr, key_file, cert_file), addr, make_tcp))

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
        specs.append(ListenerSpec("HttpServer-tcp", (addr,), addr,
                                  lambda: http.TCPHTTPServer(addr, node)))
    return specs


def relocation_specs(opts: Mapping, node) -> List[ListenerSpec]:
    if not (opts["xend-relocation-server"] or opts["xend-relocation-ssl-server"]
            or opts["xend-unix-server"]):
        return []
    from xend.relocation.listeners import relocation_specs as specs
    return specs(opts, node)
