"""Managed-domain persistence (reference §8.7): ``<xend-domains-path>/<uuid>/config.sxp``.

Writes are atomic and durable: the record goes to a temporary file in the same directory,
which is fsync'ed, renamed over ``config.sxp`` and the directory fsync'ed. A crash (kill -9,
power loss) at any moment leaves either the old file or the new one, never a torn one.
Leftover temporary files are removed at the next load.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any, List, Optional, Tuple

from xend import sxp
from xend.fsutil import fsync_dir

log = logging.getLogger("xend.XendDomain")

CONFIG_FILE = "config.sxp"
CHECKPOINT_FILE = "checkpoint.chk"
PRETTY_WIDTH = 78
_TMP_PREFIX = "." + CONFIG_FILE + "."
_TMP_SUFFIX = ".tmp"


class ManagedStore:
    def __init__(self, path: str):
        self.path = path

    def ensure(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def domain_dir(self, uuid: str) -> str:
        return os.path.join(self.path, uuid)

    def config_path(self, uuid: str) -> str:
        return os.path.join(self.path, uuid, CONFIG_FILE)

    def checkpoint_path(self, uuid: str) -> str:
        return os.path.join(self.path, uuid, CHECKPOINT_FILE)

    def has_checkpoint(self, uuid: str) -> bool:
        return os.path.exists(self.checkpoint_path(uuid))

    # -- writing -------------------------------------------------------------------------------
    def save(self, uuid: str, record: Any) -> None:
        """Store ``record`` (an SXP value) as the config of ``uuid``, atomically."""
        directory = self.domain_dir(uuid)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        text = sxp.prettyprint(record, width=PRETTY_WIDTH).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(directory, CONFIG_FILE))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(directory)

    def delete(self, uuid: str) -> None:
        directory = self.domain_dir(uuid)
        if os.path.isdir(directory):
            shutil.rmtree(directory, ignore_errors=True)
            fsync_dir(self.path)

    # -- reading -------------------------------------------------------------------------------
    def load_all(self) -> List[Tuple[str, Any]]:
        """(uuid directory name, first SXP value of its config.sxp) for every stored domain
        whose file can be read and parsed. Files that cannot are logged and skipped; the
        caller checks the uuid (``UUID mismatch in stored configuration``)."""
        out: List[Tuple[str, Any]] = []
        try:
            names = sorted(os.listdir(self.path))
        except OSError as e:
            log.error("Cannot list managed domains in %s: %s", self.path, e.strerror)
            return out
        for name in names:
            directory = os.path.join(self.path, name)
            if not os.path.isdir(directory):
                continue
            self._remove_stale_temps(directory)
            cfg_file = os.path.join(directory, CONFIG_FILE)
            if not os.path.exists(cfg_file):
                log.debug("No %s in %s; skipped", CONFIG_FILE, directory)
                continue
            value = self._read(cfg_file)
            if value is not None:
                out.append((name, value))
        return out

    @staticmethod
    def _read(cfg_file: str) -> Optional[Any]:
        try:
            values = sxp.parse_file(cfg_file)
            if not values or not isinstance(values[0], list):
                raise ValueError("no domain configuration in the file")
            return values[0]
        except Exception:  # noqa: BLE001 - any damage: log it and go on with the others
            log.exception("Unable to open or parse config.sxp: %s", cfg_file)
            return None

    @staticmethod
    def _remove_stale_temps(directory: str) -> None:
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(directory, name))
                    log.info("Removed unfinished managed config %s", os.path.join(directory, name))
                except OSError:
                    pass
