"""Power states of a domain (reference §8.2) and how they follow from what Xen reports."""
from __future__ import annotations

from typing import Any, Optional

from xend.hypervisor.base import DomainInfo

HALTED = 0
PAUSED = 1
RUNNING = 2
SUSPENDED = 3
SHUTTINGDOWN = 4
CRASHED = 5
UNKNOWN = 6

POWER_STATE_NAMES = {HALTED: "Halted", PAUSED: "Paused", RUNNING: "Running",
                     SUSPENDED: "Suspended", SHUTTINGDOWN: "Halted", CRASHED: "Crashed",
                     UNKNOWN: "Unknown"}
POWER_STATE_ALL = "all"

DOM0_ID = 0
DOM0_NAME = "Domain-0"


def power_state(info: Optional[DomainInfo], checkpointed: bool) -> int:
    """The Xen-API power state of a domain whose Xen domain is ``info`` (None: there is none)
    and that has (``checkpointed``) or has not a managed checkpoint file."""
    if info is None:
        return SUSPENDED if checkpointed else HALTED
    if info.crashed:
        return CRASHED
    if info.shutdown or info.dying:
        return SUSPENDED if checkpointed else HALTED
    if info.paused:
        return PAUSED
    return RUNNING


def state_filter(state: Any):
    """A predicate on power-state ints for ``domains_with_state``: ``all``, a name
    (case-insensitive) or an int. Unknown names match nothing, as in the original."""
    if isinstance(state, str) and state.strip().lower() == POWER_STATE_ALL:
        return lambda s: True
    if isinstance(state, bool):
        state = int(state)
    if isinstance(state, int) or (isinstance(state, str) and state.strip().lstrip("-").isdigit()):
        wanted = POWER_STATE_NAMES.get(int(state))
    else:
        wanted = str(state).strip().capitalize()
    return lambda s: wanted is not None and POWER_STATE_NAMES[s] == wanted
