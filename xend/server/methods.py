"""The one table of XML-RPC methods (reference section 5.3): wire name -> bound method.

Nothing is exported by ``dir()``: a name that is not here does not exist for clients.
"""
from __future__ import annotations

from typing import Callable, Dict

from xend import errors

# xend.domain.<name> -> DomainRegistry.domain_<name>
DOMAIN_METHODS = (
    # per-domain (first argument: dom)
    "shutdown", "setMemoryTarget", "setVCpuCount", "setName", "send_sysrq", "getVCPUInfo",
    "waitForDevices", "getRestartCount", "console",
    # from the domain table
    "create", "restore", "new", "start", "delete", "suspend", "resume", "pause", "unpause",
    "destroy", "save", "migrate", "dump", "pincpu", "maxmem_set", "sched_credit_get",
    "sched_credit_set", "reset", "setpauseflag", "getpauseflag",
    # devices after the build
    "device_create", "device_configure", "destroyDevice", "getDeviceSxprs",
    "getBlockDeviceClass",
    "send_trigger", "sched_credit2_get", "sched_credit2_set", "cpu_sedf_get", "cpu_sedf_set",
)

# xend.cpu_pool.<name> -> CpuPools.pool_<name>
CPU_POOL_METHODS = ("create", "new", "start", "list", "destroy", "delete", "cpu_add",
                    "cpu_remove", "migrate")


def _unsupported(*_args) -> None:
    raise errors.XendError("Unsupported")


def build_method_table(node) -> Dict[str, Callable]:
    reg = node.domains
    table: Dict[str, Callable] = {
        "xend.domain": reg.domain,
        "xend.domains": reg.domains,
        "xend.domains_with_state": reg.domains_with_state,
        "xend.domains_brief": reg.domains_brief,  # extension: only what `xm list` prints
        "xend.domain.configure": _unsupported,
        "xend.node.info": node.info,
        "xend.node.log": node.log_text,
        "xend.node.dmesg.info": node.dmesg_info,
        "xend.node.dmesg.clear": node.dmesg_clear,
        "xend.node.progress": node.progress,
        "xend.node.pciinfo": node.pciinfo,
        "xend.node.send_debug_keys": node.send_debug_keys,
    }
    for name in DOMAIN_METHODS:
        table["xend.domain." + name] = getattr(reg, "domain_" + name)
    for name in CPU_POOL_METHODS:
        table["xend.cpu_pool." + name] = getattr(node.cpupools, "pool_" + name)
    return table
