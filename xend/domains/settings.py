"""The options the domain layer reads, taken once from Options (or a plain mapping in tests)
and checked, so that nothing fails half-way through an operation for a bad option."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_DOMAINS_PATH = "/var/lib/xend/domains"
DEFAULT_DUMP_PATH = "/var/xen/dump"


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
    dom0_cpus: int = 0
    console_limit: int = 1024             # KiB
    enable_dump: bool = False
    device_create_timeout: int = 100

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any]) -> "Settings":
        min_mem = int(option(opts, "dom0-min-mem", 0))
        ballooning = option(opts, "enable-dom0-ballooning", None)
        settings = cls(
            domains_path=str(option(opts, "xend-domains-path", DEFAULT_DOMAINS_PATH)),
            dump_path=str(option(opts, "xend-dump-path", DEFAULT_DUMP_PATH)),
            dom0_min_mem=min_mem,
            enable_ballooning=(min_mem != 0) if ballooning is None else _bool(ballooning),
            dom0_cpus=int(option(opts, "dom0-cpus", 0)),
            console_limit=int(option(opts, "console-limit", 1024)),
            enable_dump=_bool(option(opts, "enable-dump", False)),
            device_create_timeout=int(option(opts, "device-create-timeout", 100)),
        )
        if settings.dom0_min_mem < 0 or settings.dom0_cpus < 0 or settings.console_limit < 1:
            raise ValueError("dom0-min-mem and dom0-cpus must be >= 0, console-limit >= 1")
        return settings
