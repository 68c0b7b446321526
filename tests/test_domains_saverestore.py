"""Save/restore (§7.3, §7.5): the image format, checksums, errors, live saves, and listings
that do not wait behind a long save."""
from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
import struct
import threading
import time

import pytest

from xend import sxp
from xend.domains import image
from xend.domains.image import SIGNATURE, read_image, write_image, writer_checksum
from xend.errors import VMBadState, VmError, XendConfigError, XendError
from xend.hypervisor.base import PAGE_SIZE

from tests.test_domains_support import child, names, started, vm
from tests.test_domains_support import env as shared_env

env = shared_env      # the fixture, shared by the domain test modules

pytestmark = pytest.mark.timeout(60)


def pages_digest(pages) -> str:
    """sha256 of a memory image given as (pfn, data) records; the last copy of a pfn wins."""
    mem = {}
    for pfn, data in pages:
        mem[pfn] = data
    digest = hashlib.sha256()
    for pfn in sorted(mem):
        digest.update(mem[pfn])
    return digest.hexdigest()


def save_bytes(env, name, **kw) -> bytes:
    buf = io.BytesIO()
    env.reg.save_to_stream(name, buf, **kw)
    return buf.getvalue()


# -- the file format -----------------------------------------------------------------------------
def test_image_layout(env):
    domid = started(env.reg, vm("g1", memory=4))
    data = save_bytes(env, "g1", keep_running=True)
    assert data[:16] == SIGNATURE
    (length,) = struct.unpack(">i", data[16:20])
    config = sxp.from_string(data[20:20 + length].decode("latin-1"))
    assert config[0] == "domain" and sxp.child_value(config, "name") == "g1"
    assert "domid" not in [k[0] for k in config[1:]]
    rest = data[20 + length:]
    assert rest[:8] == b"XendPag3"
    assert struct.unpack(">IQ4s", rest[8:24]) == (PAGE_SIZE, 4 * 256, writer_checksum())
    # four batches of 256 pages: count, 256 pfns, 256 pages; then a count of 0, the record
    # count and the checksum
    batch = 4 + 256 * (8 + PAGE_SIZE)
    assert len(rest) == 24 + 4 * batch + 4 + 8 + 8
    assert struct.unpack(">I4Q", rest[24:24 + 36]) == (256, 0, 1, 2, 3)
    assert struct.unpack(">I", rest[24 + batch:28 + batch]) == (256,)
    assert struct.unpack(">IQ", rest[-20:-8]) == (0, 1024)
    cfg, pages = read_image(io.BytesIO(data))
    assert sxp.child_value(cfg, "uuid") == child(env.reg.domain("g1"), "uuid")
    assert pages.nr_pages == 1024
    assert sum(1 for _ in pages) == 1024 and pages.finished
    assert child(env.reg.domain("g1"), "domid") == domid          # checkpoint: still there


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:10], "not a valid guest state file: signature read"),
    (lambda d: b"LinuxGuestRecorX" + d[16:], "not a valid guest state file: no guest state "
                                              "signature"),
    (lambda d: d[:18], "not a valid guest state file: config size read"),
    (lambda d: d[:30], "not a valid guest state file: config read"),
])
def test_header_errors(env, damage, message):
    started(env.reg, vm("g1", memory=4))
    data = save_bytes(env, "g1", keep_running=True)
    with pytest.raises(XendError) as e:
        read_image(io.BytesIO(damage(data)))
    assert e.value.message == message


def test_damaged_memory_is_refused(env):
    started(env.reg, vm("g1", memory=4))
    data = bytearray(save_bytes(env, "g1", keep_running=True))
    data[-100] ^= 0xFF
    cfg, pages = read_image(io.BytesIO(bytes(data)))
    with pytest.raises(XendError, match="checksum mismatch"):
        pages.drain()
    cfg, pages = read_image(io.BytesIO(bytes(data[:-5000])))
    with pytest.raises(XendError, match="truncated"):
        pages.drain()


def test_image_of_an_earlier_format_is_refused(env):
    """An image whose memory section is of an earlier layout ("XendPag2": a pfn before each
    page, CRC-32) is refused as unknown, not misread."""
    started(env.reg, vm("g1", memory=4))
    data = save_bytes(env, "g1", keep_running=True)
    (length,) = struct.unpack(">i", data[16:20])
    at = 20 + length
    old = data[:at] + b"XendPag2" + struct.pack(">IQ", PAGE_SIZE, 1024) + data[at + 24:]
    cfg, pages = read_image(io.BytesIO(old))
    with pytest.raises(XendError, match="unknown memory image format"):
        pages.drain()


def test_crc32_image_of_a_host_without_xxhash(env, monkeypatch):
    """A host without the xxhash module writes CRC-32 (and says so in the header); any host
    reads it, and damage is found as with XXH3."""
    started(env.reg, vm("g1", memory=4))
    monkeypatch.setattr(image, "writer_checksum", lambda: b"cr32")
    data = save_bytes(env, "g1", keep_running=True)
    monkeypatch.undo()
    assert b"XendPag3" + struct.pack(">IQ", PAGE_SIZE, 1024) + b"cr32" in data
    _, pages = read_image(io.BytesIO(data))
    assert sum(1 for _ in pages) == 1024 and pages.finished and len(pages.checksum) == 8
    damaged = bytearray(data)
    damaged[-5000] ^= 1
    _, pages = read_image(io.BytesIO(bytes(damaged)))
    with pytest.raises(XendError, match="checksum mismatch"):
        pages.drain()


def test_batches_larger_than_a_reader_takes_are_refused(env):
    started(env.reg, vm("g1", memory=8))
    data = save_bytes(env, "g1", keep_running=True)
    (length,) = struct.unpack(">i", data[16:20])
    at = 20 + length + 24
    big = data[:at] + struct.pack(">I", image.MAX_BATCH + 1) + data[at + 4:]
    _, pages = read_image(io.BytesIO(big))
    with pytest.raises(XendError, match="a batch of 1025 pages"):
        pages.drain()


@pytest.mark.parametrize("sizes", [[1 << 20], [1, 7, 4103, 4105, 65536, 3, 12, 8]],
                         ids=["large", "cut-anywhere"])
def test_stream_over_a_socket_kept_open(env, sizes):
    """A migration sender keeps the connection open after the image, waiting for the verdict:
    the reader takes the pages in large reads, completes records a read cut wherever it cut
    them, and finishes at the end marker without waiting for more."""
    started(env.reg, vm("g1", memory=4))
    data = save_bytes(env, "g1", keep_running=True)
    a, b = socket.socketpair()
    done = threading.Event()

    def send() -> None:
        view, i = memoryview(data), 0
        while view:
            n = sizes[i % len(sizes)]
            a.sendall(view[:n])
            view, i = view[n:], i + 1
        done.wait(30)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        b.settimeout(20)
        _, pages = read_image(b.makefile("rb"))
        received = {pfn: bytes(page) for pfn, page in pages}
        assert pages.finished and pages.records == len(received) == 4 * 256
        assert pages_digest(received.items()) == pages_digest(read_image(io.BytesIO(data))[1])
    finally:
        done.set()
        sender.join(10)
        a.close()
        b.close()


# -- save / restore ------------------------------------------------------------------------------
def test_save_restore_keeps_memory_byte_for_byte(env, tmp_path):
    domid = started(env.reg, vm("g1", memory=8, vcpus=2, cpu_weight=512))
    path = tmp_path / "g1.save"
    env.reg.domain_save("g1", str(path))
    assert names(env.reg) == ["Domain-0"]
    assert [i.domid for i in env.hv.list_domains()] == [0]
    with open(path, "rb") as f:
        _, pages = read_image(f)
        saved = pages_digest(pages)
    rec = env.reg.domain_restore(str(path), True)
    new = child(rec, "domid")
    assert new != domid and child(rec, "status") == 1
    assert env.hv.memory_checksum(new) == saved
    assert child(rec, "vcpus") == 2 and child(rec, "cpu_weight") == 512
    assert env.hv.sched_credit_get(new) == (512, 0)
    env.reg.domain_unpause(new)
    assert child(env.reg.domain("g1"), "status") == 2


def test_checkpoint_keeps_domain_running(env, tmp_path):
    domid = started(env.reg, vm("g1", memory=4))
    env.reg.domain_save("g1", str(tmp_path / "c"), True)
    rec = env.reg.domain("g1")
    assert child(rec, "domid") == domid and child(rec, "status") == 2


def test_restore_of_running_domain_refused(env, tmp_path):
    domid = started(env.reg, vm("g1", memory=4))
    env.reg.domain_save("g1", str(tmp_path / "c"), True)
    with pytest.raises(VmError) as e:
        env.reg.domain_restore(str(tmp_path / "c"))
    assert e.value.message == f"Domain 'g1' already exists with ID '{domid}'"
    assert len(env.hv.list_domains()) == 2


def test_save_restore_errors(env, tmp_path):
    started(env.reg, vm("g1", memory=4))
    with pytest.raises(XendError) as e:
        env.reg.domain_save("g1", str(tmp_path / "nodir" / "x"))
    assert e.value.message == ("can't write guest state file %s: No such file or directory"
                               % (tmp_path / "nodir" / "x"))
    with pytest.raises(XendError) as e:
        env.reg.domain_restore(str(tmp_path / "missing"))
    assert e.value.message == ("can't read guest state file %s: No such file or directory"
                               % (tmp_path / "missing"))
    (tmp_path / "junk").write_bytes(b"0123456789abcdef0123")
    with pytest.raises(XendError) as e:
        env.reg.domain_restore(str(tmp_path / "junk"))
    assert e.value.message == "not a valid guest state file: no guest state signature"
    env.reg.domain_pause("g1")
    with pytest.raises(VMBadState, match="Domain is not running"):
        env.reg.domain_save("g1", str(tmp_path / "p"))


def test_failed_restore_leaves_nothing(env, tmp_path):
    started(env.reg, vm("g1", memory=4))
    env.reg.domain_save("g1", str(tmp_path / "s"))
    data = bytearray((tmp_path / "s").read_bytes())
    data[-40] ^= 1                                          # the record count
    (tmp_path / "bad").write_bytes(bytes(data))
    free = env.hv.physinfo().free_kib
    with pytest.raises(XendError, match="checksum mismatch"):
        env.reg.domain_restore(str(tmp_path / "bad"))
    assert names(env.reg) == ["Domain-0"]
    assert [i.domid for i in env.hv.list_domains()] == [0]
    assert env.hv.physinfo().free_kib == free
    env.reg.domain_restore(str(tmp_path / "s"))            # the good one still restores


def test_restore_with_bad_config_refused(env, tmp_path):
    config = sxp.to_string(["domain", ["name", "x"], ["memory", "0"]]).encode()
    blob = SIGNATURE + struct.pack(">i", len(config)) + config
    (tmp_path / "f").write_bytes(blob)
    with pytest.raises(XendConfigError):
        env.reg.domain_restore(str(tmp_path / "f"))


def test_non_migratable_domain_not_restored(env, tmp_path):
    started(env.reg, vm("g1", memory=4, nomigrate=1))
    env.reg.domain_save("g1", str(tmp_path / "s"))
    with pytest.raises(XendError, match="cannot restore non-migratable domain"):
        env.reg.domain_restore(str(tmp_path / "s"))
    assert names(env.reg) == ["Domain-0"]


def test_save_failure_resumes_domain(env, caplog):
    caplog.set_level(logging.ERROR)
    domid = started(env.reg, vm("g1", memory=4))

    class Broken(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(32, "Broken pipe")

    with pytest.raises(XendError):
        env.reg.save_to_stream("g1", Broken(), migrating=True)
    assert f"Save failed on domain g1 ({domid}) - resuming." in caplog.text
    rec = env.reg.domain("g1")
    assert child(rec, "status") == 2 and child(rec, "name") == "g1"


def test_stream_functions_for_relocation(env):
    domid = started(env.reg, vm("g1", memory=4))
    steps = []
    data = save_bytes(env, "g1", migrating=True, node=1, step=steps.append)
    assert steps == [1, 2, 3]
    cfg, _ = read_image(io.BytesIO(data))
    keys = [k[0] for k in cfg[1:]]
    assert keys[keys.index("vcpus") + 1] == "node"
    assert names(env.reg) == ["Domain-0"]
    dom = env.reg.restore_from_stream(io.BytesIO(data), relocating=True, paused=True)
    assert dom.name == "g1" and dom.domid != domid
    assert env.hv.domain_info(dom.domid).paused
    env.reg.unpause_restored(dom)
    assert child(env.reg.domain("g1"), "status") == 2
    env.reg.discard_restored(dom)
    assert names(env.reg) == ["Domain-0"]


def test_received_domain_can_become_managed(env):
    started(env.reg, vm("g1", memory=4))
    data = save_bytes(env, "g1", migrating=True)
    dom = env.reg.restore_from_stream(io.BytesIO(data), relocating=True, paused=False)
    env.reg.register_managed(dom)
    assert (env.tmp / "domains" / dom.uuid / "config.sxp").exists()
    env.reg.domain_destroy("g1")
    assert names(env.reg, "halted") == ["g1"]


def test_relocating_restore_skips_duplicate_check(env):
    started(env.reg, vm("g1", memory=4))
    data = save_bytes(env, "g1", keep_running=True)
    env.reg.domain_setName("g1", "migrating-g1")      # what a localhost migration does
    dom = env.reg.restore_from_stream(io.BytesIO(data), relocating=True, paused=False)
    assert sorted(names(env.reg)) == ["Domain-0", "g1", "migrating-g1"]
    assert child(env.reg.domain("g1"), "domid") == dom.domid


# -- live ----------------------------------------------------------------------------------------
def test_live_save_converges_and_restores_the_final_memory(env, caplog):
    caplog.set_level(logging.INFO)
    domid = started(env.reg, vm("g1", memory=16, args="sim.dirty_rate=3000 sim.wss=300"))
    buf = io.BytesIO()
    stats = env.reg.save_to_stream("g1", buf, live=True, keep_running=True)
    assert stats.pages > 16 * 256                # the first pass plus dirty pages
    assert stats.final_pages <= 300
    assert re.search(r"Live save of domain %d: \d+ pages in \d+ rounds; final pause "
                     r"\d+\.\d{3} s" % domid, caplog.text)
    env.reg.domain_destroy("g1")
    dom = env.reg.restore_from_stream(io.BytesIO(buf.getvalue()), paused=True)
    _, pages = read_image(io.BytesIO(buf.getvalue()))
    assert env.hv.memory_checksum(dom.domid) == pages_digest(pages)


def test_live_write_image_sends_dirty_rounds(env):
    # the guest dirties pages at most as fast as it has pages per second: big enough that
    # its first pass (~10 ms) leaves more than LIVE_SMALL_SET pages dirty
    domid = started(env.reg, vm("g1", memory=128, args="sim.dirty_rate=32768 sim.wss=2000"))
    hv = env.hv
    out = io.BytesIO()
    stats = write_image(hv, ["domain", ["name", "g1"]], domid, out, live=True)
    assert hv.domain_info(domid).paused
    assert stats.rounds >= 1 and stats.pages > 32768
    cfg, pages = read_image(io.BytesIO(out.getvalue()))
    assert pages_digest(pages) == hv.memory_checksum(domid)


# -- listings never wait behind a save ------------------------------------------------------------
def test_listing_not_blocked_during_a_long_save(env):
    started(env.reg, vm("g1", memory=8))
    started(env.reg, vm("g2", memory=4))
    release = threading.Event()
    entered = threading.Event()

    class Stalling(io.BytesIO):
        def write(self, b):
            if len(self.getvalue()) > 100000 and not release.is_set():
                entered.set()
                release.wait(20)
            return super().write(b)

    errors = []

    def save():
        try:
            env.reg.save_to_stream("g1", Stalling())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=save)
    t.start()
    try:
        assert entered.wait(10)
        start = time.monotonic()
        assert names(env.reg) == ["Domain-0", "g1", "g2"]
        assert len(env.reg.domains_with_state(True, "all", True)) == 3
        assert child(env.reg.domain("g1"), "state") == "--p---"
        env.reg.domain_pause("g2")                  # other domains are not held up either
        env.reg.domain_unpause("g2")
        env.reg.domain_create(vm("g3", memory=4))
        progress = env.reg.progress()
        assert time.monotonic() - start < 2.0
        assert len(progress) == 1 and progress[0]["operation"] == "save"
        assert progress[0]["domain"] == "g1" and int(progress[0]["done"]) > 100000
        assert int(progress[0]["total"]) >= int(progress[0]["done"])
    finally:
        release.set()
        t.join(20)
    assert not errors
    assert names(env.reg) == ["Domain-0", "g2", "g3"]
    assert env.reg.progress() == []

