"""Faults: kill -9 of xend (its server and its watchdog) in the middle of create, ``new``, save
and migrate (either end); after ``xend start`` again no domain and no managed config is lost or
corrupted, and the hypervisor holds no domain xend does not show. A disk that fills up while
saving fails the save with a clear error and the domain keeps running."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import random
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


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> List[str]:
    """Unfinished images a save left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".xend-tmp"))


def timed_xm(x: XendInstance, *args: str) -> float:
    t0 = time.monotonic()
    r = x.xm(*args)
    assert r.returncode == 0, r.stderr + x.log_tail()
    return time.monotonic() - t0


KILL_ROUNDS = 6


def kill_points(duration: float, rng: random.Random) -> List[float]:
    """KILL_ROUNDS random moments spread over 0 .. 1.3 x ``duration`` (one in each slice, in
    shuffled order), so that early, middle and late kills all happen."""
    span = duration * 1.3 / KILL_ROUNDS
    points = [span * (i + rng.random()) for i in range(KILL_ROUNDS)]
    rng.shuffle(points)
    return points


@pytest.mark.timeout(300)
def test_kill9_at_random_points_of_save(xend, tmp_path):
    """kill -9 at a random moment of ``xm save`` over an existing image, repeatedly. After
    each restart: the domain runs (not left paused) and the earlier image is intact, or the
    save finished (the domain is gone and the new image restores); never a torn file."""
    running, managed = base_domains(xend, tmp_path)
    r = xend.xm("create", str(write_domain_config(tmp_path, "big", memory=256)))
    assert r.returncode == 0, r.stderr
    uuid = uuid_of(xend, "big")
    images = tmp_path / "images"
    images.mkdir()
    image = images / "big.img"
    image.write_bytes(b"an earlier image, maybe another guest's only copy\n" * 1000)
    earlier = file_digest(image)
    spare = images / "spare.img"
    duration = timed_xm(xend, "save", "-c", "big", str(spare))     # checkpoint: keeps running
    spare.unlink()
    outcomes = []
    for delay in kill_points(duration, random.Random(16)):
        assert "big" in listing(xend)
        p = xm_popen(xend, "save", "big", str(image))
        time.sleep(delay)
        kill9(xend)
        p.communicate(timeout=60)
        restart(xend)
        assert leftovers(images) == [], xend.log_tail()
        doms = check_intact(xend, running, managed)     # the others: untouched
        if "big" in doms:
            assert field(doms["big"], "uuid") == uuid
            assert "p" not in field(doms["big"], "state"), (doms["big"], xend.log_tail())
            assert file_digest(image) == earlier, "the earlier image was destroyed"
            outcomes.append(f"{delay:.2f}s: resumed")
        else:
            assert file_digest(image) != earlier
            r = xend.xm("restore", str(image))      # the save finished: its image is whole
            assert r.returncode == 0, r.stderr + xend.log_tail()
            image.write_bytes(b"an earlier image, maybe another guest's only copy\n" * 1000)
            outcomes.append(f"{delay:.2f}s: saved")
        check_intact(xend, dict(running, big=uuid), managed)
    print("outcomes:", outcomes)


@pytest.mark.timeout(300)
def test_kill9_at_random_points_of_restore(xend, tmp_path):
    """kill -9 at a random moment of ``xm restore``, repeatedly. After each restart the domain
    is either absent (the unfinished one destroyed, and the log says so) or whole: running,
    with exactly the image's memory. A half-restored domain is never adopted."""
    from tests.relocation_helpers import restored_digest
    running, managed = base_domains(xend, tmp_path)
    r = xend.xm("create", str(write_domain_config(tmp_path, "big", memory=256)))
    assert r.returncode == 0, r.stderr
    image = tmp_path / "big.img"
    assert xend.xm("save", "big", str(image)).returncode == 0
    duration = timed_xm(xend, "restore", "-p", str(image))
    expected = restored_digest(xend.paths["simulated-state-path"], domid_of(xend, "big"))
    assert xend.xm("destroy", "big").returncode == 0
    outcomes = []
    for delay in kill_points(duration, random.Random(16)):
        p = xm_popen(xend, "restore", str(image))
        time.sleep(delay)
        kill9(xend)
        p.communicate(timeout=60)
        restart(xend)
        doms = check_intact(xend, running, managed)
        if "big" in doms:
            assert "p" not in field(doms["big"], "state"), (doms["big"], xend.log_tail())
            assert restored_digest(xend.paths["simulated-state-path"],
                                   domid_of(xend, "big")) == expected
            assert xend.xm("destroy", "big").returncode == 0
            outcomes.append(f"{delay:.2f}s: restored")
        else:
            outcomes.append(f"{delay:.2f}s: absent")
    print("outcomes:", outcomes)
    # at least one kill caught a domain being built, and its destruction was logged
    assert "was being restored from" in xend.paths["logfile"].read_text(), outcomes


def domid_of(x: XendInstance, name: str) -> int:
    return int(field(x.proxy().xend.domain(name), "domid"))


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
        earlier = b"an earlier image, maybe another guest's only copy\n" * 100
        (full / "victim.img").write_bytes(earlier)
        r = xend.xm("save", "victim", str(full / "victim.img"))
        assert r.returncode != 0
        assert "No space left on device" in r.stderr, r.stderr
        assert str(full / "victim.img") in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert (full / "victim.img").read_bytes() == earlier, "the earlier image was destroyed"
        assert leftovers(full) == [], "a torn image was left behind"
        assert not (full / "new.img").exists()
        r = xend.xm("save", "victim", str(full / "new.img"))
        assert r.returncode != 0 and not (full / "new.img").exists()
        assert leftovers(full) == []
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
