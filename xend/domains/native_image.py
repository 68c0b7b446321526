"""The memory section of an image when the hypervisor moves a domain as a stream of its own
(``Hypervisor.image_kind`` "stream": Xen's migration stream, written and read by libxl).

The image starts as every image does (``image.py``: signature, the domain's config); then::

    "XendXen1"                      8 bytes: native stream section magic
    format length + format          4 bytes, big-endian unsigned + ASCII ("libxl-v2")
    frames                          repeated: length (4 bytes, big-endian, >0) + that many
                                    bytes of the hypervisor's stream
    end                             a length of 0
    byte count                      8 bytes, big-endian: the stream's bytes in all frames
    checksum                        4 bytes, big-endian: CRC-32 of those bytes, in order

The hypervisor's stream is carried whole (xend does not look inside it); the frames and the
checksum make a truncated or damaged copy detectable whatever carried it (a file, a socket,
TLS), and let a stream end before what follows it in a migration (the sender's verdict).
The hypervisor writes into one end of a pipe and reads from one; xend moves the bytes
between the pipe and the image in a thread of its own, so a slow or failing disk or network
never blocks the hypervisor's side for good (the pipe is closed and it fails).
"""
from __future__ import annotations

import logging
import os
import select
import struct
import threading
import time
from typing import Any, BinaryIO, Callable, List, Optional

from xend import sxp
from xend.errors import HypervisorError, XendError
from xend.hypervisor.base import SHUTDOWN_SUSPEND, Hypervisor

from .image import SIGNATURE, Crc32, Progress, SaveStats, Step, _read_exact

log = logging.getLogger("xend.XendCheckpoint")

NATIVE_MAGIC = b"XendXen1"
FRAME = 1 << 20                         # bytes of the stream a frame holds at most
_LEN = struct.Struct(">I")
_TAIL = struct.Struct(">QI")
POLL = 0.05                             # seconds between looks at the domain while saving


_F_SETPIPE_SZ = 1031                    # fcntl.F_SETPIPE_SZ (named from Python 3.10 on)


def _pipe() -> "tuple[int, int]":
    """A pipe that holds a frame (1 MiB, the most Linux gives without raising its limit):
    the bytes move between the hypervisor and us in a few large reads, not 64 KiB ones."""
    import fcntl
    rfd, wfd = os.pipe()
    try:
        fcntl.fcntl(wfd, _F_SETPIPE_SZ, FRAME)
    except OSError:
        pass                            # a smaller pipe is slower, not wrong
    return rfd, wfd


class _Suspension:
    """Notices when the domain being saved is suspended for good (the start of a live
    save's final pause), by looking at it between reads of the stream."""

    def __init__(self, hv: Hypervisor, domid: int, step: Optional[Step]):
        self.hv, self.domid, self.step = hv, domid, step
        self.at: Optional[float] = None
        self._next = 0.0

    def look(self) -> None:
        now = time.monotonic()
        if self.at is not None or now < self._next:
            return
        self._next = now + POLL
        try:
            info = self.hv.domain_info(self.domid)
        except HypervisorError:
            return
        if info.shutdown and info.shutdown_reason == SHUTDOWN_SUSPEND:
            self.at = now
            if self.step:
                self.step(2)


def write_native(hv: Hypervisor, domain_config_sxp: Any, domid: int, out: BinaryIO,
                 live: bool = False, progress: Optional[Progress] = None,
                 step: Optional[Step] = None) -> SaveStats:
    """Write the image of ``domid`` (its config, then the hypervisor's stream of it) to
    ``out``. When this returns the domain is suspended; when it raises, it is suspended or
    still running: the caller destroys it, or ``hv.resume_saved`` runs it on. ``step`` as
    in ``image.write_image``."""
    config = sxp.to_string(domain_config_sxp).encode("utf-8")
    expected = hv.nr_pages(domid) * 4096
    stats = SaveStats()
    out.write(SIGNATURE + struct.pack(">i", len(config)) + config)
    if step:
        step(1)
    fmt = hv.stream_format.encode()
    out.write(NATIVE_MAGIC + _LEN.pack(len(fmt)) + fmt)
    done = len(SIGNATURE) + 4 + len(config) + len(NATIVE_MAGIC) + _LEN.size + len(fmt)
    rfd, wfd = _pipe()
    failure: List[BaseException] = []

    def save() -> None:
        try:
            hv.save_stream(domid, wfd, live)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            failure.append(e)
        finally:
            os.close(wfd)

    suspension = _Suspension(hv, domid, step)
    started = time.monotonic()
    saver = threading.Thread(target=save, name=f"save-{domid}", daemon=True)
    saver.start()
    digest, total = Crc32(), 0
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], POLL)
            suspension.look()
            if not ready:
                continue
            data = os.read(rfd, FRAME)
            if not data:
                break
            digest.update(data)
            out.write(_LEN.pack(len(data)) + data)
            total += len(data)
            done += _LEN.size + len(data)
            if progress:
                progress(done, max(done, expected))
    finally:
        os.close(rfd)               # a failed write: the hypervisor's side fails too
        saver.join()
    if failure:
        raise failure[0]
    suspension.look()
    out.write(_LEN.pack(0) + _TAIL.pack(total, digest.value))
    out.flush()
    ended = time.monotonic()
    if suspension.at is None:       # not seen in time: at least the stream's end
        suspension.at = ended
        if step:
            step(2)
    stats.bytes = done + _LEN.size + _TAIL.size
    stats.checksum = digest.hexdigest()
    stats.pages = total // 4096
    if live:
        stats.pause_seconds = ended - suspension.at
        log.info("Live save of domain %d: %d bytes of %s stream in %.2f s; final pause "
                 "%.3f s", domid, total, hv.stream_format, ended - started,
                 stats.pause_seconds)
    if step:
        step(3)
    if progress:
        progress(stats.bytes, stats.bytes)
    return stats


class NativeStream:
    """The native section of an image being read (after its magic): ``format``, then
    ``pump_into(fd)`` copies the hypervisor's stream into ``fd`` and checks it."""

    kind = "stream"

    def __init__(self, f: BinaryIO):
        self._f = f
        head = _read_exact(f, _LEN.size)
        if len(head) != _LEN.size:
            raise XendError("not a valid guest state file: memory image truncated")
        (size,) = _LEN.unpack(head)
        fmt = _read_exact(f, size) if size <= 64 else b""
        if len(fmt) != size or not size:
            raise XendError("not a valid guest state file: unknown memory image format")
        self.format = fmt.decode("ascii", "replace")
        self.bytes = 0
        self.finished = False
        self.checksum = ""

    def pump_into(self, fd: int, progress: Optional[Callable[[int], None]] = None) -> None:
        """Copy the stream into ``fd`` (then closed); XendError when the image is truncated
        or damaged, OSError when ``fd``'s reader went away."""
        digest, total = Crc32(), 0
        try:
            while True:
                head = _read_exact(self._f, _LEN.size)
                if len(head) != _LEN.size:
                    raise XendError("not a valid guest state file: memory image truncated")
                (size,) = _LEN.unpack(head)
                if size == 0:
                    break
                if size > FRAME:
                    raise XendError("not a valid guest state file: memory image damaged")
                data = _read_exact(self._f, size)
                if len(data) != size:
                    raise XendError("not a valid guest state file: memory image truncated")
                digest.update(data)
                total += size
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                self.bytes = total
                if progress:
                    progress(total)
            tail = _read_exact(self._f, _TAIL.size)
            if len(tail) != _TAIL.size:
                raise XendError("not a valid guest state file: memory image truncated")
            count, crc = _TAIL.unpack(tail)
            if count != total or crc != digest.value:
                raise XendError("not a valid guest state file: memory image checksum mismatch")
            self.finished = True
            self.checksum = digest.hexdigest()
        finally:
            os.close(fd)


def restore_native(hv: Hypervisor, build: Callable[[int], int], stream: NativeStream,
                   progress: Optional[Callable[[int], None]] = None) -> int:
    """``build(fd)`` (the hypervisor's restore, reading the stream from ``fd``) while the
    image's stream is copied into the pipe; returns the domid. If the image turns out
    truncated or damaged, the domain ``build`` made is destroyed and XendError raised."""
    if stream.format != hv.stream_format:
        raise XendError(f"this image holds a {stream.format} stream, which this host's "
                        f"hypervisor ({hv.name}, {hv.stream_format or 'pages'}) cannot restore")
    rfd, wfd = _pipe()
    failure: List[BaseException] = []

    def pump() -> None:
        try:
            stream.pump_into(wfd, progress)
        except BaseException as e:  # noqa: BLE001
            failure.append(e)

    pumper = threading.Thread(target=pump, name="restore-stream", daemon=True)
    pumper.start()
    try:
        domid = build(rfd)
    except BaseException:
        os.close(rfd)
        pumper.join()
        if failure and isinstance(failure[0], XendError):
            raise failure[0] from None      # the image's fault, not the hypervisor's
        raise
    os.close(rfd)
    pumper.join()
    if failure:
        error = failure[0]
        log.error("Restore: the stream was refused after the domain was built (%s); "
                  "destroying domain %d", error, domid)
        try:
            hv.destroy(domid)
        except HypervisorError as e:
            log.error("Could not destroy domain %d: %s", domid, e)
        if isinstance(error, XendError):
            raise error
        raise XendError(f"Restore failed: {error}") from None
    return domid
