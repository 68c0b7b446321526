"""A xend with Xen-API listeners for the tests, and sessions of the PyPI ``XenAPI`` client.

The client's unix transport takes the socket path from the URL's host part with every ``_``
turned into ``/``, so the Xen-API socket must live in a directory whose path has no ``_``
(pytest's tmp_path has some): ``short_dir`` makes one under /tmp.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import XenAPI

from tests.daemon_helpers import XendInstance, free_port, server_proxy

_dirs = itertools.count(1)


def short_dir() -> Path:
    base = Path(tempfile.gettempdir())
    while True:
        d = base / f"xapi-{os.getpid()}-{next(_dirs)}"
        try:
            d.mkdir(mode=0o700)
            return d
        except FileExistsError:
            continue


def unix_session(path: Path) -> XenAPI.Session:
    assert "_" not in str(path), path
    return XenAPI.Session("http://" + str(path).replace("/", "_") + "/",
                          transport=XenAPI.UDSTransport())


class XenAPIHost(XendInstance):
    """A xend whose ``xen-api-server`` is ``entries`` (a unix socket in a short directory
    and, with ``tcp``, a TCP port ``self.port``)."""

    def __init__(self, root: Path, entries: Optional[str] = None, extra: str = "",
                 tcp: bool = True, **kw):
        super().__init__(root, **kw)
        self.sockdir = short_dir()
        self.port = free_port()
        if entries is None:
            entries = f"((unix) ({self.port} none))" if tcp else "((unix))"
        self.paths["xen-api-unix-path"] = self.sockdir / "xen-api.sock"
        self.extra = f"(xen-api-server {entries})\n{extra}"
        self.write_config(self.extra, kw.get("host_memory_mib", 4096), kw.get("host_cpus", 4))
        self.kernel = self.root / "vmlinuz"
        self.kernel.write_bytes(b"\0" * 4096)

    @property
    def xenapi_path(self) -> Path:
        return self.paths["xen-api-unix-path"]

    def session(self, user: str = "root", password: str = "") -> XenAPI.Session:
        s = unix_session(self.xenapi_path)
        s.xenapi.login_with_password(user, password, "1.0", "tests")
        return s

    def tcp_session(self, user: str = "root", password: str = "", port: Optional[int] = None,
                    https: bool = False) -> XenAPI.Session:
        scheme = "https" if https else "http"
        s = XenAPI.Session(f"{scheme}://127.0.0.1:{port or self.port}/", ignore_ssl=https)
        s.xenapi.login_with_password(user, password, "1.0", "tests")
        return s

    def raw(self, timeout: float = 30):
        """A plain XML-RPC proxy on the Xen-API socket (results are Status structs)."""
        return server_proxy(str(self.xenapi_path), timeout)

    def vm_config(self, name: str, memory: int = 64, extra: str = "") -> Path:
        path = self.root / f"{name}.cfg"
        path.write_text(f'kernel = "{self.kernel}"\nmemory = {memory}\nname = "{name}"\n'
                        + extra)
        return path

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.sockdir, ignore_errors=True)


def vm_record(name: str, kernel: Path, memory_mib: int = 64, vcpus: int = 1, **fields) -> dict:
    """A VM record for VM.create: a PV guest of ``kernel``."""
    rec = {"name_label": name, "name_description": "made by a test",
           "memory_static_max": str(memory_mib << 20), "memory_dynamic_max": str(memory_mib << 20),
           "memory_dynamic_min": str(memory_mib << 20), "memory_static_min": "0",
           "VCPUs_max": str(vcpus), "VCPUs_at_startup": str(vcpus),
           "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
           "actions_after_crash": "destroy", "PV_kernel": str(kernel), "PV_args": "ro",
           "PV_ramdisk": "", "PV_bootloader": "", "PV_bootloader_args": "",
           "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {}, "PCI_bus": "",
           "other_config": {}, "is_a_template": False, "auto_power_on": False,
           "user_version": "1", "VCPUs_params": {}}
    rec.update(fields)
    return rec
