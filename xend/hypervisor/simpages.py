"""The pages a simulated guest was given by ``write_pages`` (restore, migration).

Files, in the guest's directory ``dom/<domid>/``::

    pages         sparse file: pages stored byte for byte, at pfn * PAGE_SIZE
    generations   one little-endian uint64 per pfn: 0 = the page is in ``pages``;
                  g + 1 = the page is ``page_bytes(uuid, pfn, g)``
    written       bitmap of the pfns stored (either way)

A page that arrives holding exactly one of the guest's own generated pages (its header names
its pfn and a generation, and every byte matches) is kept as that generation: 8 bytes instead
of 4 KiB. A restored or migrated guest then costs its host what a fresh one does (on this
kind of machine a first write to a page of a file costs ~10 us, more than all the rest of a
migration's work on that page); anything else is stored byte for byte. Whether a stored page
is still current (the guest may have written it since) is the simulator's business.
"""
from __future__ import annotations

import array
import errno
import os
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import HypervisorError
from .base import PAGE_SIZE
from .simfiles import atomic_write
from .simmemory import own_generations, page_parts

_IOV_MAX = 1024                         # buffers per pwritev (Linux's limit)
_MAX_GENERATION = (1 << 63) - 2


class StoredPages:
    """The stored pages of one guest (its directory ``path``)."""

    def __init__(self, path: str):
        self.path = path
        self._pages = os.path.join(path, "pages")
        self._generations = os.path.join(path, "generations")
        self._bitmap = os.path.join(path, "written")

    # -- reading --------------------------------------------------------------------------------
    def bitmap(self) -> bytearray:
        try:
            with open(self._bitmap, "rb") as f:
                return bytearray(f.read())
        except FileNotFoundError:
            return bytearray()

    def generations(self, n: int) -> array.array:
        """The generations table of ``n`` pages (see the module docstring)."""
        table = array.array("Q")
        try:
            with open(self._generations, "rb") as f:
                table.frombytes(f.read(8 * n))
        except FileNotFoundError:
            pass
        if len(table) < n:
            table.frombytes(bytes(8 * (n - len(table))))
        return table

    def read(self, uuid: str, pfns: Sequence[int], generations: List[Optional[int]]) -> bytes:
        """The pages ``pfns``, one after the other: generated where ``generations`` gives
        one, else read from the pages file a run of consecutive pfns at a time."""
        parts: List[Any] = []
        fd = -1
        try:
            i = 0
            while i < len(pfns):
                j = i + 1
                if generations[i] is None:
                    while j < len(pfns) and generations[j] is None and pfns[j] == pfns[j - 1] + 1:
                        j += 1
                    if fd < 0:
                        fd = os.open(self._pages, os.O_RDONLY | os.O_CLOEXEC)
                    want = (j - i) * PAGE_SIZE
                    parts.append(os.pread(fd, want, pfns[i] * PAGE_SIZE).ljust(want, b"\0"))
                else:
                    while j < len(pfns) and generations[j] is not None:
                        j += 1
                    parts.extend(page_parts(uuid, pfns[i:j], generations[i:j]))  # type: ignore
                i = j
        finally:
            if fd >= 0:
                os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def as_stored(self, uuid: str, n: int) -> Iterator[bytes]:
        """Pages 0..n-1 as ``write_pages`` stored them (whatever the guest has written
        since), zeros for a page never stored."""
        written = self.bitmap()
        table = self.generations(n)
        for first in range(0, n, 256):
            pfns = range(first, min(n, first + 256))
            gens: List[Optional[int]] = [
                table[p] - 1 if p < len(written) * 8 and written[p >> 3] >> (p & 7) & 1
                and table[p] else None for p in pfns]
            data = self.read(uuid, pfns, gens)
            yield from (data[o:o + PAGE_SIZE] for o in range(0, len(data), PAGE_SIZE))

    # -- writing --------------------------------------------------------------------------------
    def store(self, uuid: str, n: int,
              batches: Iterable[Tuple[Sequence[int], memoryview]]) -> bytearray:
        """Store the pages of ``batches`` (pfns, their pages one after the other) of a guest
        of ``n`` pages; returns the bitmap of the pfns stored (for ``publish``). A batch's
        buffer is done with before the next is asked for. Without a lock: only this guest's
        restore writes its pages."""
        new_bits = bytearray((n + 7) // 8)
        table = self.generations(n)
        fd = os.open(self._pages, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for pfns, pages in batches:
                if len(pages) != len(pfns) * PAGE_SIZE:
                    raise HypervisorError(errno.EINVAL, f"pages of pfns {pfns[:1]}.. are not "
                                          f"{PAGE_SIZE} bytes each")
                check_pfns(pfns, n)
                gens = own_generations(uuid, pfns, pages, _MAX_GENERATION)
                if None not in gens and _mark_run(new_bits, table, pfns, gens):
                    continue                # the common case: a run of the guest's own pages
                run: List[memoryview] = []   # verbatim pages of consecutive pfns: one pwritev
                first = nxt = -1
                for i, (pfn, gen) in enumerate(zip(pfns, gens)):
                    new_bits[pfn >> 3] |= 1 << (pfn & 7)
                    if gen is not None:
                        table[pfn] = gen + 1
                        continue
                    table[pfn] = 0
                    if pfn != nxt or len(run) >= _IOV_MAX:
                        _write_run(fd, first, run)
                        run, first = [], pfn
                    run.append(pages[i * PAGE_SIZE:(i + 1) * PAGE_SIZE])
                    nxt = pfn + 1
                _write_run(fd, first, run)
        finally:
            os.close(fd)
        atomic_write(self._generations, table.tobytes())
        return new_bits

    def publish(self, new_bits: bytearray, stale: Iterable[int]) -> None:
        """Add ``new_bits`` to the bitmap, after clearing the ``stale`` pfns (stored earlier,
        written by the guest since). Under the simulator's lock."""
        old = self.bitmap()
        for pfn in stale:
            if pfn < len(old) * 8:
                old[pfn >> 3] &= ~(1 << (pfn & 7)) & 0xFF
        size = max(len(old), len(new_bits))
        merged = int.from_bytes(old, "little") | int.from_bytes(new_bits, "little")
        atomic_write(self._bitmap, merged.to_bytes(size, "little"))


def check_pfns(pfns: Sequence[int], n: int) -> None:
    """HypervisorError unless every pfn is an int in 0..n-1 (no Python loop over them)."""
    if not pfns:
        return
    if not set(map(type, pfns)) <= {int}:
        bad = next(p for p in pfns if type(p) is not int)
        raise HypervisorError(errno.EINVAL, f"pfn {bad!r} out of range")
    if min(pfns) < 0 or max(pfns) >= n:
        bad = next(p for p in pfns if not 0 <= p < n)
        raise HypervisorError(errno.EINVAL, f"pfn {bad!r} out of range")


def _mark_run(bits: bytearray, table: array.array, pfns: Sequence[int],
              gens: Sequence[int]) -> bool:
    """Record ``pfns`` (consecutive: else False, nothing done) as stored with generations
    ``gens``, a slice at a time."""
    lo = pfns[0]
    hi = lo + len(pfns)
    if tuple(pfns) != tuple(range(lo, hi)):
        return False
    table[lo:hi] = array.array("Q", map((1).__add__, gens))
    while lo < hi and lo & 7:
        bits[lo >> 3] |= 1 << (lo & 7)
        lo += 1
    whole = (hi - lo) >> 3
    bits[lo >> 3:(lo >> 3) + whole] = b"\xff" * whole
    lo += whole << 3
    while lo < hi:
        bits[lo >> 3] |= 1 << (lo & 7)
        lo += 1
    return True


def _write_run(fd: int, first: int, pages: List[memoryview]) -> None:
    """Write ``pages``, those of pfns ``first``, ``first`` + 1, ... (short writes resumed)."""
    offset, i = first * PAGE_SIZE, 0
    while i < len(pages):
        done = os.pwritev(fd, pages[i:] if i else pages, offset)
        if done <= 0:
            raise HypervisorError(errno.EIO, "short write of guest pages")
        offset += done
        while i < len(pages) and done >= len(pages[i]):
            done -= len(pages[i])
            i += 1
        if done:
            pages[i] = memoryview(pages[i])[done:]
