"""Ballooning dom0 to make room (§8.8): the arithmetic, the floor, the original messages,
and nothing half-made on failure."""
from __future__ import annotations

import io

import pytest

from xend.domains.balloon import BalloonPolicy, free_memory
from xend.errors import VmError
from xend.hypervisor.base import DomainInfo, PhysInfo

from tests.test_domains_support import Env, child, make_opts, names, started, vm

pytestmark = pytest.mark.timeout(60)

MIB = 1024


def host(tmp_path, **opts):
    """A 2048 MiB host whose dom0 has 1536 MiB: 512 MiB free."""
    return Env(tmp_path, make_opts(tmp_path, simulated_host_memory=2048,
                                   simulated_dom0_memory=1536, **opts))


def snapshot(e):
    return ([(i.domid, i.mem_kib) for i in e.hv.list_domains()], names(e.reg),
            e.hv.physinfo().free_kib)


def test_no_ballooning_when_disabled(tmp_path):
    e = host(tmp_path)                       # dom0-min-mem 0: ballooning off
    try:
        before = snapshot(e)
        with pytest.raises(VmError) as err:
            e.reg.domain_create(vm("big", memory=1024))
        assert err.value.message == (
            "Not enough free memory and enable-dom0-ballooning is False, so I cannot release "
            "any more.  I need 1048576 KiB but only have 524288.")
        assert snapshot(e) == before
        e.reg.domain_create(vm("fits", memory=512))      # what is free can be used
    finally:
        e.close()


def test_dom0_shrinks_by_the_shortfall(tmp_path):
    e = host(tmp_path, dom0_min_mem=512)
    try:
        e.reg.domain_create(vm("big", memory=1024))
        assert e.hv.domain_info(0).mem_kib == 1024 * MIB            # 1536 - (1024 - 512)
        assert child(e.reg.domain(0), "memory") == 1024
        assert e.hv.store_read("/local/domain/0/memory/target") == str(1024 * MIB)
        assert e.hv.physinfo().free_kib == 0
    finally:
        e.close()


def test_dom0_shrinks_down_to_exactly_the_floor(tmp_path):
    e = host(tmp_path, dom0_min_mem=1024)
    try:
        e.reg.domain_create(vm("big", memory=1024))
        assert e.hv.domain_info(0).mem_kib == 1024 * MIB
    finally:
        e.close()


def test_never_below_the_floor(tmp_path):
    e = host(tmp_path, dom0_min_mem=1024)
    try:
        before = snapshot(e)
        with pytest.raises(VmError) as err:
            e.reg.domain_create(vm("huge", memory=1536))
        assert err.value.message == (
            "I need 1572864 KiB, but dom0_min_mem is 1048576 and shrinking to 1048576 KiB "
            "would leave only 1048576 KiB free.")
        assert snapshot(e) == before                 # dom0 untouched, nothing created
    finally:
        e.close()


def test_ballooning_can_be_disabled_explicitly(tmp_path):
    e = host(tmp_path, dom0_min_mem=512, enable_dom0_ballooning=False)
    try:
        with pytest.raises(VmError, match="enable-dom0-ballooning is False"):
            e.reg.domain_create(vm("big", memory=1024))
        assert e.hv.domain_info(0).mem_kib == 1536 * MIB
    finally:
        e.close()


def test_mem_set_balloons(tmp_path):
    e = host(tmp_path, dom0_min_mem=256)
    try:
        started(e.reg, vm("g1", memory=256, maxmem=1024))
        e.reg.domain_setMemoryTarget("g1", 768)                  # 512 more than it had
        assert e.hv.domain_info(0).mem_kib == 1280 * MIB
        assert e.hv.domain_info(child(e.reg.domain("g1"), "domid")).mem_kib == 768 * MIB
    finally:
        e.close()


def test_restore_balloons(tmp_path):
    e = host(tmp_path, dom0_min_mem=256)
    try:
        started(e.reg, vm("g1", memory=64))
        buf = io.BytesIO()
        e.reg.save_to_stream("g1", buf)
        e.reg.domain_create(vm("filler", memory=480))
        assert e.hv.physinfo().free_kib == 32 * MIB
        e.reg.restore_from_stream(io.BytesIO(buf.getvalue()))    # needs 64, has 32
        assert e.hv.domain_info(0).mem_kib == 1504 * MIB
        assert names(e.reg, "running") == ["Domain-0", "g1"]
    finally:
        e.close()


def test_dom0_that_does_not_balloon(tmp_path, monkeypatch):
    e = host(tmp_path, dom0_min_mem=512)
    try:
        targets = []
        monkeypatch.setattr(e.hv, "set_memory_target", lambda d, kib: targets.append((d, kib)))
        with pytest.raises(VmError) as err:
            e.reg.domain_create(vm("big", memory=1024))
        assert err.value.message == ("Not enough memory is available, and dom0 cannot be "
                                     "shrunk any further")
        assert targets == [(0, 1024 * MIB), (0, 1536 * MIB)]     # shrink, then given back
        assert names(e.reg) == ["Domain-0"]
    finally:
        e.close()


# -- the arithmetic with memory being scrubbed ---------------------------------------------------
class FakeHost:
    def __init__(self, free, scrub, dom0):
        self.free, self.scrub, self.dom0 = free, scrub, dom0

    def physinfo(self):
        return PhysInfo(nr_cpus=1, nr_nodes=1, cores_per_socket=1, threads_per_core=1,
                        cpu_khz=1, hw_caps="", virt_caps="", total_kib=1 << 30,
                        free_kib=self.free, scrub_kib=self.scrub)

    def domain_info(self, domid):
        return DomainInfo(domid=0, uuid="0", mem_kib=self.dom0)


def test_scrubbed_memory_is_waited_for_not_ballooned():
    hv = FakeHost(free=100 * MIB, scrub=200 * MIB, dom0=1000 * MIB)
    sleeps, targets = [], []

    def sleep(s):
        sleeps.append(s)
        hv.free, hv.scrub = hv.free + 100 * MIB, max(0, hv.scrub - 100 * MIB)

    free_memory(hv, 250 * MIB, BalloonPolicy(True, 0, sleep=sleep), targets.append)
    assert targets == []
    assert sleeps == pytest.approx([0.1, 0.2])


def test_shortfall_counts_scrubbed_memory():
    hv = FakeHost(free=100 * MIB, scrub=50 * MIB, dom0=1000 * MIB)
    targets = []

    def shrink(kib):
        targets.append(kib)
        hv.free += hv.dom0 - kib
        hv.dom0 = kib

    def sleep(s):
        hv.free, hv.scrub = hv.free + hv.scrub, 0       # Xen finishes scrubbing

    free_memory(hv, 400 * MIB, BalloonPolicy(True, 0, sleep=sleep), shrink)
    assert targets == [750 * MIB]               # 1000 - (400 - 100 - 50)
    assert hv.free == 400 * MIB
