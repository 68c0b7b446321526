"""Making room for a new domain by shrinking dom0 (reference §8.8).

``free_memory`` returns once the host has ``need_kib`` free. If it has not and ballooning
is allowed, dom0's target is lowered by the shortfall (counting memory Xen is still
scrubbing), never below ``dom0-min-mem``; then it waits, with growing pauses, for the
memory to appear. When that is impossible it fails with the original's messages and leaves
dom0 as it found it.

``total_available_memory`` (``reserve_kib``) is memory kept free on top of every request: the
host must have ``need_kib + reserve_kib`` free, so the pool is never handed to a domain (this
xend cannot tell the 32-bit PV guests it was meant for) and dom0 is shrunk to keep it free.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from xend.errors import VmError
from xend.hypervisor.base import Hypervisor

log = logging.getLogger("xend.balloon")

SLEEP_TIME_GROWTH = 0.1     # first pause, and how much each later pause grows
RETRY_LIMIT = 20            # polls without progress before giving up
RETRY_LIMIT_INCR = 5        # ... plus this many per GiB still missing at the start


@dataclass
class BalloonPolicy:
    enabled: bool
    dom0_min_kib: int
    sleep: Callable[[float], None] = time.sleep
    sleep_growth: float = SLEEP_TIME_GROWTH
    retry_limit: int = RETRY_LIMIT
    reserve_kib: int = 0            # total_available_memory, kept free


def free_memory(hv: Hypervisor, need_kib: int, policy: BalloonPolicy,
                set_dom0_target_kib: Callable[[int], None]) -> None:
    reserve = max(0, policy.reserve_kib)
    note = (" (%d KiB of it is the pool that total_available_memory keeps free)" % reserve
            if reserve else "")
    need_kib += reserve
    phys = hv.physinfo()
    free, scrub = phys.free_kib, phys.scrub_kib
    if free >= need_kib:
        log.debug("Balloon: %d KiB free; need %d; done.", free, need_kib)
        return
    if not policy.enabled:
        raise VmError("Not enough free memory and enable-dom0-ballooning is False, so I "
                      "cannot release any more.  I need %d KiB but only have %d.%s"
                      % (need_kib, free, note))
    dom0_alloc = hv.domain_info(0).mem_kib
    min_kib = policy.dom0_min_kib
    new_alloc = dom0_alloc - (need_kib - free - scrub)
    if new_alloc < min_kib:
        raise VmError("I need %d KiB, but dom0_min_mem is %d and shrinking to %d KiB would "
                      "leave only %d KiB free.%s"
                      % (need_kib, min_kib, min_kib, free + scrub + dom0_alloc - min_kib, note))
    target = (new_alloc // 1024) * 1024          # whole MiB, rounded down: frees a bit more
    target = max(target, min_kib)
    shrunk = free + scrub < need_kib
    if shrunk:
        log.debug("Balloon: setting dom0 target to %d MiB.", target // 1024)
        set_dom0_target_kib(target)
    else:
        log.debug("Balloon: waiting on scrubbing")

    limit = policy.retry_limit + (need_kib - free) // (1024 * 1024) * RETRY_LIMIT_INCR
    retries = 0
    delay = policy.sleep_growth
    last = free + scrub
    while retries < limit:
        phys = hv.physinfo()
        if phys.free_kib >= need_kib:
            log.debug("Balloon: %d KiB free; need %d; done.", phys.free_kib, need_kib)
            return
        policy.sleep(delay)
        delay += policy.sleep_growth
        now = phys.free_kib + phys.scrub_kib
        if now <= last:
            retries += 1
        last = now
    if shrunk:
        try:
            set_dom0_target_kib(dom0_alloc)
        except Exception:  # noqa: BLE001 - the failure below is what matters
            log.exception("Balloon: could not give dom0 back its memory")
    raise VmError("Not enough memory is available, and dom0 cannot be shrunk any further"
                  + note)
