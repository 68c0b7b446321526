"""Core dumps of domains (reference §8.5): file naming, and the file itself.

Default file: ``<xend-dump-path>/<basename of the name>/<%Y-%m%d-%H%M.%S>-<name>.<domid>.core``
(local time); the per-name directory is created mode 0700, and when it cannot be,
``<xend-dump-path>`` itself is used. On failure the partial file is renamed
``<file>-incomplete``.

Core file format on the simulated hypervisor (ours; on real Xen the core is libxenctrl's ELF
core, as the original's was)::

    "XENDCORE"          8 bytes
    header length       4 bytes, big-endian unsigned
    header              JSON (UTF-8): name, domid, uuid, nr_pages, page_size, time
    pages               nr_pages x page_size bytes, in pfn order
"""
from __future__ import annotations

import json
import logging
import os
import struct
import time
from typing import Optional

from xend.errors import XendError
from xend.hypervisor.base import CORE_MAGIC, Hypervisor

log = logging.getLogger("xend.XendDomainInfo")

MAGIC = CORE_MAGIC
TIME_FORMAT = "%Y-%m%d-%H%M.%S"


def default_core_path(dump_path: str, name: str, domid: int,
                      now: Optional[float] = None) -> str:
    """The original's default file name; creates the per-domain directory (0700) or falls
    back to ``dump_path`` itself."""
    coredir = os.path.join(dump_path, os.path.basename(name))
    if not os.path.exists(coredir):
        try:
            os.makedirs(coredir, mode=0o700)
        except OSError as e:
            log.error("Cannot create directory: %s", e)
    if not os.path.isdir(coredir):
        coredir = dump_path
        try:
            os.makedirs(coredir, mode=0o700, exist_ok=True)
        except OSError as e:
            log.error("Cannot create directory: %s", e)
    stamp = time.strftime(TIME_FORMAT, time.localtime(now))
    return os.path.join(coredir, f"{stamp}-{name}.{domid}.core")


def write_core(hv: Hypervisor, domid: int, name: str, uuid: str, path: str) -> str:
    """Write the core of ``domid`` to ``path`` (the caller pauses the domain if it wants a
    consistent image). Raises XendError ``Failed to dump core: ...`` after renaming the
    partial file ``<path>-incomplete``; ``Cannot dump core in a directory: <path>``."""
    if os.path.isdir(path):
        raise XendError(f"Cannot dump core in a directory: {path}")
    try:
        hv.dump_core(domid, path, {"name": name, "uuid": uuid, "time": time.time()})
    except Exception as ex:  # noqa: BLE001 - every failure is reported the same way
        try:
            os.rename(path, path + "-incomplete")
        except OSError:
            pass
        log.error("core dump failed: id = %s name = %s: %s", domid, name, ex)
        raise XendError(f"Failed to dump core: {ex}") from None
    return path


def read_core_header(path: str) -> dict:
    """The JSON header of a core file (for tools and tests)."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a xend core file")
        (size,) = struct.unpack(">I", f.read(4))
        return json.loads(f.read(size))
