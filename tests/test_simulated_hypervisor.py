"""The simulated hypervisor: what the contract does not cover — persistence, processes,
accounting, guest behaviour, memory contents, and the ``xend-sim`` command."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xend.errors import HypervisorError
from xend.hypervisor import detect_backend, make_hypervisor
from xend.hypervisor.base import SHUTDOWN_REASONS, DomainSpec
from xend.hypervisor.simmemory import DirtyMap, page_bytes
from xend.hypervisor.simulated import SimulatedHypervisor

pytestmark = pytest.mark.timeout(60)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sim(path, **kwargs) -> SimulatedHypervisor:
    kwargs.setdefault("host_memory_mib", 1024)
    kwargs.setdefault("host_cpus", 4)
    kwargs.setdefault("dom0_memory_mib", 256)
    kwargs.setdefault("shutdown_delay", 0.1)
    return SimulatedHypervisor(str(path), **kwargs)


@pytest.fixture
def state(tmp_path):
    return tmp_path / "sim"


@pytest.fixture
def hv(state):
    hypervisor = _sim(state)
    yield hypervisor
    hypervisor.close()


def _spec(mib: int = 4, vcpus: int = 1, cmdline: str = "", name: str = "guest",
          uid: str = "") -> DomainSpec:
    return DomainSpec(name=name, uuid=uid or str(uuid.uuid4()), memory_kib=mib * 1024,
                      maxmem_kib=mib * 1024, vcpus=vcpus, cmdline=cmdline)


def _start(hv, **kwargs) -> int:
    domid = hv.create_domain(_spec(**kwargs))
    hv.unpause(domid)
    return domid


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- factory ---------------------------------------------------------------------------------
def test_make_hypervisor_from_a_plain_dict(tmp_path):
    hv = make_hypervisor({"hypervisor-backend": "simulated",
                          "simulated-state-path": str(tmp_path / "s"),
                          "simulated-host-memory": 2048, "simulated-host-cpus": 3})
    assert hv.name == "simulated"
    info = hv.physinfo()
    assert (info.total_kib, info.nr_cpus) == (2048 * 1024, 3)
    assert info.free_kib == info.total_kib - hv.domain_info(0).mem_kib


def test_make_hypervisor_defaults(tmp_path):
    hv = make_hypervisor({"hypervisor-backend": "simulated",
                          "simulated-state-path": str(tmp_path / "s"),
                          "simulated-host-cpus": 0})
    info = hv.physinfo()
    assert info.total_kib == 16384 * 1024 and info.nr_cpus == os.cpu_count()


def test_auto_picks_simulated_without_xen(tmp_path):
    if detect_backend() != "simulated":
        pytest.skip("a Xen hypervisor is present")
    hv = make_hypervisor({"hypervisor-backend": "auto",
                          "simulated-state-path": str(tmp_path / "s")})
    assert hv.name == "simulated"


def test_detect_backend_looks_for_xen_markers(tmp_path):
    marker = tmp_path / "privcmd"
    assert detect_backend([str(marker)]) == "simulated"
    marker.touch()
    assert detect_backend([str(marker)]) == "xenctrl"


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(HypervisorError, match="hypervisor-backend"):
        make_hypervisor({"hypervisor-backend": "kvm"})


# -- persistence and processes ---------------------------------------------------------------
def test_a_new_instance_sees_the_same_running_domains(state):
    first = _sim(state)
    domid = _start(first, vcpus=2, name="keeper")
    first.store_write(f"/local/domain/{domid}/name", "keeper")
    first.set_vcpu_affinity(domid, 1, [2])
    first.sched_credit_set(domid, 1024, 10)
    time.sleep(0.05)
    cpu_before = first.domain_info(domid).cpu_time_ns
    first.close()                                   # "xend restart"

    second = _sim(state, host_memory_mib=99999)     # the host is fixed once created
    info = second.domain_info(domid)
    assert not info.paused and info.online_vcpus == 2 and info.cpu_time_ns >= cpu_before
    assert second.physinfo().total_kib == 1024 * 1024
    assert second.store_read(f"/local/domain/{domid}/name") == "keeper"
    assert second.vcpu_info(domid)[1].affinity == [2]
    assert second.sched_credit_get(domid) == (1024, 10)
    assert second.domain_names()[domid] == "keeper"
    assert _wait_until(lambda: second.domain_info(domid).cpu_time_ns > info.cpu_time_ns)


def test_an_instance_sees_changes_made_by_another(state):
    a, b = _sim(state), _sim(state)
    domid = a.create_domain(_spec())
    assert b.domain_info(domid).paused
    b.unpause(domid)
    assert not a.domain_info(domid).paused
    a.destroy(domid)
    with pytest.raises(HypervisorError):
        b.domain_info(domid)


def _worker(path: str, tag: int, count: int, barrier) -> None:
    hv = SimulatedHypervisor(path)
    barrier.wait(30)                                # both processes work at the same time
    for i in range(count):
        domid = hv.create_domain(_spec(mib=1, name=f"w{tag}-{i}"))
        hv.store_write(f"/local/domain/{domid}/name", f"w{tag}-{i}")
        hv.store_write(f"/tool/worker{tag}/{i}", str(domid))
        hv.unpause(domid)
        if i % 2:
            hv.destroy(domid)
    hv.close()


def test_two_processes_share_one_state_dir_without_corruption(state):
    _sim(state).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_worker, args=(str(state), tag, 20, barrier))
               for tag in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]

    hv = _sim(state)
    guests = [d for d in hv.list_domains() if d.domid != 0]
    assert len(guests) == 20 and len({d.domid for d in guests}) == 20
    assert hv.physinfo().free_kib == (1024 - 256 - 20) * 1024
    names = hv.domain_names()
    for d in guests:
        assert hv.store_read(f"/local/domain/{d.domid}/name") == names[d.domid]
    ids = {t: [int(hv.store_read(f"/tool/worker{t}/{i}")) for i in range(20)] for t in (1, 2)}
    assert len(set(ids[1] + ids[2])) == 40          # no domid handed out twice
    assert min(ids[2]) < max(ids[1]) and min(ids[1]) < max(ids[2])    # they did interleave
    json.loads((state / "domains.json").read_text())
    assert not [f for f in os.listdir(state) if ".tmp-" in f]


# -- memory accounting and domids ------------------------------------------------------------
def test_memory_accounting_is_exact(hv):
    free = hv.physinfo().free_kib
    assert free == (1024 - 256) * 1024
    big = hv.create_domain(_spec(mib=free // 1024 - 1))
    small = hv.create_domain(_spec(mib=1))
    assert hv.physinfo().free_kib == 0
    with pytest.raises(HypervisorError) as caught:
        hv.create_domain(DomainSpec(name="x", uuid=str(uuid.uuid4()), memory_kib=4,
                                    maxmem_kib=4))
    assert caught.value.errno == errno.ENOMEM and "Cannot allocate memory" in str(caught.value)
    hv.destroy(small)
    assert hv.physinfo().free_kib == 1024
    hv.set_memory_target(0, 200 * 1024)             # balloon dom0 down
    assert hv.physinfo().free_kib == 1024 + 56 * 1024
    with pytest.raises(HypervisorError) as caught:
        hv.set_memory_target(0, 300 * 1024)
    assert caught.value.errno == errno.ENOMEM
    hv.destroy(big)
    assert hv.physinfo().free_kib == hv.physinfo().total_kib - 200 * 1024


def test_memory_target_is_written_to_the_store(hv):
    domid = hv.create_domain(DomainSpec(name="b", uuid=str(uuid.uuid4()), memory_kib=4096,
                                        maxmem_kib=8192))
    hv.set_memory_target(domid, 6144)
    assert hv.store_read(f"/local/domain/{domid}/memory/target") == "6144"
    assert hv.domain_info(domid).mem_kib == 6144
    hv.set_memory_target(domid, 99999)              # the balloon stops at maxmem
    assert hv.domain_info(domid).mem_kib == 8192


def test_domids_increase_persist_and_wrap(state):
    hv = _sim(state)
    ids = [hv.create_domain(_spec(mib=1)) for _ in range(3)]
    assert ids == [1, 2, 3]
    hv.destroy(2)
    hv.close()
    hv = _sim(state)
    assert hv.create_domain(_spec(mib=1)) == 4      # 2 is free but not reused
    hv.close()
    table = json.loads((state / "domains.json").read_text())
    table["next_domid"] = 0x7FEF                    # as after a long uptime
    (state / "domains.json").write_text(json.dumps(table))
    hv = _sim(state)
    assert hv.create_domain(_spec(mib=1)) == 0x7FEF
    assert hv.create_domain(_spec(mib=1)) == 2      # wrapped; 1 is still in use


# -- guest behaviour -------------------------------------------------------------------------
def test_guest_shuts_down_after_its_delay(hv):
    domid = _start(hv, cmdline="sim.shutdown_delay=0.3")
    hv.wait_for_change(0)
    asked = time.monotonic()
    hv.store_write(f"/local/domain/{domid}/control/shutdown", "reboot")
    assert not hv.domain_info(domid).shutdown       # not at once
    while not hv.domain_info(domid).shutdown:
        assert hv.wait_for_change(2)
    assert time.monotonic() - asked >= 0.25
    info = hv.domain_info(domid)
    assert info.shutdown_reason == SHUTDOWN_REASONS["reboot"] and info.state_string == "---s--"


def test_a_paused_guest_answers_only_once_unpaused(hv):
    domid = hv.create_domain(_spec())
    hv.store_write(f"/local/domain/{domid}/control/shutdown", "poweroff")
    time.sleep(0.2)
    assert not hv.domain_info(domid).shutdown
    hv.unpause(domid)
    assert _wait_until(lambda: hv.domain_info(domid).shutdown)


def test_a_guest_can_ignore_shutdown_requests(hv):
    domid = _start(hv, cmdline="quiet sim.ignore_shutdown=1")
    hv.store_write(f"/local/domain/{domid}/control/shutdown", "poweroff")
    time.sleep(0.3)
    info = hv.domain_info(domid)
    assert not info.shutdown and (info.running or info.blocked)
    hv.shutdown(domid, 0)                            # the hypervisor still can
    assert hv.domain_info(domid).shutdown


@pytest.mark.parametrize("cmdline", ["sim.frobnicate=1", "sim.load=2", "sim.dirty_rate=x",
                                     "sim.console_interval=0", "sim.shutdown_delay=-1"])
def test_bad_guest_options_are_refused(hv, cmdline):
    with pytest.raises(HypervisorError) as caught:
        hv.create_domain(_spec(cmdline=cmdline))
    assert caught.value.errno == errno.EINVAL


def test_a_bare_flag_option_means_yes(hv):
    domid = _start(hv, cmdline="sim.ignore_shutdown")
    hv.store_write(f"/local/domain/{domid}/control/shutdown", "halt")
    time.sleep(0.3)
    assert not hv.domain_info(domid).shutdown


def test_guest_can_crash_by_itself(hv):
    domid = _start(hv, cmdline="sim.crash_after=0.1")
    assert _wait_until(lambda: hv.domain_info(domid).crashed)
    assert hv.domain_info(domid).state_string == "----c-"


def test_cpu_time_follows_load_and_vcpus(hv):
    busy = _start(hv, vcpus=2, cmdline="sim.load=1")
    idle = _start(hv, vcpus=1, cmdline="sim.load=0.1")
    time.sleep(0.6)
    hv.pause(busy)
    hv.pause(idle)
    busy_ns, idle_ns = hv.domain_info(busy).cpu_time_ns, hv.domain_info(idle).cpu_time_ns
    assert busy_ns >= 2 * 0.55e9 and idle_ns < busy_ns / 10
    assert sum(v.cpu_time_ns for v in hv.vcpu_info(busy)) == busy_ns
    assert hv.domain_info(0).cpu_time_ns > 0 and hv.domain_info(0).running


def test_state_letters(hv):
    busy = _start(hv, cmdline="sim.load=1")
    idle = _start(hv)
    assert hv.domain_info(busy).state_string == "r-----"
    assert _wait_until(lambda: hv.domain_info(idle).state_string == "-b----")
    assert hv.domain_info(0).state_string == "r-----"


def test_console_shows_boot_then_periodic_lines_then_the_end(hv):
    domid = _start(hv, cmdline="sim.console_interval=0.05", name="chatty")
    time.sleep(0.7)
    text = hv.read_console(domid).decode()
    assert "Linux version" in text and "chatty login:" in text and "heartbeat 1" in text
    assert b"Linux version" not in hv.read_console(domid)          # consumed
    hv.store_write(f"/local/domain/{domid}/control/shutdown", "poweroff")
    assert _wait_until(lambda: hv.domain_info(domid).shutdown)
    assert hv.read_console(domid).decode().rstrip().endswith("reboot: Power down")


def test_console_output_is_deterministic(state, tmp_path):
    lines = []
    for path in (state, tmp_path / "other"):
        hv = _sim(path)
        domid = hv.create_domain(_spec(name="same", uid="6b0b1e4e-0bd0-4a64-9a1f-c3bcd1f5a1d2"))
        hv.unpause(domid)
        time.sleep(0.3)
        hv.pause(domid)
        lines.append(hv.read_console(domid).decode().splitlines()[:5])
    assert lines[0] == lines[1] and lines[0][0].startswith("[    0.000000] Linux version")


def test_dom0_console_ring_is_a_xen_boot_log(hv):
    ring = hv.read_console_ring()
    assert "Xen version 4.17" in ring and "(XEN) Brought up 4 CPUs" in ring
    assert "1024MB" in ring


# -- memory contents -------------------------------------------------------------------------
FIXED_UUID = "0f6c8f4e-58c9-4c55-8d3c-3b0c4c4a8e11"


def test_memory_is_deterministic_per_uuid(state, tmp_path):
    one, two = _sim(state), _sim(tmp_path / "other")
    a = one.create_domain(_spec(uid=FIXED_UUID))
    b = two.create_domain(_spec(uid=FIXED_UUID))
    c = two.create_domain(_spec())
    assert one.memory_checksum(a) == two.memory_checksum(b) != two.memory_checksum(c)
    (pfn, data), = one.read_pages(a, [7])
    assert pfn == 7 and data == page_bytes(FIXED_UUID, 7, 0)


def test_a_running_guest_changes_its_memory(hv):
    domid = _start(hv, cmdline="sim.dirty_rate=5000")
    before = hv.memory_checksum(domid)
    time.sleep(0.05)
    hv.pause(domid)
    after = hv.memory_checksum(domid)
    assert after != before and hv.memory_checksum(domid) == after


def test_dirty_log_names_exactly_the_changed_pages(hv):
    domid = hv.create_domain(_spec(cmdline="sim.dirty_rate=2000 sim.wss=200"))
    pfns = range(hv.nr_pages(domid))
    before = dict(hv.read_pages(domid, pfns))
    hv.enable_dirty_log(domid, True)
    hv.unpause(domid)
    time.sleep(0.05)
    hv.pause(domid)
    dirty = hv.read_dirty_pages(domid)
    changed = [pfn for pfn, data in hv.read_pages(domid, pfns) if data != before[pfn]]
    assert changed and changed == dirty and len(dirty) <= 200


def test_live_migration_converges_to_an_identical_image(hv):
    """The send loop of a live migration, done by hand between two domains."""
    source = _start(hv, mib=8, cmdline="sim.dirty_rate=3000")
    target = hv.create_domain(_spec(mib=8))
    hv.enable_dirty_log(source, True)
    todo = list(range(hv.nr_pages(source)))
    rounds = 0
    while len(todo) > 50 and rounds < 10:
        hv.write_pages(target, hv.read_pages(source, todo))
        if rounds == 0:
            time.sleep(0.05)  # a first pass slower than the guest: ~150 pages dirtied meanwhile
        todo = hv.read_dirty_pages(source)
        rounds += 1
    hv.pause(source)
    hv.write_pages(target, hv.read_pages(source, todo + hv.read_dirty_pages(source)))
    assert rounds >= 2
    assert hv.memory_checksum(target) == hv.memory_checksum(source)


def test_written_pages_persist_until_the_guest_overwrites_them(state):
    hv = _sim(state)
    domid = hv.create_domain(_spec(cmdline="sim.dirty_rate=4000 sim.wss=64"))
    pages = [(pfn, bytes([pfn % 256]) * 4096) for pfn in range(hv.nr_pages(domid))]
    hv.write_pages(domid, pages)
    hv.close()
    hv = _sim(state)
    assert list(hv.read_pages(domid, range(len(pages)))) == pages
    assert os.path.getsize(state / "dom" / str(domid) / "pages") == len(pages) * 4096
    hv.enable_dirty_log(domid, True)
    hv.unpause(domid)
    time.sleep(0.05)
    hv.pause(domid)
    overwritten = set(hv.read_dirty_pages(domid))
    assert 0 < len(overwritten) <= 64
    for pfn, data in hv.read_pages(domid, range(len(pages))):
        assert (data == pages[pfn][1]) == (pfn not in overwritten)


def test_a_guest_s_own_pages_are_stored_as_generations(state, tmp_path):
    """A page arriving with exactly what the guest's own memory gives (migration, restore of
    the same guest) is kept as a generation number; any other page byte for byte, even one
    whose header claims to be the guest's."""
    source_hv, target_hv = _sim(state), _sim(tmp_path / "target")
    source = _start(source_hv, uid=FIXED_UUID, cmdline="sim.dirty_rate=5000")
    time.sleep(0.05)
    source_hv.pause(source)
    target = target_hv.create_domain(_spec(uid=FIXED_UUID))
    n = source_hv.nr_pages(source)
    own = dict(source_hv.read_pages(source, range(n)))
    forged = bytearray(own[3])
    forged[-1] ^= 1
    foreign = {3: bytes(forged), 5: b"x" * 4096}
    sent = {pfn: foreign.get(pfn, own[pfn]) for pfn in range(n)}
    target_hv.write_pages(target, sent.items())
    target_hv.close()
    target_hv = _sim(tmp_path / "target")
    assert dict(target_hv.read_pages(target, range(n))) == sent
    assert target_hv.memory_checksum(target) != source_hv.memory_checksum(source)
    stored = tmp_path / "target" / "dom" / str(target) / "pages"
    assert os.stat(stored).st_blocks * 512 <= 4 * 4096      # the two foreign pages, not n


@pytest.mark.parametrize("bad", [-1, "n", None, "7", 2.0])
def test_bad_pfns_are_refused_and_nothing_is_stored(hv, bad):
    domid = hv.create_domain(_spec())
    n = hv.nr_pages(domid)
    bad = n if bad == "n" else bad
    with pytest.raises(HypervisorError) as e:
        list(hv.read_pages(domid, [0, 1, bad]))
    assert e.value.errno == errno.EINVAL and repr(bad) in str(e.value)
    before = hv.memory_checksum(domid)
    with pytest.raises(HypervisorError) as e:
        hv.write_pages(domid, [(bad, b"x" * 4096)])
    assert e.value.errno == errno.EINVAL and hv.memory_checksum(domid) == before


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(1, 300), wss=st.integers(1, 300), k0=st.integers(0, 2000),
       span=st.integers(0, 700))
def test_dirty_pattern_closed_form_matches_replay(n, wss, k0, span):
    dmap = DirtyMap("a-uuid", n, wss)
    k1 = k0 + span
    counts = [0] * n
    written = set()
    for k in range(k1):
        pfn = dmap.pfn_at(k % dmap.wss)
        counts[pfn] += 1
        if k >= k0:
            written.add(pfn)
    assert [dmap.generation(p, k1) for p in range(n)] == counts
    assert set(dmap.dirtied(k0, k1)) == written
    assert len(list(dmap.dirtied(k0, k1))) == len(written)
    assert {p for p in range(n) if dmap.written_between(p, k0, k1)} == written


# -- events, the xend-sim command ------------------------------------------------------------
def test_wait_for_change_wakes_for_another_process(state):
    hv = _sim(state)
    domid = hv.create_domain(_spec())
    hv.wait_for_change(0)
    assert not hv.wait_for_change(0.1)
    other = subprocess.Popen([sys.executable, "-m", "xend.simcli", "--state-path", str(state),
                              "crash", str(domid)], cwd=REPO)
    assert hv.wait_for_change(10)
    other.wait(10)


def _simcli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xend.simcli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_xend_sim_crashes_a_guest_and_lists_domains(state):
    hv = _sim(state)
    domid = _start(hv, name="victim")
    done = _simcli("--state-path", str(state), "crash", str(domid))
    assert done.returncode == 0, done.stderr
    info = hv.domain_info(domid)
    assert info.crashed and info.shutdown_reason == SHUTDOWN_REASONS["crash"]
    assert "Kernel panic" in hv.read_console(domid).decode()
    listing = _simcli("--state-path", str(state), "list")
    assert listing.returncode == 0
    rows = {line.split()[1]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert rows["Domain-0"][0] == "0" and rows["victim"][4] == "----c-"


def test_xend_sim_reports_errors(state, tmp_path):
    _sim(state).close()
    done = _simcli("--state-path", str(state), "crash", "42")
    assert done.returncode == 1 and "domain 42: No such process" in done.stderr
    done = _simcli("--state-path", str(tmp_path / "nothing"), "list")
    assert done.returncode == 1 and "no simulated hypervisor state" in done.stderr
    assert not (tmp_path / "nothing" / "domains.json").exists()


def test_listing_many_domains_is_cheap(hv):
    hv.set_memory_target(0, 8 * 1024)
    for i in range(200):
        domid = hv.create_domain(_spec(mib=1))
        if i % 2:
            hv.unpause(domid)
    hv.list_domains()
    started = time.perf_counter()
    for _ in range(10):
        assert len(hv.list_domains()) == 201
    assert (time.perf_counter() - started) / 10 < 0.05
