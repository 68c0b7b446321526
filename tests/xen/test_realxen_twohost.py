"""Migration between two real Xen hosts: two QEMU guests (Xen 4.17 + Debian dom0 each) on one
QEMU socket network (no access beyond the two), one xend each, guests migrated from one to
the other and back, live and not, over TCP and TLS, with hosts-allow naming the other host
only (tests/xen/twohost.sh does the work in each dom0).

Marked ``realxen2`` and deselected by default (pytest.ini): two emulated machines on this
machine's two cores take long; a developer runs it with
``.venv/bin/python -m pytest -q -m realxen2 tests/xen -s``.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time

import pytest

from tests.xen.test_realxen import REPO, harness, parse_steps, relocation_certificates

pytestmark = [pytest.mark.realxen2, pytest.mark.timeout(3600)]
RUN_TIMEOUT = float(os.environ.get("XEND_XENVM_TIMEOUT", "2700"))
ROLES = {"a": ("10.99.0.1/24", "52:54:00:99:00:01"), "b": ("10.99.0.2/24", "52:54:00:99:00:02")}
STEPS = {"a": ("xend-start", "bridge", "a-start-guests", "network", "a-send", "a-home",
               "xend-stop"),
         "b": ("xend-start", "bridge", "network", "b-receive", "b-send-back", "xend-stop")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    problems = harness.missing_requirements()
    if problems or shutil.which("openssl") is None:
        pytest.skip("real-Xen harness unavailable: " + "; ".join(problems or ["no openssl"]))
    harness.build()
    certs = relocation_certificates(tmp_path_factory.mktemp("certs"),     # both hosts
                                   "subjectAltName=IP:10.99.0.1,IP:10.99.0.2,DNS:localhost,"
                                   "IP:127.0.0.1")
    port = _free_port()
    results = {}

    def boot(role: str, netdev: str) -> None:
        ip, mac = ROLES[role]
        results[role] = harness.run(
            "exec /bin/bash /src/tests/xen/twohost.sh", payload=[(REPO, "/src"),
                                                                 (certs, "/xenvm-certs")],
            env={"XENVM_ROLE": role}, timeout=RUN_TIMEOUT,
            dom0_args=f"xenvm.ip={ip} xenvm.hostname=xenvm-{role}",
            qemu_args=["-netdev", f"socket,id=n0,{netdev}",
                       "-device", f"e1000,netdev=n0,mac={mac}"],
            progress=sys.stderr, tail_on_failure=0)

    b = threading.Thread(target=boot, args=("b", f"listen=127.0.0.1:{port}"))
    b.start()
    time.sleep(3)                   # b's QEMU listens before a's connects
    a = threading.Thread(target=boot, args=("a", f"connect=127.0.0.1:{port}"))
    started = time.monotonic()
    a.start()
    a.join()
    b.join()
    print(f"\n[realxen2] both hosts done in {time.monotonic() - started:.0f} s")
    for role in ("a", "b"):
        r = results[role]
        print(f"[realxen2] host {role}: {r.describe()}")
        for line in r.output.splitlines():
            if line.startswith(("--- ", "RESULT:", "    tp", "    tpvh")):
                print(f"[realxen2] {role} {line}")
    return {role: (results[role], parse_steps(results[role].output)) for role in results}


@pytest.mark.parametrize("role,step", [(r, s) for r in ("a", "b") for s in STEPS[r]])
def test_two_host_step(two_runs, role, step):
    result, steps = two_runs[role]
    if step not in steps:
        pytest.fail(f"host {role}: step {step} did not report\n"
                    + "\n".join(result.output.splitlines()[-60:])
                    + f"\n---- console ----\n{result.console_tail(40)}", pytrace=False)
    status, reason, output = steps[step]
    if status == "SKIP":
        pytest.skip(reason)
    if status == "FAIL":
        pytest.fail(f"host {role}, {step}: {reason}\n{output}", pytrace=False)
