"""Images of a hypervisor that moves domains as a stream of its own (real Xen: libxl's), as
xend frames and checks them: save, checkpoint and restore through the registry, a damaged
or cut image refused with nothing left, a stream of another format refused, the hypervisor
failing on either side. The hypervisor here is the simulated one speaking a stream (its
pages, in a format of its own); tests/xen does it with libxl."""
from __future__ import annotations

import io
import os
import struct

import pytest

from xend.domains import native_image
from xend.domains.image import write_image
from xend.domains.registry import DomainRegistry
from xend.errors import HypervisorError, XendError
from xend.hypervisor.base import PAGE_SIZE, DomainSpec
from xend.hypervisor.simulated import SimulatedHypervisor

from tests.test_domains_support import FAST, HOST_CPUS, HOST_MIB, make_opts, names, started, vm

pytestmark = pytest.mark.timeout(60)

HEAD = b"TESTSTREAM\n"


class StreamHypervisor(SimulatedHypervisor):
    """The simulated host, moving a domain as one stream: a header, its pages, an end."""
    image_kind = "stream"
    stream_format = "test-v1"

    def __init__(self, *a, fail_save_after: int = -1, fail_restore: bool = False, **kw):
        super().__init__(*a, **kw)
        self.fail_save_after = fail_save_after
        self.fail_restore = fail_restore
        self.resumed = 0

    def save_stream(self, domid: int, fd: int, live: bool) -> None:
        self.pause(domid)
        self.saved_checksum = self.memory_checksum(domid)
        os.write(fd, HEAD)
        for n, (pfn, data) in enumerate(self.read_pages(domid, range(self.nr_pages(domid)))):
            if n == self.fail_save_after:
                raise HypervisorError(5, "the save helper died")
            _write_all(fd, struct.pack(">Q", pfn) + bytes(data))
        _write_all(fd, struct.pack(">Q", 2 ** 64 - 1))

    def resume_saved(self, domid: int) -> None:
        self.resumed += 1
        super().resume_saved(domid)

    def restore_stream(self, spec, fd: int) -> int:
        f = os.fdopen(os.dup(fd), "rb")
        with f:
            if f.read(len(HEAD)) != HEAD:
                raise HypervisorError(22, "not a test stream")
            domid = self.create_domain(spec)
            try:
                pages = []
                while True:
                    (pfn,) = struct.unpack(">Q", f.read(8))
                    if pfn == 2 ** 64 - 1:
                        break
                    pages.append((pfn, f.read(PAGE_SIZE)))
                if self.fail_restore:
                    raise HypervisorError(5, "restore helper failed")
                self.write_pages(domid, pages)
            except BaseException:
                self.destroy(domid)
                raise
        return domid


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@pytest.fixture
def env(tmp_path):
    opts = make_opts(tmp_path)
    hv = StreamHypervisor(str(tmp_path / "sim"), host_memory_mib=HOST_MIB, host_cpus=HOST_CPUS)
    reg = DomainRegistry(opts, hv, **FAST, balloon_sleep=lambda s: None)
    reg.start()
    yield reg, hv
    reg.stop_events()
    reg._join_actions(10)
    hv.close()


def test_save_and_restore_carry_the_hypervisor_s_stream(env, tmp_path):
    reg, hv = env
    started(reg, vm("g1", memory=8))
    reg.domain_save("g1", str(tmp_path / "g1.img"))
    assert names(reg) == ["Domain-0"]
    data = (tmp_path / "g1.img").read_bytes()
    assert native_image.NATIVE_MAGIC + struct.pack(">I", 7) + b"test-v1" in data
    rec = reg.domain_restore(str(tmp_path / "g1.img"), True)
    new = [k[1] for k in rec[1:] if k[0] == "domid"][0]
    assert hv.memory_checksum(new) == hv.saved_checksum      # paused since its restore
    assert names(reg) == ["Domain-0", "g1"]


def test_a_checkpoint_keeps_the_domain_running(env, tmp_path):
    reg, hv = env
    domid = started(reg, vm("g1", memory=4))
    reg.domain_save("g1", str(tmp_path / "c.img"), True)
    assert hv.resumed == 1 and not hv.domain_info(domid).paused
    assert names(reg) == ["Domain-0", "g1"]


@pytest.mark.parametrize("damage", ["cut", "flip", "tail"])
def test_a_damaged_image_is_refused_and_leaves_nothing(env, tmp_path, damage):
    reg, hv = env
    started(reg, vm("g1", memory=4))
    reg.domain_save("g1", str(tmp_path / "g1.img"))
    data = bytearray((tmp_path / "g1.img").read_bytes())
    if damage == "cut":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data[-1] ^= 0xFF                        # the checksum itself
    (tmp_path / "bad.img").write_bytes(bytes(data))
    with pytest.raises(XendError, match="not a valid guest state file|Restore failed"):
        reg.domain_restore(str(tmp_path / "bad.img"))
    assert names(reg) == ["Domain-0"]
    assert [d.domid for d in hv.list_domains()] == [0]


def test_a_failing_save_resumes_the_domain_and_leaves_no_image(env, tmp_path):
    reg, hv = env
    domid = started(reg, vm("g1", memory=4))
    hv.fail_save_after = 100
    with pytest.raises(XendError, match="the save helper died"):
        reg.domain_save("g1", str(tmp_path / "g1.img"))
    assert hv.resumed == 1 and not hv.domain_info(domid).paused
    assert not (tmp_path / "g1.img").exists()
    assert names(reg) == ["Domain-0", "g1"]


def test_a_failing_restore_leaves_nothing(env, tmp_path):
    reg, hv = env
    started(reg, vm("g1", memory=4))
    reg.domain_save("g1", str(tmp_path / "g1.img"))
    hv.fail_restore = True
    with pytest.raises(XendError, match="restore helper failed"):
        reg.domain_restore(str(tmp_path / "g1.img"))
    assert names(reg) == ["Domain-0"]
    assert [d.domid for d in hv.list_domains()] == [0]


def test_images_of_the_other_kind_are_refused_clearly(env, tmp_path):
    """A stream of another format; pages saved on a host that moves pages."""
    reg, hv = env
    started(reg, vm("g1", memory=4))
    reg.domain_save("g1", str(tmp_path / "g1.img"))
    data = (tmp_path / "g1.img").read_bytes().replace(b"\x00\x00\x00\x07test-v1",
                                                      b"\x00\x00\x00\x07othr-v9")
    (tmp_path / "other.img").write_bytes(data)
    with pytest.raises(XendError, match="holds a othr-v9 stream, which this host's "
                                        "hypervisor .* cannot restore"):
        reg.domain_restore(str(tmp_path / "other.img"))
    assert names(reg) == ["Domain-0"]
    # and the other way round: an image of pages on this host
    pages_hv = SimulatedHypervisor(str(tmp_path / "sim2"), host_memory_mib=64, host_cpus=1)
    domid = pages_hv.create_domain(DomainSpec(name="p1", uuid="2c1f00b3-7e57-4e1d-9a5e-"
                                                              "000000000002",
                                              memory_kib=4096, maxmem_kib=4096))
    buf = io.BytesIO()
    write_image(pages_hv, ["domain", ["name", "p1"], ["memory", "4"]], domid, buf)
    (tmp_path / "pages.img").write_bytes(buf.getvalue())
    with pytest.raises(XendError, match="holds pages saved by xend"):
        reg.domain_restore(str(tmp_path / "pages.img"))
    assert names(reg) == ["Domain-0"]
