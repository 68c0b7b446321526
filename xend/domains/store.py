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
_DELETED_SUFFIX = ".deleted"        # .<uuid>.deleted: a domain directory being removed


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
        """Store ``record`` (an SXP value) as the config of ``uuid``, atomically. On failure
        (a full or read-only store) an OSError naming the file is raised and nothing is left
        behind: the earlier file as it was, no new directory."""
        directory = self.domain_dir(uuid)
        target = os.path.join(directory, CONFIG_FILE)
        text = sxp.prettyprint(record, width=PRETTY_WIDTH).encode("utf-8")
        made = not os.path.isdir(directory)
        tmp = None
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            self._undo_save(tmp, directory if made else None)
            raise OSError(e.errno, e.strerror, target) from None
        except BaseException:
            self._undo_save(tmp, directory if made else None)
            raise
        fsync_dir(directory)
        if made:
            fsync_dir(self.path)

    @staticmethod
    def _undo_save(tmp: Optional[str], made_dir: Optional[str]) -> None:
        for path, remove in ((tmp, os.unlink), (made_dir, os.rmdir)):
            if path:
                try:
                    remove(path)
                except OSError:
                    pass

    def delete(self, uuid: str) -> None:
        """Remove the domain's directory. It is first renamed out of the way (one atomic
        step: a store that cannot be changed fails here, with an OSError naming it, and
        keeps the domain), then removed; what cannot be removed is removed at the next load."""
        directory = self.domain_dir(uuid)
        if not os.path.isdir(directory):
            return
        doomed = os.path.join(self.path, f".{uuid}{_DELETED_SUFFIX}")
        try:
            os.rename(directory, doomed)
        except OSError as e:
            raise OSError(e.errno, e.strerror, directory) from None
        fsync_dir(self.path)
        self._remove_tree(doomed)

    @staticmethod
    def _remove_tree(path: str) -> None:
        try:
            shutil.rmtree(path)
        except OSError as e:
            log.warning("Cannot remove %s: %s", e.filename or path, e.strerror or e)

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
            if name.startswith(".") and name.endswith(_DELETED_SUFFIX):
                log.info("Removing %s, left by a delete", directory)
                self._remove_tree(directory)
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
