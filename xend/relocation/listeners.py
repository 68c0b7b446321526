"""The relocation listeners the options enable (reference sections 4.1 and 4.3).

* TCP on ``xend-relocation-server``: ``xend-relocation-address``:``xend-relocation-port``;
* TLS on ``xend-relocation-ssl-server``: same address, ``xend-relocation-ssl-port``, with
  ``xend-relocation-server-ssl-key-file`` / ``-cert-file``;
* the unix socket ``xend-relocation-unix-path`` with ``xend-unix-server`` (no host check).

An address that is not an IP literal is tried as a network interface name (its IPv4 address,
SIOCGIFADDR) and otherwise used as a host name. ``xend-relocation-hosts-allow`` is read from
the node's current options on every connection, so a reload changes it without a restart; a
listener restarts on reload only when its address, port or TLS files change.
"""
from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
import struct
from typing import List, Mapping, Optional

from xend.relocation.journal import Journal
from xend.server import peers
from xend.server.listeners import ListenerError, ListenerSpec, unix_listener
from xend.server.specs import peer_gate

log = logging.getLogger("xend.relocate")

SIOCGIFADDR = 0x8915
IFNAMSIZ = 16


def interface_address(name: str) -> Optional[str]:
    """IPv4 address of network interface ``name``, None if there is no such interface (or it
    has no IPv4 address)."""
    if not name or len(name.encode()) >= IFNAMSIZ:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            ifreq = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:
            return None
    return socket.inet_ntoa(ifreq[20:24])


def bind_address(address: str) -> str:
    """'' and IP literals as they are; an interface name -> its IPv4 address; else the host
    name as it is."""
    if not address:
        return ""
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    resolved = interface_address(address)
    if resolved is not None:
        log.debug("relocation address %s is interface %s", resolved, address)
        return resolved
    return address


def journal_for(opts: Mapping) -> Journal:
    return Journal(os.path.join(opts["xend-state-path"], "relocation"))


def relocation_specs(opts: Mapping, node) -> List[ListenerSpec]:
    from xend.relocation import server
    from xend.relocation.receiver import Receiver

    def registry():
        return node.domains

    def hosts_allow() -> str:
        current = getattr(node, "opts", None) or opts
        return current["xend-relocation-hosts-allow"] or ""

    receiver = Receiver(registry, journal_for(opts))
    specs: List[ListenerSpec] = []
    host = bind_address(opts["xend-relocation-address"] or "")

    if opts["xend-relocation-server"]:
        addr = (host, opts["xend-relocation-port"])
        specs.append(ListenerSpec(
            "RelocationServer-tcp", (addr,), addr,
            lambda: server.TCPRelocationServer(
                addr, receiver, hosts_allow,
                peer_gate=peer_gate(node, opts, "RelocationServer-tcp", peers.OPEN))))

    if opts["xend-relocation-ssl-server"]:
        ssl_addr = (host, opts["xend-relocation-ssl-port"])
        key_file = opts["xend-relocation-server-ssl-key-file"]
        cert_file = opts["xend-relocation-server-ssl-cert-file"]
        ca_file = opts["xend-relocation-server-ssl-ca-file"]

        def make_ssl():
            if not key_file or not cert_file:
                raise ListenerError("RelocationServer-ssl: xend-relocation-server-ssl-key-file "
                                    "and xend-relocation-server-ssl-cert-file must both be set")
            ctx = peers.tls_server_context(cert_file, key_file, ca_file)
            gate = peer_gate(node, opts, "RelocationServer-ssl",
                             peers.CERTIFICATE if ca_file else peers.REFUSE,
                             "xend-relocation-server-ssl-ca-file")
            return server.TCPRelocationServer(ssl_addr, receiver, hosts_allow, ssl_context=ctx,
                                              peer_gate=gate)

        specs.append(ListenerSpec("RelocationServer-ssl",
                                  (ssl_addr, key_file, cert_file, ca_file), ssl_addr, make_ssl))

    if opts["xend-unix-server"]:
        path = opts["xend-relocation-unix-path"]
        specs.append(unix_listener("RelocationServer-unix", (path,), path,
                                   lambda sock: server.UnixRelocationServer(sock, receiver)))
    return specs
