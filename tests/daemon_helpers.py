"""Start real xend daemons in temporary directories and talk to them (for the tests)."""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Dict, Optional


def installed_command(name: str) -> Optional[str]:
    """The console script ``name`` installed beside the Python running the tests (a virtual
    environment's bin/, which need not be on PATH), else the one on PATH, else None."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def xend_command() -> list:
    exe = installed_command("xend")
    return [exe] if exe else [sys.executable, "-m", "xend.cli"]


def xm_command() -> list:
    exe = installed_command("xm")
    return [exe] if exe else [sys.executable, "-m", "xend.xm.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__()
        self.unix_path = path
        self.timeout = timeout

    def make_connection(self, host):
        return UnixHTTPConnection(self.unix_path, self.timeout)


def server_proxy(path: str, timeout: float = 30) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=UnixTransport(path, timeout),
                                     allow_none=True)


class XendInstance:
    """One xend with every path inside ``root``; the simulated hypervisor by default."""

    def __init__(self, root: Path, extra: str = "", host_memory_mib: int = 4096,
                 host_cpus: int = 4):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "xend-config.sxp"
        self.paths: Dict[str, Path] = {
            "xend-pid-file": self.root / "run" / "xend.pid",
            "logfile": self.root / "log" / "xend.log",
            "xend-debug-logfile": self.root / "log" / "xend-debug.log",
            "xend-unix-xmlrpc-path": self.root / "run" / "xmlrpc.sock",
            "xen-api-unix-path": self.root / "run" / "xen-api.sock",
            "xend-unix-path": self.root / "lib" / "xend-socket",
            "xend-relocation-unix-path": self.root / "lib" / "relocation-socket",
            "xend-domains-path": self.root / "lib" / "domains",
            "xend-state-path": self.root / "lib" / "state",
            "xend-storage-path": self.root / "lib" / "storage",
            "xend-security-path": self.root / "lib" / "security",
            "xend-dump-path": self.root / "dump",
            "simulated-state-path": self.root / "sim",
        }
        self.write_config(extra, host_memory_mib, host_cpus)

    def write_config(self, extra: str = "", host_memory_mib: int = 4096, host_cpus: int = 4) -> None:
        lines = [f"({k} {v})" for k, v in self.paths.items()]
        lines += ["(hypervisor-backend simulated)",
                  f"(simulated-host-memory {host_memory_mib})",
                  f"(simulated-host-cpus {host_cpus})",
                  extra]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["XEND_CONFIG"] = str(self.config)
        env.pop("XM_SERVER", None)
        return env

    def xend(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(xend_command() + ["-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env)

    def xm(self, *args: str, timeout: float = 120, input: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run(xm_command() + list(args), capture_output=True, text=True,
                              timeout=timeout, env=self.env, input=input)

    def start(self) -> "XendInstance":
        r = self.xend("start")
        if r.returncode != 0:
            raise RuntimeError(f"xend start failed ({r.returncode}): {r.stderr}\n"
                               + self.log_tail())
        return self

    def stop(self) -> None:
        r = self.xend("stop")
        if r.returncode != 0:
            self.kill()

    def kill(self) -> None:
        """Last resort: SIGKILL the server and its watchdog."""
        pid = self.pid()
        if pid:
            for p in (parent_of(pid), pid):
                if p and p > 1:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def pid(self) -> Optional[int]:
        try:
            return int(self.paths["xend-pid-file"].read_text().strip())
        except (OSError, ValueError):
            return None

    def proxy(self, timeout: float = 30) -> xmlrpc.client.ServerProxy:
        return server_proxy(str(self.paths["xend-unix-xmlrpc-path"]), timeout)

    def answering(self) -> bool:
        try:
            return bool(self.proxy(timeout=5).xend.node.info())
        except OSError:
            return False

    def log_tail(self, n: int = 40) -> str:
        out = []
        for key in ("logfile", "xend-debug-logfile"):
            try:
                out += self.paths[key].read_text().splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(out)

    def wait_for(self, predicate, timeout: float = 15, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError("condition not met in time\n" + self.log_tail())


def parent_of(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
