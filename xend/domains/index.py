"""Which domains have a given name, uuid or domid, without looking at every domain.

With ten thousand domains, scanning all of them at every lookup (by name for ``xm``, by uuid
and name when a domain is created) made each creation slower than the one before. The index
is a superset: every domain that has a key now is in that key's set (a domain reports its
changes, see ``Domain.__setattr__``), and entries a domain no longer matches are dropped
when a lookup meets them. Callers check what they get (membership of the registry, state).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Set

KEYS = ("name", "uuid", "domid")


class DomainIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: Dict[str, Dict[Any, Set[Any]]] = {key: {} for key in KEYS}
        self._entries = 0

    def add(self, dom: Any) -> None:
        """Index ``dom`` under its keys now (on entering the table, and after a change)."""
        with self._lock:
            for key in KEYS:
                value = getattr(dom, key)
                if value is None:
                    continue
                bucket = self._maps[key].setdefault(value, set())
                if dom not in bucket:
                    bucket.add(dom)
                    self._entries += 1

    def discard(self, dom: Any) -> None:
        with self._lock:
            for key in KEYS:
                bucket = self._maps[key].get(getattr(dom, key))
                if bucket is not None and dom in bucket:
                    bucket.discard(dom)
                    self._entries -= 1

    def having(self, key: str, value: Any) -> List[Any]:
        """The domains whose ``key`` is ``value``, oldest first (by serial, the table's
        order)."""
        with self._lock:
            bucket = self._maps[key].get(value)
            if not bucket:
                return []
            stale = [d for d in bucket if getattr(d, key) != value]
            for d in stale:
                bucket.discard(d)
            self._entries -= len(stale)
            if not bucket:
                del self._maps[key][value]
            return sorted(bucket, key=lambda d: d.serial)

    def needs_rebuild(self, live: int) -> bool:
        """True when stale entries outnumber the domains (many changes, few lookups)."""
        return self._entries > 3 * live + 1024

    def rebuild(self, domains: List[Any]) -> None:
        with self._lock:
            self._maps = {key: {} for key in KEYS}
            self._entries = 0
        for dom in domains:
            self.add(dom)
