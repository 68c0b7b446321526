"""The simulated host's domain table as held in memory between its writes.

The table is one JSON document (``domains.json``: host facts, counters, a record per domain
sorted by domid). With thousands of domains, anything an operation recomputes over every
record makes creating the next domain slower than the last, so this keeps what would be
recomputed: an index by domid, each record's JSON text (re-encoded only when the record
changed), the memory the domains use and when the guests' own next actions are due.

Records are copied on write: a change replaces the record (``own``) instead of mutating the
one readers may hold, so a reader can take the list under the lock and look at the records
after releasing it. A change is a transaction (``begin``, then ``commit`` or ``rollback``):
a refused operation puts the records and the document's own fields back as they were.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import simguest as guest
from .simfiles import dumps


def copy_record(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): a record before it is changed."""
    if type(value) is dict:
        return {key: copy_record(item) for key, item in value.items()}
    if type(value) is list:
        return [copy_record(item) for item in value]
    return value


def _position(records: List[dict], domid: int) -> int:
    """Where ``domid`` is, or would go, in ``records`` (sorted by domid)."""
    lo, hi = 0, len(records)
    while lo < hi:
        mid = (lo + hi) // 2
        if records[mid]["domid"] < domid:
            lo = mid + 1
        else:
            hi = mid
    return lo


class DomainTable:
    """The table document ``doc`` (as loaded or saved) with what is kept about it."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.records: List[dict] = doc["domains"]
        self.index: Dict[int, dict] = {rec["domid"]: rec for rec in self.records}
        #: each record's JSON text after a comma, in domid order (None: not encoded yet)
        self._texts: Dict[int, Optional[bytes]] = dict.fromkeys(self.index)
        self._stale: Set[int] = set(self.index)
        self.used_kib = sum(rec["mem_kib"] for rec in self.records)
        self._due: Dict[int, float] = {}
        for rec in self.records:
            self._note_due(rec)
        #: during a transaction: domid -> the record before it (None: it was not there)
        self._before: Optional[Dict[int, Optional[dict]]] = None
        self._head = ""
        #: odd while a change is open: a reader without the lock that sees the same even
        #: number before and after its look saw committed records only (see ``unlocked``)
        self.version = 0

    # -- reading ---------------------------------------------------------------------------
    def unlocked(self, look: Callable[["DomainTable"], Any]) -> Tuple[bool, Any]:
        """(True, look(self)) if no change was open or began meanwhile, else (False, None):
        then the caller looks again under the lock. ``look`` must only read."""
        before = self.version
        if before & 1:
            return False, None
        result = look(self)
        return self.version == before, result

    def due_times(self) -> List[float]:
        """When the guests' own next actions (shut down, crash) are due."""
        return list(self._due.values())

    # -- a transaction -----------------------------------------------------------------------
    def begin(self) -> None:
        if self._before is not None:
            raise RuntimeError("nested change of the simulated domain table")
        self._before = {}
        self._head = dumps(self._head_fields())
        self.version += 1

    def own(self, domid: int) -> dict:
        """The record of ``domid`` (which must exist), the caller's to change."""
        rec = self.index[domid]
        if domid in self._before:
            return rec
        self._before[domid] = rec
        new = copy_record(rec)
        self.records[_position(self.records, domid)] = new
        self.index[domid] = new
        return new

    def insert(self, rec: dict) -> None:
        domid = rec["domid"]
        self._before.setdefault(domid, None)
        at = _position(self.records, domid)
        self.records.insert(at, rec)
        self.index[domid] = rec
        if at == len(self.records) - 1:
            self._texts[domid] = None
        else:                           # an id below the highest: rare (ids wrap, are reused)
            self._texts = {r["domid"]: self._texts.get(r["domid"]) for r in self.records}

    def remove(self, domid: int) -> None:
        rec = self.index.pop(domid)
        self._before.setdefault(domid, rec)
        del self.records[_position(self.records, domid)]
        del self._texts[domid]

    def commit(self) -> List[bytes]:
        """End the transaction: the table's JSON, in pieces (the changed records re-encoded,
        the others as they were: joining 10,000 of them at every change would cost more than
        writing them)."""
        for domid, old in self._before.items():
            new = self.index.get(domid)
            self.used_kib += (new["mem_kib"] if new else 0) - (old["mem_kib"] if old else 0)
            self._due.pop(domid, None)
            if new is not None:
                self._note_due(new)
                self._stale.add(domid)
            else:
                self._stale.discard(domid)
        self._before = None
        self.version += 1
        for domid in self._stale:
            self._texts[domid] = b"," + dumps(self.index[domid]).encode()
        self._stale.clear()
        head = dumps(self._head_fields())
        pieces = list(self._texts.values())
        if pieces:                       # each record's text starts with its comma
            pieces[0] = pieces[0][1:]
        return [f'{head[:-1]},"domains":['.encode(), *pieces, b"]}"]

    def rollback(self) -> None:
        """End the transaction undoing it: records and the document's own fields as before."""
        before, self._before = self._before, None
        if before is None:
            return
        self.version += 1
        reshaped = any(old is None or domid not in self.index for domid, old in before.items())
        for domid, old in before.items():
            if domid in self.index:
                del self.records[_position(self.records, domid)]
                del self.index[domid]
            if old is not None:
                self.records.insert(_position(self.records, domid), old)
                self.index[domid] = old
        if reshaped:
            self._texts = {r["domid"]: self._texts.get(r["domid"]) for r in self.records}
        self._stale.update(domid for domid in before if domid in self.index)
        head = json.loads(self._head)
        for key in [key for key in self.doc if key != "domains" and key not in head]:
            del self.doc[key]
        self.doc.update(head)           # assigned over, never missing for a reader

    def _head_fields(self) -> dict:
        return {key: value for key, value in self.doc.items() if key != "domains"}

    def _note_due(self, rec: dict) -> None:
        event = guest.next_event(rec)
        if event is not None:
            self._due[rec["domid"]] = event[0]
