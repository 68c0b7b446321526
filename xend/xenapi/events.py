"""``event.register``/``event.next``/``event.unregister`` (datamodel, class event).

A registered session has a queue of event records ``{id, timestamp, class, operation, ref,
obj_uuid, snapshot}`` (operation ``add``, ``del`` or ``mod``; ``snapshot`` is the object's
record after the change, as later Xen-API versions send it; ``{}`` for ``del``).

Where the events come from:

* the API's own changes (``VM.create``, ``VM.start``, setters ...) ``poke`` the bus, which
  compares the VMs with the last look at once; so does every call that changes a task, a
  host, a VDI or a network (those publish their event directly);
* changes made elsewhere (``xm``, the legacy interface, a guest that shuts down, a crash) are
  found by the same comparison, made at most every ``poll_interval`` seconds while some
  ``event.next`` waits.

The comparison is cheap: a domain's configuration is an immutable object replaced on every
change, so a VM changed when its configuration object, its domid or its power state did.
Nothing is looked at while no session is registered. ``event.next`` blocks until its
session has events, at most ``next_timeout`` seconds (then it returns an empty batch: "a
possibly empty batch", as the datamodel says). A queue holds at most MAX_QUEUED events; the
oldest are dropped beyond that (and the loss is logged).
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from . import records as rec
from . import wire
from .errors import SESSION_NOT_REGISTERED, XenAPIError

log = logging.getLogger("xend.XendAPI")

MAX_QUEUED = 10000
NEXT_TIMEOUT = 30.0
POLL_INTERVAL = 0.25

#: the class names the API knows, by their lower-case spelling (registration ignores case)
CLASSES = ("session", "task", "event", "VM", "VM_metrics", "VM_guest_metrics", "host",
           "host_metrics", "host_cpu", "network", "VIF", "SR", "VDI", "VBD", "console", "pool")
_BY_LOWER = {c.lower(): c for c in CLASSES}


class Subscription:
    def __init__(self) -> None:
        self.classes: Set[str] = set()      # empty: every class
        self.events: Deque[Dict[str, Any]] = collections.deque()
        self.lost = 0

    def wants(self, cls: str) -> bool:
        return not self.classes or "*" in self.classes or cls in self.classes


class EventBus:
    def __init__(self, records: Callable[[str, str], Optional[dict]],
                 views: Callable[[], list], poll_interval: float = POLL_INTERVAL,
                 next_timeout: float = NEXT_TIMEOUT):
        self._record = records          # (class, ref) -> record, or None if gone
        self._views = views             # () -> [VmView]
        self.poll_interval = poll_interval
        self.next_timeout = next_timeout
        self._cond = threading.Condition()
        self._subs: Dict[str, Subscription] = {}
        self._ids = itertools.count(1)
        self._last: Optional[Dict[str, Tuple[Any, ...]]] = None
        self._last_devices: Dict[str, Dict[str, Set[str]]] = {}
        self._poll_lock = threading.Lock()
        self._polled_at = 0.0

    # -- registration ----------------------------------------------------------------------
    def register(self, session: str, classes: List[str]) -> None:
        names = {_BY_LOWER.get(c.lower(), c) if c != "*" else "*" for c in classes}
        with self._cond:
            have = bool(self._subs)
        if have:
            self.poll()                 # what changed before goes to those already there
        else:
            self._baseline()
        with self._cond:
            sub = self._subs.get(session)
            if sub is None:
                sub = self._subs[session] = Subscription()
                sub.classes = set(names)
            elif not names:
                sub.classes = set()             # every class from now on
            elif sub.classes:
                sub.classes |= names            # (registered for every class: stays so)

    def unregister(self, session: str, classes: List[str]) -> None:
        names = {_BY_LOWER.get(c.lower(), c) for c in classes}
        with self._cond:
            sub = self._subs.get(session)
            if sub is None:
                return
            if not names:
                del self._subs[session]
            else:
                sub.classes -= names
                if not sub.classes:
                    del self._subs[session]
            if not self._subs:
                self._last = None
            self._cond.notify_all()

    def drop(self, session: str) -> None:
        self.unregister(session, [])

    # -- events ------------------------------------------------------------------------------
    def publish(self, cls: str, operation: str, ref: str) -> None:
        with self._cond:
            if not any(s.wants(cls) for s in self._subs.values()):
                return
        snapshot = {} if operation == "del" else (self._record(cls, ref) or {})
        event = {"id": 0, "timestamp": wire.now(), "class": cls, "operation": operation,
                 "ref": ref, "obj_uuid": ref, "snapshot": snapshot}
        with self._cond:
            event["id"] = next(self._ids)
            for sub in self._subs.values():
                if sub.wants(cls):
                    if len(sub.events) >= MAX_QUEUED:
                        sub.events.popleft()
                        sub.lost += 1
                        if sub.lost in (1, 100, 10000):
                            log.warning("event queue full: %d events dropped", sub.lost)
                    sub.events.append(dict(event))
            self._cond.notify_all()

    def poke(self) -> None:
        """Something may have changed: compare now (if anybody listens)."""
        self.poll(force=True)

    def next(self, session: str) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + self.next_timeout
        while True:
            with self._cond:
                sub = self._subs.get(session)
                if sub is None:
                    raise XenAPIError(SESSION_NOT_REGISTERED, session)
                if sub.events:
                    out = list(sub.events)
                    sub.events.clear()
                    return out
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                due = self._polled_at + self.poll_interval - time.monotonic()
                if due > 0:
                    self._cond.wait(min(left, due))
                    continue
            self.poll()

    # -- finding changes -----------------------------------------------------------------------
    def _look(self) -> Tuple[Dict[str, Tuple[Any, ...]], Dict[str, Dict[str, Set[str]]]]:
        vms: Dict[str, Tuple[Any, ...]] = {}
        devices: Dict[str, Dict[str, Set[str]]] = {}
        old_devices = self._last_devices
        old = self._last or {}
        for v in self._views():
            vms[v.uuid] = (v.cfg, v.domid, v.state, v.managed)
            prev = old.get(v.uuid)
            if prev is not None and prev[0] is v.cfg and v.uuid in old_devices:
                devices[v.uuid] = old_devices[v.uuid]
            else:
                devices[v.uuid] = {g: {d.uuid for d in rec.devices_of(v.cfg, g)}
                                   for g in ("vbd", "vif")}
        return vms, devices

    def _baseline(self) -> None:
        with self._poll_lock:
            self._last, self._last_devices = self._look()
            self._polled_at = time.monotonic()

    def poll(self, force: bool = False) -> None:
        with self._cond:
            if not self._subs:
                self._last = None
                return
        if not self._poll_lock.acquire(blocking=force):
            return                      # another thread is looking right now
        try:
            old, old_devices = self._last, self._last_devices
            vms, devices = self._look()
            self._last, self._last_devices = vms, devices
            self._polled_at = time.monotonic()
        finally:
            self._poll_lock.release()
        if old is None:
            return
        for uuid in vms.keys() - old.keys():
            self.publish("VM", "add", uuid)
        for uuid, now in vms.items():
            was = old.get(uuid)
            if was is not None and (was[0] is not now[0] or was[1:] != now[1:]):
                self.publish("VM", "mod", uuid)
        for uuid in old.keys() - vms.keys():
            self.publish("VM", "del", uuid)
        for group, cls in (("vbd", "VBD"), ("vif", "VIF")):
            before = set().union(*(d[group] for d in old_devices.values())) \
                if old_devices else set()
            after = set().union(*(d[group] for d in devices.values())) if devices else set()
            for ref in after - before:
                self.publish(cls, "add", ref)
            for ref in before - after:
                self.publish(cls, "del", ref)
            # a device whose VM started or stopped changed its currently_attached
            for uuid, now in vms.items():
                was = old.get(uuid)
                if was is not None and was[2] != now[2]:
                    for ref in devices[uuid][group] & before:
                        self.publish(cls, "mod", ref)
