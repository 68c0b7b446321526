"""Hypervisor backends and the factory that picks one from the options.

Backend modules are imported only when chosen: importing this package opens nothing.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Iterable, Mapping

from ..errors import HypervisorError
from .base import Hypervisor

BACKENDS = ("xenctrl", "simulated")
#: a Xen hypervisor is present when one of these exists (what the original's tools check)
XEN_MARKERS = ("/proc/xen/capabilities", "/dev/xen/privcmd")


def detect_backend(markers: Iterable[str] = XEN_MARKERS) -> str:
    """'xenctrl' when a Xen hypervisor is present on this host, else 'simulated'."""
    return "xenctrl" if any(os.path.exists(path) for path in markers) else "simulated"


def _option(opts: Mapping[str, Any], name: str, default: Any) -> Any:
    try:
        value = opts[name]
    except KeyError:
        return default
    return default if value is None else value


def make_hypervisor(opts: Mapping[str, Any]) -> Hypervisor:
    """The backend named by ``hypervisor-backend`` (``auto``, ``xenctrl``, ``simulated``).

    ``opts`` is an Options object or any mapping (a plain dict in tests). Call this after
    daemonizing: backends hold open handles that must not cross a fork.
    """
    choice = _option(opts, "hypervisor-backend", "auto")
    if choice == "auto":
        choice = detect_backend()
    if choice == "xenctrl":
        from .xenctrl import XenctrlHypervisor
        return XenctrlHypervisor()
    if choice == "simulated":
        from .simulated import DEFAULT_HOST_MEMORY_MIB, DEFAULT_STATE_PATH, SimulatedHypervisor
        return SimulatedHypervisor(
            _option(opts, "simulated-state-path", DEFAULT_STATE_PATH),
            host_memory_mib=int(_option(opts, "simulated-host-memory", DEFAULT_HOST_MEMORY_MIB)),
            host_cpus=int(_option(opts, "simulated-host-cpus", 0)) or os.cpu_count() or 1,
            dom0_memory_mib=int(_option(opts, "simulated-dom0-memory", 0)) or None,
            scheduler=str(_option(opts, "simulated-scheduler", "credit")))
    raise HypervisorError(errno.EINVAL, f"hypervisor-backend must be auto, "
                          f"{' or '.join(BACKENDS)}; got {choice!r}")
