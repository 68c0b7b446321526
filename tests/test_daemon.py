"""The `xend` command and the daemon's lifecycle, through the real program."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.daemon_helpers import XendInstance, free_port, parent_of, xend_command

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def xend(tmp_path):
    inst = XendInstance(tmp_path / "host")
    yield inst
    inst.stop()
    inst.kill()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_start_status_stop_round_trip(xend):
    assert xend.xend("status").returncode == 3
    r = xend.xend("start")
    assert r.returncode == 0, r.stderr + xend.log_tail()
    # start returned: the XML-RPC socket answers at once, no sleep
    info = dict(xend.proxy().xend.node.info())
    assert info["xend_hypervisor_backend"] == "simulated"
    pid = xend.pid()
    assert pid and alive(pid)
    assert xend.xend("status").returncode == 0
    assert xend.xend("start").returncode == 0
    assert xend.pid() == pid, "a second start must not start a second xend"
    watchdog = parent_of(pid)
    assert xend.xend("stop").returncode == 0
    assert not xend.paths["xend-pid-file"].exists()
    assert not alive(pid) and not alive(watchdog)
    assert not xend.paths["xend-unix-xmlrpc-path"].exists()
    assert xend.xend("stop").returncode == 0
    assert xend.xend("status").returncode == 3
    log = xend.paths["logfile"].read_text()
    assert "Xend Daemon started" in log
    assert "Xend started at" in xend.paths["xend-debug-logfile"].read_text()
    # the original's line format: [date time pid] LEVEL (module:line) message
    first = log.splitlines()[0]
    assert first.startswith("[") and "] INFO (" in first or "] DEBUG (" in first


def test_restart_gives_new_pid(xend):
    xend.start()
    old = xend.pid()
    assert xend.xend("restart").returncode == 0
    new = xend.pid()
    assert new and new != old and not alive(old)
    assert xend.proxy().xend.domains_with_state(False, "all", False)


def test_bad_config_refused_with_file_line_option(tmp_path):
    inst = XendInstance(tmp_path / "bad", extra="(xend-port abc)")
    r = inst.xend("start")
    assert r.returncode == 1
    assert f"{inst.config}:" in r.stderr and "xend-port" in r.stderr and "abc" in r.stderr
    assert not inst.paths["xend-pid-file"].exists()
    assert not inst.paths["xend-unix-xmlrpc-path"].exists()


def test_bind_failure_reported_and_nothing_left(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    inst = XendInstance(tmp_path / "busy", extra=(
        "(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address 127.0.0.1)"
        f"(xend-tcp-xmlrpc-server-port {port})"))
    try:
        r = inst.xend("start")
        assert r.returncode == 1
        assert "Address already in use" in r.stderr and str(port) in r.stderr
        assert not inst.paths["xend-pid-file"].exists()
        assert not inst.paths["xend-unix-xmlrpc-path"].exists()
        assert inst.xend("status").returncode == 3
    finally:
        blocker.close()
        inst.kill()


def test_socket_of_a_live_xend_is_not_stolen(tmp_path, xend):
    xend.start()
    other = XendInstance(tmp_path / "other")
    other.paths["xend-unix-xmlrpc-path"] = xend.paths["xend-unix-xmlrpc-path"]
    other.write_config()
    try:
        r = other.xend("start")
        assert r.returncode == 1 and "in use" in r.stderr
        assert xend.proxy().xend.node.info()
    finally:
        other.kill()


def test_stale_pid_file_is_not_fooling_status_or_start(xend):
    pidfile = xend.paths["xend-pid-file"]
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(str(sleeper.pid))  # a live process, but not xend
        assert xend.xend("status").returncode == 1
        assert xend.xend("start").returncode == 0
        assert xend.pid() != sleeper.pid
        assert xend.xend("status").returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_watchdog_restarts_killed_server(xend):
    xend.start()
    pid = xend.pid()
    os.kill(pid, signal.SIGKILL)
    new = xend.wait_for(lambda: (xend.pid() not in (None, pid)) and xend.pid())
    xend.wait_for(lambda: xend.xend("status").returncode == 0)
    xend.wait_for(xend.answering)
    assert new != pid
    assert "Xend died due to signal 9!  Restarting it." in xend.paths["logfile"].read_text()


def test_watchdog_gives_up_on_a_crash_loop(xend):
    xend.start()
    watchdog = parent_of(xend.pid())
    for _ in range(10):
        # the server back (its pid), or the watchdog gone: it may give up while the pid file
        # of the last server is being removed
        pid = xend.wait_for(lambda: (xend.pid() if xend.xend("status").returncode == 0
                                     else None) or (not alive(watchdog) and -1))
        if pid == -1:
            break
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(watchdog) and xend.pid() == pid:
            time.sleep(0.05)
        if not alive(watchdog):
            break
    xend.wait_for(lambda: not alive(watchdog))
    assert "not restarting it again" in xend.paths["logfile"].read_text()
    assert xend.xend("status").returncode in (1, 3)


def test_kill_both_then_status_1_then_start(xend):
    xend.start()
    pid = xend.pid()
    watchdog = parent_of(pid)
    os.kill(watchdog, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    xend.wait_for(lambda: not alive(pid))
    assert xend.xend("status").returncode == 1
    assert xend.xend("start").returncode == 0
    assert xend.proxy().xend.node.info()


def test_reload_moves_listeners_and_survives_a_broken_config(xend):
    xend.start()
    pid = xend.pid()
    port = free_port()
    xend.write_config("(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address 127.0.0.1)"
                      f"(xend-tcp-xmlrpc-server-port {port})")
    assert xend.xend("reload").returncode == 0

    def tcp_answers():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    xend.wait_for(tcp_answers)
    assert xend.pid() == pid
    # a config that no longer parses: `xend reload` refuses it with file:line ...
    good = xend.config.read_text()
    xend.config.write_text(good + "(logfile /tmp/x\n")
    r = xend.xend("reload")
    assert r.returncode == 1 and f"{xend.config}:" in r.stderr
    # ... and a SIGHUP sent behind its back keeps the running daemon on its old config
    os.kill(pid, signal.SIGHUP)
    xend.wait_for(lambda: "Reload refused" in xend.paths["logfile"].read_text())
    assert xend.pid() == pid and tcp_answers()
    assert xend.proxy().xend.node.info()


def test_log_survives_rename_rotation(xend):
    xend.start()
    log = xend.paths["logfile"]
    log.rename(log.with_suffix(".log.1"))
    assert xend.xend("reload").returncode == 0  # logs "Restarting all XML-RPC ..."
    xend.wait_for(lambda: log.exists() and "Restarting all" in log.read_text())


def test_not_root_with_default_paths_prints_the_banner(tmp_path, monkeypatch, capsys):
    # The check itself, in-process: an unprivileged user with the default /var/run pid file.
    from xend import cli
    cfg = tmp_path / "defaults.sxp"
    cfg.write_text("(loglevel INFO)\n")
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    if os.access("/var/run", os.W_OK) and os.getuid() != 0:
        pytest.skip("/var/run is writable by this user")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert cli.main(["-c", str(cfg), "start"]) == 1
    assert "*** Xend must be run as root." in capsys.readouterr().err


def test_check_config_lists_values_and_sources(tmp_path):
    inst = XendInstance(tmp_path / "cc", extra="(xend-port 8123)")
    r = inst.xend("check-config")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.split()[:1] == ["xend-port"])
    assert "8123" in line and f"{inst.config}:" in line
    default = next(l for l in r.stdout.splitlines() if l.split()[:1] == ["xend-relocation-port"])
    assert "8002" in default and "default" in default


def test_check_config_reports_every_error(tmp_path):
    cfg = tmp_path / "broken.sxp"
    cfg.write_text("(xend-port abc)\n(xend-http-server maybe)\n(dom0-min-mem 1.5)\n")
    r = subprocess.run(xend_command() + ["-c", str(cfg), "check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    for line, option in ((1, "xend-port"), (2, "xend-http-server"), (3, "dom0-min-mem")):
        assert f"{cfg}:{line}: option {option}" in r.stderr


def test_usage_and_unknown_command():
    r = subprocess.run(xend_command(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout.startswith("usage: xend ")
    for bad in (["frobnicate"], ["-c"], ["start", "stop"], ["install-files", "--bogus"]):
        r = subprocess.run(xend_command() + bad, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and r.stdout == "", (bad, r)
        assert r.stderr.startswith("xend: ") and "\nusage: xend " in r.stderr, (bad, r.stderr)
    assert "not an option: frobnicate" in subprocess.run(
        xend_command() + ["frobnicate"], capture_output=True, text=True, timeout=30).stderr


def test_help_lists_every_command_and_each_command_has_its_own():
    from xend.cli import SUBCOMMANDS

    for flag in ("--help", "-h", "help"):
        r = subprocess.run(xend_command() + [flag], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", r
        for name in SUBCOMMANDS:
            assert f"\n  {name} " in r.stdout, (name, r.stdout)
        assert "-c FILE, --config FILE" in r.stdout and "XEND_CONFIG" in r.stdout
    for name in SUBCOMMANDS:
        for args in ([name, "--help"], ["-c", "/nonexistent.sxp", name, "-h"]):
            if name == "install-files" and args[0] == "-c":
                continue
            r = subprocess.run(xend_command() + args, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and r.stdout.startswith("usage: xend "), (args, r)
            assert f" {name}" in r.stdout.splitlines()[0] and "exit status: " in r.stdout


def test_install_files_never_overwrites(tmp_path):
    root = tmp_path / "root"
    r = subprocess.run(xend_command() + ["install-files", "--root", str(root)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    cfg = root / "etc" / "xen" / "xend-config.sxp"
    init = root / "etc" / "init.d" / "xend"
    assert cfg.exists() and os.access(init, os.X_OK)
    cfg.write_text("(xend-port 9999)\n")
    r = subprocess.run(xend_command() + ["install-files", "--root", str(root)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert cfg.read_text() == "(xend-port 9999)\n"
    assert (root / "etc" / "xen" / "xend-config.sxp.dist").exists()


# -- the config file's path (issue 16, item 11) -------------------------------------------------
def run_xend(cwd, *args: str, env=None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    env.pop("XEND_CONFIG", None)
    return subprocess.run(xend_command() + list(args), capture_output=True, text=True,
                          timeout=120, cwd=str(cwd), env=env)


def test_relative_config_path_is_kept_across_reload(xend):
    """The daemon runs in /: a relative -c FILE is resolved when xend starts, so reload reads
    the same file (and does not fall back to the defaults and move its sockets)."""
    port = free_port()
    xend.write_config(f"(xend-relocation-server yes)(xend-relocation-address 127.0.0.1)"
                      f"(xend-relocation-port {port})")
    cwd, rel = xend.root, os.path.basename(xend.config)
    r = run_xend(cwd, "-c", rel, "start")
    assert r.returncode == 0, r.stderr + xend.log_tail()
    assert run_xend(cwd, "-c", rel, "reload").returncode == 0
    xend.wait_for(lambda: "Restarting all XML-RPC" in xend.paths["logfile"].read_text())
    time.sleep(1)
    assert xend.answering(), "the XML-RPC socket moved"
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    log = xend.paths["logfile"].read_text()
    assert "Config file does not exist" not in log
    assert run_xend(cwd, "-c", rel, "status").returncode == 0


def test_a_config_file_that_does_not_exist_is_an_error(tmp_path):
    missing = tmp_path / "no-such.sxp"
    r = run_xend(tmp_path, "-c", str(missing), "start")
    assert r.returncode == 1
    assert r.stderr.strip() == f"Error: config file {missing} does not exist"
    assert run_xend(tmp_path, "-c", "relative-missing.sxp", "start").returncode == 1
    env = dict(os.environ, XEND_CONFIG=str(missing))
    r = subprocess.run(xend_command() + ["start"], capture_output=True, text=True,
                       timeout=60, env=env, cwd=str(tmp_path))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = run_xend(tmp_path, "-c", str(missing), "status")
    assert r.returncode == 4
    assert list(tmp_path.iterdir()) == [], "something was started or written"


def test_reload_of_a_config_file_that_vanished_keeps_the_running_one(xend):
    port = free_port()
    xend.write_config(f"(xend-relocation-server yes)(xend-relocation-address 127.0.0.1)"
                      f"(xend-relocation-port {port})")
    xend.start()
    os.rename(xend.config, str(xend.config) + ".moved")
    try:
        os.kill(xend.pid(), signal.SIGHUP)
        xend.wait_for(lambda: "Reload refused" in xend.paths["logfile"].read_text())
        assert xend.answering()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        os.rename(str(xend.config) + ".moved", xend.config)
