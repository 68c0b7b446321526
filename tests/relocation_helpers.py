"""Helpers for the two-host relocation tests: hosts, domains, memory digests, a TCP proxy
that can stall or cut a migration, a migration tool that records its calls."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict, List, Optional

from tests.daemon_helpers import XendInstance, free_port

REPO = Path(__file__).resolve().parent.parent


class Host(XendInstance):
    """A xend with a relocation server on ``address``:``port``."""

    def __init__(self, root: Path, extra: str = "", address: str = "127.0.0.1",
                 host_memory_mib: int = 4096, ssl_port: Optional[int] = None):
        self.address = address
        self.port = free_port()
        self.ssl_port = ssl_port
        lines = ["(xend-relocation-server yes)",
                 f"(xend-relocation-address {address})",
                 f"(xend-relocation-port {self.port})"]
        if ssl_port:
            lines.append(f"(xend-relocation-ssl-port {ssl_port})")
        super().__init__(root, extra="\n".join(lines) + "\n" + extra,
                         host_memory_mib=host_memory_mib)

    def names(self) -> Dict[str, str]:
        """name -> state column of ``xm list`` ('' for a halted managed domain)."""
        r = self.xm("list")
        assert r.returncode == 0, r.stderr
        out = {}
        for line in r.stdout.splitlines()[1:]:
            parts = line.split()
            if parts:
                out[parts[0]] = parts[-2] if len(parts) >= 6 else ""
        return out

    def guests(self) -> Dict[str, str]:
        return {n: s for n, s in self.names().items() if n != "Domain-0"}

    def domid(self, name: str) -> int:
        rec = self.proxy().xend.domain(name)
        return int(next(v[1] for v in rec[1:] if isinstance(v, list) and v[0] == "domid"))

    def sim_state(self) -> Path:
        return self.paths["simulated-state-path"]

    def sim_domids(self) -> List[int]:
        """Domains the simulated hypervisor holds (besides dom0): what is really left."""
        doc = json.loads((self.sim_state() / "domains.json").read_text())
        return [r["domid"] for r in doc["domains"] if r["domid"] != 0]

    def log(self) -> str:
        try:
            return self.paths["logfile"].read_text()
        except OSError:
            return ""


def running(state: str) -> bool:
    return "p" not in state and ("r" in state or "b" in state)


def write_domain_config(dirpath: Path, name: str, memory: int = 64, args: str = "",
                        vif: bool = False) -> Path:
    kernel = dirpath / "vmlinuz"
    if not kernel.exists():
        kernel.write_bytes(b"\0" * 64)
    cfg = dirpath / f"{name}.cfg"
    text = f'name = "{name}"\nkernel = "{kernel}"\nmemory = {memory}\nvcpus = 1\n'
    if args:
        text += f'extra = "{args}"\n'
    if vif:
        text += "vif = [ 'mac=00:16:3e:00:00:01' ]\n"
    cfg.write_text(text)
    return cfg


def create(host: Host, dirpath: Path, name: str, **kw) -> None:
    r = host.xm("create", str(write_domain_config(dirpath, name, **kw)))
    assert r.returncode == 0, r.stdout + r.stderr + host.log_tail()


# -- memory -----------------------------------------------------------------------------------
def memory_digest(state: Path, domid: int) -> str:
    """SHA-256 of a domain's memory, page by page in pfn order, as the hypervisor reads it."""
    from xend.hypervisor.simulated import SimulatedHypervisor
    hv = SimulatedHypervisor(str(state), create=False)
    try:
        h = hashlib.sha256()
        n = hv.nr_pages(domid)
        for _, data in hv.read_pages(domid, range(n)):
            h.update(data)
        return h.hexdigest()
    finally:
        hv.close()


def restored_digest(state: Path, domid: int) -> str:
    """SHA-256 of the memory a restore wrote into the simulated domain (what it stored, every
    page of which must be marked written): the memory as it arrived, whatever the guest has
    dirtied since it was unpaused."""
    from xend.hypervisor.simpages import StoredPages
    from xend.hypervisor.simulated import SimulatedHypervisor
    d = state / "dom" / str(domid)
    bitmap = (d / "written").read_bytes()
    hv = SimulatedHypervisor(str(state), create=False)
    try:
        n = hv.nr_pages(domid)
        uuid = hv.domain_info(domid).uuid
    finally:
        hv.close()
    missing = [p for p in range(n) if not bitmap[p >> 3] & (1 << (p & 7))]
    assert not missing, f"{len(missing)} pages never written, e.g. {missing[:5]}"
    h = hashlib.sha256()
    for data in StoredPages(str(d)).as_stored(uuid, n):
        h.update(data)
    return h.hexdigest()


# -- a migration tool that records its calls and can fail or checksum -------------------------
def write_tool(dirpath: Path, fail_step: Optional[int] = None,
               digest_state: Optional[Path] = None) -> Path:
    """A tool that appends its argument list to ``calls.log``; fails with status 3 at
    ``fail_step``; at step 2 (the guest paused for good) writes the source domain's memory
    digest to ``digest-<domname>`` when ``digest_state`` is the source's simulated state."""
    helper = dirpath / "tool.py"
    helper.write_text(textwrap.dedent(f"""\
        import sys, json
        sys.path.insert(0, {str(REPO)!r})
        args = sys.argv[1:]
        opts = dict(zip(args[0::2], args[1::2]))
        with open({str(dirpath / "calls.log")!r}, "a") as f:
            f.write(" ".join(args) + "\\n")
        if "-recover" in args:
            sys.exit(0)
        step = int(opts["-step"])
        if {fail_step!r} is not None and step == {fail_step!r}:
            print("tool: refusing step", step)
            sys.exit(3)
        state = {str(digest_state) if digest_state else None!r}
        if state and step == 2:
            from tests.relocation_helpers import memory_digest
            doc = json.load(open(state + "/domains.json"))
            domid = next(r["domid"] for r in doc["domains"] if r["name"] == opts["-domname"])
            with open({str(dirpath)!r} + "/digest-" + opts["-domname"], "w") as f:
                f.write(memory_digest(__import__("pathlib").Path(state), domid))
        print("tool: step", step, "ok")
        """))
    tool = dirpath / "migration-tool"
    tool.write_text(f"#!/bin/sh\nexec {sys.executable} {helper} \"$@\"\n")
    tool.chmod(0o755)
    return tool


def tool_calls(dirpath: Path) -> List[str]:
    try:
        return (dirpath / "calls.log").read_text().splitlines()
    except OSError:
        return []


# -- a TCP proxy between sender and receiver ---------------------------------------------------
class Proxy:
    """Forwards connections to ``target``. Client-to-server bytes are counted; after
    ``stall_after`` bytes forwarding stops until ``resume()`` (``stalled`` is set meanwhile);
    after ``cut_after`` bytes both sides are reset."""

    def __init__(self, target: tuple, stall_after: Optional[int] = None,
                 cut_after: Optional[int] = None, bind: str = "127.0.0.1"):
        self.target = target
        self.stall_after = stall_after
        self.cut_after = cut_after
        self.forwarded = 0
        self.stalled = threading.Event()
        self._resume = threading.Event()
        self.closed = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind, 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self._socks: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def resume(self) -> None:
        self._resume.set()

    def close(self) -> None:
        self._resume.set()
        for s in [self.listener, *self._socks]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    @staticmethod
    def _reset(s: socket.socket) -> None:
        """Abort the connection (RST). shutdown() first: close() alone does not release a
        socket another thread is blocked in recv() on."""
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.shutdown(socket.SHUT_RD)
            s.close()
        except OSError:
            pass

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        """Copy src -> dst. An end of stream is passed on (half-close); an error on either
        side aborts both connections, as a dead host's kernel would."""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if upstream:
                    if self.cut_after is not None and self.forwarded + len(data) > self.cut_after:
                        raise ConnectionAbortedError("cut")
                    if self.stall_after is not None and self.forwarded >= self.stall_after:
                        self.stalled.set()
                        self._resume.wait()
                    self.forwarded += len(data)
                dst.sendall(data)
        except OSError:
            self._reset(src)
            self._reset(dst)
        finally:
            self.closed.set()


def openssl_cert(dirpath: Path, name: str = "relocation") -> tuple:
    if not shutil.which("openssl"):
        import pytest       # here only: the benchmarks use these helpers without pytest
        pytest.skip("openssl not installed")
    key, cert = dirpath / f"{name}.key", dirpath / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


def env_with_repo() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env
