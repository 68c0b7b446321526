"""Small crash-safe records of operations in progress, so that a xend killed in the middle
of one can put things right when it starts again (migrations: ``xend.relocation.journal``;
saves and restores: ``xend.domains.saverestore``).

One small JSON file per operation, ``<directory>/<kind>-<uuid>``, written atomically (temp
file, fsync, rename, fsync of the directory) *before* the step it protects, and removed once
the operation is over. Each user says which kinds it keeps (``KINDS``).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from xend.fsutil import fsync_dir

log = logging.getLogger("xend.journal")

_UUID = r"[0-9a-fA-F-]{1,64}"


class Journal:
    KINDS: Tuple[str, ...] = ()

    def __init__(self, directory: str):
        self.directory = directory
        self._name = re.compile(r"^(%s)-(%s)$" % ("|".join(map(re.escape, self.KINDS)), _UUID))

    def _path(self, kind: str, uuid: str) -> str:
        return os.path.join(self.directory, f"{kind}-{uuid}")

    def write(self, kind: str, uuid: str, **fields: Any) -> None:
        if not self._name.match(f"{kind}-{uuid}"):
            raise ValueError(f"bad journal entry {kind}-{uuid}")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self._path(kind, uuid)
        tmp = f"{path}.tmp-{os.getpid()}"
        doc = dict(fields, kind=kind, uuid=uuid, time=time.time())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(doc).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self.directory)

    def remove(self, kind: str, uuid: str) -> None:
        try:
            os.unlink(self._path(kind, uuid))
        except FileNotFoundError:
            return
        fsync_dir(self.directory)

    def entries(self, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            m = self._name.match(name)
            if not m or (kind is not None and m.group(1) != kind):
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    doc = json.loads(f.read())
            except (OSError, ValueError) as e:
                log.warning("Unreadable journal entry %s: %s",
                            os.path.join(self.directory, name), e)
                doc = {}
            doc.update(kind=m.group(1), uuid=m.group(2))
            out.append(doc)
        return out
