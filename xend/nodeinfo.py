"""The keys of ``xend.node.info`` (what ``xm info`` prints, reference §9.4), in order, and how
the Xen-API's host classes group them. Constants only: imported by the server and by ``xm``.
"""
from __future__ import annotations

XEND_VERSION = "4.4.0"

INFO_KEYS = (
    "system", "host", "release", "version", "machine",
    "nr_cpus", "nr_nodes", "sockets_per_node", "cores_per_socket", "threads_per_core",
    "cpu_mhz", "hw_caps", "virt_caps", "total_memory", "free_memory", "node_to_cpu",
    "free_cpus",
    "xen_major", "xen_minor", "xen_extra", "xen_caps", "xen_scheduler", "xen_pagesize",
    "platform_params", "xen_changeset", "xen_commandline", "cc_compiler", "cc_compile_by",
    "cc_compile_domain", "cc_compile_date", "xend_config_format", "xend_hypervisor_backend",
)
#: what ``xm info -n`` adds after free_cpus
NUMA_KEYS = ("cpu_topology", "numa_info")
#: host.cpu_configuration (cpu_mhz as the hypervisor reports it, e.g. 2596.133)
CPU_KEYS = ("nr_cpus", "nr_nodes", "sockets_per_node", "cores_per_socket", "threads_per_core",
            "cpu_mhz", "node_to_cpu")
#: host_metrics (bytes there, MiB in xm info)
MEMORY_KEYS = ("total_memory", "free_memory")
#: host_cpu: hw_caps is its features (its speed the whole MHz of cpu_mhz)
CPU_DETAIL_KEYS = ("hw_caps",)
#: host.software_version: everything else
SOFTWARE_KEYS = tuple(k for k in INFO_KEYS
                      if k not in CPU_KEYS + MEMORY_KEYS + CPU_DETAIL_KEYS)
