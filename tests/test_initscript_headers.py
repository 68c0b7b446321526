"""Static and daemon-free checks of etc/init.d/xend.

* the `# chkconfig:` line and the LSB `### BEGIN INIT INFO` block, parsed here and
  checked against each other;
* the real `insserv` (when installed), always confined to a temp dir with `-i`, so the
  machine's /etc/init.d/.depend.* files are never touched;
* shell syntax (`sh -n`, `dash -n`, `checkbashisms` when installed);
* the script's own logic (usage, settings file, exit-code mapping, lock file) against a
  tiny stub `xend` written into tmp_path, so none of this needs the real daemon.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "etc" / "init.d" / "xend"
ALL_LEVELS = {"0", "1", "2", "3", "4", "5", "6"}


# --------------------------------------------------------------------------- parsers


def parse_chkconfig(text: str) -> tuple[set[str], int, int, str]:
    """Return (levels, start, stop, description) from the `# chkconfig:` header.

    Levels `-` means "none by default" and gives an empty set.
    """
    levels = start = stop = desc = None
    for line in text.splitlines():
        if not line.startswith("#"):
            break  # chkconfig reads only the leading comment block
        m = re.match(r"#\s*chkconfig:\s*(\S+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            assert levels is None, "two chkconfig lines"
            levels = set() if m.group(1) == "-" else set(m.group(1))
            start, stop = int(m.group(2)), int(m.group(3))
        m = re.match(r"#\s*description:\s*(.*)$", line)
        if m:
            desc = m.group(1).strip()
    assert levels is not None, "no `# chkconfig:` line in the leading comment block"
    assert desc, "no `# description:` line in the leading comment block"
    return levels, start, stop, desc


def parse_lsb(text: str) -> dict[str, str]:
    """Return the LSB INIT INFO block as {keyword: value} (continuations joined)."""
    lines = text.splitlines()
    try:
        begin = lines.index("### BEGIN INIT INFO")
        end = lines.index("### END INIT INFO")
    except ValueError:  # pragma: no cover - reported by the assert below
        pytest.fail("missing `### BEGIN INIT INFO` or `### END INIT INFO`")
    assert begin < end
    fields: dict[str, str] = {}
    last = None
    for line in lines[begin + 1 : end]:
        assert line.startswith("#"), f"non-comment line inside the LSB block: {line!r}"
        body = line[1:]
        m = re.match(r" (\S[^:]*):(.*)$", body)
        if m and not body.startswith(("\t", "  ")):
            last = m.group(1)
            assert last not in fields, f"duplicate LSB keyword {last}"
            fields[last] = m.group(2).strip()
        elif body.startswith(("\t", "  ")) and last is not None:
            fields[last] += " " + body.strip()  # continuation line
        else:
            pytest.fail(f"malformed LSB line: {line!r}")
    return fields


@pytest.fixture(scope="module")
def text() -> str:
    return SCRIPT.read_text()


# --------------------------------------------------------------------------- headers


def test_script_is_posix_sh_and_executable(text):
    assert text.startswith("#!/bin/sh\n")
    assert os.access(SCRIPT, os.X_OK), "etc/init.d/xend must be executable"


def test_chkconfig_header(text):
    levels, start, stop, desc = parse_chkconfig(text)
    assert levels == {"3", "4", "5"}
    assert 0 <= start <= 99 and 0 <= stop <= 99
    # Late to start, early to stop: the kill number mirrors the start number.
    assert start + stop == 99
    assert desc == "Starts and stops the Xen control daemon."


def test_lsb_block(text):
    lsb = parse_lsb(text)
    assert lsb["Provides"].split() == ["xend"]
    start = set(lsb["Default-Start"].split())
    stop = set(lsb["Default-Stop"].split())
    assert start == {"3", "4", "5"}
    assert stop == {"0", "1", "2", "6"}
    assert start | stop == ALL_LEVELS and not start & stop
    for key in ("Required-Start", "Required-Stop"):
        deps = lsb[key].split()
        assert set(deps) == {"$syslog", "$remote_fs"}
        # insserv is FATAL on an unknown hard dependency: only facilities here.
        assert all(d.startswith("$") for d in deps)
    for key in ("Should-Start", "Should-Stop"):
        assert set(lsb[key].split()) == {"xenstored", "xenconsoled"}
    assert lsb["Short-Description"]
    assert lsb["Description"].startswith("Starts and stops the Xen control daemon")


def test_chkconfig_levels_agree_with_lsb(text):
    levels, _, _, _ = parse_chkconfig(text)
    lsb = parse_lsb(text)
    assert levels == set(lsb["Default-Start"].split())
    assert ALL_LEVELS - levels == set(lsb["Default-Stop"].split())


def test_headers_sit_in_the_leading_comment_block(text):
    lines = text.splitlines()
    first_code = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert lines.index("### END INIT INFO") < first_code


# --------------------------------------------------------------------------- insserv


def _insserv_root(tmp_path: Path, extra_scripts: dict[str, str] | None = None) -> Path:
    root = tmp_path / "root"
    (root / "init.d").mkdir(parents=True)
    for d in ("ov", "dep"):
        (root / d).mkdir()
    for lvl in ("0", "1", "2", "3", "4", "5", "6", "S"):
        (root / f"rc{lvl}.d").mkdir()
    if Path("/etc/insserv.conf").is_file():
        shutil.copy("/etc/insserv.conf", root / "insserv.conf")
    else:
        (root / "insserv.conf").write_text(
            "$local_fs +mountall +umountfs\n"
            "$remote_fs $local_fs +mountnfs +umountnfs\n"
            "$syslog +rsyslog +sysklogd +syslog-ng\n"
            "$network +networking +ifupdown\n"
        )
    shutil.copy(SCRIPT, root / "init.d" / "xend")
    for name, body in (extra_scripts or {}).items():
        p = root / "init.d" / name
        p.write_text(body)
        p.chmod(0o755)
    return root


def _insserv(root: Path, *args: str) -> subprocess.CompletedProcess:
    # Never without -i: -p alone still rewrites the real /etc/init.d/.depend.*.
    cmd = [
        "insserv",
        "-p", str(root / "init.d"),
        "-o", str(root / "ov"),
        "-c", str(root / "insserv.conf"),
        "-i", str(root / "dep"),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


needs_insserv = pytest.mark.skipif(
    shutil.which("insserv") is None, reason="insserv not installed (apt-get install insserv)"
)


@needs_insserv
def test_insserv_accepts_the_header(tmp_path):
    root = _insserv_root(tmp_path)
    r = _insserv(root, "-s")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower() and "broken" not in r.stderr.lower(), r.stderr
    assert r.stderr.strip() == ""
    out = sorted(r.stdout.splitlines())
    assert len(out) == 2, r.stdout
    assert re.fullmatch(r"K:\d\d:0 1 2 6:xend", out[0]), r.stdout
    assert re.fullmatch(r"S:\d\d:3 4 5:xend", out[1]), r.stdout


@needs_insserv
def test_insserv_enables_links(tmp_path):
    root = _insserv_root(tmp_path)
    r = _insserv(root, "xend")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower() and "broken" not in r.stderr.lower(), r.stderr
    for lvl in "0123456S":
        links = sorted(p.name for p in (root / f"rc{lvl}.d").iterdir())
        if lvl in "345":
            assert len(links) == 1 and re.fullmatch(r"S\d\dxend", links[0]), (lvl, links)
        elif lvl in "0126":
            assert len(links) == 1 and re.fullmatch(r"K\d\dxend", links[0]), (lvl, links)
        else:
            assert links == [], (lvl, links)
        for name in links:
            assert os.readlink(root / f"rc{lvl}.d" / name) == "../init.d/xend"
    assert (root / "dep" / ".depend.start").is_file()
    assert "xend" in (root / "dep" / ".depend.start").read_text()


_DUMMY = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:    $syslog
# Required-Stop:     $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: dummy {name}
### END INIT INFO
exit 0
"""


@needs_insserv
def test_insserv_orders_xend_after_xenstored_and_xenconsoled(tmp_path):
    # Should-Start/Stop are soft: honoured when the scripts exist (and harmless when
    # they don't, see test_insserv_accepts_the_header).
    root = _insserv_root(
        tmp_path,
        {n: _DUMMY.format(name=n) for n in ("xenstored", "xenconsoled")},
    )
    r = _insserv(root, "-s")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower() and "broken" not in r.stderr.lower(), r.stderr
    seq = {}
    for line in r.stdout.splitlines():
        kind, num, _levels, name = line.split(":")
        seq[(kind, name)] = int(num)
    for dep in ("xenstored", "xenconsoled"):
        assert seq[("S", "xend")] > seq[("S", dep)], r.stdout
        assert seq[("K", "xend")] < seq[("K", dep)], r.stdout


# --------------------------------------------------------------------------- syntax


def test_sh_syntax():
    r = subprocess.run(["sh", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash not installed")
def test_dash_syntax():
    r = subprocess.run(["dash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(
    shutil.which("checkbashisms") is None, reason="checkbashisms not installed (devscripts)"
)
def test_checkbashisms():
    r = subprocess.run(["checkbashisms", "--force", "--posix", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- logic, stub xend

SHELLS = [s for s in ("sh", "dash") if shutil.which(s)]


def _env(**extra: str) -> dict[str, str]:
    """The environment `service` gives a script (env -i plus PATH), plus `extra`."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run_script(*args: str, shell: str = "sh", env=None, timeout: int = 30):
    return subprocess.run(
        [shell, str(SCRIPT), *args],
        env=env if env is not None else _env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("args", [("bogus",), (), ("start", "extra"), ("START",)])
def test_bad_usage_exits_2_with_usage(shell, args, tmp_path):
    # No settings file and no xend needed for this.
    r = run_script(*args, shell=shell, env=_env(XEND_DEFAULTS=str(tmp_path / "none")))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Usage:" in r.stderr
    for action in ("start", "stop", "status", "restart", "reload", "force-reload",
                   "try-restart", "condrestart"):
        assert action in r.stderr


STUB = r"""#!/bin/sh
# Stub xend for init-script tests: logs its argv, keeps a fake running state.
D='{dir}'
echo "$*" >>"$D/calls"
[ "$1" = "-c" ] || {{ echo "stub: no -c" >&2; exit 99; }}
cfg=$2; shift 2
state=$(cat "$D/state" 2>/dev/null || echo 3)
case "$1" in
  status) exit "$state" ;;
  start)
    rc=$(cat "$D/start_rc" 2>/dev/null || echo 0)
    if [ "$rc" = 0 ]; then echo 0 >"$D/state"; else echo "stub: $cfg:7: bad value" >&2; fi
    exit "$rc" ;;
  stop) echo 3 >"$D/state"; exit 0 ;;
  restart) echo 0 >"$D/state"; exit 0 ;;
  reload) exit 0 ;;
esac
exit 98
"""


class Stub:
    def __init__(self, d: Path):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.prog = d / "xend-stub"
        self.prog.write_text(STUB.format(dir=d))
        self.prog.chmod(0o755)
        self.config = d / "xend-config.sxp"
        self.lockdir = d / "subsys"
        self.lockdir.mkdir()
        self.lock = self.lockdir / "xend"
        self.settings = d / "settings"
        self.settings.write_text(
            "# test settings\n"
            f"XEND={self.prog}\n"
            f'XEND_CONFIG="{self.config}"\n'
            f"XEND_LOCKFILE={self.lock}\n"
            "XEND_AWAIT=2\n"
        )

    def set_state(self, n: int) -> None:
        (self.dir / "state").write_text(f"{n}\n")

    def calls(self) -> list[str]:
        p = self.dir / "calls"
        lines = p.read_text().splitlines() if p.exists() else []
        p.unlink(missing_ok=True)
        return lines

    def run(self, action: str, shell: str = "sh", **extra: str):
        return run_script(action, shell=shell, env=_env(XEND_DEFAULTS=str(self.settings), **extra))


@pytest.fixture
def stub(tmp_path) -> Stub:
    return Stub(tmp_path / "stub")


@pytest.mark.parametrize("shell", SHELLS)
def test_stub_round_trip(stub, shell):
    c = f"-c {stub.config}"
    r = stub.run("status", shell)
    assert r.returncode == 3 and stub.calls() == [f"{c} status"]

    r = stub.run("start", shell)
    assert r.returncode == 0, r.stdout + r.stderr
    # already-running probe, then start, then the belt-and-braces status
    assert stub.calls() == [f"{c} status", f"{c} start", f"{c} status"]
    assert stub.lock.exists()

    r = stub.run("start", shell)
    assert r.returncode == 0 and stub.calls() == [f"{c} status"]
    assert "already running" in r.stdout

    r = stub.run("restart", shell)
    assert r.returncode == 0 and stub.calls() == [f"{c} restart", f"{c} status"]

    for action in ("try-restart", "condrestart", "force-reload"):
        r = stub.run(action, shell)
        assert r.returncode == 0
        assert stub.calls() == [f"{c} status", f"{c} restart", f"{c} status"], action

    r = stub.run("reload", shell)
    assert r.returncode == 0 and stub.calls() == [f"{c} status", f"{c} reload"]

    r = stub.run("stop", shell)
    assert r.returncode == 0 and stub.calls() == [f"{c} stop"]
    assert not stub.lock.exists()

    r = stub.run("stop", shell)
    assert r.returncode == 0

    stub.calls()
    for action in ("try-restart", "condrestart", "force-reload"):
        r = stub.run(action, shell)
        assert r.returncode == 0, action
        assert stub.calls() == [f"{c} status"], action  # stopped: nothing restarted

    r = stub.run("reload", shell)
    assert r.returncode == 7 and stub.calls() == [f"{c} status"]


@pytest.mark.parametrize("xend_rc, lsb_rc", [(0, 0), (1, 1), (3, 3), (4, 4), (2, 4), (9, 4)])
def test_status_exit_codes(stub, xend_rc, lsb_rc):
    stub.set_state(xend_rc)
    assert stub.run("status").returncode == lsb_rc


def test_start_failure_reports_reason_and_leaves_no_lock(stub):
    (stub.dir / "start_rc").write_text("1\n")
    r = stub.run("start")
    assert r.returncode == 1
    assert f"{stub.config}:7: bad value" in r.stdout + r.stderr
    assert not stub.lock.exists()


def test_start_that_never_answers_fails(stub):
    # start returns 0 but status keeps saying 3: the bounded await gives up.
    stub.prog.write_text(stub.prog.read_text().replace('echo 0 >"$D/state"; else', ": ; else"))
    r = stub.run("start")
    assert r.returncode == 1
    assert stub.calls().count(f"-c {stub.config} status") == 1 + 2  # probe + XEND_AWAIT tries


def test_start_over_dead_pid_file_starts(stub):
    stub.set_state(1)
    r = stub.run("start")
    assert r.returncode == 0
    assert f"-c {stub.config} start" in stub.calls()


def test_environment_does_not_choose_xend_or_config(stub, tmp_path):
    # `service` scrubs the environment; direct runs must behave the same.
    stub.run("status", XEND="/bin/false", XEND_CONFIG=str(tmp_path / "other.sxp"),
             XEND_DAEMONIZE="0", XEND_DEBUG="1")
    assert stub.calls() == [f"-c {stub.config} status"]


def test_settings_defaults_when_file_sets_nothing(stub, tmp_path):
    # XEND given by name is looked up on PATH; XEND_CONFIG defaults to /etc/xen/....
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(stub.prog, bindir / "xend")
    settings = tmp_path / "empty-settings"
    settings.write_text("# nothing set\n")
    env = _env(XEND_DEFAULTS=str(settings))
    env["PATH"] = f"{bindir}:{env['PATH']}"
    r = run_script("status", env=env)
    assert r.returncode == 3
    assert stub.calls() == ["-c /etc/xen/xend-config.sxp status"]


def test_missing_settings_file(tmp_path):
    env = _env(XEND_DEFAULTS=str(tmp_path / "nonexistent"))
    assert run_script("status", env=env).returncode == 4
    r = run_script("start", env=env)
    assert r.returncode == 6 and "nonexistent" in r.stdout + r.stderr


def test_settings_file_that_is_a_directory_or_broken(tmp_path):
    env = _env(XEND_DEFAULTS=str(tmp_path))
    assert run_script("status", env=env).returncode == 4
    assert run_script("start", env=env).returncode == 6
    broken = tmp_path / "broken"
    broken.write_text("XEND=/usr/sbin/xend\nif then fi (\n")
    env = _env(XEND_DEFAULTS=str(broken))
    assert run_script("status", env=env).returncode == 4
    r = run_script("start", env=env)
    assert r.returncode == 6 and "syntax error" in r.stdout + r.stderr


def test_missing_xend_program(tmp_path):
    settings = tmp_path / "settings"
    settings.write_text(f"XEND={tmp_path / 'no-such-xend'}\n")
    env = _env(XEND_DEFAULTS=str(settings))
    assert run_script("status", env=env).returncode == 4
    assert run_script("start", env=env).returncode == 5
    assert run_script("stop", env=env).returncode == 0


# --------------------------------------------------------------------------- service files


def test_default_settings_sample_is_plain_assignments():
    # Read by the init script (sourced by sh) and by systemd (EnvironmentFile=).
    path = REPO / "etc" / "default" / "xend"
    names = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        assert line.startswith("#"), f"active setting in the sample: {line!r}"
        m = re.fullmatch(r"#\s*([A-Z_]+)=(\S*)", line)
        if m:
            names.add(m.group(1))
    assert names == {"XEND", "XEND_CONFIG", "XEND_LOCKFILE", "XEND_AWAIT"}
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0


def test_systemd_unit_contents():
    unit = (REPO / "etc" / "systemd" / "xend.service").read_text()
    keys = re.findall(r"^([A-Za-z]+)=(.*)$", unit, re.M)
    d: dict[str, list[str]] = {}
    for k, v in keys:
        d.setdefault(k, []).append(v)
    assert d["Type"] == ["forking"]
    assert d["PIDFile"] == ["/run/xend.pid"]
    assert "-/etc/default/xend" in d["EnvironmentFile"]
    assert d["ExecStart"][0].endswith(" start")
    assert d["ExecStop"][0].endswith(" stop")
    assert d["ExecReload"][0].endswith(" reload")
    assert set(d["After"][0].split()) == {"network.target", "xenstored.service",
                                          "xenconsoled.service"}
    assert "Requires" not in d and "Wants" not in d


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = tmp_path / "xend.service"
    shutil.copy(REPO / "etc" / "systemd" / "xend.service", unit)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed")
def test_logrotate_rotates_by_rename(tmp_path):
    conf = (REPO / "etc" / "logrotate.d" / "xend").read_text()
    assert "copytruncate" not in re.sub(r"#.*", "", conf)
    log = tmp_path / "xend.log"
    log.write_text("a line\n")
    conf = conf.replace("/var/log/xen/xend.log", str(log))
    if os.geteuid() != 0:
        conf = conf.replace("create 0600 root root", "create 0600")
    (tmp_path / "lr.conf").write_text(conf)
    r = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "lr.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xend.log.1").read_text() == "a line\n"  # delaycompress: not yet .gz
    assert log.exists() and log.stat().st_size == 0


def test_works_without_any_init_functions_library(stub, tmp_path):
    # A copy that cannot find /lib/lsb/init-functions nor Red Hat's functions.
    text = SCRIPT.read_text()
    for lib in ("/lib/lsb/init-functions", "/etc/init.d/functions", "/etc/rc.d/init.d/functions"):
        assert lib in text
        text = text.replace(lib, str(tmp_path / "absent" / lib.strip("/").replace("/", "_")))
    copy = tmp_path / "xend-nolib"
    copy.write_text(text)
    env = _env(XEND_DEFAULTS=str(stub.settings))

    def run(action):
        return subprocess.run(["sh", str(copy), action], env=env, capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    r = run("start")
    assert (r.returncode, r.stdout) == (0, "Starting Xen control daemon: xend.\n"), r
    r = run("status")
    assert (r.returncode, r.stdout) == (0, "xend is running\n"), r
    r = run("stop")
    assert (r.returncode, r.stdout) == (0, "Stopping Xen control daemon: xend.\n"), r
    (stub.dir / "start_rc").write_text("1\n")
    r = run("start")
    assert r.returncode == 1
    assert r.stdout == "Starting Xen control daemon: xend failed!\n", r
    assert f"{stub.config}:7: bad value" in r.stderr
