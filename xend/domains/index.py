"""Which domains have a given name, uuid or domid, without looking at every domain.

With ten thousand domains, scanning all of them at every lookup (by name for ``xm``, by uuid
and name when a domain is created) made each creation slower than the one before. The index
is a superset: every domain that has a key now is in that key's set (a domain reports its
changes, see ``Domain.__setattr__``), and entries a domain no longer matches are dropped
when a lookup meets them. Callers check what they get (membership of the registry, state).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List

KEYS = ("name", "uuid", "domid")


class DomainIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: Dict[str, Dict[Any, Any]] = {key: {} for key in KEYS}
        self._entries = 0

    # A key held by one domain (nearly all of them) maps to that domain, by several to a set:
    # a set per key and domain would be most of the index's memory.
    def add(self, dom: Any) -> None:
        """Index ``dom`` under its keys now (on entering the table, and after a change)."""
        with self._lock:
            for key in KEYS:
                value = getattr(dom, key)
                if value is None:
                    continue
                held = self._maps[key].get(value)
                if held is None:
                    self._maps[key][value] = dom
                elif held is dom:
                    continue
                elif isinstance(held, set):
                    if dom in held:
                        continue
                    held.add(dom)
                else:
                    self._maps[key][value] = {held, dom}
                self._entries += 1

    def discard(self, dom: Any) -> None:
        with self._lock:
            for key in KEYS:
                self._drop(key, getattr(dom, key), [dom])

    def having(self, key: str, value: Any) -> List[Any]:
        """The domains whose ``key`` is ``value``, oldest first (by serial, the table's
        order)."""
        with self._lock:
            held = self._maps[key].get(value)
            if held is None:
                return []
            found = held if isinstance(held, set) else {held}
            stale = [d for d in found if getattr(d, key) != value]
            if stale:
                self._drop(key, value, stale)
                found = found - set(stale)
            return sorted(found, key=lambda d: d.serial)

    def _drop(self, key: str, value: Any, doms: List[Any]) -> None:
        """Caller holds ``_lock``."""
        held = self._maps[key].get(value)
        if held is None:
            return
        if not isinstance(held, set):
            if held in doms:
                del self._maps[key][value]
                self._entries -= 1
            return
        for dom in doms:
            if dom in held:
                held.discard(dom)
                self._entries -= 1
        if len(held) == 1:
            self._maps[key][value] = next(iter(held))
        elif not held:
            del self._maps[key][value]

    def needs_rebuild(self, live: int) -> bool:
        """True when stale entries outnumber the domains (many changes, few lookups)."""
        return self._entries > 3 * live + 1024

    def rebuild(self, domains: List[Any]) -> None:
        with self._lock:
            self._maps = {key: {} for key in KEYS}
            self._entries = 0
        for dom in domains:
            self.add(dom)
