"""Packaging and installation: the wheel, `xend install-files`, the example guest configs, the
man pages where man(1) finds them, xm's bash completion, the vif-bridge script."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.daemon_helpers import XendInstance, installed_command, xend_command, xm_command

REPO = Path(__file__).resolve().parent.parent
PAGES = {"xm.1": ("1", "xm"), "xend.8": ("8", "xend"), "xend-config.sxp.5": ("5", "xend-config.sxp"),
         "xmdomain.cfg.5": ("5", "xmdomain.cfg")}
EXAMPLES = ("xmexample1", "xmexample2", "xmexample.hvm", "xmexample.pvh")
needs_man = pytest.mark.skipif(shutil.which("man") is None, reason="man not installed (man-db)")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from the checkout (through pyproject.toml's backend)."""
    out = tmp_path_factory.mktemp("wheel")
    r = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
            timeout=280)
    assert r.returncode == 0, r.stderr
    (found,) = out.glob("xend-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A virtual environment with the wheel installed (not editable), the way README's
    real-host section installs xend under /opt."""
    env = tmp_path_factory.mktemp("venv") / "xend"
    r = run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], timeout=120)
    assert r.returncode == 0, r.stderr
    r = run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
             str(wheel)], timeout=120)
    assert r.returncode == 0, r.stderr
    return env


@pytest.mark.timeout(300)
def test_pyproject_declares_the_setuptools_backend():
    text = (REPO / "pyproject.toml").read_text()
    assert 'build-backend = "setuptools.build_meta"' in text and "setuptools>=64" in text
    assert 'python_requires=">=3.9"' in (REPO / "setup.py").read_text()


@pytest.mark.timeout(300)
def test_wheel_carries_the_commands_etc_files_man_pages_and_completion(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "xend-4.4.0.1.data/data/"
    shipped_etc = {str(p.relative_to(REPO)) for p in (REPO / "etc").rglob("*") if p.is_file()
                   and "__pycache__" not in p.parts}
    assert {f"etc/xen/{e}" for e in EXAMPLES} | {"etc/xen/scripts/vif-bridge",
                                                 "etc/xen/scripts/network-bridge",
                                                 "etc/bash_completion.d/xm"} <= shipped_etc
    for rel in shipped_etc:
        assert data + "share/xend/" + rel in names, rel
    for page, (section, _) in PAGES.items():
        assert f"{data}share/man/man{section}/{page}" in names
    assert data + "share/bash-completion/completions/xm" in names
    entry_points = zipfile.ZipFile(wheel).read("xend-4.4.0.1.dist-info/entry_points.txt").decode()
    for line in ("xend = xend.cli:main", "xm = xend.xm.main:main", "xend-sim = xend.simcli:main"):
        assert line in entry_points


@needs_man
@pytest.mark.timeout(300)
def test_man_finds_every_page_after_a_venv_install(venv):
    env = dict(os.environ, PATH=f"{venv}/bin:/usr/bin:/bin", MANPATH="")
    for page, (section, name) in PAGES.items():
        r = run(["man", "-w", section, name], env=env, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == f"{venv}/share/man/man{section}/{page}", r


@pytest.mark.timeout(300)
def test_install_files_lays_what_a_package_would(venv, tmp_path):
    """From the /opt-style venv: config, examples, scripts, init script, unit, defaults,
    logrotate, completion, man pages, and wrappers that run the venv's commands."""
    root = tmp_path / "root"
    r = run([str(venv / "bin" / "xend"), "install-files", "--root", str(root)])
    assert r.returncode == 0, r.stderr
    expected = {
        "etc/xen/xend-config.sxp": 0o644, "etc/xen/xmexample1": 0o644,
        "etc/xen/xmexample2": 0o644, "etc/xen/xmexample.hvm": 0o644,
        "etc/xen/xmexample.pvh": 0o644, "etc/xen/scripts/network-bridge": 0o755,
        "etc/xen/scripts/vif-bridge": 0o755, "etc/init.d/xend": 0o755,
        "etc/default/xend": 0o644, "etc/logrotate.d/xend": 0o644,
        "etc/systemd/system/xend.service": 0o644, "etc/bash_completion.d/xm": 0o644,
        "usr/local/share/man/man1/xm.1": 0o644, "usr/local/share/man/man8/xend.8": 0o644,
        "usr/local/share/man/man5/xend-config.sxp.5": 0o644,
        "usr/local/share/man/man5/xmdomain.cfg.5": 0o644,
        "usr/local/sbin/xend": 0o755, "usr/local/sbin/xm": 0o755, "usr/local/sbin/xend-sim": 0o755,
    }
    laid = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert laid == set(expected)
    for rel, mode in expected.items():
        assert (root / rel).stat().st_mode & 0o777 == mode, rel
        assert f"installed {root / rel}" in r.stdout.splitlines()
    assert (root / "etc/xen/xmexample1").read_bytes() == (REPO / "etc/xen/xmexample1").read_bytes()
    # the wrappers run the venv's commands
    for command in ("xend", "xm"):
        text = (root / "usr/local/sbin" / command).read_text()
        assert f'exec {venv}/bin/{command} "$@"' in text
    r = run([str(root / "usr/local/sbin/xend"), "--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: xend ")
    # a second run changes nothing; an edited file is kept, the new one laid beside it
    (root / "etc/xen/xmexample1").write_text("# mine\n")
    r = run([str(venv / "bin" / "xend"), "install-files", "--root", str(root)])
    assert r.returncode == 0, r.stderr
    assert f"kept your {root}/etc/xen/xmexample1; new version in {root}/etc/xen/xmexample1.dist" \
        in r.stdout.splitlines()
    assert (root / "etc/xen/xmexample1").read_text() == "# mine\n"
    assert sum(line.startswith("unchanged ") for line in r.stdout.splitlines()) == len(expected) - 1


@needs_man
@pytest.mark.timeout(120)
def test_man_finds_the_pages_install_files_laid(tmp_path):
    root = tmp_path / "root"
    r = run(xend_command() + ["install-files", "--root", str(root)])
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, MANPATH=str(root / "usr/local/share/man"))
    for page, (section, name) in PAGES.items():
        r = run(["man", "-w", section, name], env=env, timeout=30)
        assert r.stdout.strip() == f"{root}/usr/local/share/man/man{section}/{page}", r


@pytest.mark.timeout(120)
def test_init_script_finds_xend_through_the_wrapper(tmp_path):
    """`service xend` has only the standard PATH: the wrapper in /usr/local/sbin is what it
    finds for a venv install."""
    root = tmp_path / "root"
    assert run(xend_command() + ["install-files", "--root", str(root)]).returncode == 0
    x = XendInstance(tmp_path / "x")
    settings = tmp_path / "settings"
    settings.write_text(f"XEND_CONFIG={x.config}\nXEND_LOCKFILE=\n")
    env = {"PATH": f"{root}/usr/local/sbin:/usr/bin:/bin", "XEND_DEFAULTS": str(settings)}
    r = run([str(root / "etc/init.d/xend"), "status"], env=env)
    assert r.returncode == 3 and "xend is not running" in r.stdout + r.stderr, r
    env["PATH"] = "/usr/bin:/bin"
    if shutil.which("xend", path=env["PATH"]) is None:   # without it: not installed
        r = run([str(root / "etc/init.d/xend"), "status"], env=env)
        assert r.returncode == 4 and "not installed" in r.stdout + r.stderr, r


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_guest_configs_are_accepted_by_xm_create(example, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    args = ["create", "-n", "--path", str(REPO / "etc" / "xen"), example]
    if example != "xmexample.hvm":
        args += [f"kernel={kernel}", f"ramdisk={kernel}"]
    if example == "xmexample2":
        args.append("vmid=3")
    env = dict(os.environ, XM_SERVER=f"httpu://{tmp_path}/none.sock")
    r = run(xm_command() + args, env=env)
    assert r.returncode == 0, r.stderr
    names = {"xmexample1": "ExampleDomain", "xmexample2": "VM3", "xmexample.hvm": "ExampleHVMDomain",
             "xmexample.pvh": "ExamplePVHDomain"}
    assert f"(name {names[example]})" in r.stdout
    assert ("(hvm" in r.stdout) == (example == "xmexample.hvm")
    text = (REPO / "etc" / "xen" / example).read_text()
    assert sum(line.startswith("#") for line in text.splitlines()) >= 10   # commented


@pytest.mark.timeout(60)
def test_xmexample2_needs_its_vmid(tmp_path):
    env = dict(os.environ, XM_SERVER=f"httpu://{tmp_path}/none.sock")
    r = run(xm_command() + ["create", "-n", str(REPO / "etc/xen/xmexample2")], env=env)
    assert r.returncode == 1 and "needs the variable vmid" in r.stderr


# -- bash completion ------------------------------------------------------------------------------
COMPLETION = REPO / "etc" / "bash_completion.d" / "xm"


def complete(words, env) -> list:
    """What the completion offers for the last of ``words`` (COMP_WORDS[0] is our xm)."""
    script = (f". {COMPLETION}\n"
              'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _xm\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = run(["bash", "-c", script, "bash", xm_command()[0]] + list(words), env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


@pytest.mark.skipif(not installed_command("xm"), reason="needs the installed xm command")
@pytest.mark.timeout(120)
def test_bash_completion_of_commands_options_and_domain_names(tmp_path):
    from xend.xm.main import COMMANDS

    x = XendInstance(tmp_path / "x").start()
    try:
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"k")
        empty = tmp_path / "empty.cfg"
        empty.write_text("")
        for name in ("web1", "web2", "db"):
            r = x.xm("create", str(empty), f"name={name}", f"kernel={kernel}")
            assert r.returncode == 0, r.stderr
        env = dict(x.env)
        assert complete([""], env) == sorted(COMMANDS)     # every command of the table
        assert complete(["pa"], env) == ["pause"]
        assert complete(["help", "sh"], env) == ["shell", "shutdown"]
        assert set(complete(["list", "--"], env)) == {"--long", "--label", "--state", "--pool",
                                                      "--help"}
        assert {"-l", "--live", "--port", "--ssl"} <= set(complete(["migrate", "-"], env))
        assert complete(["pause", "web"], env) == ["web1", "web2"]      # from the running xend
        assert complete(["pause", ""], env) == ["Domain-0", "db", "web1", "web2"]
        assert complete(["list", "web1", "w"], env) == ["web1", "web2"]  # [Domain, ...]
        assert complete(["vcpu-pin", "db", ""], env) == []               # <VCPU|all>
        # -c FILE reaches the xend that FILE configures, whatever the environment says
        env.pop("XEND_CONFIG")
        env["XM_SERVER"] = f"httpu://{tmp_path}/none.sock"
        assert complete(["pause", "d"], env) == []
        assert complete(["-c", str(x.config), "pause", "d"], env) == ["db"]
        assert complete(["create", str(tmp_path / "emp")], env) == [str(empty)]
    finally:
        x.stop()


# -- the vif hotplug script -----------------------------------------------------------------------
VIF_BRIDGE = REPO / "etc" / "xen" / "scripts" / "vif-bridge"


@pytest.mark.timeout(60)
def test_vif_bridge_plans_only_when_it_cannot_act(tmp_path):
    r = run(["/bin/sh", str(VIF_BRIDGE), "online"], env={"PATH": "/nonexistent", "vif": "vif3.0",
                                                          "bridge": "br9"})
    assert (r.returncode, r.stdout) == (0, (
        "vif-bridge: plan only (the ip tool (iproute2) is not installed): online vif3.0 on "
        "bridge br9\n  would run: ip link set dev vif3.0 master br9\n"
        "  would run: ip link set dev vif3.0 up\n")), r
    r = run(["sh", str(VIF_BRIDGE), "bogus"], env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "Usage: vif-bridge" in r.stderr
    r = run(["sh", str(VIF_BRIDGE), "online"], env={"PATH": "/usr/bin:/bin", "vif": "a b"})
    assert r.returncode == 1 and "no valid interface name" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                    reason="needs root and iproute2 (a network namespace)")
@pytest.mark.timeout(60)
def test_vif_bridge_attaches_and_detaches_in_a_network_namespace(tmp_path):
    ns = f"xendvif{os.getpid()}"
    r = run(["ip", "netns", "add", ns])
    if r.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        for cmd in (["ip", "link", "add", "xenbr0", "type", "bridge"],
                    ["ip", "link", "add", "vif7.0", "type", "veth", "peer", "name", "vif7.0-peer"]):
            assert run(["ip", "-n", ns] + cmd[1:]).returncode == 0
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "vif": "vif7.0"}
        r = run(["ip", "netns", "exec", ns, "sh", str(VIF_BRIDGE), "online"], env=env)
        assert r.returncode == 0 and "vif7.0 attached to xenbr0" in r.stdout, r
        link = run(["ip", "-n", ns, "-o", "link", "show", "vif7.0"]).stdout
        assert "master xenbr0" in link and ",UP" in link, link
        r = run(["ip", "netns", "exec", ns, "sh", str(VIF_BRIDGE), "offline"], env=env)
        assert r.returncode == 0, r
        link = run(["ip", "-n", ns, "-o", "link", "show", "vif7.0"]).stdout
        assert "master" not in link and ",UP" not in link, link
        r = run(["ip", "netns", "exec", ns, "sh", str(VIF_BRIDGE), "online"],
                env=dict(env, bridge="nosuchbr"))
        assert r.returncode == 1 and "bridge nosuchbr does not exist" in r.stderr
    finally:
        run(["ip", "netns", "del", ns])


@pytest.mark.parametrize("script", ["etc/xen/scripts/vif-bridge", "examples/quickstart.sh"])
def test_shell_scripts_are_posix_sh(script):
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            r = run([shell, "-n", str(REPO / script)], timeout=30)
            assert r.returncode == 0, r.stderr
    if shutil.which("checkbashisms") is None:
        pytest.skip("checkbashisms not installed (devscripts)")
    r = run(["checkbashisms", str(REPO / script)], timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
