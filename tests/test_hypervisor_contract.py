"""The Hypervisor contract: what every backend must do, as one checklist.

Parametrised over backends. ``simulated`` always runs; ``xenctrl`` runs only on a Xen host,
as root (it creates and destroys real domains). A third backend adds itself to BACKENDS.
"""
from __future__ import annotations

import errno
import os
import re
import time
import uuid

import pytest

from xend.errors import HypervisorError
from xend.hypervisor import detect_backend
from xend.hypervisor.base import (DOM0_UUID, PAGE_SIZE, SHUTDOWN_CRASH, SHUTDOWN_REASONS,
                                  DomainSpec, Hypervisor)

pytestmark = pytest.mark.timeout(60)

BACKENDS = ["simulated", "xenctrl"]
GUEST_MIB = 16
SHUTDOWN_DELAY = 0.1


def _open(backend: str, tmp_path) -> Hypervisor:
    if backend == "simulated":
        from xend.hypervisor.simulated import SimulatedHypervisor
        return SimulatedHypervisor(str(tmp_path / "sim"), host_memory_mib=1024, host_cpus=4,
                                   dom0_memory_mib=256, shutdown_delay=SHUTDOWN_DELAY)
    if detect_backend() != "xenctrl" or os.geteuid() != 0:
        pytest.skip("needs a Xen hypervisor and root")
    from xend.hypervisor.xenctrl import XenctrlHypervisor
    return XenctrlHypervisor()


@pytest.fixture(params=BACKENDS)
def hv(request, tmp_path):
    hypervisor = _open(request.param, tmp_path)
    before = {d.domid for d in hypervisor.list_domains()}
    yield hypervisor
    for info in hypervisor.list_domains():
        if info.domid not in before:
            hypervisor.destroy(info.domid)
    hypervisor.close()


@pytest.fixture
def new_domain(hv):
    """Create a guest: new_domain(mib=..., vcpus=..., cmdline=...) -> domid."""
    def create(mib: int = GUEST_MIB, vcpus: int = 1, cmdline: str = "",
               maxmem_mib: int = 0) -> int:
        spec = DomainSpec(name=f"contract-{uuid.uuid4().hex[:8]}", uuid=str(uuid.uuid4()),
                          memory_kib=mib * 1024, maxmem_kib=(maxmem_mib or mib) * 1024,
                          vcpus=vcpus, cmdline=cmdline)
        return hv.create_domain(spec)
    return create


def _raises(code: int, func, *args):
    with pytest.raises(HypervisorError) as caught:
        func(*args)
    assert caught.value.errno == code, caught.value
    return caught.value


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- host ------------------------------------------------------------------------------------
def test_backend_has_a_name(hv):
    assert hv.name in ("simulated", "xenctrl") or (hv.name and hv.name != "abstract")


def test_physinfo_is_consistent(hv):
    info = hv.physinfo()
    assert info.nr_cpus >= 1 and info.nr_nodes >= 1 and info.cpu_khz > 0
    assert 0 <= info.free_kib <= info.total_kib
    assert re.fullmatch(r"[0-9a-f]{8}(:[0-9a-f]{8}){7}", info.hw_caps)


def test_version_reports_xen(hv):
    version = hv.version()
    assert version.major >= 3 and version.minor >= 0
    assert version.pagesize == PAGE_SIZE
    assert "x86_64" in version.capabilities
    assert isinstance(version.extra, str) and isinstance(version.changeset, str)


def test_console_ring_is_text_and_clear_empties_it(hv):
    ring = hv.read_console_ring()
    assert isinstance(ring, str) and ring
    hv.read_console_ring(clear=True)
    assert hv.read_console_ring() == ""


# -- domains ---------------------------------------------------------------------------------
def test_dom0_is_listed_first(hv):
    domains = hv.list_domains()
    assert domains[0].domid == 0 and domains[0].uuid == DOM0_UUID
    assert [d.domid for d in domains] == sorted(d.domid for d in domains)
    assert hv.domain_info(0).uuid == DOM0_UUID
    assert not hv.domain_info(0).paused and not hv.domain_info(0).shutdown


UNKNOWN = 0x7FEE
ON_UNKNOWN_DOMAIN = {
    "domain_info": lambda hv: hv.domain_info(UNKNOWN),
    "pause": lambda hv: hv.pause(UNKNOWN),
    "unpause": lambda hv: hv.unpause(UNKNOWN),
    "shutdown": lambda hv: hv.shutdown(UNKNOWN, 0),
    "destroy": lambda hv: hv.destroy(UNKNOWN),
    "set_max_memory": lambda hv: hv.set_max_memory(UNKNOWN, 65536),
    "set_memory_target": lambda hv: hv.set_memory_target(UNKNOWN, 65536),
    "set_vcpus_online": lambda hv: hv.set_vcpus_online(UNKNOWN, 1),
    "vcpu_info": lambda hv: hv.vcpu_info(UNKNOWN),
    "set_vcpu_affinity": lambda hv: hv.set_vcpu_affinity(UNKNOWN, 0, [0]),
    "sched_credit_get": lambda hv: hv.sched_credit_get(UNKNOWN),
    "sched_credit_set": lambda hv: hv.sched_credit_set(UNKNOWN, 256, 0),
    "nr_pages": lambda hv: hv.nr_pages(UNKNOWN),
}


@pytest.mark.parametrize("operation", sorted(ON_UNKNOWN_DOMAIN))
def test_unknown_domain_is_esrch(hv, operation):
    _raises(errno.ESRCH, ON_UNKNOWN_DOMAIN[operation], hv)


def test_create_leaves_the_domain_paused_and_takes_its_memory(hv, new_domain):
    free = hv.physinfo().free_kib
    domid = new_domain(vcpus=2)
    info = hv.domain_info(domid)
    assert domid > 0 and info.paused and not info.shutdown and not info.running
    assert info.mem_kib == GUEST_MIB * 1024 == info.maxmem_kib
    assert info.online_vcpus == 2 and info.max_vcpu_id == 1
    assert hv.physinfo().free_kib == free - GUEST_MIB * 1024
    assert domid in [d.domid for d in hv.list_domains()]
    assert hv.domain_info(domid).state_string == "--p---"


def test_create_keeps_the_uuid(hv):
    wanted = str(uuid.uuid4())
    domid = hv.create_domain(DomainSpec(name="u", uuid=wanted, memory_kib=4096,
                                        maxmem_kib=4096))
    assert hv.domain_info(domid).uuid == wanted


def test_create_beyond_free_memory_is_enomem(hv, new_domain):
    free_mib = hv.physinfo().free_kib // 1024
    before = len(hv.list_domains())
    _raises(errno.ENOMEM, new_domain, free_mib + 1)
    assert len(hv.list_domains()) == before


def test_bad_create_arguments_are_einval(hv):
    _raises(errno.EINVAL, hv.create_domain,
            DomainSpec(name="x", uuid="not-a-uuid", memory_kib=4096, maxmem_kib=4096))
    _raises(errno.EINVAL, hv.create_domain,
            DomainSpec(name="x", uuid=str(uuid.uuid4()), memory_kib=8192, maxmem_kib=4096))


def test_unpause_runs_and_pause_pauses(hv, new_domain):
    domid = new_domain()
    hv.unpause(domid)
    info = hv.domain_info(domid)
    assert not info.paused and (info.running or info.blocked)
    hv.pause(domid)
    info = hv.domain_info(domid)
    assert info.paused and not info.running and not info.blocked


def test_pauses_are_counted(hv, new_domain):
    domid = new_domain()
    hv.unpause(domid)                               # a new domain holds one pause
    _raises(errno.EINVAL, hv.unpause, domid)        # nothing left to undo
    hv.pause(domid)
    hv.pause(domid)
    hv.unpause(domid)
    assert hv.domain_info(domid).paused
    hv.unpause(domid)
    assert not hv.domain_info(domid).paused


def test_cpu_time_advances_while_running_only(hv, new_domain):
    domid = new_domain()
    hv.unpause(domid)
    first = hv.domain_info(domid).cpu_time_ns
    assert _wait_until(lambda: hv.domain_info(domid).cpu_time_ns > first)
    hv.pause(domid)
    frozen = hv.domain_info(domid).cpu_time_ns
    time.sleep(0.05)
    assert hv.domain_info(domid).cpu_time_ns == frozen


@pytest.mark.parametrize("reason", sorted(SHUTDOWN_REASONS.values()))
def test_shutdown_stops_the_domain_with_its_reason(hv, new_domain, reason):
    domid = new_domain()
    hv.unpause(domid)
    hv.shutdown(domid, reason)
    info = hv.domain_info(domid)
    assert info.shutdown_reason == reason and not info.running and not info.blocked
    if reason == SHUTDOWN_CRASH:
        assert info.crashed and not info.shutdown and info.state_string == "----c-"
    else:
        assert info.shutdown and not info.crashed and info.state_string == "---s--"


def test_bad_shutdown_reason_is_einval(hv, new_domain):
    _raises(errno.EINVAL, hv.shutdown, new_domain(), 99)


def test_destroy_returns_the_memory_and_forgets_the_domain(hv, new_domain):
    free = hv.physinfo().free_kib
    domid = new_domain()
    hv.unpause(domid)
    hv.destroy(domid)
    assert hv.physinfo().free_kib == free
    assert domid not in [d.domid for d in hv.list_domains()]
    _raises(errno.ESRCH, hv.domain_info, domid)


def test_domids_are_not_reused_at_once(hv, new_domain):
    first = new_domain()
    hv.destroy(first)
    assert new_domain() > first


def test_set_max_memory(hv, new_domain):
    domid = new_domain()
    hv.set_max_memory(domid, 2 * GUEST_MIB * 1024)
    assert hv.domain_info(domid).maxmem_kib == 2 * GUEST_MIB * 1024
    _raises(errno.EINVAL, hv.set_max_memory, domid, -1)


def test_memory_target_balloons_within_free_memory(hv, new_domain):
    domid = new_domain(maxmem_mib=4 * GUEST_MIB)
    free = hv.physinfo().free_kib
    hv.set_memory_target(domid, 2 * GUEST_MIB * 1024)
    assert _wait_until(lambda: hv.domain_info(domid).mem_kib == 2 * GUEST_MIB * 1024)
    assert hv.physinfo().free_kib == free - GUEST_MIB * 1024
    hv.set_memory_target(domid, GUEST_MIB * 1024 // 2)
    assert _wait_until(lambda: hv.domain_info(domid).mem_kib == GUEST_MIB * 1024 // 2)
    hv.set_max_memory(domid, 1 << 40)
    _raises(errno.ENOMEM, hv.set_memory_target, domid, hv.physinfo().free_kib * 2)


def test_ballooning_dom0_down_frees_memory(hv):
    dom0 = hv.domain_info(0).mem_kib
    free = hv.physinfo().free_kib
    hv.set_memory_target(0, dom0 - 8192)
    assert _wait_until(lambda: hv.physinfo().free_kib == free + 8192)
    hv.set_memory_target(0, dom0)
    assert _wait_until(lambda: hv.physinfo().free_kib == free)


def test_vcpus_online_and_vcpu_info(hv, new_domain):
    domid = new_domain(vcpus=3)
    hv.unpause(domid)
    vcpus = hv.vcpu_info(domid)
    assert [v.number for v in vcpus] == [0, 1, 2] and all(v.online for v in vcpus)
    nr_cpus = hv.physinfo().nr_cpus
    assert all(0 <= v.cpu < nr_cpus and v.cpu in v.affinity for v in vcpus)
    hv.set_vcpus_online(domid, 1)
    assert _wait_until(lambda: hv.domain_info(domid).online_vcpus == 1)
    assert [v.online for v in hv.vcpu_info(domid)] == [True, False, False]
    _raises(errno.EINVAL, hv.set_vcpus_online, domid, 4)
    _raises(errno.EINVAL, hv.set_vcpus_online, domid, 0)


def test_vcpu_affinity(hv, new_domain):
    domid = new_domain(vcpus=2)
    nr_cpus = hv.physinfo().nr_cpus
    assert hv.vcpu_info(domid)[0].affinity == list(range(nr_cpus))
    hv.set_vcpu_affinity(domid, 1, [0])
    assert [v.affinity for v in hv.vcpu_info(domid)] == [list(range(nr_cpus)), [0]]
    _raises(errno.EINVAL, hv.set_vcpu_affinity, domid, 0, [nr_cpus])
    _raises(errno.EINVAL, hv.set_vcpu_affinity, domid, 0, [])


def test_credit_scheduler(hv, new_domain):
    domid = new_domain()
    assert hv.sched_credit_get(domid) == (256, 0)
    hv.sched_credit_set(domid, 512, 50)
    assert hv.sched_credit_get(domid) == (512, 50)
    _raises(errno.EINVAL, hv.sched_credit_set, domid, 0, 0)
    _raises(errno.EINVAL, hv.sched_credit_set, domid, 256, -1)


# -- store -----------------------------------------------------------------------------------
def test_store_roundtrip(hv):
    base = f"/tool/contract-{uuid.uuid4().hex[:8]}"
    assert hv.store_read(base) is None
    assert hv.store_list(base) == []
    hv.store_write(f"{base}/a/x", "1")
    hv.store_write(f"{base}/b", "two words")
    assert hv.store_read(f"{base}/a/x") == "1"
    assert hv.store_read(f"{base}/a") == ""
    assert hv.store_list(base) == ["a", "b"]
    hv.store_rm(f"{base}/a")
    assert hv.store_read(f"{base}/a/x") is None and hv.store_list(base) == ["b"]
    hv.store_rm(base)
    assert hv.store_read(f"{base}/b") is None
    hv.store_rm(base)       # removing what is gone is fine


def test_destroy_removes_the_domain_store(hv, new_domain):
    domid = new_domain()
    hv.store_write(f"/local/domain/{domid}/name", "x")
    assert str(domid) in hv.store_list("/local/domain")
    hv.destroy(domid)
    assert hv.store_read(f"/local/domain/{domid}/name") is None
    assert str(domid) not in hv.store_list("/local/domain")


@pytest.mark.parametrize("reason", ["poweroff", "reboot", "halt", "suspend"])
def test_guest_answers_a_shutdown_request(hv, new_domain, reason):
    domid = new_domain()
    hv.unpause(domid)
    hv.store_write(f"/local/domain/{domid}/control/shutdown", reason)
    assert _wait_until(lambda: hv.domain_info(domid).shutdown, timeout=10)
    assert hv.domain_info(domid).shutdown_reason == SHUTDOWN_REASONS[reason]


# -- memory image ----------------------------------------------------------------------------
def test_memory_image_roundtrip(hv, new_domain):
    source, target = new_domain(mib=4), new_domain(mib=4)
    pages = hv.nr_pages(source)
    assert pages == 1024 == hv.nr_pages(target)
    image = list(hv.read_pages(source, range(pages)))
    assert [pfn for pfn, _ in image] == list(range(pages))
    assert all(len(data) == PAGE_SIZE for _, data in image)
    hv.write_pages(target, image)
    assert hv.memory_checksum(target) == hv.memory_checksum(source)
    assert hv.memory_checksum(source) == hv.memory_checksum(source)     # paused: stable
    _raises(errno.EINVAL, lambda: list(hv.read_pages(source, [pages])))
    _raises(errno.EINVAL, hv.write_pages, target, [(0, b"short")])


def test_dirty_log_reports_pages_written_by_a_running_guest(hv, new_domain):
    domid = new_domain(mib=4)
    _raises(errno.EINVAL, hv.read_dirty_pages, domid)
    hv.enable_dirty_log(domid, True)
    hv.unpause(domid)
    dirty: set = set()
    assert _wait_until(lambda: dirty.update(hv.read_dirty_pages(domid)) or len(dirty) > 0)
    assert all(0 <= pfn < hv.nr_pages(domid) for pfn in dirty)
    hv.pause(domid)
    hv.read_dirty_pages(domid)
    assert hv.read_dirty_pages(domid) == []
    hv.enable_dirty_log(domid, False)


# -- console and events ----------------------------------------------------------------------
def test_read_console_consumes_output(hv, new_domain):
    domid = new_domain()
    assert hv.read_console(domid) == b""
    hv.unpause(domid)
    assert _wait_until(lambda: hv.read_console(domid) != b"")
    hv.pause(domid)
    hv.read_console(domid)
    assert hv.read_console(domid) == b""


def test_wait_for_change(hv, new_domain):
    domid = new_domain()
    hv.wait_for_change(0)
    started = time.monotonic()
    assert hv.wait_for_change(0.2) is False
    assert time.monotonic() - started >= 0.15
    hv.destroy(domid)
    assert hv.wait_for_change(2) is True
