"""The options the domain layer reads, taken once from Options (or a plain mapping in tests)
and checked, so that nothing fails half-way through an operation for a bad option."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

DEFAULT_DOMAINS_PATH = "/var/lib/xend/domains"
DEFAULT_DUMP_PATH = "/var/xen/dump"
DEFAULT_SCRIPTS_PATH = "/etc/xen/scripts"
DEFAULT_VNC_CERT_DIR = "/etc/xen/vnc"
DEFAULT_LOG_DIR = "/var/log/xen"


def option(opts: Mapping[str, Any], name: str, default: Any) -> Any:
    try:
        value = opts[name]
    except KeyError:
        return default
    return default if value is None else value


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "y", "1", "on", "true", "t")
    return bool(value)


@dataclass(frozen=True)
class Settings:
    domains_path: str = DEFAULT_DOMAINS_PATH
    dump_path: str = DEFAULT_DUMP_PATH
    dom0_min_mem: int = 0                 # MiB
    enable_ballooning: bool = False
    total_available_memory: int = 0       # GiB kept free (0 when ballooning is off)
    dom0_cpus: int = 0
    console_limit: int = 1024             # KiB
    enable_dump: bool = False
    device_create_timeout: int = 100      # seconds
    device_destroy_timeout: int = 100     # seconds
    pci_strict_check: bool = True
    # defaults for devices and display (applied when a domain is built; see devices.py)
    vif_script: str = "vif-bridge"
    scripts_path: str = DEFAULT_SCRIPTS_PATH
    vnc_listen: str = "127.0.0.1"
    vncpasswd: Optional[str] = field(default=None, repr=False)   # never shown in logs
    keymap: Optional[str] = None
    vnc_tls: bool = False
    vnc_x509_cert_dir: str = DEFAULT_VNC_CERT_DIR
    vnc_x509_verify: bool = False
    qemu_dm_logrotate_count: int = 10
    log_dir: str = DEFAULT_LOG_DIR        # where qemu-dm-NAME.log files go (logfile's dir)
    #: xend-state-path: the journal of saves and restores in progress is kept there
    #: (None, from a plain mapping without it: no journal)
    state_path: Optional[str] = None

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any]) -> "Settings":
        min_mem = int(option(opts, "dom0-min-mem", 0))
        ballooning = option(opts, "enable-dom0-ballooning", None)
        enable_ballooning = (min_mem != 0) if ballooning is None else _bool(ballooning)
        logfile = str(option(opts, "logfile", DEFAULT_LOG_DIR + "/xend.log"))
        settings = cls(
            domains_path=str(option(opts, "xend-domains-path", DEFAULT_DOMAINS_PATH)),
            dump_path=str(option(opts, "xend-dump-path", DEFAULT_DUMP_PATH)),
            dom0_min_mem=min_mem,
            enable_ballooning=enable_ballooning,
            total_available_memory=(int(option(opts, "total_available_memory", 0))
                                    if enable_ballooning else 0),
            dom0_cpus=int(option(opts, "dom0-cpus", 0)),
            console_limit=int(option(opts, "console-limit", 1024)),
            enable_dump=_bool(option(opts, "enable-dump", False)),
            device_create_timeout=int(option(opts, "device-create-timeout", 100)),
            device_destroy_timeout=int(option(opts, "device-destroy-timeout", 100)),
            pci_strict_check=_bool(option(opts, "pci-passthrough-strict-check", True)),
            vif_script=str(option(opts, "vif-script", "vif-bridge")),
            scripts_path=str(option(opts, "xend-scripts-path", DEFAULT_SCRIPTS_PATH)),
            vnc_listen=str(option(opts, "vnc-listen", "127.0.0.1")),
            vncpasswd=_str_or_none(opts, "vncpasswd"),
            keymap=_str_or_none(opts, "keymap"),
            vnc_tls=_bool(option(opts, "vnc-tls", False)),
            vnc_x509_cert_dir=str(option(opts, "vnc-x509-cert-dir", DEFAULT_VNC_CERT_DIR)),
            vnc_x509_verify=_bool(option(opts, "vnc-x509-verify", False)),
            qemu_dm_logrotate_count=int(option(opts, "qemu-dm-logrotate-count", 10)),
            log_dir=os.path.dirname(os.path.abspath(logfile)),
            state_path=_str_or_none(opts, "xend-state-path"),
        )
        if settings.dom0_min_mem < 0 or settings.dom0_cpus < 0 or settings.console_limit < 1:
            raise ValueError("dom0-min-mem and dom0-cpus must be >= 0, console-limit >= 1")
        if min(settings.device_create_timeout, settings.device_destroy_timeout,
               settings.qemu_dm_logrotate_count, settings.total_available_memory) < 0:
            raise ValueError("device timeouts, qemu-dm-logrotate-count and "
                             "total_available_memory must be >= 0")
        return settings


def _str_or_none(opts: Mapping[str, Any], name: str) -> Optional[str]:
    value = option(opts, name, None)
    return None if value is None else str(value)
