"""Device migration steps and ``external-migration-tool`` (reference section 7.7).

Every device of the migrating domain is told about each step, in device order:

  0. test, before connecting to the destination (a device may refuse);
  1. after the configuration has been sent;
  2. after the guest has been suspended;
  3. after step 2 (wait for completion).

For an ordinary device, with ``external-migration-tool`` set, a step runs through the shell:
``<tool> -type <class> -step <n> -host <dst> -domname <name>``; every output line is logged,
and a non-zero exit fails the migration with ``Migration tool returned <code>``. ``vfb``,
``vkbd`` and ``console`` devices have nothing to do; ``pci`` refuses (step 0).

When a step fails (or the migration fails later), every call that succeeded is repeated in
reverse order with ``-recover`` appended. Recovery failures are logged and do not hide the
original error.
"""
from __future__ import annotations

import logging
import shlex
import subprocess
from typing import Callable, List, Optional, Sequence, Tuple

from xend import sxp
from xend.errors import VmError

log = logging.getLogger("xend.relocate")

TOOL_TIMEOUT = 300              # seconds one run of the tool may take
NO_OP_CLASSES = ("vfb", "vkbd", "console")
REFUSING_CLASSES = {"pci": "Migration not permitted with assigned PCI device."}
MAX_LOGGED_LINES = 1000

Runner = Callable[[str], Tuple[int, str]]


def run_shell(command: str) -> Tuple[int, str]:
    """Run ``command`` through /bin/sh; (exit code, combined output). A timeout counts as a
    failure with the shell's code for a killed child."""
    try:
        proc = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.output or b""
        return 128 + 9, out.decode("utf-8", "replace") + f"\n(timed out after {TOOL_TIMEOUT}s)"
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def device_classes(config: list) -> List[str]:
    """The class of every device in a domain's config SXP, in order (``(device (vif ...))``)."""
    out = []
    for dev in sxp.children(config, "device"):
        kids = sxp.children(dev)
        if kids and isinstance(kids[0], list) and kids[0] and isinstance(kids[0][0], str):
            out.append(kids[0][0])
    return out


def tool_command(tool: str, devclass: str, step: int, host: str, domname: str,
                 recover: bool = False) -> str:
    """The original's command line; the tool text is taken as written (it may carry its own
    arguments), the values we add are shell-quoted."""
    cmd = (f"{tool} -type {shlex.quote(devclass)} -step {step} -host {shlex.quote(host)} "
           f"-domname {shlex.quote(domname)}")
    return cmd + " -recover" if recover else cmd


class DeviceSteps:
    """The step calls of one migration, remembered so that they can be undone."""

    def __init__(self, tool: str, devices: Sequence[str], host: str, domname: str,
                 runner: Runner = run_shell):
        self.tool = (tool or "").strip()
        self.devices = list(devices)
        self.host = host
        self.domname = domname
        self.runner = runner
        self.done: List[Tuple[str, int]] = []

    def check(self) -> None:
        """Step 0 and the refusals."""
        for devclass in self.devices:
            if devclass in REFUSING_CLASSES:
                raise VmError(REFUSING_CLASSES[devclass])
        self.step(0)

    def step(self, n: int) -> None:
        for devclass in self.devices:
            if devclass in NO_OP_CLASSES or not self.tool:
                continue
            self._run(devclass, n, recover=False)
            self.done.append((devclass, n))

    def recover(self) -> None:
        """Undo every successful call, last first."""
        while self.done:
            devclass, n = self.done.pop()
            try:
                self._run(devclass, n, recover=True)
            except VmError as e:
                log.error("Recovery of %s step %d for %s failed: %s", devclass, n,
                          self.domname, e)

    def _run(self, devclass: str, n: int, recover: bool) -> None:
        cmd = tool_command(self.tool, devclass, n, self.host, self.domname, recover)
        log.info("Running migration tool: %s", cmd)
        code, output = self.runner(cmd)
        for i, line in enumerate(output.splitlines()):
            if i >= MAX_LOGGED_LINES:
                log.info("migration tool: ... (output truncated)")
                break
            log.info("migration tool: %s", line)
        if code != 0:
            raise VmError(f"Migration tool returned {code}")


def no_steps(domname: str = "", host: str = "") -> DeviceSteps:
    return DeviceSteps("", [], host, domname)


def maybe_steps(tool: Optional[str], config: list, host: str, domname: str) -> DeviceSteps:
    return DeviceSteps(tool or "", device_classes(config), host, domname)
