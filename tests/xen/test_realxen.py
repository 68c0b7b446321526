"""The real-Xen suite: Xen 4.17 + a Debian dom0 booted under QEMU (TCG), xend checked against xl.

One boot for the whole module: ``build.sh`` (cheap when the image cache is current), then
``harness.run`` boots Xen + dom0 with this repository at /src and runs ``test_in_dom0.sh``,
whose steps become the tests below. Deselected by default (pytest.ini: ``-m "not realxen"``); run
with ``pytest -m realxen tests/xen -s`` (``-s`` shows the boot and step timings live). Needs root,
qemu-system-x86, debootstrap and the Debian mirror (see tests/xen/README.md).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from tests.tls_helpers import CA, SUBJECT_ALT

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUN_TIMEOUT = float(os.environ.get("XEND_XENVM_TIMEOUT", "2220"))

pytestmark = [pytest.mark.realxen, pytest.mark.timeout(2370)]

# test_in_dom0.sh's steps, in its order (each `run_step NAME FUNCTION` line of the script)
STEPS = tuple(re.findall(r"^\s*run_step (\S+)", (HERE / "test_in_dom0.sh").read_text(), re.M))
STEP_END = re.compile(r"^--- (PASS|FAIL|SKIP) (\S+?)(?:: (.*?))?(?: \(([\d.]+)s\))?$")


def _load_harness():
    spec = importlib.util.spec_from_file_location("xend_xenvm_harness", HERE / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def parse_steps(output: str) -> Dict[str, Tuple[str, str, str]]:
    """step name -> (PASS|FAIL|SKIP, reason, the step's output)."""
    steps: Dict[str, Tuple[str, str, str]] = {}
    current, lines = None, []
    for line in output.splitlines():
        if line.startswith("=== STEP "):
            current, lines = line[len("=== STEP "):].strip(), []
            continue
        m = STEP_END.match(line)
        if m and m.group(2) == current:
            steps[current] = (m.group(1), m.group(3) or "", "\n".join(lines))
            current = None
            continue
        if current:
            lines.append(line)
    return steps


def relocation_certificates(where: Path, san: str = SUBJECT_ALT) -> Optional[Path]:
    """A CA and a key + certificate it signed for ``san`` (tests/tls_helpers.py), under the
    names dom0 reads in /xenvm-certs: ca.pem, host.key, host.pem. None without openssl (the
    TLS steps skip)."""
    if shutil.which("openssl") is None:
        return None
    ca = CA(where, "xenvm-ca")
    _key, cert = ca.issue("host", san)
    ca.cert.rename(where / "ca.pem")
    cert.rename(where / "host.pem")
    return where


@pytest.fixture(scope="module")
def dom0_run(tmp_path_factory):
    problems = harness.missing_requirements()
    if problems:
        pytest.skip("real-Xen harness unavailable: " + "; ".join(problems))
    harness.build()
    payload = [(REPO, "/src")]
    certs = relocation_certificates(tmp_path_factory.mktemp("certs"))
    if certs is not None:
        payload.append((certs, "/xenvm-certs"))
    result = harness.run("exec /bin/bash /src/tests/xen/test_in_dom0.sh",
                         payload=payload, timeout=RUN_TIMEOUT,
                         progress=sys.stderr, tail_on_failure=0)  # the reports show the tail
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    print(f"\n[realxen] {result.describe()}; {timings}")
    for line in result.output.splitlines():
        if line.startswith(("--- ", "RESULT:")):
            print(f"[realxen] {line}")
    return result, parse_steps(result.output)


def _failure_report(result, extra: str = "") -> str:
    return (f"{extra}\n---- command output (tail) ----\n"
            + "\n".join(result.output.splitlines()[-80:])
            + f"\n---- Xen/dom0 console (tail) ----\n{result.console_tail(60)}"
            + (f"\n(logs: {result.log_dir})" if result.log_dir else ""))


def test_dom0_ran_the_suite(dom0_run):
    """Xen booted, dom0 came up with its toolstack and the script reported a result."""
    result, _ = dom0_run
    if result.returncode in (harness.RC_TIMEOUT, harness.RC_NO_RESULT):
        pytest.fail(_failure_report(result, f"no result from dom0: {result.describe()}"), pytrace=False)
    assert "RESULT:" in result.output, _failure_report(result, "test_in_dom0.sh printed no RESULT line")


@pytest.mark.parametrize("step", STEPS)
def test_step(dom0_run, step):
    result, steps = dom0_run
    if step not in steps:
        pytest.fail(_failure_report(result, f"step {step} did not report"), pytrace=False)
    status, reason, output = steps[step]
    if status == "SKIP":
        pytest.skip(reason)
    if status == "FAIL":
        pytest.fail(f"{step}: {reason}\n{output}", pytrace=False)


def test_exit_status(dom0_run):
    """The whole suite's status, as the harness reports it."""
    result, steps = dom0_run
    if result.returncode != 0:
        failed = [name for name, (status, _, _) in steps.items() if status == "FAIL"]
        pytest.fail(_failure_report(result, f"test_in_dom0.sh: {result.describe()}; failed steps: {failed}"),
                    pytrace=False)
