"""README.md's commands: .ci/run runs the same test command and installs what README asks for;
the quickstart they run works (the whole commands run in tests/test_freshroot.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_commands import REPO, demo_command, readme_test_command, readme_test_packages


def ci_script() -> str:
    return (REPO / ".ci" / "run").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    assert readme_test_command() in ci_script().splitlines()
    assert readme_test_command().endswith(".venv/bin/python -m pytest -q")


def test_ci_installs_every_package_the_readme_names():
    text = ci_script().replace("\\\n", " ")
    install = next(line for line in text.splitlines() if "apt-get install" in line)
    assert set(readme_test_packages()) <= set(install.split())
    assert {"python3-venv", "python3-pip", "curl", "systemd", "devscripts", "insserv",
            "logrotate"} <= set(install.split())


def test_demo_command_sets_up_the_checkout_venv_and_runs_the_quickstart():
    cmd = demo_command()
    assert cmd.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert cmd.endswith('PATH="$PWD/.venv/bin:$PATH" sh examples/quickstart.sh')


def run_quickstart(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    bindir = os.path.dirname(sys.executable)   # the xend and xm of the Python running us
    environ = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
               **env}
    return subprocess.run(["sh", str(REPO / "examples" / "quickstart.sh")], capture_output=True,
                          text=True, timeout=120, env=environ, cwd=tmp_path)


def stop_line(out: str) -> str:
    last = out.rstrip("\n").splitlines()[-1]
    m = re.fullmatch(r"xend is left running; stop it with: (\S+ -c \S+ stop)", last)
    assert m, last
    return m.group(1)


@pytest.mark.skipif(not os.access(os.path.join(os.path.dirname(sys.executable), "xend"), os.X_OK),
                    reason="needs xend installed beside the Python running the tests")
@pytest.mark.timeout(240)
def test_quickstart_shows_the_demo_guest_and_how_to_stop_xend(tmp_path):
    r = run_quickstart(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    stop = stop_line(r.stdout)
    try:
        assert "Started domain demo (id=1)\n" in r.stdout
        lines = r.stdout.splitlines()
        head = lines.index(next(line for line in lines if line.startswith("Name ")))
        rows = [line.split() for line in lines[head + 1:head + 3]]
        assert rows[0][:2] == ["Domain-0", "0"] and rows[1][:3] == ["demo", "1", "256"]
        made = [p for p in tmp_path.iterdir() if p.name.startswith("xend-demo.")]
        assert len(made) == 1 and stop.split()[2] == f"{made[0]}/xend-config.sxp"   # mktemp'd
        assert stop.split()[0] == os.path.join(os.path.dirname(sys.executable), "xend")
    finally:
        assert subprocess.run(stop.split(), capture_output=True, timeout=120).returncode == 0
    r = subprocess.run(stop.split()[:3] + ["status"], capture_output=True, timeout=60)
    assert r.returncode == 3


@pytest.mark.skipif(not os.access(os.path.join(os.path.dirname(sys.executable), "xend"), os.X_OK),
                    reason="needs xend installed beside the Python running the tests")
@pytest.mark.timeout(240)
def test_quickstart_in_xend_demo_dir_runs_again_without_a_second_guest(tmp_path):
    demo = tmp_path / "demo"
    first = run_quickstart(tmp_path, XEND_DEMO_DIR=str(demo))
    assert first.returncode == 0, first.stderr
    try:
        again = run_quickstart(tmp_path, XEND_DEMO_DIR=str(demo))
        assert again.returncode == 0, again.stderr
        assert "Started domain" not in again.stdout and "\ndemo " in again.stdout
        assert stop_line(again.stdout) == f"{os.path.dirname(sys.executable)}/xend -c {demo}/xend-config.sxp stop"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("xend-demo.")]
    finally:
        subprocess.run(stop_line(first.stdout).split(), capture_output=True, timeout=120)


def test_quickstart_says_what_is_missing_without_xend_on_path(tmp_path):
    r = subprocess.run(["sh", str(REPO / "examples" / "quickstart.sh")], capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    if r.returncode == 0:       # a system-wide xend is on the standard PATH: not this case
        subprocess.run(stop_line(r.stdout).split(), capture_output=True, timeout=120)
        pytest.skip("xend is installed system-wide")
    assert r.returncode == 1 and "xend and xm are not on PATH" in r.stderr
    assert list(tmp_path.iterdir()) == []
