"""Memory of a simulated guest: deterministic pages and a closed-form dirtying pattern.

A page's bytes are derived from (uuid, pfn, generation); nothing is stored unless written by
``write_pages``. A running guest performs "dirty events" at ``rate`` per second of running
time; event k writes page ``pfn_at(k mod W)``, where W is the guest's working set and
``pfn_at`` a fixed permutation (an affine map mod n). Because the pattern is cyclic, the
generation of any page after K events, and the set of pages written between two event counts,
are computed in O(1) / O(W) without replaying history.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
import struct
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from .base import PAGE_SIZE


_POOL_SPAN = 1 << 18          # distinct window offsets into a guest's random pool
_HEADER = struct.Struct("<QQ")
_MIX_PFN, _MIX_GEN = 0x9E37, 0x85EB        # odd: a page's windows differ from its neighbours'
#   (small: the offset is computed once per page of a migration, in small-int arithmetic)


@functools.lru_cache(maxsize=64)
def _pool(uuid: str) -> Tuple[bytes, int]:
    """A guest's pseudo-random byte pool (seeded by its uuid) and a per-guest salt."""
    seed = hashlib.sha256(uuid.encode()).digest()
    pool = random.Random(seed).randbytes(_POOL_SPAN + PAGE_SIZE)
    return pool, int.from_bytes(seed[:8], "little") % _POOL_SPAN


def _offset(pfn: int, generation: int, salt: int) -> int:
    """Where the window of page ``pfn`` at ``generation`` starts in its guest's pool (a cheap
    mix of both; written out inline in the loops below, which run once per page)."""
    return (pfn * _MIX_PFN + generation * _MIX_GEN + salt) % _POOL_SPAN


def page_bytes(uuid: str, pfn: int, generation: int) -> bytes:
    """The 4096 bytes of page ``pfn`` after it has been dirtied ``generation`` times.

    A 16-byte (pfn, generation) header makes every page and every generation distinct; the
    rest is a window of the guest's random pool chosen by a cheap mix of both and a
    per-guest salt. This costs a copy, not a hash of 4 KiB, so streaming a GiB is bounded by
    the sockets, not by us."""
    pool, salt = _pool(uuid)
    off = _offset(pfn, generation, salt)
    return _HEADER.pack(pfn, generation) + pool[off:off + PAGE_SIZE - _HEADER.size]


def page_parts(uuid: str, pfns: Sequence[int], generations: Sequence[int]) -> Iterator[Any]:
    """The pieces of ``page_bytes`` of many pages, in order: each page's header, then a view
    of its window of the pool (``b"".join`` of them is the pages: one copy, no page object)."""
    pool, salt = _pool(uuid)
    src = memoryview(pool)
    body = PAGE_SIZE - _HEADER.size
    offs = [(pfn * _MIX_PFN + gen * _MIX_GEN + salt) % _POOL_SPAN       # _offset
            for pfn, gen in zip(pfns, generations)]
    return itertools.chain.from_iterable(zip(map(_HEADER.pack, pfns, generations),
                                             [src[off:off + body] for off in offs]))


@functools.lru_cache(maxsize=8)
def _headers(count: int) -> struct.Struct:
    """The (pfn, generation) headers of ``count`` consecutive pages, in one unpack."""
    return struct.Struct("<" + "QQ%dx" % (PAGE_SIZE - _HEADER.size) * count)


def own_generations(uuid: str, pfns: Sequence[int], pages: memoryview,
                    max_generation: int) -> List[Optional[int]]:
    """For each page of ``pages`` (those of ``pfns``, one after the other): g when it is
    exactly ``page_bytes(uuid, pfn, g)`` (g <= max_generation), else None. Compared in
    place, the headers unpacked in one call, and the common case (every page its guest's
    own) without a Python loop over the pages."""
    pool, salt = _pool(uuid)
    heads = _headers(len(pfns)).unpack_from(pages)
    gens = heads[1::2]
    offs = [(pfn * _MIX_PFN + gen * _MIX_GEN + salt) % _POOL_SPAN       # _offset
            for pfn, gen in zip(pfns, gens)]
    bodies = [pages[o:o + PAGE_SIZE - _HEADER.size]
              for o in range(_HEADER.size, len(pfns) * PAGE_SIZE, PAGE_SIZE)]
    starts = pool.startswith
    if heads[0::2] == tuple(pfns) and max(gens) <= max_generation and \
            all(map(starts, bodies, offs)):
        return list(gens)
    return [gen if head == pfn and gen <= max_generation and starts(body, off) else None
            for head, pfn, gen, body, off in zip(heads[0::2], pfns, gens, bodies, offs)]


class DirtyMap:
    """The dirtying pattern of one guest over ``n`` pages with working set ``wss``."""

    def __init__(self, uuid: str, n: int, wss: int):
        self.n = max(1, n)
        self.wss = max(1, min(wss, self.n))
        seed = int.from_bytes(hashlib.sha256(uuid.encode()).digest()[:16], "big")
        a = (seed % self.n) | 1
        while math.gcd(a, self.n) != 1:
            a += 1
        self._a = a % self.n or 1
        self._b = (seed >> 64) % self.n
        self._a_inv = pow(self._a, -1, self.n) if self.n > 1 else 0

    def pfn_at(self, index: int) -> int:
        """The page written by events whose index mod W is ``index``."""
        return (self._a * index + self._b) % self.n

    def index_of(self, pfn: int) -> Optional[int]:
        """Position of ``pfn`` in the working set, None if the guest never writes it."""
        if pfn >= self.n:
            return None
        i = (self._a_inv * (pfn - self._b)) % self.n
        return i if i < self.wss else None

    def generation(self, pfn: int, k: int) -> int:
        """How many of the first ``k`` events wrote ``pfn``."""
        i = self.index_of(pfn)
        if i is None:
            return 0
        return k // self.wss + (1 if i < k % self.wss else 0)

    def generations(self, pfns: Sequence[int], k: int) -> List[int]:
        """``generation(pfn, k)`` of each of ``pfns``."""
        if k <= 0:
            return [0] * len(pfns)
        full, part = divmod(k, self.wss)
        a_inv, b, n, wss = self._a_inv, self._b, self.n, self.wss
        return [full + (i < part) if i < wss else 0
                for i in [(a_inv * (pfn - b)) % n for pfn in pfns]]

    def written_between(self, pfn: int, k0: int, k1: int) -> bool:
        """Whether an event with index in [k0, k1) wrote ``pfn``."""
        i = self.index_of(pfn)
        if i is None or k1 <= k0:
            return False
        first = k0 + (i - k0) % self.wss
        return first < k1

    def dirtied(self, k0: int, k1: int) -> Iterator[int]:
        """Pages written by events with index in [k0, k1), each once, unordered."""
        count = k1 - k0
        if count <= 0:
            return iter(())
        if count >= self.wss:
            return (self.pfn_at(i) for i in range(self.wss))
        start = k0 % self.wss
        end = start + count
        if end <= self.wss:
            indices = range(start, end)
        else:
            indices = list(range(start, self.wss)) + list(range(0, end - self.wss))
        return (self.pfn_at(i) for i in indices)
