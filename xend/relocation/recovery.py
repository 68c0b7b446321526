"""Put right what a migration interrupted by a crash of this xend left (see ``journal``).

Runs at start, after the registry has adopted the hypervisor's domains:

* an incoming domain whose entry is still there and that is still paused was never
  finished (we never sent ``(ok)``, so the sender kept its copy): destroyed;
* an outgoing domain still ``streaming``: the receiver never confirmed (or we never heard
  it), so ours is the copy that counts: its name restored and resumed;
* an outgoing domain ``confirmed``: the destination runs it: ours is destroyed.
"""
from __future__ import annotations

import logging
from typing import Any

from xend import sxp
from xend.errors import XendError
from xend.relocation.journal import Journal
from xend.relocation.receiver import PAUSED_STATUS, find_records

log = logging.getLogger("xend.relocate")


def _paused(rec: list) -> bool:
    state = str(sxp.child_value(rec, "state", ""))
    return str(sxp.child_value(rec, "status", "")) == str(PAUSED_STATUS) or \
        (len(state) >= 3 and state[2] == "p")


def _active(rec: list) -> bool:
    return sxp.child_value(rec, "domid") is not None


def recover(registry: Any, journal: Journal) -> None:
    for entry in journal.entries("incoming"):
        uuid = entry["uuid"]
        for rec in find_records(registry, uuid=uuid):
            if _active(rec) and _paused(rec):
                log.warning("Destroying domain %s (%s): its migration from %s was "
                            "interrupted before it completed", sxp.child_value(rec, "name"),
                            sxp.child_value(rec, "domid"), entry.get("peer", "?"))
                _try(registry.domain_destroy, sxp.child_value(rec, "domid"))
        journal.remove("incoming", uuid)

    for entry in journal.entries("outgoing"):
        uuid = entry["uuid"]
        name = entry.get("name")
        for rec in find_records(registry, uuid=uuid):
            if not _active(rec):
                continue
            domid = sxp.child_value(rec, "domid")
            if entry.get("phase") == "confirmed":
                log.warning("Domain %s (%s) runs at %s since its migration; destroying the "
                            "copy left here", name, domid, entry.get("dst", "?"))
                _try(registry.domain_destroy, domid)
                continue
            log.warning("Migration of domain %s (%s) to %s was interrupted; resuming it here",
                        name, domid, entry.get("dst", "?"))
            if isinstance(name, str) and name:
                _try(registry.domain_setName, domid, name)
            if _paused(rec):
                _try(registry.domain_unpause, domid)
        journal.remove("outgoing", uuid)


def _try(fn, *args) -> None:
    try:
        fn(*args)
    except (XendError, Exception) as e:  # noqa: BLE001 - log and go on with the next one
        log.error("Migration recovery: %s%r failed: %s", getattr(fn, "__name__", fn), args, e)
