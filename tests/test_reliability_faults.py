"""Faults: kill -9 of xend (its server and its watchdog) in the middle of create, ``new``, save
and migrate (either end); after ``xend start`` again no domain and no managed config is lost or
corrupted, and the hypervisor holds no domain xend does not show. A disk that fills up while
saving fails the save with a clear error and the domain keeps running."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.daemon_helpers import XendInstance, xm_command
from tests.relocation_helpers import Host, write_domain_config
from xend import sxp

HAVE_RELOCATION = importlib.util.find_spec("xend.relocation") is not None


def field(rec: list, key: str):
    return next((v[1] for v in rec[1:] if isinstance(v, list) and v[0] == key and len(v) > 1),
                None)


def listing(x: XendInstance) -> Dict[str, list]:
    return {field(r, "name"): r for r in x.proxy().xend.domains_with_state(True, "all", False)}


def sim_domids(x: XendInstance) -> List[int]:
    import json
    doc = json.loads((x.paths["simulated-state-path"] / "domains.json").read_text())
    return sorted(r["domid"] for r in doc["domains"])


def alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill9(x: XendInstance) -> None:
    """kill -9 the server and its watchdog, and wait until both are gone."""
    from tests.daemon_helpers import parent_of
    pid = x.pid()
    parent = parent_of(pid) if pid else None
    x.kill()
    deadline = time.monotonic() + 10
    while (alive(pid) or (parent and parent > 1 and alive(parent))) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid), "server survived kill -9"


def restart(x: XendInstance) -> None:
    r = x.xend("start")
    assert r.returncode == 0, r.stderr + x.log_tail()
    assert x.answering()


def managed_configs(x: XendInstance) -> Dict[str, list]:
    """uuid -> the parsed config.sxp of every managed domain on disk (each must parse)."""
    out = {}
    root = x.paths["xend-domains-path"]
    if not root.exists():
        return out
    for d in sorted(root.iterdir()):
        cfg = d / "config.sxp"
        if cfg.exists():
            values = sxp.parse_all(cfg.read_bytes(), source=str(cfg))
            assert len(values) == 1 and values[0][0] == "domain", (cfg, values)
            out[d.name] = values[0]
    return out


def check_intact(x: XendInstance, running: Dict[str, str], managed: Dict[str, str]) -> Dict:
    """Every domain of ``running`` (name -> uuid) is there and running, every managed one
    (name -> uuid) is there with an intact config, and the hypervisor holds nothing xend does
    not show. Returns the listing."""
    doms = listing(x)
    for name, uuid in running.items():
        assert name in doms, (name, sorted(doms))
        assert field(doms[name], "uuid") == uuid
        assert field(doms[name], "domid") is not None, doms[name]
    configs = managed_configs(x)
    for name, uuid in managed.items():
        assert name in doms, (name, sorted(doms))
        assert uuid in configs, (name, uuid, sorted(configs))
        assert sxp.child_value(configs[uuid], "name") == name
        assert x.proxy().xend.domain(name, True)
    shown = sorted(int(field(r, "domid")) for r in doms.values()
                   if field(r, "domid") is not None)
    assert sim_domids(x) == shown, ("hypervisor and xend disagree", sim_domids(x), shown)
    return doms


def xm_popen(x: XendInstance, *args: str) -> subprocess.Popen:
    return subprocess.Popen(xm_command() + list(args), env=x.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def xend(tmp_path):
    x = XendInstance(tmp_path / "x", host_memory_mib=4096)
    x.start()
    yield x
    x.stop()
    x.kill()


def uuid_of(x: XendInstance, name: str) -> str:
    return field(x.proxy().xend.domain(name), "uuid")


def base_domains(x: XendInstance, tmp_path: Path) -> tuple:
    """One running guest and one managed (halted) guest that every fault must leave intact."""
    r = x.xm("create", str(write_domain_config(tmp_path, "keeper", memory=16)))
    assert r.returncode == 0, r.stderr
    r = x.xm("new", str(write_domain_config(tmp_path, "stored", memory=16)))
    assert r.returncode == 0, r.stderr
    return {"keeper": uuid_of(x, "keeper")}, {"stored": uuid_of(x, "stored")}


@pytest.mark.timeout(120)
def test_kill9_during_create(xend, tmp_path):
    running, managed = base_domains(xend, tmp_path)
    for i, delay in enumerate((0.0, 0.05, 0.12, 0.25, 0.4)):
        name = f"inflight{i}"
        p = xm_popen(xend, "create", str(write_domain_config(tmp_path, name, memory=16)))
        time.sleep(delay)
        kill9(xend)
        p.communicate(timeout=60)
        restart(xend)
        doms = check_intact(xend, running, managed)
        if name in doms:        # it made it: a whole domain, which works
            assert field(doms[name], "domid") is not None
            running[name] = field(doms[name], "uuid")


@pytest.mark.timeout(120)
def test_kill9_during_new(xend, tmp_path):
    running, managed = base_domains(xend, tmp_path)
    for i, delay in enumerate((0.0, 0.03, 0.08, 0.15, 0.3)):
        name = f"newer{i}"
        p = xm_popen(xend, "new", str(write_domain_config(tmp_path, name, memory=16)))
        time.sleep(delay)
        kill9(xend)
        p.communicate(timeout=60)
        restart(xend)
        doms = check_intact(xend, running, managed)
        if name in doms:
            managed[name] = field(doms[name], "uuid")
    # and every managed domain still starts
    for name in managed:
        r = xend.xm("start", name)
        assert r.returncode == 0, r.stderr + xend.log_tail()


@pytest.mark.timeout(150)
def test_kill9_during_save(xend, tmp_path):
    running, managed = base_domains(xend, tmp_path)
    r = xend.xm("create", str(write_domain_config(tmp_path, "big", memory=512)))
    assert r.returncode == 0, r.stderr
    uuid = uuid_of(xend, "big")
    image = tmp_path / "big.img"
    p = xm_popen(xend, "save", "big", str(image))
    xend.wait_for(lambda: image.exists() and image.stat().st_size > 4096, timeout=30,
                  interval=0.01)
    kill9(xend)
    p.communicate(timeout=60)
    assert p.returncode != 0, "the save completed before the kill: make the guest bigger"
    restart(xend)
    doms = check_intact(xend, running, managed)
    # the domain being saved is not lost: still there (maybe left paused), and it runs on
    assert "big" in doms, sorted(doms)
    assert field(doms["big"], "uuid") == uuid
    if "p" in field(doms["big"], "state"):
        r = xend.xm("unpause", "big")
        assert r.returncode == 0, r.stderr
    assert "p" not in field(xend.proxy().xend.domain("big"), "state")
    # a torn image is refused, not half restored
    r = xend.xm("restore", str(image))
    assert r.returncode != 0
    check_intact(xend, dict(running, big=uuid), managed)


@pytest.mark.timeout(90)
def test_disk_full_while_saving(xend, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    full = tmp_path / "full"
    full.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(full)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    try:
        r = xend.xm("create", str(write_domain_config(tmp_path, "victim", memory=32)))
        assert r.returncode == 0, r.stderr
        uuid = uuid_of(xend, "victim")
        r = xend.xm("save", "victim", str(full / "victim.img"))
        assert r.returncode != 0
        assert "No space left on device" in r.stderr, r.stderr
        assert str(full / "victim.img") in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not (full / "victim.img").exists(), "a torn image was left behind"
        rec = xend.proxy().xend.domain("victim")
        assert field(rec, "uuid") == uuid
        state = field(rec, "state")
        assert "p" not in state and ("r" in state or "b" in state), state
        assert xend.answering()
        # and it still saves where there is room
        r = xend.xm("save", "victim", str(tmp_path / "victim.img"))
        assert r.returncode == 0, r.stderr
        r = xend.xm("restore", str(tmp_path / "victim.img"))
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["umount", "-l", str(full)], capture_output=True)


# -- migrate, either end killed -----------------------------------------------------------------
@pytest.fixture
def pair(tmp_path):
    if not HAVE_RELOCATION:
        pytest.skip("no relocation code")
    a = Host(tmp_path / "a", host_memory_mib=4096)
    b = Host(tmp_path / "b", host_memory_mib=4096)
    for h in (a, b):
        h.start()
    yield a, b
    for h in (a, b):
        h.stop()
        h.kill()


def start_migration(a: Host, b: Host, name: str) -> subprocess.Popen:
    p = xm_popen(a, "migrate", name, "127.0.0.1", "-p", str(b.port))
    deadline = time.monotonic() + 30
    while "Receiving a domain" not in b.log():
        assert time.monotonic() < deadline, a.log_tail() + b.log_tail()
        assert p.poll() is None, "migration ended before the kill: " + p.communicate()[1]
        time.sleep(0.01)
    time.sleep(0.3)
    return p


@pytest.mark.timeout(150)
def test_kill9_sender_during_migrate(pair, tmp_path):
    a, b = pair
    running, managed = base_domains(a, tmp_path)
    r = a.xm("create", str(write_domain_config(tmp_path, "mover", memory=1024)))
    assert r.returncode == 0, r.stderr
    uuid = uuid_of(a, "mover")
    p = start_migration(a, b, "mover")
    kill9(a)
    p.communicate(timeout=60)
    # the receiver drops the half-received domain
    b.wait_for(lambda: "mover" not in listing(b), timeout=60)
    restart(a)
    doms = check_intact(a, dict(running, mover=uuid), managed)
    assert "p" not in field(doms["mover"], "state")
    check_intact(b, {}, {})
    assert set(listing(b)) == {"Domain-0"}


@pytest.mark.timeout(150)
def test_kill9_receiver_during_migrate(pair, tmp_path):
    a, b = pair
    running, managed = base_domains(a, tmp_path)
    r = a.xm("create", str(write_domain_config(tmp_path, "mover", memory=1024)))
    assert r.returncode == 0, r.stderr
    uuid = uuid_of(a, "mover")
    p = start_migration(a, b, "mover")
    kill9(b)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    # the sender keeps (and resumes) its copy
    doms = check_intact(a, dict(running, mover=uuid), managed)
    assert "p" not in field(doms["mover"], "state"), doms["mover"]
    restart(b)
    # the destination's half domain is gone after its restart
    check_intact(b, {}, {})
    assert set(listing(b)) == {"Domain-0"}
