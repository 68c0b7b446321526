"""Domains are never lost, duplicated or left half-changed, through the real daemon: ``xm
start`` racing ``xm delete`` of one managed domain (50 times), the name Domain-0, and changes
that cannot be persisted (a full or read-only store)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import xmlrpc.client
from pathlib import Path
from typing import Dict, List

import pytest

from tests.daemon_helpers import XendInstance
from tests.relocation_helpers import write_domain_config

RACE_ROUNDS = 50


def field(rec: list, key: str):
    return next((v[1] for v in rec[1:] if isinstance(v, list) and v[0] == key and len(v) > 1),
                None)


def listing(x: XendInstance) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for rec in x.proxy().xend.domains_with_state(True, "all", False):
        name = field(rec, "name")
        assert name not in out, f"two domains named {name}"
        out[name] = rec
    return out


def sim_domids(x: XendInstance) -> List[int]:
    doc = json.loads((x.paths["simulated-state-path"] / "domains.json").read_text())
    return sorted(r["domid"] for r in doc["domains"])


def shown_domids(x: XendInstance) -> List[int]:
    return sorted(int(field(r, "domid")) for r in listing(x).values()
                  if field(r, "domid") is not None)


@pytest.fixture
def xend(tmp_path):
    x = XendInstance(tmp_path / "x")
    x.start()
    yield x
    x.stop()
    x.kill()


def guest(tmp_path: Path, name: str) -> list:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 64)
    return ["vm", ["name", name], ["memory", "16"], ["vcpus", "1"],
            ["image", ["linux", ["kernel", str(kernel)]]]]


# -- item 1: start and delete at the same moment --------------------------------------------------
@pytest.mark.timeout(240)
def test_start_and_delete_of_one_managed_domain_never_both_succeed(xend, tmp_path):
    proxy = xend.proxy()
    both = 0
    outcomes = {"started": 0, "deleted": 0}
    for _ in range(RACE_ROUNDS):
        proxy.xend.domain.new(guest(tmp_path, "racer"))
        barrier = threading.Barrier(2)
        results: Dict[str, tuple] = {}

        def call(op: str, *args) -> None:
            method = getattr(xend.proxy().xend.domain, op)
            barrier.wait(10)
            try:
                results[op] = ("ok", method(*args))
            except xmlrpc.client.Fault as e:
                results[op] = ("fault", e.faultString)

        threads = [threading.Thread(target=call, args=("start", "racer", False)),
                   threading.Thread(target=call, args=("delete", "racer"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        started, deleted = results["start"][0] == "ok", results["delete"][0] == "ok"
        both += started and deleted
        assert started != deleted, results       # one wins, the other is refused
        doms = listing(xend)
        assert shown_domids(xend) == sim_domids(xend), "the hypervisor runs a domain not shown"
        if started:
            outcomes["started"] += 1
            assert results["delete"][1] == "Domain is not halted.", results
            assert field(doms["racer"], "domid") is not None
            proxy.xend.domain.destroy("racer")
            proxy.xend.domain.delete("racer")
        else:
            outcomes["deleted"] += 1
            assert results["start"][1] == "racer", results      # no such domain (fault 3)
            assert "racer" not in doms
    assert both == 0
    print(f"start/delete races: both succeeded {both}/{RACE_ROUNDS}; {outcomes}")
    # nothing left to adopt later: no second domain of that name appears
    xend.wait_for(lambda: True, timeout=1)
    assert set(listing(xend)) == {"Domain-0"}
    assert sim_domids(xend) == [0]


# -- item 7: Domain-0 -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_domain0_cannot_be_renamed_and_its_name_cannot_be_taken(xend, tmp_path):
    r = xend.xm("rename", "Domain-0", "pwned")
    assert r.returncode != 0
    assert "Cannot rename privileged domain Domain-0" in r.stderr, r.stderr
    r = xend.xm("rename", "0", "pwned")
    assert r.returncode != 0
    assert set(listing(xend)) == {"Domain-0"}
    r = xend.xm("create", str(write_domain_config(tmp_path, "guest", memory=16)))
    assert r.returncode == 0, r.stderr
    r = xend.xm("rename", "guest", "Domain-0")
    assert r.returncode != 0
    assert "VM name 'Domain-0' already exists as domain 0" in r.stderr, r.stderr
    r = xend.xm("new", str(write_domain_config(tmp_path, "Domain-0", memory=16)))
    assert r.returncode != 0 and "Domain-0" in r.stderr
    with pytest.raises(xmlrpc.client.Fault):
        xend.proxy().xend.domain.create(guest(tmp_path, "Domain-0"))
    assert set(listing(xend)) == {"Domain-0", "guest"}
    assert field(listing(xend)["Domain-0"], "domid") == 0


# -- item 5: a full or read-only store ----------------------------------------------------------
@pytest.fixture
def small_store(tmp_path):
    """xend-domains-path on a 1 MiB tmpfs of its own (root only), holding one managed domain
    ``kept`` of 32 MiB; yields (xend, mountpoint)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    x = XendInstance(tmp_path / "x")
    store = x.paths["xend-domains-path"]
    store.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(store)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    try:
        x.start()
        r = x.xm("new", str(write_domain_config(tmp_path, "kept", memory=32)))
        assert r.returncode == 0, r.stderr
        yield x, store
    finally:
        x.stop()
        x.kill()
        subprocess.run(["umount", "-l", str(store)], capture_output=True)


def fill(store: Path) -> None:
    """Fill the file system of ``store`` to the last byte."""
    fd = os.open(store / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def stored_names(store: Path) -> Dict[str, str]:
    """uuid directory -> name in its config.sxp (every directory must hold one)."""
    from xend import sxp
    out = {}
    for d in store.iterdir():
        if d.is_dir():
            files = sorted(p.name for p in d.iterdir())
            assert files == ["config.sxp"], (d, files)
            out[d.name] = sxp.child_value(sxp.parse_file(str(d / "config.sxp"))[0], "name")
    return out


def mem_of(x: XendInstance, name: str) -> int:
    return int(field(x.proxy().xend.domain(name), "memory"))


def check_refused(r: subprocess.CompletedProcess, path_part: str, reason: str) -> None:
    assert r.returncode != 0, r.stdout
    assert reason in r.stderr and path_part in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(120)
def test_full_store_refuses_changes_it_cannot_keep(small_store, tmp_path):
    x, store = small_store
    before = stored_names(store)
    fill(store)
    check_refused(x.xm("new", str(write_domain_config(tmp_path, "newcomer", memory=32))),
                  str(store), "No space left on device")
    assert stored_names(store) == before, "xm new left something behind"
    assert "newcomer" not in listing(x)
    check_refused(x.xm("mem-set", "kept", "16"), str(store), "No space left on device")
    assert mem_of(x, "kept") == 32
    check_refused(x.xm("rename", "kept", "renamed"), str(store), "No space left on device")
    assert "kept" in listing(x) and "renamed" not in listing(x)
    check_refused(x.xm("vcpu-set", "kept", "2"), str(store), "No space left on device")
    # a restart finds exactly what xend said it kept
    assert x.xend("restart").returncode == 0
    x.wait_for(x.answering, timeout=30)
    assert mem_of(x, "kept") == 32 and "renamed" not in listing(x)
    # deleting needs no space: it works, and frees it
    r = x.xm("delete", "kept")
    assert r.returncode == 0, r.stderr
    assert stored_names(store) == {}


@pytest.mark.timeout(120)
def test_read_only_store_refuses_changes_it_cannot_keep(small_store, tmp_path):
    x, store = small_store
    before = stored_names(store)
    r = subprocess.run(["mount", "-o", "remount,ro", str(store)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
    reason = "Read-only file system"
    check_refused(x.xm("delete", "kept"), str(store), reason)
    assert "kept" in listing(x)
    check_refused(x.xm("mem-set", "kept", "16"), str(store), reason)
    assert mem_of(x, "kept") == 32
    check_refused(x.xm("rename", "kept", "renamed"), str(store), reason)
    assert "kept" in listing(x)
    check_refused(x.xm("new", str(write_domain_config(tmp_path, "newcomer", memory=32))),
                  str(store), reason)
    assert stored_names(store) == before
    assert x.xend("restart").returncode == 0
    x.wait_for(x.answering, timeout=30)
    assert set(listing(x)) == {"Domain-0", "kept"} and mem_of(x, "kept") == 32
