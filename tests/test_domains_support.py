"""Shared helpers for the domain tests (no tests here): a registry on a simulated hypervisor
in tmp_path, domain configs, polling."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest

from xend.domains.registry import DomainRegistry
from xend.hypervisor import make_hypervisor
from xend.options import Options

REPO_ROOT_HINT = str(Path(__file__).resolve().parent.parent)
HOST_MIB = 4096
HOST_CPUS = 4
#: a file of this host for the guests' kernel (xend checks that it exists, as the original)
KERNEL = sys.executable
FAST = dict(minimum_restart_time=0.0, shutdown_timeout=300.0, event_interval=0.05)


def make_opts(tmp: Path, **overrides: Any) -> Options:
    values: Dict[str, Any] = {
        "hypervisor-backend": "simulated",
        "simulated-state-path": str(tmp / "sim"),
        "simulated-host-memory": HOST_MIB,
        "simulated-host-cpus": HOST_CPUS,
        "xend-domains-path": str(tmp / "domains"),
        "xend-dump-path": str(tmp / "dump"),
        "xend-state-path": str(tmp / "state"),
    }
    values.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return Options.from_dict(values)


class Env:
    """A registry (started) on a simulated host kept in ``tmp``; ``restart()`` is a xend
    restart: a new hypervisor object and a new registry on the same directories."""

    def __init__(self, tmp: Path, opts: Optional[Options] = None, **registry_kw: Any):
        self.tmp = tmp
        self.opts = opts or make_opts(tmp)
        self.kw = {**FAST, "balloon_sleep": lambda s: None, **registry_kw}
        self.hv = None
        self.reg: Optional[DomainRegistry] = None
        self.open()

    def open(self) -> DomainRegistry:
        self.hv = make_hypervisor(self.opts)
        self.reg = DomainRegistry(self.opts, self.hv, **self.kw)
        self.reg.start()
        return self.reg

    def close(self, run_stop_actions: bool = False) -> None:
        if self.reg is not None:
            if run_stop_actions:
                self.reg.stop()
            else:
                self.reg.stop_events()
                self.reg._join_actions(10)
            self.reg = None
        if self.hv is not None:
            self.hv.close()
            self.hv = None

    def restart(self, **kw: Any) -> DomainRegistry:
        self.close(**kw)
        return self.open()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def vm(name: str, memory: int = 64, vcpus: int = 1, args: str = "", maxmem: Any = None,
       **keys: Any) -> list:
    """A ``(vm ...)`` config as ``xm create`` sends it; keys are added as (key value)."""
    cfg: list = ["vm", ["name", name], ["memory", str(memory)]]
    if maxmem is not None:
        cfg.append(["maxmem", str(maxmem)])
    cfg.append(["vcpus", str(vcpus)])
    for key, value in keys.items():
        cfg.append([key, value if isinstance(value, list) else str(value)])
    image = ["linux", ["kernel", KERNEL]]
    if args:
        image.append(["args", args])
    cfg.append(["image", image])
    return cfg


def child(rec: list, key: str, default: Any = None) -> Any:
    for k in rec[1:]:
        if isinstance(k, list) and k and k[0] == key:
            return k[1] if len(k) > 1 else default
    return default


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {pred}")
        time.sleep(interval)


def names(reg: DomainRegistry, state: str = "all") -> list:
    return reg.domains_with_state(False, state, False)


def started(reg: DomainRegistry, config: list) -> int:
    """Create and unpause (as ``xm create`` does); returns the domid."""
    rec = reg.domain_create(config)
    domid = child(rec, "domid")
    reg.domain_unpause(domid)
    return domid
