"""The simulated hypervisor's store: xenstore's tree of paths -> strings, kept in files.

The tree is split into shards so that a write touches one small file: each
``/local/domain/<id>`` subtree, each ``/vm/<uuid>`` subtree, and everything else ("root").
``/local``, ``/local/domain`` and ``/vm`` always exist, as after xenstored starts. Writing a
path creates its missing parents with empty values, like xenstore.
"""
from __future__ import annotations

import errno
import os
import re
from typing import Dict, List, Optional, Tuple

from ..errors import HypervisorError
from .simfiles import StateLock, read_json, write_json

_VIRTUAL_DIRS = {"/": ["local", "vm"], "/local": ["domain"], "/local/domain": [], "/vm": []}
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_BAD_PATH = re.compile(r"//|\s|\x00")


def check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or _BAD_PATH.search(path) \
            or (path != "/" and path.endswith("/")):
        raise HypervisorError(errno.EINVAL, f"invalid store path {path!r}")
    return path


def _shard_of(path: str) -> Tuple[str, str]:
    """(shard name, shard root path) holding ``path``."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "local" and parts[2] == "domain" and parts[3].isdigit():
        return f"local.{parts[3]}", "/".join(parts[:4])
    if len(parts) >= 3 and parts[1] == "vm" and _SHARD_NAME.match(parts[2]):
        return f"vm.{parts[2]}", "/".join(parts[:3])
    return "root", "/"


def _natural(name: str) -> Tuple[int, int, str]:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


class SimStore:
    """Paths -> strings under ``directory``; writers hold ``lock``."""

    def __init__(self, directory: str, lock: StateLock):
        self._dir = directory
        self._lock = lock
        os.makedirs(directory, exist_ok=True)

    def read(self, path: str) -> Optional[str]:
        check_path(path)
        value = self._load(_shard_of(path)[0]).get(path)
        if value is None and path in _VIRTUAL_DIRS:
            return ""
        return value

    def write(self, path: str, value: str) -> None:
        check_path(path)
        if not isinstance(value, str):
            raise HypervisorError(errno.EINVAL, f"store value for {path} is not a string")
        shard, root = _shard_of(path)
        with self._lock:
            nodes = self._load(shard)
            parent = path
            while parent != root and parent not in _VIRTUAL_DIRS:
                parent = parent.rsplit("/", 1)[0] or "/"
                if parent not in _VIRTUAL_DIRS:
                    nodes.setdefault(parent, "")
            nodes[path] = value
            write_json(self._file(shard), nodes)

    def list(self, path: str) -> List[str]:
        check_path(path)
        prefix = path.rstrip("/") + "/"
        names = set(_VIRTUAL_DIRS.get(path, []))
        for key in self._load(_shard_of(path)[0]):
            if key.startswith(prefix) and "/" not in key[len(prefix):]:
                names.add(key[len(prefix):])
        if path in ("/local/domain", "/vm"):
            kind = "local." if path == "/local/domain" else "vm."
            names.update(s[len(kind):] for s in self._shards() if s.startswith(kind))
        return sorted(names, key=_natural)

    def rm(self, path: str) -> None:
        check_path(path)
        prefix = path.rstrip("/") + "/"
        shard, root = _shard_of(path)
        with self._lock:
            if shard == "root":         # above the shards: those beneath it go whole
                for below in self._shards():
                    below_root = _shard_root(below)
                    if below_root == path or below_root.startswith(prefix):
                        os.unlink(self._file(below))
            elif root == path:          # a shard's root: the shard goes (no other is below)
                try:
                    os.unlink(self._file(shard))
                except FileNotFoundError:
                    pass
                return
            nodes = self._load(shard)
            doomed = [k for k in nodes if k == path or k.startswith(prefix)]
            if doomed:
                for k in doomed:
                    del nodes[k]
                write_json(self._file(shard), nodes)

    def _shards(self) -> List[str]:
        return [f[:-5] for f in os.listdir(self._dir) if f.endswith(".json") and f != "root.json"]

    def _load(self, shard: str) -> Dict[str, str]:
        return read_json(self._file(shard)) or {}

    def _file(self, shard: str) -> str:
        return os.path.join(self._dir, shard + ".json")


def _shard_root(shard: str) -> str:
    kind, _, name = shard.partition(".")
    return f"/local/domain/{name}" if kind == "local" else f"/vm/{name}"
