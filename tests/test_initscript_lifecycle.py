"""The full lifecycle through the real etc/init.d/xend and the real `xend` command.

Every test runs its own xend with every path inside its tmp_path, a settings file
named by XEND_DEFAULTS (direct runs), and always stops what it started in a finally.
The `service` round trip (root only, no systemd as PID 1) installs the script as
/etc/init.d/xend and a settings file as /etc/default/xend for its duration.

Skipped while `xend` is not installed (beside the Python running the tests, or on PATH).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import installed_command

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "etc" / "init.d" / "xend"
XEND = installed_command("xend")

pytestmark = pytest.mark.skipif(
    XEND is None, reason="the `xend` command is not installed (pip install -e .)"
)


# --------------------------------------------------------------------------- processes


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ppid(pid: int) -> int:
    out = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out else 0


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains text (every xend we start has
    `-c <its tmp config>` in its argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            pid = int(entry)
            if text in cmdline(pid) and alive(pid):
                found.append(pid)
    return found


def wait_for(pred, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def answers(path: Path) -> bool:
    """The unix XML-RPC socket accepts a connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --------------------------------------------------------------------------- one xend in tmp_path


class Xend:
    """One xend instance: its config, settings file and the processes seen."""

    def __init__(self, d: Path, extra: str = ""):
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.pidfile = d / "run" / "xend.pid"
        self.sock = d / "run" / "xmlrpc.sock"
        self.lockfile = d / "subsys" / "xend"
        for sub in ("run", "log", "lib", "subsys"):
            (d / sub).mkdir(exist_ok=True)
        self.config = d / "xend-config.sxp"
        lines = [
            "# written by tests/test_initscript_lifecycle.py",
            f"(xend-pid-file '{self.pidfile}')",
            f"(logfile '{d / 'log' / 'xend.log'}')",
            f"(xend-debug-logfile '{d / 'log' / 'xend-debug.log'}')",
            f"(xend-unix-xmlrpc-path '{self.sock}')",
            f"(xend-unix-path '{d / 'run' / 'xend-socket'}')",
            f"(xend-relocation-unix-path '{d / 'run' / 'relocation-socket'}')",
            f"(xend-domains-path '{d / 'lib' / 'domains'}')",
            f"(xend-state-path '{d / 'lib' / 'state'}')",
            f"(xend-storage-path '{d / 'lib' / 'storage'}')",
            f"(xend-security-path '{d / 'lib' / 'security'}')",
            f"(xend-dump-path '{d / 'lib' / 'dump'}')",
            f"(simulated-state-path '{d / 'lib' / 'simulated'}')",
            "(hypervisor-backend simulated)",
            "(xend-relocation-server no)",
        ]
        if extra:
            lines.append(extra)
        self.config.write_text("\n".join(lines) + "\n")
        self.settings = d / "settings"
        self.write_settings(self.settings)
        self.seen: set[int] = set()

    def write_settings(self, path: Path) -> None:
        path.write_text(
            "# written by tests/test_initscript_lifecycle.py\n"
            f"XEND={XEND}\n"
            f"XEND_CONFIG={self.config}\n"
            f"XEND_LOCKFILE={self.lockfile}\n"
        )

    def line_of(self, option: str) -> int:
        for n, line in enumerate(self.config.read_text().splitlines(), 1):
            if line.startswith(f"({option} "):
                return n
        raise AssertionError(option)

    # -- running the script

    def run(self, action: str, timeout: float = 90) -> subprocess.CompletedProcess:
        """`sh etc/init.d/xend ACTION` with the environment `service` would give it."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "XEND_DEFAULTS": str(self.settings),
        }
        r = subprocess.run(["sh", str(SCRIPT), action], env=env, cwd="/",
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        self.note()
        return r

    def service(self, action: str, timeout: float = 90) -> subprocess.CompletedProcess:
        r = subprocess.run(["service", "xend", action], cwd="/",
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        self.note()
        return r

    # -- state

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def note(self) -> None:
        """Remember every xend process of this instance, for the cleanup."""
        p = self.pid()
        if p and alive(p):
            self.seen.add(p)
            w = ppid(p)
            if w > 1:
                self.seen.add(w)
        self.seen.update(pids_mentioning(str(self.config)))

    def running_pid(self, timeout: float = 10) -> int:
        """The server pid, once the pid file names a live process that answers."""
        p = wait_for(lambda: (lambda q: q if q and alive(q) else None)(self.pid()), timeout)
        assert p, f"no live pid in {self.pidfile}"
        assert wait_for(lambda: answers(self.sock), timeout), f"{self.sock} does not answer"
        self.note()
        return p

    def assert_stopped(self, *pids: int) -> None:
        assert not self.pidfile.exists(), "pid file left behind"
        for p in pids:
            assert wait_for(lambda: not alive(p), 10), f"process {p} still alive"
        left = wait_for(lambda: not pids_mentioning(str(self.config)), 10)
        assert left, f"xend processes left: {pids_mentioning(str(self.config))}"

    # -- cleanup

    def cleanup(self) -> None:
        try:
            self.run("stop", timeout=60)
        except Exception:
            pass
        self.note()
        own_pgid = os.getpgid(0)
        for p in sorted(self.seen | set(pids_mentioning(str(self.config)))):
            if not alive(p) or "xend" not in cmdline(p):
                continue
            try:
                pgid = os.getpgid(p)
                if pgid > 1 and pgid != own_pgid:
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def xend(tmp_path):
    x = Xend(tmp_path / "xend")
    try:
        yield x
    finally:
        x.cleanup()


def out(r: subprocess.CompletedProcess) -> str:
    return f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


# --------------------------------------------------------------------------- direct runs


@pytest.mark.timeout(120)
def test_round_trip(xend):
    r = xend.run("status")
    assert r.returncode == 3, out(r)

    r = xend.run("start")
    assert r.returncode == 0, out(r)
    p1 = xend.running_pid()
    watchdog = ppid(p1)
    assert xend.lockfile.exists()

    r = xend.run("status")
    assert r.returncode == 0, out(r)

    r = xend.run("start")
    assert r.returncode == 0, out(r)
    assert xend.pid() == p1, "start of a running xend changed the server"

    r = xend.run("restart")
    assert r.returncode == 0, out(r)
    p2 = xend.running_pid()
    watchdog2 = ppid(p2)
    assert p2 != p1
    assert wait_for(lambda: not alive(p1), 10), "old server survived restart"

    r = xend.run("reload")
    assert r.returncode == 0, out(r)
    assert xend.running_pid() == p2, "reload replaced the server process"

    r = xend.run("stop")
    assert r.returncode == 0, out(r)
    xend.assert_stopped(p1, p2, watchdog, watchdog2)
    assert not xend.lockfile.exists()

    r = xend.run("stop")
    assert r.returncode == 0, out(r)

    r = xend.run("status")
    assert r.returncode == 3, out(r)


@pytest.mark.timeout(120)
def test_watchdog_restarts_a_killed_server(xend):
    r = xend.run("start")
    assert r.returncode == 0, out(r)
    p1 = xend.running_pid()
    watchdog = ppid(p1)
    assert watchdog > 1 and "xend" in cmdline(watchdog), "no watchdog parent"

    os.kill(p1, signal.SIGKILL)
    p2 = wait_for(lambda: (lambda q: q if q and q != p1 and alive(q) else None)(xend.pid()), 15)
    assert p2, "the watchdog did not restart the server"
    assert xend.running_pid(15) == p2
    assert ppid(p2) == watchdog
    r = xend.run("status")
    assert r.returncode == 0, out(r)

    r = xend.run("stop")
    assert r.returncode == 0, out(r)
    xend.assert_stopped(p2, watchdog)


@pytest.mark.timeout(120)
def test_dead_server_and_watchdog_then_start(xend):
    r = xend.run("start")
    assert r.returncode == 0, out(r)
    p1 = xend.running_pid()
    watchdog = ppid(p1)
    assert watchdog > 1
    os.kill(watchdog, signal.SIGKILL)  # first, so it cannot restart the server
    os.kill(p1, signal.SIGKILL)
    assert wait_for(lambda: not alive(p1) and not alive(watchdog), 10)

    r = xend.run("status")
    assert r.returncode == 1, out(r)  # dead but pid file exists

    r = xend.run("start")
    assert r.returncode == 0, out(r)
    p2 = xend.running_pid()
    assert p2 != p1

    r = xend.run("stop")
    assert r.returncode == 0, out(r)
    xend.assert_stopped(p2)


@pytest.mark.timeout(120)
def test_unreadable_pid_file_status_4(xend):
    xend.pidfile.mkdir()  # unreadable as a file, even for root
    r = xend.run("status")
    assert r.returncode == 4, out(r)


@pytest.mark.timeout(120)
def test_bad_config_value_fails_start(tmp_path):
    x = Xend(tmp_path / "xend", extra="(xend-port abc)")
    try:
        r = x.run("start")
        assert r.returncode == 1, out(r)
        text = r.stdout + r.stderr
        assert f"{x.config}:{x.line_of('xend-port')}" in text, out(r)
        assert "xend-port" in text and "abc" in text, out(r)
        x.assert_stopped()
        assert not x.lockfile.exists()
        # Not running; never 1 ("dead but pid file exists": there is no pid file).
        # 4 ("unknown") is acceptable when xend refuses to read a bad config at all.
        r = x.run("status")
        assert r.returncode in (3, 4), out(r)
    finally:
        x.cleanup()


# --------------------------------------------------------------------------- through `service`

INITD = Path("/etc/init.d/xend")
MARKER = "XEND_DEFAULTS"  # our script documents it; a foreign xend script would not


def _service_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (installs /etc/init.d/xend)"
    if shutil.which("service") is None:
        return "no `service` command"
    if Path("/run/systemd/system").is_dir():
        return "systemd is PID 1: `service` would go through systemctl"
    if INITD.exists() and MARKER not in INITD.read_text(errors="replace"):
        return "/etc/init.d/xend exists and is not ours: not touching it"
    return None


class Installed:
    """Install the script and a settings file system-wide; undo everything."""

    def __init__(self, x: Xend):
        self.x = x
        # The script reads /etc/sysconfig/xend first when it exists.
        sysconfig = Path("/etc/sysconfig/xend")
        self.settings = sysconfig if sysconfig.exists() else Path("/etc/default/xend")
        self.saved: dict[Path, tuple[bytes, int] | None] = {}

    def _save(self, p: Path) -> None:
        self.saved[p] = (p.read_bytes(), p.stat().st_mode) if p.exists() else None

    def __enter__(self):
        self._save(INITD)
        self._save(self.settings)
        shutil.copy(SCRIPT, INITD)
        INITD.chmod(0o755)
        self.settings.parent.mkdir(parents=True, exist_ok=True)
        self.x.write_settings(self.settings)
        return self

    def __exit__(self, *exc):
        try:
            self.x.cleanup()
        finally:
            for p, old in self.saved.items():
                if old is None:
                    p.unlink(missing_ok=True)
                else:
                    p.write_bytes(old[0])
                    p.chmod(old[1] & 0o7777)


needs_service = pytest.mark.skipif(_service_skip_reason() is not None,
                                   reason=_service_skip_reason() or "")


@needs_service
@pytest.mark.timeout(120)
def test_service_round_trip(tmp_path):
    x = Xend(tmp_path / "xend")
    with Installed(x):
        r = x.service("status")
        assert r.returncode == 3, out(r)
        r = x.service("start")
        assert r.returncode == 0, out(r)
        p1 = x.running_pid()
        assert x.lockfile.exists()
        r = x.service("status")
        assert r.returncode == 0, out(r)
        r = x.service("start")
        assert r.returncode == 0, out(r)
        assert x.pid() == p1
        r = x.service("restart")
        assert r.returncode == 0, out(r)
        p2 = x.running_pid()
        assert p2 != p1
        r = x.service("reload")
        assert r.returncode == 0, out(r)
        assert x.running_pid() == p2
        r = x.service("stop")
        assert r.returncode == 0, out(r)
        x.assert_stopped(p1, p2)
        r = x.service("stop")
        assert r.returncode == 0, out(r)
        r = x.service("status")
        assert r.returncode == 3, out(r)
    assert not INITD.exists() or MARKER in INITD.read_text()


@needs_service
@pytest.mark.timeout(120)
def test_service_bad_config_value(tmp_path):
    x = Xend(tmp_path / "xend", extra="(xend-port abc)")
    with Installed(x):
        r = x.service("start")
        assert r.returncode == 1, out(r)
        text = r.stdout + r.stderr
        assert f"{x.config}:{x.line_of('xend-port')}" in text, out(r)
        assert "xend-port" in text and "abc" in text, out(r)
        x.assert_stopped()
