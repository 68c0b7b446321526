"""Relocation: receiving domains from other hosts and sending ours (reference section 7).

* ``listeners``  the relocation listeners the options enable (TCP, TLS, unix socket);
* ``server``     the socketserver pieces and the protocol handler;
* ``receiver``   an incoming image stream -> a running domain;
* ``client``     ``Migrator``: the sender behind ``xend.domain.migrate``;
* ``connection`` one sending connection (TCP/TLS/unix);
* ``protocol``   request/reply SXP framing;
* ``acl``        ``xend-relocation-hosts-allow``;
* ``tool``       device migration steps and ``external-migration-tool``;
* ``journal``    migrations in progress, for recovery after a crash (``recover``).

``attach(node)`` wires the sender into the node's domain registry and repairs what a
migration interrupted by a crash left behind. The node calls it once its registry has
adopted the hypervisor's domains.
"""
from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("xend.relocate")


class LazyMigrator:
    """The registry's ``migrator``: the sender (``client.Migrator``, with the TLS and migration
    tool modules behind it) is imported at the first migration, not at every start."""

    def __init__(self, node: Any, journal: Any):
        self._node = node
        self._journal = journal
        self._migrator: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._migrator is None:
            from xend.relocation.client import Migrator
            node = self._node
            self._migrator = Migrator(lambda: node.domains, lambda: node.opts, self._journal)
        return self._migrator(*args, **kwargs)


def attach(node: Any) -> None:
    """Install the migrator on ``node.domains`` and run crash recovery (once per registry)."""
    from xend.relocation.journal import Journal
    from xend.relocation.recovery import recover

    reg = node.domains
    if reg is None or isinstance(getattr(reg, "migrator", None), LazyMigrator):
        return
    journal = Journal(os.path.join(node.opts["xend-state-path"], "relocation"))
    reg.migrator = LazyMigrator(node, journal)
    try:
        recover(reg, journal)
    except Exception:  # noqa: BLE001 - recovery problems must not stop xend
        log.exception("Recovering interrupted migrations failed")
