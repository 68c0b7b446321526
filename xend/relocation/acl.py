"""Which peers may send us a domain: ``xend-relocation-hosts-allow`` (reference section 4.3).

The option is the original's list of space-separated words, with three changes:

* a word that is an IP address or a CIDR block (``10.1.0.0/16``, ``192.0.2.7``, ``fd00::/8``)
  matches peer *addresses* by value (an IPv4 peer seen as ``::ffff:a.b.c.d`` included);
* every other word is a regular expression that must match the **whole** text
  (``re.fullmatch``), so ``^localhost`` no longer admits ``localhost.attacker.example``;
* a regular expression is tried on the peer's IP text and on its host name, but the name is
  used only if it is *forward-confirmed*: the name found for the address (by reverse lookup,
  chosen as ``socket.getfqdn`` chooses) must resolve back to that address. Anybody who controls
  the reverse zone of their own addresses can make them look up as ``localhost``; they cannot
  make ``localhost`` resolve to them.

Name lookups run in a helper thread with a time budget; a lookup that does not answer in time
counts as "no name" (the peer can still be admitted by address). Results are cached briefly.
An empty option admits everybody.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple, Union

log = logging.getLogger("xend.relocate")

NAME_LOOKUP_BUDGET = 2.0        # seconds for reverse + forward lookups of one peer
NAME_CACHE_SECONDS = 60.0
MAX_PENDING_LOOKUPS = 16        # lookups still running after their budget ran out

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class PeerName:
    """The name found for an address: ``fqdn`` as getfqdn gives it (the address itself when
    there is none) and whether it resolves back to the address."""
    fqdn: str
    confirmed: bool


def normalise_ip(ip: str) -> str:
    """``::ffff:192.0.2.1`` -> ``192.0.2.1``; anything else unchanged."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class HostsAllow:
    """The parsed option. ``HostsAllow('')`` admits everybody."""

    def __init__(self, spec: str):
        self.spec = spec or ""
        self.networks: List[Network] = []
        self.patterns: List[re.Pattern] = []
        for word in self.spec.split():
            try:
                self.networks.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                self.patterns.append(re.compile(word))

    @property
    def allows_everybody(self) -> bool:
        return not self.networks and not self.patterns

    def allows_address(self, ip: str) -> bool:
        """Decided from the address alone: a network contains it or a pattern matches its text."""
        if self.allows_everybody:
            return True
        ip = normalise_ip(ip)
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            addr = None
        if addr is not None and any(addr.version == n.version and addr in n
                                    for n in self.networks):
            return True
        return any(p.fullmatch(ip) for p in self.patterns)

    def allows_name(self, name: PeerName) -> bool:
        return name.confirmed and any(p.fullmatch(name.fqdn) for p in self.patterns)

    @property
    def needs_names(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"HostsAllow({self.spec!r})"


# -- name lookups ---------------------------------------------------------------------------
def _pick_fqdn(hostname: str, aliases: List[str]) -> str:
    """The name socket.getfqdn would return: the first one containing a dot, else the
    primary name."""
    for name in [hostname, *aliases]:
        if "." in name:
            return name
    return hostname


def lookup_name_blocking(ip: str) -> PeerName:
    """Reverse lookup, then forward confirmation. May block as long as the resolver does."""
    try:
        hostname, aliases, _ = socket.gethostbyaddr(ip)
    except (OSError, UnicodeError):
        return PeerName(ip, False)
    fqdn = _pick_fqdn(hostname, aliases)
    try:
        infos = socket.getaddrinfo(fqdn, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return PeerName(fqdn, False)
    addresses = {normalise_ip(info[4][0]) for info in infos}
    return PeerName(fqdn, normalise_ip(ip) in addresses)


class NameResolver:
    """Looks names up with a time budget, a bound on lookups left running, and a cache."""

    def __init__(self, budget: float = NAME_LOOKUP_BUDGET,
                 lookup: Callable[[str], PeerName] = lookup_name_blocking,
                 cache_seconds: float = NAME_CACHE_SECONDS,
                 max_pending: int = MAX_PENDING_LOOKUPS):
        self.budget = budget
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self._pending = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._cache: Dict[str, Tuple[float, PeerName]] = {}

    def __call__(self, ip: str) -> PeerName:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(ip)
            if hit is not None and now - hit[0] < self.cache_seconds:
                return hit[1]
        if not self._pending.acquire(blocking=False):
            log.warning("Too many name lookups in progress; not looking up %s", ip)
            return PeerName(ip, False)
        box: List[PeerName] = []

        def run() -> None:
            try:
                box.append(self.lookup(ip))
            except Exception:  # noqa: BLE001 - a broken resolver means "no name"
                log.debug("name lookup of %s failed", ip, exc_info=True)
            finally:
                self._pending.release()

        t = threading.Thread(target=run, name=f"lookup-{ip}", daemon=True)
        t.start()
        t.join(self.budget)
        if not box:
            log.info("No name for %s within %.1fs", ip, self.budget)
            return PeerName(ip, False)
        with self._lock:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[ip] = (time.monotonic(), box[0])
        return box[0]


def check_peer(acl: HostsAllow, ip: str, resolve: Callable[[str], PeerName]) -> bool:
    """The full check; a refusal is logged ``Rejected connection from <ip> (<fqdn>).``"""
    if acl.allows_address(ip):
        return True
    name = resolve(normalise_ip(ip))
    if acl.allows_name(name):
        return True
    log.warning("Rejected connection from %s (%s).", ip, name.fqdn)
    if not name.confirmed and name.fqdn != normalise_ip(ip) and any(
            p.fullmatch(name.fqdn) for p in acl.patterns):
        log.warning("%s claims the name %s, which does not resolve back to it", ip, name.fqdn)
    return False
