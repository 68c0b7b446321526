"""Guest console output kept by xend: one bounded ring buffer per domain (reference §8.10).

The original left this to ``xenconsoled`` with a ``console/limit`` of ``console-limit`` KiB;
here xend keeps the bytes itself. When a buffer is full the *oldest* bytes are dropped, never
the newest. Offsets are absolute byte counts since the domain's console began, so a reader
that remembers the offset it got back resumes exactly where it stopped (and learns that it
missed output when the offset it asks for has already been dropped).
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Hashable, Tuple

DEFAULT_LIMIT_KIB = 1024


class ConsoleBuffer:
    """The newest ``limit`` bytes of one console. Not thread-safe (ConsoleHub locks)."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"console limit must be at least 1 byte, not {limit}")
        self._limit = limit
        self._data = bytearray()
        self._end = 0           # absolute offset just past the newest byte

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def start(self) -> int:
        """Absolute offset of the oldest byte still kept."""
        return self._end - len(self._data)

    @property
    def end(self) -> int:
        """Absolute offset just past the newest byte (total bytes ever appended)."""
        return self._end

    def set_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"console limit must be at least 1 byte, not {limit}")
        self._limit = limit
        self._trim()

    def append(self, data: bytes) -> None:
        if not data:
            return
        self._end += len(data)
        if len(data) >= self._limit:
            self._data = bytearray(data[-self._limit:])
        else:
            self._data += data
            self._trim()

    def read(self, offset: int = 0, size: int = -1) -> Tuple[int, bytes]:
        """Bytes from absolute ``offset`` (clamped into what is kept), at most ``size``
        (-1 = all); returns (offset just past what was returned, bytes)."""
        begin = min(max(offset, self.start), self._end)
        chunk = bytes(self._data[begin - self.start:])
        if 0 <= size < len(chunk):
            chunk = chunk[:size]
        return begin + len(chunk), chunk

    def _trim(self) -> None:
        excess = len(self._data) - self._limit
        if excess > 0:
            del self._data[:excess]


class ConsoleHub:
    """The console buffers of all domains, keyed by the caller (xend uses the domid)."""

    def __init__(self, limit_kib: int = DEFAULT_LIMIT_KIB):
        self._lock = threading.Lock()
        self._buffers: Dict[Hashable, ConsoleBuffer] = {}
        self._limit = _bytes(limit_kib)

    @property
    def limit_bytes(self) -> int:
        return self._limit

    def set_limit_kib(self, limit_kib: int) -> None:
        with self._lock:
            self._limit = _bytes(limit_kib)
            for buf in self._buffers.values():
                buf.set_limit(self._limit)

    def pull(self, key: Hashable, source: Callable[[], bytes]) -> None:
        """Append what ``source()`` returns; the lock spans the call so that output pulled by
        two threads at once is appended in the order it was produced."""
        with self._lock:
            data = source()
            if data:
                self._buffer(key).append(data)

    def feed(self, key: Hashable, data: bytes) -> None:
        if data:
            with self._lock:
                self._buffer(key).append(data)

    def read(self, key: Hashable, offset: int = 0, size: int = -1) -> Tuple[int, bytes]:
        with self._lock:
            buf = self._buffers.get(key)
            if buf is None:
                return 0, b""
            return buf.read(offset, size)

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._buffers.pop(key, None)

    def keys(self) -> list:
        with self._lock:
            return list(self._buffers)

    def _buffer(self, key: Hashable) -> ConsoleBuffer:
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = ConsoleBuffer(self._limit)
        return buf


def _bytes(limit_kib: int) -> int:
    if int(limit_kib) < 1:
        raise ValueError(f"console-limit must be at least 1 KiB, not {limit_kib}")
    return int(limit_kib) * 1024
