#!/usr/bin/env python3
"""Boot Xen 4.17 + a Debian dom0 under QEMU (TCG) and run one command inside dom0.

The images come from ``build.sh`` (cache dir ``$XEND_XENVM_CACHE``, default
``/var/cache/xend-xenvm``). Each run appends a small cpio to dom0's initramfs holding the command
(``/xenvm/cmd.sh``), its environment (``/xenvm/env``), the pure-Python dependencies
(``/opt/xend-pydeps``, on ``PYTHONPATH``) and any ``-a SRC:DEST`` payloads; dom0's ``/init``
(``dom0-init``) brings up the toolstack, runs the command and powers off.

CLI::

    harness.py [-a SRC:DEST]... [-e NAME=VALUE]... [-t SECONDS] [--script FILE | COMMAND...]

exits with the command's status (124: timeout, 125: no result - boot or harness failure) and
prints the command's output; on failure it also prints the tail of the Xen/dom0 console log.
Without a command it runs ``tests/xen/test_in_dom0.sh`` with this repository at ``/src``.

Python API::

    from harness import build, run
    build()                                   # build.sh; cheap when the cache is current
    r = run("xl info", payload=[(repo, "/src")], timeout=600)
    r.returncode, r.output, r.console_tail(), r.timings
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_CACHE = "/var/cache/xend-xenvm"
# TCG CPU model: SMAP kills a 64-bit PV dom0, RDTSCP a PVH guest (research log), and with
# FSGSBASE visible to Xen, PV user processes (dom0 and domU) crash now and then under load with a
# corrupted FS base: segfaults, "malloc(): unsorted double linked list corrupted" / mutex
# assertion SIGABRTs in xl, a guest's init dying in a TLS access (4 of 5 stress boots; 0 of 5
# with -fsgsbase). With XSAVE visible, the extended (AVX) register state of PV processes is
# corrupted across domain switches once a few guests run: busybox segfaults in every guest,
# "unable to XZ decompress kernel" inside a dom0 process's decompression; hidden (-xsave, which
# takes AVX and its kin with it; Xen and Linux fall back to FXSAVE), none in the same runs.
DEFAULT_CPU = "max,-smap,-smep,-rdtscp,-fsgsbase,-xsave"
DEFAULT_TIMEOUT = 600.0
QEMU = "qemu-system-x86_64"

BEGIN_MARK = "=====XENVM-BEGIN====="
END_RE = re.compile(r"=====XENVM-END rc=(\d+)=====")
RC_TIMEOUT = 124
RC_NO_RESULT = 125

# Console lines that mark the boot phases: (regex, phase name shown to the user).
PHASES: Tuple[Tuple[str, str], ...] = (
    (r"Xen version \d", "xen started"),
    (r"\*\*\* Serial input to DOM0", "xen handed over to dom0"),
    (r"XENVM\[[\d.]+\]: dom0 /init running", "dom0 /init running"),
    (r"XENVM\[[\d.]+\]: xenstored\+xenconsoled up", "xenstored+xenconsoled up"),
    (r"XENVM\[[\d.]+\]: command started", "command started"),
    (r"XENVM\[[\d.]+\]: command finished", "command finished"),
    (r"Hardware Dom0 (crashed|shutdown)", "dom0 died"),
    (r"Panic on CPU", "xen panicked"),
)

# .venv*: README's virtual environments in the checkout (hundreds of MB dom0 needs not)
SKIP_NAMES = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache",
              ".venv", ".venv39", "build"}


class HarnessError(Exception):
    """The harness itself cannot run (missing images, qemu, permissions)."""


def cache_dir(path: Optional[os.PathLike] = None) -> Path:
    return Path(path or os.environ.get("XEND_XENVM_CACHE") or DEFAULT_CACHE)


def missing_requirements() -> List[str]:
    """Why this machine cannot run the harness (empty when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (build.sh needs debootstrap/chroot)")
    if shutil.which(QEMU) is None:
        problems.append(f"{QEMU} not installed (apt-get install qemu-system-x86)")
    if shutil.which("debootstrap") is None and shutil.which("debootstrap", path="/usr/sbin:/sbin") is None:
        problems.append("debootstrap not installed (apt-get install debootstrap)")
    return problems


# ---- cpio (newc) writer for the payload ------------------------------------------------------------

class CpioWriter:
    """Writes a newc cpio archive (the format the kernel unpacks into the initramfs)."""

    def __init__(self, fileobj) -> None:
        self._f = fileobj
        self._ino = 1
        self._dirs: set = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", mtime: int = 0, nlink: int = 1) -> None:
        name_b = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(name_b), 0]
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._ino += 1
        self._f.write(header + name_b)
        self._f.write(b"\0" * (-(len(header) + len(name_b)) % 4))
        self._f.write(data)
        self._f.write(b"\0" * (-len(data) % 4))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if not name or name in self._dirs:
            return
        self.add_parents(name)
        self._dirs.add(name)
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_parents(self, name: str) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.add_dir(parent)

    def add_file(self, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        self.add_parents(name)
        self._entry(name.strip("/"), stat.S_IFREG | (mode & 0o7777), data, mtime)

    def add_symlink(self, name: str, target: str) -> None:
        self.add_parents(name)
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def add_path(self, src: Path, dest: str) -> None:
        """Copy a host file or directory tree (minus VCS/cache dirs) to DEST in the archive."""
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            self.add_symlink(dest, os.readlink(src))
        elif stat.S_ISDIR(st.st_mode):
            self.add_dir(dest, stat.S_IMODE(st.st_mode))
            for child in sorted(os.listdir(src)):
                if child in SKIP_NAMES or child.endswith((".pyc", ".pyo")):
                    continue
                self.add_path(src / child, f"{dest.rstrip('/')}/{child}")
        elif stat.S_ISREG(st.st_mode):
            self.add_file(dest, src.read_bytes(), stat.S_IMODE(st.st_mode), int(st.st_mtime))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def make_payload(path: Path, command: str, payload: Sequence[Tuple[os.PathLike, str]],
                 env: Mapping[str, str], pydeps: Optional[Path]) -> None:
    """Write the per-run cpio (gzip'ed) that dom0-init reads."""
    env = dict(env)
    pythonpath = ["/opt/xend-pydeps"] if pydeps else []
    if env.get("PYTHONPATH"):
        pythonpath.insert(0, env.pop("PYTHONPATH"))
    if pythonpath:
        env["PYTHONPATH"] = ":".join(pythonpath)
    env_text = "".join(f"export {k}={_shell_quote(v)}\n" for k, v in sorted(env.items()))
    with gzip.open(path, "wb", compresslevel=1) as f:
        cpio = CpioWriter(f)
        cpio.add_file("xenvm/cmd.sh", (command.rstrip("\n") + "\n").encode(), 0o755)
        cpio.add_file("xenvm/env", env_text.encode(), 0o644)
        if pydeps:
            cpio.add_path(pydeps, "opt/xend-pydeps")
        for src, dest in payload:
            src = Path(src)
            if not src.exists():
                raise HarnessError(f"payload source does not exist: {src}")
            cpio.add_path(src.resolve(), str(dest))
        cpio.close()


# ---- running -------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunResult:
    returncode: int            # the command's status; 124 timeout; 125 no result
    output: str                # what the command printed (stdout+stderr)
    console: str               # the whole Xen + dom0 serial console
    timings: Dict[str, float]  # phase -> seconds after qemu started
    timed_out: bool
    log_dir: Optional[Path]    # kept logs (None when removed after a successful run)
    qemu_status: Optional[int]

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def console_tail(self, lines: int = 60) -> str:
        return "\n".join(self.console.splitlines()[-lines:])

    def describe(self) -> str:
        if self.timed_out:
            why = "timed out"
        elif self.returncode == RC_NO_RESULT:
            why = (f"no result (qemu exited with status {self.qemu_status} before dom0 reported the "
                   f"command's status)")
        else:
            why = f"exit status {self.returncode}"
        return why


def _clean_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\r", "")


def _extract_output(text: str, from_console: bool) -> Tuple[Optional[str], Optional[int]]:
    """The text between the markers and the status in the end marker (None if absent)."""
    start = text.find(BEGIN_MARK)
    if start < 0:
        return None, None
    body = text[start + len(BEGIN_MARK):]
    m = END_RE.search(body)
    rc = int(m.group(1)) if m else None
    if m:
        body = body[:m.start()]
    lines = body.split("\n")
    if lines and lines[0] == "":
        lines = lines[1:]
    if from_console:  # the hypervisor's own lines are mixed into the console
        lines = [ln for ln in lines if not ln.startswith("(XEN)")]
    return "\n".join(lines).rstrip("\n") + ("\n" if "".join(lines).strip() else ""), rc


def run(command: str = "xl info && xl list", *,
        payload: Sequence[Tuple[os.PathLike, str]] = (),
        env: Optional[Mapping[str, str]] = None,
        timeout: float = DEFAULT_TIMEOUT,
        cache: Optional[os.PathLike] = None,
        memory: int = 2048, dom0_mem: int = 1024, smp: int = 2,
        cpu: str = DEFAULT_CPU, xenstored: str = "oxenstored",
        xen_args: str = "", dom0_args: str = "",
        log_dir: Optional[os.PathLike] = None, keep_logs: bool = False,
        qemu_args: Sequence[str] = (),
        progress: Optional[TextIO] = sys.stderr,
        on_output: Optional[Callable[[str], None]] = None,
        on_console: Optional[Callable[[str], None]] = None,
        tail_on_failure: int = 60) -> RunResult:
    """Boot Xen + dom0, run COMMAND (a /bin/sh script text) in dom0, power off.

    payload: (host path, path in dom0) pairs; env: variables exported for the command.
    qemu_args: more QEMU arguments (a NIC on a socket network for the two-host suite:
    ``-netdev socket,... -device e1000,...``; dom0 brings it up with ``xenvm.ip=ADDR/LEN``
    in ``dom0_args``).
    progress: where phase lines ("[xenvm  5.8s] xen handed over to dom0") go (None: silent).
    on_output / on_console: called with new chunks of the command's output / the console.
    On failure the last TAIL_ON_FAILURE console lines are written to PROGRESS.
    """
    cdir = cache_dir(cache)
    out = cdir / "out"
    for name in ("xen", "vmlinuz", "dom0-initrd"):
        if not (out / name).is_file():
            raise HarnessError(f"{out / name} missing: run tests/xen/build.sh first")
    if shutil.which(QEMU) is None:
        raise HarnessError(f"{QEMU} not found (apt-get install qemu-system-x86)")

    temp = log_dir is None
    ldir = Path(tempfile.mkdtemp(prefix="xenvm-")) if temp else Path(log_dir)
    ldir.mkdir(parents=True, exist_ok=True)
    if any(c in str(ldir) for c in ", "):
        raise HarnessError(f"log dir must not contain commas or spaces (qemu syntax): {ldir}")
    console_log, out_log, qemu_log = ldir / "console.log", ldir / "out.log", ldir / "qemu.log"
    for p in (console_log, out_log):
        p.write_bytes(b"")

    def note(msg: str, t: float) -> None:
        if progress is not None:
            progress.write(f"[xenvm {t:6.1f}s] {msg}\n")
            progress.flush()

    t_start = time.monotonic()
    pydeps = out / "pydeps"
    payload_gz = ldir / "payload.cpio.gz"
    make_payload(payload_gz, command, payload, env or {},
                 pydeps if pydeps.is_dir() and any(pydeps.iterdir()) else None)
    initrd = ldir / "initrd.img"
    with open(initrd, "wb") as dst:
        for part in (out / "dom0-initrd", payload_gz):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    t_prep = time.monotonic() - t_start

    xen_cmdline = (f"console=com1 com1=115200,8n1 dom0_mem={dom0_mem}M,max:{dom0_mem}M "
                   f"loglvl=all guest_loglvl=all conring_size=1m {xen_args}").strip()
    dom0_cmdline = (f"console=hvc0 earlyprintk=xen loglevel=4 panic=5 "
                    f"xenvm.xenstored={xenstored} xenvm.out=ttyS1 {dom0_args}").strip()
    argv = [QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", cpu,
            "-m", str(memory), "-smp", str(smp),
            "-kernel", str(out / "xen"), "-append", xen_cmdline,
            "-initrd", f"{out / 'vmlinuz'} {dom0_cmdline},{initrd}",
            "-serial", f"file:{console_log}", "-serial", f"file:{out_log}", *qemu_args]
    (ldir / "qemu.cmdline").write_text(" ".join(_shell_quote(a) for a in argv) + "\n")

    timings: Dict[str, float] = {"prepare": round(t_prep, 2)}
    phase_res = [(re.compile(rx), name) for rx, name in PHASES]
    seen: set = set()
    timed_out = False
    cons_pos = out_pos = 0
    out_started = out_done = False
    out_buf = b""
    t0 = time.monotonic()
    note(f"qemu started (TCG, -cpu {cpu}, -m {memory}, dom0 {dom0_mem}M, {smp} cpus)", 0.0)
    with open(qemu_log, "wb") as qlog:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                                start_new_session=True)
    cons_text = ""
    try:
        while True:
            status = proc.poll()
            now = time.monotonic() - t0
            # console: phases
            with open(console_log, "rb") as f:
                f.seek(cons_pos)
                chunk = f.read()
            if chunk:
                cons_pos += len(chunk)
                text = _clean_text(chunk)
                cons_text += text
                if on_console:
                    on_console(text)
                for rx, name in phase_res:
                    if name not in seen and rx.search(cons_text[-len(text) - 200:]):
                        seen.add(name)
                        timings[name] = round(now, 2)
                        note(name, now)
            # command output: stream the complete lines between the markers
            if on_output and not out_done:
                with open(out_log, "rb") as f:
                    f.seek(out_pos)
                    ochunk = f.read()
                out_pos += len(ochunk)
                out_buf += ochunk
                if not out_started and BEGIN_MARK.encode() in out_buf:
                    out_started = True
                    out_buf = out_buf.split(BEGIN_MARK.encode(), 1)[1].lstrip(b"\r\n")
                if out_started:
                    cut = out_buf.rfind(b"\n") + 1
                    lines, out_buf = _clean_text(out_buf[:cut]), out_buf[cut:]
                    m = END_RE.search(lines)
                    if m:
                        lines, out_done = lines[:m.start()], True
                    if lines:
                        on_output(lines)
            if status is not None:
                break
            if now > timeout:
                timed_out = True
                note(f"timeout after {timeout:.0f}s: stopping qemu", now)
                _stop(proc)
                break
            time.sleep(0.2)
    except BaseException:
        _stop(proc)
        raise
    qemu_status = proc.wait()
    t_end = time.monotonic() - t0
    timings["qemu exited"] = round(t_end, 2)
    note(f"qemu exited (status {qemu_status})", t_end)

    console = _clean_text(console_log.read_bytes())
    output, rc = _extract_output(_clean_text(out_log.read_bytes()), from_console=False)
    if output is None:
        output, rc = _extract_output(console, from_console=True)
    if rc is None:
        rc = RC_TIMEOUT if timed_out else RC_NO_RESULT
    qemu_errors = qemu_log.read_text(errors="replace").strip()
    result = RunResult(rc, output or "", console, timings, timed_out, ldir, qemu_status)

    if rc != 0:
        if progress is not None and tail_on_failure:
            progress.write(f"---- xenvm: {result.describe()}; last {tail_on_failure} lines of the "
                           f"Xen/dom0 console ({console_log}) ----\n")
            progress.write(result.console_tail(tail_on_failure) + "\n")
            if qemu_errors:
                progress.write(f"---- qemu said ----\n{qemu_errors}\n")
            progress.write("---- end of console tail ----\n")
            progress.flush()
    initrd.unlink(missing_ok=True)
    if temp and rc == 0 and not keep_logs:
        shutil.rmtree(ldir, ignore_errors=True)
        result.log_dir = None
    elif progress is not None and (rc != 0 or keep_logs):
        progress.write(f"[xenvm] logs kept in {ldir}\n")
    return result


def _stop(proc: subprocess.Popen) -> None:
    """Stop the qemu we started (its own process group), politely first."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def build(*args: str, cache: Optional[os.PathLike] = None, check: bool = True,
          quiet: bool = False) -> int:
    """Run build.sh (arguments e.g. "--clean", "--offline"); returns its exit status."""
    env = dict(os.environ)
    if cache:
        env["XEND_XENVM_CACHE"] = str(cache)
    proc = subprocess.run(["bash", str(HERE / "build.sh"), *args], env=env,
                          stdout=subprocess.PIPE if quiet else None,
                          stderr=subprocess.STDOUT if quiet else None, text=True)
    if proc.returncode != 0 and check:
        raise HarnessError(f"build.sh failed with status {proc.returncode}"
                           + (f":\n{proc.stdout[-4000:]}" if quiet and proc.stdout else ""))
    return proc.returncode


# ---- CLI -----------------------------------------------------------------------------------------

def _parse_payload(spec: str) -> Tuple[str, str]:
    if ":" not in spec:
        raise argparse.ArgumentTypeError(f"-a wants SRC:DEST, got {spec!r}")
    src, dest = spec.rsplit(":", 1)
    if not dest.startswith("/"):
        raise argparse.ArgumentTypeError(f"-a DEST must be absolute: {spec!r}")
    return src, dest


def _parse_env(spec: str) -> Tuple[str, str]:
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"-e wants NAME=VALUE, got {spec!r}")
    return tuple(spec.split("=", 1))  # type: ignore[return-value]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="harness.py",
        description="Boot Xen 4.17 + Debian dom0 under QEMU and run COMMAND in dom0. "
                    "Exit status: the command's; 124 timeout; 125 no result.")
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="shell command run in dom0 (default: tests/xen/test_in_dom0.sh with the "
                         "repository at /src)")
    ap.add_argument("-a", "--add", action="append", default=[], type=_parse_payload, metavar="SRC:DEST",
                    help="ship a host file or directory into dom0 at DEST (repeatable)")
    ap.add_argument("-e", "--env", action="append", default=[], type=_parse_env, metavar="NAME=VALUE",
                    help="export a variable to the command (repeatable)")
    ap.add_argument("-s", "--script", type=Path, help="run this host script (shipped as the command)")
    ap.add_argument("-t", "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (default 600)")
    ap.add_argument("--cache", help="image cache (default $XEND_XENVM_CACHE or /var/cache/xend-xenvm)")
    ap.add_argument("--build", action="store_true", help="run build.sh first")
    ap.add_argument("--log-dir", help="keep console.log, out.log, qemu.log here")
    ap.add_argument("-m", "--memory", type=int, default=2048, help="machine MiB (default 2048)")
    ap.add_argument("--dom0-mem", type=int, default=1024, help="dom0 MiB (default 1024)")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--cpu", default=DEFAULT_CPU)
    ap.add_argument("--xenstored", default="oxenstored", choices=["oxenstored", "xenstored"])
    ap.add_argument("--xen-args", default="", help="extra Xen command line")
    ap.add_argument("--dom0-args", default="", help="extra dom0 kernel command line")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the console live (stderr)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)

    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    payload: List[Tuple[str, str]] = list(args.add)
    if args.script:
        command = args.script.read_text()
    elif cmd:
        command = " ".join(cmd)
    else:
        command = "exec /bin/bash /src/tests/xen/test_in_dom0.sh"
        if not any(dest == "/src" for _, dest in payload):
            payload.append((str(REPO), "/src"))
    streamed: List[str] = []
    try:
        if args.build:
            build(cache=args.cache)
        result = run(command, payload=payload, env=dict(args.env), timeout=args.timeout,
                     cache=args.cache, memory=args.memory, dom0_mem=args.dom0_mem, smp=args.smp,
                     cpu=args.cpu, xenstored=args.xenstored, xen_args=args.xen_args,
                     dom0_args=args.dom0_args, log_dir=args.log_dir,
                     keep_logs=args.log_dir is not None,
                     progress=None if args.quiet else sys.stderr,
                     on_output=lambda s: (streamed.append(s), sys.stdout.write(s), sys.stdout.flush()),
                     on_console=(lambda s: (sys.stderr.write(s), sys.stderr.flush())) if args.verbose else None)
    except HarnessError as e:
        print(f"harness.py: {e}", file=sys.stderr)
        return RC_NO_RESULT
    if not streamed and result.output:  # output came from the console, not streamed
        sys.stdout.write(result.output)
    if not args.quiet:
        t = result.timings
        summary = ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
        print(f"[xenvm] {result.describe()}; {summary}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
