"""Turning an incoming image stream into a running domain (reference section 7.1).

The registry does the restore (``restore_from_stream(..., relocating=True, paused=True)``);
here we add what a migration needs around it: the incoming domain's name must not belong to
another domain here (checked as soon as its configuration has been read, before anything is
built), the journal entry that lets a restarted xend remove a half-built domain, the unpause,
and the clean-up when the sender never hears our ``(ok)``.
"""
from __future__ import annotations

import logging
import struct
import time
from typing import Any, Callable, Optional

from xend import sxp
from xend.domains.image import MAX_CONFIG, MEMORY_MAGIC, SIGNATURE, max_section_bytes
from xend.errors import VmError
from xend.relocation.journal import Journal

log = logging.getLogger("xend.relocate")

_MEMORY_HEADER = struct.Struct(">8sIQ")     # magic, page size, page count (domains.image)
GRACE_SECONDS = 120         # then an incoming stream must average MIN_RATE
MIN_RATE = 64 * 1024        # bytes per second
PAUSED_STATUS = 1               # xend.domains.states.PAUSED


class IncomingStream:
    """A read-through wrapper of an incoming image stream that

    * hands the image's configuration SXP to ``on_config`` as soon as it has gone past
      (``on_config`` may raise to stop the restore before anything is built);
    * bounds the stream: once the memory header says how many pages the domain has, the
      stream may not exceed what the live rounds could send (LIVE_MAX_ROUNDS + 2 copies of
      every page);
    * cuts a peer that drips: after ``GRACE_SECONDS`` the average rate must stay above
      ``MIN_RATE`` (the socket timeout only catches a silent one).
    """

    def __init__(self, stream, on_config: Callable[[Any], None],
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.on_config = on_config
        self.clock = clock
        self.started = clock()
        self.head = bytearray()
        self.stage = "config"           # config -> memory header -> body
        self.config_end = 0
        self.total = 0
        self.limit: Optional[int] = None

    def read(self, n: int = -1) -> bytes:
        return self._took(self.stream.read(n))

    def read1(self, n: int = -1) -> bytes:
        """What one read of the stream gives (the image reader's bulk reads)."""
        return self._took(self.stream.read1(n))

    def _took(self, data: Any) -> Any:
        if data:
            self.total += len(data)
            if self.stage != "body":
                self.head += data
                self._look()
            self._check()
        return data

    def readinto(self, b) -> int:
        """The image reader's batches: straight into its buffer."""
        n = self.stream.readinto(b)
        if n:
            self._took(memoryview(b)[:n])
        return n

    def _check(self) -> None:
        if self.limit is not None and self.total > self.limit:
            raise VmError(f"image stream longer than a domain of its size allows "
                          f"({self.limit} bytes)")
        elapsed = self.clock() - self.started
        if elapsed > GRACE_SECONDS and self.total < MIN_RATE * elapsed:
            raise VmError(f"image stream too slow: {self.total} bytes in {elapsed:.0f} s")

    def _look(self) -> None:
        head = self.head
        if self.stage == "config":
            if len(head) < 20:
                return
            (size,) = struct.unpack(">i", head[16:20])
            if bytes(head[:16]) != SIGNATURE or not 0 < size <= MAX_CONFIG:
                self._body()            # the image reader reports it
                return
            if len(head) < 20 + size:
                return
            self.config_end = 20 + size
            self.stage = "memory"
            try:
                values = sxp.parse_all(bytes(head[20:self.config_end]))
            except ValueError:
                values = []             # the image reader reports it
            if values:
                self.on_config(values[0])
        if self.stage == "memory" and len(head) >= self.config_end + _MEMORY_HEADER.size:
            magic, page_size, nr_pages = _MEMORY_HEADER.unpack_from(head, self.config_end)
            if magic == MEMORY_MAGIC and 0 < page_size <= 1 << 21:
                self.limit = self.config_end + max_section_bytes(nr_pages, page_size)
            self._body()

    def _body(self) -> None:
        self.stage = "body"
        self.head = bytearray()


def find_records(registry: Any, **wanted: str) -> list:
    """Records of the registry's domains whose fields equal ``wanted`` (e.g. uuid=...)."""
    lister = getattr(registry, "domains_with_state", None)
    if lister is None:
        return []
    out = []
    for rec in lister(True, "all", False):
        if all(str(sxp.child_value(rec, k, "")) == v for k, v in wanted.items()):
            out.append(rec)
    return out


class Receiver:
    """Receives domains into ``registry()``; ``journal`` None = no crash record (tests)."""

    def __init__(self, registry: Callable[[], Any], journal: Optional[Journal] = None):
        self.registry = registry
        self.journal = journal

    def receive(self, rfile, peer: str, chs: bool = False) -> Any:
        """The domain on ``rfile``, restored and unpaused; with ``chs`` it becomes one of our
        managed domains first."""
        reg = self.registry()
        seen: dict = {}

        def on_config(cfg: Any) -> None:
            name = sxp.child_value(cfg, "name")
            uuid = sxp.child_value(cfg, "uuid")
            seen.update(name=name, uuid=uuid)
            log.info("Incoming domain %s (%s) from %s", name, uuid, peer)
            if isinstance(name, str) and isinstance(uuid, str):
                self.check_name_free(reg, name, uuid)
                if self.journal is not None:
                    try:
                        self.journal.write("incoming", uuid, name=name, peer=peer)
                    except (OSError, ValueError) as e:
                        log.warning("Cannot record the incoming migration of %s: %s", name, e)

        try:
            dom = reg.restore_from_stream(IncomingStream(rfile, on_config), relocating=True,
                                          paused=True)
        except BaseException:
            self._forget(seen.get("uuid"))
            raise
        try:
            if chs:
                reg.register_managed(dom)
            reg.unpause_restored(dom)
        except BaseException:
            log.exception("Finishing the received domain failed; destroying it")
            self.discard(dom)
            raise
        return dom

    @staticmethod
    def check_name_free(reg: Any, name: str, uuid: str) -> None:
        """Another domain (another uuid) of that name here: refuse, as ``xm create`` would."""
        for rec in find_records(reg, name=name):
            if str(sxp.child_value(rec, "uuid", "")) == uuid:
                continue
            domid = sxp.child_value(rec, "domid")
            where = f" as domain {domid}" if domid is not None else ""
            raise VmError(f"VM name '{name}' already exists{where}")

    def confirmed(self, dom: Any) -> None:
        """The sender has our (ok): the domain is ours for good."""
        self._forget(getattr(dom, "uuid", None))

    def discard(self, dom: Any) -> None:
        try:
            self.registry().discard_restored(dom)
        except Exception:  # noqa: BLE001
            log.exception("Could not destroy the received domain")
        self._forget(getattr(dom, "uuid", None))

    def _forget(self, uuid: Optional[str]) -> None:
        if self.journal is not None and isinstance(uuid, str):
            try:
                self.journal.remove("incoming", uuid)
            except OSError as e:
                log.warning("Cannot remove the migration journal entry of %s: %s", uuid, e)
