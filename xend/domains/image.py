"""The save/restore/migration image stream (reference §7.3), and the code that writes and
reads it. ``xm save`` files, managed checkpoints and migration all use it.

Layout::

    "LinuxGuestRecord"              16 ASCII bytes
    config length                   4 bytes, big-endian signed
    config                          the domain record, sxp.to_string, latin-1
    -- memory section (ours; the original's came from libxenguest's xc_save) --
    "XendPag3"                      8 bytes: memory section magic
    page size                       4 bytes, big-endian unsigned (4096)
    page count                      8 bytes, big-endian unsigned: the domain's nr_pages
    checksum kind                   4 ASCII bytes: "xxh3" (XXH3-64) or "cr32" (CRC-32)
    batches                         repeated: count (4 bytes, big-endian, 1..MAX_BATCH),
                                    count pfns (8 bytes big-endian each), then the count
                                    pages, page size bytes each, in the pfns' order (a live
                                    save sends a pfn again when the guest rewrote it; the
                                    last copy wins)
    end marker                      a count of 0
    record count                    8 bytes, big-endian: pages in all batches
    checksum                        8 bytes, big-endian: of every batch (count, pfns, pages)
                                    in order

A batch is one write of the sender and one read of the receiver, into one buffer: no
per-page Python object on either side, and the receiver always knows how many bytes the
stream still holds (a migration sender waiting for its verdict is never waited for). A
reader verifies the record count and checksum when it reaches the end marker, so a
truncated or damaged stream is refused before the restored domain is unpaused. The checksum
is for accidental damage (a disk, a truncated copy, a network path), not a signature: XXH3-64
(the ``xxhash`` library, ~40 GB/s here) where it is installed, else zlib's CRC-32 (3 GB/s:
at a migration's rate that alone would be a third of each end's time). Earlier sections
("XendPage", SHA-256; "XendPag2", a pfn before each page and CRC-32) are refused as of an
unknown format.
"""
from __future__ import annotations

import functools
import logging
import struct
import time
import zlib
from dataclasses import dataclass
from typing import (Any, BinaryIO, Callable, Iterable, Iterator, List, Optional, Sequence,
                    Tuple)

from xend import sxp
from xend.errors import XendError
from xend.hypervisor.base import PAGE_SIZE, Hypervisor

log = logging.getLogger("xend.XendCheckpoint")

SIGNATURE = b"LinuxGuestRecord"
MEMORY_MAGIC = b"XendPag3"
MAX_CONFIG = 16 * 1024 * 1024       # a record is a few KiB; refuse absurd lengths
BATCH = 256                         # pages of one batch the writer sends (1 MiB)
MAX_BATCH = 1024                    # pages of one batch a reader accepts

# live save: stop iterating when a round sends at most this many pages, or after this
# many rounds, or when the dirty set stops shrinking
LIVE_MAX_ROUNDS = 30
LIVE_SMALL_SET = 64

Progress = Callable[[int, int], None]       # (bytes done, bytes expected)
Step = Callable[[int], None]                # device migration step 1/2/3 (reference §7.7)

_HEADER = struct.Struct(">8sIQ4s")  # magic, page size, page count, checksum kind
_COUNT = struct.Struct(">I")
_TAIL = struct.Struct(">QQ")        # record count, checksum
TAIL_SIZE = _COUNT.size + _TAIL.size    # the end marker and what follows it


class Crc32:
    """zlib's CRC-32 behind hashlib's interface (update, digest, hexdigest)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: Any) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")

    def hexdigest(self) -> str:
        return "%08x" % self.value

    def intdigest(self) -> int:
        return self.value


def _xxh3() -> Any:
    import xxhash            # optional: a host without it writes CRC-32
    return xxhash.xxh3_64()


#: checksum kind (as the section header names it) -> a new digest (update, intdigest,
#: hexdigest)
CHECKSUMS = {b"xxh3": _xxh3, b"cr32": Crc32}


@functools.lru_cache(maxsize=None)
def writer_checksum() -> bytes:
    """The checksum kind this host writes: XXH3-64 when ``xxhash`` imports, else CRC-32."""
    try:
        _xxh3()
    except ImportError:
        return b"cr32"
    return b"xxh3"


def _new_digest(kind: bytes) -> Any:
    try:
        return CHECKSUMS[kind]()
    except KeyError:
        raise XendError("not a valid guest state file: unknown memory image format") from None
    except ImportError:
        raise XendError("can't read this guest state file: its checksum is XXH3, and the "
                        "Python module xxhash is not installed") from None


def max_section_bytes(nr_pages: int, page_size: int = PAGE_SIZE) -> int:
    """The most a memory section of ``nr_pages`` pages can hold: every page sent
    LIVE_MAX_ROUNDS + 2 times (the first pass, the rounds, the final pause), each in a batch
    of its own at worst (what a receiver lets a sender stream)."""
    record = _COUNT.size + 8 + page_size
    return _HEADER.size + TAIL_SIZE + nr_pages * record * (LIVE_MAX_ROUNDS + 2)


@dataclass
class SaveStats:
    pages: int = 0                  # page records written
    bytes: int = 0
    rounds: int = 0                 # live rounds after the first full pass
    final_pages: int = 0            # pages sent while the domain was paused (live)
    pause_seconds: float = 0.0      # time the domain was paused at the end (live)
    checksum: str = ""


class _Writer:
    """Writes the memory section's batches: each one a head (count, pfns) and the pages as
    the hypervisor gives them (one buffer), hashed and written as they are."""

    def __init__(self, out: BinaryIO, total: int, progress: Optional[Progress]):
        self.out = out
        self.done = 0
        self.total = total
        self.progress = progress
        self.kind = writer_checksum()
        self.digest = _new_digest(self.kind)
        self.records = 0

    def raw(self, data: bytes) -> None:
        self.out.write(data)
        self.done += len(data)
        self._report()

    def _report(self) -> None:
        if self.progress:
            self.progress(self.done, max(self.total, self.done))

    def pages(self, hv: Hypervisor, domid: int, pfns: Iterable[int]) -> int:
        """Send the pages ``pfns`` (one reader of the hypervisor for them all), BATCH pages
        a batch."""
        pfns = list(pfns)
        read = hv.page_reader(domid)
        update, write = self.digest.update, self.out.write
        for first in range(0, len(pfns), BATCH):
            chunk = pfns[first:first + BATCH]
            count = len(chunk)
            head = _batch_head(count).pack(count, *chunk)
            pages = read(chunk)
            if len(pages) != count * PAGE_SIZE:
                raise XendError(f"the hypervisor gave pages of pfns {chunk[0]}.. that are "
                                f"not {PAGE_SIZE} bytes each")
            update(head)
            update(pages)
            write(head)
            write(pages)
            self.records += count
            self.done += len(head) + len(pages)
            self._report()
        return len(pfns)


@functools.lru_cache(maxsize=8)
def _batch_head(count: int) -> struct.Struct:
    """A batch's count and its ``count`` pfns."""
    return struct.Struct(">I%dQ" % count)


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
    total = len(SIGNATURE) + 4 + len(config) + _HEADER.size + _sent_bytes(nr_pages) + \
        TAIL_SIZE
    w = _Writer(out, total, progress)
    stats = SaveStats()
    w.raw(SIGNATURE)
    w.raw(struct.pack(">i", len(config)))
    w.raw(config)
    if step:
        step(1)
    w.raw(_HEADER.pack(MEMORY_MAGIC, PAGE_SIZE, nr_pages, w.kind))
    if not live:
        hv.pause(domid)
        if step:
            step(2)
        w.pages(hv, domid, range(nr_pages))
    else:
        paused_at = _live_pages(hv, domid, nr_pages, w, stats, step)
    w.raw(_COUNT.pack(0) + _TAIL.pack(w.records, w.digest.intdigest()))
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


def _sent_bytes(pages: int) -> int:
    """Bytes of the batches that carry ``pages`` pages."""
    return -(-pages // BATCH) * _COUNT.size + pages * (8 + PAGE_SIZE)


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
            w.total += _sent_bytes(len(dirty))
            w.pages(hv, domid, dirty)
            stats.rounds += 1
            previous = len(dirty)
        hv.pause(domid)
        paused_at = time.monotonic()
        if step:
            step(2)
        final = sorted(set(pending) | set(hv.read_dirty_pages(domid)))
        w.total += _sent_bytes(len(final))
        stats.final_pages = w.pages(hv, domid, final)
        return paused_at
    finally:
        try:
            hv.enable_dirty_log(domid, False)
        except Exception:  # noqa: BLE001 - the domain may be gone; nothing to stop then
            log.debug("disabling the dirty log of domain %d failed", domid, exc_info=True)


# -- reading --------------------------------------------------------------------------------------
def _read_exact(f: BinaryIO, n: int, read: Optional[Callable[[int], bytes]] = None) -> bytes:
    read = read or f.read
    chunks = []
    while n > 0:
        chunk = read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_into(f: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``f`` (fewer bytes only at the end of the stream)."""
    readinto = getattr(f, "readinto", None)
    got = 0
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = f.read(len(view) - got)
            n = len(data)
            view[got:got + n] = data
        if not n:
            break
        got += n
    return got


Batch = Tuple[Tuple[int, ...], memoryview]      # (pfns, their pages: len(pfns) * PAGE_SIZE)


class PageStream:
    """The pages of an image's memory section: ``batches()`` gives (pfns, pages) a batch at
    a time, the pages one memoryview of len(pfns) * PAGE_SIZE bytes (a buffer used again for
    the next batch); iterating gives (pfn, page) with each page a memoryview of its own.
    Raises XendError on a damaged stream and checks the record count and checksum at the
    end. The section header is read on first use (``nr_pages``, ``batches`` or iteration),
    so a caller can check the config before the memory arrives.

    Each read asks for exactly what the stream announced (a batch's count, then its pfns
    and pages, in one read into the batch's buffer), so a sender that waits for our verdict
    after its last byte is never waited for."""

    kind = "pages"

    def __init__(self, f: BinaryIO, magic: bytes = b""):
        self._f = f
        self._magic = magic             # the section's magic, when the caller read it
        self._nr_pages: Optional[int] = None
        self.page_size = PAGE_SIZE
        self.records = 0
        self.bytes = 0
        self.finished = False
        self.checksum = ""
        self._digest: Any = None
        self._source: Optional[Iterator[Batch]] = None     # the one reader of the batches
        self._pages: Optional[Iterator[Tuple[int, memoryview]]] = None

    @property
    def nr_pages(self) -> int:
        if self._nr_pages is None:
            head = self._magic + _read_exact(self._f, _HEADER.size - len(self._magic))
            if len(head) != _HEADER.size:
                raise XendError("not a valid guest state file: memory image truncated")
            magic, page_size, nr_pages, kind = _HEADER.unpack(head)
            if magic != MEMORY_MAGIC or page_size != PAGE_SIZE:
                raise XendError("not a valid guest state file: unknown memory image format")
            self._digest = _new_digest(kind)
            self._nr_pages = nr_pages
            self.bytes += len(head)
        return self._nr_pages

    def batches(self) -> Iterator[Batch]:
        """(pfns, pages) a batch at a time; the pages' buffer is reused for the next batch
        (unless pages were taken one by one before)."""
        if self._source is None:
            self._source = self._read_batches(reuse=True)
        return self._source

    def __iter__(self) -> Iterator[Tuple[int, memoryview]]:
        return self

    def __next__(self) -> Tuple[int, memoryview]:
        if self._pages is None:
            if self._source is None:
                self._source = self._read_batches(reuse=False)
            self._pages = self._each_page(self._source)
        return next(self._pages)

    def _each_page(self, source: Iterator[Batch]) -> Iterator[Tuple[int, memoryview]]:
        size = self.page_size
        for pfns, pages in source:
            yield from zip(pfns, [pages[o:o + size] for o in range(0, len(pfns) * size, size)])

    def _read_batches(self, reuse: bool) -> Iterator[Batch]:
        nr_pages = self.nr_pages            # the section header comes first
        buf = bytearray()
        while True:
            head = _read_exact(self._f, _COUNT.size)
            if len(head) != _COUNT.size:
                raise XendError("not a valid guest state file: memory image truncated")
            (count,) = _COUNT.unpack(head)
            if count == 0:
                self._finish()
                return
            if count > MAX_BATCH:
                raise XendError(f"not a valid guest state file: a batch of {count} pages")
            size = count * (8 + self.page_size)
            if not reuse or len(buf) != size:
                buf = bytearray(size)
            view = memoryview(buf)
            if _read_into(self._f, view) != size:
                raise XendError("not a valid guest state file: memory image truncated")
            pfns = _pfns(count).unpack_from(buf)
            if max(pfns) >= nr_pages:
                bad = next(pfn for pfn in pfns if pfn >= nr_pages)
                raise XendError(f"not a valid guest state file: page {bad} beyond "
                                f"{nr_pages} pages")
            self._digest.update(head)
            self._digest.update(view)
            self.records += count
            self.bytes += _COUNT.size + size
            yield pfns, view[8 * count:]

    def _finish(self) -> None:
        tail = _read_exact(self._f, _TAIL.size)
        if len(tail) != _TAIL.size:
            raise XendError("not a valid guest state file: memory image truncated")
        count, checksum = _TAIL.unpack(tail)
        if count != self.records or checksum != self._digest.intdigest():
            raise XendError("not a valid guest state file: memory image checksum mismatch")
        self.bytes += TAIL_SIZE
        self.finished = True
        self.checksum = self._digest.hexdigest()

    def drain(self) -> None:
        """Read (and check) the rest of the section."""
        if self._pages is not None:
            for _ in self._pages:
                pass
        for _ in self.batches():
            pass


@functools.lru_cache(maxsize=8)
def _pfns(count: int) -> struct.Struct:
    """The ``count`` pfns at the start of a batch's body."""
    return struct.Struct(">%dQ" % count)


def read_image(fileobj: BinaryIO) -> Tuple[Any, PageStream]:
    """(config SXP, page iterator) of an image. Errors as the original (reference §7.3)."""
    return read_config(fileobj), PageStream(fileobj)


def open_memory_section(fileobj: BinaryIO) -> Any:
    """The memory section that follows an image's config (``read_config``): pages
    (PageStream) or a hypervisor's own stream (``native_image.NativeStream``);
    ``section.kind`` says which. Its magic is read here."""
    from .native_image import NATIVE_MAGIC, NativeStream
    magic = _read_exact(fileobj, len(MEMORY_MAGIC))
    if magic == NATIVE_MAGIC:
        return NativeStream(fileobj)
    if magic != MEMORY_MAGIC:
        raise XendError("not a valid guest state file: memory image truncated"
                        if len(magic) < len(MEMORY_MAGIC)
                        else "not a valid guest state file: unknown memory image format")
    return PageStream(fileobj, magic)


def read_config(fileobj: BinaryIO) -> Any:
    """The config SXP at the start of an image (signature, length, record)."""
    sig = _read_exact(fileobj, len(SIGNATURE))
    if len(sig) != len(SIGNATURE):
        raise XendError("not a valid guest state file: signature read")
    if sig != SIGNATURE:
        # never echo what the file holds: it may be anything, readable by root only
        raise XendError("not a valid guest state file: no guest state signature")
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
    except sxp.ParseError as e:
        raise XendError(f"not a valid guest state file: config parse error at line {e.line}, "
                        f"column {e.column}") from None
    except ValueError:
        raise XendError("not a valid guest state file: config parse error") from None
    if not values:
        raise XendError("not a valid guest state file: config read")
    return values[0]
