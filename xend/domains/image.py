"""The save/restore/migration image stream (reference §7.3), and the code that writes and
reads it. ``xm save`` files, managed checkpoints and migration all use it.

Layout::

    "LinuxGuestRecord"              16 ASCII bytes
    config length                   4 bytes, big-endian signed
    config                          the domain record, sxp.to_string, latin-1
    -- memory section (ours; the original's came from libxenguest's xc_save) --
    "XendPage"                      8 bytes: memory section magic
    page size                       4 bytes, big-endian unsigned (4096)
    page count                      8 bytes, big-endian unsigned: the domain's nr_pages
    records                         repeated: pfn (8 bytes big-endian) + page size bytes
                                    (a live save sends a pfn again when the guest
                                    rewrote it; the last copy wins)
    end marker                      pfn 0xFFFFFFFFFFFFFFFF
    record count                    8 bytes, big-endian: records before the end marker
    checksum                        32 bytes: SHA-256 over every record (pfn + data) in order

A reader verifies the record count and checksum when it reaches the end marker, so a
truncated or damaged stream is refused before the restored domain is unpaused.
"""
from __future__ import annotations

import hashlib
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple

from xend import sxp
from xend.errors import XendError
from xend.hypervisor.base import PAGE_SIZE, Hypervisor

log = logging.getLogger("xend.XendCheckpoint")

SIGNATURE = b"LinuxGuestRecord"
MEMORY_MAGIC = b"XendPage"
END_PFN = 0xFFFFFFFFFFFFFFFF
MAX_CONFIG = 16 * 1024 * 1024       # a record is a few KiB; refuse absurd lengths
BATCH = 256                         # pages read from the hypervisor per call

# live save: stop iterating when a round sends at most this many pages, or after this
# many rounds, or when the dirty set stops shrinking
LIVE_MAX_ROUNDS = 30
LIVE_SMALL_SET = 64

Progress = Callable[[int, int], None]       # (bytes done, bytes expected)
Step = Callable[[int], None]                # device migration step 1/2/3 (reference §7.7)

_PFN = struct.Struct(">Q")
_HEADER = struct.Struct(">8sIQ")


@dataclass
class SaveStats:
    pages: int = 0                  # page records written
    bytes: int = 0
    rounds: int = 0                 # live rounds after the first full pass
    final_pages: int = 0            # pages sent while the domain was paused (live)
    pause_seconds: float = 0.0      # time the domain was paused at the end (live)
    checksum: str = ""


class _Writer:
    def __init__(self, out: BinaryIO, total: int, progress: Optional[Progress]):
        self.out = out
        self.done = 0
        self.total = total
        self.progress = progress
        self.digest = hashlib.sha256()
        self.records = 0

    def raw(self, data: bytes) -> None:
        self.out.write(data)
        self.done += len(data)
        self._report()

    def _report(self) -> None:
        if self.progress:
            self.progress(self.done, max(self.total, self.done))

    def pages(self, hv: Hypervisor, domid: int, pfns: Iterable[int]) -> int:
        """Send the pages ``pfns``, a batch (one hypervisor read, one write) at a time."""
        pfns = list(pfns)
        for i in range(0, len(pfns), BATCH):
            chunks: List[bytes] = []
            for pfn, data in hv.read_pages(domid, pfns[i:i + BATCH]):
                if len(data) != PAGE_SIZE:
                    raise XendError(f"page {pfn} is {len(data)} bytes, not {PAGE_SIZE}")
                chunks.append(_PFN.pack(pfn))
                chunks.append(data)
            block = b"".join(chunks)
            self.digest.update(block)
            self.out.write(block)
            self.records += len(chunks) // 2
            self.done += len(block)
            self._report()
        return len(pfns)


def write_image(hypervisor: Hypervisor, domain_config_sxp: Any, domid: int, out: BinaryIO,
                live: bool = False, progress: Optional[Progress] = None,
                step: Optional[Step] = None) -> SaveStats:
    """Write the image of domain ``domid`` to ``out``; the domain is **paused** when this
    returns (or raises): the caller destroys it, or unpauses it for a checkpoint or after
    a failure.

    Non-live: pause, then send every page. Live: enable the dirty log, send every page while
    the guest runs, then rounds of the pages it dirtied meanwhile while that set shrinks
    (at most LIVE_MAX_ROUNDS), then pause and send the last dirty set; the final pause is
    measured and logged. ``step(n)`` is called after the config (1), once the guest is
    paused for good (2), and at the end (3), for device migration hooks.
    """
    hv = hypervisor
    config = sxp.to_string(domain_config_sxp).encode("utf-8")
    nr_pages = hv.nr_pages(domid)
    total = len(SIGNATURE) + 4 + len(config) + _HEADER.size + \
        nr_pages * (_PFN.size + PAGE_SIZE) + _PFN.size + 8 + 32
    w = _Writer(out, total, progress)
    stats = SaveStats()
    w.raw(SIGNATURE)
    w.raw(struct.pack(">i", len(config)))
    w.raw(config)
    if step:
        step(1)
    w.raw(_HEADER.pack(MEMORY_MAGIC, PAGE_SIZE, nr_pages))
    if not live:
        hv.pause(domid)
        if step:
            step(2)
        w.pages(hv, domid, range(nr_pages))
    else:
        paused_at = _live_pages(hv, domid, nr_pages, w, stats, step)
    w.raw(_PFN.pack(END_PFN))
    w.raw(struct.pack(">Q", w.records))
    w.raw(w.digest.digest())
    out.flush()
    if live:
        stats.pause_seconds = time.monotonic() - paused_at
        log.info("Live save of domain %d: %d pages in %d rounds; final pause %.3f s "
                 "(%d pages)", domid, w.records, stats.rounds, stats.pause_seconds,
                 stats.final_pages)
    if step:
        step(3)
    if progress:
        progress(w.done, w.done)
    stats.pages, stats.bytes, stats.checksum = w.records, w.done, w.digest.hexdigest()
    return stats


def _live_pages(hv: Hypervisor, domid: int, nr_pages: int, w: _Writer, stats: SaveStats,
                step: Optional[Step]) -> float:
    """The live rounds; returns the monotonic time at which the domain was paused."""
    hv.enable_dirty_log(domid, True)
    try:
        w.pages(hv, domid, range(nr_pages))
        previous = nr_pages
        pending: List[int] = []
        for _ in range(LIVE_MAX_ROUNDS):
            dirty = hv.read_dirty_pages(domid)
            if len(dirty) <= LIVE_SMALL_SET or len(dirty) >= previous:
                pending = dirty
                break
            w.total += len(dirty) * (_PFN.size + PAGE_SIZE)
            w.pages(hv, domid, dirty)
            stats.rounds += 1
            previous = len(dirty)
        hv.pause(domid)
        paused_at = time.monotonic()
        if step:
            step(2)
        final = sorted(set(pending) | set(hv.read_dirty_pages(domid)))
        w.total += len(final) * (_PFN.size + PAGE_SIZE)
        stats.final_pages = w.pages(hv, domid, final)
        return paused_at
    finally:
        try:
            hv.enable_dirty_log(domid, False)
        except Exception:  # noqa: BLE001 - the domain may be gone; nothing to stop then
            log.debug("disabling the dirty log of domain %d failed", domid, exc_info=True)


# -- reading --------------------------------------------------------------------------------------
def _read_exact(f: BinaryIO, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = f.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class PageStream:
    """Iterator of (pfn, page bytes) from an image's memory section; raises XendError on a
    damaged stream, and checks the record count and checksum at the end. The section header
    is read on first use (``nr_pages`` or iteration), so a caller can check the config
    before the memory arrives."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._nr_pages: Optional[int] = None
        self.page_size = PAGE_SIZE
        self.records = 0
        self.bytes = 0
        self.finished = False
        self.checksum = ""
        self._digest = hashlib.sha256()

    @property
    def nr_pages(self) -> int:
        if self._nr_pages is None:
            head = _read_exact(self._f, _HEADER.size)
            if len(head) != _HEADER.size:
                raise XendError("not a valid guest state file: memory image truncated")
            magic, page_size, nr_pages = _HEADER.unpack(head)
            if magic != MEMORY_MAGIC or page_size != PAGE_SIZE:
                raise XendError("not a valid guest state file: unknown memory image format")
            self._nr_pages = nr_pages
            self.bytes += len(head)
        return self._nr_pages

    def __iter__(self) -> Iterator[Tuple[int, bytes]]:
        return self

    def __next__(self) -> Tuple[int, bytes]:
        nr_pages = self.nr_pages
        if self.finished:
            raise StopIteration
        head = _read_exact(self._f, _PFN.size)
        if len(head) != _PFN.size:
            raise XendError("not a valid guest state file: memory image truncated")
        (pfn,) = _PFN.unpack(head)
        if pfn == END_PFN:
            self._finish()
            raise StopIteration
        if pfn >= nr_pages:
            raise XendError(f"not a valid guest state file: page {pfn} beyond "
                            f"{nr_pages} pages")
        data = _read_exact(self._f, self.page_size)
        if len(data) != self.page_size:
            raise XendError("not a valid guest state file: memory image truncated")
        self._digest.update(head)
        self._digest.update(data)
        self.records += 1
        self.bytes += len(head) + len(data)
        return pfn, data

    def _finish(self) -> None:
        tail = _read_exact(self._f, 8 + 32)
        if len(tail) != 40:
            raise XendError("not a valid guest state file: memory image truncated")
        (count,) = struct.unpack(">Q", tail[:8])
        if count != self.records or tail[8:] != self._digest.digest():
            raise XendError("not a valid guest state file: memory image checksum mismatch")
        self.bytes += _PFN.size + len(tail)
        self.finished = True
        self.checksum = self._digest.hexdigest()

    def drain(self) -> None:
        for _ in self:
            pass


def read_image(fileobj: BinaryIO) -> Tuple[Any, PageStream]:
    """(config SXP, page iterator) of an image. Errors as the original (reference §7.3)."""
    sig = _read_exact(fileobj, len(SIGNATURE))
    if len(sig) != len(SIGNATURE):
        raise XendError("not a valid guest state file: signature read")
    if sig != SIGNATURE:
        raise XendError("not a valid guest state file: found '%s'" % sig.decode("latin-1"))
    size_bytes = _read_exact(fileobj, 4)
    if len(size_bytes) != 4:
        raise XendError("not a valid guest state file: config size read")
    (size,) = struct.unpack(">i", size_bytes)
    if size <= 0 or size > MAX_CONFIG:
        raise XendError("not a valid guest state file: config size read")
    text = _read_exact(fileobj, size)
    if len(text) != size:
        raise XendError("not a valid guest state file: config read")
    try:
        values = sxp.parse_all(text)
    except ValueError as e:
        raise XendError(f"not a valid guest state file: config parse: {e}") from None
    if not values:
        raise XendError("not a valid guest state file: config read")
    return values[0], PageStream(fileobj)
