"""File primitives of the simulated hypervisor: atomic writes, a process-wide lock, a cached
JSON file.

Every state file is replaced atomically (temp file, rename), so a reader never takes a
lock: it sees the old version or the new one. There is no fsync: the simulated hypervisor's
state stands for a hypervisor's memory, which must outlive any xend process (a rename does)
but not a reboot of the machine (nothing a real hypervisor runs does either). Writers serialise on ``flock`` of one lock file
(between processes) plus a reentrant thread lock (within one process: flock does not exclude
two threads sharing one descriptor).
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from typing import Any, Optional, Sequence, Tuple, Union

_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def atomic_write(path: str, data: Union[bytes, Sequence[bytes]], *,
                 keep_open: bool = False) -> Optional[int]:
    """Replace ``path`` with ``data`` (bytes, or a sequence of pieces written one after the
    other without being joined first). With ``keep_open`` the descriptor of the new file is
    returned (open for reading) instead of being closed."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            _write_all(fd, data)
        else:
            _write_pieces(fd, data)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if keep_open:
        return fd
    os.close(fd)
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_pieces(fd: int, pieces: Sequence[bytes]) -> None:
    """``writev`` of up to IOV_MAX pieces at a time; a short write finishes piece by piece."""
    for start in range(0, len(pieces), _IOV_MAX):
        batch = pieces[start:start + _IOV_MAX]
        written = os.writev(fd, batch)
        if written == sum(map(len, batch)):
            continue
        for piece in batch:
            if written >= len(piece):
                written -= len(piece)
                continue
            _write_all(fd, memoryview(piece)[written:])
            written = 0


def read_json(path: str) -> Any:
    """The JSON document at ``path``, or None if the file does not exist."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def write_json(path: str, doc: Any) -> None:
    atomic_write(path, _dumps(doc))


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _dumps(doc: Any) -> bytes:
    return dumps(doc).encode()


class StateLock:
    """Exclusive lock over a state directory: reentrant within a process, ``flock`` between
    processes. Must be created after any fork (a forked child would share the flock)."""

    def __init__(self, path: str, thread_lock: Optional[threading.RLock] = None):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # callers may share the thread lock to guard their in-memory caches with it too
        self._thread_lock = thread_lock or threading.RLock()
        self._depth = 0

    def __enter__(self) -> "StateLock":
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class CachedJson:
    """A JSON file read once and re-read only when it was replaced.

    Change detection is one ``stat``: we keep the loaded version's file open, so its inode
    number cannot be recycled by a later version while we hold it; a different inode at the
    path therefore always means a new version (mtime alone is too coarse: ~4 ms ticks).
    """

    def __init__(self, path: str):
        self.path = path
        self._fd = -1
        #: (st_dev, st_ino) of the loaded version and its document, replaced as one pair so
        #: that ``peek`` can read it without the lock
        self._held: Tuple[Optional[tuple], Any] = (None, None)

    def peek(self) -> Any:
        """The cached document if the file still holds that version, else None; safe without
        the lock (one attribute read, one ``stat``), for readers that must not wait."""
        ident, doc = self._held
        if ident is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return doc if (st.st_dev, st.st_ino) == ident else None

    def load(self) -> Any:
        """The current document (None if the file does not exist). Do not mutate it unless
        you ``save`` it afterwards (or ``invalidate`` on failure)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._drop()
            return None
        ident, doc = self._held
        if (st.st_dev, st.st_ino) == ident:
            return doc
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._drop()
            return None
        st = os.fstat(fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            doc = json.loads(f.read())
        self._hold(fd, st, doc)
        return doc

    def save(self, doc: Any, data: Union[None, bytes, Sequence[bytes]] = None) -> None:
        """Write ``doc`` atomically (``data``: its serialization, if the caller has it, whole
        or in pieces) and
        make it the cached version. Caller holds the lock."""
        try:
            fd = atomic_write(self.path, _dumps(doc) if data is None else data, keep_open=True)
        except BaseException:
            self.invalidate()
            raise
        self._hold(fd, os.fstat(fd), doc)

    def invalidate(self) -> None:
        """Forget the cached version (e.g. after a failed in-place mutation)."""
        self._drop()

    def close(self) -> None:
        self._drop()

    def _hold(self, fd: int, st: os.stat_result, doc: Any) -> None:
        self._drop()
        self._fd, self._held = fd, ((st.st_dev, st.st_ino), doc)

    def _drop(self) -> None:
        self._held = (None, None)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
