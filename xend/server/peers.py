"""Who may use a TCP listener: the peer check every TCP server makes in ``verify_request``.

A unix socket is protected by its file mode (only root can connect). A TCP port is open to
every process of the machine, so each TCP listener asks this module about every connection:

* **Local callers** (a process on this machine, through loopback or one of the host's own
  addresses) are identified by the kernel: the peer's end of the connection is a socket in
  this host's socket table (``/proc/net/tcp`` and ``/proc/net/tcp6``), and that table says
  which uid owns it. Root is served, and so is the uid xend itself runs as; so are the users
  and groups the option ``xend-tcp-users-allow`` names (``alice 1001 @xenadm``). A loopback
  caller whose socket cannot be found is refused (it closed already, or it is not ours to
  see).
* **Remote callers** (the peer's socket is not in our table) are served only as the listener
  says: ``REFUSE`` (plain XML-RPC, HTTP: no way to tell who they are), ``CERTIFICATE`` (a TLS
  listener with a CA file: the client must present a certificate the CA signed, checked by
  ``admit_tls`` after the handshake), or ``OPEN`` (plain relocation: left to the listener's
  own check, ``xend-relocation-hosts-allow``).

Every refusal is logged, with the listener, the peer's address and, for a local caller, its
uid and user name. ``PeerGate`` is what a server holds (``PeerCheckMixin`` puts it in the
server's ``verify_request``); ``peer_uid`` and ``AllowedUsers`` are the pieces it is made of.
A new TCP listener takes part like this::

    class MyTCPServer(PeerCheckMixin, socketserver.ThreadingTCPServer): ...
    server.peer_gate = PeerGate.from_options("MyServer-tcp", REFUSE, lambda: node.opts)
    # a TLS one: context from tls_server_context(cert, key, ca), remote=CERTIFICATE if ca,
    # and after the handshake: if not server.peer_gate.admit_tls(sock, addr): close it
"""
from __future__ import annotations

import grp
import ipaddress
import logging
import os
import pwd
import socket
import ssl
import struct
import threading
from typing import Any, Callable, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple, Union

log = logging.getLogger("xend.peers")

OPTION = "xend-tcp-users-allow"
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")

#: how remote callers (not on this machine) are treated by a listener
REFUSE = "refuse"
CERTIFICATE = "certificate"
OPEN = "open"

_TIME_WAIT = "06"       # state column: a dead connection, listed with uid 0
_LISTEN = "0A"


# -- the kernel's socket table ----------------------------------------------------------------
def _table_address(ip: str, port: int, family: int) -> str:
    """``ip:port`` as /proc/net/tcp{,6} prints it: each 32-bit word of the address in host
    byte order, in hex, then the port in hex."""
    packed = socket.inet_pton(family, ip)
    words = struct.unpack("=%dI" % (len(packed) // 4), packed)
    return "".join("%08X" % w for w in words) + ":%04X" % port


def _address(ip: str) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """The address of ``ip`` text, ``::ffff:a.b.c.d`` as the IPv4 address it stands for;
    ValueError when it is none."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _encodings(ip: str, port: int) -> List[Tuple[str, str]]:
    """(table, encoded address) under which the socket bound to ip:port may be listed: an
    IPv4 address also appears, on a dual-stack socket, as ``::ffff:a.b.c.d`` in tcp6."""
    addr = _address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return [(TCP_TABLES[0], _table_address(str(addr), port, socket.AF_INET)),
                (TCP_TABLES[1], _table_address("::ffff:" + str(addr), port, socket.AF_INET6))]
    return [(TCP_TABLES[1], _table_address(str(addr), port, socket.AF_INET6))]


def peer_uid(sock: socket.socket, tables: Sequence[str] = TCP_TABLES) -> Optional[int]:
    """The uid owning the other end of the accepted TCP connection ``sock``, when that end
    is a socket of this machine; None when it is not (a remote peer) or cannot be told.

    The peer's socket is the table entry whose *local* address is our *remote* one and whose
    *remote* address is our local one. Entries in TIME_WAIT, or no longer held by any process
    (inode 0), are not trusted: the table lists them with uid 0."""
    try:
        ours = sock.getsockname()
        theirs = sock.getpeername()
    except OSError:
        return None
    try:
        their_keys = _encodings(theirs[0], theirs[1])
        our_keys = dict(_encodings(ours[0], ours[1]))
    except ValueError:
        return None
    found: List[int] = []
    for table, their_key in their_keys:
        if table not in tables:
            continue
        our_key = our_keys.get(table)
        try:
            with open(table, "r") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[1] != their_key or fields[2] != our_key:
                continue
            if fields[3] in (_TIME_WAIT, _LISTEN) or fields[9] == "0":
                continue
            try:
                found.append(int(fields[7]))
            except ValueError:
                continue
    return found[0] if len(set(found)) == 1 else None


def is_loopback(ip: str) -> bool:
    try:
        return _address(ip).is_loopback
    except ValueError:
        return False


# -- who is allowed ---------------------------------------------------------------------------
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "?"


class AllowedUsers:
    """Root, xend's own uid, and the users / ``@groups`` of ``xend-tcp-users-allow``.

    Names are looked up when the policy is made; a group also admits the users whose primary
    group it is. A name that does not exist is logged and admits nobody."""

    def __init__(self, words: Sequence[str] = (), own_uid: Optional[int] = None):
        self.words: Tuple[str, ...] = tuple(words)
        uids = {0, os.geteuid() if own_uid is None else own_uid}
        gids = set()
        for word in self.words:
            if word.startswith("@"):
                found = _lookup(word[1:], "group", lambda n: grp.getgrnam(n).gr_gid)
                gids.update([found] if found is not None else [])
            else:
                found = _lookup(word, "user", lambda n: pwd.getpwnam(n).pw_uid)
                uids.update([found] if found is not None else [])
        self.uids: FrozenSet[int] = frozenset(uids)
        self.gids: FrozenSet[int] = frozenset(gids)

    def allows(self, uid: int) -> bool:
        if uid in self.uids:
            return True
        if not self.gids:
            return False
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return False
        return bool(self.gids.intersection(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def _lookup(word: str, what: str, by_name: Callable[[str], int]) -> Optional[int]:
    """A number as it is; a name through ``by_name`` (None, logged, when there is none)."""
    if word.isdigit():
        return int(word)
    try:
        return by_name(word)
    except KeyError:
        log.warning("%s: no %s %s", OPTION, what, word)
        return None


# -- the gate a server holds ------------------------------------------------------------------
class PeerGate:
    """The peer check of one TCP listener.

    ``users_allow`` gives the current value of ``xend-tcp-users-allow`` (a list of words), so
    that a reload of the config changes who is served without restarting the listener.
    ``remote`` is REFUSE, CERTIFICATE or OPEN (see the module's text)."""

    def __init__(self, listener: str, remote: str = REFUSE,
                 users_allow: Callable[[], Sequence[str]] = lambda: (),
                 tables: Sequence[str] = TCP_TABLES):
        if remote not in (REFUSE, CERTIFICATE, OPEN):
            raise ValueError(f"bad remote policy {remote!r}")
        self.listener = listener
        self.remote = remote
        self.users_allow = users_allow
        self.tables = tables
        self._lock = threading.Lock()
        self._users: Optional[AllowedUsers] = None
        self._need_certificate: Set[object] = set()   # remote callers until admit_tls

    @classmethod
    def from_options(cls, listener: str, remote: str,
                     options: Callable[[], Mapping[str, Any]]) -> "PeerGate":
        """A gate reading ``xend-tcp-users-allow`` from ``options()`` (the current Options)
        on every connection."""
        return cls(listener, remote, lambda: options()[OPTION])

    def allowed_users(self) -> AllowedUsers:
        words = tuple(self.users_allow() or ())
        with self._lock:
            if self._users is None or self._users.words != words:
                self._users = AllowedUsers(words)
            return self._users

    def refuse(self, client_address, why: str) -> bool:
        log.warning("%s: refused connection from %s: %s", self.listener,
                    describe(client_address), why)
        return False

    def admit(self, request: socket.socket, client_address) -> bool:
        """For ``verify_request``: what the socket table and the address decide. A remote
        caller of a CERTIFICATE listener is let through to its TLS handshake and checked
        again by ``admit_tls``."""
        uid = peer_uid(request, self.tables)
        ip = client_address[0] if isinstance(client_address, tuple) else ""
        if uid is not None:
            if self.allowed_users().allows(uid):
                return True
            return self.refuse(client_address, f"local user {user_name(uid)} (uid {uid}) "
                               f"is not root and not named by {OPTION}")
        if is_loopback(ip) or _is_our_address(request, ip):
            if _hung_up_silently(request):      # e.g. a probe of whether we listen
                log.debug("%s: %s hung up before it could be identified", self.listener,
                          describe(client_address))
                return False
            return self.refuse(client_address, "a local caller whose socket cannot be found "
                               "in the socket table")
        if self.remote == REFUSE:
            return self.refuse(client_address, "callers from other hosts are served only by "
                               "a TLS listener with a CA file for client certificates")
        if self.remote == CERTIFICATE:
            with self._lock:
                self._need_certificate.add(request)
        return True

    def admit_tls(self, request: ssl.SSLSocket, client_address) -> bool:
        """After the TLS handshake: a remote caller must have presented a certificate that the
        listener's CA verified (its context asks for one: ``tls_server_context``)."""
        with self._lock:
            if request not in self._need_certificate:
                return True
            self._need_certificate.discard(request)
        try:
            cert = request.getpeercert()
        except (OSError, ValueError):
            cert = None
        if not cert:
            return self.refuse(client_address, "a caller from another host without a client "
                               "certificate signed by the CA")
        return True

    def forget(self, request) -> None:
        with self._lock:
            self._need_certificate.discard(request)


def _hung_up_silently(request: socket.socket) -> bool:
    """The peer closed the connection without sending a byte (nothing to refuse). Peeks
    at the TCP stream itself, under TLS too (socket.socket.recv, before any handshake)."""
    try:
        return socket.socket.recv(request, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):
        return False


def _is_our_address(request: socket.socket, ip: str) -> bool:
    try:
        return request.getsockname()[0] == ip
    except OSError:
        return True


class PeerCheckMixin:
    """For a ``socketserver`` TCP server with a ``peer_gate``: the check in
    ``verify_request``; a TLS server calls ``peer_gate.admit_tls`` after its handshake."""

    peer_gate: PeerGate

    def verify_request(self, request, client_address) -> bool:
        return self.peer_gate.admit(request, client_address)

    def shutdown_request(self, request) -> None:
        self.peer_gate.forget(request)
        super().shutdown_request(request)       # type: ignore[misc]


def tls_server_context(cert_file: str, key_file: str,
                       ca_file: Optional[str] = None) -> ssl.SSLContext:
    """A TLS server context; with ``ca_file``, clients may present a certificate, which is
    then verified against it (CERT_OPTIONAL: local callers need none)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def describe(client_address) -> str:
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)
