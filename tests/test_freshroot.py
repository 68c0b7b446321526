"""README's two commands, literally, on a fresh Debian 12 (run by .ci/run: -m freshroot).

A minbase bookworm root made by debootstrap (cached by tests/freshroot/chroot.sh under
/var/cache/xend-freshroot; each run works on a copy) gets the checkout's files, then, as a
newcomer would:

1. with only ``python3`` installed, README's demo command must fail saying what to install;
2. ``apt-get install python3-venv`` (README's "Try it"), then the demo command: xend runs,
   ``xm list`` shows the demo guest, the last line says how to stop it (we do);
3. README's "Run the tests" packages, then the test command on the test files that look for
   a tool (``tool_using_test_files``; the whole suite runs on the host just before, and CI's
   time is counted): they pass and none skips for a tool that is not installed.

Each step's output and time go to the report (printed, and kept as
/var/cache/xend-freshroot/last-run.txt). Needs root, debootstrap and the Debian mirror and
PyPI (the host's network).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.readme_commands import REPO, demo_command, readme_test_command, readme_test_packages

pytestmark = [
    pytest.mark.freshroot,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, chroot)"),
]
CHROOT = REPO / "tests" / "freshroot" / "chroot.sh"
CACHE = Path(os.environ.get("XEND_FRESHROOT_CACHE", "/var/cache/xend-freshroot"))
CHECKOUT = "/root/xend"             # where the checkout goes inside the root
TOOL_MISSING = re.compile(r"not installed|not on PATH|missing|no `|command not found", re.I)


class Report:
    def __init__(self) -> None:
        self.parts: list = []

    def step(self, title: str, r: subprocess.CompletedProcess, seconds: float) -> None:
        self.parts.append(f"==== {title}  [{seconds:.0f} s, exit {r.returncode}]\n{r.stdout}")

    def text(self) -> str:
        return "\n".join(self.parts)


def checkout_files() -> list:
    """What a clone has: the files git tracks (as they are in the work tree)."""
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if r.returncode == 0 and r.stdout:
        return [f for f in r.stdout.decode().split("\0") if f and (REPO / f).exists()]
    skip = (".venv", "build", "dist", ".git", "__pycache__", ".hypothesis")
    return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and not any(part.startswith(skip) or part.endswith(".egg-info")
                                       for part in p.relative_to(REPO).parts)]


def in_root(root: Path, shell: str, timeout: float, cwd: str = CHECKOUT,
            env: str = "") -> "tuple[subprocess.CompletedProcess, float]":
    """Run a shell command line inside the root (stderr into stdout, as a terminal shows)."""
    t0 = time.monotonic()
    r = subprocess.run([str(CHROOT), "run", str(root), "sh", "-c", f"cd {cwd} && {env}{shell}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return r, time.monotonic() - t0


@pytest.fixture
def fresh_root(tmp_path):
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed (apt-get install debootstrap)")
    r = subprocess.run([str(CHROOT), "build"], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "root"
    r = subprocess.run([str(CHROOT), "copy", str(root)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    dest = root / CHECKOUT.lstrip("/")
    for rel in checkout_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    yield root
    for pid in processes_inside(root):      # e.g. a demo xend a failed step left running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def tool_using_test_files() -> list:
    """The test files that look for a program on PATH or make certificates with openssl,
    and README's own end-to-end ones: where a package README forgot would show."""
    marks = ("which(", "tls_helpers", "relocation_helpers")
    found = [f"tests/{p.name}" for p in sorted((REPO / "tests").glob("test_*.py"))
             if p.name != "test_freshroot.py" and any(m in p.read_text() for m in marks)]
    return found + ["tests/test_readme.py", "tests/test_xm_e2e.py"]


def processes_inside(root: Path) -> list:
    """Processes whose root directory is ``root`` (started in the chroot by this test)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/root") == str(root):
                found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.mark.timeout(3600)
def test_readme_commands_on_a_fresh_debian_12(fresh_root):
    report = Report()
    try:
        _run_readme(fresh_root, report)
    finally:
        text = report.text()
        print(text)
        try:
            (CACHE / "last-run.txt").write_text(text)
        except OSError:
            pass


def _run_readme(root: Path, report: Report) -> None:
    r, t = in_root(root, "apt-get update -q && apt-get install -y -q python3", 900, cwd="/")
    report.step("apt-get install python3 (only: a host without python3-venv)", r, t)
    assert r.returncode == 0, r.stdout

    # 1. without python3-venv: a clear failure that says what to install
    r, t = in_root(root, demo_command(), 300)
    report.step(f"without python3-venv: {demo_command()}", r, t)
    assert r.returncode != 0 and "python3-venv" in r.stdout.replace("python3.11-venv", "python3-venv")

    # 2. README's "Try it": python3-venv (with what it recommends, as apt-get does), then the line
    r, t = in_root(root, "apt-get install -y -q python3-venv", 900, cwd="/")
    report.step("apt-get install python3-venv", r, t)
    assert r.returncode == 0, r.stdout
    r, t = in_root(root, demo_command(), 900)
    report.step(demo_command(), r, t)
    assert r.returncode == 0, r.stdout
    assert re.search(r"^demo +1 +256 +1 ", r.stdout, re.M), r.stdout
    assert re.search(r"^Domain-0 +0 ", r.stdout, re.M), r.stdout
    stop = re.search(r"^xend is left running; stop it with: (\S+ -c \S+ stop)$", r.stdout, re.M)
    assert stop, r.stdout
    assert stop.group(1).startswith(f"{CHECKOUT}/.venv/bin/xend -c /tmp/xend-demo.")
    status = stop.group(1)[:-len("stop")] + "status"
    r, t = in_root(root, f"{status}; echo status $?; xm=$(dirname {stop.group(1).split()[0]})/xm; "
                   f"XEND_CONFIG={stop.group(1).split()[2]} $xm list demo", 120)
    report.step("still running? (status, xm list demo)", r, t)
    assert "status 0\n" in r.stdout and re.search(r"^demo +1 ", r.stdout, re.M), r.stdout
    r, t = in_root(root, f"{stop.group(1)} && {status}; echo status $?", 120)
    report.step(stop.group(1), r, t)
    assert r.stdout.endswith("status 3\n"), r.stdout    # stopped, and said nothing
    assert processes_inside(root) == []

    # 3. README's "Run the tests": its packages, then the command .ci/run runs
    line = "apt-get install -y -q " + " ".join(readme_test_packages(options=True))
    r, t = in_root(root, line, 1800, cwd="/")
    report.step(line, r, t)
    assert r.returncode == 0, r.stdout
    # the files that look for a tool (or need openssl's certificates), with the end-to-end
    # ones of README: the whole suite runs on the host just before (CI's time is counted)
    selection = " ".join(tool_using_test_files())
    env = f"export PYTEST_ADDOPTS='-rs {selection}'; "
    r, t = in_root(root, readme_test_command(), 2400, env=env)
    report.step(f"(PYTEST_ADDOPTS='-rs {selection}') {readme_test_command()}", r, t)
    assert r.returncode == 0, r.stdout[-5000:]
    summary = r.stdout.rstrip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    missing_tools = [line for line in skips if TOOL_MISSING.search(line)]
    assert not missing_tools, missing_tools
