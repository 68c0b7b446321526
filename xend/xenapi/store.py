"""What the Xen-API keeps that the domains do not: the host's uuid, name, description and
other_config, the uuids of the pool and the storage repository, and the networks and disk
images (VDIs) made or renamed through the API. One JSON file, ``xenapi.json`` in
``xend-state-path``, written durably (temp file, fsync, rename) after every change; read
once at start. A file that cannot be read is logged and set aside (``.bad``), never fatal.

Everything about domains stays in the domain registry: this store never holds a VM.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import socket
import threading
import uuid as uuidlib
from typing import Any, Callable, Dict, Optional

from xend.fsutil import write_durably

log = logging.getLogger("xend.XendAPIStore")

FILE_NAME = "xenapi.json"
MAX_OBJECTS = 4096          # networks, and VDIs, each


class TooMany(Exception):
    pass


class ApiStore:
    def __init__(self, directory: str):
        self.path = os.path.join(directory, FILE_NAME)
        self._lock = threading.Lock()
        self._doc = self._load()

    def _load(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {}
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError) as e:
            log.error("Cannot read %s (%s); setting it aside as %s.bad", self.path, e, self.path)
            try:
                os.replace(self.path, self.path + ".bad")
            except OSError:
                pass
            doc = {}
        changed = False
        for key in ("host", "pool", "sr"):
            if not isinstance(doc.get(key), dict) or "uuid" not in doc[key]:
                doc[key] = {"uuid": str(uuidlib.uuid4())}
                changed = True
        doc["host"].setdefault("name_label", socket.gethostname())
        for key in ("networks", "vdis"):
            if not isinstance(doc.get(key), dict):
                doc[key] = {}
        self._doc = doc
        if changed:
            try:
                self._write()
            except OSError as e:
                log.error("Cannot write %s: %s", self.path, e.strerror or e)
        return doc

    def _write(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_durably(self.path, json.dumps(self._doc, indent=1, sort_keys=True).encode())

    # -- reading ---------------------------------------------------------------------------------
    def get(self, section: str, key: Optional[str] = None) -> Any:
        """A copy of ``host``/``pool``/``sr``, or of one network/VDI entry (None if absent)."""
        with self._lock:
            value = self._doc.get(section)
            if key is not None:
                value = value.get(key) if isinstance(value, dict) else None
            return copy.deepcopy(value)

    # -- writing ---------------------------------------------------------------------------------
    def update(self, section: str, change: Callable[[Dict[str, Any]], None],
               key: Optional[str] = None, create: bool = False) -> None:
        """Apply ``change`` to a copy of the section (or of entry ``key``), then write it; if
        the write fails nothing changes and OSError is raised."""
        with self._lock:
            current = self._doc[section]
            if key is not None:
                if key not in current:
                    if not create:
                        raise KeyError(key)
                    if len(current) >= MAX_OBJECTS:
                        raise TooMany(f"at most {MAX_OBJECTS} {section} may be kept")
                target = copy.deepcopy(current.get(key, {}))
            else:
                target = copy.deepcopy(current)
            change(target)
            before = copy.deepcopy(self._doc)
            if key is not None:
                current[key] = target
            else:
                self._doc[section] = target
            try:
                self._write()
            except OSError:
                self._doc = before
                raise

    def remove(self, section: str, key: str) -> bool:
        with self._lock:
            if key not in self._doc[section]:
                return False
            before = copy.deepcopy(self._doc)
            del self._doc[section][key]
            try:
                self._write()
            except OSError:
                self._doc = before
                raise
            return True
