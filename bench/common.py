"""Shared pieces of the benchmarks: result rows, timing, a xend with N domains, libvirt peers.

Every figure is a ``Row``: a measured value beside an anchor measured in the same run, and the
ratio between them (the figure that counts: these machines are noisy and shared). A ``target``
says which way the ratio should go: ``("<=", 1.5)`` for times, ``(">=", 0.25)`` for rates.
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.daemon_helpers import XendInstance  # noqa: E402

PEERS_PIDFILE = "/run/libvirtd-bench.pid"


# -- rows -----------------------------------------------------------------------------------
@dataclass
class Row:
    bench: str
    figure: str
    value: Optional[float]
    unit: str
    anchor: str = ""
    anchor_value: Optional[float] = None
    target: Optional[Tuple[str, float]] = None
    note: str = ""
    target_on: str = "ratio"      # "ratio", or "value": an absolute target on the figure itself

    @property
    def ratio(self) -> Optional[float]:
        if self.value is None or not self.anchor_value:
            return None
        return self.value / self.anchor_value

    @property
    def verdict(self) -> str:
        r = self.ratio if self.target_on == "ratio" else self.value
        if self.target is None:
            return ""
        if r is None:
            return "n/a"
        op, limit = self.target
        ok = r <= limit if op == "<=" else r >= limit
        return "met" if ok else "MISSED"


def fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit in ("/s", "MiB/s"):
        return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:g} {unit}"


def print_table(rows: Sequence[Row], out=sys.stdout) -> None:
    head = ("benchmark", "figure", "value", "anchor", "anchor value", "ratio", "target", "")
    lines = [head]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        target = "" if r.target is None else (
            f"{r.target[0]} {r.target[1]:g}x" if r.target_on == "ratio"
            else f"{r.target[0]} {fmt(r.target[1], r.unit)}")
        lines.append((r.bench, r.figure, fmt(r.value, r.unit), r.anchor or "-",
                      fmt(r.anchor_value, r.unit) if r.anchor else "-", ratio, target, r.verdict))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        out.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    notes = [r for r in rows if r.note]
    if notes:
        out.write("\n")
        for r in notes:
            out.write(f"  {r.bench} / {r.figure}: {r.note}\n")
    out.flush()


# -- timing ---------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def wall(cmd: Sequence[str], env=None, check: bool = True, stdin=subprocess.DEVNULL) -> float:
    """Seconds of wall time of one command (output discarded)."""
    t0 = time.perf_counter()
    r = subprocess.run(list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       stdin=stdin)
    t = time.perf_counter() - t0
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return t


def interleaved_medians(cmds: Sequence[Tuple[Sequence[str], Optional[dict]]], runs: int,
                        warmup: int = 2) -> List[float]:
    """Median wall time of each command, the commands run alternately (so a burst of load on
    this machine hits them alike)."""
    for _ in range(warmup):
        for cmd, env in cmds:
            wall(cmd, env)
    times: List[List[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for i, (cmd, env) in enumerate(cmds):
            times[i].append(wall(cmd, env))
    return [median(t) for t in times]


# -- executables ----------------------------------------------------------------------------
def python_exe() -> str:
    """The interpreter running the benchmark, as it was started: a virtual environment's
    ``bin/python`` (a symlink: resolving it would start the base interpreter, without the
    venv's packages). ``sys.executable`` is never a pyenv shim (a shell script that execs the
    real interpreter, which then reports its own path)."""
    return sys.executable


def console_script(name: str) -> List[str]:
    """The installed console script beside the interpreter, run by that interpreter; else the
    module (a pyenv shim on PATH would add ~100 ms of bash to every run)."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return [python_exe(), str(cand)] if not os.access(cand, os.X_OK) else [str(cand)]
    exe = shutil.which(name)
    if exe and "shims" not in exe:
        return [exe]
    module = {"xm": "xend.xm.main", "xend": "xend.cli"}[name]
    return [python_exe(), "-m", module]


def byte_compile() -> None:
    """Byte-compile the xend package, as installing it does (pip compiles what it installs);
    the commands timed then load it as an installed xend would, whatever
    PYTHONDONTWRITEBYTECODE says (it only stops the interpreter writing .pyc files)."""
    import compileall
    compileall.compile_dir(str(REPO / "xend"), quiet=1)


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (f"{os.cpu_count()} cpus ({model}); python {sys.version.split()[0]}; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# -- xend -----------------------------------------------------------------------------------
class Fleet:
    """One xend (simulated hypervisor, every path in a temp dir, a host big enough for
    thousands of small domains) that grows to N running domains on demand. Shared by the
    benchmarks that need N domains, so they are created once per run.

    ``sim_in_ram``: the simulated hypervisor's state directory (what stands for the
    hypervisor's memory and xenstored's database, both RAM on a real host) goes on tmpfs
    (/dev/shm) instead of the temp dir on disk. Every xenstore write of the simulator is a
    file replacement (rename, no fsync), so on disk the file system sets part of the pace of
    create/destroy (see bench/RESULTS.md)."""

    MEM_MIB = 1

    def __init__(self, root: Optional[Path] = None, sim_in_ram: bool = True):
        self.tmp = Path(root or tempfile.mkdtemp(prefix="xend-bench-"))
        self.xend = XendInstance(self.tmp / "xend", host_memory_mib=1 << 22, host_cpus=4)
        self.sim_dir: Optional[Path] = None
        if sim_in_ram and os.path.isdir("/dev/shm"):
            self.sim_dir = Path(tempfile.mkdtemp(prefix="xend-bench-sim-", dir="/dev/shm"))
            self.xend.paths["simulated-state-path"] = self.sim_dir
            self.xend.write_config(host_memory_mib=1 << 22, host_cpus=4)
        self.kernel = self.tmp / "vmlinuz"
        self.kernel.write_bytes(b"\0" * 4096)
        self.count = 0          # guests (Domain-0 not counted)
        self.started = False

    def start(self) -> "Fleet":
        if not self.started:
            self.xend.start()
            self.started = True
        return self

    @property
    def socket(self) -> str:
        return str(self.xend.paths["xend-unix-xmlrpc-path"])

    @property
    def xm_env(self) -> dict:
        """xm reaching this xend as it reaches the default socket: by URI, no config to read."""
        env = dict(os.environ)
        env.pop("XEND_CONFIG", None)
        env["XM_SERVER"] = "httpu://" + self.socket
        return env

    def sxp(self, name: str) -> list:
        return ["vm", ["name", name], ["memory", str(self.MEM_MIB)], ["vcpus", "1"],
                ["image", ["linux", ["kernel", str(self.kernel)]]]]

    def grow(self, n: int, clients: int = 4, progress: bool = True) -> None:
        """Have ``n`` running guests (created through XML-RPC by ``clients`` threads)."""
        self.start()
        todo = list(range(self.count, n))
        if not todo:
            return
        errors: List[BaseException] = []
        lock = threading.Lock()
        t0 = time.monotonic()

        def worker() -> None:
            proxy = self.xend.proxy(timeout=120)
            while True:
                with lock:
                    if not todo or errors:
                        return
                    i = todo.pop(0)
                try:
                    proxy.xend.domain.create(self.sxp(f"bench{i}"))
                    proxy.xend.domain.unpause(f"bench{i}")
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
                    return

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"creating domains failed: {errors[0]}\n{self.xend.log_tail()}")
        self.count = n
        if progress:
            print(f"    ({n} domains running; grew in {time.monotonic() - t0:.1f} s)",
                  file=sys.stderr, flush=True)

    def pid(self) -> int:
        pid = self.xend.pid()
        if not pid:
            raise RuntimeError("xend has no pid file")
        return pid

    def stop(self) -> None:
        if self.started:
            try:
                self.xend.stop()
            finally:
                self.xend.kill()
            self.started = False
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.sim_dir is not None:
            shutil.rmtree(self.sim_dir, ignore_errors=True)


# -- libvirt --------------------------------------------------------------------------------
def virsh() -> Optional[str]:
    return shutil.which("virsh")


def libvirtd_pid() -> Optional[int]:
    """The libvirtd started by bench/peers (or any running libvirtd)."""
    try:
        pid = int(Path(PEERS_PIDFILE).read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        pass
    r = subprocess.run(["pidof", "libvirtd"], capture_output=True, text=True)
    pids = r.stdout.split()
    return int(pids[0]) if pids else None


def libvirtd_exe() -> Optional[str]:
    return shutil.which("libvirtd") or ("/usr/sbin/libvirtd" if os.path.exists("/usr/sbin/libvirtd")
                                        else None)


def virsh_run(uri: str, commands: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([virsh(), "-q", "-c", uri, commands], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"virsh {commands[:80]!r} failed: {r.stderr[-500:]}")
    return r


def test_domain_xml(name: str, memory_kib: int = 1024) -> str:
    """A minimal domain for libvirt's test driver (what the test driver needs, no devices)."""
    return (f"<domain type='test'><name>{name}</name><memory unit='KiB'>{memory_kib}</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")


def test_node_xml(n: int) -> str:
    """A test-driver node description with ``n`` running domains (for ``test:///FILE``)."""
    doms = "".join(test_domain_xml(f"dom{i}") for i in range(n))
    return ("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>"
            "<active>4</active><mhz>2000</mhz><model>i686</model></cpu>"
            f"<memory>{1 << 24}</memory>{doms}</node>")


class LibvirtTestDomains:
    """Grows libvirtd's shared ``test+unix:///default`` driver to N running domains (defined
    from XML files, then started) and removes them again.

    libvirtd keeps the default test driver's state only while a connection to it is open, so
    a ``virsh`` session is held open (commands on its stdin) for as long as the domains should
    exist; the ``virsh list`` being timed then sees them."""

    URI = "test+unix:///default"

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.names: List[str] = []
        self.session: Optional[subprocess.Popen] = None
        self.marks = 0

    def _send(self, commands: List[str]) -> None:
        if self.session is None:
            self.session = subprocess.Popen([virsh(), "-q", "-c", self.URI],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)
        self.marks += 1
        mark = f"BENCHMARK{self.marks}"
        # virsh prints echo's text without a newline, before the next prompt: an empty
        # command after it ends that line
        self.session.stdin.write("\n".join(commands + [f"echo {mark}", ""]) + "\n")
        self.session.stdin.flush()
        out = []
        while True:
            line = self.session.stdout.readline()
            if not line:
                raise RuntimeError("virsh session ended: " + "".join(out[-20:]))
            if line.startswith(mark):
                break
            out.append(line)
        errors = [ln for ln in out if "error:" in ln]
        if errors:
            raise RuntimeError("virsh: " + "".join(errors[:5]))

    def grow(self, n: int) -> None:
        # the default test driver starts with one running domain, "test"
        if self.session is None:
            self._send([])
        want = n - 1 - len(self.names)
        cmds = []
        for _ in range(max(0, want)):
            name = f"bench{len(self.names)}"
            path = self.tmp / f"{name}.xml"
            path.write_text(test_domain_xml(name))
            cmds += [f"define {path}", f"start {name}"]
            self.names.append(name)
        for i in range(0, len(cmds), 400):
            self._send(cmds[i:i + 400])

    def close(self) -> None:
        """Drop the held connection: the test driver forgets every domain."""
        if self.session is not None:
            self.session.stdin.close()
            self.session.wait(30)
            self.session = None
        self.names = []


def libvirtd_running() -> bool:
    if not virsh() or libvirtd_pid() is None:
        return False
    r = subprocess.run([virsh(), "-c", LibvirtTestDomains.URI, "list", "--all"],
                       capture_output=True)
    return r.returncode == 0


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap it if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)


def standalone(run: Callable[..., List[Row]]) -> None:
    """``main`` of a benchmark script run on its own."""
    byte_compile()
    print(machine(), flush=True)
    rows = run()
    print()
    print_table(rows)
